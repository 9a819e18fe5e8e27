"""Write synthetic phantoms in the native file layouts of CheXpert, SIIM-ACR, BraTS 2020 and MosMedData.

Each ``write_<source>`` function writes one source folder as a user would
download it: the same folder names, file names, file formats, CSV headers and
spreadsheet sheet. The pixels come from :mod:`builder.synthetic.phantoms`.

Determinism: every random draw comes from a generator seeded with
``[seed, source code, index]``; DICOM files carry fixed dates and UIDs, the
gzip streams of ``.nii.gz`` files have mtime 0 (nibabel's default), and the
spreadsheet has fixed document properties and zip entry times.

Subject ids: the pool split hashes (source, subject id), so ids decide which
subject lands in train, validation or test. The writers skip ids so that each
pool split gets its nominal share of subjects (70/10/20 %) for any subject
count, and they deal labels per split so that each label occurs in every split
that is large enough.
"""

from __future__ import annotations

import csv
import io
import itertools
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import openpyxl
from openpyxl.writer.excel import ExcelWriter
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from builder.splits import POOL_SPLITS, SPLIT_FRACTIONS, pool_split
from builder.synthetic.phantoms import CHEST_FINDINGS, brain_mri, chest_ct, chest_radiograph, chest_radiograph_lateral

# Called with the number of subjects finished since the last call (tqdm's ``update``).
Progress = Callable[[int], object]

SOURCE_CODES: dict[str, int] = {"chexpert": 1, "siim": 2, "brats": 3, "mosmed": 4}

# pydicom's UID root (pydicom.uid.PYDICOM_ROOT_UID), under which generate_uid() creates UIDs for any user.
UID_ROOT = "1.2.826.0.1.3680043.8.498"
# The zip format cannot store times before 1980; this is also what the real MosMed registry carries.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
DOCUMENT_TIMESTAMP = datetime(2020, 1, 1, 0, 0, 0)
# Namespace of the uuid5 PatientIDs of the synthetic SIIM set.
_SIIM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "crossmed/synthetic/siim")

CHEXPERT_RELEASE = "CheXpert-v1.0-small"
CHEXPERT_HEADER: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEST_FINDINGS)
# valid.csv patients of the real release are numbered from 64541 on.
CHEXPERT_VALID_FIRST_PATIENT = 64541
_CHEXPERT_CHILDREN = frozenset({"Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis"})
_CHEXPERT_FRONTAL_ROWS = 320

SIIM_IMAGE_SIZE = 256
# The real SIIM images are 1024 pixels of 0.168 mm, so 256 pixels cover the same field at 0.672 mm.
SIIM_PIXEL_SPACING = 0.672
SIIM_RLE_HEADER = "ImageId, EncodedPixels"

BRATS_FOLDER = "MICCAI_BraTS2020_TrainingData"
BRATS_SHAPE = (64, 64, 40)
BRATS_SEQUENCES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
# Real case 355 names its segmentation this way; the last synthetic case copies it.
BRATS_ODD_SEGMENTATION = "W39_1998.09.19_Segm.nii"
NAME_MAPPING_HEADER = (
    "Grade",
    "BraTS_2019_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2020_subject_ID",
)
SURVIVAL_HEADER = ("Brats20ID", "Age", "Survival_days", "Extent_of_Resection")
# Dealt per split in this order, so any split with two cases has both grades. The real training set
# has about four HGG cases per LGG case, and 3:1 keeps LGG cases in small splits.
_GRADE_CYCLE = ("HGG", "LGG", "HGG", "HGG")

MOSMED_SHAPE = (64, 64, 24)
MOSMED_SPACING = (5.5, 5.5, 8.0)
MOSMED_CATEGORIES: tuple[str, ...] = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")
MOSMED_SHEET = "MosMedData COVID19_1110"
MOSMED_COLUMNS = ("study_id", "category", "study_file", "mask_file")
# Fraction of lung inside a lesion per category: MosMedData grades CT-1 up to 25 %,
# CT-2 25-50 %, CT-3 50-75 % and CT-4 above 75 %.
_MOSMED_INVOLVEMENT: dict[str, tuple[float, float]] = {
    "CT-0": (0.0, 0.0),
    "CT-1": (0.05, 0.22),
    "CT-2": (0.28, 0.47),
    "CT-3": (0.53, 0.72),
    "CT-4": (0.78, 0.92),
}


def subject_rng(seed: int, source: str, index: int) -> np.random.Generator:
    """Return the generator for one subject (or image) of one source, independent of all others."""
    return np.random.default_rng([seed, SOURCE_CODES[source], index])


def source_rng(seed: int, source: str) -> np.random.Generator:
    """Return the generator for the plan of one source (labels, grades, categories)."""
    return np.random.default_rng([seed, SOURCE_CODES[source]])


def split_targets(count: int) -> list[str]:
    """Return a pool split per subject, interleaved so that every prefix stays close to the split fractions.

    Each subject goes to the split that is furthest below its share so far,
    so 40 subjects give exactly 28 train, 4 validation and 8 test.
    """
    counts = dict.fromkeys(POOL_SPLITS, 0)
    targets = []
    for index in range(count):
        deficits = [
            share * (index + 1) - counts[split] for split, share in zip(POOL_SPLITS, SPLIT_FRACTIONS, strict=True)
        ]
        split = POOL_SPLITS[int(np.argmax(deficits))]
        counts[split] += 1
        targets.append(split)
    return targets


def pick_subject_ids(source: str, targets: Sequence[str], candidates: Iterable[str]) -> list[str]:
    """Choose one id per target split from ``candidates``, in order, keeping those that hash to that split.

    Candidates that hash to another split wait for a later subject of that
    split, so few candidate ids go unused.

    Args:
        source: The source name hashed with each id, as the pool split does.
        targets: The pool split wanted for each subject.
        candidates: An endless iterable of distinct ids, e.g. ``patient00001``, ``patient00002``, ...

    Returns:
        One id per target, in the order of ``targets``.
    """
    waiting: dict[str, deque[str]] = {split: deque() for split in POOL_SPLITS}
    stream = iter(candidates)
    chosen = []
    for target in targets:
        while not waiting[target]:
            candidate = next(stream)
            waiting[pool_split(source, candidate)].append(candidate)
        chosen.append(waiting[target].popleft())
    return chosen


class _Cycle:
    """Deal items in rounds, shuffled per round, so each item comes up once per round."""

    def __init__(self, items: Sequence[str], rng: np.random.Generator) -> None:
        self._items = list(items)
        self._rng = rng
        self._queue: list[str] = []

    def deal(self) -> str:
        """Return the next item, starting a new round when the current one is used up."""
        item = self.deal_except(())
        if item is None:
            raise RuntimeError("A cycle with no items cannot deal")
        return item

    def deal_except(self, exclude: Collection[str]) -> str | None:
        """Return the next item not in ``exclude``, starting a new round when the current one is used up.

        Returns None when every item left in the round is excluded, and those
        items stay for the next calls.
        """
        if not self._queue:
            self._queue = [self._items[index] for index in self._rng.permutation(len(self._items))]
        for position, item in enumerate(self._queue):
            if item not in exclude:
                return self._queue.pop(position)
        return None


def encode_rle(mask: np.ndarray) -> str:
    """Encode a mask in the relative run-length format of SIIM-ACR ``train-rle.csv``.

    Pixels are read column by column (down each column, then the next column
    to the right), as the competition's ``rle2mask(...).T`` decodes them. The
    output is pairs ``gap length``: the gap counts the background pixels since
    the end of the previous run (or since pixel 0 for the first run).

    Args:
        mask: 2D array (rows, columns); nonzero pixels are foreground.

    Returns:
        The pairs joined by single spaces, or ``""`` for an empty mask (the CSV
        writes ``-1`` for an image without pneumothorax).

    Raises:
        ValueError: when ``mask`` is not 2D.
    """
    if mask.ndim != 2:
        raise ValueError(f"RLE encoding expects a 2D mask, got shape {mask.shape}")

    flat = np.asarray(mask, dtype=bool).flatten(order="F").astype(np.int8)
    edges = np.diff(np.concatenate(([0], flat, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)

    previous_ends = np.concatenate(([0], ends[:-1]))
    pairs = np.stack([starts - previous_ends, ends - starts], axis=1)
    return " ".join(str(value) for value in pairs.ravel())


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], line_end: str = "\n") -> None:
    """Write a CSV file with a header line. Pass ``line_end="\\r\\n"`` for tables shipped with Windows line ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator=line_end)
        writer.writerow(header)
        writer.writerows(rows)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, time_unit: str = "unknown") -> None:
    """Save ``data`` with ``affine`` as qform and sform (code 1, scanner) in mm, gzip-compressed for ``.gz`` paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", time_unit)
    nib.save(image, str(path))


@dataclass
class _ChexpertStudy:
    """Labels and views of one CheXpert study. ``drawn`` maps findings to phantom strengths."""

    cells: dict[str, str]
    drawn: dict[str, float]
    lateral: bool
    projection: str


@dataclass
class _ChexpertPatient:
    """One CheXpert patient, the CSV that lists it (``train`` or ``valid``) and its studies."""

    patient_id: str
    number: int
    folder: str
    sex: str
    age: int
    studies: list[_ChexpertStudy] = field(default_factory=list)


def _chexpert_cells(dealt: set[str], valid_csv: bool, rng: np.random.Generator) -> dict[str, str]:
    """Return the 14 observation cells of one study whose dealt positive findings are ``dealt``.

    Parents follow their children, so a parent is never a negative label on an
    image that shows its child: a parenchymal finding makes Lung Opacity
    positive and Cardiomegaly makes Enlarged Cardiomediastinum positive.
    valid.csv has only 0.0 and 1.0; in train.csv the other cells are 0.0, blank
    or -1.0, and No Finding is mostly blank.
    """
    positives = set(dealt)
    if positives & _CHEXPERT_CHILDREN:
        positives.add("Lung Opacity")
    if "Cardiomegaly" in positives:
        positives.add("Enlarged Cardiomediastinum")
    normal = positives == {"No Finding"}

    cells = {}
    for name in CHEST_FINDINGS:
        if name in positives:
            cells[name] = "1.0"
        elif valid_csv:
            cells[name] = "0.0"
        elif name == "No Finding":
            cells[name] = str(rng.choice(["", "0.0"], p=[0.8, 0.2]))
        elif normal:
            cells[name] = str(rng.choice(["0.0", ""]))
        else:
            cells[name] = str(rng.choice(["0.0", "", "-1.0"], p=[0.4, 0.5, 0.1]))
    return cells


def _chexpert_study(findings: _Cycle, valid_csv: bool, rng: np.random.Generator) -> _ChexpertStudy:
    """Plan one study: one dealt finding, a quarter of the time a second one, and the cells that follow."""
    first = findings.deal()
    dealt = {first}
    if first != "No Finding" and rng.random() < 0.25:
        second = findings.deal_except({"No Finding", first})
        if second is not None:
            dealt.add(second)

    cells = _chexpert_cells(dealt, valid_csv, rng)
    drawn = {name: 1.0 for name in dealt if name != "No Finding"}
    drawn.update({name: 0.5 for name, cell in cells.items() if cell == "-1.0"})
    projection = "AP" if rng.random() < 0.7 else "PA"
    return _ChexpertStudy(cells=cells, drawn=drawn, lateral=bool(rng.random() < 0.3), projection=projection)


def _chexpert_ids(targets: Sequence[str], valid_indices: Collection[int]) -> dict[int, str]:
    """Return the patient id of each subject index, numbering valid.csv patients from 64541 on."""
    train_indices = [index for index in range(len(targets)) if index not in valid_indices]
    ids: dict[int, str] = {}
    for indices, first in ((train_indices, 1), (sorted(valid_indices), CHEXPERT_VALID_FIRST_PATIENT)):
        candidates = (f"patient{number:05d}" for number in itertools.count(first))
        chosen = pick_subject_ids("chexpert", [targets[index] for index in indices], candidates)
        ids.update(zip(indices, chosen, strict=True))
    return ids


def _chexpert_study_counts(
    targets: Sequence[str], valid_indices: Collection[int], rng: np.random.Generator
) -> list[int]:
    """Return the number of studies per subject index: one in valid.csv, two to five in train.csv.

    A split with fewer than two studies per observation gets extra train.csv
    studies (up to ten per patient), so that two rounds of dealt findings
    complete and each observation is positive at least twice in it.
    """
    counts = [1 if index in valid_indices else int(rng.integers(2, 6)) for index in range(len(targets))]
    wanted = 2 * len(CHEST_FINDINGS)
    for split in POOL_SPLITS:
        members = [index for index, target in enumerate(targets) if target == split]
        growable = [index for index in members if index not in valid_indices]
        position = 0
        while sum(counts[member] for member in members) < wanted and any(counts[i] < 10 for i in growable):
            index = growable[position % len(growable)]
            counts[index] = min(counts[index] + 1, 10)
            position += 1
    return counts


def _plan_chexpert(seed: int, subjects: int) -> list[_ChexpertPatient]:
    """Plan patients, their CSV, their studies and labels, sorted by patient id.

    Every eighth patient is listed in valid.csv with one study, like the real
    validation set; the others are in train.csv with two to five studies.
    """
    rng = source_rng(seed, "chexpert")
    targets = split_targets(subjects)
    valid_indices = {index for index in range(subjects) if index % 8 == 7} or {subjects - 1}
    ids = _chexpert_ids(targets, valid_indices)
    study_counts = _chexpert_study_counts(targets, valid_indices, rng)

    findings = {split: _Cycle(CHEST_FINDINGS, rng) for split in POOL_SPLITS}
    patients = []
    for index in sorted(range(subjects), key=lambda i: ids[i]):
        valid_csv = index in valid_indices
        patient = _ChexpertPatient(
            patient_id=ids[index],
            number=int(ids[index].removeprefix("patient")),
            folder="valid" if valid_csv else "train",
            sex=str(rng.choice(["Male", "Female"])),
            age=int(rng.integers(18, 91)),
        )
        cycle = findings[targets[index]]
        patient.studies = [_chexpert_study(cycle, valid_csv, rng) for _ in range(study_counts[index])]
        patients.append(patient)
    return patients


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    """Save an 8-bit grayscale array as a baseline JPEG (quality 90)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=90)


def _write_chexpert_patient(release: Path, patient: _ChexpertPatient, rng: np.random.Generator) -> list[list[str]]:
    """Write the JPEGs of one patient and return its CSV rows."""
    rows = []
    for number, study in enumerate(patient.studies, start=1):
        relative = f"{patient.folder}/{patient.patient_id}/study{number}"
        shape = (_CHEXPERT_FRONTAL_ROWS, int(rng.integers(300, 391)))
        frontal = chest_radiograph(rng, shape, study.drawn).image
        _save_jpeg(release / relative / "view1_frontal.jpg", frontal)

        labels = [study.cells[name] for name in CHEST_FINDINGS]
        path = f"{CHEXPERT_RELEASE}/{relative}/view1_frontal.jpg"
        rows.append([path, patient.sex, str(patient.age), "Frontal", study.projection, *labels])
        if study.lateral:
            lateral = chest_radiograph_lateral(rng, (_CHEXPERT_FRONTAL_ROWS, _CHEXPERT_FRONTAL_ROWS), study.drawn)
            _save_jpeg(release / relative / "view2_lateral.jpg", lateral)
            path = f"{CHEXPERT_RELEASE}/{relative}/view2_lateral.jpg"
            rows.append([path, patient.sex, str(patient.age), "Lateral", "", *labels])
    return rows


def write_chexpert(root: Path, seed: int, subjects: int, progress: Progress) -> None:
    """Write ``root/CheXpert-v1.0-small`` with ``train.csv``, ``valid.csv`` and frontal and lateral JPEGs.

    Frontal JPEGs are 320 rows by 300-390 columns, laterals 320 by 320, 8-bit
    grayscale. Each pool split deals the 14 observations in shuffled rounds to
    its studies, one or two per study. Each split also gets at least 28
    studies where its train.csv patients can hold them, so every observation
    is positive at least twice in every split.

    Args:
        root: The source folder to create (``<out_dir>/chexpert``).
        seed: The generator seed.
        subjects: The number of patients.
        progress: Called with 1 after each patient.
    """
    release = root / CHEXPERT_RELEASE
    rows: dict[str, list[list[str]]] = {"train": [], "valid": []}
    for patient in _plan_chexpert(seed, subjects):
        rows[patient.folder].extend(
            _write_chexpert_patient(release, patient, subject_rng(seed, "chexpert", patient.number))
        )
        progress(1)

    for folder, folder_rows in rows.items():
        _write_csv(release / f"{folder}.csv", CHEXPERT_HEADER, folder_rows)


@dataclass(frozen=True)
class _SiimImage:
    """One planned SIIM image: its patient, its global number and its pneumothorax sides (0, 1 or 2)."""

    patient_id: str
    number: int
    pneumothorax_sides: int


def _siim_patient_id(number: int) -> str:
    """Return a UUID-shaped PatientID, as the SIIM files have, fixed for each number."""
    return str(uuid.uuid5(_SIIM_NAMESPACE, f"patient-{number}"))


def _plan_siim(subjects: int) -> list[_SiimImage]:
    """Plan the images: one per patient and a second for every eighth patient.

    Within each pool split, images alternate between pneumothorax and none, so
    half have one. The first pneumothorax is bilateral, which gives one image
    two RLE rows.
    """
    targets = split_targets(subjects)
    patients = pick_subject_ids("siim", targets, (_siim_patient_id(number) for number in itertools.count(1)))
    positive_next = dict.fromkeys(POOL_SPLITS, True)
    images: list[_SiimImage] = []
    bilateral_done = False

    for index, (patient_id, split) in enumerate(zip(patients, targets, strict=True)):
        for _ in range(2 if index % 8 == 3 else 1):
            sides = 0
            if positive_next[split]:
                sides = 1 if bilateral_done else 2
                bilateral_done = True
            positive_next[split] = not positive_next[split]
            images.append(_SiimImage(patient_id=patient_id, number=len(images) + 1, pneumothorax_sides=sides))
    return images


def _siim_dataset(image: _SiimImage, uids: dict[str, UID], pixels: np.ndarray, rng: np.random.Generator) -> Dataset:
    """Build the DICOM dataset of one image with the attributes the real SIIM files carry."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uids["instance"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(f"{UID_ROOT}.0.1")

    dataset = Dataset()
    dataset.file_meta = meta
    view = "PA" if rng.random() < 0.6 else "AP"
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = uids["instance"]
    # The real files carry the placeholder date 1901-01-01, which also keeps the bytes fixed.
    dataset.StudyDate = "19010101"
    dataset.StudyTime = "000000.00"
    dataset.Modality = "CR"
    dataset.ConversionType = "WSD"
    dataset.SeriesDescription = f"view: {view}"
    dataset.PatientName = image.patient_id
    dataset.PatientID = image.patient_id
    dataset.PatientSex = str(rng.choice(["M", "F"]))
    dataset.PatientAge = f"{int(rng.integers(18, 91)):03d}Y"
    dataset.BodyPartExamined = "CHEST"
    dataset.ViewPosition = view
    dataset.StudyInstanceUID = uids["study"]
    dataset.SeriesInstanceUID = uids["series"]
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = 1
    dataset.PixelSpacing = [SIIM_PIXEL_SPACING, SIIM_PIXEL_SPACING]
    dataset.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=8, generate_instance_uid=False)
    return dataset


def _write_siim_image(root: Path, image: _SiimImage, seed: int) -> list[str]:
    """Write one DICOM under ``dicom-images-train/<study>/<series>/`` and return its RLE rows."""
    rng = subject_rng(seed, "siim", image.number)
    findings = {"Pneumothorax": 1.0} if image.pneumothorax_sides else {}
    radiograph = chest_radiograph(rng, (SIIM_IMAGE_SIZE, SIIM_IMAGE_SIZE), findings, max(image.pneumothorax_sides, 1))
    # UID components: 2 study, 3 series, 4 instance, as in the real SIIM UIDs.
    uids = {
        kind: UID(f"{UID_ROOT}.{seed}.{code}.{image.number}")
        for kind, code in (("study", 2), ("series", 3), ("instance", 4))
    }

    folder = root / "dicom-images-train" / uids["study"] / uids["series"]
    folder.mkdir(parents=True, exist_ok=True)
    dataset = _siim_dataset(image, uids, radiograph.image, rng)
    dataset.save_as(folder / f"{uids['instance']}.dcm", enforce_file_format=True)

    if not radiograph.pneumothorax:
        return [f"{uids['instance']}, -1"]
    return [f"{uids['instance']}, {encode_rle(mask)}" for mask in radiograph.pneumothorax]


def write_siim(root: Path, seed: int, subjects: int, progress: Progress) -> None:
    """Write ``root/dicom-images-train`` (256x256 8-bit MONOCHROME2 CR DICOMs) and ``root/train-rle.csv``.

    The CSV has the header ``ImageId, EncodedPixels`` and one row per mask
    (``<SOPInstanceUID>, <rle>``) or ``<SOPInstanceUID>, -1``. The rows are
    shuffled, so the two rows of the bilateral pneumothorax need not be adjacent.

    Args:
        root: The source folder to create (``<out_dir>/siim``).
        seed: The generator seed; it is also a component of every UID.
        subjects: The number of patients.
        progress: Called with 1 after each patient.
    """
    rows: list[str] = []
    for _, patient_images in itertools.groupby(_plan_siim(subjects), key=lambda image: image.patient_id):
        for image in patient_images:
            rows.extend(_write_siim_image(root, image, seed))
        progress(1)

    order = source_rng(seed, "siim").permutation(len(rows))
    text = "\n".join([SIIM_RLE_HEADER, *(rows[index] for index in order)]) + "\n"
    (root / "train-rle.csv").write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class _BratsCase:
    """One planned BraTS case: its folder name, number and grade."""

    case_id: str
    number: int
    grade: str


def _plan_brats(subjects: int) -> list[_BratsCase]:
    """Plan the cases sorted by id, dealing grades per pool split in a 3:1 HGG:LGG cycle."""
    targets = split_targets(subjects)
    candidates = (f"BraTS20_Training_{number:03d}" for number in itertools.count(1))
    ids = pick_subject_ids("brats", targets, candidates)

    dealt = dict.fromkeys(POOL_SPLITS, 0)
    cases = []
    for case_id, split in zip(ids, targets, strict=True):
        grade = _GRADE_CYCLE[dealt[split] % len(_GRADE_CYCLE)]
        dealt[split] += 1
        cases.append(_BratsCase(case_id=case_id, number=int(case_id.rsplit("_", 1)[1]), grade=grade))
    return sorted(cases, key=lambda case: case.case_id)


def _brats_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """Return the 1 mm LPS affine of the real BraTS 2020 files: diag(-1, -1, 1), j offset by rows - 1."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    return affine


def _write_brats_case(data_dir: Path, case: _BratsCase, seed: int, odd_segmentation: bool) -> None:
    """Write the four sequences and the segmentation of one case."""
    phantom = brain_mri(subject_rng(seed, "brats", case.number), BRATS_SHAPE, case.grade)
    folder = data_dir / case.case_id
    affine = _brats_affine(BRATS_SHAPE)
    for sequence in BRATS_SEQUENCES:
        _save_nifti(folder / f"{case.case_id}_{sequence}.nii.gz", phantom.volumes[sequence], affine)

    segmentation = BRATS_ODD_SEGMENTATION if odd_segmentation else f"{case.case_id}_seg.nii.gz"
    _save_nifti(folder / segmentation, phantom.segmentation, affine)


def _brats_tables(cases: Sequence[_BratsCase], rng: np.random.Generator) -> tuple[list[list[str]], list[list[str]]]:
    """Return the rows of name_mapping.csv (every case) and survival_info.csv (HGG cases only).

    About a third of the cases are new in 2020 and have ``NA`` for the 2019 and
    2018 ids. The first survival row reads ``ALIVE (361 days later)``, as one
    real row does, and about a sixth have a blank Extent_of_Resection.
    """
    mapping: list[list[str]] = []
    survival: list[list[str]] = []
    for case in cases:
        new_in_2020 = rng.random() < 0.33
        older = ("NA", "NA") if new_in_2020 else (f"BraTS19_SYN_{case.number}_1", f"Brats18_SYN_{case.number}_1")
        tcga = f"TCGA-SY-{case.number:04d}" if rng.random() < 0.5 else "NA"
        mapping.append([case.grade, *older, tcga, case.case_id])
        if case.grade != "HGG":
            continue

        days = "ALIVE (361 days later)" if not survival else str(int(rng.integers(20, 1600)))
        resection = "" if rng.random() < 0.17 else str(rng.choice(["GTR", "STR", "NA"], p=[0.5, 0.1, 0.4]))
        survival.append([case.case_id, f"{rng.uniform(20, 85):.3f}", days, resection])
    return mapping, survival


def write_brats(root: Path, seed: int, subjects: int, progress: Progress) -> None:
    """Write ``root/MICCAI_BraTS2020_TrainingData`` with one folder per case and the two clinical CSVs.

    Volumes are 64x64x40 voxels of 1 mm with the real LPS affine: ``int16``
    FLAIR, T1, T1ce and T2, and a ``uint8`` segmentation with labels 0, 1, 2
    and 4. Files are ``.nii.gz``, except the last case, whose segmentation is
    the uncompressed ``W39_1998.09.19_Segm.nii`` as in real case 355.
    ``survival_info.csv`` has Windows line ends, as the real file does.

    Args:
        root: The source folder to create (``<out_dir>/brats``).
        seed: The generator seed.
        subjects: The number of cases.
        progress: Called with 1 after each case.
    """
    data_dir = root / BRATS_FOLDER
    cases = _plan_brats(subjects)
    for case in cases:
        _write_brats_case(data_dir, case, seed, odd_segmentation=case is cases[-1])
        progress(1)

    mapping, survival = _brats_tables(cases, source_rng(seed, "brats"))
    _write_csv(data_dir / "name_mapping.csv", NAME_MAPPING_HEADER, mapping)
    _write_csv(data_dir / "survival_info.csv", SURVIVAL_HEADER, survival, line_end="\r\n")


@dataclass(frozen=True)
class _MosmedStudy:
    """One planned MosMed study: its number, category and whether it has a lesion mask."""

    number: int
    category: str
    has_mask: bool

    @property
    def study_file(self) -> str:
        """The study path as the registry writes it, relative to the source root with a leading ``/``."""
        return f"/studies/{self.category}/study_{self.number:04d}.nii.gz"

    @property
    def mask_file(self) -> str:
        """The mask path as the registry writes it."""
        return f"/masks/study_{self.number:04d}_mask.nii.gz"


def _plan_mosmed(subjects: int) -> list[_MosmedStudy]:
    """Plan the studies sorted by number, cycling categories per pool split and masking every other CT-1 study."""
    targets = split_targets(subjects)
    ids = pick_subject_ids("mosmed", targets, (f"study_{number:04d}" for number in itertools.count(1)))

    dealt = dict.fromkeys(POOL_SPLITS, 0)
    planned = []
    for study_id, split in zip(ids, targets, strict=True):
        category = MOSMED_CATEGORIES[dealt[split] % len(MOSMED_CATEGORIES)]
        dealt[split] += 1
        planned.append((int(study_id.removeprefix("study_")), category))

    studies = []
    ct1_seen = 0
    for number, category in sorted(planned):
        has_mask = category == "CT-1" and ct1_seen % 2 == 0
        ct1_seen += category == "CT-1"
        studies.append(_MosmedStudy(number=number, category=category, has_mask=has_mask))
    return studies


def _mosmed_affine() -> np.ndarray:
    """Return an LAS affine like the real MosMed files (x flipped), with the grid centred in x and y."""
    spacing = np.asarray(MOSMED_SPACING)
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [
        spacing[0] * (MOSMED_SHAPE[0] - 1) / 2,
        -spacing[1] * (MOSMED_SHAPE[1] - 1) / 2,
        -spacing[2] * MOSMED_SHAPE[2],
    ]
    return affine


def _write_mosmed_study(root: Path, study: _MosmedStudy, seed: int) -> None:
    """Write one study volume and, where planned, its lesion mask."""
    rng = subject_rng(seed, "mosmed", study.number)
    low, high = _MOSMED_INVOLVEMENT[study.category]
    volume, lesion = chest_ct(rng, MOSMED_SHAPE, float(rng.uniform(low, high)) if high > 0 else 0.0)

    affine = _mosmed_affine()
    _save_nifti(root / study.study_file.lstrip("/"), volume, affine, time_unit="sec")
    if study.has_mask:
        _save_nifti(root / study.mask_file.lstrip("/"), lesion.astype(np.uint8), affine, time_unit="sec")


def _write_registry(path: Path, studies: Sequence[_MosmedStudy]) -> None:
    """Write ``dataset_registry.xlsx``: one sheet, study_id as a number, paths with a leading ``/``.

    ``openpyxl``'s ``Workbook.save`` stamps the current time into the document
    properties, so the workbook goes through ``ExcelWriter`` with fixed
    properties instead, and its zip entries get fixed times.
    """
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = MOSMED_SHEET
    sheet.append(MOSMED_COLUMNS)
    for study in studies:
        sheet.append([study.number, study.category, study.study_file, study.mask_file if study.has_mask else None])

    workbook.properties.creator = "CrossMed synthetic generator"
    workbook.properties.created = DOCUMENT_TIMESTAMP
    workbook.properties.modified = DOCUMENT_TIMESTAMP
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(workbook, archive).write_data()

    # Repack with fixed entry times: openpyxl stamps the current time or a temporary file's mtime.
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            info = zipfile.ZipInfo(entry.filename, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            target.writestr(info, source.read(entry.filename))


def write_mosmed(root: Path, seed: int, subjects: int, progress: Progress) -> None:
    """Write ``root/studies/CT-k/study_NNNN.nii.gz``, ``root/masks/`` and ``root/dataset_registry.xlsx``.

    Studies are ``int16`` Hounsfield units on a 64x64x24 grid of 5.5 x 5.5 x
    8 mm with an LAS affine. Masks are ``uint8`` (1 = lesion) on the same grid.
    The lesion fraction of the lungs grows with the category: none for CT-0,
    most of the lung for CT-4.

    Args:
        root: The source folder to create (``<out_dir>/mosmed``).
        seed: The generator seed.
        subjects: The number of studies.
        progress: Called with 1 after each study.
    """
    studies = _plan_mosmed(subjects)
    for category in MOSMED_CATEGORIES:
        (root / "studies" / category).mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)

    for study in studies:
        _write_mosmed_study(root, study, seed)
        progress(1)
    _write_registry(root / "dataset_registry.xlsx", studies)


WRITERS: dict[str, Callable[[Path, int, int, Progress], None]] = {
    "chexpert": write_chexpert,
    "siim": write_siim,
    "brats": write_brats,
    "mosmed": write_mosmed,
}
