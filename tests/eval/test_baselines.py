"""Tests for eval.baselines and for the fixture datasets they run on."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest

from builder.features import crossmed_features
from builder.mat import LETTERS
from eval.baselines import prior_predictions, question_rows, random_predictions
from tests.eval.fixtures import box_text, make_crossmed_dataset, make_crossmed_rows, write_crossmed_folder

CONTRACT_KEYS = {
    "id",
    "run_key",
    "mode",
    "rotation",
    "raw_output",
    "scores",
    "prediction",
    "answer",
    "correct",
    "triplet",
    "source",
    "subject_id",
    "task",
    "bbox",
    "option_boxes",
}
MRI_CLASSIFICATION = "MRI/Brain/Classification"
MRI_SEGMENTATION = "MRI/Brain/Segmentation"


def to_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    columns = {name: [row[name] for row in rows] for name in crossmed_features()}
    return datasets.Dataset.from_dict(columns, features=crossmed_features())


def rows_of(triplet: str, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of one triplet taken from a larger fixture, with ids made unique."""
    rows = [row for row in make_crossmed_rows(count * 5, seed) if row["triplet"] == triplet][:count]
    for index, row in enumerate(rows):
        row["id"] = f"{row['id']}-{seed}-{index}"
    return rows


def set_answer(row: dict[str, Any], options: list[str], answer: str) -> dict[str, Any]:
    row["options"] = options
    row["answer"] = answer
    row["answer_index"] = LETTERS.index(answer)
    return row


def test_fixture_answers_balanced(tmp_path: Path) -> None:
    dataset = make_crossmed_dataset(tmp_path, n_rows=20)
    triplets = dataset.features["triplet"]

    assert Counter(dataset["answer"]) == {letter: 5 for letter in LETTERS}
    for index in range(len(triplets.names)):
        answers = [row["answer"] for row in dataset if row["triplet"] == index]
        assert sorted(answers) == list(LETTERS)


def test_fixture_rows_valid(tmp_path: Path) -> None:
    dataset = make_crossmed_dataset(tmp_path, n_rows=10, seed=3)

    assert dataset.features == crossmed_features()
    for row in dataset:
        assert row["options"][LETTERS.index(row["answer"])] is not None
        assert row["answer_index"] == LETTERS.index(row["answer"])
        if row["bbox"] is None:
            assert row["mask"] is None
            continue
        assert row["option_boxes"][row["answer_index"]] == row["bbox"]
        assert row["options"] == [box_text(box) for box in row["option_boxes"]]
        for x1, y1, x2, y2 in row["option_boxes"]:
            assert 0 <= x1 < x2 <= 1000
            assert 0 <= y1 < y2 <= 1000
        assert np.asarray(row["mask"]).any()


def test_fixture_deterministic(tmp_path: Path) -> None:
    first = make_crossmed_rows(12, seed=5)
    second = make_crossmed_rows(12, seed=5)

    assert first == second
    assert first != make_crossmed_rows(12, seed=6)


def test_write_crossmed_folder_loads(tmp_path: Path) -> None:
    folder = write_crossmed_folder(tmp_path / "crossmed", n_rows=6, config_name="unrelated")

    train = datasets.load_dataset(str(folder), "unrelated", split="train", cache_dir=str(tmp_path / "cache"))
    test = datasets.load_dataset(str(folder), split="test", cache_dir=str(tmp_path / "cache"))

    assert train.num_rows == 6
    assert test.num_rows == 6
    assert set(train["subject_id"]).isdisjoint(test["subject_id"])


def test_random_predictions_format(tmp_path: Path) -> None:
    dataset = make_crossmed_dataset(tmp_path, n_rows=10)

    records = random_predictions(dataset, seed=0)

    assert len(records) == 10
    for record, row in zip(records, dataset, strict=True):
        assert set(record) == CONTRACT_KEYS
        assert record["mode"] == "random"
        assert record["id"] == row["id"]
        assert record["correct"] == (record["prediction"] == row["answer"])
        assert record["triplet"] == dataset.features["triplet"].int2str(row["triplet"])
        assert record["task"] in ("Classification", "Segmentation")


def test_random_predictions_seeded(tmp_path: Path) -> None:
    dataset = make_crossmed_dataset(tmp_path, n_rows=20)

    first = [record["prediction"] for record in random_predictions(dataset, seed=1)]
    second = [record["prediction"] for record in random_predictions(dataset, seed=1)]
    other = [record["prediction"] for record in random_predictions(dataset, seed=2)]

    assert first == second
    assert first != other


def test_random_predictions_order_independent(tmp_path: Path) -> None:
    dataset = make_crossmed_dataset(tmp_path, n_rows=20)
    shuffled = dataset.shuffle(seed=0).select(range(7))

    by_id = {record["id"]: record["prediction"] for record in random_predictions(dataset, seed=3)}
    for record in random_predictions(shuffled, seed=3):
        assert record["prediction"] == by_id[record["id"]]


def test_random_predictions_uniform(tmp_path: Path) -> None:
    dataset = make_crossmed_dataset(tmp_path, n_rows=400)

    counts = Counter(record["prediction"] for record in random_predictions(dataset, seed=0))

    assert set(counts) == set(LETTERS)
    assert all(70 <= count <= 130 for count in counts.values()), counts


def test_random_predictions_rotations(tmp_path: Path) -> None:
    dataset = make_crossmed_dataset(tmp_path, n_rows=4)

    records = random_predictions(dataset, seed=0, rotations=4, run_key="random-circular")

    assert len(records) == 16
    assert [record["rotation"] for record in records[:4]] == [0, 1, 2, 3]
    assert {record["run_key"] for record in records} == {"random-circular"}


def test_prior_most_frequent_text() -> None:
    texts = ["FLAIR", "T1", "T1ce", "T2"]
    train = [set_answer(row, texts, "D") for row in rows_of(MRI_CLASSIFICATION, 3)]
    train += [set_answer(row, texts, "A") for row in rows_of(MRI_CLASSIFICATION, 2, seed=1)]
    test = [set_answer(row, ["T1", "FLAIR", "T2", "T1ce"], "A") for row in rows_of(MRI_CLASSIFICATION, 1, seed=2)]

    records = prior_predictions(to_dataset(train), to_dataset(test))

    assert records[0]["prediction"] == "C"
    assert records[0]["mode"] == "prior"
    assert records[0]["correct"] is False


def test_prior_absent_text_next_most_frequent() -> None:
    """When the top train answer is not an option, the option most often correct in train wins."""
    train = [set_answer(row, ["T2", "T1", "FLAIR", "T1ce"], "A") for row in rows_of(MRI_CLASSIFICATION, 3)]
    train += [set_answer(row, ["T2", "T1", "FLAIR", "T1ce"], "C") for row in rows_of(MRI_CLASSIFICATION, 2, seed=1)]
    test = [set_answer(row, ["T1", "T1ce", "FLAIR", "PD"], "C") for row in rows_of(MRI_CLASSIFICATION, 1, seed=2)]

    records = prior_predictions(to_dataset(train), to_dataset(test))

    assert records[0]["prediction"] == "C"
    assert records[0]["correct"] is True


def test_prior_tie_takes_first_option() -> None:
    train = [set_answer(row, ["T2", "T1", "FLAIR", "T1ce"], "A") for row in rows_of(MRI_CLASSIFICATION, 2)]
    train += [set_answer(row, ["T2", "T1", "FLAIR", "T1ce"], "B") for row in rows_of(MRI_CLASSIFICATION, 2, seed=1)]
    test = [set_answer(row, ["FLAIR", "T1", "T1ce", "T2"], "A") for row in rows_of(MRI_CLASSIFICATION, 1, seed=2)]

    records = prior_predictions(to_dataset(train), to_dataset(test))

    assert records[0]["prediction"] == "B"


def test_prior_closest_to_mean_box() -> None:
    train = rows_of(MRI_SEGMENTATION, 2)
    train[0]["bbox"] = [100, 100, 300, 300]
    train[1]["bbox"] = [300, 300, 500, 500]
    test = rows_of(MRI_SEGMENTATION, 1, seed=2)
    boxes = [[0, 0, 100, 100], [600, 600, 900, 900], [210, 190, 390, 420], [200, 200, 300, 300]]
    test[0].update(option_boxes=boxes, options=[box_text(box) for box in boxes], bbox=boxes[1], answer="B")

    records = prior_predictions(to_dataset(train), to_dataset(test))

    assert records[0]["prediction"] == "C"


def test_prior_unseen_triplet_pooled(caplog: pytest.LogCaptureFixture) -> None:
    """A test triplet absent from train uses the answers of the whole train split, with a warning."""
    texts = ["Pleural Effusion", "Cardiomegaly", "Atelectasis", "No Finding"]
    train = [set_answer(row, texts, "B") for row in rows_of("X-ray/Lung/Classification", 2)]
    options = ["No Finding", "Atelectasis", "Cardiomegaly", "Edema"]
    test = [set_answer(row, options, "C") for row in rows_of("CT/Lung/Classification", 2, seed=3)]

    with caplog.at_level(logging.WARNING, logger="eval.baselines"):
        records = prior_predictions(to_dataset(train), to_dataset(test), rotations=2)

    assert [record["prediction"] for record in records] == ["C"] * 4
    assert [record["rotation"] for record in records] == [0, 1, 0, 1]
    warnings = [message for message in caplog.messages if "CT/Lung/Classification has no train questions" in message]
    assert len(warnings) == 1


def test_prior_no_train_boxes_uses_options() -> None:
    train = rows_of(MRI_CLASSIFICATION, 2)
    test = rows_of(MRI_SEGMENTATION, 1, seed=2)
    boxes = [[0, 0, 100, 100], [900, 900, 1000, 1000], [400, 400, 600, 600], [0, 900, 100, 1000]]
    test[0].update(option_boxes=boxes, options=[box_text(box) for box in boxes], bbox=boxes[2], answer="C")

    records = prior_predictions(to_dataset(train), to_dataset(test))

    assert records[0]["prediction"] == "C"


def test_question_rows_missing_column_raises() -> None:
    dataset = datasets.Dataset.from_dict({"id": ["q1"], "question": ["Which?"]})

    with pytest.raises(ValueError, match=r"lacks columns \['options'"):
        question_rows(dataset)
