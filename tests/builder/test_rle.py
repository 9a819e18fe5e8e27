"""Tests for the relative, column-major RLE of SIIM-ACR masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from builder.rle import decode_rle, encode_rle, rle_area, rle_runs
from builder.tables import read_csv_rows


def test_decode_rle_relative_offsets() -> None:
    mask = decode_rle(" 5 3 1020 2", 1024, 1024)

    assert mask.shape == (1024, 1024)
    assert mask.dtype == bool
    assert mask.sum() == 5
    # Column-major: pixel 5 is row 5 of column 0; the second run starts 1020
    # pixels after the end of the first (pixel 8), at pixel 1028 = column 1, row 4.
    assert mask[5:8, 0].all()
    assert not mask[:5, 0].any()
    assert mask[4:6, 1].all()
    assert np.argwhere(mask.T)[0].tolist() == [0, 5]


def test_decode_rle_column_major_order() -> None:
    mask = decode_rle("6 1", 4, 3)

    assert np.argwhere(mask).tolist() == [[2, 1]]


def test_decode_rle_empty_marker() -> None:
    for text in ("-1", " -1", "-1 "):
        mask = decode_rle(text, 3, 2)
        assert mask.shape == (3, 2)
        assert not mask.any()


def test_rle_runs_absolute_starts() -> None:
    runs = rle_runs("5 3 1020 2")

    assert runs.tolist() == [[5, 3], [1028, 2]]


def test_rle_area_sums_lengths() -> None:
    assert rle_area(" 5 3 1020 2", 1024, 1024) == 5
    assert rle_area("-1", 1024, 1024) == 0


def test_encode_rle_known_string() -> None:
    mask = np.zeros((1024, 1024), dtype=bool)
    mask[5:8, 0] = True
    mask[4:6, 1] = True

    assert encode_rle(mask) == "5 3 1020 2"


def test_encode_rle_empty_and_full() -> None:
    assert encode_rle(np.zeros((4, 5), dtype=bool)) == "-1"
    assert encode_rle(np.ones((4, 5), dtype=bool)) == "0 20"


@settings(max_examples=60, deadline=None)
@given(arrays(dtype=bool, shape=st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_rle_round_trip(mask: np.ndarray) -> None:
    text = encode_rle(mask)

    decoded = decode_rle(text, *mask.shape)
    assert np.array_equal(decoded, mask)
    assert rle_area(text, *mask.shape) == mask.sum()


def test_rle_real_rows_decode(samples_dir: Path) -> None:
    rows = read_csv_rows(samples_dir / "siim" / "rle_rows_without_images" / "train-rle.csv")
    masked = [row for row in rows if row["EncodedPixels"].strip() != "-1"]
    assert len(rows) == 12
    assert len(masked) == 7

    for row in masked:
        text = row["EncodedPixels"]
        lengths = [int(token) for token in text.split()[1::2]]
        mask = decode_rle(text, 1024, 1024)
        assert mask.sum() == sum(lengths), row["ImageId"]
        assert encode_rle(mask) == " ".join(text.split()), row["ImageId"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5 3 7", r"3 numbers, expected an even count"),
        ("5 -3", r"negative number '-3' at position 1"),
        ("-1 4", r"negative number '-1' at position 0"),
        ("5 3 1.5 2", r"token '1\.5' at position 2 is not a non-negative integer"),
        ("5 x", r"token 'x' at position 1"),
        ("", r"Empty RLE value"),
        ("   ", r"Empty RLE value"),
        ("99999999999999999999 1", r"exceeds"),
    ],
)
def test_rle_runs_invalid_values(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rle_runs(text)


def test_decode_rle_run_past_end() -> None:
    with pytest.raises(ValueError, match=r"ends at pixel 13, past the 12 pixels of a 4 x 3 image"):
        decode_rle("10 3", 4, 3)


def test_rle_area_run_past_end() -> None:
    with pytest.raises(ValueError, match=r"past the 1048576 pixels"):
        rle_area("1048570 3 4 1", 1024, 1024)


def test_decode_rle_exact_fit() -> None:
    mask = decode_rle("9 3", 4, 3)

    assert mask[:, 2].tolist() == [False, True, True, True]


def test_encode_rle_rejects_3d() -> None:
    with pytest.raises(ValueError, match=r"expects a 2D mask, got shape \(2, 2, 2\)"):
        encode_rle(np.zeros((2, 2, 2), dtype=bool))
