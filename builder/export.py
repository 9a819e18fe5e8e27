"""Export a build to a folder laid out as a Hugging Face dataset repository.

The folder holds each (triplet, pool split) once, as Parquet under
``data/<triplet slug>/<split>-NNNNN-of-NNNNN.parquet``, a README card whose
``configs:`` YAML lists, for every config and split, the files it selects, and
``dataset_infos.json``. It never contains ``crossmed.py``: ``load_dataset``
rejects a folder holding a script named after it.

The export is written to a temporary sibling folder and renamed into place at
the end, so an interrupted export leaves no folder that looks complete.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.utils.py_utils import asdict
from huggingface_hub import DatasetCardData
from tqdm.auto import tqdm

from builder.arrow_size import contiguous_nbytes
from builder.card import CITATION, DESCRIPTION, HOMEPAGE, LICENSE, card_body
from builder.features import crossmed_features
from builder.mat import SOURCES, TRIPLETS, Triplet
from builder.protocols import Protocol, all_protocols
from builder.splits import POOL_SPLITS

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

# The Hub viewer reads one Parquet row group at a time; groups above this size are not shown.
ROW_GROUP_BUDGET_BYTES = 100 * 1024 * 1024
MAX_SHARD_BYTES = 500 * 1024 * 1024

TASK_CATEGORIES = ["visual-question-answering", "image-text-to-text"]
TAGS = ["medical", "radiology", "compositional-generalization", "multiple-choice", "vqa"]


def pool_files(out_dir: Path) -> dict[tuple[Triplet, str], list[str]]:
    """Return the Parquet files of each (triplet, pool split) under an export folder, relative to it."""
    files = {}
    for triplet in TRIPLETS:
        for split in POOL_SPLITS:
            found = sorted((out_dir / "data" / triplet.slug).glob(f"{split}-*.parquet"))
            files[(triplet, split)] = [path.relative_to(out_dir).as_posix() for path in found]
    return files


@dataclass(frozen=True)
class PartJob:
    """One (triplet, pool split) to write: its row numbers in the split and an estimate of its bytes."""

    split: str
    triplet_index: int
    rows: np.ndarray
    weight: int


def write_pool_parquet(
    pool: Mapping[str, datasets.Dataset],
    out_dir: Path,
    ship_pixels: Mapping[str, bool] | None = None,
    num_proc: int | None = None,
) -> dict[tuple[Triplet, str], tuple[int, int]]:
    """Write every (triplet, pool split) of the ``all`` build once, as Parquet with embedded PNG bytes.

    Args:
        pool: The pool splits of the ``all`` config, keyed by split name.
        out_dir: The export folder being written.
        ship_pixels: Per source, False to drop ``image`` and ``mask`` bytes (rows keep ``source_file``).
        num_proc: Processes that write parts at the same time (None or 1: this process alone).
            One process writes all the files of a part, so the files are the same for any ``num_proc``.

    Returns:
        ``(rows, bytes)`` of each (triplet, pool split), in the order of
        :data:`POOL_SPLITS` and then :data:`TRIPLETS`.
    """
    pool = {split: _drop_pixels(dataset, ship_pixels or {}) for split, dataset in pool.items()}
    jobs = plan_parts(pool)
    written: dict[tuple[int, str], tuple[int, int]] = {}
    for job in jobs:
        if not len(job.rows):
            # load_dataset rejects a split whose files hold no rows, so an empty part gets no file
            # and configs leave out splits that select nothing.
            logger.warning(
                "No %s rows for %s; the configs that select it leave it out",
                job.split,
                TRIPLETS[job.triplet_index].slug,
            )
            written[(job.triplet_index, job.split)] = (0, 0)
    # Largest parts first, so that with several processes the last part to finish is a small one.
    pending = sorted((job for job in jobs if len(job.rows)), key=lambda job: job.weight, reverse=True)

    with _datasets_bars_hidden(), tqdm(total=len(pending), desc="Writing Parquet", unit="part") as bar:
        for key, size in _write_parts(pool, pending, out_dir, num_proc):
            written[key] = size
            bar.update()
    return {(TRIPLETS[job.triplet_index], job.split): written[(job.triplet_index, job.split)] for job in jobs}


def plan_parts(pool: Mapping[str, datasets.Dataset]) -> list[PartJob]:
    """Return one job per (pool split, triplet), with the rows it selects and its image and mask bytes."""
    jobs = []
    for split, dataset in pool.items():
        if "triplet" not in dataset.column_names:
            raise ValueError(
                f"The {split} split to export has no 'triplet' column (columns: {', '.join(dataset.column_names)}). "
                "Export the splits of a CrossMed 'all' build, which have every column of builder.features."
            )
        columns = [name for name in ("triplet", "image", "mask") if name in dataset.column_names]
        table = dataset.with_format("arrow", columns=columns)[:]
        triplet_ids = np.asarray(table.column("triplet").to_numpy(), dtype=np.int64)
        row_bytes = _pixel_bytes(table)
        for triplet_index in range(len(TRIPLETS)):
            rows = np.flatnonzero(triplet_ids == triplet_index)
            weight = int(row_bytes[rows].sum()) + len(rows)
            jobs.append(PartJob(split, triplet_index, rows, weight))
    return jobs


def _pixel_bytes(table: pa.Table) -> np.ndarray:
    """Return the PNG bytes of ``image`` and ``mask`` in each row (0 where there is none)."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for name in ("image", "mask"):
        if name not in table.column_names:
            continue
        lengths = pc.binary_length(pc.struct_field(table.column(name), "bytes"))
        total += np.asarray(lengths.fill_null(0).to_numpy(), dtype=np.int64)
    return total


def _write_parts(
    pool: Mapping[str, datasets.Dataset], jobs: list[PartJob], out_dir: Path, num_proc: int | None
) -> Iterator[tuple[tuple[int, str], tuple[int, int]]]:
    """Write each job's part, in this process or in ``num_proc`` processes, yielding sizes as parts finish."""
    processes = min(num_proc or 1, len(jobs))
    if processes <= 1:
        for job in jobs:
            yield _write_part(pool[job.split], job, out_dir)
        return

    context = multiprocessing.get_context()
    with context.Pool(processes, initializer=_start_writer, initargs=(dict(pool),)) as workers:
        yield from workers.imap_unordered(functools.partial(_write_part_in_worker, out_dir=out_dir), jobs)


_WORKER_POOL: Mapping[str, datasets.Dataset] = {}


def _start_writer(pool: Mapping[str, datasets.Dataset]) -> None:
    """Keep the pool splits in a writer process, so that each job sends only its row numbers."""
    global _WORKER_POOL
    _WORKER_POOL = pool
    datasets.disable_progress_bars()


def _write_part_in_worker(job: PartJob, out_dir: Path) -> tuple[tuple[int, str], tuple[int, int]]:
    return _write_part(_WORKER_POOL[job.split], job, out_dir)


def _write_part(dataset: datasets.Dataset, job: PartJob, out_dir: Path) -> tuple[tuple[int, str], tuple[int, int]]:
    """Write one part's shards and return its key and ``(rows, bytes)``."""
    folder = out_dir / "data" / TRIPLETS[job.triplet_index].slug
    folder.mkdir(parents=True, exist_ok=True)
    # After a select, subset.data is still the whole split's table. Flattening keeps only this part's rows,
    # so that the sizes below (shards, row groups, num_bytes) are this part's own.
    subset = dataset.select(job.rows).flatten_indices()
    nbytes = contiguous_nbytes(subset.data.table)

    shards = max(1, math.ceil(nbytes / MAX_SHARD_BYTES))
    rows_per_group = rows_per_row_group(nbytes, subset.num_rows)
    for index in range(shards):
        shard = subset if shards == 1 else subset.shard(shards, index, contiguous=True)
        shard.to_parquet(str(folder / f"{job.split}-{index:05d}-of-{shards:05d}.parquet"), batch_size=rows_per_group)
    return (job.triplet_index, job.split), (subset.num_rows, nbytes)


@contextmanager
def _datasets_bars_hidden() -> Iterator[None]:
    """Hide the per-file progress bars of ``datasets`` while the export shows one bar over all parts."""
    if datasets.are_progress_bars_disabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


def _drop_pixels(dataset: datasets.Dataset, ship_pixels: Mapping[str, bool]) -> datasets.Dataset:
    hidden = {SOURCES.index(source) for source, shipped in ship_pixels.items() if not shipped}
    if not hidden:
        return dataset

    def blank(row: dict) -> dict:
        if row["source"] in hidden:
            row["image"] = None
            row["mask"] = None
        return row

    features = dataset.features.copy()
    features["image"] = datasets.Image(decode=False)
    features["mask"] = datasets.Image(decode=False)
    return dataset.cast(features).map(blank, features=features).cast(crossmed_features())


def rows_per_row_group(nbytes: int, num_rows: int) -> int:
    """Return the rows per Parquet row group: at most half the viewer budget in bytes, and at most 1000 rows."""
    row_bytes = max(1, nbytes // max(1, num_rows))
    return max(1, min(1000, ROW_GROUP_BUDGET_BYTES // 2 // row_bytes))


def config_infos(
    protocols: list[Protocol], sizes: Mapping[tuple[Triplet, str], tuple[int, int]]
) -> dict[str, datasets.DatasetInfo]:
    """Return the DatasetInfo of every config, with split sizes summed from the pool parts it selects."""
    infos = {}
    for protocol in protocols:
        splits = datasets.SplitDict()
        for split in POOL_SPLITS:
            parts = [sizes.get((triplet, split), (0, 0)) for triplet in protocol.split_triplets(split)]
            rows, nbytes = sum(part[0] for part in parts), sum(part[1] for part in parts)
            if rows:
                splits.add(datasets.SplitInfo(name=split, num_examples=rows, num_bytes=nbytes))
        if not splits:
            logger.warning("Config %s selects no rows and is left out of the export", protocol.name)
            continue
        infos[protocol.name] = datasets.DatasetInfo(
            description=DESCRIPTION,
            features=crossmed_features(),
            citation=CITATION,
            homepage=HOMEPAGE,
            license=LICENSE,
            config_name=protocol.name,
            splits=splits,
            dataset_size=sum(info.num_bytes for info in splits.values()),
        )
    return infos


def write_card(
    out_dir: Path,
    protocols: list[Protocol],
    infos: Mapping[str, datasets.DatasetInfo],
    ship_pixels: Mapping[str, bool] | None = None,
    changelog: str = "",
    gated: bool = False,
    synthetic: bool = False,
) -> None:
    """Write README.md (YAML header with configs and dataset_info, then the card text) and dataset_infos.json."""
    files = pool_files(out_dir)
    card_data = DatasetCardData(
        license=LICENSE,
        license_name="crossmed-source-terms",
        license_link="LICENSE",
        task_categories=TASK_CATEGORIES,
        tags=TAGS,
        pretty_name="CrossMed",
        language=["en"],
    )
    if gated:
        card_data["extra_gated_prompt"] = (
            "You agree to follow the terms of each source dataset listed in this card (non-commercial research use)."
        )

    card_data["configs"] = [
        {
            "config_name": protocol.name,
            **({"default": True} if protocol.name == "unrelated" else {}),
            "data_files": [
                {"split": split, "path": paths}
                for split in POOL_SPLITS
                if (paths := [path for triplet in protocol.split_triplets(split) for path in files[(triplet, split)]])
            ],
        }
        for protocol in protocols
        if protocol.name in infos
    ]
    datasets.info.DatasetInfosDict(infos).to_dataset_card_data(card_data)

    exported = [protocol for protocol in protocols if protocol.name in infos]
    body = card_body(REPO_ROOT / "README.md", exported, ship_pixels or {}, changelog, synthetic)
    # DatasetCard(text).save() would parse this YAML and dump it again, which returns the same
    # text for this card and costs about 0.2 s per export, so the text is written as it is.
    card_text = f"---\n{card_data.to_yaml()}\n---\n\n{body}"
    (out_dir / "README.md").write_text(card_text, encoding="utf-8", newline="")
    (out_dir / "LICENSE").write_text(_license_text(), encoding="utf-8")
    with (out_dir / "dataset_infos.json").open("w", encoding="utf-8") as stream:
        json.dump({name: asdict(info) for name, info in infos.items()}, stream, indent=2)


def _license_text() -> str:
    from builder.card import SOURCE_INFO

    lines = ["CrossMed rows are derived from four sources, each under its own terms:", ""]
    lines += [f"- {info['title']}: {info['terms']} ({info['url']})" for info in SOURCE_INFO.values()]
    return "\n".join(lines) + "\n"


def export_pool(
    pool: Mapping[str, datasets.Dataset],
    out_dir: Path,
    ship_pixels: Mapping[str, bool] | None = None,
    overwrite: bool = False,
    changelog: str = "",
    gated: bool = False,
    build_settings: object | None = None,
    synthetic: bool = False,
    num_proc: int | None = None,
) -> Path:
    """Write the export folder atomically from the pool splits of an ``all`` build.

    ``build_settings`` (a ``builder.restore.BuildSettings``) is stored as
    ``crossmed_build.json``, so that users who hold a source can rebuild rows
    exported without pixels. ``num_proc`` processes write the Parquet parts at
    the same time, and the files are the same with any number.

    Raises:
        FileExistsError: when ``out_dir`` exists and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"Export folder {out_dir} already exists; pass --overwrite to replace it")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{_owner_tag()}~", dir=out_dir.parent))
    try:
        protocols = all_protocols()
        sizes = write_pool_parquet(pool, staging, ship_pixels, num_proc)
        infos = config_infos(protocols, sizes)
        write_card(staging, protocols, infos, ship_pixels, changelog, gated, synthetic)
        if build_settings is not None:
            from builder.restore import write_build_settings

            write_build_settings(staging, build_settings)
        _apply_umask(staging)
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    remove_stale_staging(out_dir)
    logger.info("Exported %d of %d configs to %s", len(infos), len(protocols), out_dir)
    return out_dir


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Delete the staging folders of ``out_dir`` that killed exports on this host left behind.

    An export writes ``.<name>.partial-<pid>-<host>~*`` next to ``out_dir`` and,
    while it swaps folders, ``.<name>.previous-<pid>-<host>~``. A process killed
    in between (SIGKILL, power loss) leaves them. A folder is stale when
    ``<host>`` is this host and no process ``<pid>`` runs. Folders of other hosts
    sharing the file system and of running processes are kept, and on Windows
    every folder is kept.

    Returns:
        The folders deleted.
    """
    host = re.escape(socket.gethostname())
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.(?:partial|previous)-(\d+)-{host}~.*")
    removed = []
    for path in sorted(out_dir.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match is None or not path.is_dir() or _process_running(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        logger.info("Removed %s, left by an interrupted export (process %s)", path, match.group(1))
        removed.append(path)
    return removed


def _owner_tag() -> str:
    """Return ``<pid>-<host>``, which names the staging folders of this process."""
    return f"{os.getpid()}-{socket.gethostname()}"


def _process_running(pid: int) -> bool:
    if os.name == "nt":
        # On Windows os.kill(pid, 0) terminates the process, so every folder counts as in use.
        return True
    try:
        # Signal 0 checks that the process exists without signalling it.
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The process exists but belongs to another user.
        return True
    return True


def _apply_umask(folder: Path) -> None:
    """Give the staging folder the permissions of a folder made with mkdir; mkdtemp makes it private (0700)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def replace_folder(staging: Path, out_dir: Path) -> None:
    """Move ``staging`` to ``out_dir``; an existing ``out_dir`` is removed only after the move succeeded."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    previous = out_dir.with_name(f".{out_dir.name}.previous-{_owner_tag()}~")
    os.replace(out_dir, previous)
    os.replace(staging, out_dir)
    shutil.rmtree(previous, ignore_errors=True)
