"""The bad-input policy, path boundary, CSV tables and the pool splitter."""

from __future__ import annotations

import numpy as np
import pytest

from builder.imaging import encode_mask_png, encode_png, resize_longest_side, scale_to_uint8
from builder.mat import Triplet, check_choice
from builder.paths import resolve_inside
from builder.policy import BadInputError, BadInputLog
from builder.splits import POOL_SPLITS, pool_split, stable_fraction
from builder.tables import read_csv_rows


def test_policy_error_raises_with_path():
    log = BadInputLog()
    with pytest.raises(BadInputError, match="bad.dcm: no pixel data"):
        log.report("siim", "bad.dcm", "no pixel data")


def test_policy_warn_records(caplog):
    log = BadInputLog("warn")
    log.report("siim", "bad.dcm", "no pixel data")
    assert log.counts() == {"siim": 1}
    assert "bad.dcm" in caplog.text


def test_policy_skip_saves_and_loads(tmp_path):
    log = BadInputLog("skip")
    log.report("brats", "case/seg.nii", "labels {3}")
    log.save(tmp_path / "skipped.jsonl")
    loaded = BadInputLog.load(tmp_path / "skipped.jsonl")
    assert loaded.skipped == log.skipped
    assert loaded.summary_lines() == ["brats: 1 skipped", "  brats: case/seg.nii: labels {3}"]


def test_policy_invalid_name_raises():
    with pytest.raises(ValueError, match="Invalid on_bad_input policy 'ignore'.*'error', 'warn', 'skip'"):
        BadInputLog("ignore")


def test_check_choice_suggests():
    with pytest.raises(ValueError, match="Did you mean 'X-ray'"):
        check_choice("modality", "xray", ("X-ray", "MRI", "CT"))


def test_triplet_from_slug_and_name():
    assert Triplet.from_name("mri-brain-segmentation") == Triplet.from_name("MRI/Brain/Segmentation")
    with pytest.raises(ValueError, match="Unknown triplet 'ct-brain-classification'"):
        Triplet.from_name("ct-brain-classification")


REJECTED_PATHS = [
    "../../x.jpg",
    "/etc/passwd",
    "C:\\x.jpg",
    "C:x.jpg",
    "\\\\server\\share\\x.jpg",
    "a/../../b.jpg",
    "a\\..\\..\\b.jpg",
    "",
]


@pytest.mark.parametrize("value", REJECTED_PATHS)
def test_resolve_inside_rejects(tmp_path, value):
    with pytest.raises(BadInputError, match="train.csv"):
        resolve_inside(tmp_path, value, tmp_path / "train.csv")


def test_resolve_inside_accepts_nested(tmp_path):
    assert resolve_inside(tmp_path, "a/b/../c.jpg", tmp_path / "t.csv") == tmp_path / "a" / "c.jpg"


def test_resolve_inside_reads_backslashes(tmp_path):
    assert resolve_inside(tmp_path, "a\\b\\c.jpg", tmp_path / "t.csv") == tmp_path / "a" / "b" / "c.jpg"


def test_resolve_inside_keeps_linked_folder(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "images").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    resolved = resolve_inside(tmp_path / "data", "images/x.jpg", tmp_path / "t.csv")

    assert resolved == tmp_path / "data" / "images" / "x.jpg"


def test_read_csv_strips_header_names(tmp_path):
    path = tmp_path / "train-rle.csv"
    path.write_text("ImageId, EncodedPixels\n1.2.3, -1\n", encoding="utf-8")
    assert read_csv_rows(path, ["ImageId", "EncodedPixels"]) == [{"ImageId": "1.2.3", "EncodedPixels": " -1"}]


def test_read_csv_empty_raises(tmp_path):
    path = tmp_path / "valid.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(BadInputError, match="valid.csv: the CSV file is empty"):
        read_csv_rows(path)


def test_read_csv_not_utf8_raises(tmp_path):
    path = tmp_path / "valid.csv"
    path.write_bytes(b"Path,Sex\nx\xff.jpg,Male\n")
    with pytest.raises(BadInputError, match="valid.csv: not valid UTF-8"):
        read_csv_rows(path)


def test_read_csv_missing_column_raises(tmp_path):
    path = tmp_path / "valid.csv"
    path.write_text("Path\nx.jpg\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="missing column\\(s\\) Sex"):
        read_csv_rows(path, ["Path", "Sex"])


def test_pool_split_stable_and_spread():
    assert pool_split("brats", "BraTS20_Training_001") == pool_split("brats", "BraTS20_Training_001")
    splits = [pool_split("siim", f"patient{i}") for i in range(2000)]
    shares = {split: splits.count(split) / len(splits) for split in POOL_SPLITS}
    assert shares["train"] == pytest.approx(0.7, abs=0.04)
    assert shares["validation"] == pytest.approx(0.1, abs=0.03)
    assert shares["test"] == pytest.approx(0.2, abs=0.03)


def test_stable_fraction_known_value():
    # SHA-256 of "a/1" starts with 0x2bf6...; the fraction must not depend on the Python process.
    assert 0.0 <= stable_fraction("a", 1) < 1.0
    assert stable_fraction("a", 1) == stable_fraction("a", "1")


def test_scale_to_uint8_no_wraparound():
    values = np.array([0, 2048, 4095, 70000], dtype=np.int64)
    assert scale_to_uint8(values, 0, 4095).tolist() == [0, 128, 255, 255]
    assert scale_to_uint8(np.array([np.nan, 1.0]), 0, 1).tolist() == [0, 255]


def test_png_round_trip():
    from io import BytesIO

    from PIL import Image

    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert np.array_equal(np.asarray(Image.open(BytesIO(encode_png(image)))), image)
    mask = image > 30
    assert np.array_equal(np.asarray(Image.open(BytesIO(encode_mask_png(mask)))) > 0, mask)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(image.astype(np.uint16))


def test_resize_keeps_mask_aligned():
    image = np.zeros((400, 200), dtype=np.uint8)
    mask = np.zeros((400, 200), dtype=bool)
    mask[200:, 100:] = True
    small, small_mask = resize_longest_side(image, mask, 100)
    assert small.shape == small_mask.shape == (100, 50)
    assert small_mask[50:, 25:].all() and not small_mask[:50].any()
