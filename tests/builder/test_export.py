"""Export edge cases on small hand-made pools: empty pool parts and build settings."""

from __future__ import annotations

import json

import datasets
import pytest

from builder.export import export_pool
from builder.mat import CT_LUNG_CLASSIFICATION, MRI_BRAIN_SEGMENTATION, TRIPLETS
from builder.restore import BuildSettings, read_build_settings
from tests.builder.pool_fixture import make_pool


def without_triplet_split(pool, triplet, split):
    triplet_id = TRIPLETS.index(triplet)
    pool = dict(pool)
    pool[split] = pool[split].filter(lambda value: value != triplet_id, input_columns="triplet")
    return pool


def test_empty_part_leaves_split_out(tmp_path):
    pool = without_triplet_split(make_pool(rows_per_part=2), CT_LUNG_CLASSIFICATION, "test")
    out = export_pool(pool, tmp_path / "crossmed")

    assert not list(out.glob("data/ct-lung-classification/test-*.parquet"))
    related = datasets.load_dataset(str(out), "related-ct-lung-classification")
    assert set(related) == {"train", "validation"}
    assert related["validation"].num_rows == 10
    infos = json.loads((out / "dataset_infos.json").read_text())
    assert set(infos["related-ct-lung-classification"]["splits"]) == {"train", "validation"}


def test_config_without_rows_left_out(tmp_path):
    pool = make_pool(rows_per_part=2)
    for split in ("train", "validation"):
        pool = without_triplet_split(pool, MRI_BRAIN_SEGMENTATION, split)
    pool = without_triplet_split(pool, CT_LUNG_CLASSIFICATION, "test")
    out = export_pool(pool, tmp_path / "crossmed")

    infos = json.loads((out / "dataset_infos.json").read_text())
    assert "zero_overlap-ct-lung-classification" not in infos
    assert "related-ct-lung-classification" in infos
    with pytest.raises(ValueError, match="zero_overlap-ct-lung-classification"):
        datasets.load_dataset(str(out), "zero_overlap-ct-lung-classification")


def test_build_settings_stored(tmp_path):
    settings = BuildSettings(seed=5, max_side=256, ship_pixels={"brats": False})
    out = export_pool(make_pool(rows_per_part=1), tmp_path / "crossmed", build_settings=settings)
    assert read_build_settings(out) == settings
