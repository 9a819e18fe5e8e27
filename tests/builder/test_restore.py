"""Tests of builder.restore: rows published without pixels, rebuilt from synthetic sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from builder.publish import build_export, main
from builder.restore import (
    BUILD_SETTINGS_FILE,
    BuildSettings,
    RestoreError,
    read_build_settings,
    restore_pixels,
    rows_without_pixels,
    write_build_settings,
)
from builder.synthetic import generate_sources


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic sources, an export with every pixel, and a dry-run repo folder without BraTS pixels."""
    root = tmp_path_factory.mktemp("restore")
    sources = root / "sources"
    generate_sources(sources, seed=0, subjects=12, progress=False)
    full = build_export(sources, root / "full", BuildSettings(seed=0))
    status = main(
        [
            "--data-dir",
            str(sources),
            "--out",
            str(root / "partial"),
            "--version",
            "1.0.0",
            "--message",
            "Rows only",
            "--no-pixels",
            "brats",
            "--skip-load-check",
        ]
    )
    assert status == 0
    return {"sources": sources, "full": full, "partial": root / "partial"}


def table_rows(folder: Path) -> dict[str, dict[str, dict]]:
    """Return every row of every Parquet file of an export, keyed by file (relative) and id."""
    rows = {}
    for path in sorted((folder / "data").rglob("*.parquet")):
        rows[path.relative_to(folder).as_posix()] = {row["id"]: row for row in pq.read_table(path).to_pylist()}
    return rows


def test_partial_export_drops_brats_pixels(builds: dict[str, Path]) -> None:
    missing = rows_without_pixels(builds["partial"])
    settings = read_build_settings(builds["partial"])

    assert settings is not None
    assert settings.ship_pixels == {"brats": False}
    assert set(missing) == {
        f"data/mri-brain-{task}/{split}-00000-of-00001.parquet"
        for task in ("classification", "segmentation")
        for split in ("train", "validation", "test")
    }
    assert all(set(by_source) == {"brats"} for by_source in missing.values())
    for row in table_rows(builds["partial"])["data/mri-brain-segmentation/train-00000-of-00001.parquet"].values():
        assert row["image"] is None and row["mask"] is None
        assert row["source_file"].endswith(".nii.gz") or row["source_file"].endswith(".nii")


def test_restore_equals_full_build(builds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "restored"
    status = main(
        ["restore", "--folder", str(builds["partial"]), "--data-dir", str(builds["sources"]), "--out", str(out)]
    )

    assert status == 0
    assert f"into {out} (6 Parquet files rewritten)" in capsys.readouterr().out
    full, restored = table_rows(builds["full"]), table_rows(out)
    assert set(restored) == set(full)
    for relative, rows in full.items():
        assert restored[relative].keys() == rows.keys(), relative
        for row_id, row in rows.items():
            assert restored[relative][row_id] == row, (relative, row_id)
    assert rows_without_pixels(out) == {}
    settings = read_build_settings(out)
    assert settings is not None
    assert settings.ship_pixels == {}


def test_restore_rejects_other_seed(builds: dict[str, Path], tmp_path: Path) -> None:
    export = Path(shutil.copytree(builds["partial"], tmp_path / "export"))
    write_build_settings(export, BuildSettings(seed=1, ship_pixels={"brats": False}))

    with pytest.raises(RestoreError, match=r"differs from the published .*build settings differ"):
        restore_pixels(export, builds["sources"], tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_restore_needs_build_settings(builds: dict[str, Path], tmp_path: Path) -> None:
    export = Path(shutil.copytree(builds["partial"], tmp_path / "export"))
    (export / BUILD_SETTINGS_FILE).unlink()

    with pytest.raises(FileNotFoundError, match=r"has no crossmed_build\.json"):
        restore_pixels(export, builds["sources"], tmp_path / "restored")


def test_restore_missing_source(builds: dict[str, Path], tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()

    with pytest.raises(FileNotFoundError, match=r"Source brats not found"):
        restore_pixels(builds["partial"], sources, tmp_path / "restored")


def test_restore_existing_out(builds: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "restored").mkdir()

    with pytest.raises(FileExistsError, match=r"already exists\. Pass --overwrite"):
        restore_pixels(builds["partial"], builds["sources"], tmp_path / "restored")


def test_build_settings_roundtrip(tmp_path: Path) -> None:
    settings = BuildSettings(seed=3, caps={"mri-brain-segmentation": 5}, max_side=None, ship_pixels={"siim": False})

    write_build_settings(tmp_path, settings)

    assert read_build_settings(tmp_path) == settings
    assert settings.without_pixels() == ["siim"]


def test_build_settings_invalid(tmp_path: Path) -> None:
    (tmp_path / BUILD_SETTINGS_FILE).write_text(json.dumps({"format": 1, "seed": 0, "colour": "red"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"Invalid build settings file .*crossmed_build\.json"):
        read_build_settings(tmp_path)

    (tmp_path / BUILD_SETTINGS_FILE).write_text(json.dumps({"seed": 0}), encoding="utf-8")
    with pytest.raises(ValueError, match=r'expected a JSON object with "format": 1'):
        read_build_settings(tmp_path)

    with pytest.raises(ValueError, match=r"Invalid source 'pet'"):
        BuildSettings(ship_pixels={"pet": False})
