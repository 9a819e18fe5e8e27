"""The planning pass: from cases to fully specified questions, before any pixel is decoded.

Planning assigns every subject to a pool split, applies the per-triplet caps,
picks distractors and templates, and balances the correct letter over A-D within
each (triplet, pool split). The result is a list of :class:`CaseJob` objects,
each one case with its questions, which the generation pass decodes one at a time.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from builder.mat import LETTERS, TRIPLETS, Triplet
from builder.questions import TEMPLATES, arrange_options, question_text
from builder.sources.base import Case, ItemSpec
from builder.splits import POOL_SPLITS, pool_split, stable_fraction, stable_rng

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuestionPlan:
    """One question with everything but its pixels and, for segmentation, its boxes.

    Attributes:
        id: ``f"{source}-{case_id}-{item key}"``, stable across rebuilds.
        triplet: The triplet of the question.
        split: The pool split of the subject.
        view: The key of the decoded image in the case's ``load`` result.
        question: The question text without options.
        template_id: Index of the template in ``builder.questions.TEMPLATES``.
        answer_index: Position of the correct option, 0-3 for A-D.
        options: The four option texts for classification; None for segmentation,
            whose boxes need the mask.
    """

    id: str
    triplet: Triplet
    split: str
    view: str
    question: str
    template_id: int
    answer_index: int
    options: tuple[str, ...] | None


@dataclass
class CaseJob:
    """One case and the questions it gives: the unit of work of the generation pass."""

    source: str
    case: Case
    questions: list[QuestionPlan] = field(default_factory=list)


@dataclass
class _Candidate:
    case: Case
    item: ItemSpec
    id: str
    split: str


def plan_questions(
    cases: Iterable[Case],
    seed: int,
    caps: Mapping[Triplet, int] | None = None,
) -> list[CaseJob]:
    """Turn cases into case jobs with fully planned questions.

    Args:
        cases: Cases of every source, in any order.
        seed: Seeds templates, distractors, letter order and caps.
        caps: Maximum questions per triplet; a triplet over its cap keeps the
            questions whose stable hash ranks first, whatever the source order.

    Returns:
        Case jobs sorted by source and case id, each with its questions sorted by id.

    Raises:
        ValueError: naming a question id that two cases produce.
    """
    candidates = _collect_candidates(cases)

    # Caps apply to questions that can have distractors, so a cap of N keeps close to N questions.
    # Capping can remove the only correct answer of a text that other questions use as a distractor,
    # so the distractor rule runs again afterwards.
    groups = _filter_groups(_group(candidates))
    candidates = _apply_caps([member for members in groups.values() for member in members], seed, caps or {})
    groups = _filter_groups(_group(candidates))

    jobs: dict[tuple[str, str], CaseJob] = {}
    for (triplet, split), members in sorted(groups.items(), key=lambda entry: (TRIPLETS.index(entry[0][0]), entry[0][1])):
        for candidate, plan in _plan_group(triplet, split, members, seed):
            key = (candidate.case.source, candidate.case.case_id)
            jobs.setdefault(key, CaseJob(candidate.case.source, candidate.case)).questions.append(plan)

    for job in jobs.values():
        job.questions.sort(key=lambda plan: plan.id)
    return [jobs[key] for key in sorted(jobs)]


def _group(candidates: Iterable[_Candidate]) -> dict[tuple[Triplet, str], list[_Candidate]]:
    groups: dict[tuple[Triplet, str], list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[(candidate.item.triplet, candidate.split)].append(candidate)
    return groups


def _filter_groups(groups: dict[tuple[Triplet, str], list[_Candidate]]) -> dict[tuple[Triplet, str], list[_Candidate]]:
    """Apply the distractor rule to every classification group; segmentation groups pass unchanged."""
    return {
        (triplet, split): (
            _drop_without_distractors(triplet, split, sorted(members, key=lambda candidate: candidate.id))
            if triplet.task == "Classification"
            else members
        )
        for (triplet, split), members in groups.items()
    }


def _collect_candidates(cases: Iterable[Case]) -> list[_Candidate]:
    candidates = []
    seen: dict[str, str] = {}
    for case in cases:
        split = pool_split(case.source, case.subject_id)
        for item in case.items:
            question_id = f"{case.source}-{case.case_id}-{item.key}"
            if question_id in seen:
                raise ValueError(
                    f"Duplicate question id {question_id!r} from case {case.case_id!r} "
                    f"(first from case {seen[question_id]!r}); case ids and item keys must be unique per source"
                )
            seen[question_id] = case.case_id
            candidates.append(_Candidate(case, item, question_id, split))
    return candidates


def _apply_caps(candidates: list[_Candidate], seed: int, caps: Mapping[Triplet, int]) -> list[_Candidate]:
    """Keep at most ``caps[triplet]`` questions per triplet, shared over the pool splits in proportion to their size.

    Within each (triplet, split) the questions whose stable hash ranks first are
    kept, so the choice does not depend on the order of the sources.
    """
    by_triplet: dict[Triplet, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_triplet[candidate.item.triplet].append(candidate)

    kept = []
    for triplet, members in by_triplet.items():
        cap = caps.get(triplet)
        if cap is None or len(members) <= cap:
            kept.extend(members)
            continue

        logger.info("Capped %s at %d questions", triplet.name, cap)
        for split, quota in _split_quotas(members, cap).items():
            in_split = [candidate for candidate in members if candidate.split == split]
            ranked = sorted(in_split, key=lambda candidate: stable_fraction(seed, "cap", candidate.id))
            kept.extend(ranked[:quota])
    return kept


def _split_quotas(members: list[_Candidate], cap: int) -> dict[str, int]:
    """Share ``cap`` over the pool splits in proportion to their question counts (largest remainders)."""
    sizes = Counter(candidate.split for candidate in members)
    exact = {split: cap * count / len(members) for split, count in sizes.items()}
    quotas = {split: int(value) for split, value in exact.items()}
    by_remainder = sorted(exact, key=lambda split: (quotas[split] - exact[split], split))
    for split in by_remainder[: cap - sum(quotas.values())]:
        quotas[split] += 1
    return quotas


def _plan_group(triplet: Triplet, split: str, members: list[_Candidate], seed: int) -> list[tuple[_Candidate, QuestionPlan]]:
    members = sorted(members, key=lambda candidate: candidate.id)
    letters = _balanced_letters(len(members), seed, triplet, split)
    answer_pool = sorted({candidate.item.answer for candidate in members if candidate.item.answer is not None})

    planned = []
    for candidate, answer_index in zip(members, letters, strict=True):
        rng = stable_rng(seed, "question", candidate.id)
        template_id = int(rng.integers(len(TEMPLATES[triplet])))
        options = None
        if triplet.task == "Classification":
            pool = [text for text in answer_pool if text in candidate.item.distractors and text != candidate.item.answer]
            distractors = [str(text) for text in rng.choice(pool, size=len(LETTERS) - 1, replace=False)]
            options = tuple(arrange_options(str(candidate.item.answer), distractors, answer_index))

        plan = QuestionPlan(
            id=candidate.id,
            triplet=triplet,
            split=split,
            view=candidate.item.view,
            question=question_text(triplet, template_id),
            template_id=template_id,
            answer_index=answer_index,
            options=options,
        )
        planned.append((candidate, plan))
    return planned


def _drop_without_distractors(triplet: Triplet, split: str, members: list[_Candidate]) -> list[_Candidate]:
    """Keep questions with three distractors that are correct answers elsewhere in the group.

    Dropping a question can remove its answer from the group's answers and so
    starve another question, hence the loop until nothing changes.
    """
    dropped: Counter[str] = Counter()
    while True:
        answers = {candidate.item.answer for candidate in members}
        kept = [
            candidate
            for candidate in members
            if len((candidate.item.distractors & answers) - {candidate.item.answer}) >= len(LETTERS) - 1
        ]
        if len(kept) == len(members):
            break
        kept_ids = {candidate.id for candidate in kept}
        for candidate in members:
            if candidate.id not in kept_ids:
                dropped[candidate.case.source] += 1
        members = kept

    for source, count in dropped.items():
        logger.info(
            "%s %s (%s): %d question(s) left out because fewer than 3 of their negative labels are correct "
            "answers elsewhere in the split",
            triplet.name, split, source, count,
        )
    return members


def _balanced_letters(count: int, seed: int, triplet: Triplet, split: str) -> list[int]:
    """Return ``count`` answer positions with every letter used ``count // 4`` or ``count // 4 + 1`` times."""
    positions = [index % len(LETTERS) for index in range(count)]
    rng = stable_rng(seed, "letters", triplet.name, split)
    return [int(position) for position in rng.permutation(positions)] if positions else []


def split_counts(jobs: Iterable[CaseJob]) -> dict[tuple[str, str], int]:
    """Count planned questions per (triplet name, pool split)."""
    counts: Counter[tuple[str, str]] = Counter()
    for job in jobs:
        for plan in job.questions:
            counts[(plan.triplet.name, plan.split)] += 1
    return {key: counts[key] for key in sorted(counts)}


__all__ = ["CaseJob", "QuestionPlan", "POOL_SPLITS", "plan_questions", "split_counts"]
