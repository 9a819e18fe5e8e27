"""GPU check: questions per second of a tiny model, and of a real one if given, appended to docs/benchmarks.md.

For a maintainer with a CUDA GPU. One command takes a few minutes:

    python -m bench.gpu_check                          # tiny Qwen2-VL with random weights
    python -m bench.gpu_check --model /models/Qwen2-VL-2B-Instruct --questions 128

It builds a small synthetic export (or reads ``--export``). Then it scores the
first questions of the ``unrelated`` test split with ``eval.api.evaluate`` on
the GPU in generate and likelihood mode, in bfloat16 (what ``dtype="auto"``
picks on CUDA). The machine, the GPU and the figures are appended to
docs/benchmarks.md. The model's time includes a ``torch.cuda.synchronize``
after each call, so that queued GPU work is counted. Nothing is downloaded:
``--model`` must be a local folder or a model already in the Hugging Face cache.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from bench.common import Figure, Report, configure_output, machine_info, synthetic_sources, work_folder
from bench.eval_overhead import EvalTiming, timed_evaluation

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SUBJECTS = 40
BATCH_SIZE = 8
MODES: tuple[str, ...] = ("generate", "likelihood")


class NoGPUError(RuntimeError):
    """The error raised when torch finds no CUDA device."""


def gpu_description() -> dict[str, str]:
    """Describe the CUDA device and the torch build, or raise when no GPU is usable.

    Raises:
        NoGPUError: when ``torch.cuda.is_available()`` is False.
    """
    import torch

    if not torch.cuda.is_available():
        raise NoGPUError(
            "No CUDA GPU is available to torch (torch.cuda.is_available() is False); "
            "run this check on a machine with an NVIDIA GPU and a CUDA build of torch."
        )
    properties = torch.cuda.get_device_properties(0)
    return {
        "GPU": f"{properties.name}, {properties.total_memory / 1024**3:.0f} GiB",
        "GPUs visible": str(torch.cuda.device_count()),
        "CUDA (torch build)": str(torch.version.cuda),
    }


def score_model(
    model: Path | str,
    export: Path,
    work: Path,
    label: str,
    questions: int,
    synchronize: Callable[[], None] | None,
    warm_up: bool,
) -> list[Figure]:
    """Score ``questions`` questions in each mode and return the questions-per-second figures.

    Each ``evaluate`` call loads the model again; ``warm_up`` adds an uncounted first call.
    """
    figures = []
    if warm_up:
        # The first run loads the libraries and initializes CUDA; it is not counted.
        timed_evaluation(model, export, work / "warmup", "generate", BATCH_SIZE, min(BATCH_SIZE, questions))
    for mode in MODES:
        out = work / f"run-{mode}-{time.time_ns()}"
        timing = timed_evaluation(model, export, out, mode, BATCH_SIZE, questions, synchronize=synchronize)
        figures.append(_figure(label, mode, timing))
    return figures


def _figure(label: str, mode: str, timing: EvalTiming) -> Figure:
    return Figure(
        f"{label}: questions/s, {mode}, batch {BATCH_SIZE}",
        timing.per_second,
        "questions/s",
        note=(
            f"{timing.questions} questions: evaluate {timing.wall:.1f} s, scoring loop {timing.loop:.1f} s, "
            f"model {timing.model:.1f} s (evaluate / model {timing.wall / timing.model:.2f}x)"
        ),
    )


def append_to_docs(path: Path, report: Report, gpu: dict[str, str]) -> None:
    """Append the machine, the GPU and the report as a dated section at the end of ``path``."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["", f"### GPU check, {stamp}", ""]
    lines += [f"- {label}: {value}" for label, value in {**gpu, **machine_info()}.items()]
    lines += ["", report.markdown().split("\n", 2)[2]]
    with path.open("a", encoding="utf-8") as stream:
        stream.write("\n".join(lines))


def run(args: argparse.Namespace) -> tuple[Report, dict[str, str]]:
    """Check the GPU, prepare the data and the tiny model, and score them (and ``--model`` if given)."""
    import torch

    from builder.build import build_and_export
    from eval.tiny import build_tiny_model

    if args.cpu:
        gpu, synchronize = {"GPU": "none: --cpu rehearsal, figures are CPU figures"}, None
    else:
        gpu, synchronize = gpu_description(), torch.cuda.synchronize
    report = Report("GPU check", " ".join(["python", "-m", "bench.gpu_check", *sys.argv[1:]]))
    with work_folder(args.work) as work:
        export = args.export
        if export is None:
            export = work / f"export-{SUBJECTS}"
            if not (export / "README.md").is_file():
                build_and_export(synthetic_sources(work, SUBJECTS), export, overwrite=True)
        tiny = build_tiny_model("qwen2_vl", work / "tiny-qwen2_vl")
        label = "tiny Qwen2-VL (random weights)"
        report.figures += score_model(tiny, export, work, label, args.tiny_questions, synchronize, warm_up=True)
        if args.model is not None:
            report.figures += score_model(
                args.model, export, work, str(args.model), args.questions, synchronize, warm_up=False
            )
    return report, gpu


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of the GPU check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a local model folder (or a cached Hub id) to time as well")
    parser.add_argument("--questions", type=int, default=128, help="questions per mode for --model (default 128)")
    parser.add_argument("--tiny-questions", type=int, default=256, help="questions per mode for the tiny model")
    parser.add_argument("--export", type=Path, default=None, help="an existing CrossMed export to read")
    parser.add_argument("--work", type=Path, default=None, help="work folder; default: a temporary folder")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the page to append to (default docs/benchmarks.md)")
    parser.add_argument("--no-write", action="store_true", help="print the figures without appending them")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars and INFO logs")
    parser.add_argument(
        "--cpu", action="store_true", help="rehearse the check on the CPU; the figures are printed, never appended"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the GPU check; return 2 without a GPU, else 0."""
    args = parser().parse_args(argv)
    configure_output(args.quiet)
    try:
        report, gpu = run(args)
    except NoGPUError as error:
        print(error, file=sys.stderr)
        return 2

    print("\n".join(f"  {label}: {value}" for label, value in gpu.items()))
    print(report.text())
    if not args.no_write and not args.cpu:
        append_to_docs(args.docs, report, gpu)
        print(f"Appended to {args.docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
