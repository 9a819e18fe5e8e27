"""Tests of eval.runner and eval.api: outputs, resume, run keys, circular runs, baselines, kill and resume."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pytest
import torch

from builder.features import crossmed_features
from eval import runner
from eval.api import evaluate
from eval.data import dataset_fingerprint, load_split
from eval.inference import FAILED, generate_batch
from eval.runner import (
    PREDICTIONS_FILE,
    RecordWriter,
    RunSettings,
    frozen_garbage_collector,
    merge_records,
    read_records,
    write_records_atomically,
)
from tests.conftest import REPO_ROOT
from tests.eval.fixtures import make_crossmed_rows, write_crossmed_folder

if TYPE_CHECKING:
    from tests.eval.tiny_models import BuiltDataset, RunEval

pytest_plugins = ["tests.eval.tiny_models"]

RECORD_FIELDS = {
    "id", "run_key", "mode", "rotation", "raw_output", "scores", "prediction", "answer", "correct",
    "triplet", "source", "subject_id", "task", "bbox", "option_boxes",
}


def by_key(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(record["id"], record["rotation"]): record for record in records}


def assert_same_predictions(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    actual_by_key, expected_by_key = by_key(actual), by_key(expected)
    assert len(actual) == len(actual_by_key), "duplicate (id, rotation) records"
    assert actual_by_key.keys() == expected_by_key.keys()
    for key, record in actual_by_key.items():
        reference = expected_by_key[key]
        assert record["prediction"] == reference["prediction"], key
        assert record["raw_output"] == reference["raw_output"], key
        if reference["scores"] is not None:
            np.testing.assert_allclose(record["scores"], reference["scores"], atol=1e-4)


def test_run_writes_outputs(
    qwen2_vl_dir: Path, crossmed: BuiltDataset, run_eval: RunEval, tmp_path: Path
) -> None:
    results = run_eval(qwen2_vl_dir, tmp_path / "run")

    records = read_records(tmp_path / "run" / PREDICTIONS_FILE)
    assert len(records) == crossmed.rows
    assert all(set(record) == RECORD_FIELDS for record in records)
    assert [record["id"] for record in records] == [f"fixture-test-{index:04d}" for index in range(crossmed.rows)]
    assert {record["mode"] for record in records} == {"generate"}
    assert all(isinstance(record["raw_output"], str) for record in records)
    assert all(record["correct"] == (record["prediction"] == record["answer"]) for record in records)
    assert (tmp_path / "run" / "results.json").is_file()
    assert (tmp_path / "run" / "report.md").is_file()
    assert results["settings"]["random_weights"] is True
    assert results["settings"]["run_key"] == records[0]["run_key"]
    assert results["n_predictions"] == crossmed.rows


def test_run_likelihood_records(qwen2_vl_dir: Path, run_eval: RunEval, tmp_path: Path) -> None:
    run_eval(qwen2_vl_dir, tmp_path / "run", mode="likelihood")

    records = read_records(tmp_path / "run" / PREDICTIONS_FILE)
    segmentation = [record for record in records if record["task"] == "Segmentation"]
    assert segmentation, "the fixture has segmentation rows"
    assert all(record["prediction"] in "ABCD" and len(record["prediction"]) == 1 for record in records)
    assert all(record["raw_output"] is None and len(record["scores"]) == 4 for record in records)
    assert all(record["bbox"] is not None and len(record["option_boxes"]) == 4 for record in segmentation)


def test_run_resume_skips_finished(
    qwen2_vl_dir: Path, crossmed: BuiltDataset, run_eval: RunEval, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    run_eval(qwen2_vl_dir, out, limit=4)
    first = read_records(out / PREDICTIONS_FILE)
    assert len(first) == 4

    caplog.set_level("INFO")
    run_eval(qwen2_vl_dir, out)

    assert "10 work items, 4 already finished, 6 to run" in caplog.text
    records = read_records(out / PREDICTIONS_FILE)
    assert len(records) == crossmed.rows
    assert records[:4] == first


def test_run_rejects_other_settings(qwen2_vl_dir: Path, run_eval: RunEval, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_eval(qwen2_vl_dir, out, limit=2)

    with pytest.raises(ValueError, match="contains predictions of another run"):
        run_eval(qwen2_vl_dir, out, limit=2, mode="likelihood")


def test_run_retries_failed_records(qwen2_vl_dir: Path, run_eval: RunEval, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_eval(qwen2_vl_dir, out, limit=3)
    records = read_records(out / PREDICTIONS_FILE)
    expected = dict(records[1])
    records[1].update(prediction=FAILED, raw_output=None, correct=False)
    write_records_atomically(out / PREDICTIONS_FILE, records)

    run_eval(qwen2_vl_dir, out, limit=3)

    rerun = read_records(out / PREDICTIONS_FILE)
    assert len(rerun) == 3
    assert rerun[1] == expected


@pytest.mark.parametrize("mode", ["likelihood", "generate"])
def test_run_circular_maps_to_stored_order(qwen2_vl_dir: Path, run_eval: RunEval, tmp_path: Path, mode: str) -> None:
    run_eval(qwen2_vl_dir, tmp_path / "run", mode=mode, circular=True, limit=3)

    records = read_records(tmp_path / "run" / PREDICTIONS_FILE)
    assert [(record["id"][-1], record["rotation"]) for record in records] == [
        (str(index), rotation) for index in range(3) for rotation in range(4)
    ]
    if mode == "likelihood":
        for record in records:
            displayed = int(np.argmax(record["scores"]))
            assert record["prediction"] == "ABCD"[(displayed + record["rotation"]) % 4]


def test_run_blind_keeps_settings(qwen2_vl_dir: Path, run_eval: RunEval, tmp_path: Path) -> None:
    seeing = run_eval(qwen2_vl_dir, tmp_path / "seeing", mode="likelihood", limit=4)
    blind = run_eval(qwen2_vl_dir, tmp_path / "blind", mode="likelihood", limit=4, blind=True)

    assert blind["settings"]["blind"] is True
    assert blind["settings"]["run_key"] != seeing["settings"]["run_key"]
    seeing_scores = [record["scores"] for record in read_records(tmp_path / "seeing" / PREDICTIONS_FILE)]
    blind_scores = [record["scores"] for record in read_records(tmp_path / "blind" / PREDICTIONS_FILE)]
    assert seeing_scores != blind_scores


@pytest.mark.parametrize("mode", ["likelihood", "generate"])
def test_run_batch_size_invariant(qwen2_vl_dir: Path, run_eval: RunEval, tmp_path: Path, mode: str) -> None:
    run_eval(qwen2_vl_dir, tmp_path / "one", mode=mode, batch_size=1)
    run_eval(qwen2_vl_dir, tmp_path / "eight", mode=mode, batch_size=8, num_workers=2)

    assert_same_predictions(
        read_records(tmp_path / "eight" / PREDICTIONS_FILE), read_records(tmp_path / "one" / PREDICTIONS_FILE)
    )


def test_run_back_off_with_workers(
    qwen2_vl_dir: Path, run_eval: RunEval, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches encoded in loader workers that run out of memory are split and encoded again with their images."""
    chunks: list[tuple[int, bool, bool]] = []

    def generate_or_run_out_of_memory(loaded: Any, items: list[Any], inputs: Any = None, **options: Any) -> Any:
        chunks.append((len(items), inputs is not None, all(item.image is not None for item in items)))
        if len(items) > 2:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory on a batch of {len(items)}")
        return generate_batch(loaded, items, inputs, **options)

    monkeypatch.setattr(runner, "generate_batch", generate_or_run_out_of_memory)
    run_eval(qwen2_vl_dir, tmp_path / "halved", batch_size=4, num_workers=2)
    monkeypatch.undo()
    run_eval(qwen2_vl_dir, tmp_path / "one", batch_size=1)

    # Loader batches of 4, 4 and 2 arrive encoded and without images. After the back-off, halves of the
    # 4-item batches are encoded again from decoded images, while the last batch fits and keeps its inputs.
    assert chunks[0] == (4, True, False)
    assert chunks[1:] == [(2, False, True)] * 4 + [(2, True, False)]
    assert_same_predictions(
        read_records(tmp_path / "halved" / PREDICTIONS_FILE), read_records(tmp_path / "one" / PREDICTIONS_FILE)
    )


def test_record_writer_syncs_by_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[int] = []
    monkeypatch.setattr(runner.os, "fsync", syncs.append)
    records = [{"id": "a", "rotation": 0, "prediction": "A"}]

    with (tmp_path / "seldom.jsonl").open("a", encoding="utf-8") as stream:
        writer = RecordWriter(stream, sync_interval=3600.0)
        writer.append(records)
        writer.append(records)
        assert syncs == []
        writer.sync()
        assert len(syncs) == 1
    with (tmp_path / "always.jsonl").open("a", encoding="utf-8") as stream:
        writer = RecordWriter(stream, sync_interval=0.0)
        writer.append(records)
        writer.append(records)
    assert len(syncs) == 3
    assert read_records(tmp_path / "seldom.jsonl") == records * 2


def test_frozen_garbage_collector_restores() -> None:
    assert gc.get_freeze_count() == 0
    with frozen_garbage_collector():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_frozen_garbage_collector_keeps_caller_freeze() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with frozen_garbage_collector():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("baseline", ["random", "prior"])
def test_run_baseline(crossmed: BuiltDataset, run_eval: RunEval, tmp_path: Path, baseline: str) -> None:
    results = run_eval(None, tmp_path / "run", baseline=baseline, circular=True)

    records = read_records(tmp_path / "run" / PREDICTIONS_FILE)
    assert len(records) == crossmed.rows * 4
    assert {record["mode"] for record in records} == {baseline}
    assert {record["run_key"] for record in records} == {results["settings"]["run_key"]}
    assert results["settings"]["random_weights"] is False


def test_run_settings_validation() -> None:
    with pytest.raises(ValueError, match="No model given"):
        RunSettings(dataset="d", config=None)
    with pytest.raises(ValueError, match="Invalid mode 'score'"):
        RunSettings(dataset="d", config=None, model="m", mode="score")
    with pytest.raises(ValueError, match="Invalid baseline 'majority'"):
        RunSettings(dataset="d", config=None, baseline="majority")
    with pytest.raises(ValueError, match="Invalid batch_size 0"):
        RunSettings(dataset="d", config=None, model="m", batch_size=0)
    with pytest.raises(ValueError, match="Invalid limit 0"):
        RunSettings(dataset="d", config=None, model="m", limit=0)
    with pytest.raises(ValueError, match="supports --mode generate only"):
        RunSettings(dataset="d", config=None, model="m", backend="vllm", mode="likelihood")


def test_run_key_fields() -> None:
    base = RunSettings(dataset="hub/crossmed", config="unrelated", model="org/model")

    assert base.run_key() == RunSettings(dataset="hub/crossmed", config="unrelated", model="org/model").run_key()
    assert base.run_key() == RunSettings(
        dataset="hub/crossmed", config="unrelated", model="org/model", batch_size=2, limit=5, num_workers=0
    ).run_key()
    for change in ({"mode": "likelihood"}, {"blind": True}, {"circular": True}, {"split": "validation"},
                   {"config": "related"}, {"model": "org/other"}, {"max_new_tokens": 4}):
        changed = RunSettings(**{"dataset": "hub/crossmed", "config": "unrelated", "model": "org/model", **change})
        assert changed.run_key() != base.run_key(), change


def test_load_split_reads_rebuilt_folder(tmp_path: Path) -> None:
    folder = write_crossmed_folder(tmp_path / "crossmed", n_rows=6, seed=0, config_name="unrelated")
    first = load_split(str(folder), "unrelated", "test", cache_dir=str(tmp_path / "hf_cache"))
    first_fingerprint = dataset_fingerprint(first)
    assert dataset_fingerprint(first) == first_fingerprint

    write_crossmed_folder(folder, n_rows=4, seed=1, config_name="unrelated")
    rebuilt = load_split(str(folder), "unrelated", "test", cache_dir=str(tmp_path / "hf_cache"))

    assert len(first) == 6
    assert len(rebuilt) == 4
    assert dataset_fingerprint(rebuilt) != first_fingerprint
    assert rebuilt.features == first.features


def test_load_split_missing_split(crossmed: BuiltDataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no split 'validation'; its splits are \\['test', 'train'\\]"):
        load_split(str(crossmed.folder), crossmed.config, "validation", cache_dir=str(tmp_path / "hf_cache"))


def test_run_image_missing(qwen2_vl_dir: Path, tmp_path: Path) -> None:
    rows = make_crossmed_rows(4, seed=0)
    # Row 2 is a classification row: the segmentation example figure draws segmentation rows and needs their pixels.
    rows[2]["image"] = None
    columns = {name: [row[name] for row in rows] for name in crossmed_features()}
    folder = tmp_path / "no_pixels"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(columns, features=crossmed_features()).to_parquet(str(folder / "data/test.parquet"))
    (folder / "README.md").write_text(
        "---\nconfigs:\n  - config_name: unrelated\n    data_files:\n"
        "      - split: test\n        path: data/test.parquet\n---\n"
    )
    options = {"out": tmp_path / "run", "mode": "likelihood", "num_workers": 0, "n_bootstrap": 20,
               "cache_dir": str(tmp_path / "hf_cache")}

    with pytest.raises(ValueError, match="'fixture-test-0002' .* has no image.*--blind"):
        evaluate(str(qwen2_vl_dir), str(folder), "unrelated", **options)

    results = evaluate(str(qwen2_vl_dir), str(folder), "unrelated", **{**options, "out": tmp_path / "blind"}, blind=True)
    assert results["n_predictions"] == 4


def test_read_records_drops_incomplete_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / PREDICTIONS_FILE
    records = [{"id": "a", "rotation": 0, "prediction": "A"}, {"id": "b", "rotation": 0, "prediction": "B"}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + '{"id": "c", "rot')

    assert read_records(path) == records
    assert path.read_text().endswith('"rot')
    assert "incomplete last line" in caplog.text

    assert read_records(path, repair=True) == records
    assert path.read_text() == "".join(json.dumps(record) + "\n" for record in records)


def test_read_records_rejects_damaged_line(tmp_path: Path) -> None:
    path = tmp_path / PREDICTIONS_FILE
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')

    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_records(path)


def test_read_records_missing_file(tmp_path: Path) -> None:
    assert read_records(tmp_path / "absent.jsonl") == []


def test_merge_records_prefers_success() -> None:
    records = [
        {"id": "a", "rotation": 0, "prediction": "B"},
        {"id": "b", "rotation": 0, "prediction": FAILED},
        {"id": "a", "rotation": 0, "prediction": FAILED},
        {"id": "b", "rotation": 0, "prediction": "C"},
        {"id": "a", "rotation": 1, "prediction": FAILED},
    ]

    merged = merge_records(records)

    assert merged == [
        {"id": "a", "rotation": 0, "prediction": "B"},
        {"id": "b", "rotation": 0, "prediction": "C"},
        {"id": "a", "rotation": 1, "prediction": FAILED},
    ]


def eval_command(model: Path, crossmed: BuiltDataset, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "eval", "--model", str(model), "--dataset", str(crossmed.folder),
        "--config", crossmed.config,
        "--out", str(out), "--mode", "likelihood", "--circular", "--batch-size", "1", "--num-workers", "0",
        "--n-bootstrap", "20", "--cache-dir", str(out.parent / "hf_cache"), "--seed", "0",
    ]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_run_resumes_after_sigkill(
    qwen2_vl_dir: Path, crossmed: BuiltDataset, run_eval: RunEval, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "killed"
    predictions = out / PREDICTIONS_FILE
    log_path = tmp_path / "killed.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            eval_command(qwen2_vl_dir, crossmed, out), cwd=REPO_ROOT, env=subprocess_env(),
            stdout=subprocess.DEVNULL, stderr=log,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if predictions.exists() and predictions.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before the kill: " + log_path.read_text()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait()

    written = read_records(predictions)
    assert 1 <= len(written) < crossmed.rows * 4
    # A process killed during a write leaves an incomplete last line; the resumed run must drop it.
    with predictions.open("a") as stream:
        stream.write('{"id": "fixture-test-0009", "run_key": "')

    caplog.set_level("INFO")
    run_eval(qwen2_vl_dir, out, mode="likelihood", circular=True, batch_size=1)
    assert f"{len(written)} already finished" in caplog.text

    reference = tmp_path / "uninterrupted"
    run_eval(qwen2_vl_dir, reference, mode="likelihood", circular=True, batch_size=1)
    resumed_records = read_records(predictions)
    assert len(resumed_records) == crossmed.rows * 4
    assert resumed_records[: len(written)] == written
    assert_same_predictions(resumed_records, read_records(reference / PREDICTIONS_FILE))
