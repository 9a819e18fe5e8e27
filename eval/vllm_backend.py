"""An optional vLLM backend for generate mode (``--backend vllm``).

The prompt text comes from the model's own processor and chat template, as in
the transformers backend, and vLLM generates greedily from it with the image
attached as multimodal data. Likelihood mode and data-parallel launching are
not supported here, because vLLM manages its own devices.

Note:
    This module is kept minimal and has never been run: vLLM needs a GPU and
    was not installed where it was written. It follows vLLM's documented
    ``LLM.generate`` interface (a prompt dict with ``multi_modal_data``, and
    ``SamplingParams``), which can change between vLLM releases.
"""

from __future__ import annotations

import logging
from typing import Any

from eval.data import PreparedItem
from eval.extraction import extract_answer
from eval.inference import ItemResult
from eval.prompts import build_messages

logger = logging.getLogger(__name__)


class VllmGenerator:
    """Generate answers with vLLM.

    Args:
        model: a Hub model id or local folder that vLLM supports.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``, passed to vLLM.
        trust_remote_code: allow the model repository's own Python code to run.

    Raises:
        ImportError: when vLLM is not installed, naming ``pip install vllm``.
    """

    def __init__(self, model: str, *, dtype: str = "auto", trust_remote_code: bool = False) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ImportError(
                "--backend vllm needs the vllm package, which is not installed. Install it with "
                "`pip install vllm` (Linux with a CUDA GPU), or use --backend hf."
            ) from error
        from transformers import AutoProcessor

        self._vllm = vllm
        self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.llm = vllm.LLM(
            model=model, dtype=dtype, trust_remote_code=trust_remote_code, limit_mm_per_prompt={"image": 1}
        )
        logger.info("Loaded %s with vLLM %s", model, vllm.__version__)

    def generate_batch(self, items: list[PreparedItem], *, blind: bool, max_new_tokens: int) -> list[ItemResult]:
        """Generate greedily for a batch and read one letter per item, as :func:`eval.inference.generate_batch` does."""
        requests: list[dict[str, Any]] = []
        for item in items:
            prompt = self.processor.apply_chat_template(
                build_messages(item.prompt, blind=blind), add_generation_prompt=True, tokenize=False
            )
            request: dict[str, Any] = {"prompt": prompt}
            if not blind:
                request["multi_modal_data"] = {"image": item.image}
            requests.append(request)

        sampling = self._vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)

        results = []
        for item, output in zip(items, outputs, strict=True):
            text = output.outputs[0].text.strip()
            results.append(ItemResult(prediction=extract_answer(text, item.options), raw_output=text))
        return results
