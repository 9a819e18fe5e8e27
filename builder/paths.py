"""Resolve paths read from CSV files and registries without leaving the data folder."""

from __future__ import annotations

import ntpath
import os
import posixpath
from pathlib import Path

from builder.policy import BadInputError


def resolve_inside(root: Path, relative: str, listed_in: Path) -> Path:
    """Join a path read from a table to ``root`` and check it stays inside ``root``.

    A table such as CheXpert's ``train.csv`` names image files. A value that is
    absolute or climbs out with ``..`` would make the build read files the user
    never pointed it at (CWE-22, path traversal), so it is rejected.

    The check reads only the text and makes no file system call, because a
    source table can name hundreds of thousands of images. Symbolic links
    inside ``root`` are followed when the file is opened, so that an image
    folder linked in from another disk is read where the user put it.

    Args:
        root: The data folder the table belongs to.
        relative: The path as written in the table, with ``/`` or ``\\`` separators.
        listed_in: The table the value was read from, named in the error.

    Returns:
        ``root`` made absolute (without resolving symbolic links) joined with the
        value, its ``.`` and ``..`` parts removed. The file need not exist.

    Raises:
        BadInputError: when the value is empty, absolute, or leaves ``root``.
    """
    text = relative.strip()
    if not text:
        raise BadInputError(listed_in, "empty path value; expected a path relative to the data folder")

    if text.startswith("/") or ntpath.isabs(text) or ntpath.splitdrive(text)[0]:
        raise BadInputError(
            listed_in,
            f"path {relative!r} is absolute; expected a path relative to {root}",
        )

    # A value written on Windows uses backslashes, which are read as separators too.
    normalized = posixpath.normpath(text.replace("\\", "/"))
    if normalized == ".." or normalized.startswith("../"):
        raise BadInputError(
            listed_in,
            f"path {relative!r} leaves the data folder {root}; expected a path inside it",
        )
    return Path(os.path.abspath(root)) / normalized
