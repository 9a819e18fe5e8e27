"""Load speed: rows per second through ``load_dataset`` against pyarrow and PIL on the same Parquet files.

Both paths read the ``train`` split of the ``all`` config of an export. For
each row they produce a dict of Python values whose ``image`` (and ``mask``
where present) is a decoded ``PIL.Image``. ``datasets`` decodes with
``PIL.Image.open`` and ``Image.load``, and the direct path does the same on
rows read with ``pyarrow.parquet``. A second pair compares batches of 64 rows
(``Dataset.iter`` against pyarrow record batches). Passes alternate and the
median counts.

Also measured: the one-time ``load_dataset`` preparation (Parquet to the Arrow
cache) and the time from ``load_dataset(..., streaming=True)`` to the first row.

Run: ``python -m bench.load_speed [--subjects 120] [--export FOLDER]``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from bench.common import (
    Figure,
    Report,
    at_most,
    base_parser,
    command_line,
    run_benchmark,
    synthetic_sources,
    work_folder,
)

TARGET_RATIO = 1.2
DEFAULT_SUBJECTS = 120
CONFIG = "all"
SPLIT = "train"
IMAGE_COLUMNS: tuple[str, ...] = ("image", "mask")


def split_files(export: Path, split: str = SPLIT) -> list[Path]:
    """Return the Parquet files of one split of the ``all`` config, in the order its card lists them."""
    from builder.export import pool_files
    from builder.mat import TRIPLETS

    files = pool_files(export)
    return [export / relative for triplet in TRIPLETS for relative in files[(triplet, split)]]


def decode(cell: dict | None) -> Image.Image | None:
    """Decode an ``Image()`` cell (``{"bytes": ..., "path": ...}``) as ``datasets`` does: open, then load."""
    if cell is None or cell["bytes"] is None:
        return None
    image = Image.open(io.BytesIO(cell["bytes"]))
    image.load()
    return image


def read_direct(files: list[Path], batch_rows: int = 64) -> int:
    """Read every row of ``files`` with pyarrow and decode its images with PIL; return the row count."""
    rows = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            for row in batch.to_pylist():
                for column in IMAGE_COLUMNS:
                    row[column] = decode(row[column])
                rows += 1
    return rows


def read_direct_batched(files: list[Path], batch_rows: int = 64) -> int:
    """Read ``files`` in column batches with pyarrow and decode their images with PIL; return the row count."""
    rows = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            columns = batch.to_pydict()
            for column in IMAGE_COLUMNS:
                columns[column] = [decode(cell) for cell in columns[column]]
            rows += batch.num_rows
    return rows


def read_datasets(dataset: object) -> int:
    """Iterate a ``datasets.Dataset`` row by row, as a training loop does; images decode on access."""
    rows = 0
    for row in dataset:
        rows += 1
        for column in IMAGE_COLUMNS:
            if row[column] is not None:
                row[column].size  # noqa: B018  (already decoded by datasets; touching it keeps the loops alike)
    return rows


def without_decoding(dataset: object) -> object:
    """Return ``dataset`` with its image columns left as PNG bytes when rows are read."""
    import datasets

    for column in IMAGE_COLUMNS:
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def read_datasets_undecoded(dataset: object) -> int:
    """Iterate a ``datasets.Dataset`` made by :func:`without_decoding` row by row."""
    rows = 0
    for _ in dataset:
        rows += 1
    return rows


def read_datasets_batched(dataset: object, batch_rows: int = 64) -> int:
    """Iterate a ``datasets.Dataset`` in batches of ``batch_rows`` with ``Dataset.iter``."""
    rows = 0
    for batch in dataset.iter(batch_size=batch_rows):
        rows += len(batch["id"])
    return rows


def timed(function: Callable[[], int]) -> tuple[float, int]:
    """Return the wall time in seconds and the result of ``function()``."""
    start = time.perf_counter()
    count = function()
    return time.perf_counter() - start, count


def run(args: argparse.Namespace) -> Report:
    """Build or take an export, then time the loaders on its ``all`` train split."""
    report = Report("Load speed (all config, train split)", command_line("bench.load_speed"))
    with work_folder(args.work) as work:
        export = args.export or _build_export(work, args.subjects)
        files = split_files(export)
        torch_loaded = "torch" in sys.modules
        first_row = _time_to_first_row(export)
        first_row_again = _time_to_first_row(export)

        # A new cache folder each run, so that the preparation is measured, not a cache hit.
        with tempfile.TemporaryDirectory(prefix="load-cache-", dir=work) as cache:
            prepare, dataset = _timed_load(export, Path(cache))
            read_direct(files[:1])
            undecoded_dataset = without_decoding(dataset)
            direct, loaded, undecoded, direct_batched, batched = [], [], [], [], []
            for _ in range(args.repeats):
                direct.append(timed(lambda: read_direct(files)))
                loaded.append(timed(lambda: read_datasets(dataset)))
                undecoded.append(timed(lambda: read_datasets_undecoded(undecoded_dataset)))
                direct_batched.append(timed(lambda: read_direct_batched(files)))
                batched.append(timed(lambda: read_datasets_batched(dataset)))

    rows = direct[0][1]
    if loaded[0][1] != rows:
        raise RuntimeError(
            f"load_dataset gave {loaded[0][1]} rows and pyarrow {rows}: the benchmark reads different data"
        )
    seconds = {
        name: statistics.median(t for t, _ in runs)
        for name, runs in (
            ("direct", direct),
            ("rows", loaded),
            ("undecoded", undecoded),
            ("direct batched", direct_batched),
            ("batched", batched),
        )
    }
    report.figures.append(
        at_most(
            "load_dataset row iteration / pyarrow + PIL",
            seconds["rows"] / seconds["direct"],
            TARGET_RATIO,
            note=f"median of {args.repeats}: {seconds['rows']:.2f} s against {seconds['direct']:.2f} s, {rows} rows",
        )
    )
    report.figures.append(
        Figure(
            "load_dataset Dataset.iter(batch_size=64) / pyarrow batches + PIL",
            seconds["batched"] / seconds["direct batched"],
            "x",
            note=f"{seconds['batched']:.2f} s against {seconds['direct batched']:.2f} s",
        )
    )
    report.figures.append(
        Figure(
            "load_dataset row iteration, images not decoded, per row",
            seconds["undecoded"] / rows * 1000,
            "ms",
            note=f"{seconds['undecoded']:.2f} s for {rows} rows: the formatting that datasets does for each row",
        )
    )
    report.figures.append(Figure("load_dataset rows/s, images decoded", rows / seconds["rows"], "rows/s"))
    report.figures.append(Figure("pyarrow + PIL rows/s, images decoded", rows / seconds["direct"], "rows/s"))
    report.figures.append(
        Figure(
            "first load_dataset (Parquet to Arrow cache) / one direct pass",
            prepare / seconds["direct"],
            "x",
            note=f"{prepare:.2f} s, once per cache folder",
        )
    )
    cold_note = "first call in the process" + ("" if torch_loaded else "; includes datasets importing torch")
    report.figures.append(Figure("streaming: time to first row, first call", first_row, "s", note=cold_note))
    report.figures.append(
        Figure(
            "streaming: time to first row, repeated call",
            first_row_again,
            "s",
            note="load_dataset(streaming=True) to next()",
        )
    )
    report.details.append(f"export: {export} ({len(files)} Parquet files in the split)")
    return report


def _build_export(work: Path, subjects: int) -> Path:
    from builder.build import build_and_export

    export = work / f"export-{subjects}"
    if not (export / "README.md").is_file():
        build_and_export(synthetic_sources(work, subjects), export, overwrite=True)
    return export


def _timed_load(export: Path, cache: Path) -> tuple[float, object]:
    import datasets

    start = time.perf_counter()
    dataset = datasets.load_dataset(str(export), CONFIG, split=SPLIT, cache_dir=str(cache))
    return time.perf_counter() - start, dataset


def _time_to_first_row(export: Path) -> float:
    import datasets

    start = time.perf_counter()
    stream = datasets.load_dataset(str(export), CONFIG, split=SPLIT, streaming=True)
    next(iter(stream))
    return time.perf_counter() - start


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this benchmark."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--subjects", type=int, default=DEFAULT_SUBJECTS, help="synthetic subjects per source (default 120)"
    )
    parser.add_argument("--export", type=Path, default=None, help="an existing export folder to read instead")
    parser.add_argument("--repeats", type=int, default=3, help="passes of each reader, alternating (default 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the machine, the command and the figures."""
    return run_benchmark(parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
