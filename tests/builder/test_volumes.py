from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from builder.policy import BadInputError
from builder.volumes import (
    axial_slice_radiological,
    label_volume,
    load_canonical,
    lung_area_per_slice,
    lung_window,
    read_geometry,
    robust_scale_mri,
    slice_options,
    top_slices,
    volume_array,
)


def _centered_affine(linear: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Build an affine with the given 3x3 part that maps the volume center to world (0, 0, 0)."""
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ ((np.array(shape) - 1) / 2)
    return affine


# (linear part of the affine, array shape, axis codes nibabel reads from it)
PHANTOM_GRIDS = {
    "RAS": (np.diag([1.0, 1.0, 1.0]), (24, 20, 10), ("R", "A", "S")),
    "LPS": (np.diag([-1.0, -1.0, 1.0]), (24, 20, 10), ("L", "P", "S")),
    "LAS": (np.diag([-0.8, 0.8, 3.0]), (30, 26, 6), ("L", "A", "S")),
    # Array axes: 0 runs towards Superior, 1 towards Left, 2 towards Anterior.
    "SLA": (np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.5], [2.0, 0.0, 0.0]]), (6, 24, 14), ("S", "L", "A")),
}


def _write_phantom(path: Path, linear: np.ndarray, shape: tuple[int, int, int]) -> None:
    """Write a volume whose only bright blob is in the patient's right-anterior-superior octant."""
    affine = _centered_affine(linear, shape)
    indices = np.indices(shape).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ indices + affine[:3, 3:4]).reshape(3, *shape)
    # RAS+ world coordinates: x > 0 is the patient's right, y > 0 anterior, z > 0 superior.
    blob = (x > 3) & (y > 3) & (z > 1)
    data = np.where(blob, 100, 10).astype(np.int16)
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.mark.parametrize("grid", sorted(PHANTOM_GRIDS))
def test_axial_slice_radiological_blob_top_left(tmp_path: Path, grid: str) -> None:
    linear, shape, codes = PHANTOM_GRIDS[grid]
    path = tmp_path / f"phantom_{grid}.nii.gz"
    _write_phantom(path, linear, shape)
    assert nib.aff2axcodes(nib.load(str(path)).affine) == codes

    volume = volume_array(load_canonical(path), path)
    slices_with_blob = []
    for k in range(volume.shape[2]):
        image = axial_slice_radiological(volume, k)
        rows, columns = np.nonzero(image == 100)
        if rows.size == 0:
            continue
        slices_with_blob.append(k)
        assert rows.max() < image.shape[0] / 2, f"blob below the middle row in slice {k}: anterior must be up"
        assert columns.max() < image.shape[1] / 2, f"blob right of the middle in slice {k}: patient right must be left"

    assert slices_with_blob, "the blob is in no slice"
    assert min(slices_with_blob) > volume.shape[2] / 2 - 1, "superior slices must have the highest indices"


def test_axial_slice_radiological_shape_and_index() -> None:
    volume = np.arange(4 * 3 * 2).reshape(4, 3, 2)
    image = axial_slice_radiological(volume, 1)
    assert image.shape == (3, 4)
    # Row 0 is the highest Y (anterior), column 0 the highest X (patient right).
    assert image[0, 0] == volume[3, 2, 1]
    assert image[-1, -1] == volume[0, 0, 1]


def test_axial_slice_radiological_index_out_of_range() -> None:
    with pytest.raises(IndexError, match="axial slice index 5 is outside 0..1"):
        axial_slice_radiological(np.zeros((4, 3, 2)), 5)


def test_load_canonical_applies_scaling(tmp_path: Path) -> None:
    raw = np.full((4, 4, 3), 1000, dtype=np.int16)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, str(path))

    data = volume_array(load_canonical(path), path)
    assert np.allclose(data, 976.0)


def test_load_canonical_reorients_to_ras(tmp_path: Path) -> None:
    path = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), dtype=np.int16), np.diag([-1.0, -1.0, 2.0, 1.0])), str(path))
    image = load_canonical(path)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert image.shape == (4, 5, 3)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_load_canonical_truncated_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"volume{suffix}"
    nib.save(nib.Nifti1Image(np.arange(32 * 32 * 12, dtype=np.int16).reshape(32, 32, 12), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(BadInputError, match=r"volume\.nii.*cannot read the NIfTI volume"):
        load_canonical(path)


def test_load_canonical_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="absent.nii.gz"):
        load_canonical(tmp_path / "absent.nii.gz")


def test_volume_array_drops_single_volume_axis() -> None:
    image = nib.Nifti1Image(np.zeros((4, 4, 3, 1), dtype=np.int16), np.eye(4))
    assert volume_array(image, "four_d.nii").shape == (4, 4, 3)


def test_volume_array_rejects_time_series() -> None:
    image = nib.Nifti1Image(np.zeros((4, 4, 3, 2), dtype=np.int16), np.eye(4))
    with pytest.raises(BadInputError, match=r"series\.nii: expected a 3D volume, got shape \(4, 4, 3, 2\)"):
        volume_array(image, "series.nii")


def _brain_volume() -> np.ndarray:
    volume = np.zeros((20, 20, 10))
    volume[5:15, 5:15, :] = np.arange(1, 1001).reshape(10, 10, 10)
    return volume


def test_robust_scale_mri_percentiles() -> None:
    volume = _brain_volume()
    scaled = robust_scale_mri(volume)
    low, high = np.percentile(np.arange(1, 1001), [0.5, 99.5])

    assert scaled.dtype == np.uint8
    assert scaled.shape == volume.shape
    assert (scaled[volume == 0] == 0).all()
    assert (scaled[(volume > 0) & (volume <= low)] == 0).all()
    assert (scaled[volume >= high] == 255).all()
    assert 0 < scaled[volume == 500].item() < 255


def test_robust_scale_mri_explicit_brain_mask() -> None:
    volume = _brain_volume()
    mask = volume > 500
    scaled = robust_scale_mri(volume, brain_mask=mask)
    low = np.percentile(np.arange(501, 1001), 0.5)
    assert (scaled[volume <= low] == 0).all()
    assert scaled[volume == 750].item() > 0


def test_robust_scale_mri_nan_warns(caplog: pytest.LogCaptureFixture) -> None:
    volume = _brain_volume()
    volume[6, 6, 0] = np.nan
    with caplog.at_level(logging.WARNING, logger="builder.volumes"):
        scaled = robust_scale_mri(volume, name="case_flair.nii.gz")

    assert scaled[6, 6, 0] == 0
    assert "case_flair.nii.gz" in caplog.text
    assert "1 NaN or infinite voxels" in caplog.text


def test_robust_scale_mri_empty_brain() -> None:
    scaled = robust_scale_mri(np.zeros((4, 4, 2)), name="empty.nii")
    assert scaled.dtype == np.uint8
    assert not scaled.any()


def test_lung_window_values() -> None:
    hu = np.array([-3000.0, -1350.0, -600.0, 150.0, 2000.0, np.nan])
    assert lung_window(hu).tolist() == [0, 0, 128, 255, 255, 0]
    assert lung_window(hu).dtype == np.uint8


def _float_labels(values: list[float]) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.array(values, dtype=np.float32).reshape(len(values), 1, 1), np.eye(4))


def test_label_volume_rounds_float_noise() -> None:
    labels = label_volume(_float_labels([0.0, 0.9999999, 2.0000002, 3.9999998]), "seg.nii")
    assert labels.dtype == np.uint8
    assert labels.ravel().tolist() == [0, 1, 2, 4]


def test_label_volume_rejects_fraction() -> None:
    with pytest.raises(BadInputError, match=r"seg\.nii: label value 2\.5 at voxel \(1, 0, 0\) is not an integer"):
        label_volume(_float_labels([0.0, 2.5, 4.0]), "seg.nii")


def test_label_volume_rejects_nan() -> None:
    with pytest.raises(BadInputError, match="seg.nii: the label volume contains NaN"):
        label_volume(_float_labels([0.0, float("nan")]), "seg.nii")


@pytest.mark.parametrize("value", [-1, 300])
def test_label_volume_rejects_out_of_range(value: int) -> None:
    image = nib.Nifti1Image(np.array([0, value], dtype=np.int16).reshape(2, 1, 1), np.eye(4))
    with pytest.raises(BadInputError, match=r"seg\.nii: label values span"):
        label_volume(image, "seg.nii")


def test_label_volume_keeps_integer_labels() -> None:
    image = nib.Nifti1Image(np.array([0, 1, 2, 4], dtype=np.int16).reshape(4, 1, 1), np.eye(4))
    assert label_volume(image, "seg.nii").ravel().tolist() == [0, 1, 2, 4]


def test_top_slices_largest_first() -> None:
    areas = np.array([0, 5, 0, 0, 0, 0, 9, 0, 0, 0, 0, 7])
    assert top_slices(areas, count=3, min_gap=1) == [6, 11, 1]


def test_top_slices_min_gap() -> None:
    areas = np.array([0, 30, 0, 0, 0, 0, 64, 49, 0, 0, 0, 25])
    # 7 is second largest but only 1 slice from 6; 1 and 11 are exactly 5 away.
    assert top_slices(areas, count=3, min_gap=5) == [6, 1, 11]


def test_top_slices_ties_lower_index() -> None:
    assert top_slices(np.full(12, 4), count=3, min_gap=5) == [0, 5, 10]


def test_top_slices_one_slice() -> None:
    assert top_slices(np.array([0]), count=3, min_gap=5) == [0]


def test_top_slices_fewer_than_count() -> None:
    assert top_slices(np.array([3, 2, 1, 4]), count=3, min_gap=5) == [3]


def test_top_slices_invalid_count() -> None:
    with pytest.raises(ValueError, match="count must be at least 1, got 0"):
        top_slices(np.ones(3), count=0, min_gap=1)


def test_top_slices_negative_gap() -> None:
    with pytest.raises(ValueError, match="min_gap must be 0 or more, got -1"):
        top_slices(np.ones(3), count=1, min_gap=-1)


def _chest_slice(size: int = 32, padding: float = -1024.0) -> tuple[np.ndarray, int]:
    """Return one axial CT slice in HU (body, two lungs, a trachea-free phantom) and its lung area."""
    hu = np.full((size, size), padding)
    hu[4:28, 6:26] = 40.0
    hu[8:20, 9:14] = -850.0
    hu[8:20, 18:23] = -700.0
    return hu, 12 * 5 * 2


def test_lung_area_per_slice_excludes_outside_air() -> None:
    chest, lung_area = _chest_slice()
    empty = np.full((32, 32), -1000.0)
    volume = np.stack([chest, empty, chest], axis=2)
    assert lung_area_per_slice(volume).tolist() == [lung_area, 0, lung_area]


def test_lung_area_per_slice_ignores_fov_padding() -> None:
    chest, lung_area = _chest_slice(padding=-1000.0)
    # Padding below -1000 HU, e.g. outside a circular field of view, is outside air too.
    chest[:3, :3] = -2048.0
    chest[-3:, -3:] = -3024.0
    assert lung_area_per_slice(chest[:, :, np.newaxis]).tolist() == [lung_area]


def test_lung_area_per_slice_excludes_dense_voxels() -> None:
    chest, lung_area = _chest_slice()
    chest[10, 10] = -300.0
    assert lung_area_per_slice(chest[:, :, np.newaxis]).tolist() == [lung_area - 1]


def test_read_geometry_synthetic(tmp_path: Path) -> None:
    path = tmp_path / "study.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 4), dtype=np.int16), np.diag([-0.7, 0.7, 5.0, 1.0])), str(path))
    geometry = read_geometry(path)
    assert geometry["shape"] == (8, 6, 4)
    assert geometry["spacing"] == pytest.approx((0.7, 0.7, 5.0))
    assert geometry["orientation"] == ("L", "A", "S")


def test_read_geometry_not_nifti(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(b"")
    with pytest.raises(BadInputError, match=r"notes\.nii\.gz: cannot read the NIfTI header"):
        read_geometry(path)


def test_slice_options_defaults() -> None:
    assert slice_options({}) == (3, 5)


def test_slice_options_values() -> None:
    assert slice_options({"slices_per_volume": 2, "min_slice_gap": 0}) == (2, 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"slices_per_volume": 0}, "Invalid slices_per_volume 0"),
        ({"slices_per_volume": "3"}, "Invalid slices_per_volume '3'"),
        ({"min_slice_gap": -2}, "Invalid min_slice_gap -2"),
        ({"min_slice_gap": True}, "Invalid min_slice_gap True"),
    ],
)
def test_slice_options_invalid(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        slice_options(options)
