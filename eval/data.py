"""Load a built CrossMed split and feed its questions to the model in batches.

The question table (every column but the images) is read once in the main
process. Images are decoded from PNG, and batches encoded by the model's
processor, inside ``DataLoader`` worker processes (``num_workers`` above 0),
so the model does not wait on either. A work item is one question shown at
one rotation of its options, and circular evaluation gives each question four
work items.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import torch
from PIL import Image

from eval.dataset_card import resolve_from_card
from eval.locations import DATASET_EXPECTED, check_folder_exists
from eval.prompts import NUM_OPTIONS, format_prompt, rotate_options

logger = logging.getLogger(__name__)

IMAGE_COLUMNS: tuple[str, ...] = ("image", "mask")


@dataclass(frozen=True)
class WorkItem:
    """One question at one rotation of its options.

    Attributes:
        index: the row index in the loaded split.
        question_id: the row's ``id``.
        rotation: 0 shows the options as stored; ``r`` shifts them left by ``r``.
    """

    index: int
    question_id: str
    rotation: int

    @property
    def key(self) -> tuple[str, int]:
        """The (question id, rotation) pair that identifies a prediction record."""
        return (self.question_id, self.rotation)


@dataclass
class PreparedItem:
    """A work item ready for the model: prompt text and decoded image.

    Attributes:
        work: the work item.
        options: the four option texts in displayed order.
        prompt: the prompt text from :func:`eval.prompts.format_prompt`.
        image: the image as an RGB PIL image, or None in blind runs.
    """

    work: WorkItem
    options: list[str]
    prompt: str
    image: Image.Image | None


def load_split(dataset: str, config: str | None, split: str, *, cache_dir: str | None = None) -> datasets.Dataset:
    """Load one split of a built CrossMed config.

    Args:
        dataset: a local folder in the Hub layout (Parquet files and a README
            with ``configs:`` YAML) or a Hub dataset id.
        config: the config name, e.g. ``"unrelated"``; None for the default config.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        cache_dir: the ``datasets`` cache folder; None for its default.

    Returns:
        The split as a ``datasets.Dataset``.

    Raises:
        FileNotFoundError: when ``dataset`` is written as a path and the folder does not exist.
        ValueError: when the config has no such split, or the split has no rows.
    """
    check_folder_exists(
        dataset, kind="Dataset", expected=DATASET_EXPECTED
    )
    if Path(dataset).is_dir():
        loaded = _load_local_split(dataset, config, split, cache_dir)
    else:
        loaded = datasets.load_dataset(dataset, config, split=split, cache_dir=cache_dir)

    if len(loaded) == 0:
        raise ValueError(f"Split {split!r} of config {config!r} in {dataset} has no rows, so there is nothing to score.")
    logger.info("Loaded %d questions from %s (config %s, split %s)", len(loaded), dataset, config, split)
    return loaded


def _load_local_split(folder: str, config: str | None, split: str, cache_dir: str | None) -> datasets.Dataset:
    """Load a split of a local folder through its data files, so that a rebuilt folder is read again.

    ``load_dataset(folder, config)`` in datasets 5.2 caches a local folder
    under a key that ignores the files' modification times, so it returns the
    old rows after the folder is rebuilt in place. Loading the resolved data
    files with the folder's packaged builder (``parquet``) keys the cache by
    path and modification time. The files are read from the README header
    by :func:`eval.dataset_card.resolve_from_card` where its layout allows,
    else through ``load_dataset_builder``.
    """
    resolved = resolve_from_card(folder, config, split)
    if resolved is not None:
        module, files, features = "parquet", resolved.files, resolved.features
    else:
        builder = datasets.load_dataset_builder(folder, config, cache_dir=cache_dir)
        data_files = builder.config.data_files or {}
        if split not in data_files:
            raise ValueError(
                f"Config {builder.config.name!r} in {folder} has no split {split!r}; "
                f"its splits are {sorted(data_files)}."
            )
        module, files, features = builder.name, list(data_files[split]), builder.info.features
    return datasets.load_dataset(
        module, data_files={split: files}, split=split, features=features, cache_dir=cache_dir
    )


def dataset_fingerprint(dataset: datasets.Dataset) -> str:
    """Return a SHA-256 of the split's content for results.json.

    The hash covers the bytes of the Arrow cache files the split was read
    from, which are the same for the same rows. An in-memory split without
    cache files gets its ``datasets`` fingerprint instead, which names the
    transformations applied but not the content.

    Note:
        Reading the files costs about one pass over the split's images.
    """
    if not dataset.cache_files:
        return f"datasets-fingerprint:{dataset._fingerprint}"

    digest = hashlib.sha256()
    for cache_file in dataset.cache_files:
        with open(cache_file["filename"], "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def load_question_table(dataset: datasets.Dataset) -> list[dict[str, Any]]:
    """Read every row without its images, with class names in place of class ids.

    Returns:
        One dict per row, in dataset order.

    Raises:
        ValueError: when a question id repeats or a row does not have four options.
    """
    columns = [name for name in IMAGE_COLUMNS if name in dataset.column_names]
    table_dataset = dataset.remove_columns(columns)
    # to_list converts whole Arrow columns at once, where iterating over rows formats each row alone.
    table = table_dataset.to_list()
    for name, feature in table_dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            for row in table:
                if row[name] is not None:
                    row[name] = feature.int2str(row[name])

    seen: set[str] = set()
    for row in table:
        if row["id"] in seen:
            raise ValueError(f"Question id {row['id']!r} appears twice; predictions are keyed by id.")
        seen.add(row["id"])
        if len(row["options"]) != NUM_OPTIONS:
            raise ValueError(f"Question {row['id']!r} has {len(row['options'])} options; expected {NUM_OPTIONS}.")
    return table


def make_work_items(table: Sequence[dict[str, Any]], *, circular: bool, limit: int | None = None) -> list[WorkItem]:
    """List the work items of a run, question by question.

    Args:
        table: the question table from :func:`load_question_table`.
        circular: when True each question is shown at rotations 0 to 3, else at 0 only.
        limit: evaluate only the first ``limit`` questions; None for all.

    Returns:
        The work items, in dataset order and rotation order within a question.
    """
    rotations = range(NUM_OPTIONS) if circular else range(1)
    rows = table if limit is None else table[:limit]
    return [WorkItem(index, row["id"], rotation) for index, row in enumerate(rows) for rotation in rotations]


def shard_items(items: Sequence[WorkItem], rank: int, world_size: int) -> list[WorkItem]:
    """Return the work items of one process: every ``world_size``-th item from ``rank``.

    Striding keeps the shards the same for a given process count, whatever has
    already been finished, so resumed processes never take each other's items.
    """
    return list(items[rank::world_size])


class QuestionDataset(torch.utils.data.Dataset):
    """A map-style torch dataset of prepared work items; images decode in ``__getitem__``.

    The rotations of a question in a circular run are consecutive work items,
    so the last decoded image is kept and its PNG is decoded once per process
    that serves them.

    Args:
        images: the split restricted to its ``image`` column, or None in blind runs.
        table: the question table.
        items: the work items to serve, in order.
    """

    def __init__(
        self, images: datasets.Dataset | None, table: Sequence[dict[str, Any]], items: Sequence[WorkItem]
    ) -> None:
        self.images = images
        self.table = table
        self.items = list(items)
        self._last_image: tuple[int, Image.Image] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> PreparedItem:
        work = self.items[position]
        row = self.table[work.index]
        options = rotate_options(row["options"], work.rotation)
        image = None if self.images is None else self._image(self.images, work, row)
        return PreparedItem(work=work, options=options, prompt=format_prompt(row["question"], options), image=image)

    def with_images(self, items: Sequence[PreparedItem]) -> list[PreparedItem]:
        """Return the items with their images decoded again where the loader left them out."""
        images = self.images
        if images is None:
            return list(items)
        restored = []
        for item in items:
            if item.image is None:
                item = replace(item, image=self._image(images, item.work, self.table[item.work.index]))
            restored.append(item)
        return restored

    def _image(self, images: datasets.Dataset, work: WorkItem, row: dict[str, Any]) -> Image.Image:
        if self._last_image is not None and self._last_image[0] == work.index:
            return self._last_image[1]
        image = images[work.index]["image"]
        if image is None:
            raise ValueError(
                f"Question {work.question_id!r} (source {row['source']}) has no image, as in published rows "
                "whose source terms forbid sharing pixels. Rebuild the dataset from your copy of the source "
                "with the CrossMed builder, or score it with --blind."
            )
        # convert() forces PIL's lazy decoding here, in the worker process.
        image = image.convert("RGB")
        self._last_image = (work.index, image)
        return image


BatchEncoder = Callable[[list[PreparedItem]], Any]
"""Turns a batch of prepared items into model inputs on the CPU, or None when it cannot."""


@dataclass
class PreparedBatch:
    """One batch from the loader.

    Attributes:
        items: the prepared items, in work-item order. When ``inputs`` is set
            their images are left out, because the inputs already contain the
            pixels; :meth:`QuestionDataset.with_images` decodes them again.
        inputs: the encoder's output for all of ``items`` (for a transformers
            model, the processor's outputs as NumPy arrays), or None without an
            encoder or when the encoder returned None.
    """

    items: list[PreparedItem]
    inputs: Any | None = None


def collate_batch(items: list[PreparedItem], encoder: BatchEncoder | None = None) -> PreparedBatch:
    """Wrap the items of a batch and run ``encoder`` on them; the loader's ``collate_fn``."""
    inputs = None if encoder is None else encoder(items)
    if inputs is None:
        return PreparedBatch(items)
    # Sending the images back to the main process as well would only cost time there.
    return PreparedBatch([replace(item, image=None) for item in items], inputs)


def make_loader(
    dataset: datasets.Dataset,
    table: Sequence[dict[str, Any]],
    items: Sequence[WorkItem],
    *,
    blind: bool,
    batch_size: int,
    num_workers: int,
    encoder: BatchEncoder | None = None,
) -> torch.utils.data.DataLoader:
    """Return a DataLoader that yields a :class:`PreparedBatch` per ``batch_size`` work items, in order.

    With ``num_workers`` above 0, worker processes decode the images and run
    ``encoder`` while the main process runs the model, each keeping up to two
    batches ready (the DataLoader's default ``prefetch_factor``).

    Args:
        dataset: the loaded split.
        table: its question table.
        items: the work items to run.
        blind: when True no image is decoded.
        batch_size: items per batch.
        num_workers: worker processes preparing batches; 0 prepares them in the main process.
        encoder: run on each batch where it is prepared, e.g. the model's
            processor; None leaves ``inputs`` empty.

    Returns:
        The DataLoader.
    """
    images = None if blind else dataset.select_columns(["image"])
    return torch.utils.data.DataLoader(
        QuestionDataset(images, table, items),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=partial(collate_batch, encoder=encoder),
        worker_init_fn=_init_worker if num_workers > 0 else None,
    )


def _init_worker(worker_id: int) -> None:
    # A worker encodes one small batch at a time, so the tokenizer's own thread pool would only compete
    # with the model for cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
