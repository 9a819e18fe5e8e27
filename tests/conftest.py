"""Shared fixtures: the real sample files and logging setup.

The real public sample files live outside the repository. ``CROSSMED_SAMPLES``
points at them and defaults to ``../shared/samples`` next to the checkout. Tests
that need them skip, naming the missing folder, where it is absent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never reach the network, and the datasets cache of a test run stays out of the user's cache,
# even where the user's environment sets either variable.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="crossmed-test-cache-")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLES = REPO_ROOT.parent / "shared" / "samples"


def samples_root() -> Path:
    """Return the folder of real sample files, from ``CROSSMED_SAMPLES`` or the default."""
    return Path(os.environ.get("CROSSMED_SAMPLES", str(DEFAULT_SAMPLES)))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The real sample files; skips the test where the folder is absent."""
    root = samples_root()
    if not root.is_dir():
        pytest.skip(
            f"real sample files not found at {root}; set CROSSMED_SAMPLES to the samples folder to run this test"
        )
    return root
