"""Run-length encoding of SIIM-ACR pneumothorax masks, as written in ``train-rle.csv``.

The SIIM-ACR competition stores each mask as space-separated integer pairs.
Each pair is (gap, length). The gap counts the pixels between the end of the
previous run and the start of this run, so the first gap is the 0-based start
of the first run. Pixels are numbered down the columns (column-major, Fortran
order): pixel ``k`` of an image with ``height`` rows is at row ``k % height``,
column ``k // height``. The value ``-1`` stands for an empty mask.
"""

from __future__ import annotations

import numpy as np

EMPTY_MASK_RLE = "-1"

_PREVIEW_CHARACTERS = 60

# Far above the pixel count of any radiograph. The bound keeps the int64 sums below from overflowing.
_MAX_NUMBER = 2**40


def rle_runs(text: str) -> np.ndarray:
    """Parse an RLE string into absolute runs.

    Args:
        text: The ``EncodedPixels`` value. Surrounding spaces are ignored, and
            ``"-1"`` means an empty mask.

    Returns:
        An ``int64`` array of shape (runs, 2). Its columns are the 0-based
        column-major start index and the length of each run, in file order.

    Raises:
        ValueError: when the text is empty, a token is not a non-negative
            integer, or the number of tokens is odd. The message contains the
            token and the start of the value.
    """
    tokens = text.split()
    if tokens == [EMPTY_MASK_RLE]:
        return np.zeros((0, 2), dtype=np.int64)
    if not tokens:
        raise ValueError(f"Empty RLE value {text!r}: expected {EMPTY_MASK_RLE!r} or pairs of integers 'gap length'")

    numbers = np.array([_parse_token(token, position, text) for position, token in enumerate(tokens)], dtype=np.int64)
    if len(numbers) % 2:
        raise ValueError(
            f"Invalid RLE value {_preview(text)}: {len(numbers)} numbers, expected an even count of 'gap length' pairs"
        )

    gaps = numbers[0::2]
    lengths = numbers[1::2]
    # A run starts after all earlier gaps and runs: the cumulative sum of (gap + length), minus its own length.
    starts = np.cumsum(gaps + lengths) - lengths
    return np.stack([starts, lengths], axis=1)


def rle_area(text: str, height: int, width: int) -> int:
    """Validate an RLE string for an image size and return its number of mask pixels.

    Runs never overlap because gaps are non-negative, so the area is the sum of
    the run lengths. No mask array is allocated.

    Args:
        text: The ``EncodedPixels`` value.
        height: Image rows.
        width: Image columns.

    Returns:
        The mask area in pixels; 0 for ``"-1"``.

    Raises:
        ValueError: for the malformed values listed in :func:`rle_runs`, and
            when a run ends past the last pixel of a ``height`` x ``width`` image.
    """
    runs = rle_runs(text)
    _check_runs_fit(runs, height, width, text)
    return int(runs[:, 1].sum())


def decode_rle(text: str, height: int, width: int) -> np.ndarray:
    """Decode an RLE string into a boolean mask.

    Args:
        text: The ``EncodedPixels`` value. ``"-1"`` gives an all-False mask.
        height: Image rows (DICOM Rows).
        width: Image columns (DICOM Columns).

    Returns:
        A ``bool`` array of shape (height, width), indexed [row, column], True
        inside the mask.

    Raises:
        ValueError: for the malformed values listed in :func:`rle_runs`, and
            when a run ends past the last pixel of the image.
    """
    runs = rle_runs(text)
    _check_runs_fit(runs, height, width, text)

    # Mark +1 at each run start and -1 at each run end, so the running sum is 1 inside runs.
    edges = np.zeros(height * width + 1, dtype=np.int32)
    np.add.at(edges, runs[:, 0], 1)
    np.add.at(edges, runs[:, 0] + runs[:, 1], -1)
    flat = np.cumsum(edges[:-1]) > 0
    return flat.reshape((height, width), order="F")


def encode_rle(mask: np.ndarray) -> str:
    """Encode a 2D mask as a relative, column-major RLE string.

    Args:
        mask: A 2D array indexed [row, column], nonzero inside the mask.

    Returns:
        Space-separated ``gap length`` pairs, or ``"-1"`` for an empty mask.
        :func:`decode_rle` with the mask's shape returns the mask.

    Raises:
        ValueError: when ``mask`` is not 2D.
    """
    if np.ndim(mask) != 2:
        raise ValueError(f"RLE encoding expects a 2D mask, got shape {np.shape(mask)}")

    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    padded = np.concatenate([[False], flat, [False]]).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    if changes.size == 0:
        return EMPTY_MASK_RLE

    starts = changes[0::2]
    ends = changes[1::2]
    previous_ends = np.concatenate([[0], ends[:-1]])
    pairs = np.stack([starts - previous_ends, ends - starts], axis=1).ravel()
    return " ".join(str(number) for number in pairs)


def _parse_token(token: str, position: int, text: str) -> int:
    if token.isascii() and token.isdigit():
        number = int(token)
        if number > _MAX_NUMBER:
            raise ValueError(
                f"Invalid RLE value {_preview(text)}: number {token} at position {position} exceeds {_MAX_NUMBER}"
            )
        return number
    if token.startswith("-") and token[1:].isascii() and token[1:].isdigit():
        raise ValueError(
            f"Invalid RLE value {_preview(text)}: negative number {token!r} at position {position}; "
            f"gaps and lengths must be >= 0, and {EMPTY_MASK_RLE!r} is only valid alone"
        )
    raise ValueError(
        f"Invalid RLE value {_preview(text)}: token {token!r} at position {position} is not a non-negative integer"
    )


def _check_runs_fit(runs: np.ndarray, height: int, width: int, text: str) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"Invalid image size {height} x {width} for RLE decoding: both must be positive")
    if runs.size == 0:
        return

    end = int(runs[-1, 0] + runs[-1, 1])
    if end > height * width:
        raise ValueError(
            f"Invalid RLE value {_preview(text)}: the last run ends at pixel {end}, "
            f"past the {height * width} pixels of a {height} x {width} image"
        )


def _preview(text: str) -> str:
    stripped = text.strip()
    if len(stripped) <= _PREVIEW_CHARACTERS:
        return repr(stripped)
    return repr(stripped[:_PREVIEW_CHARACTERS] + "...")
