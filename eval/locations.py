"""Tell a local folder from a Hub id before a name reaches ``datasets`` or ``transformers``.

Given a folder that does not exist, both libraries (transformers 5.25,
datasets 5.2) treat the name as a Hub id and fail with a message about
repository id syntax or missing data files that does not mention the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_EXPECTED = "a folder written by save_pretrained, or a Hub model id such as Qwen/Qwen2-VL-2B-Instruct"
DATASET_EXPECTED = "an export folder written by `python crossmed.py build`, or a Hub dataset id"


def written_as_path(name: str) -> bool:
    """Return True when ``name`` can only be a file-system path: absolute, or starting with ``.`` or ``~``.

    Hub ids (``org/name``) never start that way, so they return False.
    """
    return os.path.isabs(name) or name.startswith((".", "~"))


def check_folder_exists(name: str, *, kind: str, expected: str) -> None:
    """Raise FileNotFoundError when ``name`` is written as a path and no such folder exists.

    Args:
        name: The value given for a model or a dataset.
        kind: What the folder should hold, for the message, e.g. ``"Model"``.
        expected: What to pass instead, for the message.
    """
    if written_as_path(name) and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(f"{kind} folder {name} not found. Pass {expected}.")
