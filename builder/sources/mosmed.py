"""MosMedData COVID19_1110 chest CT: severity category questions (CT-0 to CT-4).

Layout read::

    COVID19_1110/
        studies/CT-0/study_0001.nii.gz ... studies/CT-4/study_1110.nii.gz
        masks/study_0255_mask.nii.gz        optional, for a subset of studies
        dataset_registry.xlsx               optional: study_id, category, study_file, mask_file

The folder ``CT-k`` a study sits in is its category. The registry, when
present, must agree with it; its paths start with ``/`` and are relative to the
``COVID19_1110`` folder.
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

from builder.mat import CT_LUNG_CLASSIFICATION
from builder.paths import resolve_inside
from builder.policy import BadInputError, BadInputLog
from builder.sources.base import Case, ItemSpec, Sample, SourceReader
from builder.volumes import (
    axial_slice_radiological,
    load_canonical,
    lung_area_per_slice,
    lung_window,
    slice_options,
    top_slices,
    volume_array,
)

logger = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")
REGISTRY_NAME = "dataset_registry.xlsx"
REGISTRY_COLUMNS: tuple[str, ...] = ("study_id", "category", "study_file", "mask_file")

_STUDY_PATTERN = re.compile(r"(study_\d{4})\.nii(?:\.gz)?")


@dataclass(frozen=True)
class RegistryRow:
    """One row of dataset_registry.xlsx, cells as written (paths keep their leading ``/``).

    Attributes:
        line: The spreadsheet row number, header being row 1.
        study_id: The study number, e.g. 255.
        category: The severity category, e.g. ``"CT-1"``.
        study_file: The study path, e.g. ``"/studies/CT-1/study_0255.nii.gz"``.
        mask_file: The mask path, or None when the study has no mask.
    """

    line: int
    study_id: object
    category: str
    study_file: str
    mask_file: str | None


def read_registry(path: Path) -> list[RegistryRow]:
    """Read the rows of dataset_registry.xlsx (first sheet, header in row 1).

    Args:
        path: The spreadsheet.

    Returns:
        The rows in sheet order, skipping rows whose cells are all empty.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        BadInputError: when the file is not a readable .xlsx workbook or lacks a column.
    """
    if not path.is_file():
        raise FileNotFoundError(f"MosMedData registry not found: {path}")

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as error:
        raise BadInputError(path, f"cannot open the workbook ({type(error).__name__}: {error})") from error

    try:
        rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()

    first_row = rows[0] if rows else ()
    header = ["" if cell is None else str(cell).strip() for cell in first_row]
    missing = [column for column in REGISTRY_COLUMNS if column not in header]
    if missing:
        raise BadInputError(path, f"missing column(s) {', '.join(missing)} in the first sheet; the header is {header}")

    index = {column: header.index(column) for column in REGISTRY_COLUMNS}
    registry = []
    for line, cells in enumerate(rows[1:], start=2):
        padded = list(cells) + [None] * (len(header) - len(cells))
        if all(cell is None or str(cell).strip() == "" for cell in padded):
            continue
        mask = padded[index["mask_file"]]
        registry.append(
            RegistryRow(
                line=line,
                study_id=padded[index["study_id"]],
                category=str(padded[index["category"]] or "").strip(),
                study_file=str(padded[index["study_file"]] or "").strip(),
                mask_file=str(mask).strip() if mask is not None and str(mask).strip() else None,
            )
        )
    return registry


@dataclass(frozen=True)
class _Study:
    name: str
    category: str
    path: Path


class MosMedReader(SourceReader):
    """Reads MosMedData COVID19_1110 studies into CT/Lung/Classification questions.

    Each study gives one item per rank r, ``r{r}``: which severity category
    (CT-0 to CT-4) does this slice belong to? The other four categories are
    the distractors. Rank r is the axial slice with the r-th largest lung area
    (builder.volumes.lung_area_per_slice), at least ``min_slice_gap`` slices
    from higher ranks. Slices without lung voxels are not used. Images use the
    lung window (center -600 HU, width 1500 HU).

    Note:
        The category describes the whole study, so a slice away from the
        lesions still carries the study's category.

    Args:
        root: The ``COVID19_1110`` folder (holding ``studies/``) or its parent.
        bad_inputs: The bad-input policy.
        slices_per_volume: Ranks per study (default 3).
        min_slice_gap: Minimum distance between ranked slices, in slices (default 5).

    Raises:
        FileNotFoundError: when the root or its ``studies/`` folder does not exist.
        ValueError: when several folders one level below the root hold ``studies/``.
    """

    name = "mosmed"
    triplets = (CT_LUNG_CLASSIFICATION,)
    download_instructions = (
        "MosMedData COVID19_1110 is licensed CC BY-NC-ND 3.0 by the Moscow Center for Diagnostics and "
        "Telemedicine. Download it from mosmed.ai, unpack it into the mosmed source folder, and pass the "
        "COVID19_1110 folder (the one holding studies/CT-0 ... studies/CT-4) or its parent as the MosMedData root."
    )

    def __init__(self, root: Path, bad_inputs: BadInputLog | None = None, **options: object) -> None:
        super().__init__(root, bad_inputs, **options)
        self.slices_per_volume, self.min_slice_gap = slice_options(options)
        self.dataset_root = self._find_dataset_root()

    def _find_dataset_root(self) -> Path:
        if (self.root / "studies").is_dir():
            return self.root

        candidates = sorted(path.parent for path in self.root.glob("*/studies") if path.is_dir())
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise FileNotFoundError(
                f"No studies/ folder in {self.root} or one level below it. {self.download_instructions}"
            )
        names = ", ".join(str(path) for path in candidates)
        raise ValueError(f"Several MosMedData folders under {self.root}: {names}; pass one of them as the root")

    def list_cases(self) -> list[Case]:
        """Return one case per study file, sorted by study name.

        Reads the folder listings and the optional registry; no volume is opened.
        """
        studies = self._list_studies()
        registry_masks = self._check_registry(studies)

        cases = [self._plan_case(study, registry_masks.get(study.name)) for study in studies.values()]
        logger.info("MosMedData: %d studies under %s", len(cases), self.dataset_root)
        return sorted(cases, key=lambda case: case.case_id)

    def _list_studies(self) -> dict[str, _Study]:
        studies: dict[str, _Study] = {}
        for category in CATEGORIES:
            folder = self.dataset_root / "studies" / category
            if not folder.is_dir():
                logger.info("MosMedData: no folder %s; no %s studies", folder, category)
                continue
            for path in sorted(folder.iterdir()):
                match = _STUDY_PATTERN.fullmatch(path.name)
                if match is None or not path.is_file():
                    logger.debug("MosMedData: ignored %s (not a study_NNNN.nii.gz file)", path)
                    continue
                name = match.group(1)
                if name in studies:
                    self.bad_inputs.report(
                        self.name, path, f"{name} also exists at {studies.pop(name).path}; keep one copy"
                    )
                    continue
                studies[name] = _Study(name, category, path)
        return studies

    def _check_registry(self, studies: dict[str, _Study]) -> dict[str, Path]:
        """Compare the registry with the folders; drop disagreeing studies and return registry mask paths."""
        registry_path = self.dataset_root / REGISTRY_NAME
        if not registry_path.is_file():
            return {}
        try:
            rows = read_registry(registry_path)
        except BadInputError as error:
            self.bad_inputs.report(self.name, error.path, error.reason)
            return {}

        masks: dict[str, Path] = {}
        absent = 0
        for row in rows:
            try:
                study_path = self._registry_path(row.study_file, registry_path)
                mask_path = self._registry_path(row.mask_file, registry_path) if row.mask_file else None
            except BadInputError as error:
                self.bad_inputs.report(self.name, registry_path, f"row {row.line}: {error.reason}")
                continue

            match = _STUDY_PATTERN.fullmatch(study_path.name)
            study = studies.get(match.group(1)) if match else None
            if study is None:
                absent += 1
                continue
            if row.category != study.category:
                self.bad_inputs.report(
                    self.name, study.path,
                    f"{REGISTRY_NAME} row {row.line} gives category {row.category!r} but the study is in folder "
                    f"studies/{study.category}; fix the registry or move the file",
                )
                del studies[study.name]
                continue
            if mask_path is not None:
                masks[study.name] = mask_path

        if absent:
            logger.info("MosMedData: %d studies listed in %s are not on disk and are left out", absent, registry_path)
        return masks

    def _registry_path(self, value: str, registry_path: Path) -> Path:
        """Turn a registry path such as ``/studies/CT-1/study_0255.nii.gz`` into a path under the dataset root."""
        # The leading "/" means the dataset root, not the file system root.
        relative = value.lstrip("/")
        resolve_inside(self.dataset_root, relative, registry_path)
        return self.dataset_root / PurePosixPath(relative)

    def _plan_case(self, study: _Study, registry_mask: Path | None) -> Case:
        mask = registry_mask or self.dataset_root / "masks" / f"{study.name}_mask.nii.gz"
        has_mask = mask.is_file()
        metadata: dict[str, object] = {
            "category": study.category,
            "has_mask": has_mask,
            "mask_file": self._relative(mask) if has_mask else None,
        }

        items = tuple(
            ItemSpec(
                key=f"r{rank}",
                triplet=CT_LUNG_CLASSIFICATION,
                view=f"r{rank}",
                answer=study.category,
                distractors=frozenset(category for category in CATEGORIES if category != study.category),
            )
            for rank in range(self.slices_per_volume)
        )
        return Case(
            source=self.name,
            case_id=study.name,
            subject_id=study.name,
            files=(self._relative(study.path),),
            items=items,
            metadata=metadata,
        )

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def load(self, case: Case) -> dict[str, Sample]:
        """Decode one study: the ranked axial slices in the lung window.

        Returns:
            ``{"r0": Sample, ...}``: ``uint8`` images in the radiological
            convention, one per rank that has a slice with lung voxels.

        Raises:
            BadInputError: naming the file when it cannot be read, or when no
                slice has voxels in the lung range inside the body (a volume
                that is not a chest CT in Hounsfield units).
        """
        relative = case.files[0]
        path = self.root / relative
        hu = volume_array(load_canonical(path), path).astype(np.float32, copy=False)

        areas = lung_area_per_slice(hu)
        slices = [k for k in top_slices(areas, self.slices_per_volume, self.min_slice_gap) if areas[k] > 0]
        if not slices:
            raise BadInputError(
                path,
                f"no slice has voxels between -1000 and -400 HU inside the body (values span {hu.min():.0f}.."
                f"{hu.max():.0f}); expected a chest CT in Hounsfield units",
            )

        return {
            f"r{rank}": Sample(image=lung_window(axial_slice_radiological(hu, k)), slice_index=k, source_file=relative)
            for rank, k in enumerate(slices)
        }
