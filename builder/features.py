"""The ``datasets`` features of a CrossMed row.

Columns whose values form a closed set are ``ClassLabel`` columns, so
``row["modality"]`` is an integer and ``features["modality"].int2str`` names it.
Segmentation-only columns are None on classification rows.

Boxes (``bbox`` and ``option_boxes``) are ``[x1, y1, x2, y2]`` integers on a
0-1000 scale: x runs left to right over the image width, y top to bottom over
the height. ``(x1, y1)`` is the top-left corner of the first pixel inside the
box and ``(x2, y2)`` the bottom-right corner of the last, so a box that covers
the whole image is ``[0, 0, 1000, 1000]``. A pixel box converts as
``x_pixel = x / 1000 * width``.
"""

from __future__ import annotations

import datasets

from builder.mat import ANATOMIES, LETTERS, MODALITIES, SOURCES, TASKS, TRIPLETS

# Boxes are variable-length lists, although every box has 4 values and option_boxes has 4 boxes:
# the Parquet reader of pyarrow 25 and older cannot read a fixed-size list column that contains
# nulls (apache/arrow issue 35692, fixed in pyarrow 26), and classification rows have null boxes.
BOX = datasets.List(datasets.Value("int32"))


def crossmed_features() -> datasets.Features:
    """Return the features shared by every CrossMed config."""
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "options": datasets.List(datasets.Value("string"), length=4),
            "answer": datasets.Value("string"),
            "answer_index": datasets.ClassLabel(names=list(LETTERS)),
            "modality": datasets.ClassLabel(names=list(MODALITIES)),
            "anatomy": datasets.ClassLabel(names=list(ANATOMIES)),
            "task": datasets.ClassLabel(names=list(TASKS)),
            "triplet": datasets.ClassLabel(names=[triplet.name for triplet in TRIPLETS]),
            "source": datasets.ClassLabel(names=list(SOURCES)),
            "subject_id": datasets.Value("string"),
            "slice_index": datasets.Value("int32"),
            "source_file": datasets.Value("string"),
            "template_id": datasets.Value("int32"),
            "mask": datasets.Image(),
            "bbox": BOX,
            "option_boxes": datasets.List(BOX),
        }
    )
