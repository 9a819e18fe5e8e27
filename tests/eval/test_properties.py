"""Property tests of answer extraction and box IoU."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from builder.mat import LETTERS
from eval.extraction import INVALID, extract_answer
from eval.metrics import box_iou

OPTIONS = st.lists(st.text(max_size=30), min_size=4, max_size=4)
COORDINATE = st.integers(min_value=0, max_value=1000)
ANY_BOX = st.lists(COORDINATE, min_size=4, max_size=4)


@st.composite
def non_empty_boxes(draw: st.DrawFn) -> list[int]:
    x1 = draw(st.integers(min_value=0, max_value=999))
    y1 = draw(st.integers(min_value=0, max_value=999))
    x2 = draw(st.integers(min_value=x1 + 1, max_value=1000))
    y2 = draw(st.integers(min_value=y1 + 1, max_value=1000))
    return [x1, y1, x2, y2]


@given(st.text(), OPTIONS)
def test_extract_answer_any_text(text: str, options: list[str]) -> None:
    assert extract_answer(text, options) in (*LETTERS, INVALID)


@given(st.sampled_from(LETTERS), OPTIONS)
def test_extract_answer_explicit_letter(letter: str, options: list[str]) -> None:
    assert extract_answer(f"Answer: {letter}", options) == letter


@given(st.sampled_from(LETTERS), st.text(alphabet=st.characters(categories=["L", "N", "P", "Z"]), max_size=40))
def test_extract_answer_think_ignored(letter: str, reasoning: str) -> None:
    """Letters inside a closed reasoning block never change the answer."""
    output = f"<think>{reasoning.replace('<', '')}</think>Answer: {letter}"
    assert extract_answer(output, ["one", "two", "three", "four"]) == letter


@given(ANY_BOX, ANY_BOX)
def test_box_iou_bounded_symmetric(first: list[int], second: list[int]) -> None:
    value = box_iou(first, second)

    assert 0.0 <= value <= 1.0
    assert value == box_iou(second, first)


@given(non_empty_boxes())
def test_box_iou_identical_is_one(box: list[int]) -> None:
    assert box_iou(box, box) == 1.0


@given(non_empty_boxes(), non_empty_boxes())
def test_box_iou_contained_is_area_ratio(outer: list[int], inner: list[int]) -> None:
    """A box inside another has IoU equal to the ratio of their areas."""
    x1, y1 = max(outer[0], min(inner[0], outer[2] - 1)), max(outer[1], min(inner[1], outer[3] - 1))
    x2, y2 = min(outer[2], max(inner[2], x1 + 1)), min(outer[3], max(inner[3], y1 + 1))
    contained = [x1, y1, x2, y2]

    area = (x2 - x1) * (y2 - y1)
    outer_area = (outer[2] - outer[0]) * (outer[3] - outer[1])
    assert box_iou(outer, contained) == area / outer_area
