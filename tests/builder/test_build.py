"""End to end on the synthetic sources: every config's guarantee, read back from the exported folder."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from PIL import Image

from builder.boxes import MAX_DISTRACTOR_IOU, SCALE, box_iou, mask_box
from builder.build import build_and_export
from builder.mat import TRIPLETS
from builder.protocols import all_protocols, get_protocol, target_protocols
from builder.splits import POOL_SPLITS

PROTOCOLS = all_protocols()


def names(dataset, column):
    feature = dataset.features[column]
    return [feature.int2str(value) for value in dataset[column]]


@pytest.fixture(scope="module")
def pool(demo_build):
    """The ``all`` config, whose splits are the whole pool."""
    return demo_build.load("all")


def test_export_has_no_script(demo_build):
    assert not (demo_build.export / "crossmed.py").exists()
    assert not list(demo_build.export.rglob("*.py"))


def test_every_pool_part_nonempty(demo_build):
    for triplet in TRIPLETS:
        for split in POOL_SPLITS:
            assert demo_build.result.pool_counts.get((triplet.name, split), 0) > 0, (triplet.name, split)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda protocol: protocol.name)
def test_config_guarantee(demo_build, protocol):
    loaded = demo_build.load(protocol.name)
    assert set(loaded) == set(POOL_SPLITS)
    for split in POOL_SPLITS:
        found = set(names(loaded[split], "triplet"))
        expected = {triplet.name for triplet in protocol.split_triplets(split)}
        assert found == expected, (split, found, expected)

    train_triplets = set(names(loaded["train"], "triplet"))
    for test_triplet in set(names(loaded["test"], "triplet")):
        modality, anatomy, task = test_triplet.split("/")
        seen = {axis: any(t.split("/")[i] == value for t in train_triplets) for i, (axis, value) in
                enumerate([("modality", modality), ("anatomy", anatomy), ("task", task)])}
        if protocol.family == "zero_overlap":
            assert not any(seen.values()), (test_triplet, seen)
        if protocol.family == "unrelated":
            assert test_triplet not in train_triplets
        if protocol.family == "related":
            assert test_triplet in train_triplets
    if protocol.name == "unrelated":
        assert protocol.seen_factors() == {"modality": True, "anatomy": True, "task": True}


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda protocol: protocol.name)
def test_config_streams(demo_build, protocol):
    for split in POOL_SPLITS:
        first = next(iter(demo_build.load(protocol.name, split=split, streaming=True)))
        assert isinstance(first["image"], Image.Image)
        assert len(first["options"]) == 4


def test_no_subject_on_two_sides(pool):
    sides = defaultdict(set)
    for split in POOL_SPLITS:
        for source, subject in zip(names(pool[split], "source"), pool[split]["subject_id"], strict=True):
            sides[(source, subject)].add(split)
    assert all(len(splits) == 1 for splits in sides.values())


def test_same_test_rows_for_target(demo_build):
    for triplet in TRIPLETS:
        ids = {}
        for family in ("related", "unrelated", "zero_overlap"):
            ids[family] = sorted(demo_build.load(f"{family}-{triplet.slug}", split="test")["id"])
        assert ids["related"] == ids["unrelated"] == ids["zero_overlap"], triplet.name
        assert ids["related"]


def test_headline_test_sets_shared(demo_build):
    related = sorted(demo_build.load("related", split="test")["id"])
    unrelated = sorted(demo_build.load("unrelated", split="test")["id"])
    assert related == unrelated


def test_letters_balanced(pool):
    for split in POOL_SPLITS:
        counts = defaultdict(Counter)
        for triplet, answer in zip(names(pool[split], "triplet"), pool[split]["answer"], strict=True):
            counts[triplet][answer] += 1
        for triplet, letters in counts.items():
            values = [letters.get(letter, 0) for letter in "ABCD"]
            assert max(values) - min(values) <= 1, (split, triplet, values)


def test_answer_fields_agree(pool):
    for split in POOL_SPLITS:
        dataset = pool[split].remove_columns(["image", "mask"])
        for row in dataset:
            assert row["answer"] == "ABCD"[row["answer_index"]]
            assert len(set(row["options"])) == 4


def test_distractors_are_answers_somewhere(pool):
    for split in POOL_SPLITS:
        dataset = pool[split].remove_columns(["image", "mask"])
        answers, distractors = defaultdict(set), defaultdict(set)
        for row in dataset:
            if row["bbox"] is not None:
                continue
            answers[row["triplet"]].add(row["options"][row["answer_index"]])
            distractors[row["triplet"]].update(t for i, t in enumerate(row["options"]) if i != row["answer_index"])
        assert answers
        for triplet, texts in distractors.items():
            assert texts <= answers[triplet], (split, triplet, texts - answers[triplet])


def test_segmentation_boxes(pool):
    checked = 0
    for split in POOL_SPLITS:
        for row in pool[split]:
            if row["bbox"] is None:
                assert row["mask"] is None
                assert row["option_boxes"] is None
                continue
            mask = np.asarray(row["mask"]) > 0
            assert mask.shape == np.asarray(row["image"]).shape
            assert tuple(row["bbox"]) == mask_box(mask)
            assert row["option_boxes"][row["answer_index"]] == row["bbox"]
            for index, box in enumerate(row["option_boxes"]):
                assert 0 <= box[0] < box[2] <= SCALE, box
                assert 0 <= box[1] < box[3] <= SCALE, box
                assert row["options"][index] == "[" + ", ".join(map(str, box)) + "]"
                if index != row["answer_index"]:
                    assert box_iou(box, row["bbox"]) < MAX_DISTRACTOR_IOU
            checked += 1
    assert checked > 0


def test_images_are_png_bytes(demo_build):
    for path in sorted(demo_build.export.glob("data/*/*.parquet")):
        table = pq.read_table(path, columns=["image"])
        for cell in table.column("image").to_pylist()[:3]:
            assert cell["bytes"][:8] == b"\x89PNG\r\n\x1a\n"


def test_card_and_infos_agree(demo_build):
    card = DatasetCard.load(demo_build.export / "README.md")
    configs = {entry["config_name"]: entry for entry in card.data["configs"]}
    assert set(configs) == {protocol.name for protocol in PROTOCOLS}
    assert configs["unrelated"].get("default") is True
    infos = json.loads((demo_build.export / "dataset_infos.json").read_text())
    for protocol in PROTOCOLS:
        expected = {
            split: sum(demo_build.result.pool_counts.get((t.name, split), 0) for t in protocol.split_triplets(split))
            for split in POOL_SPLITS
        }
        found = {split: infos[protocol.name]["splits"][split]["num_examples"] for split in POOL_SPLITS}
        assert found == expected, protocol.name
    assert "MosMedData" in card.text
    assert "CC BY-NC-ND" in card.text


def test_card_lists_every_config(demo_build):
    text = (demo_build.export / "README.md").read_text()
    for protocol in target_protocols():
        assert f"| `{protocol.name}` |" in text


def parquet_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.glob("data/*/*.parquet")):
        table = pq.read_table(path)
        digest.update(path.relative_to(folder).as_posix().encode())
        for column in table.column_names:
            digest.update(repr(table.column(column).to_pylist()).encode())
    return digest.hexdigest()


def test_rebuild_identical(demo_build, tmp_path):
    from builder.build import build_and_export

    build_and_export(demo_build.sources, tmp_path / "again", seed=0)
    assert parquet_digest(tmp_path / "again") == parquet_digest(demo_build.export)


def test_builder_used_directly(demo_build, tmp_path):
    from crossmed import CrossMed

    builder = CrossMed(config_name="unrelated", data_dir=str(demo_build.sources), cache_dir=str(tmp_path))
    builder.download_and_prepare()
    direct = builder.as_dataset(split="test")
    assert sorted(direct["id"]) == sorted(demo_build.load("unrelated", split="test")["id"])

    streamed = builder.as_streaming_dataset(split="validation")
    first = next(iter(streamed))
    assert first["id"] in set(demo_build.load("unrelated", split="validation")["id"])


def test_builder_missing_data_dir_raises(tmp_path):
    from crossmed import CrossMed

    builder = CrossMed(config_name="zero_overlap", data_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="(?s)config 'zero_overlap'.*nowhere.*SOURCES/siim"):
        builder.download_and_prepare()


def test_builder_missing_source_raises(demo_build, tmp_path):
    from crossmed import CrossMed

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "siim").symlink_to(demo_build.sources / "siim", target_is_directory=True)
    builder = CrossMed(config_name="all", data_dir=str(partial), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as raised:
        builder.download_and_prepare()

    lines = str(raised.value).splitlines()
    assert lines[0] == f"Sources chexpert, brats, mosmed not found under {partial}:"
    assert [line.split(":")[0] for line in lines[1:4]] == ["- chexpert", "- brats", "- mosmed"]
    assert f"expected the folder {partial / 'mosmed'}." in lines[3]
    assert "--allow-missing-sources" in lines[-1]

    allowed = CrossMed(
        config_name="all", data_dir=str(partial), cache_dir=str(tmp_path / "cache2"), allow_missing_sources=True
    )
    allowed.download_and_prepare()
    assert set(names(allowed.as_dataset(split="train"), "source")) == {"siim"}


def test_unknown_config_raises():
    from crossmed import CrossMed

    with pytest.raises(ValueError, match="unrelated"):
        CrossMed(config_name="unrelatd")


def test_export_refuses_existing_folder(demo_build):
    from builder.export import export_pool

    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        export_pool({}, demo_build.export)
    assert (demo_build.export / "README.md").exists()


def test_row_groups_within_viewer_budget(demo_build):
    from builder.export import ROW_GROUP_BUDGET_BYTES

    for path in demo_build.export.glob("data/*/*.parquet"):
        metadata = pq.ParquetFile(path).metadata
        for index in range(metadata.num_row_groups):
            assert metadata.row_group(index).total_byte_size <= ROW_GROUP_BUDGET_BYTES


def test_image_decodes_as_grayscale(pool):
    row = pool["test"][0]
    assert row["image"].mode == "L"
    assert Image.open(io.BytesIO(pool["test"].with_format("arrow")[0:1].column("image")[0]["bytes"].as_py())).mode == "L"


def test_zero_overlap_headline(demo_build):
    protocol = get_protocol("zero_overlap")
    loaded = demo_build.load("zero_overlap", split="test")
    assert set(names(loaded, "triplet")) == {protocol.test[0].name}


def test_builder_override_validated(demo_build, tmp_path):
    from crossmed import CrossMed

    builder = CrossMed(config_name="all", data_dir=str(demo_build.sources), cache_dir=str(tmp_path), max_side=5)
    with pytest.raises(ValueError, match="Invalid max_side 5"):
        builder.download_and_prepare()


def test_builder_removes_skip_log_folder(demo_build, tmp_path):
    import gc
    from pathlib import Path

    from crossmed import CrossMed

    builder = CrossMed(config_name="zero_overlap", data_dir=str(demo_build.sources), cache_dir=str(tmp_path))
    builder.download_and_prepare()
    folder = Path(builder.skip_log_dir)
    assert folder.is_dir()

    del builder
    gc.collect()
    assert not folder.exists()


def test_card_marks_synthetic_build(demo_build):
    from builder.card import SYNTHETIC_NOTE

    assert SYNTHETIC_NOTE in (demo_build.export / "README.md").read_text()


def test_build_missing_sources_folder_raises(tmp_path):
    missing = tmp_path / "no-sources"

    with pytest.raises(FileNotFoundError, match=f"Source folder {re.escape(str(missing))} not found") as caught:
        build_and_export(missing, tmp_path / "crossmed")

    assert "config 'all'" not in str(caught.value)
    assert "Getting the sources" in str(caught.value)
    assert not (tmp_path / "crossmed").exists()


def test_builder_splits_interleave_sources(demo_build, tmp_path):
    import datasets

    from crossmed import CrossMed

    builder = CrossMed(config_name="all", data_dir=str(demo_build.sources), cache_dir=str(tmp_path / "cache"))
    generators = builder._split_generators(datasets.DownloadManager())
    jobs = next(generator for generator in generators if generator.name == "train").gen_kwargs["jobs"]

    # datasets gives each num_proc worker one contiguous block, so each half needs its share of every source.
    first_half = Counter(job.source for job in jobs[: len(jobs) // 2])
    totals = Counter(job.source for job in jobs)
    assert len(totals) == 4
    for source, total in totals.items():
        assert abs(first_half[source] - total / 2) <= 1, source


def test_box_columns_readable_by_older_pyarrow(demo_build):
    # pyarrow 25 and older fail to read a fixed-size list column with nulls from Parquet
    # (apache/arrow issue 35692), and classification rows have null boxes.
    for path in sorted(demo_build.export.glob("data/*/*.parquet")):
        schema = pq.read_schema(path)
        assert pa.types.is_list(schema.field("bbox").type), path
        assert pa.types.is_list(schema.field("option_boxes").type), path
        assert pa.types.is_list(schema.field("option_boxes").type.value_type), path
