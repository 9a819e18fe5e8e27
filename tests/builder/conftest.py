"""A build of the synthetic sources, made once per test session and shared by the build tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest

from builder.build import BuildResult, build_and_export
from builder.synthetic import generate_sources

DEMO_SUBJECTS = 40


@dataclass
class DemoBuild:
    sources: Path
    export: Path
    result: BuildResult

    def load(self, config: str, split: str | None = None, **kwargs):
        return datasets.load_dataset(str(self.export), config, split=split, **kwargs)


@pytest.fixture(scope="session")
def synthetic_sources(tmp_path_factory) -> Path:
    """Synthetic sources in the four native layouts, default seed."""
    root = Path(tmp_path_factory.mktemp("sources")) / "sources"
    generate_sources(root, seed=0, subjects=DEMO_SUBJECTS, progress=False)
    return root


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory, synthetic_sources) -> DemoBuild:
    """The synthetic sources built and exported once with seed 0."""
    export = Path(tmp_path_factory.mktemp("export")) / "crossmed"
    result = build_and_export(synthetic_sources, export, seed=0)
    return DemoBuild(synthetic_sources, export, result)
