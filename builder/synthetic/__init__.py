"""Seeded synthetic sources in the native layouts of CheXpert, SIIM-ACR, BraTS 2020 and MosMedData.

The generated folders are the default input of the demo and of tests that need
many cases: the readers take them exactly as they take the real downloads.
The pixels are cartoon phantoms (see :mod:`builder.synthetic.phantoms`), so
scores on them do not measure a model's medical skill.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from builder.synthetic.layouts import WRITERS, encode_rle

logger = logging.getLogger(__name__)

# A file at the root of generated sources; builds from such a folder say so in their dataset card.
SYNTHETIC_MARKER = "CROSSMED_SYNTHETIC.txt"

# Below this count MosMed cannot fill its five categories and CheXpert its two CSV files.
MIN_SUBJECTS = 5

__all__ = ["MIN_SUBJECTS", "encode_rle", "generate_sources"]


def _check_arguments(out_dir: Path, seed: int, subjects: int) -> None:
    """Raise for a negative seed, too few subjects, or an ``out_dir`` that already has content."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed is {seed!r}: expected a non-negative integer")
    if not isinstance(subjects, int) or subjects < MIN_SUBJECTS:
        raise ValueError(f"subjects is {subjects!r}: expected an integer of at least {MIN_SUBJECTS}")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"Output path {out_dir} exists and is not a folder; choose a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(f"Output folder {out_dir} is not empty; remove it or choose another folder")


def generate_sources(out_dir: Path, seed: int = 0, subjects: int = 40, progress: bool = True) -> dict[str, Path]:
    """Write synthetic CheXpert, SIIM-ACR, BraTS 2020 and MosMedData sources under ``out_dir``.

    The same seed and subject count give byte-identical files with the same
    versions of NumPy, Pillow, pydicom, nibabel and openpyxl. Subject ids are
    chosen so that the pool splits get about 70/10/20 % of each source's
    subjects (28/4/8 for 40). Labels (CheXpert findings, BraTS grades, MosMed
    categories) are dealt per split, so each split has as many different
    labels as its size allows.

    The sources are written into a hidden sibling folder
    ``.<name>.*.partial`` that is renamed to ``out_dir`` at the end, so an
    interrupted run leaves no folder that looks complete. A run killed
    without cleanup can leave that hidden folder behind, to be deleted by hand.

    Args:
        out_dir: The folder to create. It may exist only if it is empty.
        seed: Seed of every random draw, a non-negative integer.
        subjects: Subjects per source (patients for CheXpert and SIIM, cases
            for BraTS, studies for MosMed), at least ``MIN_SUBJECTS``.
            The default of 40 writes about 30 MB in about 500 files (9 s
            measured on a shared 2-core machine).
        progress: Show a tqdm progress bar over subjects.

    Returns:
        The four source folders keyed by source name: ``out_dir/chexpert``,
        ``out_dir/siim``, ``out_dir/brats`` and ``out_dir/mosmed``.

    Raises:
        ValueError: for a negative seed or fewer than ``MIN_SUBJECTS`` subjects.
        FileExistsError: when ``out_dir`` exists and is not empty.
        NotADirectoryError: when ``out_dir`` is a file.
    """
    out_dir = Path(out_dir)
    _check_arguments(out_dir, seed, subjects)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Writing synthetic sources to %s (seed %d, %d subjects per source)", out_dir, seed, subjects)

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        # mkdtemp creates the folder readable only by its owner, so give it the usual mode of a new folder.
        os.chmod(staging, 0o755)
        with tqdm(total=len(WRITERS) * subjects, unit="subject", disable=not progress) as bar:
            for name, write in WRITERS.items():
                bar.set_description(f"synthetic {name}")
                write(staging / name, seed, subjects, bar.update)

        (staging / SYNTHETIC_MARKER).write_text(
            f"Synthetic sources written by builder.synthetic (seed {seed}, {subjects} subjects per source); "
            "not patient data.\n",
            encoding="utf-8",
        )
        if out_dir.is_dir():
            out_dir.rmdir()
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)

    logger.info("Wrote synthetic sources to %s", out_dir)
    return {name: out_dir / name for name in WRITERS}
