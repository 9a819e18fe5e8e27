"""Determinism across runs and processes: the same sources and seed give the same Parquet content.

The second run is a separate ``python crossmed.py build`` process with another
``PYTHONHASHSEED``, so any dependence on ``hash()`` or on set iteration order
shows up. The ``num_proc=2`` build gives each of two ``datasets`` worker
processes one block of cases, with the sources interleaved so the blocks cost
about the same, and must give the same export as one process.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from builder.build import BuildResult, build_and_export
from builder.policy import BadInputError
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
    # The card and dataset_infos.json hold split sizes in bytes, which must not depend on
    # where the worker processes' Arrow files meet.
    for name in ("README.md", "dataset_infos.json"):
        assert (result.out_dir / name).read_bytes() == (first_build.out_dir / name).read_bytes(), name


FORKSERVER_BUILD = """
import sys
from pathlib import Path

import multiprocess

from builder.build import build_and_export

if __name__ == "__main__":
    multiprocess.set_start_method("forkserver", force=True)
    build_and_export(Path(sys.argv[1]), Path(sys.argv[2]), seed=0, num_proc=2)
"""


def test_two_processes_under_forkserver(sources: Path, first_build: BuildResult, tmp_path: Path) -> None:
    # Python 3.14 starts worker processes with forkserver on Linux, as macOS and Windows use spawn.
    script = tmp_path / "forkserver_build.py"
    script.write_text(FORKSERVER_BUILD, encoding="utf-8")
    out_dir = tmp_path / "crossmed"
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TMPDIR=str(tmp_path))

    completed = subprocess.run(
        [sys.executable, str(script), str(sources), str(out_dir)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert parquet_digest(out_dir) == parquet_digest(first_build.out_dir)


def test_two_process_cache_keeps_row_order(sources: Path, tmp_path: Path) -> None:
    from crossmed import CrossMed

    ids = {}
    for num_proc in (1, 2):
        builder = CrossMed(
            config_name="unrelated", data_dir=str(sources), cache_dir=str(tmp_path / f"cache-{num_proc}")
        )
        builder.download_and_prepare(num_proc=num_proc)
        ids[num_proc] = builder.as_dataset(split="test")["id"]

    assert len(ids[1]) > 10
    assert ids[2] == ids[1]


def test_bad_input_in_worker_names_the_file(sources: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "sources"
    shutil.copytree(sources / "brats", damaged / "brats")
    truncated = _truncate_training_volume(damaged)

    with pytest.raises(BadInputError, match=re.escape(str(truncated))) as caught:
        build_and_export(damaged, tmp_path / "crossmed", sources=("brats",), num_proc=2)

    assert "cannot read the NIfTI volume" in caught.value.reason
    assert not (tmp_path / "crossmed").exists()


def test_digest_changes_with_seed(sources: Path, first_build: BuildResult, tmp_path: Path) -> None:
    result = build_and_export(sources, tmp_path / "crossmed", seed=1, num_proc=1)

    assert parquet_digest(result.out_dir) != parquet_digest(first_build.out_dir)


def test_skipped_inputs_with_two_processes(sources: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "sources"
    shutil.copytree(sources / "brats", damaged / "brats")
    truncated = _truncate_training_volume(damaged)

    results = {
        num_proc: build_and_export(
            damaged, tmp_path / f"crossmed-{num_proc}", sources=("brats",), on_bad_input="skip", num_proc=num_proc
        )
        for num_proc in (1, 2)
    }

    for result in results.values():
        assert [item.path for item in result.skipped.skipped] == [str(truncated)]
    assert parquet_digest(results[1].out_dir) == parquet_digest(results[2].out_dir)


def _truncate_training_volume(data_dir: Path) -> Path:
    """Cut the T2 volume of the first BraTS training case short, so that a worker process meets it."""
    cases = sorted((data_dir / "brats" / "MICCAI_BraTS2020_TrainingData").glob("BraTS20_Training_*"))
    case = next(folder for folder in cases if pool_split("brats", folder.name) == "train")
    truncated = case / f"{case.name}_t2.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:3000])
    return truncated
