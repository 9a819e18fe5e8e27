"""Rebuild locally the images of rows that were published without pixels.

Some source terms forbid redistributing images, so the maintainer can publish
a source's rows without ``image`` and ``mask`` bytes (``--no-pixels``). Those
rows keep every other column, ``source_file`` included. A user who has the
source runs ``python -m builder.publish restore``, which plans the build again
with the settings stored in the export (``crossmed_build.json``), decodes the
cases of the rows that lack pixels, checks that the rebuilt questions equal the
published ones, and writes a copy of the export with the image and mask bytes
filled in.

Planning depends only on the cases of each triplet's own source, so restoring
needs only the sources whose pixels are missing.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from builder.export import _owner_tag, remove_stale_staging, replace_folder, rows_per_row_group
from builder.features import crossmed_features
from builder.mat import SOURCES, check_choice
from builder.pipeline import DEFAULT_CAPS, PlanSettings, build_plan
from builder.planner import CaseJob
from builder.policy import POLICIES, BadInputLog

logger = logging.getLogger(__name__)

BUILD_SETTINGS_FILE = "crossmed_build.json"
BUILD_SETTINGS_FORMAT = 1

# Columns that a rebuilt row must share with the published row before its pixels are used.
COMPARED_COLUMNS: tuple[str, ...] = (
    "question",
    "options",
    "answer",
    "answer_index",
    "modality",
    "anatomy",
    "task",
    "triplet",
    "source",
    "subject_id",
    "slice_index",
    "source_file",
    "template_id",
    "bbox",
    "option_boxes",
)
CLASS_LABEL_COLUMNS: tuple[str, ...] = ("modality", "anatomy", "task", "triplet", "source")


class RestoreError(ValueError):
    """The sources or settings at hand do not rebuild the published rows."""


@dataclass(frozen=True)
class BuildSettings:
    """The settings a build ran with, stored in the export as ``crossmed_build.json``.

    Attributes:
        seed: Seeds templates, distractors, answer letters, boxes and caps.
        sources: The sources the build read.
        allow_missing_sources: Whether the build skipped absent sources.
        caps: Maximum questions per triplet slug; None for no cap.
        on_bad_input: ``error``, ``warn`` or ``skip``.
        max_side: Longest image side in pixels; None kept source sizes.
        reader_options: Per source, keyword options of its reader.
        ship_pixels: Per source, False when its rows were exported without
            image and mask bytes. A source not listed ships its pixels.
    """

    seed: int = 0
    sources: tuple[str, ...] = SOURCES
    allow_missing_sources: bool = False
    caps: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_CAPS))
    on_bad_input: str = "error"
    max_side: int | None = 1024
    reader_options: dict[str, dict[str, object]] = field(default_factory=dict)
    ship_pixels: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for source in (*self.sources, *self.ship_pixels, *self.reader_options):
            check_choice("source", source, SOURCES)
        check_choice("on_bad_input", self.on_bad_input, POLICIES)

    def config_kwargs(self) -> dict[str, Any]:
        """Return the ``CrossMedConfig`` fields, as ``builder.build.build_and_export`` takes them."""
        return {
            "seed": self.seed,
            "sources": tuple(self.sources),
            "allow_missing_sources": self.allow_missing_sources,
            "caps": None if self.caps is None else dict(self.caps),
            "on_bad_input": self.on_bad_input,
            "max_side": self.max_side,
            "reader_options": {source: dict(options) for source, options in self.reader_options.items()},
        }

    def without_pixels(self) -> list[str]:
        """Return the sources whose rows were exported without pixels."""
        return [source for source in SOURCES if not self.ship_pixels.get(source, True)]


def write_build_settings(folder: Path, settings: BuildSettings) -> Path:
    """Write ``crossmed_build.json`` into an export folder and return its path."""
    path = Path(folder) / BUILD_SETTINGS_FILE
    payload = {"format": BUILD_SETTINGS_FORMAT, **asdict(settings)}
    payload["sources"] = list(settings.sources)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_build_settings(folder: Path) -> BuildSettings | None:
    """Read ``crossmed_build.json`` from an export folder; None when the folder has none.

    Raises:
        ValueError: naming the file when it is not a settings object of a known format.
    """
    path = Path(folder) / BUILD_SETTINGS_FILE
    if not path.is_file():
        return None

    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"Invalid build settings file {path}: {error}") from error
    if not isinstance(payload, dict) or payload.pop("format", None) != BUILD_SETTINGS_FORMAT:
        raise ValueError(
            f'Invalid build settings file {path}: expected a JSON object with "format": {BUILD_SETTINGS_FORMAT}'
        )
    try:
        return BuildSettings(**{**payload, "sources": tuple(payload.get("sources", SOURCES))})
    except TypeError as error:
        raise ValueError(f"Invalid build settings file {path}: {error}") from error


@dataclass
class RestoreReport:
    """The result of a restore: rows filled in per source and the Parquet files rewritten."""

    out_dir: Path
    rows: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def restore_pixels(export_dir: Path, data_dir: Path, out_dir: Path, *, overwrite: bool = False) -> RestoreReport:
    """Write a copy of ``export_dir`` to ``out_dir`` with the missing image and mask bytes rebuilt from ``data_dir``.

    Args:
        export_dir: An export folder with ``crossmed_build.json``, e.g. downloaded from the Hub.
        data_dir: The folder with one subfolder per source, as for a build.
        out_dir: The folder to write; it is replaced only when ``overwrite`` is True.
        overwrite: Replace an existing ``out_dir``.

    Returns:
        The rows filled per source and the Parquet files rewritten, relative to ``out_dir``.

    Raises:
        FileNotFoundError: when ``export_dir`` has no ``crossmed_build.json``, or a needed source is missing.
        FileExistsError: when ``out_dir`` exists and ``overwrite`` is False.
        RestoreError: when a row cannot be rebuilt, or rebuilds with other questions, options or answers.
    """
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    settings = _required_settings(export_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"Output folder {out_dir} already exists. Pass --overwrite to replace it.")

    missing = rows_without_pixels(export_dir)
    sources = sorted({source for by_source in missing.values() for source in by_source})
    report = RestoreReport(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # The export's staging name, so that remove_stale_staging also clears what a killed restore left behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{_owner_tag()}~", dir=out_dir.parent))
    try:
        shutil.copytree(export_dir, staging, dirs_exist_ok=True)
        if sources:
            jobs = _plan_jobs(settings, data_dir, sources)
            for relative, by_source in sorted(missing.items()):
                _restore_file(staging / relative, by_source, jobs, settings, data_dir, report)
                report.files.append(relative)
        # Every row of the copy now has its pixels.
        write_build_settings(staging, replace(settings, ship_pixels={}))
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    remove_stale_staging(out_dir)
    logger.info("Restored %d rows in %d files into %s", sum(report.rows.values()), len(report.files), out_dir)
    return report


def _required_settings(export_dir: Path) -> BuildSettings:
    if not export_dir.is_dir():
        raise FileNotFoundError(f"Export folder not found: {export_dir}")
    settings = read_build_settings(export_dir)
    if settings is None:
        raise FileNotFoundError(
            f"{export_dir} has no {BUILD_SETTINGS_FILE}, so the settings its rows were built with are unknown. "
            "Restore needs an export written by `python -m builder.publish`."
        )
    return settings


def rows_without_pixels(export_dir: Path) -> dict[str, dict[str, set[str]]]:
    """Return, per Parquet file (relative to ``export_dir``), the ids of rows without image bytes by source."""
    features = crossmed_features()
    missing: dict[str, dict[str, set[str]]] = {}
    for path in sorted((export_dir / "data").rglob("*.parquet")):
        table = pq.read_table(path, columns=["id", "source", "image"])
        for row in table.to_pylist():
            if row["image"] is None or row["image"].get("bytes") is None:
                source = features["source"].int2str(row["source"])
                by_source = missing.setdefault(path.relative_to(export_dir).as_posix(), {})
                by_source.setdefault(source, set()).add(row["id"])
    return missing


def _plan_jobs(settings: BuildSettings, data_dir: Path, sources: list[str]) -> list[CaseJob]:
    plan_settings = PlanSettings(
        data_dir=Path(data_dir),
        sources=tuple(sources),
        allow_missing_sources=False,
        seed=settings.seed,
        caps=settings.caps,
        on_bad_input=settings.on_bad_input,
        reader_options=settings.reader_options,
    )
    _, jobs = build_plan(plan_settings, BadInputLog(settings.on_bad_input))
    return jobs


def _restore_file(
    path: Path,
    by_source: Mapping[str, set[str]],
    jobs: list[CaseJob],
    settings: BuildSettings,
    data_dir: Path,
    report: RestoreReport,
) -> None:
    """Rebuild the rows of one Parquet file that lack pixels and rewrite the file with their bytes."""
    wanted = set().union(*by_source.values())
    rebuilt = dict(_rebuild_rows(jobs, wanted, settings, data_dir))
    absent = sorted(wanted - set(rebuilt))
    if absent:
        raise RestoreError(
            f"{len(absent)} row(s) of {path.name} are not produced by the sources under {data_dir} "
            f"(first: {absent[:5]}). The sources differ from the ones the export was built from."
        )

    table = pq.read_table(path)
    published = {row["id"]: row for row in table.select(["id", *COMPARED_COLUMNS]).to_pylist() if row["id"] in wanted}
    for row_id, row in rebuilt.items():
        _check_same_row(published[row_id], row, data_dir)

    _write_with_pixels(path, table, rebuilt)
    for source, ids in by_source.items():
        report.rows[source] = report.rows.get(source, 0) + len(ids)


def _rebuild_rows(
    jobs: list[CaseJob], wanted: set[str], settings: BuildSettings, data_dir: Path
) -> Iterable[tuple[str, dict]]:
    from builder.generation import GenerationSettings, generate_rows

    selected = []
    for job in jobs:
        questions = [plan for plan in job.questions if plan.id in wanted]
        if questions:
            selected.append(CaseJob(job.source, job.case, questions))
    generation = GenerationSettings(
        source_roots={job.source: str(Path(data_dir) / job.source) for job in selected},
        seed=settings.seed,
        # A published row must decode now, because skipping it would leave it without pixels.
        on_bad_input="error",
        max_side=settings.max_side,
        reader_options={source: dict(options) for source, options in settings.reader_options.items()},
    )
    return generate_rows(selected, generation)


def _check_same_row(published: dict, rebuilt: dict, data_dir: Path) -> None:
    features = crossmed_features()
    for column in COMPARED_COLUMNS:
        value = rebuilt[column]
        if column in CLASS_LABEL_COLUMNS and isinstance(value, str):
            value = features[column].str2int(value)
        if _normalized(value) != _normalized(published[column]):
            raise RestoreError(
                f"Row {published['id']}: the rebuilt {column} {value!r} differs from the published {published[column]!r}. "
                f"The sources under {data_dir} or the build settings differ from the ones the export was built with."
            )


def _normalized(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_normalized(item) for item in value]
    return value


def _write_with_pixels(path: Path, table: pa.Table, rebuilt: Mapping[str, dict]) -> None:
    """Rewrite one Parquet file with the image and mask cells of the rebuilt rows filled in."""
    ids = table.column("id").to_pylist()
    for column in ("image", "mask"):
        cells = table.column(column).to_pylist()
        for index, row_id in enumerate(ids):
            if row_id in rebuilt:
                cells[index] = rebuilt[row_id][column]
        position = table.schema.get_field_index(column)
        field_type = table.schema.field(column)
        table = table.set_column(position, field_type, pa.array(cells, type=field_type.type))

    pq.write_table(table, path, row_group_size=rows_per_row_group(table.nbytes, table.num_rows))
