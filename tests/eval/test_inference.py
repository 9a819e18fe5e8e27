"""Tests of eval.prompts and eval.inference: prompts, letter tokens, batching, back-off and retries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from eval.data import PreparedItem, WorkItem
from eval.extraction import INVALID
from eval.inference import (
    FAILED,
    BatchExecutor,
    ItemResult,
    encode_batch,
    encode_in_worker,
    generate_batch,
    letter_token_ids,
    likelihood_batch,
    render_prompts,
)
from eval.models import LoadedModel, load_model
from eval.prompts import INSTRUCTION, build_messages, format_prompt, rotate_options, to_stored_letter

pytest_plugins = ["tests.eval.tiny_models"]

OPTIONS = ["Cardiomegaly", "Atelectasis", "Pleural Effusion", "No Finding"]


def make_items(count: int, *, seed: int = 0) -> list[PreparedItem]:
    """Prepared items with images of different sizes and prompts of different lengths."""
    rng = np.random.default_rng(seed)
    items = []
    for index in range(count):
        height, width = 28 + 14 * (index % 4), 28 + 10 * (index % 3)
        pixels = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
        question = "Which finding does this chest image show" + " most clearly" * (index % 3) + "?"
        options = rotate_options(OPTIONS, index % 4)
        items.append(
            PreparedItem(
                work=WorkItem(index, f"q{index}", index % 4),
                options=options,
                prompt=format_prompt(question, options),
                image=Image.fromarray(pixels).convert("RGB"),
            )
        )
    return items


@pytest.fixture(scope="module")
def loaded_models(qwen2_vl_dir: Path, llava_dir: Path) -> dict[str, LoadedModel]:
    return {
        "qwen2_vl": load_model(str(qwen2_vl_dir), dtype="float32", device="cpu"),
        "llava": load_model(str(llava_dir), dtype="float32", device="cpu"),
    }


def test_format_prompt_layout() -> None:
    prompt = format_prompt("  Which finding is shown?  ", OPTIONS)

    assert prompt.splitlines() == [
        "Which finding is shown?",
        "A. Cardiomegaly",
        "B. Atelectasis",
        "C. Pleural Effusion",
        "D. No Finding",
        INSTRUCTION,
    ]


def test_rotate_options_shifts_left() -> None:
    assert rotate_options(OPTIONS, 0) == OPTIONS
    assert rotate_options(OPTIONS, 1) == ["Atelectasis", "Pleural Effusion", "No Finding", "Cardiomegaly"]
    assert rotate_options(OPTIONS, 3) == ["No Finding", "Cardiomegaly", "Atelectasis", "Pleural Effusion"]


def test_rotate_options_invalid() -> None:
    with pytest.raises(ValueError, match="Invalid rotation 4"):
        rotate_options(OPTIONS, 4)
    with pytest.raises(ValueError, match="Expected 4 options, got 3"):
        rotate_options(OPTIONS[:3], 0)


@pytest.mark.parametrize("rotation", range(4))
def test_to_stored_letter_round_trip(rotation: int) -> None:
    displayed = rotate_options(OPTIONS, rotation)

    for displayed_index, letter in enumerate("ABCD"):
        stored_letter = to_stored_letter(letter, rotation)
        assert OPTIONS["ABCD".index(stored_letter)] == displayed[displayed_index]


def test_to_stored_letter_keeps_non_letters() -> None:
    assert to_stored_letter(INVALID, 2) == INVALID
    assert to_stored_letter(FAILED, 1) == FAILED


def test_build_messages_blind_drops_image_only() -> None:
    seeing = build_messages("prompt text", blind=False)
    blind = build_messages("prompt text", blind=True)

    assert seeing[0]["content"] == [{"type": "image"}, {"type": "text", "text": "prompt text"}]
    assert blind[0]["content"] == [{"type": "text", "text": "prompt text"}]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_render_prompts_blind_same_text(loaded_models: dict[str, LoadedModel], family: str) -> None:
    loaded = loaded_models[family]
    item = make_items(1)[0]
    image_token = loaded.processor.image_token

    seeing = render_prompts(loaded, [item], blind=False)[0]
    blind = render_prompts(loaded, [item], blind=True)[0]

    assert image_token in seeing
    assert image_token not in blind
    assert item.prompt in seeing
    assert item.prompt in blind


def test_letter_token_ids_bare_letter(loaded_models: dict[str, LoadedModel]) -> None:
    loaded = loaded_models["qwen2_vl"]
    prompt = render_prompts(loaded, make_items(1), blind=True)[0]
    assert prompt.endswith("assistant\n")

    ids = letter_token_ids(loaded.tokenizer, prompt)

    assert ids == loaded.tokenizer.convert_tokens_to_ids(["A", "B", "C", "D"])


def test_letter_token_ids_spaced_letter(loaded_models: dict[str, LoadedModel]) -> None:
    loaded = loaded_models["llava"]
    prompt = render_prompts(loaded, make_items(1), blind=True)[0]
    assert prompt.endswith("ASSISTANT:")

    ids = letter_token_ids(loaded.tokenizer, prompt)

    # The byte-level BPE writes a leading space as "Ġ".
    assert ids == loaded.tokenizer.convert_tokens_to_ids(["ĠA", "ĠB", "ĠC", "ĠD"])


def test_letter_token_ids_rejects_indistinct_letters() -> None:
    # A vocabulary without the letters maps A-D alike to the unknown token, in both answer forms.
    word_level = Tokenizer(models.WordLevel({"<unk>": 0, "Answer": 1, ":": 2}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>")

    with pytest.raises(ValueError, match="four distinct first tokens"):
        letter_token_ids(tokenizer, "Answer:")


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
@pytest.mark.parametrize("blind", [False, True])
def test_likelihood_batch_size_invariant(loaded_models: dict[str, LoadedModel], family: str, blind: bool) -> None:
    loaded = loaded_models[family]
    items = make_items(8)
    letter_ids = letter_token_ids(loaded.tokenizer, render_prompts(loaded, items[:1], blind=True)[0])

    batched = likelihood_batch(loaded, items, blind=blind, letter_ids=letter_ids)
    single = [likelihood_batch(loaded, [item], blind=blind, letter_ids=letter_ids)[0] for item in items]

    assert [result.prediction for result in batched] == [result.prediction for result in single]
    for batched_result, single_result in zip(batched, single, strict=True):
        assert batched_result.raw_output is None
        assert len(batched_result.scores) == 4
        np.testing.assert_allclose(batched_result.scores, single_result.scores, atol=1e-4)


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_generate_batch_size_invariant(loaded_models: dict[str, LoadedModel], family: str) -> None:
    loaded = loaded_models[family]
    items = make_items(8)

    batched = generate_batch(loaded, items, blind=False, max_new_tokens=6)
    single = [generate_batch(loaded, [item], blind=False, max_new_tokens=6)[0] for item in items]

    assert [result.raw_output for result in batched] == [result.raw_output for result in single]
    assert [result.prediction for result in batched] == [result.prediction for result in single]
    assert all(result.scores is None for result in batched)


def test_likelihood_scores_are_log_probabilities(loaded_models: dict[str, LoadedModel]) -> None:
    loaded = loaded_models["qwen2_vl"]
    items = make_items(3)
    letter_ids = letter_token_ids(loaded.tokenizer, render_prompts(loaded, items[:1], blind=True)[0])

    results = likelihood_batch(loaded, items, blind=False, letter_ids=letter_ids)

    for result in results:
        assert all(score <= 0.0 for score in result.scores)
        assert sum(np.exp(result.scores)) <= 1.0 + 1e-6
        assert result.prediction == "ABCD"[int(np.argmax(result.scores))]


def letter_step(calls: list[int]):
    """A batch step that returns "A" for every item and records each chunk size."""

    def step(batch: list[PreparedItem]) -> list[ItemResult]:
        calls.append(len(batch))
        return [ItemResult(prediction="A") for _ in batch]

    return step


def test_executor_chunks_by_batch_size() -> None:
    calls: list[int] = []
    executor = BatchExecutor(letter_step(calls), batch_size=3)

    results = executor.run(make_items(7))

    assert calls == [3, 3, 1]
    assert [result.prediction for result in results] == ["A"] * 7


def test_executor_halves_batch_on_out_of_memory() -> None:
    calls: list[int] = []
    answer = letter_step(calls)

    def step(batch: list[PreparedItem]) -> list[ItemResult]:
        if len(batch) > 2:
            calls.append(-len(batch))
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory on a batch of {len(batch)}")
        return answer(batch)

    executor = BatchExecutor(step, batch_size=8)
    results = executor.run(make_items(8))

    assert calls == [-8, -4, 2, 2, 2, 2]
    assert executor.batch_size == 2
    assert len(results) == 8
    assert all(result.prediction == "A" for result in results)


def test_executor_keeps_halved_batch_size() -> None:
    calls: list[int] = []
    answer = letter_step(calls)

    def step(batch: list[PreparedItem]) -> list[ItemResult]:
        if len(batch) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return answer(batch)

    executor = BatchExecutor(step, batch_size=8)
    first = executor.run(make_items(8))
    second = executor.run(make_items(8))

    assert executor.batch_size == 4
    assert calls == [4, 4, 4, 4]
    assert len(first) == len(second) == 8


def test_executor_single_item_out_of_memory() -> None:
    def step(batch: list[PreparedItem]) -> list[ItemResult]:
        if any(item.work.question_id == "q1" for item in batch):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [ItemResult(prediction="B") for _ in batch]

    results = BatchExecutor(step, batch_size=2).run(make_items(3))

    assert [result.prediction for result in results] == ["B", FAILED, "B"]


def test_executor_retries_once_then_fails(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[list[str]] = []

    def step(batch: list[PreparedItem]) -> list[ItemResult]:
        ids = [item.work.question_id for item in batch]
        attempts.append(ids)
        if "q2" in ids:
            raise ValueError("image has an unsupported shape")
        return [ItemResult(prediction="C") for _ in batch]

    results = BatchExecutor(step, batch_size=2).run(make_items(4))

    assert attempts == [["q0", "q1"], ["q2", "q3"], ["q2", "q3"]]
    assert [result.prediction for result in results] == ["C", "C", FAILED, FAILED]
    assert "retrying once" in caplog.text
    assert "q2@2" in caplog.text
    assert "recording it as failed" in caplog.text


def test_executor_retry_succeeds() -> None:
    attempts: list[int] = []

    def step(batch: list[PreparedItem]) -> list[ItemResult]:
        attempts.append(len(batch))
        if len(attempts) == 1:
            raise RuntimeError("transient device error")
        return [ItemResult(prediction="D") for _ in batch]

    results = BatchExecutor(step, batch_size=4).run(make_items(4))

    assert attempts == [4, 4]
    assert [result.prediction for result in results] == ["D"] * 4


def test_executor_rejects_wrong_result_count() -> None:
    executor = BatchExecutor(lambda batch: [ItemResult(prediction="A")], batch_size=2)

    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        executor.run(make_items(2))


def test_executor_invalid_batch_size() -> None:
    with pytest.raises(ValueError, match="Invalid batch size 0"):
        BatchExecutor(letter_step([]), batch_size=0)


def recording_step(calls: list[tuple[int, bool]], fail_first: type[Exception] | None = None):
    """A batch step that records (chunk size, got inputs) per call and can raise on its first call."""

    def step(batch: list[PreparedItem], inputs: object = None) -> list[ItemResult]:
        calls.append((len(batch), inputs is not None))
        if fail_first is not None and len(calls) == 1:
            raise fail_first("first attempt fails")
        return [ItemResult(prediction="B") for _ in batch]

    return step


def test_executor_uses_inputs_once() -> None:
    calls: list[tuple[int, bool]] = []

    results = BatchExecutor(recording_step(calls), batch_size=4).run(make_items(4), {"input_ids": "encoded"})

    assert calls == [(4, True)]
    assert [result.prediction for result in results] == ["B"] * 4


def test_executor_retry_encodes_again() -> None:
    calls: list[tuple[int, bool]] = []

    results = BatchExecutor(recording_step(calls, RuntimeError), batch_size=4).run(make_items(4), {"x": 1})

    assert calls == [(4, True), (4, False)]
    assert [result.prediction for result in results] == ["B"] * 4


def test_executor_back_off_encodes_chunks() -> None:
    calls: list[tuple[int, bool]] = []

    executor = BatchExecutor(recording_step(calls, torch.cuda.OutOfMemoryError), batch_size=4)
    results = executor.run(make_items(4), {"x": 1})

    assert calls == [(4, True), (2, False), (2, False)]
    assert executor.batch_size == 2
    assert len(results) == 4


def test_executor_ignores_inputs_larger_than_batch() -> None:
    """Inputs encoded for more items than one chunk contains are never passed to a chunk."""
    calls: list[tuple[int, bool]] = []

    BatchExecutor(recording_step(calls), batch_size=2).run(make_items(4), {"x": 1})

    assert calls == [(2, False), (2, False)]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_encode_in_worker_same_results(loaded_models: dict[str, LoadedModel], family: str) -> None:
    loaded = loaded_models[family]
    items = make_items(5)

    encoded = encode_in_worker(loaded.processor, items, blind=False)
    reference = encode_batch(loaded.processor, items, blind=False)

    assert encoded is not None
    assert encoded.keys() == reference.keys()
    for name, value in encoded.items():
        assert isinstance(value, np.ndarray), name
        np.testing.assert_array_equal(value, reference[name].numpy())
    with_inputs = generate_batch(loaded, items, encoded, blind=False, max_new_tokens=6)
    without = generate_batch(loaded, items, blind=False, max_new_tokens=6)
    assert [result.raw_output for result in with_inputs] == [result.raw_output for result in without]


def test_encode_in_worker_failure_returns_none(loaded_models: dict[str, LoadedModel]) -> None:
    items = make_items(2)
    items[1].image = None

    assert encode_in_worker(loaded_models["qwen2_vl"].processor, items, blind=False) is None
