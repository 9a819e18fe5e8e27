"""Baselines that need no model weights: uniform random letters and the train-split prior.

Both return prediction records in the ``predictions.jsonl`` format, so the
metrics and reports treat them like any model run. Neither reads images.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from typing import Any

import datasets
import numpy as np

from builder.mat import LETTERS

logger = logging.getLogger(__name__)

SEGMENTATION = "Segmentation"
_NAMED_COLUMNS = ("triplet", "source", "task")
_COLUMNS = ("id", "options", "answer", "subject_id", "bbox", "option_boxes", *_NAMED_COLUMNS)


def random_predictions(
    dataset: datasets.Dataset, seed: int, *, rotations: int = 1, run_key: str | None = None
) -> list[dict[str, Any]]:
    """Pick a uniformly random letter per question, seeded by a stable hash of ``seed`` and the question id.

    The letter of a question does not depend on the order or the other rows of
    ``dataset``, so a subset or a shuffled split gets the same letters.

    Args:
        dataset: CrossMed rows with the CrossMed features.
        seed: Seed of the letters.
        rotations: Records per question: 1 for plain scoring, 4 for circular
            evaluation (each rotation draws its own letter).
        run_key: Value of ``run_key`` in every record; defaults to ``"random-seed<seed>"``.

    Returns:
        One record per question and rotation with mode ``"random"``, prediction in the stored option order.
    """
    key = run_key if run_key is not None else f"random-seed{seed}"
    records = []
    for row in question_rows(dataset):
        for rotation in range(rotations):
            digest = hashlib.sha256(f"{seed}|{row['id']}|{rotation}".encode()).digest()
            letter = LETTERS[int.from_bytes(digest[:8], "little") % len(LETTERS)]
            records.append(make_record(row, letter, mode="random", run_key=key, rotation=rotation))
    return records


def prior_predictions(
    train_dataset: datasets.Dataset, dataset: datasets.Dataset, *, rotations: int = 1, run_key: str = "prior"
) -> list[dict[str, Any]]:
    """Answer each question with the train split's most frequent answer for its triplet.

    Classification: each option scores the number of train questions of the
    same triplet whose correct answer has that text. The highest score wins,
    and ties go to the earlier option. This picks the most frequent train
    answer whenever it is among the options, and otherwise the option most
    often correct in train. Segmentation: the option box closest (Euclidean
    distance over the four coordinates) to the mean true train box of the
    triplet.

    Note:
        A triplet absent from the train split (``unrelated`` and
        ``zero_overlap`` test triplets) falls back to the answers of the whole
        train split, and a segmentation question with no train box at all
        chooses the box closest to the mean of its own four options. Both
        fallbacks log a WARNING once per triplet.

    Args:
        train_dataset: The train split the prior is counted on.
        dataset: The rows to answer.
        rotations: Records per question; the prior ignores option order, so all rotations agree.
        run_key: Value of ``run_key`` in every record.

    Returns:
        One record per question and rotation with mode ``"prior"``, prediction in the stored option order.
    """
    prior = _TrainPrior(question_rows(train_dataset))
    records = []
    for row in question_rows(dataset):
        letter = prior.choose(row)
        records.extend(make_record(row, letter, mode="prior", run_key=run_key, rotation=r) for r in range(rotations))
    return records


def question_rows(dataset: datasets.Dataset) -> list[dict[str, Any]]:
    """Read the non-image columns of a CrossMed dataset, with ClassLabel columns mapped to names.

    Args:
        dataset: CrossMed rows; ``triplet``, ``source`` and ``task`` may be ClassLabel ints or names.

    Returns:
        One dict per row with ``id``, ``options``, ``answer``, ``subject_id``,
        ``bbox``, ``option_boxes``, ``triplet``, ``source`` and ``task``.

    Raises:
        ValueError: when a needed column is missing, naming the columns found.
    """
    missing = [column for column in _COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Dataset lacks columns {missing} (found {dataset.column_names}); pass a split of a CrossMed config"
        )

    rows = dataset.select_columns(list(_COLUMNS)).to_list()
    for column in _NAMED_COLUMNS:
        feature = dataset.features[column]
        if isinstance(feature, datasets.ClassLabel):
            for row in rows:
                row[column] = feature.int2str(row[column])
    return rows


def make_record(row: dict[str, Any], letter: str, *, mode: str, run_key: str, rotation: int = 0) -> dict[str, Any]:
    """Build a prediction record in the ``predictions.jsonl`` format for a baseline choice.

    Args:
        row: A row from ``question_rows``.
        letter: The chosen letter in the stored option order.
        mode: ``"random"`` or ``"prior"``.
        run_key: Identifier of the run.
        rotation: Rotation the record stands for.

    Returns:
        The record, with ``raw_output`` and ``scores`` None.
    """
    return {
        "id": row["id"],
        "run_key": run_key,
        "mode": mode,
        "rotation": rotation,
        "raw_output": None,
        "scores": None,
        "prediction": letter,
        "answer": row["answer"],
        "correct": letter == row["answer"],
        "triplet": row["triplet"],
        "source": row["source"],
        "subject_id": row["subject_id"],
        "task": row["task"],
        "bbox": row["bbox"],
        "option_boxes": row["option_boxes"],
    }


class _TrainPrior:
    """Answer counts and mean boxes of a train split, per triplet and pooled."""

    def __init__(self, train_rows: list[dict[str, Any]]) -> None:
        self.answer_counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.pooled_counts: Counter[str] = Counter()
        boxes: dict[str, list[list[int]]] = defaultdict(list)
        for row in train_rows:
            answer_text = row["options"][LETTERS.index(row["answer"])]
            self.answer_counts[row["triplet"]][answer_text] += 1
            self.pooled_counts[answer_text] += 1
            if row["task"] == SEGMENTATION and row["bbox"] is not None:
                boxes[row["triplet"]].append(row["bbox"])

        self.mean_boxes = {
            triplet: np.mean(np.array(values, dtype=np.float64), axis=0) for triplet, values in boxes.items()
        }
        all_boxes = [box for values in boxes.values() for box in values]
        self.pooled_box = np.mean(np.array(all_boxes, dtype=np.float64), axis=0) if all_boxes else None
        self.warned: set[str] = set()

    def choose(self, row: dict[str, Any]) -> str:
        if row["task"] == SEGMENTATION:
            return self._closest_box(row)

        counts = self.answer_counts.get(row["triplet"])
        if not counts:
            self._warn_once(row["triplet"], "no train questions; using the answers of the whole train split")
            counts = self.pooled_counts
        scores = [counts.get(option, 0) for option in row["options"]]
        return LETTERS[int(np.argmax(scores))]

    def _closest_box(self, row: dict[str, Any]) -> str:
        boxes = np.array(row["option_boxes"], dtype=np.float64)
        target = self.mean_boxes.get(row["triplet"])
        if target is None:
            target = self.pooled_box
            self._warn_once(row["triplet"], "no train boxes; using the mean box of other triplets or of the options")
        if target is None:
            target = boxes.mean(axis=0)

        distances = np.linalg.norm(boxes - target, axis=1)
        return LETTERS[int(np.argmin(distances))]

    def _warn_once(self, triplet: str, message: str) -> None:
        if triplet not in self.warned:
            self.warned.add(triplet)
            logger.warning("Prior baseline: triplet %s has %s", triplet, message)
