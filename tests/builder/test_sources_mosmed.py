from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import openpyxl
import pytest

from builder.mat import CT_LUNG_CLASSIFICATION
from builder.policy import BadInputError, BadInputLog
from builder.sources import reader_class
from builder.sources.mosmed import CATEGORIES, MosMedReader, read_registry
from builder.volumes import read_geometry

SHAPE = (32, 32, 12)
# MosMedData masks, which share the voxel grid of their studies, are stored LAS with 8 mm slices.
AFFINE = np.diag([-0.8, 0.8, 8.0, 1.0])

# Lung rectangles per slice: slice -> (rows, columns) of each of the two lungs.
# Areas 72, 60, 50, 32, 18, so with a gap of 5 the ranks are slices 6, 1, 11.
LUNG_SIZES = {6: (6, 6), 7: (6, 5), 3: (5, 5), 1: (4, 4), 11: (3, 3)}
EXPECTED_SLICES = [6, 1, 11]

AIR_HU, BODY_HU, LUNG_HU, MARKER_HU = -1024, 30, -800, 1000
STUDIES = {"study_0001": "CT-0", "study_0255": "CT-1", "study_0256": "CT-1", "study_1109": "CT-4"}


def chest_phantom(
    shape: tuple[int, int, int] = SHAPE, lung_sizes: dict[int, tuple[int, int]] = LUNG_SIZES
) -> np.ndarray:
    """Return a CT volume in HU, array axes LAS: air, a body block, two lungs, and a dense marker.

    The marker sits in the patient's right-anterior body on every slice: the
    first axis increases towards Left, so the right is at low first-axis
    indices, and anterior is at high second-axis indices.
    """
    hu = np.full(shape, AIR_HU, dtype=np.int16)
    hu[4:28, 4:28, :] = BODY_HU
    hu[5:7, 25:27, :] = MARKER_HU
    for k, (rows, columns) in lung_sizes.items():
        hu[8 : 8 + rows, 10 : 10 + columns, k] = LUNG_HU
        hu[18 : 18 + rows, 10 : 10 + columns, k] = LUNG_HU
    return hu


def _save(path: Path, data: np.ndarray, inter: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, AFFINE)
    if inter is not None:
        image.header.set_slope_inter(1.0, inter)
    nib.save(image, str(path))
    return path


def write_registry(path: Path, rows: list[tuple[object, ...]], header: tuple[str, ...] | None = None) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "MosMedData COVID19_1110"
    sheet.append(header or ("study_id", "category", "study_file", "mask_file"))
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def registry_rows(studies: dict[str, str]) -> list[tuple[object, ...]]:
    rows = []
    for name, category in sorted(studies.items()):
        mask = f"/masks/{name}_mask.nii.gz" if name == "study_0255" else None
        rows.append((int(name[-4:]), category, f"/studies/{category}/{name}.nii.gz", mask))
    return rows


def write_dataset(root: Path, studies: dict[str, str] = STUDIES, registry: bool = True) -> Path:
    """Write a COVID19_1110 folder: synthetic studies, one mask, and a registry that also lists absent studies."""
    for name, category in studies.items():
        _save(root / "studies" / category / f"{name}.nii.gz", chest_phantom())
    _save(root / "masks" / "study_0255_mask.nii.gz", np.zeros(SHAPE, dtype=np.int16))
    (root / "studies" / "CT-0" / "notes.txt").write_text("not a study", encoding="utf-8")
    if registry:
        rows = registry_rows({**studies, "study_0500": "CT-2"})
        write_registry(root / "dataset_registry.xlsx", rows)
    return root


@pytest.fixture
def mosmed_root(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "mosmed")


def test_mosmed_registry_lookup() -> None:
    assert reader_class("mosmed") is MosMedReader


def test_mosmed_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"mosmed source folder not found: .*absent"):
        MosMedReader(tmp_path / "absent")


def test_mosmed_root_without_studies(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No studies/ folder in .* or one level below it"):
        MosMedReader(tmp_path)


def test_mosmed_several_dataset_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "studies").mkdir(parents=True)
    (tmp_path / "b" / "studies").mkdir(parents=True)
    with pytest.raises(ValueError, match="Several MosMedData folders under"):
        MosMedReader(tmp_path)


def test_mosmed_list_cases(mosmed_root: Path) -> None:
    cases = MosMedReader(mosmed_root).list_cases()
    assert [case.case_id for case in cases] == sorted(STUDIES)
    assert [case.subject_id for case in cases] == sorted(STUDIES)
    assert cases[1].files == ("studies/CT-1/study_0255.nii.gz",)
    assert [case.metadata["category"] for case in cases] == ["CT-0", "CT-1", "CT-1", "CT-4"]


def test_mosmed_items(mosmed_root: Path) -> None:
    case = MosMedReader(mosmed_root).list_cases()[3]
    assert [item.key for item in case.items] == ["r0", "r1", "r2"]
    for item in case.items:
        assert item.view == item.key
        assert item.triplet == CT_LUNG_CLASSIFICATION
        assert item.answer == "CT-4"
        assert item.distractors == frozenset({"CT-0", "CT-1", "CT-2", "CT-3"})


def test_mosmed_mask_metadata(mosmed_root: Path) -> None:
    cases = {case.case_id: case for case in MosMedReader(mosmed_root).list_cases()}
    assert cases["study_0255"].metadata["has_mask"] is True
    assert cases["study_0255"].metadata["mask_file"] == "masks/study_0255_mask.nii.gz"
    assert cases["study_0256"].metadata["has_mask"] is False
    assert cases["study_0256"].metadata["mask_file"] is None


def test_mosmed_parent_root(tmp_path: Path) -> None:
    write_dataset(tmp_path / "COVID19_1110", registry=False)
    cases = MosMedReader(tmp_path).list_cases()
    assert len(cases) == len(STUDIES)
    assert cases[0].files == ("COVID19_1110/studies/CT-0/study_0001.nii.gz",)
    assert cases[1].metadata["mask_file"] == "COVID19_1110/masks/study_0255_mask.nii.gz"


def test_mosmed_registry_category_mismatch(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, registry=False)
    rows = registry_rows(STUDIES)
    rows[2] = (256, "CT-2", "/studies/CT-2/study_0256.nii.gz", None)
    write_registry(root / "dataset_registry.xlsx", rows)

    message = r"study_0256\.nii\.gz: .*row 4 gives category 'CT-2' but the study is in folder studies/CT-1"
    with pytest.raises(BadInputError, match=message):
        MosMedReader(root).list_cases()


def test_mosmed_registry_mismatch_skipped(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, registry=False)
    rows = registry_rows(STUDIES)
    rows[0] = (1, "CT-3", "/studies/CT-0/study_0001.nii.gz", None)
    write_registry(root / "dataset_registry.xlsx", rows)

    log = BadInputLog(policy="warn")
    cases = MosMedReader(root, bad_inputs=log).list_cases()
    assert "study_0001" not in [case.case_id for case in cases]
    assert len(cases) == len(STUDIES) - 1
    assert log.counts() == {"mosmed": 1}


def test_mosmed_registry_path_outside_root(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", registry=False)
    write_registry(root / "dataset_registry.xlsx", [(1, "CT-0", "/../../outside/study_0001.nii.gz", None)])
    with pytest.raises(BadInputError, match=r"dataset_registry\.xlsx: row 2: path .* leaves the data folder"):
        MosMedReader(root).list_cases()


def test_mosmed_registry_missing_column(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, registry=False)
    write_registry(root / "dataset_registry.xlsx", [(1, "CT-0")], header=("study_id", "category"))
    with pytest.raises(BadInputError, match=r"missing column\(s\) study_file, mask_file"):
        MosMedReader(root).list_cases()


def test_mosmed_registry_not_xlsx(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, registry=False)
    (root / "dataset_registry.xlsx").write_bytes(b"plain text, not a workbook")
    with pytest.raises(BadInputError, match=r"dataset_registry\.xlsx: cannot open the workbook"):
        MosMedReader(root).list_cases()


def test_mosmed_duplicate_study(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, registry=False)
    _save(root / "studies" / "CT-2" / "study_0001.nii.gz", chest_phantom())
    log = BadInputLog(policy="skip")
    cases = MosMedReader(root, bad_inputs=log).list_cases()
    assert "study_0001" not in [case.case_id for case in cases]
    assert "also exists at" in log.skipped[0].reason


def test_mosmed_load_views(mosmed_root: Path) -> None:
    reader = MosMedReader(mosmed_root)
    case = reader.list_cases()[0]
    views = reader.load(case)

    assert sorted(views) == ["r0", "r1", "r2"]
    assert [views[f"r{rank}"].slice_index for rank in range(3)] == EXPECTED_SLICES
    for sample in views.values():
        assert sample.image.dtype == np.uint8
        assert sample.image.shape == (SHAPE[1], SHAPE[0])
        assert sample.mask is None
        assert sample.source_file == case.files[0]


def test_mosmed_load_lung_window(mosmed_root: Path) -> None:
    reader = MosMedReader(mosmed_root)
    image = reader.load(reader.list_cases()[0])["r0"].image
    # (HU + 1350) * 255 / 1500, rounded: air 55, lung 94, body 235, marker 255.
    assert set(np.unique(image).tolist()) == {55, 94, 235, 255}
    assert (image == 94).sum() == 2 * 6 * 6


def test_mosmed_load_radiological(mosmed_root: Path) -> None:
    reader = MosMedReader(mosmed_root)
    image = reader.load(reader.list_cases()[0])["r0"].image
    rows, columns = np.nonzero(image == 255)
    assert rows.size == 4
    assert rows.max() < image.shape[0] / 2, "the anterior marker must be in the upper half"
    assert columns.max() < image.shape[1] / 2, "the patient's right must be on the image left"


def test_mosmed_load_scaled_storage(tmp_path: Path, mosmed_root: Path) -> None:
    plain = MosMedReader(mosmed_root)
    expected = plain.load(plain.list_cases()[0])

    # Stored values are HU + 1024 with scl_inter -1024, so only nibabel's scaling gives HU.
    root = tmp_path / "scaled"
    stored = (chest_phantom().astype(np.int32) + 1024).astype(np.int16)
    _save(root / "studies" / "CT-0" / "study_0001.nii.gz", stored, inter=-1024.0)
    reader = MosMedReader(root)
    views = reader.load(reader.list_cases()[0])

    for key, sample in expected.items():
        assert np.array_equal(views[key].image, sample.image), key


def test_mosmed_load_one_slice(tmp_path: Path) -> None:
    _save(tmp_path / "studies" / "CT-2" / "study_0500.nii.gz", chest_phantom((32, 32, 1), {0: (4, 4)}))
    reader = MosMedReader(tmp_path)
    views = reader.load(reader.list_cases()[0])
    assert sorted(views) == ["r0"]
    assert views["r0"].slice_index == 0


def test_mosmed_load_not_hounsfield(tmp_path: Path) -> None:
    _save(tmp_path / "studies" / "CT-2" / "study_0500.nii.gz", np.zeros(SHAPE, dtype=np.int16))
    reader = MosMedReader(tmp_path)
    with pytest.raises(BadInputError, match=r"study_0500\.nii\.gz: no slice has voxels between -1000 and -400 HU"):
        reader.load(reader.list_cases()[0])


def test_mosmed_load_truncated(tmp_path: Path) -> None:
    path = _save(tmp_path / "studies" / "CT-2" / "study_0500.nii.gz", chest_phantom())
    path.write_bytes(path.read_bytes()[:-40])
    reader = MosMedReader(tmp_path)
    with pytest.raises(BadInputError, match=r"study_0500\.nii\.gz: cannot read the NIfTI volume"):
        reader.load(reader.list_cases()[0])


def test_read_registry_real(samples_dir: Path) -> None:
    rows = read_registry(samples_dir / "mosmed" / "dataset_registry.xlsx")
    assert len(rows) == 1110
    assert rows[0].study_id == 1
    assert rows[0].study_file == "/studies/CT-0/study_0001.nii.gz"
    assert all(row.study_file.startswith("/") for row in rows)
    assert all(row.category in CATEGORIES for row in rows)
    assert all(row.study_file.startswith(f"/studies/{row.category}/") for row in rows)
    masks = [row.mask_file for row in rows if row.mask_file]
    assert len(masks) == 50
    assert all(mask.startswith("/masks/") for mask in masks)


def test_mosmed_real_registry_check(tmp_path: Path, samples_dir: Path) -> None:
    root = write_dataset(tmp_path, registry=False)
    # The real registry is read in place through a link.
    (root / "dataset_registry.xlsx").symlink_to(samples_dir / "mosmed" / "dataset_registry.xlsx")
    cases = {case.case_id: case for case in MosMedReader(root).list_cases()}
    assert sorted(cases) == sorted(STUDIES)
    assert cases["study_0255"].metadata["has_mask"] is True


@pytest.mark.parametrize(
    ("name", "shape", "spacing"),
    [
        ("study_0255_mask.nii.gz", (512, 512, 38), (0.923, 0.923, 8.0)),
        ("study_0256_mask.nii.gz", (512, 512, 39), (0.671, 0.671, 8.0)),
        ("study_0270_mask.nii.gz", (512, 512, 46), (0.782, 0.782, 8.0)),
    ],
)
def test_read_geometry_real_masks(
    samples_dir: Path, name: str, shape: tuple[int, ...], spacing: tuple[float, ...]
) -> None:
    geometry = read_geometry(samples_dir / "mosmed" / "masks" / name)
    assert geometry["shape"] == shape
    assert geometry["spacing"] == pytest.approx(spacing, abs=1e-3)
    assert geometry["orientation"] == ("L", "A", "S")
