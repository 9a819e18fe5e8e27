"""Check an export folder before it is published to the Hub.

:func:`validate_export` runs every check and collects the problems, so a
maintainer sees all of them at once. The checks:

- layout: ``README.md``, ``dataset_infos.json`` and ``LICENSE`` exist, and no
  ``.py`` file is present (``load_dataset`` rejects a repo holding a script
  named after it);
- card: it parses with ``huggingface_hub.DatasetCard`` and carries ``license``,
  ``task_categories``, ``tags``, ``configs``, ``dataset_info``, the CrossMed
  citation and each source's terms and citation;
- infos: the configs, features and split counts of ``dataset_infos.json`` equal
  those of the card YAML and the CrossMed features;
- files: every file a config lists exists, and every Parquet file is listed by
  some config;
- row groups: each Parquet row group's uncompressed size
  (``row_group(i).total_byte_size``) is within the budget, because the Hub
  viewer reads one row group at a time;
- pixels: ``image`` and ``mask`` hold PNG bytes, never paths, and rows without
  pixels belong to a source that the build settings mark as shipped without them;
- counts and ids: the Parquet row counts of each config split equal the
  infos, and no id repeats within a config split;
- loading: every config loads with ``datasets.load_dataset`` with and without
  streaming, with the expected features, counts and ids unique per split.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard

from builder.card import CITATION, SOURCE_INFO
from builder.export import ROW_GROUP_BUDGET_BYTES
from builder.features import crossmed_features
from builder.restore import BuildSettings, read_build_settings

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_COLUMNS: tuple[str, ...] = ("image", "mask")
REQUIRED_FILES: tuple[str, ...] = ("README.md", "dataset_infos.json", "LICENSE")
CARD_FIELDS: tuple[str, ...] = ("license", "task_categories", "tags", "configs", "dataset_info")

# Errors that load_dataset raises for a folder it cannot read. Each becomes a reported problem instead of stopping the checks.
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    datasets.exceptions.DatasetGenerationError,
    datasets.exceptions.DataFilesNotFoundError,
    datasets.exceptions.ExpectedMoreSplitsError,
    datasets.exceptions.UnexpectedSplitsError,
    datasets.exceptions.NonMatchingSplitsSizesError,
    FileNotFoundError,
    ValueError,
    TypeError,
    KeyError,
    OSError,
    pa.ArrowException,
)


class ValidationError(ValueError):
    """An export folder that must not be published, with every problem found.

    Attributes:
        folder: The export folder.
        problems: One sentence per problem.
    """

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.folder = Path(folder)
        self.problems = list(problems)
        listing = "\n".join(f"- {problem}" for problem in self.problems)
        super().__init__(
            f"Export folder {self.folder} failed validation with {len(self.problems)} problem(s):\n{listing}\n"
            "Fix the export (rebuild it, or export again) before publishing."
        )


def validate_export(
    folder: Path,
    *,
    row_group_budget_bytes: int = ROW_GROUP_BUDGET_BYTES,
    load: bool = True,
    raise_on_problems: bool = True,
) -> list[str]:
    """Run every check on an export folder and return the problems found.

    Args:
        folder: The export folder, laid out as a Hub dataset repo.
        row_group_budget_bytes: Maximum uncompressed bytes of one Parquet row group.
        load: Also load every config with ``load_dataset``, with and without
            streaming. This is the slow check: it copies each config into a
            temporary Arrow cache, one config at a time.
        raise_on_problems: Raise instead of returning when a problem is found.

    Returns:
        The problems, one sentence each; empty when the folder is fit to publish.

    Raises:
        ValidationError: listing every problem, when there is one and
            ``raise_on_problems`` is True.
    """
    folder = Path(folder)
    problems = check_layout(folder)
    if not (folder / "README.md").is_file() or not (folder / "dataset_infos.json").is_file():
        return _finish(folder, problems, raise_on_problems)

    card, card_problems = check_card(folder)
    problems += card_problems
    infos, info_problems = check_infos(folder, card)
    problems += info_problems
    data_files = config_data_files(card) if card is not None else {}

    problems += check_data_files(folder, data_files)
    problems += check_row_groups(folder, row_group_budget_bytes)
    problems += check_pixels(folder, read_build_settings(folder))
    problems += check_counts(folder, data_files, infos)
    problems += check_unique_ids(folder, data_files)
    if load and infos and not problems:
        problems += check_loads(folder, infos)
    elif load and problems:
        logger.info("Skipped loading the configs of %s because earlier checks failed", folder)
    return _finish(folder, problems, raise_on_problems)


def _finish(folder: Path, problems: list[str], raise_on_problems: bool) -> list[str]:
    if problems and raise_on_problems:
        raise ValidationError(folder, problems)
    if not problems:
        logger.info("Export folder %s passed validation", folder)
    return problems


def check_layout(folder: Path) -> list[str]:
    """Report missing required files and any Python file in the folder."""
    if not folder.is_dir():
        return [f"Export folder {folder} not found"]

    problems = [f"{name} is missing from {folder}" for name in REQUIRED_FILES if not (folder / name).is_file()]
    for script in sorted(folder.rglob("*.py")):
        problems.append(
            f"{script.relative_to(folder)} is a Python file. load_dataset rejects a repo that contains a dataset "
            "script, so remove it from the export"
        )
    return problems


def check_card(folder: Path) -> tuple[DatasetCard | None, list[str]]:
    """Parse README.md as a dataset card and report missing metadata, terms and citations."""
    try:
        card = DatasetCard.load(folder / "README.md")
    except (ValueError, TypeError) as error:
        return None, [f"README.md does not parse as a dataset card: {error}"]

    metadata = card.data.to_dict()
    problems = [f"The card YAML has no {name!r} field" for name in CARD_FIELDS if not metadata.get(name)]
    for index, entry in enumerate(metadata.get("configs") or []):
        if not isinstance(entry, dict) or "config_name" not in entry or "data_files" not in entry:
            problems.append(f"The card YAML configs entry {index} lacks config_name or data_files")

    if CITATION not in card.text:
        problems.append("The card text lacks the CrossMed citation (builder.card.CITATION)")
    for source, info in SOURCE_INFO.items():
        if info["citation"] not in card.text:
            problems.append(f"The card text lacks the citation of source {source} ({info['title']})")
        if info["terms"] not in card.text:
            problems.append(f"The card text lacks the terms of source {source} ({info['title']})")
    return card, problems


def check_infos(folder: Path, card: DatasetCard | None) -> tuple[dict[str, datasets.DatasetInfo], list[str]]:
    """Compare ``dataset_infos.json`` with the card YAML and the CrossMed features.

    Returns:
        The infos of ``dataset_infos.json`` by config name, and the problems.
    """
    path = folder / "dataset_infos.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        infos = {name: datasets.DatasetInfo.from_dict(value) for name, value in raw.items()}
    except (ValueError, TypeError, AttributeError) as error:
        return {}, [f"dataset_infos.json does not parse: {error}"]
    if card is None:
        return infos, []

    card_infos = datasets.info.DatasetInfosDict.from_dataset_card_data(card.data)
    config_names = {
        entry.get("config_name") for entry in card.data.to_dict().get("configs") or [] if isinstance(entry, dict)
    }
    problems = _compare_names("dataset_infos.json", set(infos), "the card configs", config_names)
    problems += _compare_names("dataset_infos.json", set(infos), "the card dataset_info", set(card_infos))

    expected_features = crossmed_features()
    for name in sorted(set(infos) & set(card_infos)):
        if infos[name].features != expected_features:
            problems.append(f"Config {name}: the features in dataset_infos.json differ from the CrossMed features")
        if card_infos[name].features != infos[name].features:
            problems.append(f"Config {name}: the features in the card YAML differ from dataset_infos.json")
        problems += _compare_split_counts(name, infos[name], card_infos[name])
    return infos, problems


def _compare_names(first_label: str, first: set, second_label: str, second: set) -> list[str]:
    problems = []
    if first - second:
        problems.append(f"Configs in {first_label} but not in {second_label}: {', '.join(sorted(first - second))}")
    if second - first:
        problems.append(f"Configs in {second_label} but not in {first_label}: {', '.join(sorted(second - first))}")
    return problems


def _compare_split_counts(name: str, info: datasets.DatasetInfo, card_info: datasets.DatasetInfo) -> list[str]:
    counts = {split: value.num_examples for split, value in (info.splits or {}).items()}
    card_counts = {split: value.num_examples for split, value in (card_info.splits or {}).items()}
    if counts == card_counts:
        return []
    return [f"Config {name}: split counts in dataset_infos.json {counts} differ from the card YAML {card_counts}"]


def config_data_files(card: DatasetCard) -> dict[str, dict[str, list[str]]]:
    """Return, per config and split, the data files the card YAML lists, relative to the folder."""
    selected: dict[str, dict[str, list[str]]] = {}
    for entry in card.data.to_dict().get("configs") or []:
        if not isinstance(entry, dict) or "config_name" not in entry:
            continue
        splits = selected.setdefault(entry["config_name"], {})
        for item in entry.get("data_files") or []:
            paths = item.get("path", [])
            splits[item.get("split", "train")] = [paths] if isinstance(paths, str) else list(paths)
    return selected


def check_data_files(folder: Path, data_files: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    """Report listed files that are missing and Parquet files that no config lists."""
    listed = {path for splits in data_files.values() for paths in splits.values() for path in paths}
    problems = [
        f"The card lists {path}, which is not in the folder" for path in sorted(listed) if not (folder / path).is_file()
    ]
    for path in parquet_files(folder):
        relative = path.relative_to(folder).as_posix()
        if relative not in listed:
            problems.append(f"{relative} is in the folder but no config lists it")
    return problems


def parquet_files(folder: Path) -> list[Path]:
    """Return the Parquet files under ``folder/data``, sorted."""
    return sorted((folder / "data").rglob("*.parquet"))


def check_row_groups(folder: Path, budget_bytes: int) -> list[str]:
    """Report each Parquet row group whose uncompressed size is over ``budget_bytes``, by file and group index."""
    problems = []
    for path in parquet_files(folder):
        metadata = pq.ParquetFile(path).metadata
        for index in range(metadata.num_row_groups):
            size = metadata.row_group(index).total_byte_size
            if size > budget_bytes:
                problems.append(
                    f"{path.relative_to(folder).as_posix()}: row group {index} is {size} bytes uncompressed, "
                    f"over the budget of {budget_bytes} bytes. The Hub viewer cannot show it, so write smaller row groups"
                )
    return problems


def check_pixels(folder: Path, settings: BuildSettings | None) -> list[str]:
    """Report image cells that contain a path or non-PNG bytes, and rows without pixels that users cannot restore.

    A row may lack its image only when its source is marked as shipped without
    pixels in ``crossmed_build.json``, so that ``restore`` can rebuild it.
    """
    problems = []
    for path in parquet_files(folder):
        counts: Counter[str] = Counter()
        examples: dict[str, str] = {}
        for row_id, source, column, cell in _image_cells(path):
            issue = _cell_issue(column, cell, source, settings)
            if issue is not None:
                counts[issue] += 1
                examples.setdefault(issue, row_id)
        relative = path.relative_to(folder).as_posix()
        problems += [
            f"{relative}: {count} row(s) where {issue} (first: {examples[issue]})" for issue, count in counts.items()
        ]
    return problems


def _image_cells(path: Path) -> Iterator[tuple[str, str, str, dict | None]]:
    """Yield ``(id, source, column, cell)`` for the image of every row and the mask of segmentation rows."""
    features = crossmed_features()
    parquet = pq.ParquetFile(path)
    for index in range(parquet.num_row_groups):
        table = parquet.read_row_group(index, columns=["id", "source", "task", *IMAGE_COLUMNS])
        for row in table.to_pylist():
            source = features["source"].int2str(row["source"])
            yield row["id"], source, "image", row["image"]
            if features["task"].int2str(row["task"]) == "Segmentation":
                yield row["id"], source, "mask", row["mask"]


def _cell_issue(column: str, cell: dict | None, source: str, settings: BuildSettings | None) -> str | None:
    data = cell.get("bytes") if cell else None
    if data is not None:
        return None if data.startswith(PNG_SIGNATURE) else f"{column} contains bytes that are not PNG"
    if cell and cell.get("path"):
        return f"{column} contains a path instead of PNG bytes"
    if settings is None:
        return f"{column} is empty and the folder has no crossmed_build.json, so users could not restore it"
    if settings.ship_pixels.get(source, True):
        return f"{column} is empty although the build settings ship the pixels of {source}"
    return None


def check_counts(
    folder: Path, data_files: Mapping[str, Mapping[str, list[str]]], infos: Mapping[str, datasets.DatasetInfo]
) -> list[str]:
    """Compare the Parquet row counts of each config split with the infos."""
    rows = {}
    for path in parquet_files(folder):
        rows[path.relative_to(folder).as_posix()] = pq.ParquetFile(path).metadata.num_rows

    problems = []
    for name, splits in sorted(data_files.items()):
        if name not in infos:
            continue
        expected = {split: value.num_examples for split, value in (infos[name].splits or {}).items()}
        found = {split: sum(rows.get(path, 0) for path in paths) for split, paths in splits.items()}
        if found != expected:
            problems.append(
                f"Config {name}: the Parquet files contain {found} rows per split, dataset_infos.json says {expected}"
            )
    return problems


def check_unique_ids(folder: Path, data_files: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    """Report ids that repeat within a config split, reading only the ``id`` column of each listed file."""
    ids_by_file: dict[str, list[str]] = {}
    problems = []
    for name, splits in sorted(data_files.items()):
        for split, paths in splits.items():
            ids: list[str] = []
            for path in paths:
                if path not in ids_by_file and (folder / path).is_file():
                    ids_by_file[path] = pq.read_table(folder / path, columns=["id"]).column("id").to_pylist()
                ids += ids_by_file.get(path, [])
            repeated = sorted(row_id for row_id, count in Counter(ids).items() if count > 1)
            if repeated:
                problems.append(f"Config {name} split {split}: {len(repeated)} repeated id(s), e.g. {repeated[:3]}")
    return problems


def check_loads(folder: Path, infos: Mapping[str, datasets.DatasetInfo]) -> list[str]:
    """Load every config with and without streaming; report load errors, features, counts and repeated ids.

    Each config is loaded the way ``load_dataset`` does it in ``datasets`` 5.2
    (``load_dataset_builder``, then ``download_and_prepare`` and ``as_dataset``,
    or ``as_streaming_dataset``), with one builder for both modes: resolving the
    card's data files once per config instead of twice halves the time.
    """
    problems = []
    for name, info in sorted(infos.items()):
        with tempfile.TemporaryDirectory(prefix="crossmed-validate-") as cache_dir:
            try:
                builder = datasets.load_dataset_builder(str(folder), name, cache_dir=cache_dir)
                problems += _check_streamed(name, info, builder.as_streaming_dataset())
                builder.download_and_prepare()
                problems += _check_loaded(name, info, builder.as_dataset())
            except LOAD_ERRORS as error:
                problems.append(f"Config {name} does not load with load_dataset: {type(error).__name__}: {error}")
        logger.info("Loaded config %s with and without streaming", name)
    return problems


def _check_loaded(name: str, info: datasets.DatasetInfo, loaded: datasets.DatasetDict) -> list[str]:
    problems = _compare_split_names(name, info, set(loaded))
    for split, dataset in loaded.items():
        problems += _compare_split(name, split, info, dataset.features, dataset["id"])
    return problems


def _check_streamed(name: str, info: datasets.DatasetInfo, streamed: datasets.IterableDatasetDict) -> list[str]:
    problems = _compare_split_names(name, info, set(streamed))
    for split, dataset in streamed.items():
        ids = [row["id"] for row in dataset.select_columns(["id"])]
        problems += _compare_split(name, split, info, dataset.features, ids)
    return [f"{problem} (streaming)" for problem in problems]


def _compare_split_names(name: str, info: datasets.DatasetInfo, loaded: set[str]) -> list[str]:
    expected = set(info.splits or {})
    if loaded == expected:
        return []
    return [f"Config {name} loads splits {sorted(loaded)}, dataset_infos.json lists {sorted(expected)}"]


def _compare_split(
    name: str, split: str, info: datasets.DatasetInfo, features: datasets.Features | None, ids: list[str]
) -> list[str]:
    problems = []
    if features != info.features:
        problems.append(f"Config {name} split {split}: the loaded features differ from dataset_infos.json")
    expected = info.splits[split].num_examples if split in (info.splits or {}) else None
    if len(ids) != expected:
        problems.append(f"Config {name} split {split}: loaded {len(ids)} rows, dataset_infos.json says {expected}")
    repeated = sorted(row_id for row_id, count in Counter(ids).items() if count > 1)
    if repeated:
        problems.append(f"Config {name} split {split}: {len(repeated)} repeated id(s), e.g. {repeated[:3]}")
    return problems
