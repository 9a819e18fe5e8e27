"""Evaluation harness overhead: wall time of ``eval.api.evaluate`` over the model's own forward/generate time.

A tiny Qwen2-VL with random weights (``eval.tiny.build_tiny_model``) scores
the ``unrelated`` test split of a synthetic export on the CPU. The model's
time is measured by wrapping ``generate`` and ``forward`` of the loaded model
instance (a forward call made inside ``generate`` is counted once, as part of
``generate``). Everything else in ``evaluate`` is harness: loading the split,
decoding images, the processor, answer extraction, writing predictions,
metrics with bootstrap intervals, the report and plots. The scoring loop
alone (model loading, batches, model calls, prediction writes) is timed too.

By default the whole split is scored, as a real evaluation does: 932
questions with the default 450 synthetic subjects per source (BraTS caps the
MRI classification questions near 880, so more subjects add few questions).
With a model this small, the fixed costs of ``evaluate`` (about 0.2 s) would
dominate a run of 100 questions, while a real test split has thousands.
Building that export takes about 90 s on 2 cores; ``--work`` keeps it for later runs.

The CPU time a loader worker spends per question is timed on its own too, on
one thread as in a worker: the processor, and reading the row with its PNG
decoded to RGB. On a CPU-only machine that work shares the cores with the model.

The generate run at batch 8 is repeated with ``num_workers=0``. On a CPU,
loader workers and torch's intra-op threads share the cores. Workers can then
lower the ratio by slowing the model down instead of hiding harness work, and
the two runs side by side show which of the two happened.

NOTE: the wrapping reaches into ``eval.runner.load_model`` and
``eval.runner._run_model``, which ``evaluate`` calls; a rename there makes
this benchmark fail with a message naming the missing function.

Run: ``python -m bench.eval_overhead [--questions N] [--subjects 450]``.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    work_folder,
)

TARGET_OVERHEAD = 1.10
DEFAULT_SUBJECTS = 450
CONFIG = "unrelated"
DEFAULT_WORKERS = 2
"""The ``num_workers`` default of ``eval.api.evaluate``, used by every run but the one without workers."""


class ModelClock:
    """Wall time spent in the model's outermost ``generate`` or ``forward`` calls, in seconds.

    Args:
        synchronize: Called before a timed call returns, e.g. ``torch.cuda.synchronize``,
            so that GPU work queued by the call is counted in it.
    """

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self.timer = Timer()
        self._depth = 0
        self._synchronize = synchronize

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``method`` timed, counting only calls not nested in another timed call."""

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            try:
                with self.timer.measure():
                    result = method(*args, **kwargs)
                    if self._synchronize is not None:
                        self._synchronize()
                    return result
            finally:
                self._depth -= 1

        return timed


@contextmanager
def clocked_models(clock: ModelClock) -> Iterator[None]:
    """Make every model that ``eval.runner`` loads report its generate and forward time to ``clock``."""
    from eval import runner

    if not hasattr(runner, "load_model"):
        raise RuntimeError("eval.runner no longer calls load_model; update bench.eval_overhead to wrap the new loader")
    original = runner.load_model

    def load_and_wrap(*args: Any, **kwargs: Any) -> Any:
        loaded = original(*args, **kwargs)
        model = loaded.model
        # Instance attributes shadow the class methods, so model(...) and the
        # forward calls inside generate go through the wrappers.
        model.forward = clock.wrap(model.forward)
        model.generate = clock.wrap(model.generate)
        return loaded

    runner.load_model = load_and_wrap
    try:
        yield
    finally:
        runner.load_model = original


@dataclass
class EvalTiming:
    """One evaluation: questions scored and times in seconds."""

    questions: int
    wall: float
    loop: float
    model: float

    @property
    def per_second(self) -> float:
        """Questions per second over the whole ``evaluate`` call."""
        return self.questions / self.wall


def timed_evaluation(
    model: Path | str,
    export: Path,
    out: Path,
    mode: str,
    batch_size: int,
    questions: int | None,
    synchronize: Callable[[], None] | None = None,
    num_workers: int = DEFAULT_WORKERS,
) -> EvalTiming:
    """Run ``evaluate`` once in this process on the ``unrelated`` test split and return its times.

    Args:
        model: A model folder or Hub id.
        export: The CrossMed export folder.
        out: The run folder; use a new one per call, or the run resumes.
        mode: ``"generate"`` or ``"likelihood"``.
        batch_size: Questions per batch.
        questions: The ``limit`` of questions scored; None scores the whole split.
        synchronize: Passed to :class:`ModelClock`.
        num_workers: DataLoader worker processes preparing batches.
    """
    from eval import runner
    from eval.api import evaluate

    if not hasattr(runner, "_run_model"):
        raise RuntimeError("eval.runner has no _run_model; update bench.eval_overhead to time the new scoring loop")
    clock, loop = ModelClock(synchronize), Timer()
    with clocked_models(clock), timed_attribute(runner, "_run_model", loop):
        start = time.perf_counter()
        results = evaluate(
            str(model),
            str(export),
            CONFIG,
            out=out,
            mode=mode,
            batch_size=batch_size,
            limit=questions,
            num_workers=num_workers,
        )
        wall = time.perf_counter() - start
    return EvalTiming(results["n_predictions"], wall, loop.seconds, clock.timer.seconds)


@dataclass
class WorkerCost:
    """CPU time per question of the two steps a loader worker runs, in seconds, on one thread."""

    processor: float
    image: float


def worker_cost(model: Path, export: Path, questions: int = 64, passes: int = 5) -> WorkerCost:
    """Time, in this process on one torch thread, what a loader worker does for each question.

    ``image`` is reading the row and decoding its PNG to RGB (``QuestionDataset``).
    ``processor`` is :func:`eval.inference.encode_batch` on batches of 8. Each is
    the best of ``passes`` passes over the first ``questions`` questions of the split.
    """
    import torch

    from eval.data import QuestionDataset, load_question_table, load_split, make_work_items
    from eval.inference import encode_batch
    from eval.models import load_processor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset = load_split(str(export), CONFIG, "test")
        table = load_question_table(dataset)
        items = make_work_items(table, circular=False, limit=questions)
        processor = load_processor(str(model))

        image_seconds = []
        for _ in range(passes):
            questions_dataset = QuestionDataset(dataset.select_columns(["image"]), table, items)
            timer = Timer()
            with timer.measure():
                prepared = [questions_dataset[position] for position in range(len(items))]
            image_seconds.append(timer.seconds)

        batches = [prepared[start : start + 8] for start in range(0, len(prepared), 8)]
        encode_batch(processor, batches[0], blind=False)
        processor_seconds = []
        for _ in range(passes):
            timer = Timer()
            with timer.measure():
                for batch in batches:
                    encode_batch(processor, batch, blind=False)
            processor_seconds.append(timer.seconds)
    finally:
        torch.set_num_threads(threads)
    return WorkerCost(processor=min(processor_seconds) / len(items), image=min(image_seconds) / len(items))


def prepare(work: Path, subjects: int) -> tuple[Path, Path]:
    """Return a synthetic export and a tiny Qwen2-VL folder under ``work``, creating them on first use."""
    from builder.build import build_and_export
    from eval.tiny import build_tiny_model

    export = work / f"export-{subjects}"
    if not (export / "README.md").is_file():
        build_and_export(synthetic_sources(work, subjects), export, overwrite=True)
    model = work / "tiny-qwen2_vl"
    if not (model / "config.json").is_file():
        build_tiny_model("qwen2_vl", model)
    return export, model


def run(args: argparse.Namespace) -> Report:
    """Score the same questions in generate mode (batch 8 and 1) and likelihood mode (batch 8)."""
    report = Report("Evaluation harness overhead (tiny Qwen2-VL, CPU)", command_line("bench.eval_overhead"))
    with work_folder(args.work) as work:
        export, model = prepare(work, args.subjects)
        settings = {
            "generate-8": ("generate", 8, DEFAULT_WORKERS),
            "generate-8-no-workers": ("generate", 8, 0),
            "likelihood-8": ("likelihood", 8, DEFAULT_WORKERS),
            "generate-1": ("generate", 1, DEFAULT_WORKERS),
        }
        # A first short run loads the libraries and warms the caches that every later run reuses.
        warmup = work / f"eval-warmup-{time.time_ns()}"
        timed_evaluation(model, export, warmup, "generate", 8, min(8, args.questions or 8))
        cost = worker_cost(model, export)
        timings = {
            name: timed_evaluation(
                model, export, work / f"eval-{name}-{time.time_ns()}", mode, size, args.questions, num_workers=workers
            )
            for name, (mode, size, workers) in settings.items()
        }

    generate = timings["generate-8"]
    report.figures.append(
        at_most(
            "evaluate wall time / model time (generate, batch 8)",
            generate.wall / generate.model,
            TARGET_OVERHEAD,
            note=f"{generate.wall:.2f} s against {generate.model:.2f} s, {generate.questions} questions",
        )
    )
    report.figures.append(
        Figure(
            "scoring loop / model time (generate, batch 8)",
            generate.loop / generate.model,
            "x",
            note=f"{generate.loop:.2f} s: batches, model calls and prediction writes only",
        )
    )
    per_question = (generate.loop - generate.model) / generate.questions
    report.figures.append(
        Figure(
            "scoring-loop time per question beyond the model (generate, batch 8)",
            per_question * 1000,
            "ms",
            note=f"the loop adds at most 10% for a model that takes {per_question * 10 * 1000:.0f} ms or more per question",
        )
    )
    report.figures.append(
        Figure(
            "fixed cost of evaluate outside the scoring loop",
            generate.wall - generate.loop,
            "s",
            note="loading the split, metrics, bootstrap, report and plots",
        )
    )
    report.figures.append(
        Figure(
            "loader worker CPU per question: processor (one thread)",
            cost.processor * 1000,
            "ms",
            note="eval.inference.encode_batch on batches of 8: chat template, tokenizer and image processor",
        )
    )
    report.figures.append(
        Figure(
            "loader worker CPU per question: row read and PNG decode to RGB (one thread)",
            cost.image * 1000,
            "ms",
            note=f"against {generate.model / generate.questions * 1000:.1f} ms of model time per question "
            "(generate, batch 8)",
        )
    )
    no_workers = timings["generate-8-no-workers"]
    report.figures.append(
        Figure(
            f"model time, {DEFAULT_WORKERS} loader workers / none (generate, batch 8)",
            generate.model / no_workers.model,
            "x",
            note=f"{generate.model:.2f} s against {no_workers.model:.2f} s; above 1 the workers slowed the model",
        )
    )
    report.figures.append(
        Figure(
            f"evaluate wall time, {DEFAULT_WORKERS} loader workers / none (generate, batch 8)",
            generate.wall / no_workers.wall,
            "x",
            note=f"{generate.wall:.2f} s against {no_workers.wall:.2f} s; ratio without workers "
            f"{no_workers.wall / no_workers.model:.2f}x",
        )
    )
    likelihood = timings["likelihood-8"]
    report.figures.append(
        Figure(
            "evaluate wall time / model time (likelihood, batch 8)",
            likelihood.wall / likelihood.model,
            "x",
            note=f"{likelihood.wall:.2f} s against {likelihood.model:.2f} s",
        )
    )
    report.figures.append(
        Figure(
            "likelihood / generate questions per second (batch 8)",
            likelihood.per_second / generate.per_second,
            "x",
            note=f"{likelihood.per_second:.1f} against {generate.per_second:.1f} questions/s",
        )
    )
    single = timings["generate-1"]
    report.figures.append(
        Figure(
            "batch 8 / batch 1 questions per second (generate)",
            generate.per_second / single.per_second,
            "x",
            note=f"batch 1: {single.per_second:.1f} questions/s, model time {single.model:.2f} s",
        )
    )
    for name, timing in timings.items():
        report.details.append(
            f"{name}: {timing.questions} questions, evaluate {timing.wall:.2f} s, scoring loop {timing.loop:.2f} s, "
            f"model {timing.model:.2f} s"
        )
    return report


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this benchmark."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--questions", type=int, default=None, help="questions scored per run (default: the whole test split)"
    )
    parser.add_argument(
        "--subjects",
        type=int,
        default=DEFAULT_SUBJECTS,
        help=f"synthetic subjects per source (default {DEFAULT_SUBJECTS})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the machine, the command and the figures."""
    return run_benchmark(parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
