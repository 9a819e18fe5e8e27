"""Load an image-text-to-text model and its processor for evaluation.

Models load through ``AutoProcessor`` and ``AutoModelForImageTextToText`` from
a Hub id or a local folder. Loading is cautious by default: remote code runs
only with ``trust_remote_code=True``, and weights load only from safetensors
files unless pickle weights are allowed explicitly, because unpickling a
``.bin`` file can run arbitrary code.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from builder.mat import check_choice
from eval.choices import DTYPE_CHOICES, DTYPE_NAMES
from eval.locations import MODEL_EXPECTED, check_folder_exists

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}
PICKLE_WEIGHT_NAMES: tuple[str, ...] = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class LoadedModel:
    """A model ready for inference, with its processor and where inputs go.

    Attributes:
        name: the Hub id or local folder it was loaded from.
        model: the model in eval mode.
        processor: its processor, with the tokenizer set to left padding and a pad token.
        input_device: the device that input tensors are moved to, the device
            of the input embeddings (the first device when ``device_map`` spreads the model).
    """

    name: str
    model: PreTrainedModel
    processor: Any
    input_device: torch.device

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer."""
        return self.processor.tokenizer


def resolve_dtype(dtype: str) -> torch.dtype:
    """Return the torch dtype for a ``--dtype`` value.

    Args:
        dtype: ``"auto"`` (bfloat16 on a CUDA device that supports it, else
            float32), ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Returns:
        The torch dtype the weights are loaded in.

    Raises:
        ValueError: for any other value.
    """
    check_choice("dtype", dtype, DTYPE_CHOICES)
    if dtype != "auto":
        return DTYPES[dtype]
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(
    name: str,
    *,
    dtype: str = "auto",
    device_map: str | dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
    processor: Any | None = None,
) -> LoadedModel:
    """Load a model and its processor, and check that they can answer CrossMed questions.

    Args:
        name: a Hub model id or a local folder written by ``save_pretrained``.
        dtype: weight dtype, see :func:`resolve_dtype`.
        device_map: passed to ``from_pretrained`` (for example ``"auto"`` to
            spread a large model over the visible GPUs). When None the whole
            model goes to ``device``.
        device: the device for the whole model when ``device_map`` is None;
            defaults to ``"cuda"`` when available, else ``"cpu"``.
        trust_remote_code: allow the model repository's own Python code to run.
        allow_pickle_weights: allow ``.bin`` (pickle) weights when the model
            has no safetensors files.
        processor: the processor that :func:`load_processor` returned for the
            same ``name`` and ``trust_remote_code``, which also ran its checks;
            None loads it here.

    Returns:
        The loaded model, processor and input device.

    Raises:
        ValueError: when the model needs remote code that was not allowed, is
            not an image-text-to-text model, or its processor has no image
            processor or no chat template.
        OSError: when its weights cannot be found or read, naming
            ``--allow-pickle-weights`` where that could help.
    """
    if processor is None:
        processor = load_processor(name, trust_remote_code=trust_remote_code)

    if device_map is None:
        # Loading straight onto the device avoids a full copy of the weights in CPU memory first.
        device_map = {"": str(device or ("cuda" if torch.cuda.is_available() else "cpu"))}
    model = _load_weights(name, dtype, device_map, trust_remote_code, allow_pickle_weights)
    model.eval()

    input_device = next(model.get_input_embeddings().parameters()).device
    logger.info("Loaded %s (%s, %s) on %s", name, type(model).__name__, model.dtype, input_device)
    return LoadedModel(name=name, model=model, processor=processor, input_device=input_device)


def load_processor(name: str, *, trust_remote_code: bool = False) -> Any:
    """Check a model's config and load its processor, with the tokenizer set to left padding.

    Args:
        name: a Hub model id or a local folder written by ``save_pretrained``.
        trust_remote_code: allow the model repository's own Python code to run.

    Returns:
        The processor.

    Raises:
        FileNotFoundError: when ``name`` is written as a path and the folder does not exist.
        ValueError: as :func:`load_model` does for the config and the processor.
    """
    check_folder_exists(name, kind="Model", expected=MODEL_EXPECTED)
    check_remote_code(name, trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as error:
        if Path(name).expanduser().is_dir():
            raise
        # A name such as "demo/model" is a relative folder or a Hub id. With no such folder,
        # transformers tried the Hub and failed.
        message = str(error).strip()
        reason = message.splitlines()[0] if message else type(error).__name__
        raise FileNotFoundError(
            f"Model {name} is not a folder here, and loading it as a Hub model id failed: {reason} "
            f"Pass {MODEL_EXPECTED}."
        ) from error
    check_image_text_to_text(name, config)

    processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
    check_processor(name, processor)
    prepare_tokenizer(processor.tokenizer)
    return processor


def check_remote_code(name: str, *, trust_remote_code: bool) -> None:
    """Reject a local model folder whose config needs its own code when that is not allowed.

    A config with an ``auto_map`` entry and a ``model_type`` that this version
    of transformers does not know can only load by running the folder's Python
    files. A known ``model_type`` loads with the built-in classes and passes.
    Hub ids are checked by transformers itself, which raises a ValueError
    naming ``trust_remote_code``.

    Raises:
        ValueError: naming the folder and ``--trust-remote-code``.
    """
    config_path = Path(name) / "config.json"
    if trust_remote_code or not config_path.is_file():
        return

    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "auto_map" in config and config.get("model_type") not in CONFIG_MAPPING:
        raise ValueError(
            f"The model in {name} needs its own Python code ({config_path} has an auto_map entry and "
            f"model_type {config.get('model_type')!r} is not built into transformers). Read that code, "
            "then pass --trust-remote-code (trust_remote_code=True) to run it."
        )


def check_image_text_to_text(name: str, config: Any) -> None:
    """Raise unless ``AutoModelForImageTextToText`` has a class for this config.

    Raises:
        ValueError: naming the model and its ``model_type``.
    """
    auto_map = getattr(config, "auto_map", None) or {}
    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or "AutoModelForImageTextToText" in auto_map:
        return
    raise ValueError(
        f"{name} is not an image-text-to-text model: AutoModelForImageTextToText has no class for its "
        f"model_type {config.model_type!r}. Choose a vision-language model such as a LLaVA or Qwen2-VL checkpoint."
    )


def check_processor(name: str, processor: Any) -> None:
    """Raise unless the processor has a tokenizer, an image processor and a chat template.

    Raises:
        ValueError: naming the model and the missing part.
    """
    missing = [part for part in ("tokenizer", "image_processor") if getattr(processor, part, None) is None]
    if missing:
        raise ValueError(
            f"The processor of {name} ({type(processor).__name__}) has no {' and no '.join(missing)}, "
            "so it cannot prepare an image and a question for this model."
        )
    if not processor.chat_template:
        raise ValueError(
            f"{name} has no chat template: its processor defines none (chat_template.jinja or the "
            "chat_template field of processor_config.json), so the prompt format is unknown. "
            "Use the instruction-tuned variant of the model, or add its template to the model folder."
        )


def prepare_tokenizer(tokenizer: Any) -> None:
    """Set left padding and, when the tokenizer has none, use its end-of-sequence token as pad token.

    Left padding keeps the last prompt token at the last position of every row,
    which both generation and the likelihood scores rely on.

    Raises:
        ValueError: when the tokenizer has neither a pad token nor an end-of-sequence token.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError(
            f"Tokenizer {type(tokenizer).__name__} has no pad token and no end-of-sequence token to use "
            "instead, so batches cannot be padded. Use --batch-size 1."
        )
    tokenizer.pad_token = tokenizer.eos_token
    logger.info("The tokenizer has no pad token; padding with the end-of-sequence token %r", tokenizer.eos_token)


def _load_weights(
    name: str,
    dtype: str,
    device_map: str | dict[str, Any] | None,
    trust_remote_code: bool,
    allow_pickle_weights: bool,
) -> PreTrainedModel:
    folder = Path(name)
    if not allow_pickle_weights and folder.is_dir():
        pickles = [file for file in PICKLE_WEIGHT_NAMES if (folder / file).is_file()]
        has_safetensors = any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file()
        if pickles and not has_safetensors:
            raise OSError(
                f"The model in {name} has only pickle weights ({', '.join(pickles)}), and loading a pickle "
                "file can run arbitrary code. Convert them to safetensors, or pass --allow-pickle-weights "
                "if you trust the source."
            )

    try:
        return AutoModelForImageTextToText.from_pretrained(
            name,
            dtype=resolve_dtype(dtype),
            device_map=device_map,
            trust_remote_code=trust_remote_code,
            # None lets transformers fall back to .bin files when there are no safetensors files.
            use_safetensors=None if allow_pickle_weights else True,
        )
    except OSError as error:
        hint = "" if allow_pickle_weights else " If it has only .bin weights, pass --allow-pickle-weights."
        raise OSError(f"Could not load the weights of {name}: {error}{hint}") from error
