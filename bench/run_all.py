"""Run every benchmark, print its figures and record them in docs/benchmarks.md.

Each benchmark runs in its own Python process, so that imports, caches and
memory of one do not change the figures of the next. They share one work
folder, so the synthetic sources are generated once. The evaluation
benchmark runs last.

Run: ``python -m bench.run_all [--quick] [--only NAME ...] [--no-write]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import Report, load_average, machine_info, machine_text, program_name, work_folder

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
RESULTS_START = "<!-- bench:results:start -->"
RESULTS_END = "<!-- bench:results:end -->"

BENCHMARKS: tuple[str, ...] = ("build_speed", "parallel_build", "memory", "load_speed", "eval_overhead")

# Smaller sizes for a run of about a minute; the default sizes take about three minutes on two cores.
QUICK_ARGUMENTS: dict[str, list[str]] = {
    "build_speed": ["--subjects", "40"],
    "parallel_build": ["--subjects", "40"],
    "memory": ["--few", "2", "--many", "8", "--shape", "120", "120", "78"],
    "load_speed": ["--subjects", "40", "--repeats", "1"],
    "eval_overhead": ["--subjects", "40", "--questions", "16"],
}


def run_one(name: str, work: Path, extra: list[str]) -> Report | None:
    """Run ``python -m bench.NAME`` in a new process; return its report, or None when it failed."""
    result_file = work / f"{name}.json"
    result_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        f"bench.{name}",
        "--work",
        str(work),
        "--quiet",
        "--json",
        str(result_file),
        *extra,
    ]
    print(f"\n$ {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, check=False)
    logger.info(
        "bench.%s finished in %.0f s with exit code %d", name, time.perf_counter() - start, completed.returncode
    )
    if completed.returncode != 0 or not result_file.is_file():
        logger.error("bench.%s failed with exit code %d; its figures are left out", name, completed.returncode)
        return None
    report = Report.from_json(json.loads(result_file.read_text(encoding="utf-8")))
    # Show the command a reader would type; the work folder and JSON file are this run's plumbing.
    report.command = " ".join(["python", "-m", f"bench.{name}", *extra])
    return report


def results_markdown(reports: list[Report], failed: list[str], started: str, loads: tuple[str, str]) -> str:
    """Render the machine, the run's date and load, and every report as the generated part of the docs page."""
    command = " ".join(["python", "-m", "bench.run_all", *sys.argv[1:]])
    lines = [f"Recorded by `{command}` on {started}."]
    lines += ["", "Machine:", ""]
    lines += [f"- {label}: {value}" for label, value in machine_info().items()]
    lines += [f"- load average (1, 5, 15 min) at start: {loads[0]}; at end: {loads[1]}", ""]
    if failed:
        lines += [f"Failed, no figures: {', '.join(failed)}.", ""]
    for report in reports:
        lines.append(report.markdown())
    return "\n".join(lines)


def write_docs(path: Path, generated: str) -> None:
    """Replace the text between the results markers of ``path`` with ``generated``.

    Raises:
        ValueError: when the file lacks either marker; add them where the results belong.
    """
    text = path.read_text(encoding="utf-8")
    if RESULTS_START not in text or RESULTS_END not in text:
        raise ValueError(f"{path} has no {RESULTS_START} ... {RESULTS_END} block; add both markers to record results")
    head, rest = text.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    path.write_text(f"{head}{RESULTS_START}\n{generated}\n{RESULTS_END}{tail}", encoding="utf-8")


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of the runner."""
    parser = argparse.ArgumentParser(prog=program_name(), description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="shared work folder; default: a temporary folder")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None, help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="use the small sizes (about a minute in all)")
    parser.add_argument("--no-write", action="store_true", help="print the figures without changing docs/benchmarks.md")
    parser.add_argument(
        "--docs", type=Path, default=DOCS, help="the page to record results in (default docs/benchmarks.md)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks in order; return 1 when any failed, else 0."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print("machine:")
    print(machine_text(machine_info()))

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_at_start = load_average()
    reports, failed = [], []
    with work_folder(args.work) as work:
        for name in args.only or BENCHMARKS:
            report = run_one(name, work, QUICK_ARGUMENTS[name] if args.quick else [])
            if report is None:
                failed.append(name)
            else:
                reports.append(report)

    print("\nSummary:")
    for report in reports:
        print(report.text())
    if not args.no_write:
        write_docs(args.docs, results_markdown(reports, failed, started, (load_at_start, load_average())))
        print(f"\nRecorded in {args.docs}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
