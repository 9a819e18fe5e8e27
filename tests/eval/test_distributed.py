"""Tests of data-parallel runs: sharding, and two CPU processes under torchrun matching one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from eval.data import WorkItem, shard_items
from eval.runner import PREDICTIONS_FILE, RANK_FILE_PATTERN, read_records
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from tests.eval.tiny_models import BuiltDataset, RunEval

pytest_plugins = ["tests.eval.tiny_models"]


def test_shard_items_cover_once() -> None:
    items = [WorkItem(index, f"q{index}", rotation) for index in range(7) for rotation in range(4)]

    shards = [shard_items(items, rank, 3) for rank in range(3)]

    assert sorted((item for shard in shards for item in shard), key=lambda item: item.key) == sorted(
        items, key=lambda item: item.key
    )
    assert [len(shard) for shard in shards] == [10, 9, 9]
    assert shards[1][:2] == [items[1], items[4]]


def test_shard_items_single_process() -> None:
    items = [WorkItem(index, f"q{index}", 0) for index in range(3)]

    assert shard_items(items, 0, 1) == items


@pytest.mark.slow
def test_two_processes_match_one(
    qwen2_vl_dir: Path, crossmed: BuiltDataset, run_eval: RunEval, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "eval", "--model", str(qwen2_vl_dir), "--dataset", str(crossmed.folder),
        "--config", crossmed.config,
        "--out", str(out), "--mode", "likelihood", "--circular", "--batch-size", "3", "--num-workers", "1",
        "--n-bootstrap", "20", "--cache-dir", str(tmp_path / "hf_cache"),
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}

    finished = subprocess.run(
        command, check=False, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=400
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Rank 0 of 2 processes: 20 work items" in finished.stderr
    assert "Rank 1 of 2 processes: 20 work items" in finished.stderr
    assert not list(out.glob(RANK_FILE_PATTERN)), "rank files are merged and removed"

    run_eval(qwen2_vl_dir, tmp_path / "one", mode="likelihood", circular=True, batch_size=3)
    merged = read_records(out / PREDICTIONS_FILE)
    single = read_records(tmp_path / "one" / PREDICTIONS_FILE)
    assert len(merged) == crossmed.rows * 4
    assert [(record["id"], record["rotation"]) for record in merged] == [
        (record["id"], record["rotation"]) for record in single
    ]
    for record, reference in zip(merged, single, strict=True):
        assert record["prediction"] == reference["prediction"], record["id"]
        assert record["run_key"] == reference["run_key"]
        np.testing.assert_allclose(record["scores"], reference["scores"], atol=1e-4)
    assert (out / "results.json").is_file()
