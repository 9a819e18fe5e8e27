"""Tests for eval.extraction: model outputs in the shapes real models write."""

from __future__ import annotations

import pytest

from eval.extraction import INVALID, extract_answer, normalise_output

FINDINGS = ["Atelectasis", "Cardiomegaly", "Pleural Effusion", "No Finding"]
SEQUENCES = ["FLAIR", "T1", "T1ce", "T2"]
NORMAL_VS_NO = ["Normal", "Abnormal", "No", "Yes"]
SEVERITY = ["CT-0", "CT-1", "CT-2", "CT-3"]
BOXES = ["[120, 300, 410, 620]", "[500, 100, 700, 300]", "[0, 0, 250, 250]", "[600, 600, 900, 950]"]

CASES = [
    # Bare letters, brackets, stops and Markdown.
    ("B", FINDINGS, "B"),
    ("b", FINDINGS, "B"),
    ("(b)", FINDINGS, "B"),
    ("[C]", FINDINGS, "C"),
    ("D.", FINDINGS, "D"),
    ("  A \n", FINDINGS, "A"),
    ("**B**", FINDINGS, "B"),
    ("`C`", FINDINGS, "C"),
    ("B\n\nExplanation: the heart is enlarged.", FINDINGS, "B"),
    # Answer phrases.
    ("The answer is (C).", FINDINGS, "C"),
    ("Answer: B", FINDINGS, "B"),
    ("answer: b", FINDINGS, "B"),
    ("Answer:\nD", FINDINGS, "D"),
    ("The correct answer is B. Option A is wrong because the lungs are clear.", FINDINGS, "B"),
    ("**Answer:** (A) Atelectasis", FINDINGS, "A"),
    ("The answer is B, Cardiomegaly.", FINDINGS, "B"),
    ("Final answer: D", FINDINGS, "D"),
    ("Looking at option A first... after checking, the final answer is C.", FINDINGS, "C"),
    ("I would choose option C.", FINDINGS, "C"),
    ("Option D", FINDINGS, "D"),
    ("B is the correct answer.", FINDINGS, "B"),
    ("After reviewing the image, (D) is correct.", FINDINGS, "D"),
    # Leading letter with the option text.
    ("C. Pleural Effusion", FINDINGS, "C"),
    ("B) Cardiomegaly", FINDINGS, "B"),
    ("(A) Atelectasis, seen at the left base.", FINDINGS, "A"),
    ("D - No Finding", FINDINGS, "D"),
    ("Answer: B (Cardiomegaly)", FINDINGS, "B"),
    # Option text alone, any case.
    ("Pleural Effusion", FINDINGS, "C"),
    ("pleural effusion.", FINDINGS, "C"),
    ("CARDIOMEGALY", FINDINGS, "B"),
    ("The image shows cardiomegaly.", FINDINGS, "B"),
    ("There is no pleural effusion, but cardiomegaly is present.", FINDINGS, "B"),
    ("t1ce", SEQUENCES, "C"),
    ("This is a T1 weighted image.", SEQUENCES, "B"),
    ("Normal", NORMAL_VS_NO, "A"),
    ("Severity: ct-2.", SEVERITY, "C"),
    ("CT-3", SEVERITY, "D"),
    ("The scan looks normal.", NORMAL_VS_NO, "A"),
    # Full-width forms.
    ("（Ｂ）", FINDINGS, "B"),
    ("Ｃ", FINDINGS, "C"),
    ("答案是Ｂ。", FINDINGS, "B"),
    ("答案：D", FINDINGS, "D"),
    ("Ａ．Atelectasis", FINDINGS, "A"),
    # Reasoning blocks.
    ("<think>Maybe A, maybe C. The heart looks large.</think>\nB", FINDINGS, "B"),
    ("<think>Let me look at the costophrenic angles.</think> The answer is C.", FINDINGS, "C"),
    ("The heart is large, so it is not option A.</think>Answer: B", FINDINGS, "B"),
    ("<think>The answer is A, or perhaps", FINDINGS, INVALID),
    # Segmentation boxes.
    ("[120, 300, 410, 620]", BOXES, "A"),
    ("[500,100,700,300]", BOXES, "B"),
    ("The lesion is enclosed by ( 0 , 0 , 250 , 250 ).", BOXES, "C"),
    ("Answer: D", BOXES, "D"),
    ("[1, 2, 3, 4]", BOXES, INVALID),
    ("[120, 300, 410, 620] or [0, 0, 250, 250]", BOXES, INVALID),
    # Ambiguous and unparseable.
    ("A and C", FINDINGS, INVALID),
    ("The answer is A or C.", FINDINGS, INVALID),
    ("(A) and (C)", FINDINGS, INVALID),
    ("Cardiomegaly and pleural effusion", FINDINGS, INVALID),
    ("", FINDINGS, INVALID),
    ("   ", FINDINGS, INVALID),
    ("I cannot determine the answer from this image.", FINDINGS, INVALID),
    ("I'm unable to determine whether this is cardiomegaly.", FINDINGS, INVALID),
    ("As an AI, I can't provide a diagnosis.", FINDINGS, INVALID),
    ("The answer is a pleural finding of unclear origin.", FINDINGS, INVALID),
    ("C. Cardiomegaly", FINDINGS, INVALID),
    ("Answer: A. Cardiomegaly", FINDINGS, INVALID),
    ("Answer: B (Pleural Effusion)", FINDINGS, INVALID),
    ("CT-4", SEVERITY, INVALID),
    ("Answer: A. Then again, the answer is C.", FINDINGS, INVALID),
    ("E", FINDINGS, INVALID),
    ("Answer: E", FINDINGS, INVALID),
    ("Nothing", NORMAL_VS_NO, INVALID),
    ("Abnormality", NORMAL_VS_NO, INVALID),
    ("The anomaly is a nodule.", NORMAL_VS_NO, INVALID),
]


@pytest.mark.parametrize(("output", "options", "expected"), CASES)
def test_extract_answer_table(output: str, options: list[str], expected: str) -> None:
    """Each output maps to the expected letter or to INVALID."""
    got = extract_answer(output, options)
    assert got == expected, f"{output!r}: expected {expected!r}, got {got!r}"


def test_extract_answer_table_size() -> None:
    assert len(CASES) >= 40


def test_extract_answer_no_substring_match() -> None:
    """'no' inside 'normal' or 'nodule' is no mention of the option 'No'."""
    assert extract_answer("There is a nodule.", ["Yes", "Maybe", "No", "Unknown"]) == INVALID
    assert extract_answer("It looks normal to me", ["Yes", "Maybe", "No", "Unknown"]) == INVALID


def test_extract_answer_letter_beyond_options() -> None:
    assert extract_answer("D", ["Yes", "No"]) == INVALID


def test_extract_answer_non_string() -> None:
    assert extract_answer(None, FINDINGS) == INVALID  # type: ignore[arg-type]


def test_normalise_output_strips_think() -> None:
    assert normalise_output("<think>x</think> **Answer:** Ｂ。") == "Answer: B."


def test_normalise_output_unclosed_think() -> None:
    assert normalise_output("<think>still reasoning about A") == ""
