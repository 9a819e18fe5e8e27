"""Locate the sources under a data folder, list their cases and plan the questions."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from builder.mat import SOURCES, TRIPLETS, Triplet, check_choice
from builder.planner import CaseJob, plan_questions
from builder.policy import BadInputLog
from builder.sources import Case, reader_class

logger = logging.getLogger(__name__)

DOWNLOAD_GUIDE = "See the README section 'Getting the sources' for where to download each source."

# Default question caps per triplet. With the full sources they add up to the
# published size of 20,200 questions; smaller sources give fewer.
DEFAULT_CAPS: dict[str, int] = {
    "xray-lung-classification": 9000,
    "xray-lung-segmentation": 2400,
    "mri-brain-classification": 4400,
    "mri-brain-segmentation": 1100,
    "ct-lung-classification": 3300,
}


@dataclass(frozen=True)
class PlanSettings:
    """The inputs of the planning pass.

    Attributes:
        data_dir: The folder holding one subfolder per source (``chexpert``, ``siim``, ``brats``, ``mosmed``).
        sources: The sources to read.
        allow_missing_sources: Build from the sources present instead of raising for a missing one.
        seed: Seeds templates, distractors, answer letters and caps.
        caps: Maximum questions per triplet slug; None for no cap.
        on_bad_input: ``error``, ``warn`` or ``skip``.
        reader_options: Per source, keyword options for its reader.
    """

    data_dir: Path
    sources: tuple[str, ...] = SOURCES
    allow_missing_sources: bool = False
    seed: int = 0
    caps: Mapping[str, int] | None = None
    on_bad_input: str = "error"
    reader_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


def locate_sources(data_dir: Path, sources: Sequence[str], allow_missing: bool) -> dict[str, Path]:
    """Return the folder of each source present under ``data_dir``.

    Raises:
        FileNotFoundError: when ``data_dir`` is missing, or a source folder is
            missing and ``allow_missing`` is False; the message names the folder
            expected and where to download the source.
    """
    if not data_dir.is_dir():
        raise FileNotFoundError(f"Data folder not found: {data_dir}. {DOWNLOAD_GUIDE}")

    roots = {}
    missing = []
    for source in sources:
        check_choice("source", source, SOURCES)
        folder = data_dir / source
        if folder.is_dir():
            roots[source] = folder
        elif allow_missing:
            logger.warning("Source %s not found at %s; building without it", source, folder)
        else:
            missing.append(source)
    if missing:
        raise FileNotFoundError(_missing_sources_message(data_dir, missing))
    if not roots:
        raise FileNotFoundError(f"No source folder found under {data_dir}: expected one of {', '.join(sources)}.")
    return roots


def _missing_sources_message(data_dir: Path, missing: Sequence[str]) -> str:
    """Return the error message for the missing sources, naming every folder so that all can be fixed at once."""
    retry = "To build from the sources present, pass allow_missing_sources=True (--allow-missing-sources)."
    if len(missing) == 1:
        source = missing[0]
        instructions = reader_class(source).download_instructions
        return f"Source {source} not found: expected the folder {data_dir / source}. {instructions} {retry}"

    lines = [f"Sources {', '.join(missing)} not found under {data_dir}:"]
    for source in missing:
        instructions = reader_class(source).download_instructions
        lines.append(f"- {source}: expected the folder {data_dir / source}. {instructions}")
    lines.append(retry)
    return "\n".join(lines)


def list_cases(roots: Mapping[str, Path], settings: PlanSettings, bad_inputs: BadInputLog) -> list[Case]:
    """List the cases of every located source, with one progress step per source."""
    cases: list[Case] = []
    for source in tqdm(sorted(roots), desc="Listing sources", unit="source"):
        options = dict(settings.reader_options.get(source, {}))
        reader = reader_class(source)(roots[source], bad_inputs, **options)
        found = reader.list_cases()
        logger.info("%s: %d cases in %s", source, len(found), roots[source])
        cases.extend(found)
    return cases


def resolve_caps(caps: Mapping[str, int] | None) -> dict[Triplet, int]:
    """Turn caps keyed by triplet slug or name into caps keyed by triplet."""
    return {Triplet.from_name(name): int(limit) for name, limit in (caps or {}).items()}


def build_plan(settings: PlanSettings, bad_inputs: BadInputLog) -> tuple[dict[str, Path], list[CaseJob]]:
    """Locate the sources, list their cases and plan every question.

    Returns:
        The source roots and the case jobs of all triplets and pool splits.
    """
    roots = locate_sources(Path(settings.data_dir), settings.sources, settings.allow_missing_sources)
    cases = list_cases(roots, settings, bad_inputs)
    jobs = plan_questions(cases, settings.seed, resolve_caps(settings.caps))
    logger.info("Planned %d questions from %d cases", sum(len(job.questions) for job in jobs), len(jobs))
    return roots, jobs


def select_jobs(jobs: Sequence[CaseJob], split: str, triplets: Sequence[Triplet]) -> list[CaseJob]:
    """Return the jobs restricted to the questions of one pool split and the given triplets."""
    wanted = set(triplets)
    selected = []
    for job in jobs:
        questions = [plan for plan in job.questions if plan.split == split and plan.triplet in wanted]
        if questions:
            # Decoding needs the case's files and metadata but not its candidate items. Without
            # them the jobs cost less to send to num_proc worker processes, which datasets pickles with dill.
            selected.append(CaseJob(job.source, replace(job.case, items=()), questions))
    return selected


def interleave_sources(jobs: Sequence[CaseJob]) -> list[CaseJob]:
    """Return the jobs with the sources spread evenly, each source's jobs in their original order.

    Job ``i`` of a source with ``n`` jobs goes to the relative position
    ``(i + 0.5) / n``, so every contiguous block of the result holds about the
    same share of each source. ``datasets`` gives each ``num_proc`` process one
    contiguous block of jobs, and a BraTS volume costs several times a CheXpert
    image, so blocks of one source each would leave one process idle.
    A triplet's rows keep their order because every triplet comes from one source.
    """
    by_source: dict[str, list[CaseJob]] = {}
    for job in jobs:
        by_source.setdefault(job.source, []).append(job)

    positioned = [
        ((index + 0.5) / len(members), source_order, job)
        for source_order, members in enumerate(by_source.values())
        for index, job in enumerate(members)
    ]
    positioned.sort(key=lambda entry: entry[:2])
    return [job for _, _, job in positioned]


__all__ = [
    "DEFAULT_CAPS",
    "TRIPLETS",
    "PlanSettings",
    "build_plan",
    "interleave_sources",
    "locate_sources",
    "select_jobs",
]
