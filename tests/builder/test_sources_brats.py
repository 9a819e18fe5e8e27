from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from builder.mat import MRI_BRAIN_CLASSIFICATION, MRI_BRAIN_SEGMENTATION
from builder.policy import BadInputError, BadInputLog
from builder.sources import reader_class
from builder.sources.brats import BraTSReader, Survival, parse_survival_days, read_survival_info
from builder.volumes import axial_slice_radiological, load_canonical, robust_scale_mri, volume_array

SHAPE = (32, 32, 12)
# BraTS volumes are stored LPS; the reader must reorient them.
AFFINE = np.array([[-1.0, 0, 0, 31], [0, -1.0, 0, 31], [0, 0, 1.0, 0], [0, 0, 0, 1]])
SEQUENCE_FILES_2020 = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"}
SEQUENCE_FILES_GLI = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
TUMOUR_VALUE = 5000.0

# Tumour squares: slice -> side length in voxels. Areas 64, 49, 36, 25, so with
# a gap of 5 the ranks are slice 6, then 1 (7 is too close to 6), then 11.
TUMOUR_SIDES = {6: 8, 7: 7, 1: 6, 11: 5}
EXPECTED_SLICES = [6, 1, 11]


def _tumour_labels(sides: dict[int, int], enhancing: int = 4) -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    for k, side in sides.items():
        labels[10 : 10 + side, 12 : 12 + side, k] = 2
        labels[10, 12, k] = 1
        labels[11, 12, k] = enhancing
    return labels


def _write(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def write_case(
    folder: Path,
    case_id: str,
    tokens: dict[str, str] = SEQUENCE_FILES_2020,
    separator: str = "_",
    suffix: str = ".nii.gz",
    labels: np.ndarray | None = None,
    seg_name: str | None = None,
) -> Path:
    """Write one case folder with four sequences (distinct intensity patterns) and an optional segmentation."""
    case = folder / case_id
    case.mkdir(parents=True)
    tumour = labels > 0 if labels is not None else np.zeros(SHAPE, dtype=bool)
    for number, (seq, token) in enumerate(sorted(tokens.items())):
        rng = np.random.default_rng(number)
        data = np.zeros(SHAPE, dtype=np.float32)
        data[4:28, 4:28, :] = rng.uniform(100.0, 1000.0, size=(24, 24, SHAPE[2]))
        if seq == "flair":
            data[tumour] = TUMOUR_VALUE
        _write(case / f"{case_id}{separator}{token}{suffix}", data)
    if labels is not None:
        _write(case / (seg_name or f"{case_id}{separator}seg{suffix}"), labels)
    return case


@pytest.fixture
def brats_root(tmp_path: Path) -> Path:
    """A BraTS 2020 tree: three cases (one without segmentation) and both CSV tables."""
    root = tmp_path / "brats"
    data = root / "MICCAI_BraTS2020_TrainingData"
    write_case(data, "BraTS20_Training_001", labels=_tumour_labels(TUMOUR_SIDES))
    write_case(data, "BraTS20_Training_002", suffix=".nii", labels=_tumour_labels({6: 4}))
    write_case(data, "BraTS20_Training_003")
    (data / "name_mapping.csv").write_text(
        "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID,"
        "BraTS_2020_subject_ID\n"
        "HGG,Brats17_CBICA_AAB_1,Brats18_CBICA_AAB_1,NA,BraTS19_CBICA_AAB_1,BraTS20_Training_001\n"
        "LGG,NA,NA,TCGA-CS-4944,BraTS19_TCIA09_141_1,BraTS20_Training_002\n",
        encoding="utf-8",
    )
    (data / "survival_info.csv").write_text(
        "Brats20ID,Age,Survival_days,Extent_of_Resection\n"
        "BraTS20_Training_001,60.463,289,GTR\n"
        "BraTS20_Training_002,61.622,ALIVE (361 days later),NA\n",
        encoding="utf-8",
    )
    return root


def test_brats_registry_lookup() -> None:
    assert reader_class("brats") is BraTSReader


def test_brats_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"brats source folder not found: .*absent"):
        BraTSReader(tmp_path / "absent")


def test_brats_invalid_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Invalid slices_per_volume 0"):
        BraTSReader(tmp_path, slices_per_volume=0)


@pytest.mark.parametrize("subfolder", ["", "MICCAI_BraTS2020_TrainingData"])
def test_brats_list_cases_sorted(brats_root: Path, subfolder: str) -> None:
    cases = BraTSReader(brats_root / subfolder).list_cases()
    assert [case.case_id for case in cases] == [
        "BraTS20_Training_001",
        "BraTS20_Training_002",
        "BraTS20_Training_003",
    ]
    assert [case.subject_id for case in cases] == [case.case_id for case in cases]
    assert all(case.source == "brats" for case in cases)


def test_brats_case_files(brats_root: Path) -> None:
    case = BraTSReader(brats_root).list_cases()[1]
    prefix = "MICCAI_BraTS2020_TrainingData/BraTS20_Training_002/BraTS20_Training_002"
    assert case.files == tuple(f"{prefix}_{token}.nii" for token in ("flair", "t1", "t1ce", "t2", "seg"))


def test_brats_items_with_segmentation(brats_root: Path) -> None:
    case = BraTSReader(brats_root).list_cases()[0]
    keys = [item.key for item in case.items]
    assert keys == [f"r{r}-{view}" for r in range(3) for view in ("flair", "t1", "t1ce", "t2", "seg")]
    assert all(item.view == item.key for item in case.items)

    by_key = {item.key: item for item in case.items}
    assert by_key["r0-t1ce"].triplet == MRI_BRAIN_CLASSIFICATION
    assert by_key["r0-t1ce"].answer == "T1ce"
    assert by_key["r0-t1ce"].distractors == frozenset({"FLAIR", "T1", "T2"})
    assert by_key["r2-seg"].triplet == MRI_BRAIN_SEGMENTATION
    assert by_key["r2-seg"].answer is None
    assert by_key["r2-seg"].distractors == frozenset()


def test_brats_items_without_segmentation(brats_root: Path) -> None:
    case = BraTSReader(brats_root).list_cases()[2]
    assert len(case.items) == 12
    assert {item.triplet for item in case.items} == {MRI_BRAIN_CLASSIFICATION}
    assert case.metadata["segmentation_file"] is None


def test_brats_slices_per_volume_option(brats_root: Path) -> None:
    case = BraTSReader(brats_root, slices_per_volume=1).list_cases()[0]
    assert [item.key for item in case.items] == ["r0-flair", "r0-t1", "r0-t1ce", "r0-t2", "r0-seg"]


def test_brats_clinical_metadata(brats_root: Path) -> None:
    first, second, third = BraTSReader(brats_root).list_cases()
    assert first.metadata["grade"] == "HGG"
    assert first.metadata["age"] == pytest.approx(60.463)
    assert first.metadata["survival"] == Survival(289, alive=False)
    assert first.metadata["extent_of_resection"] == "GTR"
    assert second.metadata["grade"] == "LGG"
    assert second.metadata["survival"] == (361, True)
    assert second.metadata["extent_of_resection"] is None
    assert "grade" not in third.metadata
    assert "survival" not in third.metadata


def test_brats_invalid_grade(brats_root: Path) -> None:
    table = brats_root / "MICCAI_BraTS2020_TrainingData" / "name_mapping.csv"
    table.write_text(table.read_text(encoding="utf-8").replace("LGG,", "GBM,"), encoding="utf-8")
    with pytest.raises(BadInputError, match=r"name_mapping\.csv: line 3 \(BraTS20_Training_002\): invalid Grade 'GBM'"):
        BraTSReader(brats_root).list_cases()


def test_brats_load_views(brats_root: Path) -> None:
    reader = BraTSReader(brats_root)
    views = reader.load(reader.list_cases()[0])

    assert set(views) == {f"r{r}-{view}" for r in range(3) for view in ("flair", "t1", "t1ce", "t2", "seg")}
    for key, sample in views.items():
        assert sample.image.dtype == np.uint8, key
        assert sample.image.shape == (SHAPE[1], SHAPE[0]), key
    for rank, k in enumerate(EXPECTED_SLICES):
        assert [views[f"r{rank}-{view}"].slice_index for view in ("flair", "t1", "t1ce", "t2", "seg")] == [k] * 5


def test_brats_load_mask_aligned(brats_root: Path) -> None:
    reader = BraTSReader(brats_root)
    views = reader.load(reader.list_cases()[0])

    for rank, k in enumerate(EXPECTED_SLICES):
        seg = views[f"r{rank}-seg"]
        assert seg.mask is not None
        assert seg.mask.dtype == bool
        assert seg.mask.shape == seg.image.shape
        assert seg.mask.sum() == TUMOUR_SIDES[k] ** 2
        assert np.array_equal(seg.image, views[f"r{rank}-flair"].image)
        # The FLAIR tumour is the brightest tissue, so it is exactly the white pixels.
        assert np.array_equal(seg.image == 255, seg.mask)
        assert views[f"r{rank}-t1"].mask is None


def test_brats_load_sequence_identity(brats_root: Path) -> None:
    reader = BraTSReader(brats_root)
    case = reader.list_cases()[0]
    views = reader.load(case)

    for seq, relative in case.metadata["sequence_files"].items():
        path = brats_root / relative
        expected = robust_scale_mri(volume_array(load_canonical(path), path))
        assert views[f"r0-{seq}"].source_file == relative
        assert np.array_equal(views[f"r0-{seq}"].image, axial_slice_radiological(expected, 6)), seq
    assert not np.array_equal(views["r0-t1"].image, views["r0-t2"].image)


def test_brats_load_fewer_tumour_slices(brats_root: Path) -> None:
    reader = BraTSReader(brats_root)
    views = reader.load(reader.list_cases()[1])
    assert sorted(views) == ["r0-flair", "r0-seg", "r0-t1", "r0-t1ce", "r0-t2"]
    assert views["r0-seg"].slice_index == 6


def test_brats_load_brain_area_slices(brats_root: Path) -> None:
    reader = BraTSReader(brats_root)
    views = reader.load(reader.list_cases()[2])
    assert len(views) == 12
    # Every slice has the same brain area, so ties go to the lower index.
    assert [views[f"r{rank}-flair"].slice_index for rank in range(3)] == [0, 5, 10]
    assert all(sample.mask is None for sample in views.values())


def test_brats_load_empty_segmentation(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS20_Training_010", labels=np.zeros(SHAPE, dtype=np.uint8))
    reader = BraTSReader(tmp_path)
    views = reader.load(reader.list_cases()[0])
    assert sorted(views) == sorted(f"r{r}-{seq}" for r in range(3) for seq in ("flair", "t1", "t1ce", "t2"))


def test_brats_missing_sequence_raises(brats_root: Path) -> None:
    case = brats_root / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_003"
    (case / "BraTS20_Training_003_t1ce.nii.gz").unlink()
    with pytest.raises(BadInputError, match=r"BraTS20_Training_003: case BraTS20_Training_003 has no T1ce volume"):
        BraTSReader(brats_root).list_cases()


def test_brats_missing_sequence_skipped(brats_root: Path) -> None:
    case = brats_root / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_003"
    (case / "BraTS20_Training_003_flair.nii.gz").unlink()
    log = BadInputLog(policy="warn")
    cases = BraTSReader(brats_root, bad_inputs=log).list_cases()

    assert [case.case_id for case in cases] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    assert len(log.skipped) == 1
    assert "no FLAIR volume" in log.skipped[0].reason


def test_brats_segmentation_fallback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # BraTS 2020 case 355 ships its segmentation under this name.
    write_case(
        tmp_path,
        "BraTS20_Training_355",
        suffix=".nii",
        labels=_tumour_labels({5: 6}),
        seg_name="W39_1998.09.19_Segm.nii",
    )
    with caplog.at_level(logging.WARNING, logger="builder.sources.brats"):
        case = BraTSReader(tmp_path).list_cases()[0]

    assert "W39_1998.09.19_Segm.nii" in caplog.text
    assert case.metadata["segmentation_file"] == "BraTS20_Training_355/W39_1998.09.19_Segm.nii"
    assert "r0-seg" in {item.key for item in case.items}


def test_brats_segmentation_fallback_ambiguous(tmp_path: Path) -> None:
    case = write_case(tmp_path, "BraTS20_Training_356", labels=_tumour_labels({5: 6}), seg_name="first_Segm.nii.gz")
    _write(case / "second_Segm.nii.gz", _tumour_labels({5: 6}))
    with pytest.raises(BadInputError, match=r"several other NIfTI files \(first_Segm\.nii\.gz, second_Segm\.nii\.gz\)"):
        BraTSReader(tmp_path).list_cases()


def test_brats_duplicate_sequence_files(tmp_path: Path) -> None:
    case = write_case(tmp_path, "BraTS20_Training_004")
    _write(case / "BraTS20_Training_004_t2.nii", np.zeros(SHAPE, dtype=np.float32))
    message = r"several t2 files \(BraTS20_Training_004_t2\.nii, BraTS20_Training_004_t2\.nii\.gz\)"
    with pytest.raises(BadInputError, match=message):
        BraTSReader(tmp_path).list_cases()


def test_brats_duplicate_case(tmp_path: Path) -> None:
    write_case(tmp_path / "copy_a", "BraTS20_Training_005")
    write_case(tmp_path / "copy_b", "BraTS20_Training_005")
    log = BadInputLog(policy="skip")
    cases = BraTSReader(tmp_path, bad_inputs=log).list_cases()
    assert [case.files[0].split("/")[0] for case in cases] == ["copy_a"]
    assert "also exists at" in log.skipped[0].reason


def test_brats_unexpected_labels(tmp_path: Path) -> None:
    write_case(tmp_path, "BraTS20_Training_006", labels=_tumour_labels({4: 5}, enhancing=3))
    reader = BraTSReader(tmp_path)
    message = r"BraTS20_Training_006_seg\.nii\.gz: segmentation labels \[3\] are outside \[0, 1, 2, 4\]"
    with pytest.raises(BadInputError, match=message):
        reader.load(reader.list_cases()[0])


def test_brats_float_labels_rounded(tmp_path: Path) -> None:
    labels = _tumour_labels({4: 5}).astype(np.float32)
    labels[labels == 4] = 3.9999998
    write_case(tmp_path, "BraTS20_Training_007", labels=labels)
    reader = BraTSReader(tmp_path)
    views = reader.load(reader.list_cases()[0])
    assert views["r0-seg"].mask.sum() == 25


def test_brats_truncated_volume(tmp_path: Path) -> None:
    case = write_case(tmp_path, "BraTS20_Training_008", labels=_tumour_labels({4: 5}))
    t2 = case / "BraTS20_Training_008_t2.nii.gz"
    t2.write_bytes(t2.read_bytes()[: t2.stat().st_size // 2])
    reader = BraTSReader(tmp_path)
    with pytest.raises(BadInputError, match=r"BraTS20_Training_008_t2\.nii\.gz: cannot read the NIfTI volume"):
        reader.load(reader.list_cases()[0])


def test_brats_shape_mismatch(tmp_path: Path) -> None:
    case = write_case(tmp_path, "BraTS20_Training_009")
    _write(case / "BraTS20_Training_009_t1.nii.gz", np.ones((32, 32, 10), dtype=np.float32))
    reader = BraTSReader(tmp_path)
    message = r"_t1\.nii\.gz: volume shape \(32, 32, 10\) differs from shape \(32, 32, 12\)"
    with pytest.raises(BadInputError, match=message):
        reader.load(reader.list_cases()[0])


def test_brats_gli_naming(tmp_path: Path) -> None:
    write_case(
        tmp_path / "nested" / "deeper",
        "BraTS-GLI-00002-001",
        tokens=SEQUENCE_FILES_GLI,
        separator="-",
        labels=_tumour_labels({6: 6}, enhancing=3),
    )
    reader = BraTSReader(tmp_path)
    case = reader.list_cases()[0]

    assert case.case_id == "BraTS-GLI-00002-001"
    assert case.subject_id == "BraTS-GLI-00002"
    assert case.metadata["sequence_files"]["flair"].endswith("BraTS-GLI-00002-001-t2f.nii.gz")
    assert case.metadata["sequence_files"]["t1ce"].endswith("BraTS-GLI-00002-001-t1c.nii.gz")
    views = reader.load(case)
    assert views["r0-seg"].mask.sum() == 36


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("289", Survival(289, alive=False)),
        ("ALIVE (361 days later)", Survival(361, alive=True)),
        (" alive (12 days later) ", Survival(12, alive=True)),
        ("86.0", Survival(86, alive=False)),
        ("", None),
        ("NA", None),
    ],
)
def test_parse_survival_days(cell: str, expected: Survival | None) -> None:
    assert parse_survival_days(cell) == expected


def test_parse_survival_days_invalid() -> None:
    with pytest.raises(ValueError, match=r"Invalid Survival_days 'about a year'"):
        parse_survival_days("about a year")


def test_read_survival_info_bad_row_skipped(tmp_path: Path) -> None:
    table = tmp_path / "survival_info.csv"
    table.write_text(
        "Brats20ID,Age,Survival_days,Extent_of_Resection\n"
        "BraTS20_Training_001,60,soon,GTR\n"
        "BraTS20_Training_002,50,,\n",
        encoding="utf-8",
    )
    log = BadInputLog(policy="skip")
    clinical = read_survival_info(table, log)
    assert list(clinical) == ["BraTS20_Training_002"]
    assert clinical["BraTS20_Training_002"]["survival"] is None
    assert "line 2 (BraTS20_Training_001)" in log.skipped[0].reason


def test_read_survival_info_real(samples_dir: Path) -> None:
    clinical = read_survival_info(samples_dir / "brats" / "MICCAI_BraTS2020_TrainingData" / "survival_info.csv")
    assert len(clinical) == 236
    assert clinical["BraTS20_Training_084"]["survival"] == Survival(361, alive=True)
    assert clinical["BraTS20_Training_001"]["survival"] == Survival(289, alive=False)
    assert clinical["BraTS20_Training_001"]["age"] == pytest.approx(60.463)
    assert {info["extent_of_resection"] for info in clinical.values()} == {"GTR", "STR", None}


@pytest.mark.parametrize("subfolder", ["brats", "brats/not_brats2020_layout"])
def test_brats_real_gli_case(samples_dir: Path, subfolder: str) -> None:
    cases = BraTSReader(samples_dir / subfolder).list_cases()
    assert [case.case_id for case in cases] == ["BraTS-GLI-00001-000"]
    case = cases[0]
    assert case.metadata["segmentation_file"] is None
    assert len(case.items) == 12
    assert {item.triplet for item in case.items} == {MRI_BRAIN_CLASSIFICATION}
    assert not any("deepmedic" in path for path in case.files)


def test_brats_real_gli_load(samples_dir: Path) -> None:
    reader = BraTSReader(samples_dir / "brats" / "not_brats2020_layout")
    views = reader.load(reader.list_cases()[0])

    assert len(views) == 12
    for key, sample in views.items():
        assert sample.image.dtype == np.uint8, key
        assert sample.image.shape == (240, 240), key
        assert sample.mask is None
    slices = [views[f"r{rank}-flair"].slice_index for rank in range(3)]
    assert len(set(slices)) == 3
    assert min(abs(a - b) for a in slices for b in slices if a != b) >= 5
