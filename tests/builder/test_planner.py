"""The planning pass on hand-made cases: splits, caps, distractors and letter balance."""

from __future__ import annotations

from collections import Counter

import pytest

from builder.mat import LETTERS, MRI_BRAIN_CLASSIFICATION, XRAY_LUNG_CLASSIFICATION, XRAY_LUNG_SEGMENTATION
from builder.planner import plan_questions, split_counts
from builder.sources.base import Case, ItemSpec
from builder.splits import pool_split

SEQUENCES = ("FLAIR", "T1", "T1ce", "T2")
FINDINGS = ("Edema", "Cardiomegaly", "Pneumothorax", "Fracture", "No Finding")


def brats_cases(count: int) -> list[Case]:
    cases = []
    for index in range(count):
        items = tuple(
            ItemSpec(
                key=f"r0-{sequence.lower()}",
                triplet=MRI_BRAIN_CLASSIFICATION,
                view=f"r0-{sequence.lower()}",
                answer=sequence,
                distractors=frozenset(SEQUENCES) - {sequence},
            )
            for sequence in SEQUENCES
        )
        cases.append(Case("brats", f"case{index:03d}", f"case{index:03d}", ("x.nii.gz",), items))
    return cases


def test_every_subject_keeps_its_pool_split():
    jobs = plan_questions(brats_cases(30), seed=0)
    for job in jobs:
        expected = pool_split("brats", job.case.subject_id)
        assert {plan.split for plan in job.questions} == {expected}


def test_letters_balanced_per_triplet_and_split():
    jobs = plan_questions(brats_cases(41), seed=3)
    letters: dict[str, Counter] = {}
    for job in jobs:
        for plan in job.questions:
            letters.setdefault(plan.split, Counter())[plan.answer_index] += 1
    for split, counts in letters.items():
        assert max(counts.values()) - min(counts.get(i, 0) for i in range(4)) <= 1, (split, counts)


def test_options_hold_answer_at_index():
    for job in plan_questions(brats_cases(10), seed=0):
        for plan in job.questions:
            item = {item.key: item for item in job.case.items}[plan.id.rsplit("-", 2)[-2] + "-" + plan.id.rsplit("-", 1)[-1]]
            assert plan.options[plan.answer_index] == item.answer
            assert sorted(plan.options) == sorted(SEQUENCES)


def chest_case(index: int, positive: str, negatives: tuple[str, ...]) -> Case:
    item = ItemSpec("view1", XRAY_LUNG_CLASSIFICATION, "view1", positive, frozenset(negatives))
    return Case("chexpert", f"p{index}-s1-view1", f"p{index}", ("a.jpg",), (item,))


def test_distractors_are_answers_elsewhere():
    cases = [chest_case(i, FINDINGS[i % 5], tuple(f for f in FINDINGS if f != FINDINGS[i % 5])) for i in range(60)]
    jobs = plan_questions(cases, seed=1)
    answers: dict[str, set[str]] = {}
    for job in jobs:
        for plan in job.questions:
            answers.setdefault(plan.split, set()).add(plan.options[plan.answer_index])
    for job in jobs:
        for plan in job.questions:
            for index, text in enumerate(plan.options):
                if index != plan.answer_index:
                    assert text in answers[plan.split]


def test_question_without_enough_negatives_dropped():
    cases = [chest_case(i, FINDINGS[i % 5], tuple(f for f in FINDINGS if f != FINDINGS[i % 5])) for i in range(200)]
    cases.append(chest_case(999, "Edema", ("Fracture",)))
    ids = {plan.id for job in plan_questions(cases, seed=0) for plan in job.questions}
    assert "chexpert-p999-s1-view1-view1" not in ids
    assert len(ids) == 200


def test_distractor_never_true_for_image():
    cases = [chest_case(i, FINDINGS[i % 5], tuple(f for f in FINDINGS[:4] if f != FINDINGS[i % 5])) for i in range(40)]
    for job in plan_questions(cases, seed=0):
        (item,) = job.case.items
        for plan in job.questions:
            wrong = [text for index, text in enumerate(plan.options) if index != plan.answer_index]
            assert set(wrong) <= item.distractors


def test_caps_limit_triplet():
    item = ItemSpec("image", XRAY_LUNG_SEGMENTATION, "image")
    cases = [Case("siim", f"img{i}", f"pat{i}", ("a.dcm",), (item,)) for i in range(50)]
    jobs = plan_questions(cases, seed=0, caps={XRAY_LUNG_SEGMENTATION: 30})
    assert sum(len(job.questions) for job in jobs) == 30


def test_plan_deterministic():
    first = plan_questions(brats_cases(15), seed=7)
    second = plan_questions(list(reversed(brats_cases(15))), seed=7)
    assert [plan for job in first for plan in job.questions] == [plan for job in second for plan in job.questions]


def test_seed_changes_letters():
    first = [plan.answer_index for job in plan_questions(brats_cases(15), seed=1) for plan in job.questions]
    second = [plan.answer_index for job in plan_questions(brats_cases(15), seed=2) for plan in job.questions]
    assert first != second


def test_duplicate_id_raises():
    cases = brats_cases(2)
    duplicate = Case("brats", "case000", "other", ("y.nii.gz",), cases[0].items)
    with pytest.raises(ValueError, match="Duplicate question id 'brats-case000-r0-flair'"):
        plan_questions([*cases, duplicate], seed=0)


def test_segmentation_plans_have_no_options():
    item = ItemSpec("image", XRAY_LUNG_SEGMENTATION, "image")
    cases = [Case("siim", f"img{i}", f"pat{i}", ("a.dcm",), (item,)) for i in range(12)]
    jobs = plan_questions(cases, seed=0)
    assert all(plan.options is None for job in jobs for plan in job.questions)
    assert sum(split_counts(jobs).values()) == 12
    assert {plan.answer_index for job in jobs for plan in job.questions} <= set(range(len(LETTERS)))


def test_caps_shared_over_splits():
    item = ItemSpec("image", XRAY_LUNG_SEGMENTATION, "image")
    cases = [Case("siim", f"img{i}", f"pat{i}", ("a.dcm",), (item,)) for i in range(400)]
    uncapped = Counter(plan.split for job in plan_questions(cases, seed=0) for plan in job.questions)

    capped = Counter(plan.split for job in plan_questions(cases, seed=0, caps={XRAY_LUNG_SEGMENTATION: 100}) for plan in job.questions)

    assert sum(capped.values()) == 100
    for split, count in uncapped.items():
        assert abs(capped[split] - 100 * count / 400) <= 1, (split, capped, uncapped)


def test_cap_counts_questions_with_distractors():
    cases = [chest_case(i, FINDINGS[i % 5], tuple(f for f in FINDINGS if f != FINDINGS[i % 5])) for i in range(300)]
    cases += [chest_case(1000 + i, "Edema", ("Fracture",)) for i in range(300)]

    jobs = plan_questions(cases, seed=0, caps={XRAY_LUNG_CLASSIFICATION: 200})

    assert sum(len(job.questions) for job in jobs) == 200
