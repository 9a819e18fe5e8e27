"""Tests for the synthetic sources: formats, layouts, pool-split coverage, phantoms and determinism."""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import openpyxl
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from builder.splits import POOL_SPLITS, pool_split
from builder.synthetic import MIN_SUBJECTS, generate_sources, layouts
from builder.synthetic.layouts import (
    BRATS_ODD_SEGMENTATION,
    CHEXPERT_RELEASE,
    DOCUMENT_TIMESTAMP,
    MOSMED_SHEET,
    SIIM_RLE_HEADER,
    encode_rle,
    split_targets,
)
from builder.synthetic.phantoms import CHEST_FINDINGS, brain_mri, chest_ct, chest_radiograph
from tests.builder.conftest import DEMO_SUBJECTS

SUBJECTS = DEMO_SUBJECTS
SOURCES = ("chexpert", "siim", "brats", "mosmed")


@pytest.fixture(scope="module")
def sources(synthetic_sources: Path) -> dict[str, Path]:
    """The four source folders of the session's synthetic set (seed 0, ``DEMO_SUBJECTS`` per source)."""
    return {name: synthetic_sources / name for name in SOURCES}


@pytest.fixture(scope="module")
def repeated_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Path]]:
    """Two small runs with the same seed; the first fills an existing empty folder."""
    root = tmp_path_factory.mktemp("repeated")
    (root / "first").mkdir()
    first = generate_sources(root / "first", seed=3, subjects=6, progress=False)
    second = generate_sources(root / "second", seed=3, subjects=6, progress=False)
    return first, second


def load_nifti(path: Path) -> nib.Nifti1Image:
    """Load a NIfTI-1 file, failing the test for any other format."""
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image), path
    return image


def decode_rle(text: str, rows: int, columns: int) -> np.ndarray:
    """Decode SIIM relative RLE the way the competition's ``rle2mask(...).T`` does."""
    flat = np.zeros(rows * columns, dtype=bool)
    values = [int(value) for value in text.split()]
    position = 0
    for gap, length in zip(values[0::2], values[1::2], strict=True):
        position += gap
        flat[position : position + length] = True
        position += length
    return flat.reshape(columns, rows).T


def read_chexpert_rows(root: Path) -> list[dict[str, str]]:
    """Read train.csv and valid.csv rows, each with an added ``csv`` key naming its file."""
    rows: list[dict[str, str]] = []
    for name in ("train.csv", "valid.csv"):
        with (root / CHEXPERT_RELEASE / name).open(encoding="utf-8", newline="") as handle:
            rows.extend({**row, "csv": name} for row in csv.DictReader(handle))
    return rows


def read_rle_rows(root: Path) -> list[tuple[str, str]]:
    """Read train-rle.csv as (ImageId, EncodedPixels) pairs split at the first comma."""
    lines = (root / "train-rle.csv").read_text(encoding="utf-8").splitlines()
    pairs = [line.split(",", 1) for line in lines[1:]]
    return [(image_id, encoded) for image_id, encoded in pairs]


def subject_ids(source: str, root: Path) -> set[str]:
    """Return the subject ids of one written source, as the pool split hashes them."""
    if source == "chexpert":
        return {row["Path"].split("/")[2] for row in read_chexpert_rows(root)}
    if source == "siim":
        files = (root / "dicom-images-train").rglob("*.dcm")
        return {str(pydicom.dcmread(path, stop_before_pixels=True).PatientID) for path in files}
    if source == "brats":
        return {path.name for path in (root / "MICCAI_BraTS2020_TrainingData").iterdir() if path.is_dir()}
    return {path.name.removesuffix(".nii.gz") for path in (root / "studies").rglob("study_*.nii.gz")}


def file_bytes(root: Path) -> dict[str, bytes]:
    """Map every file under ``root`` (relative POSIX path) to its bytes."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_encode_rle_hand_example() -> None:
    # Columns top to bottom: (0,1,0), (1,1,0), (0,0,1). Runs start at 1, 3 and 8.
    mask = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    assert encode_rle(mask) == "1 1 1 2 3 1"


def test_encode_rle_column_major() -> None:
    # Read by rows this mask would give "0 1 2 1 1 1". By columns it gives runs [0, 2) and [5, 6).
    mask = np.array([[1, 0, 0], [1, 0, 1]], dtype=bool)
    assert encode_rle(mask) == "0 2 3 1"


def test_encode_rle_empty_mask() -> None:
    assert encode_rle(np.zeros((4, 5), dtype=bool)) == ""


def test_encode_rle_round_trip() -> None:
    radiograph = chest_radiograph(np.random.default_rng(5), (64, 48), {"Pneumothorax": 1.0})
    mask = radiograph.pneumothorax[0]
    assert mask.any()
    assert np.array_equal(decode_rle(encode_rle(mask), 64, 48), mask)


def test_encode_rle_rejects_3d() -> None:
    with pytest.raises(ValueError, match="expects a 2D mask"):
        encode_rle(np.zeros((2, 2, 2), dtype=bool))


def test_split_targets_shares() -> None:
    assert Counter(split_targets(40)) == {"train": 28, "validation": 4, "test": 8}


def test_generate_sources_roots(repeated_runs: tuple[dict[str, Path], dict[str, Path]]) -> None:
    roots = repeated_runs[0]
    assert list(roots) == list(SOURCES)
    for name, root in roots.items():
        assert root.parent.name == "first"
        assert root.name == name
        assert root.is_dir()


def test_generate_sources_no_staging_left(sources: dict[str, Path]) -> None:
    out_dir = sources["chexpert"].parent
    assert [path.name for path in out_dir.parent.iterdir()] == [out_dir.name]


def test_generate_sources_size(sources: dict[str, Path]) -> None:
    total = sum(path.stat().st_size for root in sources.values() for path in root.rglob("*") if path.is_file())
    assert total < 40 * 2**20


@pytest.mark.parametrize("source", SOURCES)
def test_pool_splits_two_subjects_each(sources: dict[str, Path], source: str) -> None:
    ids = subject_ids(source, sources[source])
    counts = Counter(pool_split(source, subject) for subject in ids)
    assert len(ids) == SUBJECTS
    for split in POOL_SPLITS:
        assert counts[split] >= 2, f"{source} {split} has {counts[split]} subjects"


def test_generate_sources_deterministic(repeated_runs: tuple[dict[str, Path], dict[str, Path]]) -> None:
    first, second = repeated_runs
    for source in SOURCES:
        assert file_bytes(first[source]) == file_bytes(second[source]), source


def test_generate_sources_seed_matters(tmp_path: Path) -> None:
    first = generate_sources(tmp_path / "first", seed=1, subjects=MIN_SUBJECTS, progress=False)
    second = generate_sources(tmp_path / "second", seed=2, subjects=MIN_SUBJECTS, progress=False)
    for source in SOURCES:
        assert file_bytes(first[source]) != file_bytes(second[source]), source


def test_generate_sources_rejects_nonempty_folder(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(FileExistsError, match="is not empty"):
        generate_sources(tmp_path / "out", progress=False)


@pytest.mark.parametrize(("seed", "subjects"), [(-1, 40), (0, MIN_SUBJECTS - 1)])
def test_generate_sources_rejects_arguments(tmp_path: Path, seed: int, subjects: int) -> None:
    with pytest.raises(ValueError, match="expected"):
        generate_sources(tmp_path / "out", seed=seed, subjects=subjects, progress=False)
    assert not (tmp_path / "out").exists()


def test_generate_sources_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(root: Path, seed: int, subjects: int, progress: layouts.Progress) -> None:
        raise KeyboardInterrupt

    # CheXpert is written before SIIM, so the staging folder has content when the run stops.
    monkeypatch.setitem(layouts.WRITERS, "siim", interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate_sources(tmp_path / "out", subjects=MIN_SUBJECTS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_chexpert_header_matches_sample(sources: dict[str, Path], samples_dir: Path) -> None:
    sample = (samples_dir / "chexpert" / CHEXPERT_RELEASE / "valid.csv").read_text(encoding="utf-8").splitlines()[0]
    for name in ("train.csv", "valid.csv"):
        written = (sources["chexpert"] / CHEXPERT_RELEASE / name).read_text(encoding="utf-8").splitlines()[0]
        assert written == sample, name


def test_chexpert_images_match_paths(sources: dict[str, Path]) -> None:
    rows = read_chexpert_rows(sources["chexpert"])
    assert Counter(row["Frontal/Lateral"] for row in rows).keys() == {"Frontal", "Lateral"}
    for row in rows:
        assert row["Path"].startswith(f"{CHEXPERT_RELEASE}/{row['csv'].removesuffix('.csv')}/patient")
        with Image.open(sources["chexpert"] / row["Path"]) as image:
            assert image.format == "JPEG"
            assert image.mode == "L"
            assert image.height == 320


def test_chexpert_cell_values(sources: dict[str, Path]) -> None:
    values: dict[str, set[str]] = defaultdict(set)
    for row in read_chexpert_rows(sources["chexpert"]):
        values[row["csv"]].update(row[name] for name in CHEST_FINDINGS)
    assert values["valid.csv"] == {"0.0", "1.0"}
    assert values["train.csv"] == {"0.0", "1.0", "-1.0", ""}


def test_chexpert_labels_in_every_split(sources: dict[str, Path]) -> None:
    positive: dict[str, Counter[str]] = defaultdict(Counter)
    negative: dict[str, Counter[str]] = defaultdict(Counter)
    for row in read_chexpert_rows(sources["chexpert"]):
        if row["Frontal/Lateral"] != "Frontal":
            continue
        split = pool_split("chexpert", row["Path"].split("/")[2])
        positive[split].update(name for name in CHEST_FINDINGS if row[name] == "1.0")
        negative[split].update(name for name in CHEST_FINDINGS if row[name] in ("0.0", ""))
    for split in POOL_SPLITS:
        for name in CHEST_FINDINGS:
            assert positive[split][name] >= 2, f"{name} is positive {positive[split][name]} times in {split}"
            assert negative[split][name] >= 1, f"{name} is never negative in {split}"


def test_chexpert_parents_follow_children(sources: dict[str, Path]) -> None:
    for row in read_chexpert_rows(sources["chexpert"]):
        if row["Edema"] == "1.0" or row["Consolidation"] == "1.0":
            assert row["Lung Opacity"] == "1.0", row["Path"]
        if row["Cardiomegaly"] == "1.0":
            assert row["Enlarged Cardiomediastinum"] == "1.0", row["Path"]
        if row["No Finding"] == "1.0":
            assert all(row[name] != "1.0" for name in CHEST_FINDINGS[1:]), row["Path"]


def test_siim_dicoms_read_back(sources: dict[str, Path]) -> None:
    files = sorted((sources["siim"] / "dicom-images-train").rglob("*.dcm"))
    assert len(files) > SUBJECTS
    for path in files:
        dataset = pydicom.dcmread(path)
        assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert dataset.Modality == "CR"
        assert dataset.PhotometricInterpretation == "MONOCHROME2"
        assert dataset.BitsAllocated == 8
        assert dataset.pixel_array.shape == (256, 256)
        assert dataset.pixel_array.dtype == np.uint8
        assert path.stem == dataset.SOPInstanceUID
        assert path.parent.name == dataset.SeriesInstanceUID
        assert path.parent.parent.name == dataset.StudyInstanceUID


def test_siim_dicom_uids_valid(sources: dict[str, Path]) -> None:
    for path in (sources["siim"] / "dicom-images-train").rglob("*.dcm"):
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        for uid in (dataset.SOPInstanceUID, dataset.SeriesInstanceUID, dataset.StudyInstanceUID):
            assert uid.is_valid, uid


def test_siim_rle_csv_format(sources: dict[str, Path]) -> None:
    lines = (sources["siim"] / "train-rle.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == SIIM_RLE_HEADER
    for line in lines[1:]:
        encoded = line.split(",", 1)[1]
        assert encoded.startswith(" "), line
        assert encoded == " -1" or encoded.strip().replace(" ", "").isdigit(), line


def test_siim_rle_one_image_two_rows(sources: dict[str, Path]) -> None:
    rows = read_rle_rows(sources["siim"])
    counts = Counter(image_id for image_id, _ in rows)
    assert sorted(counts.values())[-2:] == [1, 2]
    image_ids = {path.stem for path in (sources["siim"] / "dicom-images-train").rglob("*.dcm")}
    assert set(counts) == image_ids


def test_siim_half_have_pneumothorax(sources: dict[str, Path]) -> None:
    rows = read_rle_rows(sources["siim"])
    positive = {image_id for image_id, encoded in rows if encoded.strip() != "-1"}
    total = {image_id for image_id, _ in rows}
    assert math.isclose(len(positive) / len(total), 0.5, abs_tol=0.1)


def test_siim_masks_are_dark(sources: dict[str, Path]) -> None:
    paths = {path.stem: path for path in (sources["siim"] / "dicom-images-train").rglob("*.dcm")}
    masks: dict[str, np.ndarray] = {}
    for image_id, encoded in read_rle_rows(sources["siim"]):
        if encoded.strip() != "-1":
            masks[image_id] = masks.get(image_id, np.zeros((256, 256), dtype=bool)) | decode_rle(encoded, 256, 256)

    for image_id, mask in masks.items():
        pixels = pydicom.dcmread(paths[image_id]).pixel_array
        assert mask.sum() > 50, image_id
        assert pixels[mask].mean() < pixels[~mask].mean() - 40, image_id


def test_brats_volumes_read_back(sources: dict[str, Path]) -> None:
    data_dir = sources["brats"] / "MICCAI_BraTS2020_TrainingData"
    cases = sorted(path for path in data_dir.iterdir() if path.is_dir())
    assert len(cases) == SUBJECTS
    for case in cases:
        for sequence in ("flair", "t1", "t1ce", "t2"):
            image = load_nifti(case / f"{case.name}_{sequence}.nii.gz")
            assert image.shape == (64, 64, 40)
            assert image.get_data_dtype() == np.int16
            assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
            assert np.allclose(np.abs(np.diag(image.affine)[:3]), 1.0)


def test_brats_odd_segmentation_name(sources: dict[str, Path]) -> None:
    data_dir = sources["brats"] / "MICCAI_BraTS2020_TrainingData"
    odd = sorted(data_dir.glob(f"*/{BRATS_ODD_SEGMENTATION}"))
    assert len(odd) == 1
    assert odd[0].read_bytes()[344:348] == b"n+1\x00"
    assert not list(odd[0].parent.glob("*_seg.nii.gz"))
    assert len(list(data_dir.glob("*/*_seg.nii.gz"))) == SUBJECTS - 1


def test_brats_segmentation_labels(sources: dict[str, Path]) -> None:
    data_dir = sources["brats"] / "MICCAI_BraTS2020_TrainingData"
    seen = set()
    for path in [*data_dir.glob("*/*_seg.nii.gz"), *data_dir.glob(f"*/{BRATS_ODD_SEGMENTATION}")]:
        image = load_nifti(path)
        labels = set(np.unique(np.asarray(image.dataobj)).tolist())
        assert image.get_data_dtype() == np.uint8
        assert labels <= {0, 1, 2, 4}, path
        assert {1, 2} <= labels, path
        seen |= labels
    assert seen == {0, 1, 2, 4}


def test_brats_sequences_differ(sources: dict[str, Path]) -> None:
    case = sources["brats"] / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_001"
    volumes = {
        name: np.asarray(load_nifti(case / f"{case.name}_{name}.nii.gz").dataobj) for name in ("flair", "t1", "t2")
    }
    labels = np.asarray(load_nifti(case / f"{case.name}_seg.nii.gz").dataobj)
    oedema = labels == 2
    assert volumes["flair"][oedema].mean() > 1.5 * volumes["t1"][oedema].mean()
    assert volumes["t2"][oedema].mean() > 1.5 * volumes["t1"][oedema].mean()


def test_brats_tables(sources: dict[str, Path]) -> None:
    data_dir = sources["brats"] / "MICCAI_BraTS2020_TrainingData"
    mapping_lines = (data_dir / "name_mapping.csv").read_text(encoding="utf-8").splitlines()
    assert (
        mapping_lines[0]
        == "Grade,BraTS_2019_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2020_subject_ID"
    )
    grades = {line.split(",")[-1]: line.split(",")[0] for line in mapping_lines[1:]}
    assert set(grades.values()) == {"HGG", "LGG"}
    assert set(grades) == {path.name for path in data_dir.iterdir() if path.is_dir()}

    survival = (data_dir / "survival_info.csv").read_bytes().decode("utf-8")
    assert survival.startswith("Brats20ID,Age,Survival_days,Extent_of_Resection\r\n")
    assert ",ALIVE (361 days later)," in survival
    rows = [line.split(",") for line in survival.splitlines()[1:]]
    assert any(row[3] == "" for row in rows)
    assert all(grades[row[0]] == "HGG" for row in rows)


def test_brats_tumour_off_centre() -> None:
    phantom = brain_mri(np.random.default_rng(0), (64, 64, 40), "HGG")
    centroid_i = np.argwhere(phantom.segmentation > 0)[:, 0].mean()
    assert abs(centroid_i - 31.5) > 5
    # i increases toward the patient's left.
    assert (centroid_i > 31.5) == (phantom.tumour_side == "left")


def test_brain_mri_lgg_not_enhancing() -> None:
    phantom = brain_mri(np.random.default_rng(1), (32, 32, 20), "LGG")
    assert set(np.unique(phantom.segmentation).tolist()) == {0, 1, 2}


def test_brain_mri_rejects_grade() -> None:
    with pytest.raises(ValueError, match="Unknown tumour grade 'GBM'"):
        brain_mri(np.random.default_rng(0), (16, 16, 8), "GBM")


def test_mosmed_registry(sources: dict[str, Path]) -> None:
    workbook = openpyxl.load_workbook(sources["mosmed"] / "dataset_registry.xlsx")
    assert workbook.sheetnames == [MOSMED_SHEET]
    assert workbook.properties.created == DOCUMENT_TIMESTAMP
    assert workbook.properties.modified == DOCUMENT_TIMESTAMP
    rows = list(workbook[MOSMED_SHEET].iter_rows(values_only=True))
    assert rows[0] == ("study_id", "category", "study_file", "mask_file")
    assert len(rows) == SUBJECTS + 1

    for study_id, category, study_file, mask_file in rows[1:]:
        assert isinstance(study_id, int)
        assert study_file == f"/studies/{category}/study_{study_id:04d}.nii.gz"
        assert (sources["mosmed"] / study_file.lstrip("/")).is_file()
        if mask_file is not None:
            assert category == "CT-1"
            assert (sources["mosmed"] / mask_file.lstrip("/")).is_file()
    assert any(row[3] is not None for row in rows[1:])


def test_mosmed_volumes_read_back(sources: dict[str, Path]) -> None:
    for path in sorted((sources["mosmed"] / "studies").rglob("*.nii.gz")):
        image = load_nifti(path)
        assert image.shape == (64, 64, 24)
        assert image.get_data_dtype() == np.int16
        assert nib.aff2axcodes(image.affine) == ("L", "A", "S")
    for path in sorted((sources["mosmed"] / "masks").glob("*.nii.gz")):
        assert load_nifti(path).get_data_dtype() == np.uint8


def test_mosmed_masks_match_lesions(sources: dict[str, Path]) -> None:
    masks = sorted((sources["mosmed"] / "masks").glob("study_*_mask.nii.gz"))
    assert masks
    for path in masks:
        study = path.name.removesuffix("_mask.nii.gz")
        volume = np.asarray(load_nifti(sources["mosmed"] / "studies" / "CT-1" / f"{study}.nii.gz").dataobj)
        mask = np.asarray(load_nifti(path).dataobj) > 0
        assert mask.any(), path
        assert -650 < volume[mask].mean() < -350, path


def test_mosmed_ground_glass_grows(sources: dict[str, Path]) -> None:
    fractions: dict[str, list[float]] = defaultdict(list)
    for path in (sources["mosmed"] / "studies").rglob("*.nii.gz"):
        volume = np.asarray(load_nifti(path).dataobj)
        ground_glass = ((volume > -650) & (volume < -350)).sum()
        fractions[path.parent.name].append(ground_glass / (volume < -300).sum())
    means = {category: float(np.mean(values)) for category, values in fractions.items()}
    assert sorted(means) == ["CT-0", "CT-1", "CT-2", "CT-3", "CT-4"]
    assert means["CT-0"] < 0.02
    assert means["CT-4"] > means["CT-2"] > means["CT-0"]


def test_chest_ct_rejects_involvement() -> None:
    with pytest.raises(ValueError, match=r"expected a fraction in \[0, 1\)"):
        chest_ct(np.random.default_rng(0), (16, 16, 8), 1.0)


def test_chest_radiograph_cardiomegaly_wider() -> None:
    normal = chest_radiograph(np.random.default_rng(4), (160, 160), {}).image
    enlarged = chest_radiograph(np.random.default_rng(4), (160, 160), {"Cardiomegaly": 1.0}).image
    assert (enlarged > 150).sum() > 1.3 * (normal > 150).sum()


def test_chest_radiograph_two_sides() -> None:
    radiograph = chest_radiograph(np.random.default_rng(2), (128, 128), {"Pneumothorax": 1.0}, pneumothorax_sides=2)
    left_columns = [np.argwhere(mask)[:, 1].mean() for mask in radiograph.pneumothorax]
    assert len(left_columns) == 2
    assert min(left_columns) < 64 < max(left_columns)


def test_chest_radiograph_rejects_finding() -> None:
    with pytest.raises(ValueError, match="Unknown chest finding 'Nodule'"):
        chest_radiograph(np.random.default_rng(0), (32, 32), {"Nodule": 1.0})
