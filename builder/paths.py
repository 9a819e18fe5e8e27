"""Resolve paths read from CSV files and registries without leaving the data folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from builder.policy import BadInputError


def resolve_inside(root: Path, relative: str, listed_in: Path) -> Path:
    """Join a path read from a table to ``root`` and check it stays inside ``root``.

    A table such as CheXpert's ``train.csv`` names image files. A value that is
    absolute or climbs out with ``..`` would make the build read files the user
    never pointed it at (CWE-22, path traversal), so it is rejected.

    Args:
        root: The data folder the table belongs to.
        relative: The path as written in the table, with ``/`` or ``\\`` separators.
        listed_in: The table the value was read from, named in the error.

    Returns:
        The absolute path inside ``root``. The file need not exist.

    Raises:
        BadInputError: when the value is empty, absolute, or leaves ``root``.
    """
    text = relative.strip()
    if not text:
        raise BadInputError(listed_in, "empty path value; expected a path relative to the data folder")

    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise BadInputError(
            listed_in,
            f"path {relative!r} is absolute; expected a path relative to {root}",
        )

    root_resolved = root.resolve()
    candidate = (root_resolved / Path(*PureWindowsPath(text).parts)).resolve()
    if not candidate.is_relative_to(root_resolved):
        raise BadInputError(
            listed_in,
            f"path {relative!r} leaves the data folder {root}; expected a path inside it",
        )
    return candidate
