"""Box arithmetic: enclosing boxes, IoU and distractor placement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.boxes import MAX_DISTRACTOR_IOU, SCALE, box_area, box_iou, distractor_boxes, format_box, mask_box
from builder.splits import stable_rng


def test_mask_box_encloses_two_components():
    mask = np.zeros((100, 200), dtype=bool)
    mask[10:20, 30:40] = True
    mask[60:70, 150:160] = True
    assert mask_box(mask) == (150, 100, 800, 700)


def test_mask_box_rounds_outwards():
    mask = np.zeros((3, 3), dtype=bool)
    mask[1, 1] = True
    assert mask_box(mask) == (333, 333, 667, 667)


def test_mask_box_whole_image():
    assert mask_box(np.ones((7, 9), dtype=bool)) == (0, 0, SCALE, SCALE)


def test_mask_box_empty_raises():
    with pytest.raises(ValueError, match="empty mask"):
        mask_box(np.zeros((4, 4), dtype=bool))


def test_box_iou_hand_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_format_box():
    assert format_box((1, 22, 333, 1000)) == "[1, 22, 333, 1000]"


def test_distractors_below_bound_inside_image_same_size():
    truth = (100, 200, 400, 500)
    boxes = distractor_boxes(truth, stable_rng(0, "test"))
    assert len(boxes) == 3
    for box in boxes:
        assert box_iou(box, truth) < MAX_DISTRACTOR_IOU
        assert 0 <= box[0] < box[2] <= SCALE, box
        assert 0 <= box[1] < box[3] <= SCALE, box
        assert box_area(box) == box_area(truth)
    assert len(set(boxes)) == 3


def test_distractors_for_whole_image_truth_shrink():
    truth = (0, 0, SCALE, SCALE)
    boxes = distractor_boxes(truth, stable_rng(0, "large"))
    assert all(box_iou(box, truth) < MAX_DISTRACTOR_IOU for box in boxes)


def test_distractors_invalid_truth_raises():
    with pytest.raises(ValueError, match="invalid truth box"):
        distractor_boxes((10, 10, 10, 50), stable_rng(0))


@settings(max_examples=60, deadline=None)
@given(
    x1=st.integers(0, 990), y1=st.integers(0, 990), width=st.integers(1, 1000), height=st.integers(1, 1000),
    seed=st.integers(0, 2**32),
)
def test_distractor_property(x1, y1, width, height, seed):
    truth = (x1, y1, min(SCALE, x1 + width), min(SCALE, y1 + height))
    boxes = distractor_boxes(truth, stable_rng(seed))
    for box in boxes:
        assert box_iou(box, truth) < MAX_DISTRACTOR_IOU
        assert 0 <= box[0] < box[2] <= SCALE, box
        assert 0 <= box[1] < box[3] <= SCALE, box
    for first in range(3):
        for second in range(first + 1, 3):
            assert box_iou(boxes[first], boxes[second]) < MAX_DISTRACTOR_IOU


@settings(max_examples=60, deadline=None)
@given(
    first=st.tuples(*[st.integers(0, 1000)] * 4), second=st.tuples(*[st.integers(0, 1000)] * 4),
)
def test_box_iou_property(first, second):
    value = box_iou(first, second)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(box_iou(second, first))
