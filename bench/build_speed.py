"""Build speed: images per second per source, and the build's time per image over the floor.

The floor is the work no build can skip: ``reader.load`` of every planned case
plus ``resize_longest_side`` and ``encode_png`` of every image (and
``encode_mask_png`` of every segmentation mask) that the build writes. It is
measured in the same process and run as the builds it is compared with, on
the same planned cases. A build's ratio is its wall time (planning, decoding,
Arrow writing and export of every config) over the floor time of its images.

Run: ``python -m bench.build_speed [--subjects 120] [--data-dir SOURCES]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    Figure,
    Report,
    Timer,
    at_most,
    base_parser,
    command_line,
    run_benchmark,
    synthetic_sources,
    timed_attribute,
    warm_up_build,
    work_folder,
)

TARGET_RATIO = 1.3
DEFAULT_SUBJECTS = 120


@dataclass
class Floor:
    """The floor of one source: decode and encode times of the images one build writes."""

    images: int
    load_seconds: float
    encode_seconds: float

    @property
    def seconds(self) -> float:
        """Decode plus encode time, in seconds."""
        return self.load_seconds + self.encode_seconds


def measure_floor(data_dir: Path, source: str, max_side: int | None) -> Floor:
    """Time ``reader.load`` and the PNG encoding of every image a one-source build writes.

    Args:
        data_dir: The folder with one subfolder per source.
        source: The source to measure.
        max_side: Longest image side, as in the build.

    Returns:
        The image count and the decode and encode times in seconds. Planning
        (listing cases) is left out: it belongs to the build's overhead.
    """
    from builder.imaging import encode_mask_png, encode_png, resize_longest_side
    from builder.pipeline import DEFAULT_CAPS, PlanSettings, build_plan
    from builder.policy import BadInputLog
    from builder.sources import reader_class

    settings = PlanSettings(data_dir=data_dir, sources=(source,), allow_missing_sources=True, caps=DEFAULT_CAPS)
    roots, jobs = build_plan(settings, BadInputLog("skip"))
    reader = reader_class(source)(roots[source], BadInputLog("skip"))

    load, encode = Timer(), Timer()
    images = 0
    for job in jobs:
        with load.measure():
            samples = reader.load(job.case)
        with encode.measure():
            for plan in job.questions:
                sample = samples.get(plan.view)
                if sample is None:
                    continue
                image, mask = resize_longest_side(sample.image, sample.mask, max_side)
                encode_png(image)
                if plan.options is None and mask is not None:
                    encode_mask_png(mask)
                images += 1
    return Floor(images, load.seconds, encode.seconds)


@dataclass
class BuildTiming:
    """Wall time of one ``build_and_export`` call and of its phases, in seconds."""

    rows: int
    total: float
    planning: float
    generation: float
    prepare: float
    export: float


def timed_build(data_dir: Path, out_dir: Path, sources: tuple[str, ...], max_side: int | None) -> BuildTiming:
    """Run ``build_and_export`` with one process, timing planning, generation, preparation and export.

    Generation is the time spent inside ``generate_rows`` (decoding and PNG
    encoding); ``prepare - planning - generation`` is what ``datasets`` spends
    writing Arrow files.
    """
    import crossmed
    from builder import build

    planning, generation, prepare, export = Timer(), Timer(), Timer(), Timer()
    with (
        timed_attribute(crossmed, "build_plan", planning),
        timed_attribute(crossmed, "generate_rows", generation),
        timed_attribute(crossmed.CrossMed, "download_and_prepare", prepare),
        timed_attribute(build, "export_pool", export),
    ):
        start = time.perf_counter()
        result = build.build_and_export(
            data_dir,
            out_dir,
            num_proc=1,
            overwrite=True,
            sources=sources,
            allow_missing_sources=True,
            max_side=max_side,
        )
        total = time.perf_counter() - start
    rows = sum(result.pool_counts.values())
    return BuildTiming(rows, total, planning.seconds, generation.seconds, prepare.seconds, export.seconds)


def present_sources(data_dir: Path, requested: tuple[str, ...]) -> tuple[str, ...]:
    """Return the sources of ``requested`` that have a folder under ``data_dir``."""
    return tuple(source for source in requested if (data_dir / source).is_dir())


def run(args: argparse.Namespace) -> Report:
    """Measure the floor and a one-process build of each source, then a build of all of them."""
    from builder.mat import SOURCES

    report = Report("Build speed (one process)", command_line("bench.build_speed"))
    with work_folder(args.work) as work:
        data_dir = Path(args.data_dir) if args.data_dir else synthetic_sources(work, args.subjects, args.seed)
        sources = present_sources(data_dir, tuple(args.sources or SOURCES))
        report.details.append(
            f"sources: {data_dir} ({args.subjects} synthetic subjects per source)"
            if not args.data_dir
            else f"sources: {data_dir}"
        )

        warm_up_build(data_dir, work / "build-warmup", sources)
        # The floor is measured before and after the builds, and the mean counts, so a slow
        # minute of a shared machine weighs on both sides of the ratio.
        before = {source: measure_floor(data_dir, source, args.max_side) for source in sources}
        timings = {
            source: timed_build(data_dir, work / f"build-{source}", (source,), args.max_side) for source in sources
        }
        if len(sources) > 1:
            timings["all"] = timed_build(data_dir, work / "build-all", sources, args.max_side)
        after = {source: measure_floor(data_dir, source, args.max_side) for source in sources}
        floors = {source: _mean_floor(before[source], after[source]) for source in sources}
        report.details.append(
            "floor before and after the builds: "
            + ", ".join(f"{source} {before[source].seconds:.2f}/{after[source].seconds:.2f} s" for source in sources)
        )

        for source in sources:
            _add_source_figures(report, source, floors[source], timings[source])

        if len(sources) > 1:
            total = Floor(
                images=sum(floor.images for floor in floors.values()),
                load_seconds=sum(floor.load_seconds for floor in floors.values()),
                encode_seconds=sum(floor.encode_seconds for floor in floors.values()),
            )
            _add_total_figures(report, total, timings["all"])
    return report


def _mean_floor(first: Floor, second: Floor) -> Floor:
    if first.images != second.images:
        raise RuntimeError(f"The floor counted {first.images} and then {second.images} images; the sources changed")
    return Floor(
        first.images, (first.load_seconds + second.load_seconds) / 2, (first.encode_seconds + second.encode_seconds) / 2
    )


def _add_source_figures(report: Report, source: str, floor: Floor, timing: BuildTiming) -> None:
    report.figures.append(Figure(f"{source}: build images/s", timing.rows / timing.total, "images/s"))
    report.figures.append(
        Figure(
            f"{source}: build time / floor time",
            timing.total / floor.seconds,
            "x",
            note=f"{timing.total:.2f} s build, {floor.seconds:.2f} s floor, {timing.rows} images",
        )
    )
    report.details.append(_timing_line(source, floor, timing))


def _add_total_figures(report: Report, floor: Floor, timing: BuildTiming) -> None:
    report.figures.insert(
        0,
        at_most(
            "all sources: build time / floor time",
            timing.total / floor.seconds,
            TARGET_RATIO,
            note=f"{timing.total:.2f} s build, {floor.seconds:.2f} s floor, {timing.rows} images",
        ),
    )
    report.figures.insert(
        1,
        Figure(
            "all sources: generation / floor",
            timing.generation / floor.seconds,
            "x",
            note="time inside generate_rows over the floor: the per-row cost beyond decode and encode",
        ),
    )
    report.figures.insert(2, Figure("all sources: build images/s", timing.rows / timing.total, "images/s"))
    report.details.append(_timing_line("all sources", floor, timing))


def _timing_line(label: str, floor: Floor, timing: BuildTiming) -> str:
    arrow = timing.prepare - timing.planning - timing.generation
    rest = timing.total - timing.prepare - timing.export
    if floor.images != timing.rows:
        label += f" (floor counted {floor.images} images, build wrote {timing.rows} rows)"
    return (
        f"{label}: floor {floor.load_seconds:.2f} s load + {floor.encode_seconds:.2f} s encode; "
        f"build {timing.total:.2f} s = planning {timing.planning:.2f} + generation {timing.generation:.2f} "
        f"+ datasets Arrow writing {arrow:.2f} + export {timing.export:.2f} + other {rest:.2f}"
    )


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this benchmark."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--subjects", type=int, default=DEFAULT_SUBJECTS, help="synthetic subjects per source (default 120)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic sources (default 0)")
    parser.add_argument("--data-dir", type=Path, default=None, help="real sources to build instead of synthetic ones")
    parser.add_argument("--sources", nargs="+", default=None, help="sources to measure (default: all present)")
    parser.add_argument("--max-side", type=int, default=1024, help="longest image side in pixels (default 1024)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the machine, the command and the figures."""
    return run_benchmark(parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
