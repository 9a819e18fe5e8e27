"""Run an evaluation: resumable, batched, optionally across several processes.

Predictions are appended to ``predictions.jsonl`` in the run folder after each
batch, one record per (question id, rotation). Each batch is flushed, so a
killed process loses none, and the file is fsynced at most once a second and
at the end (see :class:`RecordWriter`). Every record carries the run key, a
hash of the settings that change predictions.
A rerun with the same settings resumes and skips the finished work items. A run
folder containing another run's records is rejected instead of mixed.

Under ``torchrun`` (or ``accelerate launch`` on GPUs) each process takes every
N-th work item and appends to its own ``predictions.rank<N>.jsonl``. After all
processes finish, the main process merges the files into ``predictions.jsonl``,
sorted by dataset order and rotation, and writes the report. Runs over several
nodes need the run folder on a file system that every node can read.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import datasets
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from builder.mat import check_choice
from eval.baselines import prior_predictions, random_predictions
from eval.choices import BACKENDS, BASELINES, MODES
from eval.data import (
    PreparedItem,
    QuestionDataset,
    WorkItem,
    dataset_fingerprint,
    load_question_table,
    load_split,
    make_loader,
    make_work_items,
    shard_items,
)
from eval.inference import (
    FAILED,
    BatchExecutor,
    BatchStep,
    ItemResult,
    encode_in_worker,
    generate_batch,
    letter_token_ids,
    likelihood_batch,
    render_prompts,
)
from eval.locations import MODEL_EXPECTED, check_folder_exists
from eval.models import load_model, load_processor
from eval.prompts import NUM_OPTIONS, PROMPT_VERSION, format_prompt, to_stored_letter
from eval.report import REPORT_FILE, plot_segmentation_examples, write_outputs
from eval.tiny import RANDOM_WEIGHTS_TAG
from eval.vllm_backend import VllmGenerator

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
SYNC_INTERVAL = 1.0
"""Seconds between fsyncs of the predictions file during a run; every batch is flushed."""
RANK_FILE_PATTERN = "predictions.rank*.jsonl"


@dataclass(frozen=True)
class RunSettings:
    """Everything that defines a run. See ``python -m eval --help`` for each option.

    Attributes:
        dataset: a built CrossMed folder or Hub dataset id.
        config: the config name; None for the dataset's default config.
        model: a Hub model id or local folder; None for a baseline run.
        split: the split to score.
        mode: ``"generate"`` or ``"likelihood"``.
        baseline: ``"random"`` or ``"prior"`` to run a baseline instead of a model.
        blind: leave the image out of every prompt.
        circular: show each question at the four rotations of its options.
        batch_size: questions per forward pass (halved on CUDA out of memory).
        max_new_tokens: the generated-token limit in generate mode.
        dtype: weight dtype, ``"auto"`` for bfloat16 on CUDA and float32 on CPU.
        device_map: passed to ``from_pretrained``; None puts the whole model on one device.
        trust_remote_code: allow the model repository's own code to run.
        allow_pickle_weights: allow ``.bin`` weights when no safetensors exist.
        backend: ``"hf"`` (transformers) or ``"vllm"``.
        num_workers: DataLoader processes decoding images and running the processor.
        limit: score only the first ``limit`` questions; None for all.
        seed: seed of the random baseline and the bootstrap.
        n_bootstrap: bootstrap resamples for the confidence intervals.
        cache_dir: the ``datasets`` cache folder; None for its default.
    """

    dataset: str
    config: str | None
    model: str | None = None
    split: str = "test"
    mode: str = "generate"
    baseline: str | None = None
    blind: bool = False
    circular: bool = False
    batch_size: int = 8
    max_new_tokens: int = 16
    dtype: str = "auto"
    device_map: str | None = None
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    backend: str = "hf"
    num_workers: int = 2
    limit: int | None = None
    seed: int = 0
    n_bootstrap: int = 1000
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("backend", self.backend, BACKENDS)
        if self.baseline is not None:
            check_choice("baseline", self.baseline, BASELINES)
            if self.model:
                raise ValueError(f"Both --model {self.model} and --baseline {self.baseline} given; pass one of them.")
        elif not self.model:
            raise ValueError("No model given: pass --model (a Hub id or a local folder) or --baseline random|prior.")

        for name, minimum in (("batch_size", 1), ("max_new_tokens", 1), ("num_workers", 0), ("n_bootstrap", 1)):
            if getattr(self, name) < minimum:
                raise ValueError(f"Invalid {name} {getattr(self, name)}: expected at least {minimum}.")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"Invalid limit {self.limit}: expected at least 1, or no limit.")
        if self.backend == "vllm" and self.mode == "likelihood":
            raise ValueError("The vllm backend supports --mode generate only; use --backend hf for likelihood.")

    def run_key(self) -> str:
        """Return a 16-hex-digit hash of the settings that change the predictions.

        The key covers the model (or baseline), mode, dataset, config, split,
        blind, circular, the prompt version, the generated-token limit in
        generate mode and the seed of the random baseline. A local dataset or
        model folder counts by its absolute path. Batch size, dtype, devices,
        workers and ``limit`` are left out, so a run can resume with other
        hardware settings or extend a limited run.
        """
        fields = {
            "model": None if self.baseline else _absolute_if_local(self.model),
            "baseline": self.baseline,
            "mode": self.baseline or self.mode,
            "dataset": _absolute_if_local(self.dataset),
            "config": self.config,
            "split": self.split,
            "blind": self.blind,
            "circular": self.circular,
            "prompt_version": PROMPT_VERSION,
            "max_new_tokens": self.max_new_tokens if self.mode == "generate" and not self.baseline else None,
            "seed": self.seed if self.baseline == "random" else None,
        }
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """Return the settings, the run key and the prompt version as a JSON-ready dict."""
        return {**asdict(self), "run_key": self.run_key(), "prompt_version": PROMPT_VERSION}


def run_evaluation(settings: RunSettings, out_dir: Path) -> dict[str, Any] | None:
    """Run or resume an evaluation and write its outputs to ``out_dir``.

    Args:
        settings: the run settings.
        out_dir: the run folder; created if missing.

    Returns:
        The results dict from :func:`eval.report.write_outputs` in the main
        process, None in the other processes of a distributed run.

    Raises:
        ValueError: when ``out_dir`` contains predictions of a run with other settings.
        RuntimeError: when work items are still missing after every process finished.
    """
    with frozen_garbage_collector():
        return _run_evaluation(settings, Path(out_dir))


@contextmanager
def frozen_garbage_collector() -> Iterator[None]:
    """Exempt the objects that exist on entry from garbage collection until exit.

    After torch, transformers and datasets are imported a process has about
    half a million objects, and a full collection of them paused the run for
    about 0.27 s, once or twice per evaluation (one 2-core machine). Frozen
    objects are skipped by collections, and forked DataLoader workers then
    share their memory pages instead of copying them when they collect. The
    objects are unfrozen on exit. Where the caller has already frozen objects,
    nothing changes.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run_evaluation(settings: RunSettings, out_dir: Path) -> dict[str, Any] | None:
    state = start_processes()
    if settings.model is not None:
        check_folder_exists(settings.model, kind="Model", expected=MODEL_EXPECTED)

    with state.main_process_first():
        dataset = load_split(settings.dataset, settings.config, settings.split, cache_dir=settings.cache_dir)
    table = load_question_table(dataset)
    items = make_work_items(table, circular=settings.circular, limit=settings.limit)
    # Created only now, so that a missing model, dataset, config or split leaves no empty run folder.
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _score(settings, state, out_dir, dataset, table, items)
    except BaseException:
        # A model that fails to load leaves the new folder empty, so it is removed.
        # A folder with predictions stays, so that the run can resume.
        if created:
            _remove_if_empty(out_dir)
        raise


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _score(
    settings: RunSettings,
    state: PartialState,
    out_dir: Path,
    dataset: datasets.Dataset,
    table: list[dict[str, Any]],
    items: list[WorkItem],
) -> dict[str, Any] | None:
    """Score the work items of this process, then, in the main process, write the results."""
    if settings.baseline is not None:
        return _run_baseline(settings, out_dir, dataset, state) if state.is_main_process else None

    own_file, todo = _plan_shard(settings, state, out_dir, items)
    # Every process reads all prediction files before any process appends to its own.
    state.wait_for_everyone()
    if todo:
        _run_model(settings, state, dataset, table, todo, own_file)

    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return _finish(settings, out_dir, dataset, table, items)


def start_processes() -> PartialState:
    """Join the launcher's process group, if any, and return the accelerate process state.

    Without CUDA, the processes of ``torchrun`` join a gloo group on the CPU.

    Raises:
        RuntimeError: when the launcher started several processes but they did
            not form a group, which would make every process score every question.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:
        raise RuntimeError(
            f"The launcher started {launched} processes (WORLD_SIZE) but accelerate sees {state.num_processes}. "
            "Launch with `torchrun --nproc_per_node N -m eval ...` or `accelerate launch --multi_gpu "
            "--num_processes N -m eval ...`."
        )
    return state


def _plan_shard(
    settings: RunSettings, state: PartialState, out_dir: Path, items: list[WorkItem]
) -> tuple[Path, list[WorkItem]]:
    """Return the predictions file this process appends to and its unfinished work items."""
    if state.num_processes == 1:
        own_file = out_dir / PREDICTIONS_FILE
    else:
        own_file = out_dir / f"predictions.rank{state.process_index}.jsonl"
    finished = _finished_keys(out_dir, own_file, settings.run_key())
    shard = shard_items(items, state.process_index, state.num_processes)
    todo = [item for item in shard if item.key not in finished]
    logger.info(
        "Rank %d of %d processes: %d work items, %d already finished, %d to run",
        state.process_index, state.num_processes, len(shard), len(shard) - len(todo), len(todo),
    )
    return own_file, todo


def _run_model(
    settings: RunSettings,
    state: PartialState,
    dataset: datasets.Dataset,
    table: list[dict[str, Any]],
    todo: list[WorkItem],
    own_file: Path,
) -> None:
    model = _check_model_settings(settings, state)
    processor = None
    if settings.backend == "hf":
        processor = load_processor(model, trust_remote_code=settings.trust_remote_code)
    loader = make_loader(
        dataset,
        table,
        todo,
        blind=settings.blind,
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        encoder=None if processor is None else partial(encode_in_worker, processor, blind=settings.blind),
    )
    # iter() starts the workers, so they prepare the first batches while the weights load.
    batches = iter(loader)
    step = _make_step(settings, state, model, table, todo, processor)
    executor = BatchExecutor(partial(_run_step, step, cast(QuestionDataset, loader.dataset)), settings.batch_size)

    run_key = settings.run_key()
    progress = tqdm(
        total=len(todo), desc=f"Scoring {settings.model}", unit="question", disable=not state.is_local_main_process
    )
    with own_file.open("a", encoding="utf-8") as stream:
        writer = RecordWriter(stream)
        for batch in batches:
            results = executor.run(batch.items, batch.inputs)
            writer.append(
                make_record(table[item.work.index], item.work, result, mode=settings.mode, run_key=run_key)
                for item, result in zip(batch.items, results, strict=True)
            )
            progress.update(len(batch.items))
        writer.sync()
    progress.close()


def _run_step(
    step: BatchStep, source: QuestionDataset, items: list[PreparedItem], inputs: Any | None = None
) -> list[ItemResult]:
    """Run ``step`` on encoded inputs, or on the items with their images decoded again when there are none."""
    if inputs is None:
        return step(source.with_images(items))
    return step(items, inputs)


def _check_model_settings(settings: RunSettings, state: PartialState) -> str:
    """Return the model name, or reject settings that cannot run before any worker starts or weight loads."""
    if settings.model is None:
        raise ValueError("No model given: pass --model (a Hub id or a local folder).")
    if settings.backend == "vllm" and state.num_processes > 1:
        raise ValueError("--backend vllm manages its own GPUs; run it as one process, not under a launcher.")
    if settings.device_map is not None and state.num_processes > 1:
        raise ValueError(
            f"--device-map {settings.device_map} spreads one model over devices, which does not combine with "
            f"{state.num_processes} data-parallel processes. Drop --device-map or run one process."
        )
    return settings.model


def _make_step(
    settings: RunSettings,
    state: PartialState,
    model: str,
    table: list[dict[str, Any]],
    todo: list[WorkItem],
    processor: Any | None,
) -> BatchStep:
    """Load the model and return the function that scores one batch.

    ``processor`` is the one from :func:`eval.models.load_processor` for the
    transformers backend, and None for vLLM, which loads its own.
    """
    if settings.backend == "vllm":
        generator = VllmGenerator(model, dtype=settings.dtype, trust_remote_code=settings.trust_remote_code)
        return partial(generator.generate_batch, blind=settings.blind, max_new_tokens=settings.max_new_tokens)

    loaded = load_model(
        model,
        dtype=settings.dtype,
        device_map=settings.device_map,
        device=state.device,
        trust_remote_code=settings.trust_remote_code,
        allow_pickle_weights=settings.allow_pickle_weights,
        processor=processor,
    )
    if settings.mode == "generate":
        return partial(generate_batch, loaded, blind=settings.blind, max_new_tokens=settings.max_new_tokens)

    # Every prompt ends with the same generation prompt, so one sample prompt fixes the letter tokens.
    row = table[todo[0].index]
    sample = PreparedItem(todo[0], list(row["options"]), format_prompt(row["question"], row["options"]), None)
    letter_ids = letter_token_ids(loaded.tokenizer, render_prompts(loaded, [sample], blind=True)[0])
    return partial(likelihood_batch, loaded, blind=settings.blind, letter_ids=letter_ids)


def make_record(
    row: dict[str, Any], work: WorkItem, result: ItemResult, *, mode: str, run_key: str
) -> dict[str, Any]:
    """Build one ``predictions.jsonl`` record, with the prediction mapped back to the stored option order.

    Args:
        row: the question's row from the question table (class names, not ids).
        work: the work item the result belongs to.
        result: the model's result, with its letter in the displayed order.
        mode: ``"generate"`` or ``"likelihood"``.
        run_key: the run key.

    Returns:
        The record.
    """
    prediction = to_stored_letter(result.prediction, work.rotation)
    return {
        "id": row["id"],
        "run_key": run_key,
        "mode": mode,
        "rotation": work.rotation,
        "raw_output": result.raw_output,
        "scores": result.scores,
        "prediction": prediction,
        "answer": row["answer"],
        "correct": prediction == row["answer"],
        "triplet": row["triplet"],
        "source": row["source"],
        "subject_id": row["subject_id"],
        "task": row["task"],
        "bbox": row["bbox"],
        "option_boxes": row["option_boxes"],
    }


def _run_baseline(
    settings: RunSettings, out_dir: Path, dataset: datasets.Dataset, state: PartialState
) -> dict[str, Any]:
    run_key = settings.run_key()
    _finished_keys(out_dir, out_dir / PREDICTIONS_FILE, run_key)
    if settings.limit is not None:
        dataset = dataset.select(range(min(settings.limit, len(dataset))))

    rotations = NUM_OPTIONS if settings.circular else 1
    if settings.baseline == "random":
        records = random_predictions(dataset, settings.seed, rotations=rotations, run_key=run_key)
    else:
        with state.main_process_first():
            train = load_split(settings.dataset, settings.config, "train", cache_dir=settings.cache_dir)
        records = prior_predictions(train, dataset, rotations=rotations, run_key=run_key)

    write_records_atomically(out_dir / PREDICTIONS_FILE, records)
    return _write_report(settings, out_dir, dataset, records)


def _finish(
    settings: RunSettings,
    out_dir: Path,
    dataset: datasets.Dataset,
    table: list[dict[str, Any]],
    items: list[WorkItem],
) -> dict[str, Any]:
    """Merge the prediction files into predictions.jsonl and write the report."""
    order = {row["id"]: index for index, row in enumerate(table)}
    paths = [out_dir / PREDICTIONS_FILE, *sorted(out_dir.glob(RANK_FILE_PATTERN))]
    merged = merge_records(record for path in paths for record in read_records(path))
    merged.sort(key=lambda record: (order.get(record["id"], len(order)), record["rotation"]))

    write_records_atomically(out_dir / PREDICTIONS_FILE, merged)
    for path in paths[1:]:
        path.unlink()

    by_key = {(record["id"], record["rotation"]): record for record in merged}
    missing = [item.key for item in items if item.key not in by_key]
    if missing:
        raise RuntimeError(
            f"{len(missing)} work items have no prediction in {out_dir / PREDICTIONS_FILE} (first: {missing[:3]}). "
            "Run the same command again to score them."
        )
    if len(merged) > len(items):
        logger.info(
            "%s also contains %d predictions outside this run's --limit; the report leaves them out",
            out_dir, len(merged) - len(items),
        )

    predictions = [by_key[item.key] for item in items]
    failed = sum(record["prediction"] == FAILED for record in predictions)
    if failed:
        logger.warning("%d of %d work items failed; rerun the same command to retry them", failed, len(predictions))
    return _write_report(settings, out_dir, dataset, predictions)


def _write_report(
    settings: RunSettings, out_dir: Path, dataset: datasets.Dataset, predictions: list[dict[str, Any]]
) -> dict[str, Any]:
    # The report links the segmentation figure only when it exists before write_outputs runs.
    figure = plot_segmentation_examples(out_dir, dataset, predictions)
    if figure is not None:
        logger.info("Wrote %s", figure)
    results = write_outputs(
        out_dir,
        predictions,
        {**settings.to_dict(), "random_weights": has_random_weights(settings.model)},
        dataset_fingerprint(dataset),
        n_bootstrap=settings.n_bootstrap,
        seed=settings.seed,
    )
    logger.info("Report: %s", out_dir / REPORT_FILE)
    return results


def read_records(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read a predictions JSONL file, dropping a last line cut off by a crash.

    A line is complete when it ends with a newline. The last line of a file
    written by a killed process may be incomplete. It is dropped with a
    warning, and with ``repair`` the file is rewritten atomically without it.

    Args:
        path: the file; a missing file reads as empty.
        repair: rewrite the file without its incomplete last line.

    Returns:
        The records in file order.

    Raises:
        ValueError: when a complete line is not valid JSON, naming the file and line number.
    """
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    incomplete = lines.pop()

    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} line {number} is not valid JSON ({error}), so the file is damaged. "
                "Delete the line or the file to rerun those predictions."
            ) from error

    if incomplete:
        logger.warning(
            "Dropping the incomplete last line of %s (%d characters), left by an interrupted run", path, len(incomplete)
        )
        if repair:
            write_records_atomically(path, records)
    return records


def append_records(stream: Any, records: Iterable[dict[str, Any]], *, sync: bool = True) -> None:
    """Append records as JSON lines to an open text file, then flush it and, with ``sync``, fsync it."""
    stream.write("".join(json.dumps(record) + "\n" for record in records))
    stream.flush()
    if sync:
        os.fsync(stream.fileno())


class RecordWriter:
    """Append prediction records to an open file: flushed after every call, fsynced at most once per interval.

    A flushed line is in the operating system's page cache, so it survives
    the process being killed (SIGKILL included). Only a crash of the machine
    loses lines that were not fsynced yet, at most ``sync_interval`` seconds'
    worth, and a resumed run scores those again.

    Args:
        stream: the predictions file, opened for appending.
        sync_interval: the minimum time between two fsyncs, in seconds.
    """

    def __init__(self, stream: Any, sync_interval: float = SYNC_INTERVAL) -> None:
        self.stream = stream
        self.sync_interval = sync_interval
        self._last_sync = time.monotonic()

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write and flush the records, and fsync the file when the last fsync is ``sync_interval`` old."""
        due = time.monotonic() - self._last_sync >= self.sync_interval
        append_records(self.stream, records, sync=due)
        if due:
            self._last_sync = time.monotonic()

    def sync(self) -> None:
        """Fsync the file now."""
        os.fsync(self.stream.fileno())
        self._last_sync = time.monotonic()


def write_records_atomically(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace ``path`` with the given records: write a temporary file, fsync it, then rename it."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        append_records(stream, records)
    os.replace(temporary, path)


def merge_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep one record per (id, rotation): the last one that did not fail, else the last one.

    Returns:
        The kept records, in order of first appearance of their key.
    """
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records:
        key = (record["id"], record["rotation"])
        previous = kept.get(key)
        if previous is None or record["prediction"] != FAILED or previous["prediction"] == FAILED:
            kept[key] = record
    return list(kept.values())


def _finished_keys(out_dir: Path, own_file: Path, run_key: str) -> set[tuple[str, int]]:
    """Return the work items already scored in ``out_dir``; failed ones count as not finished.

    Repairs ``own_file`` (the file this process appends to) and only reads the others.

    Raises:
        ValueError: when a file contains a record of another run key.
    """
    paths = {out_dir / PREDICTIONS_FILE, own_file, *out_dir.glob(RANK_FILE_PATTERN)}
    finished = set()
    for path in sorted(paths):
        for record in read_records(path, repair=path == own_file):
            if record.get("run_key") != run_key:
                raise ValueError(
                    f"{path} contains predictions of another run with other settings (run key "
                    f"{record.get('run_key')!r}, while this run's key is {run_key!r}). Choose a new --out folder, "
                    "or delete the folder's prediction files to start over."
                )
            if record["prediction"] != FAILED:
                finished.add((record["id"], record["rotation"]))
    return finished


def has_random_weights(model: str | None) -> bool:
    """Return True for a local model folder whose model card carries the random-weights tag of :mod:`eval.tiny`."""
    if model is None:
        return False
    card = Path(model) / "README.md"
    return card.is_file() and RANDOM_WEIGHTS_TAG in card.read_text(encoding="utf-8")


def _absolute_if_local(name: str | None) -> str | None:
    if name is not None and Path(name).exists():
        return str(Path(name).resolve())
    return name
