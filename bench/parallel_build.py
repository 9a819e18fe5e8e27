"""Parallel build: ``num_proc=2`` against ``num_proc=1``, with identical output.

Both builds read the same sources in the same run. The speedup is the
one-process wall time over the two-process wall time of ``build_and_export``
(planning, decoding, Arrow writing and export). The two exports must hold
the same rows: their Parquet content digests (schema and values, ignoring
row-group boundaries) are compared, and so are the raw Parquet bytes.

The machine's own ceiling is measured in the same run: two one-process
builds started at once in two Python processes, against one alone. On a
machine whose two cores are busy elsewhere or share execution units, that
ceiling, not 2.0, bounds any two-process build.

The default input is 300 synthetic subjects per source, about 6,500 images
in a build of about 20 s on two cores. ``datasets`` starts a worker pool and
a manager process for each of the three splits, about 0.4 s in all whatever
the size of the build. A real build has 20,200 questions from larger images,
so it should take several times longer (an estimate, not measured here), and a
smaller default would overstate that fixed cost. ``--subjects 120`` shows it.

Run: ``python -m bench.parallel_build [--subjects 300] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    Figure,
    Report,
    Timer,
    at_least,
    base_parser,
    command_line,
    configure_output,
    load_average,
    parquet_bytes_digest,
    parquet_content_digest,
    run_benchmark,
    synthetic_sources,
    timed_attribute,
    warm_up_build,
    work_folder,
    yes_no,
)

TARGET_SPEEDUP = 1.7
DEFAULT_SUBJECTS = 300


@dataclass
class Phases:
    """Wall times of one build in the main process, in seconds.

    ``prepare`` includes planning and, with several processes, the worker pool.
    """

    total: float
    planning: float
    prepare: float
    export: float

    @property
    def generation(self) -> float:
        """Decoding, encoding and Arrow writing: preparation minus planning."""
        return self.prepare - self.planning


def build_once(data_dir: Path, out_dir: Path, num_proc: int, max_side: int | None) -> Phases:
    """Run ``build_and_export`` with ``num_proc`` processes and time its phases in the main process."""
    import crossmed
    from builder import build

    planning, prepare, export = Timer(), Timer(), Timer()
    with (
        timed_attribute(crossmed, "build_plan", planning),
        timed_attribute(crossmed.CrossMed, "download_and_prepare", prepare),
        timed_attribute(build, "export_pool", export),
    ):
        start = time.perf_counter()
        build.build_and_export(
            data_dir, out_dir, num_proc=num_proc, overwrite=True, max_side=max_side, allow_missing_sources=True
        )
        total = time.perf_counter() - start
    return Phases(total, planning.seconds, prepare.seconds, export.seconds)


def child_build(data_dir: Path, out_dir: Path, barrier: Path, max_side: int | None) -> None:
    """Warm up, wait at ``barrier``, run a one-process build and print its time as a RESULT line.

    The child creates ``barrier/ready-<pid>`` after its warm-up build and
    starts building when the parent creates ``barrier/go``, so concurrent
    children build at the same time.
    """
    warm_up_build(data_dir, out_dir.with_name(out_dir.name + "-warmup"))
    (barrier / f"ready-{os.getpid()}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.01)

    phases = build_once(data_dir, out_dir, 1, max_side)
    print("RESULT " + json.dumps({"seconds": phases.total}))


def concurrent_builds(data_dir: Path, work: Path, count: int, max_side: int | None) -> list[float]:
    """Run ``count`` one-process builds at the same time, each in its own Python process; return their times.

    Raises:
        RuntimeError: when a build process fails or prints no RESULT line.
    """
    barrier = Path(tempfile.mkdtemp(prefix="barrier-", dir=work))
    command = [sys.executable, "-m", "bench.parallel_build", "--quiet", "--data-dir", str(data_dir)]
    command += ["--child-barrier", str(barrier)] + ([] if max_side is None else ["--max-side", str(max_side)])
    processes = [
        subprocess.Popen(
            [*command, "--child-out", str(work / f"concurrent-{index}")], stdout=subprocess.PIPE, text=True
        )
        for index in range(count)
    ]
    while len(list(barrier.glob("ready-*"))) < count:
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(0.01)
    (barrier / "go").touch()

    seconds = []
    for process in processes:
        output, _ = process.communicate()
        lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
        if process.returncode != 0 or not lines:
            raise RuntimeError(
                f"A concurrent build process failed with exit code {process.returncode}:\n{output[-2000:]}"
            )
        seconds.append(json.loads(lines[-1].removeprefix("RESULT "))["seconds"])
    shutil.rmtree(barrier, ignore_errors=True)
    return seconds


def machine_speedup(data_dir: Path, work: Path, count: int, max_side: int | None) -> tuple[float, float, list[float]]:
    """Measure how much more build work ``count`` processes finish together than one alone.

    One one-process build runs alone, then ``count`` of them at once, then one
    alone again, and the two lone times are averaged. The
    throughput ratio ``count * alone / slowest concurrent build`` is the
    ceiling of any ``num_proc=count`` build on this machine at this moment: it
    is below ``count`` when the cores share execution units or caches, or when
    other programs use them.

    Returns:
        The ratio, the time of the build alone, and the times of the concurrent builds, in seconds.
    """
    alone_before = concurrent_builds(data_dir, work, 1, max_side)[0]
    together = concurrent_builds(data_dir, work, count, max_side)
    alone_after = concurrent_builds(data_dir, work, 1, max_side)[0]
    alone = (alone_before + alone_after) / 2
    return count * alone / max(together), alone, together


def run(args: argparse.Namespace) -> Report:
    """Build the same sources with one and with two processes, alternating, and compare time and output."""
    report = Report("Parallel build (num_proc=2 against 1)", command_line("bench.parallel_build"))
    with work_folder(args.work) as work:
        data_dir = Path(args.data_dir) if args.data_dir else synthetic_sources(work, args.subjects, args.seed)
        report.details.append(f"sources: {data_dir}")
        warm_up_build(data_dir, work / "parallel-warmup")

        runs: dict[int, list[Phases]] = {1: [], args.num_proc: []}
        for _ in range(args.repeats):
            for num_proc in (1, args.num_proc):
                runs[num_proc].append(build_once(data_dir, work / f"parallel-{num_proc}", num_proc, args.max_side))
        ceiling, alone, together = machine_speedup(data_dir, work, args.num_proc, args.max_side)

        serial_export, parallel_export = work / "parallel-1", work / f"parallel-{args.num_proc}"
        same_content = parquet_content_digest(serial_export) == parquet_content_digest(parallel_export)
        same_bytes = parquet_bytes_digest(serial_export) == parquet_bytes_digest(parallel_export)
        same_card = (serial_export / "README.md").read_bytes() == (parallel_export / "README.md").read_bytes()

    serial = statistics.median(phases.total for phases in runs[1])
    parallel = statistics.median(phases.total for phases in runs[args.num_proc])
    report.figures.append(
        at_least(
            f"speedup num_proc={args.num_proc} over 1",
            serial / parallel,
            TARGET_SPEEDUP,
            note=f"median of {args.repeats}: {serial:.2f} s against {parallel:.2f} s",
        )
    )
    report.figures.append(_generation_speedup(runs[1], runs[args.num_proc], args.num_proc))
    report.figures.append(
        Figure(
            f"machine ceiling: {args.num_proc} concurrent one-process builds, throughput over one",
            ceiling,
            "x",
            note=f"one alone {alone:.2f} s (mean of before and after); {args.num_proc} at once "
            + ", ".join(f"{value:.2f}" for value in together)
            + f" s; load average after {load_average()}",
        )
    )
    report.figures.append(
        Figure(
            "build speedup / machine ceiling",
            serial / parallel / ceiling,
            "x",
            note="1.0 = the build scales as well as the machine allows",
        )
    )
    report.figures.append(yes_no("same Parquet content", same_content, "SHA-256 of schema and rows of every file"))
    report.figures.append(
        Figure(
            "same Parquet bytes",
            float(same_bytes),
            "",
            note="SHA-256 of the raw files",
            text="yes" if same_bytes else "no",
        )
    )
    report.figures.append(Figure("same README card", float(same_card), "", text="yes" if same_card else "no"))
    for num_proc, phases_list in runs.items():
        for phases in phases_list:
            report.details.append(
                f"num_proc={num_proc}: {phases.total:.2f} s = planning {phases.planning:.2f} "
                f"+ generation and Arrow writing {phases.generation:.2f} + export {phases.export:.2f} "
                f"+ other {phases.total - phases.prepare - phases.export:.2f}"
            )
    return report


def _generation_speedup(serial: list[Phases], parallel: list[Phases], num_proc: int) -> Figure:
    serial_seconds = statistics.median(phases.generation for phases in serial)
    parallel_seconds = statistics.median(phases.generation for phases in parallel)
    return Figure(
        f"speedup of the parallel phase alone (num_proc={num_proc})",
        serial_seconds / parallel_seconds,
        "x",
        note=f"generation and Arrow writing: {serial_seconds:.2f} s against {parallel_seconds:.2f} s",
    )


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this benchmark."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--subjects",
        type=int,
        default=DEFAULT_SUBJECTS,
        help=f"synthetic subjects per source (default {DEFAULT_SUBJECTS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic sources (default 0)")
    parser.add_argument("--data-dir", type=Path, default=None, help="real sources to build instead of synthetic ones")
    parser.add_argument("--num-proc", type=int, default=2, help="processes of the parallel build (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="builds of each kind, alternating; the median counts")
    parser.add_argument("--max-side", type=int, default=1024, help="longest image side in pixels (default 1024)")
    parser.add_argument("--child-barrier", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the machine, the command and the figures."""
    args = parser().parse_args(argv)
    if args.child_barrier is not None:
        configure_output(quiet=True)
        child_build(args.data_dir, args.child_out, args.child_barrier, args.max_side)
        return 0
    return run_benchmark(parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
