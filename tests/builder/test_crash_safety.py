"""Crash safety of ``python crossmed.py build``: a build killed with SIGKILL leaves nothing that looks complete.

Each test starts the command line as a real process on the 40-subject
synthetic sources with one worker and waits until the build reaches a given
phase. It then kills the process with SIGKILL, so no cleanup handler runs, and
checks ``--out``. Last, it reruns the build to completion, which must equal the
session's clean build, Parquet value for value.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest

from tests.builder.test_determinism import parquet_digest

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.02
TIMEOUT_SECONDS = 300


def build_command(data_dir: Path, out_dir: Path, *options: str) -> list[str]:
    return [
        sys.executable, "crossmed.py", "build", "--data-dir", str(data_dir), "--out", str(out_dir),
        "--num-proc", "1", *options,
    ]


def build_environment(temp_dir: Path) -> dict[str, str]:
    """Point the temporary folders of the build (its datasets cache among them) at ``temp_dir``."""
    temp_dir.mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(temp_dir), HF_HUB_OFFLINE="1")


def kill_when(command: list[str], environment: dict[str, str], log: Path, reached: Callable[[], bool]) -> None:
    """Start ``command`` and SIGKILL it as soon as ``reached()`` is true."""
    with log.open("w") as stream:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=stream, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while not reached():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"the build ended before the phase to interrupt; its output:\n{log.read_text()[-3000:]}")
            time.sleep(POLL_SECONDS)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL


def run_to_completion(command: list[str], environment: dict[str, str]) -> None:
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def snapshot(folder: Path) -> dict[str, str]:
    """Return the SHA-256 of every file under ``folder``, keyed by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def check_loads(out_dir: Path, demo_build) -> None:
    loaded = datasets.load_dataset(str(out_dir), "unrelated")
    expected = demo_build.load("unrelated")
    assert {split: loaded[split].num_rows for split in loaded} == {split: expected[split].num_rows for split in expected}


@pytest.mark.slow
def test_kill_during_generation(synthetic_sources: Path, demo_build, tmp_path: Path) -> None:
    out_dir = tmp_path / "crossmed"
    temp_dir = tmp_path / "tmp"
    environment = build_environment(temp_dir)
    command = build_command(synthetic_sources, out_dir)

    # The train split's Arrow file appears in the datasets cache once its rows are written,
    # while the validation and test splits and the export are still to come.
    kill_when(command, environment, tmp_path / "killed.log", lambda: any(temp_dir.glob("*/*/*/*.incomplete/*.arrow")))

    assert not out_dir.exists()
    assert not list(tmp_path.glob(".crossmed.*"))

    run_to_completion(command, environment)

    assert parquet_digest(out_dir) == parquet_digest(demo_build.export)
    check_loads(out_dir, demo_build)


@pytest.mark.slow
def test_kill_during_export(synthetic_sources: Path, demo_build, tmp_path: Path) -> None:
    out_dir = tmp_path / "crossmed"
    shutil.copytree(demo_build.export, out_dir)
    before = snapshot(out_dir)
    environment = build_environment(tmp_path / "tmp")
    command = build_command(synthetic_sources, out_dir, "--overwrite")

    kill_when(command, environment, tmp_path / "killed.log", lambda: any(tmp_path.glob(".crossmed.partial-*")))

    assert snapshot(out_dir) == before
    assert list(tmp_path.glob(".crossmed.partial-*")), "the killed export left no staging folder to clean up"

    run_to_completion(command, environment)

    assert not list(tmp_path.glob(".crossmed.*"))
    assert parquet_digest(out_dir) == parquet_digest(demo_build.export)
    check_loads(out_dir, demo_build)
