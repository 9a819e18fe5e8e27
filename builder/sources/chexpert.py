"""CheXpert v1.0 chest radiographs as X-ray / Lung / Classification questions.

The release folder (``CheXpert-v1.0-small`` or ``CheXpert-v1.0``) contains
``train.csv``, ``valid.csv`` and the JPEG files. Each CSV row is one image:
``Path`` (starting with the release folder name), ``Sex``, ``Age``,
``Frontal/Lateral``, ``AP/PA`` and 14 observation columns whose cells are
``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank (not
mentioned in the report).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from enum import Enum
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from builder.mat import XRAY_LUNG_CLASSIFICATION, check_choice
from builder.paths import resolve_inside
from builder.policy import BadInputError, BadInputLog
from builder.sources.base import Case, ItemSpec, Sample, SourceReader
from builder.tables import read_csv_rows

logger = logging.getLogger(__name__)

RELEASE_FOLDERS: tuple[str, ...] = ("CheXpert-v1.0-small", "CheXpert-v1.0")
CSV_FILES: tuple[str, ...] = ("train.csv", "valid.csv")

# The 14 observation columns of train.csv and valid.csv, in file order.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The label hierarchy of the CheXpert paper (Irvin et al., AAAI 2019, figure 2): a
# positive child finding implies its parents, even where the parent's cell is blank.
PARENT_FINDINGS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("Enlarged Cardiomediastinum",),
    "Lung Lesion": ("Lung Opacity",),
    "Edema": ("Lung Opacity",),
    "Consolidation": ("Lung Opacity",),
    "Pneumonia": ("Lung Opacity", "Consolidation"),
    "Atelectasis": ("Lung Opacity",),
}

UNCERTAIN_POLICIES: tuple[str, ...] = ("ignore", "positive", "negative")
BLANK_POLICIES: tuple[str, ...] = ("negative", "ignore")
VIEW_CHOICES: tuple[str, ...] = ("frontal", "all")

ITEM_KEY = "finding"
VIEW = "image"

_PATIENT_PATTERN = re.compile(r"patient\d+")
_STUDY_PATTERN = re.compile(r"study\d+")


class LabelState(Enum):
    """The four states of a CheXpert observation cell."""

    POSITIVE = "1.0"
    NEGATIVE = "0.0"
    UNCERTAIN = "-1.0"
    BLANK = ""


def parse_label(cell: str) -> LabelState:
    """Parse one observation cell.

    The cell is compared as a number, never through ``bool``: ``bool(-1.0)`` and
    ``bool(float("nan"))`` are both True in Python.

    Args:
        cell: The text of the cell, e.g. ``"1.0"``, ``"-1"``, ``" 0.0"`` or ``""``.

    Returns:
        The label state; blank or whitespace-only cells are ``BLANK``.

    Raises:
        ValueError: when the cell is not blank and not numerically 1, 0 or -1.
    """
    text = cell.strip()
    if not text:
        return LabelState.BLANK

    try:
        value = float(text)
    except ValueError as error:
        raise ValueError(f"Invalid label {cell!r}: expected 1.0, 0.0, -1.0 or blank") from error

    states = {1.0: LabelState.POSITIVE, 0.0: LabelState.NEGATIVE, -1.0: LabelState.UNCERTAIN}
    if value not in states:
        raise ValueError(f"Invalid label {cell!r}: expected 1.0, 0.0, -1.0 or blank")
    return states[value]


def resolve_label(state: LabelState, uncertain: str = "ignore", blank: str = "negative") -> bool | None:
    """Decide whether a finding may be the answer, a distractor or neither, under the two policies.

    Args:
        state: The parsed cell.
        uncertain: ``"ignore"``, ``"positive"`` or ``"negative"`` for ``-1.0`` cells.
        blank: ``"negative"`` or ``"ignore"`` for blank cells.

    Returns:
        True for a finding that may be the answer, False for one that may be a
        distractor, None for one that is neither.

    Raises:
        ValueError: when a policy is not one of the values above.
    """
    check_choice("uncertain", uncertain, UNCERTAIN_POLICIES)
    check_choice("blank", blank, BLANK_POLICIES)
    if state is LabelState.POSITIVE:
        return True
    if state is LabelState.NEGATIVE:
        return False

    policy = uncertain if state is LabelState.UNCERTAIN else blank
    if policy == "ignore":
        return None
    return policy == "positive"


def choose_answer(case_id: str, positives: list[str]) -> str:
    """Pick one positive finding, the same one for a case id on every run and machine.

    Args:
        case_id: Seeds the choice through SHA-256, because Python's ``hash`` of a
            string changes between processes.
        positives: The candidate findings. Must not be empty.

    Returns:
        One element of ``positives``.

    Raises:
        ValueError: when ``positives`` is empty.
    """
    if not positives:
        raise ValueError(f"No positive finding to choose from for case {case_id!r}")

    ordered = sorted(positives)
    digest = hashlib.sha256(case_id.encode("utf-8")).digest()
    return ordered[int.from_bytes(digest[:8], "big") % len(ordered)]


class CheXpertReader(SourceReader):
    """Reads CheXpert v1.0 (the small JPEG release or the full one) from ``train.csv`` and ``valid.csv``.

    Each image with at least one positive finding gives one question: the
    answer is one positive finding (the CSV column name, e.g. ``"Pleural
    Effusion"``) chosen from a hash of the case id, and the distractors are the
    findings negative for that image. Rows with Age 0 or Sex ``Unknown`` are kept.

    Args:
        root: The folder that contains the release folder, or the release folder itself.
        bad_inputs: The bad-input policy and the record of skipped inputs.
        uncertain: ``"ignore"`` (default) leaves ``-1.0`` findings out of both the
            answer and the distractors; ``"positive"`` or ``"negative"`` counts them as such.
        blank: ``"negative"`` (default) counts findings the report does not
            mention as negative; ``"ignore"`` leaves them out.
        views: ``"frontal"`` (default) keeps rows whose ``Frontal/Lateral`` is
            ``Frontal``; ``"all"`` keeps lateral views too.

    Note:
        Blank means "not mentioned in the report", not "absent". In the CheXpert
        train.csv, patient00003/study1 has Edema 1.0 and a blank Lung Opacity,
        although edema shows as lung opacity. So a finding that the CheXpert
        label hierarchy puts above a positive one (``PARENT_FINDINGS``, e.g. Lung
        Opacity above Edema) is never a distractor for that image.
    """

    name = "chexpert"
    triplets = (XRAY_LUNG_CLASSIFICATION,)
    download_instructions = (
        "Request CheXpert v1.0 from Stanford at https://stanfordmlgroup.github.io/competitions/chexpert/ "
        "(the small JPEG release CheXpert-v1.0-small or the full CheXpert-v1.0), unzip it, and put the "
        "release folder, which contains train.csv, valid.csv, train/ and valid/, under <data_dir>/chexpert/."
    )

    _DEFAULTS: dict[str, str] = {"uncertain": "ignore", "blank": "negative", "views": "frontal"}

    def __init__(self, root: Path, bad_inputs: BadInputLog | None = None, **options: object) -> None:
        super().__init__(root, bad_inputs, **options)
        unknown = sorted(set(options) - set(self._DEFAULTS))
        if unknown:
            raise ValueError(f"Unknown CheXpert option(s) {unknown}: expected any of {sorted(self._DEFAULTS)}")

        settings = {**self._DEFAULTS, **{key: str(value) for key, value in options.items()}}
        self.uncertain = check_choice("uncertain", settings["uncertain"], UNCERTAIN_POLICIES)
        self.blank = check_choice("blank", settings["blank"], BLANK_POLICIES)
        self.views = check_choice("views", settings["views"], VIEW_CHOICES)
        self.release_dir = self._find_release_dir()
        # Absolute without resolving symbolic links, like the paths that resolve_inside returns.
        self._absolute_root = Path(os.path.abspath(self.root))
        self._absolute_release_dir = Path(os.path.abspath(self.release_dir))

    def list_cases(self) -> list[Case]:
        """Read ``train.csv`` and ``valid.csv`` and return one case per image with a positive finding.

        Returns:
            Cases sorted by ``case_id`` (``patientNNNNN-studyN-viewN_frontal``),
            each with one item whose view is ``"image"``.

        Raises:
            BadInputError: under the default policy, for a table that is empty,
                not UTF-8 or lacks a column. Also for a row with an invalid
                label, an unsafe or unrecognized ``Path``, a missing image, an
                unknown ``Frontal/Lateral`` value or a repeated image.
        """
        cases: dict[str, Case] = {}
        seen: set[str] = set()
        without_positive = 0
        for csv_path, index, row in self._iter_rows():
            case = self._case_from_row(csv_path, index, row)
            if case is None:
                continue
            if case.case_id in seen:
                reason = f"row {index}: Path {row['Path']!r} repeats case id {case.case_id} of an earlier row"
                self.bad_inputs.report(self.name, csv_path, reason)
                continue
            seen.add(case.case_id)
            if not case.items:
                without_positive += 1
                continue
            cases[case.case_id] = case

        logger.info("CheXpert: %d cases with a positive finding in %s", len(cases), self.release_dir)
        logger.debug("CheXpert: %d images have no positive finding and give no question", without_positive)
        return [cases[case_id] for case_id in sorted(cases)]

    def load(self, case: Case) -> dict[str, Sample]:
        """Decode the JPEG of one case as 8-bit grayscale.

        Returns:
            ``{"image": Sample}`` with a ``uint8`` (rows, columns) image as stored
            in the JPEG, no mask, and ``slice_index`` -1.

        Raises:
            BadInputError: naming the file when it is missing or cannot be decoded.
        """
        relative = case.files[0]
        path = resolve_inside(self.root, relative, self.root)
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L"), dtype=np.uint8)
        except (OSError, Image.DecompressionBombError) as error:
            # OSError covers a missing file, an unidentified format
            # (UnidentifiedImageError) and a truncated JPEG.
            raise BadInputError(path, f"failed to read the image of case {case.case_id} ({error})") from error

        return {VIEW: Sample(image=pixels, mask=None, slice_index=-1, source_file=relative)}

    def _find_release_dir(self) -> Path:
        if any((self.root / name).is_file() for name in CSV_FILES):
            return self.root

        found = [self.root / name for name in RELEASE_FOLDERS if (self.root / name).is_dir()]
        if len(found) > 1:
            raise ValueError(
                f"Both {found[0].name} and {found[1].name} are in {self.root}; "
                "pass the release folder you want to use as the CheXpert root"
            )
        if not found or not any((found[0] / name).is_file() for name in CSV_FILES):
            raise FileNotFoundError(
                f"No train.csv or valid.csv found in {self.root} or in a release folder "
                f"({', '.join(RELEASE_FOLDERS)}) under it. {self.download_instructions}"
            )
        return found[0]

    def _iter_rows(self) -> Iterator[tuple[Path, int, dict[str, str]]]:
        required = ("Path", "Frontal/Lateral", *OBSERVATIONS)
        for name in CSV_FILES:
            csv_path = self.release_dir / name
            if not csv_path.is_file():
                logger.info("CheXpert: %s not found, reading the other table only", csv_path)
                continue
            try:
                rows = read_csv_rows(csv_path, required)
            except BadInputError as error:
                # An empty or undecodable table goes through the policy like a bad row,
                # so "skip" still reads the other table.
                self.bad_inputs.report(self.name, error.path, error.reason)
                continue
            for index, row in enumerate(rows, start=1):
                yield csv_path, index, row

    def _case_from_row(self, csv_path: Path, index: int, row: dict[str, str]) -> Case | None:
        """Build the case of one CSV row, or return None when the row is skipped."""
        where = f"row {index} (Path {row['Path']!r})"
        view = row["Frontal/Lateral"].strip()
        if view not in ("Frontal", "Lateral"):
            reason = f"{where}: Frontal/Lateral is {view!r}; expected Frontal or Lateral"
            self.bad_inputs.report(self.name, csv_path, reason)
            return None
        if self.views == "frontal" and view != "Frontal":
            return None

        labels = self._parse_labels(csv_path, where, row)
        if labels is None:
            return None
        image_path = self._resolve_image(csv_path, where, row["Path"])
        if image_path is None:
            return None

        ids = self._image_ids(csv_path, where, image_path)
        if ids is None:
            return None
        patient, case_id = ids

        metadata = {
            "table": csv_path.name,
            "sex": row.get("Sex", "").strip(),
            "age": row.get("Age", "").strip(),
            "frontal_lateral": view,
            "ap_pa": row.get("AP/PA", "").strip(),
        }
        relative = image_path.relative_to(self._absolute_root).as_posix()
        items = self._items(case_id, labels)
        return Case(self.name, case_id, patient, (relative,), items, metadata)

    def _parse_labels(self, csv_path: Path, where: str, row: dict[str, str]) -> dict[str, bool | None] | None:
        labels: dict[str, bool | None] = {}
        for column in OBSERVATIONS:
            try:
                state = parse_label(row[column])
            except ValueError as error:
                self.bad_inputs.report(self.name, csv_path, f"{where}, column {column!r}: {error}")
                return None
            labels[column] = resolve_label(state, self.uncertain, self.blank)
        return labels

    def _resolve_image(self, csv_path: Path, where: str, value: str) -> Path | None:
        # Path values start with the release folder name. Dropping it lets the
        # root be either the release folder or the folder that contains it.
        parts = PurePosixPath(value.strip().replace("\\", "/")).parts
        relative = "/".join(parts[1:]) if len(parts) > 1 and parts[0] in RELEASE_FOLDERS else value
        try:
            path = resolve_inside(self.release_dir, relative, csv_path)
        except BadInputError as error:
            self.bad_inputs.report(self.name, csv_path, f"{where}: {error.reason}")
            return None

        if not path.is_file():
            self.bad_inputs.report(self.name, csv_path, f"{where}: image not found at {path}")
            return None
        return path

    def _image_ids(self, csv_path: Path, where: str, image_path: Path) -> tuple[str, str] | None:
        """Derive (patient id, case id) from ``.../patientNNNNN/studyN/viewN_frontal.jpg``."""
        parts = image_path.relative_to(self._absolute_release_dir).parts
        patient = next((part for part in parts if _PATIENT_PATTERN.fullmatch(part)), None)
        study = next((part for part in parts if _STUDY_PATTERN.fullmatch(part)), None)
        if patient is None or study is None:
            self.bad_inputs.report(
                self.name, csv_path, f"{where}: expected a path of the form <split>/patientNNNNN/studyN/<view>.jpg"
            )
            return None
        return patient, f"{patient}-{study}-{image_path.stem}"

    def _items(self, case_id: str, labels: dict[str, bool | None]) -> tuple[ItemSpec, ...]:
        positives = [column for column, label in labels.items() if label is True]
        if not positives:
            return ()

        implied = {parent for finding in positives for parent in PARENT_FINDINGS.get(finding, ())}
        negatives = frozenset(column for column, label in labels.items() if label is False and column not in implied)
        # The most specific findings are the answer candidates: Edema rather than the Lung Opacity it implies.
        specific = [finding for finding in positives if finding not in implied]
        answer = choose_answer(case_id, specific)
        return (ItemSpec(ITEM_KEY, XRAY_LUNG_CLASSIFICATION, VIEW, answer=answer, distractors=negatives),)
