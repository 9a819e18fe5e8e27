"""Fixtures shared by the eval runner tests: tiny models, a small built dataset and a run helper.

Test modules load this file with ``pytest_plugins = ["tests.eval.tiny_models"]``
instead of importing from it, so that pytest registers the fixtures once per
session. Each tiny model is built once per session by
:func:`eval.tiny.build_tiny_model` (offline, seed 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eval.api import evaluate
from eval.tiny import FAMILIES, build_tiny_model
from tests.eval.fixtures import write_crossmed_folder


@dataclass(frozen=True)
class BuiltDataset:
    """A built CrossMed folder with train and test splits.

    Attributes:
        folder: the folder, in the Hub layout.
        config: the name of its only config.
        rows: questions per split.
    """

    folder: Path
    config: str
    rows: int


RunEval = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A cache of tiny model folders by family, filled on first use."""
    return {}


def _model_path(family: str, cache: dict[str, Path], factory: pytest.TempPathFactory) -> Path:
    if family not in cache:
        cache[family] = build_tiny_model(family, factory.mktemp(f"tiny_{family}"), seed=0)
    return cache[family]


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_model_dir(
    request: pytest.FixtureRequest, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Each tiny model folder in turn: Qwen2-VL, then LLaVA."""
    return _model_path(request.param, tiny_models, tmp_path_factory)


@pytest.fixture(scope="session")
def qwen2_vl_dir(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2-VL model folder."""
    return _model_path("qwen2_vl", tiny_models, tmp_path_factory)


@pytest.fixture(scope="session")
def llava_dir(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLaVA model folder."""
    return _model_path("llava", tiny_models, tmp_path_factory)


@pytest.fixture(scope="session")
def crossmed(tmp_path_factory: pytest.TempPathFactory) -> BuiltDataset:
    """A built CrossMed folder with 10 questions per split (two of each triplet) and the config ``unrelated``."""
    rows, config = 10, "unrelated"
    folder = write_crossmed_folder(tmp_path_factory.mktemp("crossmed"), n_rows=rows, seed=0, config_name=config)
    return BuiltDataset(folder=folder, config=config, rows=rows)


@pytest.fixture
def run_eval(crossmed: BuiltDataset) -> RunEval:
    """A function that evaluates a model (or None with ``baseline=``) on ``crossmed`` into a run folder.

    Its defaults keep tests small: no image workers, 20 bootstrap resamples,
    4 generated tokens, batch size 4 and a ``datasets`` cache beside the run
    folder. Keyword arguments override them and go to :func:`eval.api.evaluate`.
    """

    def run(model: Path | None, out: Path, **options: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "num_workers": 0,
            "n_bootstrap": 20,
            "cache_dir": str(out.parent / "hf_cache"),
            "batch_size": 4,
            "max_new_tokens": 4,
        }
        settings.update(options)
        name = None if model is None else str(model)
        return evaluate(name, str(crossmed.folder), crossmed.config, out=out, **settings)

    return run
