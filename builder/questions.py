"""Question templates and option assembly.

Each triplet has several instruction templates; a seeded generator picks one per
question. No template names or hints at the answer: classification templates
ask about the image in general terms, and segmentation templates name the
structure to find, which every option box is a candidate for.
"""

from __future__ import annotations

from collections.abc import Sequence

from builder.boxes import SCALE
from builder.mat import (
    CT_LUNG_CLASSIFICATION,
    LETTERS,
    MRI_BRAIN_CLASSIFICATION,
    MRI_BRAIN_SEGMENTATION,
    XRAY_LUNG_CLASSIFICATION,
    XRAY_LUNG_SEGMENTATION,
    Triplet,
)

BOX_CONVENTION = (
    f"Boxes are [x1, y1, x2, y2] on a 0-{SCALE} scale of the image width and height, "
    "with (x1, y1) the top-left corner and (x2, y2) the bottom-right corner."
)

MOSMED_SCALE = (
    "CT-0: no signs of viral pneumonia; CT-1: up to 25% of the lung involved; CT-2: 25-50%; "
    "CT-3: 50-75%; CT-4: more than 75%."
)

TEMPLATES: dict[Triplet, tuple[str, ...]] = {
    XRAY_LUNG_CLASSIFICATION: (
        "Which finding is present in this chest X-ray?",
        "Which of the following does this chest radiograph show?",
        "Look at this chest X-ray. Which of these findings can be seen?",
        "Select the finding that is present on this chest radiograph.",
    ),
    XRAY_LUNG_SEGMENTATION: (
        f"Which box encloses the pneumothorax in this chest X-ray? {BOX_CONVENTION}",
        f"This chest radiograph shows a pneumothorax. Which bounding box contains it? {BOX_CONVENTION}",
        f"Select the box that contains the whole pneumothorax region. {BOX_CONVENTION}",
    ),
    MRI_BRAIN_CLASSIFICATION: (
        "Which MRI sequence was used to acquire this axial brain slice?",
        "This is an axial slice of a brain MRI. Which sequence is it?",
        "Identify the MRI sequence of this brain image.",
    ),
    MRI_BRAIN_SEGMENTATION: (
        f"Which box encloses the whole brain tumor (necrotic core, edema and enhancing tumor) "
        f"in this axial MRI slice? {BOX_CONVENTION}",
        f"This brain MRI slice contains a glioma. Which bounding box contains all of the tumor, edema included? "
        f"{BOX_CONVENTION}",
        f"Select the box that contains the entire tumor region in this brain MRI slice. {BOX_CONVENTION}",
    ),
    CT_LUNG_CLASSIFICATION: (
        f"This axial chest CT slice comes from a study graded on the COVID-19 severity scale. "
        f"Which grade does the study have? {MOSMED_SCALE}",
        f"Which COVID-19 CT severity grade fits the study this lung slice comes from? {MOSMED_SCALE}",
        f"Grade the COVID-19 lung involvement of this chest CT study. {MOSMED_SCALE}",
    ),
}


def question_text(triplet: Triplet, template_id: int) -> str:
    """Return the question of one template, without the options."""
    return TEMPLATES[triplet][template_id]


def arrange_options(correct: str, distractors: Sequence[str], answer_index: int) -> list[str]:
    """Place the correct text at ``answer_index`` and the distractors, in their given order, around it.

    Raises:
        ValueError: when there are not exactly three distinct distractors, or one equals the correct text.
    """
    if len(distractors) != len(LETTERS) - 1 or len(set(distractors)) != len(distractors):
        raise ValueError(f"expected 3 distinct distractors, got {list(distractors)}")
    if correct in distractors:
        raise ValueError(f"the correct option {correct!r} is also among the distractors {list(distractors)}")

    options = list(distractors)
    options.insert(answer_index, correct)
    return options
