"""Determinism across runs and processes: the same sources and seed give the same Parquet content.

The second run is a separate ``python crossmed.py build`` process with another
``PYTHONHASHSEED``, so any dependence on ``hash()`` or on set iteration order
shows up. The ``num_proc=2`` build decodes the cases in a pool of two worker
processes, which hands out one case at a time and writes rows in job order.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from builder.build import BuildResult, build_and_export
from builder.splits import pool_split
from builder.synthetic import generate_sources

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBJECTS = 8


def parquet_digest(folder: Path) -> str:
    """Hash the column values of every Parquet file of an export, files in path order, rows in file order."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("data/*/*.parquet")):
        table = pq.read_table(path)
        digest.update(path.relative_to(folder).as_posix().encode())
        for column in table.column_names:
            digest.update(column.encode())
            digest.update(repr(table.column(column).to_pylist()).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("determinism") / "sources"
    generate_sources(root, seed=0, subjects=SUBJECTS, progress=False)
    return root


@pytest.fixture(scope="module")
def first_build(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return build_and_export(sources, tmp_path_factory.mktemp("first") / "crossmed", seed=0, num_proc=1)


def test_digest_same_in_new_process(sources: Path, first_build: BuildResult, tmp_path: Path) -> None:
    out_dir = tmp_path / "crossmed"
    environment = dict(os.environ, PYTHONHASHSEED="12345", TMPDIR=str(tmp_path))
    command = [sys.executable, "crossmed.py", "build", "--data-dir", str(sources), "--out", str(out_dir)]

    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300, check=False
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert parquet_digest(out_dir) == parquet_digest(first_build.out_dir)


def test_digest_same_with_two_processes(sources: Path, first_build: BuildResult, tmp_path: Path) -> None:
    result = build_and_export(sources, tmp_path / "crossmed", seed=0, num_proc=2)

    assert result.pool_counts == first_build.pool_counts
    assert parquet_digest(result.out_dir) == parquet_digest(first_build.out_dir)


def test_digest_changes_with_seed(sources: Path, first_build: BuildResult, tmp_path: Path) -> None:
    result = build_and_export(sources, tmp_path / "crossmed", seed=1, num_proc=1)

    assert parquet_digest(result.out_dir) != parquet_digest(first_build.out_dir)


def test_skipped_inputs_with_two_processes(sources: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "sources"
    shutil.copytree(sources / "brats", damaged / "brats")
    cases = sorted((damaged / "brats" / "MICCAI_BraTS2020_TrainingData").glob("BraTS20_Training_*"))
    # A training case, so that a worker process meets the damaged volume.
    case = next(folder for folder in cases if pool_split("brats", folder.name) == "train")
    truncated = case / f"{case.name}_t2.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:3000])

    results = {
        num_proc: build_and_export(
            damaged, tmp_path / f"crossmed-{num_proc}", sources=("brats",), on_bad_input="skip", num_proc=num_proc
        )
        for num_proc in (1, 2)
    }

    for result in results.values():
        assert [item.path for item in result.skipped.skipped] == [str(truncated)]
    assert parquet_digest(results[1].out_dir) == parquet_digest(results[2].out_dir)
