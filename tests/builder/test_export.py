"""Export edge cases on small hand-made pools: empty pool parts, build settings and parallel writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os

import datasets
import pytest

from builder import export
from builder.export import export_pool, plan_parts
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
    card = (out / "README.md").read_text()
    assert "zero_overlap-ct-lung-classification" not in card
    assert "| `related-ct-lung-classification` |" in card
    with pytest.raises(ValueError, match="zero_overlap-ct-lung-classification"):
        datasets.load_dataset(str(out), "zero_overlap-ct-lung-classification")


def test_build_settings_stored(tmp_path):
    settings = BuildSettings(seed=5, max_side=256, ship_pixels={"brats": False})
    out = export_pool(make_pool(rows_per_part=1), tmp_path / "crossmed", build_settings=settings)
    assert read_build_settings(out) == settings


def export_digests(out):
    return {
        path.relative_to(out).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }


def test_parallel_export_matches_one_process(tmp_path):
    # An empty part and a filtered split (a dataset with an indices mapping) take the less common paths.
    pool = without_triplet_split(make_pool(rows_per_part=3), CT_LUNG_CLASSIFICATION, "test")
    single = export_pool(pool, tmp_path / "single")
    parallel = export_pool(pool, tmp_path / "parallel", num_proc=2)

    digests = export_digests(single)
    assert "data/ct-lung-classification/test-00000-of-00001.parquet" not in digests
    assert len([name for name in digests if name.endswith(".parquet")]) == len(TRIPLETS) * 3 - 1
    assert export_digests(parallel) == digests


@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork", reason="the recording writer is patched in before the workers fork"
)
def test_parallel_export_writes_in_workers(tmp_path, monkeypatch):
    writers = tmp_path / "writers.txt"
    write_part = export._write_part

    def record_writer(dataset, job, out_dir):
        with writers.open("a", encoding="utf-8") as stream:
            stream.write(f"{os.getpid()}\n")
        return write_part(dataset, job, out_dir)

    monkeypatch.setattr(export, "_write_part", record_writer)
    export_pool(make_pool(rows_per_part=1), tmp_path / "crossmed", num_proc=2)

    pids = writers.read_text(encoding="utf-8").split()
    assert len(pids) == len(TRIPLETS) * 3
    assert str(os.getpid()) not in pids


def test_part_weights_count_image_and_mask_bytes():
    pool = make_pool(rows_per_part=2)
    jobs = {(job.split, TRIPLETS[job.triplet_index]): job for job in plan_parts(pool)}

    job = jobs[("train", MRI_BRAIN_SEGMENTATION)]
    encoded = pool["train"].select(job.rows)
    for column in ("image", "mask"):
        encoded = encoded.cast_column(column, datasets.Image(decode=False))
    expected = sum(len(row["image"]["bytes"]) + len(row["mask"]["bytes"]) + 1 for row in encoded)

    assert len(job.rows) == 2
    assert job.weight == expected


@pytest.mark.parametrize("num_proc", [1, 2])
def test_failed_part_write_keeps_previous_export(tmp_path, monkeypatch, num_proc):
    if num_proc > 1 and multiprocessing.get_start_method() != "fork":
        pytest.skip("the failing writer is patched in before the worker processes fork")
    out = export_pool(make_pool(rows_per_part=1), tmp_path / "crossmed")
    before = export_digests(out)
    write_part = export._write_part

    def fail_on_ct(dataset, job, out_dir):
        if TRIPLETS[job.triplet_index] is CT_LUNG_CLASSIFICATION:
            raise OSError(f"No space left on device writing {out_dir}")
        return write_part(dataset, job, out_dir)

    monkeypatch.setattr(export, "_write_part", fail_on_ct)
    with pytest.raises(OSError, match="No space left on device"):
        export_pool(make_pool(rows_per_part=2), out, overwrite=True, num_proc=num_proc)

    assert export_digests(out) == before
    assert [path.name for path in tmp_path.iterdir()] == ["crossmed"]
