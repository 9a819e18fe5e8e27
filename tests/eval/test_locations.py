"""eval.locations: names written as paths must exist; Hub ids pass through."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.locations import check_folder_exists, written_as_path


@pytest.mark.parametrize("name", ["/models/qwen", "./export", "../export", "~/models/qwen", "."])
def test_paths_recognized(name: str) -> None:
    assert written_as_path(name)


@pytest.mark.parametrize("name", ["Qwen/Qwen2-VL-2B-Instruct", "crossmed", "org/crossmed"])
def test_hub_ids_not_paths(name: str) -> None:
    assert not written_as_path(name)


def test_missing_folder_raises_with_name(tmp_path: Path) -> None:
    missing = tmp_path / "absent"

    with pytest.raises(FileNotFoundError, match="Model folder .*absent not found. Pass a saved model."):
        check_folder_exists(str(missing), kind="Model", expected="a saved model")


def test_existing_folder_and_hub_id_pass(tmp_path: Path) -> None:
    assert check_folder_exists(str(tmp_path), kind="Dataset", expected="an export") is None
    assert check_folder_exists("org/never-checked-locally", kind="Dataset", expected="an export") is None
