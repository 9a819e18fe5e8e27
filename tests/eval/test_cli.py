"""Tests of the command line (eval.cli, python -m eval) and the vLLM backend guard."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from eval.cli import EXIT_USAGE_ERROR, build_parser, main
from eval.runner import PREDICTIONS_FILE, read_records
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from tests.eval.tiny_models import BuiltDataset

pytest_plugins = ["tests.eval.tiny_models"]


def base_arguments(crossmed: BuiltDataset, out: Path) -> list[str]:
    return [
        "--dataset", str(crossmed.folder), "--config", crossmed.config, "--out", str(out), "--num-workers", "0",
        "--n-bootstrap", "20", "--cache-dir", str(out.parent / "hf_cache"),
    ]


def test_help_states_units() -> None:
    text = " ".join(build_parser().format_help().split())

    assert "questions per forward pass" in text
    assert "maximum generated tokens per question" in text
    assert "first N questions" in text
    assert "bfloat16 on CUDA and float32 on CPU" in text
    assert "--trust-remote-code" in text
    assert "--allow-pickle-weights" in text
    assert "0 prepares batches in the main process" in text


def test_parser_defaults() -> None:
    options = build_parser().parse_args(["--dataset", "d", "--out", "runs/x", "--model", "m"])

    assert options.split == "test"
    assert options.mode == "generate"
    assert options.batch_size == 8
    assert options.max_new_tokens == 16
    assert options.dtype == "auto"
    assert options.backend == "hf"
    assert options.num_workers == 2
    assert options.trust_remote_code is False
    assert options.allow_pickle_weights is False
    assert options.blind is False
    assert options.circular is False


def test_parser_rejects_unknown_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--dataset", "d", "--out", "o", "--mode", "score"])

    assert "invalid choice: 'score'" in capsys.readouterr().err


def test_main_model_run(qwen2_vl_dir: Path, crossmed: BuiltDataset, tmp_path: Path) -> None:
    out = tmp_path / "run"
    arguments = ["--model", str(qwen2_vl_dir), "--mode", "likelihood", "--limit", "3", "--blind"]

    assert main(arguments + base_arguments(crossmed, out)) == 0

    records = read_records(out / PREDICTIONS_FILE)
    assert len(records) == 3
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["blind"] is True
    assert settings["mode"] == "likelihood"
    assert settings["model"] == str(qwen2_vl_dir)


def test_main_without_model_fails(
    crossmed: BuiltDataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status = main(base_arguments(crossmed, tmp_path / "run"))

    assert status == EXIT_USAGE_ERROR
    assert "No model given" in caplog.text


def test_main_missing_model_folder(crossmed: BuiltDataset, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "no-such-model"

    status = main(["--model", str(missing), *base_arguments(crossmed, tmp_path / "run")])

    assert status == EXIT_USAGE_ERROR
    assert f"Model folder {missing} not found" in caplog.text
    assert "save_pretrained" in caplog.text
    assert not (tmp_path / "run").exists()


def test_main_unknown_model_name_leaves_no_run_folder(
    crossmed: BuiltDataset, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not written as a path, so it reaches transformers as a possible Hub id, which fails offline.
    monkeypatch.chdir(tmp_path)

    status = main(["--model", "models/no-such-model", *base_arguments(crossmed, tmp_path / "run")])

    assert status == EXIT_USAGE_ERROR
    assert "Model models/no-such-model is not a folder here" in caplog.text
    assert not (tmp_path / "run").exists()


def test_main_missing_dataset_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "no-such-export"
    arguments = ["--baseline", "random", "--dataset", str(missing), "--out", str(tmp_path / "run")]

    status = main(arguments)

    assert status == EXIT_USAGE_ERROR
    assert f"Dataset folder {missing} not found" in caplog.text
    assert "python crossmed.py build" in caplog.text
    assert not (tmp_path / "run").exists()


def test_main_compare(crossmed: BuiltDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for baseline in ("random", "prior"):
        assert main(["--baseline", baseline] + base_arguments(crossmed, tmp_path / baseline)) == 0
    capsys.readouterr()
    table_path = tmp_path / "compare.md"

    status = main(["compare", str(tmp_path / "random"), str(tmp_path / "prior"), "--output", str(table_path)])

    printed = capsys.readouterr().out
    assert status == 0
    assert "random" in printed
    assert "prior" in printed
    assert table_path.read_text() == printed
    assert len(read_records(tmp_path / "random" / PREDICTIONS_FILE)) == crossmed.rows


def test_python_m_eval_help() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "eval", "--help"], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )

    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.startswith("usage: python -m eval")


HEAVY_MODULES_LOADED = """
import sys
from eval.cli import main
status = main(sys.argv[1:])
print(status, sorted(name for name in ("torch", "transformers", "datasets") if name in sys.modules))
"""


@pytest.mark.parametrize("missing", ["--model", "--dataset"])
def test_missing_folder_fails_before_heavy_imports(tmp_path: Path, missing: str) -> None:
    folders = {"--model": str(tmp_path / "model"), "--dataset": str(tmp_path / "export")}
    if missing == "--dataset":
        (tmp_path / "model").mkdir()
    arguments = [option for name, folder in folders.items() for option in (name, folder)]

    finished = subprocess.run(
        [sys.executable, "-c", HEAVY_MODULES_LOADED, *arguments, "--out", str(tmp_path / "run")],
        check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )

    assert finished.stdout.strip() == f"{EXIT_USAGE_ERROR} []", finished.stderr[-2000:]
    assert f"folder {folders[missing]} not found" in finished.stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_names_install_command() -> None:
    from eval.vllm_backend import VllmGenerator

    with pytest.raises(ImportError, match="pip install vllm"):
        VllmGenerator("org/model")
