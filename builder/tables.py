"""Read the CSV tables that ship with the sources, with errors that name the file."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from builder.policy import BadInputError


def read_csv_rows(path: Path, required_columns: Iterable[str] = ()) -> list[dict[str, str]]:
    """Read a CSV file into one dict per row, keyed by header names with surrounding spaces removed.

    SIIM's ``train-rle.csv`` has the header ``ImageId, EncodedPixels`` with a
    space after the comma, so names are stripped; cell values are returned as
    written and the caller strips them where a space is not meaningful.

    Args:
        path: The CSV file.
        required_columns: Header names that must be present.

    Returns:
        The rows in file order. A row shorter than the header gets ``""`` for
        the missing cells.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        BadInputError: when the file is not UTF-8, is empty, or lacks a required column.
    """
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInputError(
            path,
            f"not valid UTF-8 (byte {error.start}: {error.object[error.start:error.start + 1]!r}); "
            "re-export the table as UTF-8",
        ) from error

    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or not any(name.strip() for name in header):
        raise BadInputError(path, "the CSV file is empty; expected a header line and rows")

    names = [name.strip() for name in header]
    missing = [column for column in required_columns if column not in names]
    if missing:
        raise BadInputError(path, f"missing column(s) {', '.join(missing)}; the header is {names}")

    rows = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        padded = cells + [""] * (len(names) - len(cells))
        rows.append(dict(zip(names, padded[: len(names)], strict=True)))
    return rows
