"""locate_sources and interleave_sources: the source folders found, and the job order that lets ``datasets``
split a build evenly between processes."""

from __future__ import annotations

import pytest

from builder.mat import SOURCES
from builder.pipeline import interleave_sources, locate_sources
from builder.planner import CaseJob
from builder.sources.base import Case


def jobs_of(counts: dict[str, int]) -> list[CaseJob]:
    """Jobs grouped by source, as the planner returns them."""
    jobs = []
    for source, count in counts.items():
        for index in range(count):
            name = f"{source}-{index:03d}"
            jobs.append(CaseJob(source, Case(source=source, case_id=name, subject_id=name, files=(), items=())))
    return jobs


def test_keeps_every_job_and_each_source_order() -> None:
    jobs = jobs_of({"chexpert": 12, "siim": 3, "brats": 7, "mosmed": 5})

    ordered = interleave_sources(jobs)

    assert sorted(id(job) for job in ordered) == sorted(id(job) for job in jobs)
    for source in ("chexpert", "siim", "brats", "mosmed"):
        assert [job for job in ordered if job.source == source] == [job for job in jobs if job.source == source]


def test_each_half_holds_half_of_every_source() -> None:
    jobs = jobs_of({"chexpert": 40, "siim": 10, "brats": 20, "mosmed": 30})

    ordered = interleave_sources(jobs)
    first_half = ordered[: len(ordered) // 2]

    counts = {
        source: sum(job.source == source for job in first_half) for source in ("chexpert", "siim", "brats", "mosmed")
    }
    assert counts == {"chexpert": 20, "siim": 5, "brats": 10, "mosmed": 15}


def test_spreads_sources_from_the_start() -> None:
    ordered = interleave_sources(jobs_of({"chexpert": 4, "brats": 4}))

    assert [job.source for job in ordered] == ["chexpert", "brats"] * 4


def test_empty_and_single_source() -> None:
    single = jobs_of({"siim": 3})

    assert interleave_sources([]) == []
    assert interleave_sources(single) == single


def test_locate_sources_names_one_missing_source(tmp_path):
    for source in ("chexpert", "siim", "brats"):
        (tmp_path / source).mkdir()

    with pytest.raises(FileNotFoundError) as raised:
        locate_sources(tmp_path, SOURCES, allow_missing=False)

    message = str(raised.value)
    assert message.startswith(f"Source mosmed not found: expected the folder {tmp_path / 'mosmed'}.")
    assert "\n" not in message
    assert message.endswith("(--allow-missing-sources).")


def test_locate_sources_skips_missing_when_allowed(tmp_path):
    (tmp_path / "siim").mkdir()

    assert locate_sources(tmp_path, SOURCES, allow_missing=True) == {"siim": tmp_path / "siim"}
