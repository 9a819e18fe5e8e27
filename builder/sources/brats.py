"""BraTS 2020 brain MRI: sequence questions and whole-tumour segmentation questions.

Layout read (folder names are matched anywhere under the source root)::

    MICCAI_BraTS2020_TrainingData/
        name_mapping.csv            optional: Grade (HGG/LGG) per BraTS_2020_subject_ID
        survival_info.csv           optional: Brats20ID, Age, Survival_days, Extent_of_Resection
        BraTS20_Training_001/
            BraTS20_Training_001_flair.nii      (or .nii.gz)
            BraTS20_Training_001_t1.nii
            BraTS20_Training_001_t1ce.nii
            BraTS20_Training_001_t2.nii
            BraTS20_Training_001_seg.nii        optional

Cases in the naming of BraTS 2023 and later (``BraTS-GLI-00001-000/``
``BraTS-GLI-00001-000-{t1c,t1n,t2f,t2w,seg}.nii.gz``) are read too, with t1c
as T1ce, t1n as T1, t2f as FLAIR and t2w as T2.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np

from builder.mat import MRI_BRAIN_CLASSIFICATION, MRI_BRAIN_SEGMENTATION
from builder.policy import BadInputError, BadInputLog
from builder.sources.base import Case, ItemSpec, Sample, SourceReader
from builder.tables import read_csv_rows
from builder.volumes import (
    area_per_slice,
    axial_slice_radiological,
    label_volume,
    load_canonical,
    mri_window,
    scale_mri,
    slice_options,
    top_slices,
    volume_array,
)

logger = logging.getLogger(__name__)

# FLAIR comes first: cases without a segmentation choose slices from its brain area.
SEQUENCES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
DISPLAY_NAMES: dict[str, str] = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
GRADES: tuple[str, ...] = ("HGG", "LGG")


@dataclass(frozen=True)
class Naming:
    """A file naming scheme of BraTS case folders.

    Attributes:
        scheme: A short name stored in Case.metadata.
        folder_pattern: Matches a whole case folder name, which is the case id.
        separator: Between the case id and the file token (``_flair``, ``-t2f``).
        sequence_tokens: File token of each sequence in SEQUENCES.
        labels: The label values a segmentation may contain.
    """

    scheme: str
    folder_pattern: re.Pattern[str]
    separator: str
    sequence_tokens: dict[str, str]
    labels: frozenset[int]

    def subject_id(self, case_id: str) -> str:
        """Return the patient id: BraTS-GLI ids end in a timepoint (``-000``) that is dropped."""
        if self.scheme == "gli":
            return case_id.rsplit("-", 1)[0]
        return case_id


# BraTS 2020 labels: 1 necrotic and non-enhancing tumour core, 2 peritumoral
# edema, 4 GD-enhancing tumour.
BRATS2020 = Naming(
    scheme="brats2020",
    folder_pattern=re.compile(r"BraTS20_Training_\d{3}"),
    separator="_",
    sequence_tokens={"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"},
    labels=frozenset({0, 1, 2, 4}),
)

# The BraTS 2023 glioma data labels the enhancing tumour 3 instead of 4.
BRATS_GLI = Naming(
    scheme="gli",
    folder_pattern=re.compile(r"BraTS-GLI-\d{5}-\d{3}"),
    separator="-",
    sequence_tokens={"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"},
    labels=frozenset({0, 1, 2, 3}),
)

NAMINGS: tuple[Naming, ...] = (BRATS2020, BRATS_GLI)

_ALIVE_PATTERN = re.compile(r"ALIVE\s*\(\s*(\d+)\s*days?\s+later\s*\)", re.IGNORECASE)
_DAYS_PATTERN = re.compile(r"(\d+)(?:\.0*)?")
_MISSING_CELLS = frozenset({"", "NA", "N/A", "NAN"})


class Survival(NamedTuple):
    """Overall survival from survival_info.csv.

    Attributes:
        days: Days from diagnosis to death, or to the last follow-up when ``alive``.
        alive: True for cells such as ``ALIVE (361 days later)`` (a censored survival time).
    """

    days: int
    alive: bool


def parse_survival_days(text: str) -> Survival | None:
    """Parse a ``Survival_days`` cell of survival_info.csv.

    Args:
        text: The cell, e.g. ``"289"``, ``"ALIVE (361 days later)"`` or ``""``.

    Returns:
        ``Survival(289, alive=False)``, ``Survival(361, alive=True)``, or None
        for a blank or ``NA`` cell.

    Raises:
        ValueError: naming the cell when it is neither form.
    """
    cell = text.strip()
    if cell.upper() in _MISSING_CELLS:
        return None

    alive = _ALIVE_PATTERN.fullmatch(cell)
    if alive:
        return Survival(int(alive.group(1)), alive=True)
    days = _DAYS_PATTERN.fullmatch(cell)
    if days:
        return Survival(int(days.group(1)), alive=False)
    raise ValueError(f"Invalid Survival_days {text!r}: expected a number of days or 'ALIVE (N days later)'")


def read_survival_info(path: Path, bad_inputs: BadInputLog | None = None) -> dict[str, dict[str, object]]:
    """Read survival_info.csv into clinical metadata per case id.

    Args:
        path: The CSV file, with columns Brats20ID, Age, Survival_days, Extent_of_Resection.
        bad_inputs: The policy for rows that do not parse (default: raise).

    Returns:
        ``{case_id: {"age": float | None, "survival": Survival | None,
        "extent_of_resection": str | None}}``. Age is in years; ``NA`` and
        blank cells become None.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        BadInputError: when the table lacks a column, or a row does not parse
            and the policy is ``"error"``.
    """
    policy = bad_inputs if bad_inputs is not None else BadInputLog()
    columns = ("Brats20ID", "Age", "Survival_days", "Extent_of_Resection")
    clinical: dict[str, dict[str, object]] = {}
    for line, row in enumerate(read_csv_rows(path, columns), start=2):
        case_id = row["Brats20ID"].strip()
        try:
            age = None if row["Age"].strip().upper() in _MISSING_CELLS else float(row["Age"])
            survival = parse_survival_days(row["Survival_days"])
        except ValueError as error:
            policy.report(BraTSReader.name, path, f"line {line} ({case_id}): {error}")
            continue

        extent = row["Extent_of_Resection"].strip()
        clinical[case_id] = {
            "age": age,
            "survival": survival,
            "extent_of_resection": None if extent.upper() in _MISSING_CELLS else extent,
        }
    return clinical


def read_name_mapping(path: Path, bad_inputs: BadInputLog | None = None) -> dict[str, str]:
    """Read the tumour grade per case id from name_mapping.csv.

    Args:
        path: The CSV file, with columns Grade and BraTS_2020_subject_ID.
        bad_inputs: The policy for rows with a grade other than HGG or LGG (default: raise).

    Returns:
        ``{case_id: "HGG" | "LGG"}``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        BadInputError: when the table lacks a column, or a grade is invalid and
            the policy is ``"error"``.
    """
    policy = bad_inputs if bad_inputs is not None else BadInputLog()
    grades: dict[str, str] = {}
    for line, row in enumerate(read_csv_rows(path, ("Grade", "BraTS_2020_subject_ID")), start=2):
        case_id = row["BraTS_2020_subject_ID"].strip()
        grade = row["Grade"].strip()
        if grade not in GRADES:
            reason = f"line {line} ({case_id}): invalid Grade {grade!r}, expected HGG or LGG"
            policy.report(BraTSReader.name, path, reason)
            continue
        grades[case_id] = grade
    return grades


def _nifti_stem(name: str) -> str | None:
    lowered = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return None


class BraTSReader(SourceReader):
    """Reads BraTS 2020 case folders (and BraTS-GLI ones) into MRI/Brain questions.

    Every case gives, for each rank r, four classification items
    ``r{r}-flair``, ``r{r}-t1``, ``r{r}-t1ce``, ``r{r}-t2`` (which sequence is
    this slice?) and, when it has a segmentation, one segmentation item
    ``r{r}-seg`` (the FLAIR slice and the whole-tumour mask, all nonzero labels).

    Rank r is the slice with the r-th largest whole-tumour area, at least
    ``min_slice_gap`` slices from higher ranks (see builder.volumes.top_slices).
    Slices without tumour are never used, so a small tumour can give fewer
    ranks than planned. Cases without a segmentation, or whose segmentation
    has no tumour voxel, rank slices by brain area: the nonzero FLAIR voxels
    of the skull-stripped volume.

    Args:
        root: The folder holding ``MICCAI_BraTS2020_TrainingData/``, or that
            folder itself. Case folders are found anywhere below it.
        bad_inputs: The bad-input policy.
        slices_per_volume: Ranks per case (default 3).
        min_slice_gap: Minimum distance between ranked slices, in slices (default 5).
    """

    name = "brats"
    triplets = (MRI_BRAIN_CLASSIFICATION, MRI_BRAIN_SEGMENTATION)
    download_instructions = (
        "BraTS 2020 may not be redistributed. Request the BraTS 2020 training data from the challenge "
        "organisers (registration required), unpack MICCAI_BraTS2020_TrainingData/ into the brats source "
        "folder, and pass that folder (or MICCAI_BraTS2020_TrainingData/ itself) as the BraTS root."
    )

    def __init__(self, root: Path, bad_inputs: BadInputLog | None = None, **options: object) -> None:
        super().__init__(root, bad_inputs, **options)
        self.slices_per_volume, self.min_slice_gap = slice_options(options)

    def list_cases(self) -> list[Case]:
        """Return the cases found under the root, sorted by case id.

        Reads folder listings and the two optional CSV tables; no volume is opened.
        """
        folders = sorted(self._case_folders(), key=lambda found: (found[0].name, str(found[0])))
        grades, clinical = self._read_tables(folder for folder, _ in folders)

        cases: dict[str, Case] = {}
        for folder, naming in folders:
            case_id = folder.name
            if case_id in cases:
                first = self.root / cases[case_id].files[0]
                self.bad_inputs.report(
                    self.name, folder, f"case {case_id} also exists at {first.parent}; keep one copy"
                )
                continue
            case = self._plan_case(folder, naming, grades.get(case_id), clinical.get(case_id, {}))
            if case is not None:
                cases[case_id] = case

        logger.info("BraTS: %d cases under %s", len(cases), self.root)
        return [cases[case_id] for case_id in sorted(cases)]

    def _case_folders(self) -> Iterator[tuple[Path, Naming]]:
        for folder, subfolders, _ in os.walk(self.root):
            subfolders.sort()
            searched = []
            for name in subfolders:
                naming = next((n for n in NAMINGS if n.folder_pattern.fullmatch(name)), None)
                if naming is not None:
                    yield Path(folder) / name, naming
                elif not name.startswith("."):
                    searched.append(name)
            # os.walk descends only into the names left in the list, so case
            # folders and hidden folders are not searched further.
            subfolders[:] = searched

    def _read_tables(self, folders: Iterator[Path]) -> tuple[dict[str, str], dict[str, dict[str, object]]]:
        grades: dict[str, str] = {}
        clinical: dict[str, dict[str, object]] = {}
        for parent in sorted({folder.parent for folder in folders} | {self.root}):
            mapping, survival = parent / "name_mapping.csv", parent / "survival_info.csv"
            try:
                if mapping.is_file():
                    grades.update(read_name_mapping(mapping, self.bad_inputs))
                if survival.is_file():
                    clinical.update(read_survival_info(survival, self.bad_inputs))
            except BadInputError as error:
                self.bad_inputs.report(self.name, error.path, error.reason)
        return grades, clinical

    def _plan_case(
        self, folder: Path, naming: Naming, grade: str | None, clinical: dict[str, object]
    ) -> Case | None:
        case_id = folder.name
        files = self._case_files(folder, naming)
        if files is None:
            return None
        sequence_files, segmentation = files

        metadata: dict[str, object] = {
            "naming": naming.scheme,
            "sequence_files": {seq: self._relative(path) for seq, path in sequence_files.items()},
            "segmentation_file": self._relative(segmentation) if segmentation else None,
            **clinical,
        }
        if grade is not None:
            metadata["grade"] = grade

        paths = [*sequence_files.values(), *([segmentation] if segmentation else [])]
        return Case(
            source=self.name,
            case_id=case_id,
            subject_id=naming.subject_id(case_id),
            files=tuple(self._relative(path) for path in paths),
            items=self._items(has_segmentation=segmentation is not None),
            metadata=metadata,
        )

    def _case_files(self, folder: Path, naming: Naming) -> tuple[dict[str, Path], Path | None] | None:
        """Find the sequence files and the segmentation of one case folder, or report why not."""
        case_id = folder.name
        prefix = case_id + naming.separator
        by_token: dict[str, list[Path]] = {}
        others: list[Path] = []
        for path in sorted(folder.iterdir()):
            stem = _nifti_stem(path.name)
            if stem is None or not path.is_file():
                continue
            if stem.startswith(prefix):
                by_token.setdefault(stem[len(prefix):].lower(), []).append(path)
            else:
                others.append(path)

        for token, paths in by_token.items():
            if len(paths) > 1:
                names = ", ".join(path.name for path in paths)
                reason = f"case {case_id} has several {token} files ({names}); keep one"
                self.bad_inputs.report(self.name, folder, reason)
                return None

        sequence_files: dict[str, Path] = {}
        for seq in SEQUENCES:
            token = naming.sequence_tokens[seq]
            if token not in by_token:
                self.bad_inputs.report(
                    self.name, folder,
                    f"case {case_id} has no {DISPLAY_NAMES[seq]} volume; expected {prefix}{token}.nii or .nii.gz",
                )
                return None
            sequence_files[seq] = by_token.pop(token)[0]

        if "seg" in by_token:
            return sequence_files, by_token["seg"][0]
        return self._fallback_segmentation(folder, others + [paths[0] for paths in by_token.values()], sequence_files)

    def _fallback_segmentation(
        self, folder: Path, candidates: list[Path], sequence_files: dict[str, Path]
    ) -> tuple[dict[str, Path], Path | None] | None:
        # BraTS 2020 case 355 ships its segmentation as W39_1998.09.19_Segm.nii
        # instead of BraTS20_Training_355_seg.nii.
        if not candidates:
            return sequence_files, None
        if len(candidates) == 1:
            logger.warning(
                "%s: no *_seg.nii[.gz] file; using %s as the segmentation", folder.name, self._relative(candidates[0])
            )
            return sequence_files, candidates[0]

        names = ", ".join(path.name for path in candidates)
        self.bad_inputs.report(
            self.name, folder,
            f"case {folder.name} has no *_seg file and several other NIfTI files ({names}); "
            "rename the segmentation to <case>_seg.nii.gz",
        )
        return None

    def _items(self, has_segmentation: bool) -> tuple[ItemSpec, ...]:
        items: list[ItemSpec] = []
        for rank in range(self.slices_per_volume):
            for seq in SEQUENCES:
                view = f"r{rank}-{seq}"
                others = frozenset(DISPLAY_NAMES[other] for other in SEQUENCES if other != seq)
                items.append(ItemSpec(view, MRI_BRAIN_CLASSIFICATION, view, DISPLAY_NAMES[seq], others))
            if has_segmentation:
                view = f"r{rank}-seg"
                items.append(ItemSpec(view, MRI_BRAIN_SEGMENTATION, view))
        return tuple(items)

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def load(self, case: Case) -> dict[str, Sample]:
        """Decode one case: four scaled sequences and, where present, the tumour mask.

        Volumes are read one at a time and reoriented to RAS+. Each sequence is
        scaled to 8 bit as builder.volumes.robust_scale_mri does, with the
        window of the whole volume applied to the chosen slices only.

        Returns:
            ``{view: Sample}`` for every rank that has a slice: ``uint8`` images
            in the radiological convention and, for ``r{r}-seg``, the boolean
            whole-tumour mask aligned with the FLAIR image.

        Raises:
            BadInputError: naming the file when a volume cannot be read, its
                shape differs from the other volumes of the case, or the
                segmentation has labels outside the set of its naming scheme.
        """
        naming = BRATS_GLI if case.metadata.get("naming") == BRATS_GLI.scheme else BRATS2020
        sequence_files = cast("dict[str, str]", case.metadata["sequence_files"])
        segmentation = case.metadata.get("segmentation_file")

        masks: dict[int, np.ndarray] = {}
        shape: tuple[int, ...] | None = None
        slices: list[int] | None = None
        if isinstance(segmentation, str):
            masks, shape = self._tumour_masks(segmentation, naming)
            # A segmentation without tumour gives no segmentation views, and
            # the classification views fall back to the brain area below.
            slices = list(masks) or None

        views: dict[str, Sample] = {}
        for seq in SEQUENCES:
            relative = sequence_files[seq]
            path = self.root / relative
            data = volume_array(load_canonical(path), path)
            shape = self._check_shape(path, data.shape, shape, case)
            if slices is None:
                brain_area = area_per_slice(np.isfinite(data) & (data != 0))
                slices = self._ranked(brain_area)

            # Only the chosen slices are scaled; the window still comes from the whole brain.
            window = mri_window(data, name=relative)
            for rank, k in enumerate(slices):
                image = scale_mri(axial_slice_radiological(data, k), window)
                views[f"r{rank}-{seq}"] = Sample(image=image, slice_index=k, source_file=relative)
                if seq == "flair" and k in masks:
                    views[f"r{rank}-seg"] = Sample(image=image, mask=masks[k], slice_index=k, source_file=relative)
            del data
        return views

    def _tumour_masks(self, relative: str, naming: Naming) -> tuple[dict[int, np.ndarray], tuple[int, ...]]:
        """Read the segmentation and return {slice index: whole-tumour mask} in rank order, and the volume shape."""
        path = self.root / relative
        labels = label_volume(load_canonical(path), path)

        counts = np.bincount(labels.ravel(), minlength=256)
        unexpected = sorted(set(np.flatnonzero(counts).tolist()) - naming.labels)
        if unexpected:
            raise BadInputError(
                path, f"segmentation labels {unexpected} are outside {sorted(naming.labels)} ({naming.scheme} labels)"
            )

        tumour = labels > 0
        slices = self._ranked(area_per_slice(tumour))
        masks = {k: axial_slice_radiological(tumour, k).copy() for k in slices}
        return masks, labels.shape

    def _ranked(self, areas: np.ndarray) -> list[int]:
        return [k for k in top_slices(areas, self.slices_per_volume, self.min_slice_gap) if areas[k] > 0]

    @staticmethod
    def _check_shape(
        path: Path, shape: tuple[int, ...], expected: tuple[int, ...] | None, case: Case
    ) -> tuple[int, ...]:
        if expected is not None and shape != expected:
            raise BadInputError(
                path,
                f"volume shape {shape} differs from shape {expected} of the other volumes of case {case.case_id}; "
                "the sequences of a case must share one voxel grid",
            )
        return shape
