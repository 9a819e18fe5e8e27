"""Parallel build trace: where a ``num_proc`` build spends the time around its worker processes.

One build with ``num_proc`` worker processes is timed with timestamps: when
``datasets`` starts and ends each split in the main process, and when each
worker starts and ends its block of cases. Two figures per split give the
cost of the worker pool: the wait from the split's start to the first row,
and the wait from the last row to the split's end. A third gives the balance
of the blocks: how far apart the workers finished.

The worker timestamps come from a wrapper around ``crossmed.generate_rows``
that the worker processes inherit when they are forked, so they are missing
under the spawn or forkserver start method.

Run: ``python -m bench.parallel_trace [--subjects 120] [--num-proc 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    Report,
    base_parser,
    command_line,
    run_benchmark,
    synthetic_sources,
    warm_up_build,
    work_folder,
)

DEFAULT_SUBJECTS = 120


@contextmanager
def traced_build_steps(log: Path) -> Iterator[None]:
    """Append one JSON line per split (main process) and per worker block to ``log`` while active."""
    import crossmed

    original_rows, original_split = crossmed.generate_rows, crossmed.CrossMed._prepare_split

    def rows(jobs: list[Any], settings: Any) -> Iterator[Any]:
        start, first = time.time(), None
        for row in original_rows(jobs, settings):
            first = first or time.time()
            yield row
        _append(log, {"kind": "worker", "pid": os.getpid(), "start": start, "first": first, "end": time.time()})

    def prepare_split(self: Any, split_generator: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return original_split(self, split_generator, **kwargs)
        finally:
            _append(log, {"kind": "split", "name": split_generator.name, "start": start, "end": time.time()})

    crossmed.generate_rows, crossmed.CrossMed._prepare_split = rows, prepare_split
    try:
        yield
    finally:
        crossmed.generate_rows, crossmed.CrossMed._prepare_split = original_rows, original_split


def _append(log: Path, record: dict[str, Any]) -> None:
    with log.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")


def split_figures(records: list[dict[str, Any]]) -> list[Figure]:
    """Return the pool waits and block balance of each split, pairing workers with the split they ran in."""
    figures = []
    workers = [record for record in records if record["kind"] == "worker"]
    for split in (record for record in records if record["kind"] == "split"):
        inside = [worker for worker in workers if split["start"] <= worker["start"] <= split["end"]]
        if not inside:
            figures.append(Figure(f"{split['name']}: worker timestamps", 0.0, "", text="missing (not forked?)"))
            continue
        first_row = min(worker["first"] or worker["end"] for worker in inside)
        last_row = max(worker["end"] for worker in inside)
        ends = [worker["end"] for worker in inside]
        figures += [
            Figure(f"{split['name']}: split start to first row", first_row - split["start"], "s"),
            Figure(f"{split['name']}: last row to split end", split["end"] - last_row, "s"),
            Figure(
                f"{split['name']}: worker blocks ended apart", max(ends) - min(ends), "s", note=f"{len(ends)} blocks"
            ),
        ]
    return figures


def run(args: argparse.Namespace) -> Report:
    """Build once with ``num_proc`` processes under the trace and report the waits per split."""
    from builder.build import build_and_export

    report = Report(f"Parallel build trace (num_proc={args.num_proc})", command_line("bench.parallel_trace"))
    with work_folder(args.work) as work:
        data_dir = synthetic_sources(work, args.subjects, args.seed)
        warm_up_build(data_dir, work / "trace-warmup")
        log = work / f"trace-{time.time_ns()}.jsonl"

        with traced_build_steps(log):
            start = time.perf_counter()
            build_and_export(data_dir, work / "trace-build", num_proc=args.num_proc, overwrite=True)
            total = time.perf_counter() - start
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]

    report.figures.append(Figure("whole build", total, "s", note="planning, splits and export"))
    report.figures += split_figures(records)
    return report


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this benchmark."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--subjects", type=int, default=DEFAULT_SUBJECTS, help="synthetic subjects per source (default 120)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic sources (default 0)")
    parser.add_argument("--num-proc", type=int, default=2, help="processes of the build (default 2)")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_benchmark(parser(), run))
