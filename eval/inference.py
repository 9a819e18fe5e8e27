"""Batched inference in two scoring modes, with out-of-memory back-off.

``generate`` decodes greedily and reads the letter from the text with
:func:`eval.extraction.extract_answer`. ``likelihood`` runs one forward pass per
batch and compares the next-token log-probabilities of the four option letters
at the last prompt position, so it always yields a letter.

Batches are padded on the left, so the last prompt token sits at the last
position of every row, and generated tokens start at the same column for every
row.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from transformers import GenerationMixin

from builder.mat import LETTERS
from eval.data import PreparedItem
from eval.extraction import extract_answer
from eval.models import LoadedModel
from eval.prompts import build_messages

logger = logging.getLogger(__name__)

FAILED = "failed"
"""The prediction recorded for a work item whose batch raised twice, or that ran out of memory alone."""


# Errors that a processor or a model's forward pass raise on one bad batch
# (a shape mismatch, an image it cannot process, a device error). They fail the
# batch, not the run. Errors outside this list stop the run.
BATCH_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, TypeError, IndexError, KeyError, OSError)

# Tensor dtypes that convert to NumPy without a copy; others (bfloat16) leave a worker as tensors.
_NUMPY_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.bool})


@dataclass
class ItemResult:
    """The model's answer to one work item.

    Attributes:
        prediction: ``"A"`` to ``"D"`` in the displayed order, ``"invalid"``
            when generated text named no single option, or ``"failed"``.
        raw_output: the generated text (generate mode), else None.
        scores: log-probabilities of the letters A-D in displayed order
            (likelihood mode), else None.
    """

    prediction: str
    raw_output: str | None = None
    scores: list[float] | None = None


BatchStep = Callable[..., list[ItemResult]]
"""Scores one chunk of items: ``step(items)``, or ``step(items, inputs)`` with the chunk's encoded inputs."""


def render_prompts(loaded: LoadedModel, items: Sequence[PreparedItem], *, blind: bool) -> list[str]:
    """Apply the model's chat template to each item, ending with the generation prompt."""
    return _render(loaded.processor, items, blind=blind)


def _render(processor: Any, items: Sequence[PreparedItem], *, blind: bool) -> list[str]:
    return [
        processor.apply_chat_template(
            build_messages(item.prompt, blind=blind), add_generation_prompt=True, tokenize=False
        )
        for item in items
    ]


def encode_batch(processor: Any, items: Sequence[PreparedItem], *, blind: bool) -> Any:
    """Render the prompts, tokenize and pad them, and process the images, all on the CPU.

    Returns:
        The processor's output (a ``BatchFeature`` of CPU tensors), before
        :func:`move_to_model` sends it to the model's device.
    """
    images = None if blind else [item.image for item in items]
    return processor(text=_render(processor, items, blind=blind), images=images, padding=True, return_tensors="pt")


def encode_in_worker(processor: Any, items: list[PreparedItem], *, blind: bool) -> dict[str, Any] | None:
    """Run :func:`encode_batch` in a loader worker, with tensors turned into NumPy arrays.

    A torch tensor leaves a worker through shared memory with a file
    descriptor of its own, while a NumPy array is pickled into the worker's
    pipe. For these small batches the arrays cost the main process less time.

    Returns:
        The processor's outputs, or None when encoding raised one of
        :data:`BATCH_ERRORS`. The batch step then encodes the batch again in
        the main process, where the error is logged, retried and recorded
        like any other batch error.
    """
    try:
        batch = encode_batch(processor, items, blind=blind)
    except BATCH_ERRORS as error:
        logger.debug("Encoding %d items in a loader worker failed (%s); the main process retries", len(items), error)
        return None
    return {name: _to_numpy(value) for name, value in batch.items()}


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in _NUMPY_DTYPES:
        return value.numpy()
    return value


def move_to_model(loaded: LoadedModel, batch: Any) -> dict[str, Any]:
    """Move the encoded tensors or NumPy arrays to ``loaded.input_device``.

    Floating-point values are cast to the model's dtype; other values pass unchanged.
    """
    encoded: dict[str, Any] = {}
    for name, value in batch.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            encoded[name] = value
        elif value.is_floating_point():
            encoded[name] = value.to(loaded.input_device, dtype=loaded.model.dtype)
        else:
            encoded[name] = value.to(loaded.input_device)
    return encoded


def _model_inputs(
    loaded: LoadedModel, items: Sequence[PreparedItem], blind: bool, inputs: Any | None
) -> dict[str, Any]:
    if inputs is None:
        inputs = encode_batch(loaded.processor, items, blind=blind)
    return move_to_model(loaded, inputs)


@torch.inference_mode()
def generate_batch(
    loaded: LoadedModel,
    items: list[PreparedItem],
    inputs: Any | None = None,
    *,
    blind: bool,
    max_new_tokens: int,
) -> list[ItemResult]:
    """Generate greedily and read one letter per item.

    Args:
        loaded: the model.
        items: the batch.
        inputs: the batch encoded by :func:`encode_batch` (for example in a
            loader worker); None encodes it here.
        blind: leave the images out.
        max_new_tokens: the maximum number of generated tokens per item.

    Returns:
        One result per item with the decoded text (special tokens removed,
        surrounding whitespace stripped) and the letter read from it, or ``"invalid"``.
    """
    model_inputs = _model_inputs(loaded, items, blind, inputs)
    output = cast(GenerationMixin, loaded.model).generate(
        **model_inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )

    prompt_length = model_inputs["input_ids"].shape[1]
    texts = loaded.tokenizer.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
    results = []
    for item, text in zip(items, texts, strict=True):
        text = text.strip()
        results.append(ItemResult(prediction=extract_answer(text, item.options), raw_output=text))
    return results


@torch.inference_mode()
def likelihood_batch(
    loaded: LoadedModel,
    items: list[PreparedItem],
    inputs: Any | None = None,
    *,
    blind: bool,
    letter_ids: Sequence[int],
) -> list[ItemResult]:
    """Score the four letters as the next token after the prompt, in one forward pass.

    Args:
        loaded: the model.
        items: the batch.
        inputs: the batch encoded by :func:`encode_batch`; None encodes it here.
        blind: leave the images out.
        letter_ids: the token ids of A-D from :func:`letter_token_ids`.

    Returns:
        One result per item with the four log-probabilities (natural log, over
        the whole vocabulary, in float32) and the letter with the highest one.
    """
    model_inputs = _model_inputs(loaded, items, blind, inputs)
    if _accepts_argument(loaded.model, "logits_to_keep"):
        model_inputs["logits_to_keep"] = 1

    logits = loaded.model(**model_inputs).logits[:, -1, :].float()
    log_probabilities = torch.log_softmax(logits, dim=-1)[:, list(letter_ids)].cpu()

    results = []
    for row in log_probabilities:
        scores = [float(value) for value in row]
        results.append(ItemResult(prediction=LETTERS[int(row.argmax())], scores=scores))
    return results


def letter_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Find the token ids that the answer letters A-D start with after a rendered prompt.

    The chat template decides how an answer is written. When the generation
    prompt ends with whitespace (Qwen2-VL's ``"<|im_start|>assistant\\n"``) the
    answer starts with the bare letter ``"A"``; when it ends with anything else
    (LLaVA-1.5's ``"ASSISTANT:"``) a space comes first and the token is the one
    for ``" A"``. The ids are read by tokenizing the prompt with and without
    the answer appended and taking the first new token. If that form does not
    give four distinct tokens, the other form is tried.

    Args:
        tokenizer: the model's tokenizer.
        prompt: a prompt rendered by the chat template with the generation prompt.

    Returns:
        Four token ids, for A, B, C and D.

    Raises:
        ValueError: when neither form gives four distinct first tokens.
    """
    preferred = "" if prompt[-1:].isspace() else " "
    forms = (preferred, " " if preferred == "" else "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]

    for prefix in forms:
        found = [_first_new_token(tokenizer, prompt, prompt_ids, prefix + letter) for letter in LETTERS]
        ids = [token_id for token_id in found if token_id is not None]
        if len(set(ids)) == len(LETTERS):
            tokens = tokenizer.convert_ids_to_tokens(ids)
            logger.info("Scoring the letter tokens %s (answer form %r)", tokens, prefix + "A")
            return ids
        logger.debug("Answer form %r gives the first tokens %s; trying the other form", prefix + "A", found)

    raise ValueError(
        f"Cannot score letters with tokenizer {type(tokenizer).__name__}: neither 'A' nor ' A' after the "
        f"generation prompt {prompt[-40:]!r} gives four distinct first tokens for A-D. Use --mode generate."
    )


def _first_new_token(tokenizer: Any, prompt: str, prompt_ids: list[int], answer: str) -> int | None:
    full_ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
    # The answer may merge with the prompt's last token; then there is no clean next token.
    if len(full_ids) <= len(prompt_ids) or full_ids[: len(prompt_ids)] != prompt_ids:
        return None
    return int(full_ids[len(prompt_ids)])


def _accepts_argument(model: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


class BatchExecutor:
    """Run a batch step with out-of-memory back-off and one retry on other errors.

    On ``torch.cuda.OutOfMemoryError`` the batch size is halved for the rest of
    the run and the items are run again in smaller chunks. Any error in
    :data:`BATCH_ERRORS` is logged with the question ids, and the chunk runs
    once more. When it fails again, its items get the prediction ``"failed"``
    and the run goes on. Out of memory at batch size 1 also fails the item.

    Inputs encoded ahead of time (in a loader worker) serve only the first
    attempt at the whole batch. A retry, and every smaller chunk after a
    back-off, calls ``step`` without them, so that the step encodes its own
    chunk in this process.

    Args:
        step: the function that runs one chunk of items and returns one result
            per item. When a chunk has encoded inputs, they are its second argument.
        batch_size: the largest chunk passed to ``step``.
    """

    def __init__(self, step: BatchStep, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"Invalid batch size {batch_size}: expected at least 1.")
        self.step = step
        self.batch_size = batch_size

    def run(self, items: list[PreparedItem], inputs: Any | None = None) -> list[ItemResult]:
        """Run ``step`` over ``items`` in chunks of at most ``batch_size`` and return one result per item.

        Args:
            items: the items to score.
            inputs: all of ``items`` encoded for the model, or None.
        """
        results: list[ItemResult] = []
        position = 0
        while position < len(items):
            chunk = items[position : position + self.batch_size]
            chunk_inputs = inputs if len(chunk) == len(items) else None
            # Only the first attempt receives the inputs. Retries and smaller chunks encode their own.
            inputs = None
            chunk_results = self._run_chunk(chunk, chunk_inputs)
            if chunk_results is None:
                continue

            results.extend(chunk_results)
            position += len(chunk)
        return results

    def _run_chunk(self, chunk: list[PreparedItem], inputs: Any | None) -> list[ItemResult] | None:
        """Return the chunk's results, or None after halving the batch size on out of memory."""
        ids = [f"{item.work.question_id}@{item.work.rotation}" for item in chunk]
        for attempt in (1, 2):
            out_of_memory = False
            try:
                results = self.step(chunk) if inputs is None else self.step(chunk, inputs)
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True
            except BATCH_ERRORS as error:
                failure = f"{type(error).__name__}: {error}"
                if attempt == 1:
                    logger.warning("Batch %s failed (%s); retrying once", ids, failure)
                else:
                    logger.error("Batch %s failed again (%s); recording it as failed", ids, failure)
                continue
            finally:
                inputs = None

            if out_of_memory:
                # Past the except clause its traceback, which references the batch's tensors, can be freed.
                return self._back_off(chunk, ids)
            if len(results) != len(chunk):
                raise RuntimeError(f"The batch step returned {len(results)} results for {len(chunk)} items {ids}.")
            return results
        return [ItemResult(prediction=FAILED) for _ in chunk]

    def _back_off(self, chunk: list[PreparedItem], ids: list[str]) -> list[ItemResult] | None:
        _release_cached_memory()
        if len(chunk) == 1:
            logger.error("Out of memory at batch size 1 on %s; recording it as failed", ids)
            return [ItemResult(prediction=FAILED)]

        self.batch_size = max(1, len(chunk) // 2)
        logger.warning("Out of memory on a batch of %d; retrying with batch size %d", len(chunk), self.batch_size)
        return None


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
