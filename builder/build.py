"""Build every config from the sources and export the Hub-layout folder."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError

from builder.export import export_pool, pool_files
from builder.mat import TRIPLETS
from builder.policy import BadInputError, BadInputLog
from builder.protocols import Protocol, all_protocols
from builder.restore import BuildSettings
from builder.splits import POOL_SPLITS
from builder.synthetic import SYNTHETIC_MARKER

logger = logging.getLogger(__name__)

BUILD_SETTING_FIELDS = {item.name for item in fields(BuildSettings)} - {"ship_pixels"}


@dataclass
class BuildResult:
    """The result of a build: the export folder, the row counts and the skipped inputs."""

    out_dir: Path
    pool_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    skipped: BadInputLog = field(default_factory=lambda: BadInputLog("skip"))


def build_and_export(
    data_dir: Path,
    out_dir: Path,
    *,
    num_proc: int | None = None,
    overwrite: bool = False,
    ship_pixels: Mapping[str, bool] | None = None,
    cache_dir: Path | None = None,
    **config_kwargs: object,
) -> BuildResult:
    """Build the ``all`` config from ``data_dir`` and export every config to ``out_dir``.

    Every (triplet, pool split) is generated once; the other configs only select
    files, so building ``all`` is enough.

    Args:
        data_dir: The folder with one subfolder per source.
        out_dir: The export folder to write.
        num_proc: Worker processes that each decode and write one block of cases, and then write
            Parquet parts of the export; None or 1 for one process.
        overwrite: Replace an existing ``out_dir``.
        ship_pixels: Per source, False to export rows without image bytes.
        cache_dir: Where ``datasets`` writes its Arrow cache; a temporary folder by default.
        config_kwargs: Fields of ``CrossMedConfig`` (seed, caps, on_bad_input, max_side, ...).
    """
    from crossmed import MANUAL_DOWNLOAD_INSTRUCTIONS, CrossMed

    if Path(out_dir).exists() and not overwrite:
        raise FileExistsError(f"Export folder {out_dir} already exists; pass --overwrite to replace it")
    # Checked here too, so that the message does not name the internal "all" config that the builder would.
    if not Path(data_dir).expanduser().is_dir():
        raise FileNotFoundError(f"Source folder {data_dir} not found.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")

    with tempfile.TemporaryDirectory(prefix="crossmed-cache-") as temporary:
        builder = CrossMed(
            config_name="all", data_dir=str(data_dir), cache_dir=str(cache_dir or temporary), **config_kwargs
        )
        try:
            builder.download_and_prepare(num_proc=num_proc)
        except DatasetGenerationError as error:
            _raise_bad_input(error)
            raise
        pool = {split: _pool_split(builder, split) for split in POOL_SPLITS}
        settings = BuildSettings(
            **{name: value for name, value in config_kwargs.items() if name in BUILD_SETTING_FIELDS},
            ship_pixels=dict(ship_pixels or {}),
        )
        synthetic = (Path(data_dir) / SYNTHETIC_MARKER).is_file()
        export_pool(
            pool,
            out_dir,
            ship_pixels=ship_pixels,
            overwrite=overwrite,
            build_settings=settings,
            synthetic=synthetic,
            num_proc=num_proc,
        )
        counts = {
            (TRIPLETS[triplet_id].name, split): count
            for split, dataset in pool.items()
            for triplet_id, count in _count_values(dataset["triplet"]).items()
        }
        skipped = builder.skipped_inputs()
        del pool, builder
    return BuildResult(Path(out_dir), counts, skipped)


def _raise_bad_input(error: DatasetGenerationError) -> None:
    """Raise the BadInputError that ``datasets`` wrapped in ``error``, so the last traceback line names the file.

    Errors of worker processes arrive here as BadInputError too, because the
    decoding pool rebuilds them in the main process.
    """
    cause = error.__cause__
    if isinstance(cause, BadInputError):
        raise BadInputError(cause.path, cause.reason) from error


def _pool_split(builder: datasets.DatasetBuilder, split: str) -> datasets.Dataset:
    """Return one pool split, empty when the build produced no row for it.

    ``as_dataset`` raises "corresponds to no data" for a split without rows,
    which a subset of sources or skipped inputs can leave behind.
    """
    if not builder.info.splits[split].num_examples:
        features = builder.info.features
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    return builder.as_dataset(split=split)


def _count_values(values: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def count_table(pool_counts: Mapping[tuple[str, str], int], protocols: list[Protocol] | None = None) -> str:
    """Return a plain-text table of questions per config, split and triplet."""
    protocols = protocols or all_protocols()
    header = f"{'config':<42} {'split':<11} {'triplet':<28} {'questions':>9}"
    lines = [header, "-" * len(header)]
    for protocol in protocols:
        for split in POOL_SPLITS:
            for triplet in protocol.split_triplets(split):
                count = pool_counts.get((triplet.name, split), 0)
                lines.append(f"{protocol.name:<42} {split:<11} {triplet.name:<28} {count:>9}")
    return "\n".join(lines)


def pool_summary(pool_counts: Mapping[tuple[str, str], int]) -> str:
    """Return one line per triplet with its questions per pool split."""
    lines = []
    for triplet in TRIPLETS:
        parts = ", ".join(f"{split} {pool_counts.get((triplet.name, split), 0)}" for split in POOL_SPLITS)
        lines.append(f"{triplet.name}: {parts}")
    return "\n".join(lines)


__all__ = ["BuildResult", "build_and_export", "count_table", "pool_files", "pool_summary"]
