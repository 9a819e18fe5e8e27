"""The bad-input policy end to end: one table of damaged source files, each built under "error" and "skip".

Every case copies one source of a small synthetic tree, damages one file or
row, and builds it with ``build_and_export``. A rejected input must stop an
"error" build with a BadInputError naming the file (and the bad value where
there is one), and must be listed with its path in ``BuildResult.skipped`` of
a "skip" build that still contains every other row. An accepted input must build
under "error", with the pixel values or rows the case states.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import datasets
import nibabel as nib
import numpy as np
import openpyxl
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from builder.build import build_and_export
from builder.export import export_pool
from builder.policy import BadInputError, BadInputLog
from builder.synthetic import generate_sources

SUBJECTS = 8
CHEXPERT_RELEASE = "CheXpert-v1.0-small"
# The first train.csv row: patient00001/study1/view1_frontal.jpg, which gives a question.
CHEXPERT_TARGET = "chexpert-patient00001-study1-view1_frontal-"
BRATS_CASE = "BraTS20_Training_001"
BRATS_TARGET = f"brats-{BRATS_CASE}-"
MOSMED_STUDY = "study_0001"
MOSMED_TARGET = f"mosmed-{MOSMED_STUDY}-"
# The window given to the MONOCHROME1 case: stored values 50 to 149 span the output range.
WINDOW_CENTER, WINDOW_WIDTH = 100, 101

REJECTED, FATAL, ACCEPTED = "rejected", "fatal", "accepted"


@dataclass(frozen=True)
class Damage:
    """What a corruption function changed.

    Attributes:
        path: The file or folder that the error message and the skip summary must name.
        lost: Prefix of the question ids that a "skip" build leaves out; None when
            every question of the clean build must remain.
    """

    path: Path
    lost: str | None = None


@dataclass
class Build:
    """The rows of one exported build, keyed by question id, and the inputs it skipped."""

    rows: dict[str, dict]
    skipped: BadInputLog
    log_text: str = ""

    def image(self, question_id: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.rows[question_id]["image"]["bytes"])))


@dataclass(frozen=True)
class BadInput:
    """One row of the table: how to damage a source and what the build must do.

    Attributes:
        name: The test id.
        source: The source folder the corruption works on.
        corrupt: Damages the copied source folder and returns what it changed.
        outcome: ``rejected`` (error raises, skip leaves it out), ``fatal`` (both
            policies raise) or ``accepted`` (both policies build it).
        message: Regex the error message must match besides the path: the bad value or the reason.
        check: For accepted inputs, asserts on the damaged build given the clean build.
    """

    name: str
    source: str
    corrupt: Callable[[Path], Damage]
    outcome: str
    message: str = ""
    check: Callable[[Build, Build, Damage], None] | None = None


# --- Helpers that edit the native files ---


def _edit_csv(path: Path, row_index: int, column: str, value: str) -> Path:
    """Set one cell of a CSV file (row 0 is the first row after the header) and return the path."""
    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    rows[row_index + 1][rows[0].index(column)] = value
    with path.open("w", newline="", encoding="utf-8") as stream:
        csv.writer(stream, lineterminator="\n").writerows(rows)
    return path


def _edit_volume(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    """Rewrite a NIfTI file with ``change`` applied to its stored array, keeping affine and header."""
    image = nib.load(str(path))
    data = change(np.asanyarray(image.dataobj))
    header = image.header.copy()
    header.set_data_dtype(data.dtype)
    nib.save(nib.Nifti1Image(data, image.affine, header), str(path))
    return path


def _edit_dicom(path: Path, change: Callable[[pydicom.Dataset], None]) -> Path:
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _truncate(path: Path, size: int) -> Path:
    path.write_bytes(path.read_bytes()[:size])
    return path


def _chexpert_table(root: Path, name: str = "train.csv") -> Path:
    return root / CHEXPERT_RELEASE / name


def _chexpert_image(root: Path) -> Path:
    return root / CHEXPERT_RELEASE / "train" / "patient00001" / "study1" / "view1_frontal.jpg"


def _siim_target(root: Path) -> tuple[str, Path]:
    """Return the first ImageId with a pneumothorax mask and its DICOM file."""
    lines = (root / "train-rle.csv").read_text(encoding="utf-8").splitlines()[1:]
    image_id = min(line.split(",")[0] for line in lines if line.split(",")[1].strip() != "-1")
    return image_id, next(root.rglob(f"{image_id}.dcm"))


def _siim_set_rle(root: Path, value: str, keep_rows: bool = False) -> Damage:
    """Replace the RLE rows of the target image by one row with ``value``, or add it with ``keep_rows``."""
    image_id, _ = _siim_target(root)
    table = root / "train-rle.csv"
    lines = table.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if keep_rows or line.split(",")[0] != image_id]
    table.write_text("\n".join([*kept, f"{image_id}, {value}"]) + "\n", encoding="utf-8")
    return Damage(table, f"siim-{image_id}-")


def _brats_file(root: Path, token: str) -> Path:
    return root / "MICCAI_BraTS2020_TrainingData" / BRATS_CASE / f"{BRATS_CASE}_{token}.nii.gz"


def _mosmed_study(root: Path) -> Path:
    return root / "studies" / "CT-0" / f"{MOSMED_STUDY}.nii.gz"


def _edit_mosmed_registry(root: Path, column: str, value: str) -> Path:
    """Set one cell of the registry row of the target study and return the registry."""
    path = root / "dataset_registry.xlsx"
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.worksheets[0]
    header = [cell.value for cell in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        if MOSMED_STUDY in str(row[header.index("study_file")].value):
            row[header.index(column)].value = value
    workbook.save(path)
    return path


# --- CheXpert ---


def chexpert_parent_path(root: Path) -> Damage:
    return Damage(_edit_csv(_chexpert_table(root), 0, "Path", "../../x.jpg"), CHEXPERT_TARGET)


def chexpert_absolute_path(root: Path) -> Damage:
    # The absolute path names a real image inside the data folder and is still rejected.
    value = str(_chexpert_image(root).resolve())
    return Damage(_edit_csv(_chexpert_table(root), 0, "Path", value), CHEXPERT_TARGET)


def chexpert_invalid_label(root: Path) -> Damage:
    return Damage(_edit_csv(_chexpert_table(root), 0, "Edema", "2.0"), CHEXPERT_TARGET)


def chexpert_unknown_view(root: Path) -> Damage:
    return Damage(_edit_csv(_chexpert_table(root), 0, "Frontal/Lateral", "Sideways"), CHEXPERT_TARGET)


def chexpert_missing_image(root: Path) -> Damage:
    image = _chexpert_image(root)
    image.unlink()
    return Damage(image, CHEXPERT_TARGET)


def chexpert_truncated_jpeg(root: Path) -> Damage:
    return Damage(_truncate(_chexpert_image(root), 600), CHEXPERT_TARGET)


def chexpert_empty_valid_csv(root: Path) -> Damage:
    table = _chexpert_table(root, "valid.csv")
    table.write_bytes(b"")
    return Damage(table, "chexpert-patient645")


def chexpert_header_only_valid_csv(root: Path) -> Damage:
    table = _chexpert_table(root, "valid.csv")
    table.write_text(table.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    return Damage(table, "chexpert-patient645")


def chexpert_age_zero_sex_unknown(root: Path) -> Damage:
    table = _edit_csv(_chexpert_table(root), 0, "Age", "0")
    return Damage(_edit_csv(table, 0, "Sex", "Unknown"))


# --- SIIM-ACR ---


def siim_rle_odd_tokens(root: Path) -> Damage:
    return _siim_set_rle(root, "5 3 7")


def siim_rle_past_end(root: Path) -> Damage:
    # The synthetic images are 256 x 256 = 65536 pixels.
    return _siim_set_rle(root, "65530 100")


def siim_rle_negative(root: Path) -> Damage:
    return _siim_set_rle(root, "10 -5")


def siim_empty_and_mask(root: Path) -> Damage:
    return _siim_set_rle(root, "-1", keep_rows=True)


def siim_no_pixel_data(root: Path) -> Damage:
    image_id, path = _siim_target(root)
    return Damage(_edit_dicom(path, lambda dataset: dataset.__delattr__("PixelData")), f"siim-{image_id}-")


def siim_jpeg_ls(root: Path) -> Damage:
    def compress(dataset: pydicom.Dataset) -> None:
        dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
        dataset.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not a JPEG-LS stream \xff\xd9"])
        dataset["PixelData"].VR = "OB"

    image_id, path = _siim_target(root)
    return Damage(_edit_dicom(path, compress), f"siim-{image_id}-")


def siim_not_dicom(root: Path) -> Damage:
    image_id, path = _siim_target(root)
    path.write_bytes(b"this is not a DICOM file\n" * 20)
    return Damage(path, f"siim-{image_id}-")


def siim_csv_not_utf8(root: Path) -> Damage:
    table = root / "train-rle.csv"
    table.write_bytes(table.read_bytes().replace(b"ImageId", b"Image\xe9Id", 1))
    return Damage(table)


def _monochrome1_with_window(dataset: pydicom.Dataset) -> None:
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.WindowCenter, dataset.WindowWidth = WINDOW_CENTER, WINDOW_WIDTH


def siim_monochrome1(root: Path) -> Damage:
    image_id, path = _siim_target(root)
    return Damage(_edit_dicom(path, _monochrome1_with_window), f"siim-{image_id}-")


def _twelve_bits(dataset: pydicom.Dataset) -> None:
    """Store the 8-bit pixels p as 16p + 15 in 12 of 16 bits, so the white end is 4095."""
    pixels = dataset.pixel_array.astype(np.uint16) * 16 + 15
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelData = pixels.astype("<u2").tobytes()


def siim_twelve_bits(root: Path) -> Damage:
    image_id, path = _siim_target(root)
    return Damage(_edit_dicom(path, _twelve_bits), f"siim-{image_id}-")


# --- BraTS 2020 ---


def brats_truncated_volume(root: Path) -> Damage:
    return Damage(_truncate(_brats_file(root, "t2"), 3000), BRATS_TARGET)


def brats_missing_sequence(root: Path) -> Damage:
    _brats_file(root, "t1ce").unlink()
    return Damage(_brats_file(root, "t1ce").parent, BRATS_TARGET)


def brats_shape_mismatch(root: Path) -> Damage:
    return Damage(_edit_volume(_brats_file(root, "t1"), lambda data: data[:, :, :-1]), BRATS_TARGET)


def _set_first_tumour_voxel(data: np.ndarray, value: float, dtype: type) -> np.ndarray:
    changed = data.astype(dtype)
    changed[tuple(np.argwhere(data > 0)[0])] = value
    return changed


def brats_label_three(root: Path) -> Damage:
    change = partial(_set_first_tumour_voxel, value=3, dtype=np.uint8)
    return Damage(_edit_volume(_brats_file(root, "seg"), change), BRATS_TARGET)


def brats_label_fraction(root: Path) -> Damage:
    change = partial(_set_first_tumour_voxel, value=2.5, dtype=np.float32)
    return Damage(_edit_volume(_brats_file(root, "seg"), change), BRATS_TARGET)


def brats_label_nan(root: Path) -> Damage:
    change = partial(_set_first_tumour_voxel, value=np.nan, dtype=np.float32)
    return Damage(_edit_volume(_brats_file(root, "seg"), change), BRATS_TARGET)


def brats_label_rounding_noise(root: Path) -> Damage:
    def noisy(data: np.ndarray) -> np.ndarray:
        return np.where(data == 4, np.float32(3.9999998), data.astype(np.float32)).astype(np.float32)

    return Damage(_edit_volume(_brats_file(root, "seg"), noisy), BRATS_TARGET)


def brats_nan_voxels(root: Path) -> Damage:
    def with_nan(data: np.ndarray) -> np.ndarray:
        changed = data.astype(np.float32)
        changed[28:36, 28:36, :] = np.nan
        return changed

    return Damage(_edit_volume(_brats_file(root, "flair"), with_nan), BRATS_TARGET)


def brats_mapping_not_utf8(root: Path) -> Damage:
    table = root / "MICCAI_BraTS2020_TrainingData" / "name_mapping.csv"
    table.write_bytes(table.read_bytes().replace(b"TCGA", b"TCGA\xe9", 1))
    return Damage(table)


def brats_empty_survival_csv(root: Path) -> Damage:
    table = root / "MICCAI_BraTS2020_TrainingData" / "survival_info.csv"
    table.write_bytes(b"")
    return Damage(table)


# --- MosMedData ---


def mosmed_truncated_volume(root: Path) -> Damage:
    return Damage(_truncate(_mosmed_study(root), 2000), MOSMED_TARGET)


def mosmed_not_hounsfield(root: Path) -> Damage:
    return Damage(_edit_volume(_mosmed_study(root), np.zeros_like), MOSMED_TARGET)


def mosmed_registry_parent_path(root: Path) -> Damage:
    return Damage(_edit_mosmed_registry(root, "study_file", "/../../x.nii.gz"))


def mosmed_registry_category_mismatch(root: Path) -> Damage:
    _edit_mosmed_registry(root, "category", "CT-4")
    return Damage(_mosmed_study(root), MOSMED_TARGET)


def _middle_slice(data: np.ndarray) -> np.ndarray:
    middle = data.shape[2] // 2
    return data[:, :, middle : middle + 1]


def mosmed_one_slice(root: Path) -> Damage:
    return Damage(_edit_volume(_mosmed_study(root), _middle_slice), MOSMED_TARGET)


# --- Checks of accepted inputs: (damaged build, clean build, damage) ---


def same_rows(build: Build, clean: Build, damage: Damage) -> None:
    assert sorted(build.rows) == sorted(clean.rows)


def without_lost_rows(build: Build, clean: Build, damage: Damage) -> None:
    lost = {question_id for question_id in clean.rows if question_id.startswith(str(damage.lost))}
    assert lost
    assert sorted(build.rows) == sorted(set(clean.rows) - lost)


def inverted_pixels(build: Build, clean: Build, damage: Damage) -> None:
    (question_id,) = [key for key in clean.rows if key.startswith(str(damage.lost))]
    stored = clean.image(question_id).astype(np.float64)
    # The linear window of DICOM PS3.3 C.11.2.1.2.1 onto the 8-bit output range, then the inversion.
    center, width = WINDOW_CENTER - 0.5, WINDOW_WIDTH - 1
    windowed = np.clip(((stored - center) / width + 0.5) * 255.0, 0.0, 255.0)
    expected = np.rint(255.0 - windowed).astype(np.uint8)
    assert np.array_equal(build.image(question_id), expected)
    assert build.rows[question_id]["mask"] == clean.rows[question_id]["mask"]


def twelve_bit_pixels(build: Build, clean: Build, damage: Damage) -> None:
    (question_id,) = [key for key in clean.rows if key.startswith(str(damage.lost))]
    stored = clean.image(question_id).astype(np.float64) * 16 + 15
    # The 12-bit range 0..4095 maps onto 0..255. A cast to 8 bit would keep only stored % 256 instead.
    expected = np.rint(stored * 255.0 / 4095.0).astype(np.uint8)
    assert np.array_equal(build.image(question_id), expected)


def labels_read_as_four(build: Build, clean: Build, damage: Damage) -> None:
    assert sorted(build.rows) == sorted(clean.rows)
    for question_id in (key for key in clean.rows if key.startswith(BRATS_TARGET)):
        assert build.rows[question_id]["mask"] == clean.rows[question_id]["mask"], question_id
        assert build.rows[question_id]["image"] == clean.rows[question_id]["image"], question_id


def nan_shown_black(build: Build, clean: Build, damage: Damage) -> None:
    assert sorted(build.rows) == sorted(clean.rows)
    assert re.search(rf"{BRATS_CASE}_flair\.nii\.gz: \d+ NaN or infinite voxels shown as 0", build.log_text)
    image = build.image(f"{BRATS_TARGET}r0-flair")
    assert image.shape == clean.image(f"{BRATS_TARGET}r0-flair").shape
    # The NaN block (8 x 8 voxels at the volume centre) is black in the radiological view.
    assert (image[28:36, 28:36] == 0).all()


def one_slice_kept(build: Build, clean: Build, damage: Damage) -> None:
    assert f"{MOSMED_TARGET}r0" in build.rows
    assert build.rows[f"{MOSMED_TARGET}r0"]["slice_index"] == 0
    others = {key for key in clean.rows if key.startswith(MOSMED_TARGET) and not key.endswith("-r0")}
    assert sorted(build.rows) == sorted(set(clean.rows) - others)


BAD_INPUTS: list[BadInput] = [
    BadInput("chexpert-parent-path", "chexpert", chexpert_parent_path, REJECTED, r"'\.\./\.\./x\.jpg' leaves the data"),
    BadInput("chexpert-absolute-path", "chexpert", chexpert_absolute_path, REJECTED, r"view1_frontal\.jpg' is absolute"),
    BadInput("chexpert-invalid-label", "chexpert", chexpert_invalid_label, REJECTED, r"'Edema'.*Invalid label '2\.0'"),
    BadInput("chexpert-unknown-view", "chexpert", chexpert_unknown_view, REJECTED, r"Frontal/Lateral is 'Sideways'"),
    BadInput("chexpert-missing-image", "chexpert", chexpert_missing_image, REJECTED, r"image not found at"),
    BadInput("chexpert-truncated-jpeg", "chexpert", chexpert_truncated_jpeg, REJECTED, r"failed to read the image"),
    BadInput("chexpert-empty-csv", "chexpert", chexpert_empty_valid_csv, REJECTED, r"the CSV file is empty"),
    BadInput("chexpert-header-only-csv", "chexpert", chexpert_header_only_valid_csv, ACCEPTED, check=without_lost_rows),
    BadInput("chexpert-age-0-sex-unknown", "chexpert", chexpert_age_zero_sex_unknown, ACCEPTED, check=same_rows),
    BadInput("siim-rle-odd-tokens", "siim", siim_rle_odd_tokens, REJECTED, r"'5 3 7': 3 numbers, expected an even"),
    BadInput("siim-rle-past-end", "siim", siim_rle_past_end, REJECTED, r"'65530 100': the last run ends at pixel 65630"),
    BadInput("siim-rle-negative", "siim", siim_rle_negative, REJECTED, r"negative number '-5'"),
    BadInput("siim-empty-and-mask", "siim", siim_empty_and_mask, REJECTED, r"has both a '-1' row and a mask row"),
    BadInput("siim-no-pixel-data", "siim", siim_no_pixel_data, REJECTED, r"no \(7FE0,0010\) Pixel Data"),
    BadInput("siim-jpeg-ls", "siim", siim_jpeg_ls, REJECTED, r"JPEG-LS Lossless Image Compression"),
    BadInput("siim-not-dicom", "siim", siim_not_dicom, REJECTED, r"not a DICOM Part 10 file"),
    BadInput("siim-csv-not-utf8", "siim", siim_csv_not_utf8, FATAL, r"not valid UTF-8 \(byte 5: b'\\xe9'\)"),
    BadInput("siim-monochrome1", "siim", siim_monochrome1, ACCEPTED, check=inverted_pixels),
    BadInput("siim-12-bits-in-16", "siim", siim_twelve_bits, ACCEPTED, check=twelve_bit_pixels),
    BadInput("brats-truncated-nii-gz", "brats", brats_truncated_volume, REJECTED, r"cannot read the NIfTI volume"),
    BadInput("brats-missing-sequence", "brats", brats_missing_sequence, REJECTED, rf"no T1ce volume; expected {BRATS_CASE}_t1ce"),
    BadInput("brats-shape-mismatch", "brats", brats_shape_mismatch, REJECTED, r"shape \(64, 64, 39\) differs"),
    BadInput("brats-label-3", "brats", brats_label_three, REJECTED, r"labels \[3\] are outside \[0, 1, 2, 4\]"),
    BadInput("brats-label-2.5", "brats", brats_label_fraction, REJECTED, r"label value 2\.5 at voxel"),
    BadInput("brats-label-nan", "brats", brats_label_nan, REJECTED, r"the label volume contains NaN"),
    BadInput("brats-label-3.9999998", "brats", brats_label_rounding_noise, ACCEPTED, check=labels_read_as_four),
    BadInput("brats-nan-voxels", "brats", brats_nan_voxels, ACCEPTED, check=nan_shown_black),
    BadInput("brats-csv-not-utf8", "brats", brats_mapping_not_utf8, REJECTED, r"not valid UTF-8 \(byte \d+: b'\\xe9'\)"),
    BadInput("brats-empty-csv", "brats", brats_empty_survival_csv, REJECTED, r"the CSV file is empty"),
    BadInput("mosmed-truncated-nii-gz", "mosmed", mosmed_truncated_volume, REJECTED, r"cannot read the NIfTI volume"),
    BadInput("mosmed-not-hounsfield", "mosmed", mosmed_not_hounsfield, REJECTED, r"values span 0\.\.0"),
    BadInput("mosmed-registry-parent-path", "mosmed", mosmed_registry_parent_path, REJECTED, r"'\.\./\.\./x\.nii\.gz' leaves"),
    BadInput("mosmed-registry-category", "mosmed", mosmed_registry_category_mismatch, REJECTED, r"gives category 'CT-4'"),
    BadInput("mosmed-one-slice", "mosmed", mosmed_one_slice, ACCEPTED, check=one_slice_kept),
]


def _cases(*outcomes: str) -> list:
    return [pytest.param(case, id=case.name) for case in BAD_INPUTS if case.outcome in outcomes]


# --- Building ---


def read_export(out_dir: Path) -> dict[str, dict]:
    """Return every exported row keyed by question id."""
    rows = {}
    for path in sorted(out_dir.glob("data/*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["id"]] = row
    return rows


def run_build(data_dir: Path, out_dir: Path, source: str, policy: str) -> Build:
    result = build_and_export(data_dir, out_dir, sources=(source,), on_bad_input=policy)
    return Build(read_export(out_dir), result.skipped)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs") / "sources"
    generate_sources(root, seed=0, subjects=SUBJECTS, progress=False)
    return root


@pytest.fixture(scope="module")
def clean_builds(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Build]:
    """Build each source of the undamaged template once, on first request."""
    builds: dict[str, Build] = {}

    def get(source: str) -> Build:
        if source not in builds:
            out_dir = tmp_path_factory.mktemp(f"clean-{source}") / "export"
            builds[source] = run_build(template, out_dir, source, "error")
        return builds[source]

    return get


def damaged_copy(template: Path, tmp_path: Path, case: BadInput) -> tuple[Path, Damage]:
    data_dir = tmp_path / "sources"
    shutil.copytree(template / case.source, data_dir / case.source)
    return data_dir, case.corrupt(data_dir / case.source)


def listed(skipped: BadInputLog, path: Path) -> bool:
    return any(str(path) in line for line in skipped.summary_lines())


def snapshot(folder: Path) -> dict[str, str]:
    """Return the SHA-256 of every file under ``folder``, keyed by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- The table, under each policy ---


def test_bad_input_table_size() -> None:
    assert len([case for case in BAD_INPUTS if case.outcome != ACCEPTED]) >= 25
    assert len({case.name for case in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("case", _cases(REJECTED, FATAL))
def test_bad_input_error(case: BadInput, template: Path, tmp_path: Path) -> None:
    data_dir, damage = damaged_copy(template, tmp_path, case)
    out_dir = tmp_path / "export"

    with pytest.raises(BadInputError) as caught:
        run_build(data_dir, out_dir, case.source, "error")

    message = str(caught.value)
    assert str(damage.path) in message
    assert re.search(case.message, message), message
    assert not out_dir.exists()
    assert not list(tmp_path.glob(".export.*"))


@pytest.mark.parametrize("case", _cases(REJECTED))
def test_bad_input_skip(case: BadInput, template: Path, tmp_path: Path, clean_builds: Callable[[str], Build]) -> None:
    data_dir, damage = damaged_copy(template, tmp_path, case)
    clean = clean_builds(case.source)

    build = run_build(data_dir, tmp_path / "export", case.source, "skip")

    lines = [line for line in build.skipped.summary_lines() if str(damage.path) in line]
    assert lines, build.skipped.summary_lines()
    assert any(re.search(case.message, line) for line in lines), lines
    lost = {key for key in clean.rows if damage.lost is not None and key.startswith(damage.lost)}
    assert (damage.lost is None) or lost, f"the clean build has no question starting with {damage.lost!r}"
    assert not lost & set(build.rows)
    assert sorted(build.rows) == sorted(set(clean.rows) - lost)


@pytest.mark.parametrize("case", _cases(FATAL))
def test_bad_input_fatal_under_skip(case: BadInput, template: Path, tmp_path: Path) -> None:
    data_dir, damage = damaged_copy(template, tmp_path, case)

    with pytest.raises(BadInputError, match=re.escape(str(damage.path))):
        run_build(data_dir, tmp_path / "export", case.source, "skip")


@pytest.mark.parametrize("case", _cases(ACCEPTED))
def test_bad_input_accepted(
    case: BadInput,
    template: Path,
    tmp_path: Path,
    clean_builds: Callable[[str], Build],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data_dir, damage = damaged_copy(template, tmp_path, case)
    caplog.set_level(logging.WARNING)

    build = run_build(data_dir, tmp_path / "export", case.source, "error")
    build.log_text = caplog.text

    assert case.check is not None
    case.check(build, clean_builds(case.source), damage)


def test_bad_input_warn_logs(template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    case = next(case for case in BAD_INPUTS if case.name == "brats-truncated-nii-gz")
    data_dir, damage = damaged_copy(template, tmp_path, case)
    caplog.set_level(logging.WARNING, logger="builder.policy")

    build = run_build(data_dir, tmp_path / "export", case.source, "warn")

    assert listed(build.skipped, damage.path)
    warnings = [record.getMessage() for record in caplog.records if record.name == "builder.policy"]
    assert any(str(damage.path) in message and "cannot read the NIfTI volume" in message for message in warnings)


# --- Nothing already written is damaged ---


def test_failed_build_keeps_export(template: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "export"
    run_build(template, out_dir, "brats", "error")
    before = snapshot(out_dir)
    case = next(case for case in BAD_INPUTS if case.name == "brats-truncated-nii-gz")
    data_dir, _ = damaged_copy(template, tmp_path, case)

    with pytest.raises(BadInputError, match="cannot read the NIfTI volume"):
        build_and_export(data_dir, out_dir, overwrite=True, sources=("brats",))

    assert snapshot(out_dir) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export", "sources"]


def test_failed_export_keeps_export(template: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "export"
    run_build(template, out_dir, "siim", "error")
    before = snapshot(out_dir)
    train = datasets.load_dataset(str(out_dir), "all", split="train")
    # The staging folder exists when the second split is found to lack its triplet column.
    pool = {"train": train, "validation": train.remove_columns("triplet")}

    with pytest.raises(ValueError, match="validation split to export has no 'triplet' column"):
        export_pool(pool, out_dir, overwrite=True)

    assert snapshot(out_dir) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]
