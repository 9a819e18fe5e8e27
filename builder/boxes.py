"""Box arithmetic for segmentation questions, on the 0-1000 normalized scale.

A box is ``[x1, y1, x2, y2]`` with integer corners: ``(x1, y1)`` is the
top-left corner of the first covered pixel and ``(x2, y2)`` the bottom-right
corner of the last, so ``x2 > x1`` and ``y2 > y1`` for a non-empty box and the
area is ``(x2 - x1) * (y2 - y1)``. Coordinates run from 0 to 1000 across the
image width (x) and height (y).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SCALE = 1000

# A distractor box overlaps the truth box by less than this IoU.
MAX_DISTRACTOR_IOU = 0.25

Box = tuple[int, int, int, int]


def mask_box(mask: np.ndarray) -> Box:
    """Return the normalized box that encloses every pixel of ``mask``, all components together.

    The pixel extent is rounded outwards (floor for the near corner, ceiling for
    the far one), so the box always contains the whole mask.

    Raises:
        ValueError: when the mask is empty.
    """
    rows = np.flatnonzero(np.any(mask, axis=1))
    columns = np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        raise ValueError("cannot box an empty mask: it has no foreground pixel")

    height, width = mask.shape
    return (
        math.floor(columns[0] * SCALE / width),
        math.floor(rows[0] * SCALE / height),
        math.ceil((columns[-1] + 1) * SCALE / width),
        math.ceil((rows[-1] + 1) * SCALE / height),
    )


def box_area(box: Sequence[int]) -> int:
    """Return the area of a box, 0 for an empty or inverted one."""
    x1, y1, x2, y2 = box
    return max(0, x2 - x1) * max(0, y2 - y1)


def box_iou(first: Sequence[int], second: Sequence[int]) -> float:
    """Return the intersection over union of two boxes, 0.0 when both are empty."""
    intersection = box_area(
        (max(first[0], second[0]), max(first[1], second[1]), min(first[2], second[2]), min(first[3], second[3]))
    )
    union = box_area(first) + box_area(second) - intersection
    return intersection / union if union > 0 else 0.0


def format_box(box: Sequence[int]) -> str:
    """Return the option text of a box, e.g. ``[120, 300, 410, 620]``."""
    return "[" + ", ".join(str(int(value)) for value in box) + "]"


def distractor_boxes(truth: Box, rng: np.random.Generator, count: int = 3, max_iou: float = MAX_DISTRACTOR_IOU) -> list[Box]:
    """Draw ``count`` boxes inside the image, each with IoU below ``max_iou`` against ``truth`` and each other.

    Distractors keep the size of the truth box where they can, so box size does
    not give the answer away. When the truth box is too large for that (it
    covers most of the image), the size shrinks by 10 % per round until boxes fit.

    Raises:
        ValueError: when ``truth`` is empty or lies outside the image.
    """
    if box_area(truth) == 0 or min(truth) < 0 or max(truth) > SCALE:
        raise ValueError(f"invalid truth box {list(truth)}: expected 0 <= x1 < x2 <= {SCALE}, 0 <= y1 < y2 <= {SCALE}")

    width, height = truth[2] - truth[0], truth[3] - truth[1]
    chosen: list[Box] = []
    while len(chosen) < count:
        found = _place_box(truth, chosen, width, height, rng, max_iou)
        if found is None:
            width, height = max(10, int(width * 0.9)), max(10, int(height * 0.9))
            continue
        chosen.append(found)
    return chosen


def _place_box(truth: Box, chosen: list[Box], width: int, height: int, rng: np.random.Generator, max_iou: float) -> Box | None:
    for _ in range(200):
        x1 = int(rng.integers(0, SCALE - width + 1))
        y1 = int(rng.integers(0, SCALE - height + 1))
        candidate = (x1, y1, x1 + width, y1 + height)
        if all(box_iou(candidate, other) < max_iou for other in [truth, *chosen]):
            return candidate
    return None
