"""Small pool splits of every triplet, built without source readers, for export and publishing tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import datasets
import numpy as np

from builder.boxes import format_box
from builder.export import export_pool
from builder.features import crossmed_features
from builder.imaging import encode_mask_png, encode_png
from builder.mat import LETTERS, TRIPLETS, TRIPLETS_BY_SOURCE, Triplet
from builder.splits import POOL_SPLITS

SOURCE_OF = {triplet: source for source, triplets in TRIPLETS_BY_SOURCE.items() for triplet in triplets}
LABELS = ("Atelectasis", "Cardiomegaly", "Edema", "Pleural Effusion", "Pneumonia")
BOXES = ([100, 100, 300, 300], [600, 100, 800, 300], [100, 600, 300, 800], [600, 600, 800, 800])


def make_row(triplet: Triplet, split: str, index: int, question_suffix: str = "") -> dict:
    """Return one row of ``triplet`` in pool split ``split`` with a 16x16 PNG image (and mask for segmentation)."""
    source = SOURCE_OF[triplet]
    rng = np.random.default_rng([TRIPLETS.index(triplet), POOL_SPLITS.index(split), index])
    answer_index = index % len(LETTERS)
    row = {
        "id": f"{source}-{triplet.slug}-{split}-{index:03d}",
        "image": {"bytes": encode_png(rng.integers(0, 256, (16, 16), dtype=np.uint8)), "path": None},
        "question": f"Question {index} about {triplet.name}?{question_suffix}",
        "answer": LETTERS[answer_index],
        "answer_index": answer_index,
        "modality": triplet.modality,
        "anatomy": triplet.anatomy,
        "task": triplet.task,
        "triplet": triplet.name,
        "source": source,
        "subject_id": f"{source}-subject-{split}-{index}",
        "slice_index": 40 if triplet.modality != "X-ray" else -1,
        "source_file": f"{source}/case-{split}-{index}/image.file",
        "template_id": index % 3,
        "mask": None,
        "bbox": None,
        "option_boxes": None,
    }
    if triplet.task == "Classification":
        labels = [LABELS[(index + shift) % len(LABELS)] for shift in range(len(LETTERS))]
        row["options"] = labels
        return row

    mask = np.zeros((16, 16), dtype=bool)
    mask[2:5, 2:5] = True
    boxes = [list(box) for box in BOXES]
    boxes[0], boxes[answer_index] = boxes[answer_index], boxes[0]
    row.update(
        options=[format_box(box) for box in boxes],
        mask={"bytes": encode_mask_png(mask), "path": None},
        bbox=boxes[answer_index],
        option_boxes=boxes,
    )
    return row


def make_pool(
    rows_per_part: int = 3, extra_rows: Mapping[Triplet, int] | None = None, question_suffix: str = ""
) -> dict[str, datasets.Dataset]:
    """Return the pool splits with ``rows_per_part`` rows of every (triplet, split).

    Args:
        rows_per_part: Rows of each (triplet, pool split).
        extra_rows: Per triplet, rows added to each of its splits, to make a changed version.
        question_suffix: Text appended to the questions of the triplets in ``extra_rows``.
    """
    extra_rows = extra_rows or {}
    pool = {}
    for split in POOL_SPLITS:
        rows = []
        for triplet in TRIPLETS:
            count = rows_per_part + extra_rows.get(triplet, 0)
            suffix = question_suffix if triplet in extra_rows else ""
            rows += [make_row(triplet, split, index, suffix) for index in range(count)]
        columns = {name: [row[name] for row in rows] for name in crossmed_features()}
        pool[split] = datasets.Dataset.from_dict(columns, features=crossmed_features())
    return pool


def make_export(
    out_dir: Path,
    rows_per_part: int = 3,
    extra_rows: Mapping[Triplet, int] | None = None,
    question_suffix: str = "",
    ship_pixels: Mapping[str, bool] | None = None,
) -> Path:
    """Export a pool made by :func:`make_pool` to ``out_dir`` and return the folder."""
    pool = make_pool(rows_per_part, extra_rows, question_suffix)
    return export_pool(pool, out_dir, ship_pixels=ship_pixels)
