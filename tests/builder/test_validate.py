"""Tests of builder.validate: each check against a folder broken on purpose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from builder.card import SOURCE_INFO
from builder.mat import MRI_BRAIN_SEGMENTATION
from builder.restore import BuildSettings, write_build_settings
from builder.validate import ValidationError, check_card, check_infos, check_loads, validate_export
from tests.builder.pool_fixture import make_export

TRAIN_FILE = "data/mri-brain-classification/train-00000-of-00001.parquet"


@pytest.fixture(scope="module")
def good_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of a small pool with every triplet in every split."""
    return make_export(tmp_path_factory.mktemp("validate") / "export")


@pytest.fixture
def export_copy(good_export: Path, tmp_path: Path) -> Path:
    """A copy of the good export that a test may break."""
    return Path(shutil.copytree(good_export, tmp_path / "export"))


def rewrite_column(path: Path, column: str, values: list) -> None:
    """Replace one column of a Parquet file, keeping its type and the schema metadata."""
    table = pq.read_table(path)
    field = table.schema.field(column)
    table = table.set_column(table.schema.get_field_index(column), field, pa.array(values, type=field.type))
    pq.write_table(table, path)


def test_validate_good_export_loads(good_export: Path) -> None:
    assert validate_export(good_export) == []


def test_validate_row_group_over_budget(export_copy: Path) -> None:
    problems = validate_export(export_copy, row_group_budget_bytes=1000, load=False, raise_on_problems=False)

    assert any(problem.startswith(f"{TRAIN_FILE}: row group 0 is ") for problem in problems)
    assert all("over the budget of 1000 bytes" in problem for problem in problems)
    with pytest.raises(ValidationError, match=r"row group 0 is \d+ bytes uncompressed"):
        validate_export(export_copy, row_group_budget_bytes=1000, load=False)


def test_validate_image_path_instead_of_bytes(export_copy: Path) -> None:
    path = export_copy / TRAIN_FILE
    rows = pq.read_table(path, columns=["image"]).column("image").to_pylist()
    rows[0] = {"bytes": None, "path": "/data/brats/image.png"}
    rewrite_column(path, "image", rows)

    problems = validate_export(export_copy, load=False, raise_on_problems=False)

    assert problems == [
        f"{TRAIN_FILE}: 1 row(s) where image contains a path instead of PNG bytes (first: brats-mri-brain-classification-train-000)"
    ]


def test_validate_mask_not_png(export_copy: Path) -> None:
    relative = "data/mri-brain-segmentation/test-00000-of-00001.parquet"
    masks = pq.read_table(export_copy / relative, columns=["mask"]).column("mask").to_pylist()
    masks = [{"bytes": b"\xff\xd8\xff\xe0 not a png", "path": None} for _ in masks]
    rewrite_column(export_copy / relative, "mask", masks)

    problems = validate_export(export_copy, load=False, raise_on_problems=False)

    assert problems == [
        f"{relative}: 3 row(s) where mask contains bytes that are not PNG (first: brats-mri-brain-segmentation-test-000)"
    ]


def test_validate_count_mismatch(export_copy: Path) -> None:
    path = export_copy / "dataset_infos.json"
    infos = json.loads(path.read_text(encoding="utf-8"))
    infos["unrelated"]["splits"]["test"]["num_examples"] += 1
    path.write_text(json.dumps(infos), encoding="utf-8")

    problems = validate_export(export_copy, load=False, raise_on_problems=False)

    assert "Config unrelated: split counts in dataset_infos.json" in problems[0]
    assert problems[1].startswith("Config unrelated: the Parquet files contain")
    assert "'test': 6}" in problems[1]
    assert "'test': 7}" in problems[1]
    assert len(problems) == 2


def test_validate_features_mismatch(export_copy: Path) -> None:
    path = export_copy / "dataset_infos.json"
    infos = json.loads(path.read_text(encoding="utf-8"))
    infos["all"]["features"]["slice_index"]["dtype"] = "int64"
    path.write_text(json.dumps(infos), encoding="utf-8")

    card = DatasetCard.load(export_copy / "README.md")
    _, problems = check_infos(export_copy, card)

    assert "Config all: the features in dataset_infos.json differ from the CrossMed features" in problems
    assert "Config all: the features in the card YAML differ from dataset_infos.json" in problems


def test_validate_repeated_ids(export_copy: Path) -> None:
    path = export_copy / TRAIN_FILE
    ids = pq.read_table(path, columns=["id"]).column("id").to_pylist()
    rewrite_column(path, "id", [ids[0]] * len(ids))

    problems = validate_export(export_copy, load=False, raise_on_problems=False)

    assert "Config all split train: 1 repeated id(s), e.g. ['brats-mri-brain-classification-train-000']" in problems
    assert all("repeated id" in problem for problem in problems)


def test_validate_card_missing_fields(export_copy: Path) -> None:
    card = DatasetCard.load(export_copy / "README.md")
    card.data["tags"] = None
    card.data["license"] = None
    card.text = card.text.replace(SOURCE_INFO["mosmed"]["citation"], "")
    card.save(export_copy / "README.md")

    card, problems = check_card(export_copy)

    assert "The card YAML has no 'license' field" in problems
    assert "The card YAML has no 'tags' field" in problems
    assert "The card text lacks the citation of source mosmed (MosMedData: COVID19_1110)" in problems
    assert len(problems) == 3


def test_validate_python_file(export_copy: Path) -> None:
    (export_copy / "crossmed.py").write_text("# a dataset script\n", encoding="utf-8")

    with pytest.raises(ValidationError, match=r"crossmed\.py is a Python file\. load_dataset rejects"):
        validate_export(export_copy, load=False)


def test_validate_missing_required_file(export_copy: Path) -> None:
    (export_copy / "dataset_infos.json").unlink()

    with pytest.raises(ValidationError, match=r"dataset_infos\.json is missing from"):
        validate_export(export_copy, load=False)


def test_validate_unlisted_and_missing_files(export_copy: Path) -> None:
    shutil.copy(export_copy / TRAIN_FILE, export_copy / "data/mri-brain-classification/extra.parquet")
    (export_copy / "data/ct-lung-classification/test-00000-of-00001.parquet").unlink()

    problems = validate_export(export_copy, load=False, raise_on_problems=False)

    assert (
        "The card lists data/ct-lung-classification/test-00000-of-00001.parquet, which is not in the folder" in problems
    )
    assert "data/mri-brain-classification/extra.parquet is in the folder but no config lists it" in problems


def test_validate_rows_without_pixels(tmp_path: Path) -> None:
    export = make_export(tmp_path / "export", ship_pixels={"brats": False})

    problems = validate_export(export, load=False, raise_on_problems=False)
    # Six BraTS files: the image problem in each, the mask problem in the three segmentation files.
    assert len(problems) == 9
    assert all("is empty and the folder has no crossmed_build.json" in problem for problem in problems)
    assert sum("mask is empty" in problem for problem in problems) == 3

    write_build_settings(export, BuildSettings(ship_pixels={"brats": False}))
    assert validate_export(export, load=False, raise_on_problems=False) == []

    write_build_settings(export, BuildSettings())
    problems = validate_export(export, load=False, raise_on_problems=False)
    assert len(problems) == 9
    assert all("is empty although the build settings ship the pixels of brats" in problem for problem in problems)


def test_validate_load_failure_reported(tmp_path: Path) -> None:
    export = make_export(tmp_path / "export", rows_per_part=2)
    (broken,) = (export / "data" / "mri-brain-segmentation").glob("test-*.parquet")
    broken.write_bytes(b"not a parquet file")
    infos = {name: info for name, info in _infos(export).items() if name == "related-mri-brain-segmentation"}

    problems = check_loads(export, infos)

    assert len(problems) == 1
    assert problems[0].startswith("Config related-mri-brain-segmentation does not load with load_dataset: ")


def test_validation_error_lists_problems(tmp_path: Path) -> None:
    error = ValidationError(tmp_path, ["first problem", "second problem"])

    assert str(error).startswith(
        f"Export folder {tmp_path} failed validation with 2 problem(s):\n- first problem\n- second problem"
    )
    assert error.problems == ["first problem", "second problem"]


def _infos(export: Path) -> dict:
    import datasets

    raw = json.loads((export / "dataset_infos.json").read_text(encoding="utf-8"))
    return {name: datasets.DatasetInfo.from_dict(value) for name, value in raw.items()}
