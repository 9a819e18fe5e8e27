"""The generation pass: decode each planned case and turn its questions into dataset rows."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from builder.boxes import distractor_boxes, format_box, mask_box
from builder.imaging import encode_mask_png, encode_png, resize_longest_side
from builder.mat import LETTERS
from builder.planner import CaseJob, QuestionPlan
from builder.policy import BadInputError, BadInputLog
from builder.questions import arrange_options
from builder.sources import SourceReader, reader_class
from builder.sources.base import Sample
from builder.splits import stable_rng

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """What a worker process needs to decode cases: picklable, no open readers.

    Attributes:
        source_roots: Source name to its folder.
        seed: The build seed; seeds the distractor boxes.
        on_bad_input: ``error``, ``warn`` or ``skip``.
        max_side: Longest image side in pixels after resizing; None keeps the source size.
        reader_options: Per source, keyword options passed to its reader.
        skip_log_dir: Folder where each process appends the inputs it skipped, or None.
    """

    source_roots: dict[str, str]
    seed: int = 0
    on_bad_input: str = "error"
    max_side: int | None = 1024
    reader_options: dict[str, dict[str, object]] = field(default_factory=dict)
    skip_log_dir: str | None = None


_READERS: dict[tuple[str, str], SourceReader] = {}


def _reader(settings: GenerationSettings, source: str) -> SourceReader:
    """Return this process's reader for a source, created on first use."""
    key = (source, settings.source_roots[source])
    if key not in _READERS:
        options = settings.reader_options.get(source, {})
        _READERS[key] = reader_class(source)(Path(key[1]), BadInputLog(settings.on_bad_input), **options)
    return _READERS[key]


def generate_rows(jobs: list[CaseJob], settings: GenerationSettings) -> Iterator[tuple[str, dict]]:
    """Decode each case once and yield ``(id, row)`` for each of its questions, in job order.

    A case that fails to decode goes through the bad-input policy: under
    ``error`` the BadInputError propagates; otherwise its questions are left out
    and recorded. One case's volumes are in memory at a time. Parallel builds
    call this in each ``datasets`` worker process on that process's block of jobs.
    """
    skipped = BadInputLog(settings.on_bad_input)
    try:
        for job in jobs:
            yield from _case_rows(job, settings, skipped)
    finally:
        if settings.skip_log_dir and skipped.skipped:
            skipped.save(Path(settings.skip_log_dir) / f"skipped-{os.getpid()}.jsonl")


def _case_rows(job: CaseJob, settings: GenerationSettings, skipped: BadInputLog) -> list[tuple[str, dict]]:
    samples = _load_case(job, settings, skipped)
    if samples is None:
        return []

    rows = []
    for plan in job.questions:
        sample = samples.get(plan.view)
        if sample is None:
            # Expected: a tumour can span fewer slices than slices_per_volume requests.
            skipped.record(job.source, plan.id, f"the case has no image for view {plan.view!r}")
            continue
        try:
            rows.append((plan.id, build_row(job, plan, sample, settings)))
        except BadInputError as error:
            skipped.report(job.source, error.path, error.reason)
    return rows


def _load_case(job: CaseJob, settings: GenerationSettings, skipped: BadInputLog) -> dict[str, Sample] | None:
    try:
        return _reader(settings, job.source).load(job.case)
    except BadInputError as error:
        skipped.report(job.source, error.path, error.reason)
        return None


def build_row(job: CaseJob, plan: QuestionPlan, sample: Sample, settings: GenerationSettings) -> dict:
    """Assemble one dataset row from a planned question and its decoded image."""
    image, mask = resize_longest_side(sample.image, sample.mask, settings.max_side)
    row = {
        "id": plan.id,
        "image": {"bytes": encode_png(image), "path": None},
        "question": plan.question,
        "answer": LETTERS[plan.answer_index],
        "answer_index": plan.answer_index,
        "modality": plan.triplet.modality,
        "anatomy": plan.triplet.anatomy,
        "task": plan.triplet.task,
        "triplet": plan.triplet.name,
        "source": job.source,
        "subject_id": job.case.subject_id,
        "slice_index": sample.slice_index,
        "source_file": sample.source_file,
        "template_id": plan.template_id,
        "mask": None,
        "bbox": None,
        "option_boxes": None,
    }
    if plan.options is not None:
        row["options"] = list(plan.options)
        return row

    if mask is None or not mask.any():
        raise BadInputError(sample.source_file, f"segmentation question {plan.id} has an empty mask")
    truth = mask_box(mask)
    boxes = distractor_boxes(truth, stable_rng(settings.seed, "boxes", plan.id))
    option_boxes = arrange_options(truth, boxes, plan.answer_index)
    row.update(
        options=[format_box(box) for box in option_boxes],
        mask={"bytes": encode_mask_png(mask), "path": None},
        bbox=list(truth),
        option_boxes=[list(box) for box in option_boxes],
    )
    return row
