"""Tests of eval.data and eval.dataset_card: split resolution, the question table and the batch loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCardData

from builder.features import crossmed_features
from eval.data import (
    PreparedBatch,
    PreparedItem,
    QuestionDataset,
    collate_batch,
    load_question_table,
    load_split,
    make_loader,
    make_work_items,
)
from eval.dataset_card import resolve_from_card
from tests.eval.fixtures import write_crossmed_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_crossmed_folder(tmp_path_factory.mktemp("crossmed"), n_rows=10, seed=0, config_name="unrelated")


@pytest.fixture(scope="module")
def split(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> datasets.Dataset:
    return load_split(str(folder), "unrelated", "test", cache_dir=str(tmp_path_factory.mktemp("hf_cache")))


TEST_SPLIT_CONFIG = "configs:\n- config_name: unrelated\n  data_files:\n  - split: test\n    path: data/test.parquet\n"


def write_readme(folder: Path, yaml_text: str) -> None:
    (folder / "README.md").write_text(f"---\n{yaml_text}---\n\n# Card\n", encoding="utf-8")


def copy_data(source: Path, target: Path) -> Path:
    (target / "data").mkdir(parents=True)
    for path in (source / "data").iterdir():
        (target / "data" / path.name).write_bytes(path.read_bytes())
    return target


def builder_resolution(folder: Path, config: str | None, split: str) -> tuple[str, list[str], Any]:
    builder = datasets.load_dataset_builder(str(folder), config)
    return builder.config.name, list(builder.config.data_files[split]), builder.info.features


@pytest.mark.parametrize("config", ["unrelated", None])
@pytest.mark.parametrize("split_name", ["train", "test"])
def test_resolve_from_card_matches_builder(folder: Path, config: str | None, split_name: str) -> None:
    resolved = resolve_from_card(folder, config, split_name)

    assert resolved is not None
    assert (resolved.config_name, resolved.files, resolved.features) == builder_resolution(folder, config, split_name)


def test_resolve_from_card_readme_features(folder: Path, tmp_path: Path) -> None:
    target = copy_data(folder, tmp_path / "with_info")
    card_data = DatasetCardData(
        configs=[{"config_name": "unrelated", "data_files": [{"split": "test", "path": "data/test.parquet"}]}]
    )
    infos = {"unrelated": datasets.DatasetInfo(features=crossmed_features(), config_name="unrelated")}
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    write_readme(target, card_data.to_yaml() + "\n")

    resolved = resolve_from_card(target, "unrelated", "test")

    assert resolved is not None
    assert resolved.features == crossmed_features()
    assert resolved.features == builder_resolution(target, "unrelated", "test")[2]


@pytest.mark.parametrize("other_configs", [["related"], []], ids=["two-entries", "one-entry"])
def test_resolve_from_card_legacy_infos(folder: Path, tmp_path: Path, other_configs: list[str]) -> None:
    target = copy_data(folder, tmp_path / "legacy")
    write_readme(target, TEST_SPLIT_CONFIG)
    infos = {name: {"features": crossmed_features().to_dict()} for name in ["unrelated", *other_configs]}
    (target / "dataset_infos.json").write_text(json.dumps(infos), encoding="utf-8")

    resolved = resolve_from_card(target, "unrelated", "test")

    assert resolved is not None
    # datasets files a lone entry of dataset_infos.json under "default", so no other config gets its features.
    assert resolved.features == (crossmed_features() if other_configs else None)
    assert resolved.features == builder_resolution(target, "unrelated", "test")[2]


@pytest.mark.parametrize(
    "readme",
    [
        "configs:\n- config_name: unrelated\n  data_files:\n  - split: test\n    path: data/*.parquet\n",
        "configs:\n- config_name: unrelated\n  data_files: data/test.parquet\n",
        "configs:\n- config_name: unrelated\n  data_files:\n  - split: test\n    path: data/missing.parquet\n",
        "configs:\n- config_name: other\n  data_files:\n  - split: test\n    path: data/test.parquet\n",
        "license: cc-by-4.0\n",
    ],
    ids=["wildcard", "plain-path", "missing-file", "no-such-config", "no-configs"],
)
def test_resolve_from_card_other_layouts(folder: Path, tmp_path: Path, readme: str) -> None:
    target = copy_data(folder, tmp_path / "other")
    write_readme(target, readme)

    assert resolve_from_card(target, "unrelated", "test") is None


def test_resolve_from_card_standalone_yaml(folder: Path, tmp_path: Path) -> None:
    target = copy_data(folder, tmp_path / "standalone")
    write_readme(target, TEST_SPLIT_CONFIG)
    (target / ".huggingface.yaml").write_text("license: cc-by-4.0\n", encoding="utf-8")

    assert resolve_from_card(target, "unrelated", "test") is None


def test_resolve_from_card_missing_split(folder: Path) -> None:
    expected = r"Config 'unrelated' in .* has no split 'validation'; its splits are \['test', 'train'\]"
    with pytest.raises(ValueError, match=expected):
        resolve_from_card(folder, "unrelated", "validation")


def test_load_split_without_card_configs(folder: Path, tmp_path: Path) -> None:
    """A folder the README header cannot describe loads through datasets' own resolution."""
    target = copy_data(folder, tmp_path / "wildcard")
    write_readme(target, TEST_SPLIT_CONFIG.replace("data/test.parquet", "data/te*.parquet"))

    loaded = load_split(str(target), "unrelated", "test", cache_dir=str(tmp_path / "hf_cache"))

    assert len(loaded) == 10
    assert loaded.features == crossmed_features()


def test_load_question_table_matches_rows(split: datasets.Dataset) -> None:
    table = load_question_table(split)

    labels = {name for name, feature in split.features.items() if isinstance(feature, datasets.ClassLabel)}
    assert labels, "the fixture has ClassLabel columns"
    for row, record in zip(split.remove_columns(["image", "mask"]), table, strict=True):
        expected = {
            name: split.features[name].int2str(value) if name in labels and value is not None else value
            for name, value in row.items()
        }
        assert record == expected
    assert isinstance(table[0]["task"], str)


class CountingImages:
    """Stands in for the image column and counts the rows read from it."""

    def __init__(self, images: datasets.Dataset) -> None:
        self.images = images
        self.reads: list[int] = []

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.reads.append(index)
        return self.images[index]


def test_question_dataset_decodes_rotations_once(split: datasets.Dataset) -> None:
    table = load_question_table(split)
    items = make_work_items(table, circular=True, limit=3)
    images = CountingImages(split.select_columns(["image"]))
    dataset = QuestionDataset(images, table, items)  # type: ignore[arg-type]

    prepared = [dataset[position] for position in range(len(items))]

    assert images.reads == [0, 1, 2]
    assert all(item.image is not None and item.image.mode == "RGB" for item in prepared)
    assert prepared[0].options != prepared[1].options, "rotations 0 and 1 show the options in different orders"


def question_id_encoder(items: list[PreparedItem]) -> dict[str, Any] | None:
    """An encoder for the loader tests: the batch's question ids, or None for a batch containing question 2."""
    if any(item.work.index == 2 for item in items):
        return None
    return {"ids": [item.work.question_id for item in items]}


def test_collate_batch_drops_images_with_inputs(split: datasets.Dataset) -> None:
    table = load_question_table(split)
    dataset = QuestionDataset(split.select_columns(["image"]), table, make_work_items(table, circular=False))
    items = [dataset[position] for position in range(4)]

    encoded = collate_batch(items[:2], question_id_encoder)
    failed = collate_batch(items[2:], question_id_encoder)
    plain = collate_batch(items[:2])

    assert encoded.inputs == {"ids": [items[0].work.question_id, items[1].work.question_id]}
    assert [item.image for item in encoded.items] == [None, None]
    assert failed.inputs is None
    assert all(item.image is not None for item in failed.items)
    assert plain.inputs is None
    assert all(item.image is not None for item in plain.items)


def test_with_images_restores_pixels(split: datasets.Dataset) -> None:
    table = load_question_table(split)
    dataset = QuestionDataset(split.select_columns(["image"]), table, make_work_items(table, circular=False))
    original = [dataset[position] for position in range(3)]
    stripped = collate_batch(original, lambda items: {"ok": True}).items

    restored = dataset.with_images(stripped)

    assert [item.work for item in restored] == [item.work for item in original]
    for item, reference in zip(restored, original, strict=True):
        assert item.image is not None
        assert item.image.tobytes() == reference.image.tobytes()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_make_loader_order_and_inputs(split: datasets.Dataset, num_workers: int) -> None:
    table = load_question_table(split)
    items = make_work_items(table, circular=True, limit=5)

    loader = make_loader(
        split, table, items, blind=False, batch_size=3, num_workers=num_workers, encoder=question_id_encoder
    )
    batches: list[PreparedBatch] = list(loader)

    assert [item.work for batch in batches for item in batch.items] == items
    for batch in batches:
        if any(item.work.index == 2 for item in batch.items):
            assert batch.inputs is None
            assert all(item.image is not None for item in batch.items)
        else:
            assert batch.inputs == {"ids": [item.work.question_id for item in batch.items]}
            assert all(item.image is None for item in batch.items)
