"""Tests for the SIIM-ACR reader on the real sample files and on trees written in tmp_path."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from builder.mat import XRAY_LUNG_SEGMENTATION
from builder.policy import BadInputError, BadInputLog
from builder.rle import decode_rle
from builder.sources import reader_class
from builder.sources.siim import SIIMReader
from builder.tables import read_csv_rows
from tests.builder.test_dicom import write_dicom

IMAGE_A = "1.2.276.0.7230010.3.1.4.1.1"
IMAGE_B = "1.2.276.0.7230010.3.1.4.1.2"
IMAGE_C = "1.2.276.0.7230010.3.1.4.1.3"


def write_tree(
    root: Path,
    csv_lines: list[str],
    image_ids: list[str],
    header: str = "ImageId, EncodedPixels",
    shape: tuple[int, int] = (8, 6),
    nested: bool = True,
) -> Path:
    """Write ``train-rle.csv`` and one 8-bit DICOM file per image id under ``root/dicom-images-train``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train-rle.csv").write_text("\n".join([header, *csv_lines]) + "\n", encoding="utf-8")
    for number, image_id in enumerate(image_ids):
        folder = root / "dicom-images-train"
        if nested:
            folder = folder / f"1.2.3.{number}" / f"1.2.3.{number}.1"
        pixels = np.full(shape, 40 * number, dtype=np.uint8)
        write_dicom(folder / f"{image_id}.dcm", pixels, patient_id=f"patient-{number}")
    return root


def test_siim_real_sample(samples_dir: Path) -> None:
    reader = SIIMReader(samples_dir / "siim")

    assert reader.list_cases() == []


def test_siim_registry_lookup() -> None:
    assert reader_class("siim") is SIIMReader


def test_siim_real_rle_rows(tmp_path: Path, samples_dir: Path) -> None:
    source = samples_dir / "siim" / "rle_rows_without_images" / "train-rle.csv"
    shutil.copyfile(source, tmp_path / "train-rle.csv")
    rows = read_csv_rows(source)
    two_rows = "1.2.276.0.7230010.3.1.4.8323329.12143.1517875237.684007"
    one_row = "1.2.276.0.7230010.3.1.4.8323329.4904.1517875185.355709"
    empty = "1.2.276.0.7230010.3.1.4.8323329.10000.1517875220.938530"
    for image_id in (two_rows, one_row, empty):
        write_dicom(tmp_path / "dicom-images-train" / f"{image_id}.dcm", np.zeros((1024, 1024), dtype=np.uint8))
    reader = SIIMReader(tmp_path)

    cases = reader.list_cases()

    assert [case.case_id for case in cases] == sorted([two_rows, one_row])
    for case in cases:
        texts = [row["EncodedPixels"] for row in rows if row["ImageId"] == case.case_id]
        expected = np.zeros((1024, 1024), dtype=bool)
        for text in texts:
            expected |= decode_rle(text, 1024, 1024)
        mask = reader.load(case)["image"].mask
        assert mask.shape == (1024, 1024)
        assert np.array_equal(mask, expected)
        assert mask.sum() <= sum(int(token) for text in texts for token in text.split()[1::2])
    assert len([row for row in rows if row["ImageId"] == two_rows]) == 2


def test_siim_case_fields(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 9 3", f"{IMAGE_B}, -1"], [IMAGE_A, IMAGE_B])

    (case,) = SIIMReader(tmp_path).list_cases()

    assert case.source == "siim"
    assert case.case_id == IMAGE_A
    assert case.subject_id == "patient-0"
    assert case.files == (f"dicom-images-train/1.2.3.0/1.2.3.0.1/{IMAGE_A}.dcm",)
    (item,) = case.items
    assert item.triplet == XRAY_LUNG_SEGMENTATION
    assert item.view == "image"
    assert item.answer is None
    assert case.metadata["rows"] == 8
    assert case.metadata["columns"] == 6


def test_siim_load_mask_union(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 9 3", f"{IMAGE_A}, 20 2", f"{IMAGE_B}, -1"], [IMAGE_A, IMAGE_B])
    reader = SIIMReader(tmp_path)
    (case,) = reader.list_cases()

    sample = reader.load(case)["image"]

    assert sample.image.dtype == np.uint8
    assert sample.image.shape == (8, 6)
    assert sample.mask.dtype == bool
    assert sample.mask.shape == (8, 6)
    assert sample.mask.sum() == 5
    # Column-major with 8 rows: pixels 9-11 are rows 1-3 of column 1, and the
    # second row's pixels 20-21 (offsets restart in each row) are rows 4-5 of column 2.
    assert sample.mask[1:4, 1].all()
    assert sample.mask[4:6, 2].all()
    assert sample.source_file == case.files[0]
    assert sample.slice_index == -1


def test_siim_flat_layout_no_space_header(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A},0 4"], [IMAGE_A], header="ImageId,EncodedPixels", nested=False)

    (case,) = SIIMReader(tmp_path).list_cases()

    assert case.files == (f"dicom-images-train/{IMAGE_A}.dcm",)


def test_siim_leading_space_empty_marker(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, -1", f"{IMAGE_B}, -1", f"{IMAGE_B}, -1"], [IMAGE_A, IMAGE_B])

    assert SIIMReader(tmp_path).list_cases() == []


def test_siim_patient_id_missing(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 0 4"], [])
    write_dicom(tmp_path / "dicom-images-train" / f"{IMAGE_A}.dcm", np.zeros((4, 4), dtype=np.uint8), patient_id=None)

    (case,) = SIIMReader(tmp_path).list_cases()

    assert case.subject_id == IMAGE_A


def test_siim_dicom_without_row_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 0 4"], [IMAGE_A])
    write_dicom(tmp_path / "dicom-images-test" / "a" / "b" / f"{IMAGE_C}.dcm", np.zeros((4, 4), dtype=np.uint8))
    log = BadInputLog()

    with caplog.at_level(logging.DEBUG, logger="builder.sources.siim"):
        cases = SIIMReader(tmp_path, bad_inputs=log).list_cases()

    assert [case.case_id for case in cases] == [IMAGE_A]
    assert log.skipped == []
    assert f"{IMAGE_C}.dcm: no row in train-rle.csv" in caplog.text


def test_siim_row_without_dicom_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 0 4", f"{IMAGE_B}, 1 1", f"{IMAGE_C}, -1"], [IMAGE_A])

    with caplog.at_level(logging.DEBUG, logger="builder.sources.siim"):
        cases = SIIMReader(tmp_path).list_cases()

    assert [case.case_id for case in cases] == [IMAGE_A]
    assert "ignored 2 train-rle.csv rows without a DICOM file" in caplog.text


def test_siim_cases_sorted(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_C}, 0 1", f"{IMAGE_A}, 0 1", f"{IMAGE_B}, 0 1"], [IMAGE_C, IMAGE_B, IMAGE_A])

    cases = SIIMReader(tmp_path).list_cases()

    assert [case.case_id for case in cases] == [IMAGE_A, IMAGE_B, IMAGE_C]


def test_siim_empty_and_mask_conflict(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, -1", f"{IMAGE_A}, 0 4"], [IMAGE_A])

    with pytest.raises(BadInputError, match=rf"train-rle\.csv: ImageId {IMAGE_A} has both a '-1' row and a mask row"):
        SIIMReader(tmp_path).list_cases()


def test_siim_conflict_skipped_under_skip(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, -1", f"{IMAGE_A}, 0 4", f"{IMAGE_B}, 0 4"], [IMAGE_A, IMAGE_B])
    log = BadInputLog("skip")

    cases = SIIMReader(tmp_path, bad_inputs=log).list_cases()

    assert [case.case_id for case in cases] == [IMAGE_B]
    assert [item.path for item in log.skipped] == [str(tmp_path / "train-rle.csv")]


def test_siim_rle_past_end(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 40 9"], [IMAGE_A], shape=(8, 6))

    with pytest.raises(BadInputError, match=rf"train-rle\.csv: ImageId {IMAGE_A}: .*past the 48 pixels of a 8 x 6"):
        SIIMReader(tmp_path).list_cases()


def test_siim_rle_invalid_token(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 4 x"], [IMAGE_A])

    with pytest.raises(BadInputError, match=rf"ImageId {IMAGE_A}: Invalid RLE value '4 x': token 'x'"):
        SIIMReader(tmp_path).list_cases()


def test_siim_duplicate_image_id(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 0 4"], [IMAGE_A])
    write_dicom(tmp_path / "copy" / f"{IMAGE_A}.dcm", np.zeros((4, 4), dtype=np.uint8))

    with pytest.raises(BadInputError, match=rf"ImageId {IMAGE_A} is also the file .*; keep one copy"):
        SIIMReader(tmp_path).list_cases()


def test_siim_unreadable_header(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 0 4"], [])
    broken = tmp_path / "dicom-images-train" / f"{IMAGE_A}.dcm"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a DICOM file")

    with pytest.raises(BadInputError, match=rf"{IMAGE_A}\.dcm: not a DICOM Part 10 file"):
        SIIMReader(tmp_path).list_cases()


def test_siim_load_corrupt_dicom(tmp_path: Path) -> None:
    write_tree(tmp_path, [f"{IMAGE_A}, 0 4"], [IMAGE_A], nested=False)
    reader = SIIMReader(tmp_path)
    (case,) = reader.list_cases()
    path = tmp_path / case.files[0]
    path.write_bytes(path.read_bytes()[:-10])

    with pytest.raises(BadInputError, match=rf"{IMAGE_A}\.dcm: failed to decode"):
        reader.load(case)


def test_siim_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"siim source folder not found: .*absent"):
        SIIMReader(tmp_path / "absent")


def test_siim_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train-rle\.csv not found in .*Download the SIIM-ACR"):
        SIIMReader(tmp_path)


def test_siim_rejects_options(tmp_path: Path) -> None:
    write_tree(tmp_path, [], [])

    with pytest.raises(ValueError, match=r"Unknown SIIM option\(s\) \['views'\]"):
        SIIMReader(tmp_path, views="all")
