"""Metrics over prediction records: accuracy, parse failures, box IoU, bootstrap intervals.

Every metric is declared once in ``METRICS`` with its direction and its
aggregation. A metric reads one ``(numerator, denominator)`` pair per question,
and all bootstrapped aggregations are a ratio of sums, so one subject-level
bootstrap serves all of them.

The denominator of every rate is the number of questions: an ``invalid`` or
``failed`` prediction counts as a wrong answer and, for segmentation, as an
empty box. No prediction is ever dropped from a denominator.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from builder.mat import LETTERS, TRIPLETS
from eval.extraction import INVALID

logger = logging.getLogger(__name__)

CONFIDENCE = 0.95
FAILED = "failed"
SEGMENTATION = "Segmentation"
REQUIRED_KEYS = ("id", "prediction", "answer", "correct", "triplet", "source", "subject_id", "task")
ROTATIONS = len(LETTERS)
"""Rotations of a question under circular evaluation: 0 (options as stored) and 1..3."""

_BOOTSTRAP_CHUNK = 100


@dataclass(frozen=True)
class QuestionResult:
    """The scored outcome of one question, after rotations are combined."""

    key: tuple[str, str]
    subject: tuple[str, str]
    triplet: str
    source: str
    config: str | None
    task: str
    correct: bool
    invalid: bool
    failed: bool
    intersection: float
    union: float


ItemValue = Callable[[QuestionResult], tuple[float, float] | None]
"""Maps a question to its ``(numerator, denominator)`` for one metric, or None where the metric does not apply."""


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: Key of the metric in the results.
        higher_is_better: Direction of improvement, for reports and comparisons.
        aggregation: ``"mean"`` (sum of values over the number of questions),
            ``"ratio_of_sums"`` (sum of numerators over sum of denominators) or
            ``"sum"`` (a count).
        item_value: Maps a question to its ``(numerator, denominator)``, or None
            when the metric does not apply to that question.
        bootstrap: Whether a 95% interval over subjects is reported.
    """

    name: str
    higher_is_better: bool
    aggregation: str
    item_value: ItemValue
    bootstrap: bool


def _segmentation_only(value: ItemValue) -> ItemValue:
    def read(result: QuestionResult) -> tuple[float, float] | None:
        return value(result) if result.task == SEGMENTATION else None

    return read


def _iou_pair(result: QuestionResult) -> tuple[float, float]:
    return (result.intersection / result.union if result.union > 0 else 0.0, 1.0)


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("accuracy", True, "mean", lambda result: (float(result.correct), 1.0), bootstrap=True),
        MetricSpec("parse_failure_rate", False, "mean", lambda result: (float(result.invalid), 1.0), bootstrap=False),
        MetricSpec("invalid", False, "sum", lambda result: (float(result.invalid), 1.0), bootstrap=False),
        MetricSpec("failed", False, "sum", lambda result: (float(result.failed), 1.0), bootstrap=False),
        MetricSpec(
            "ciou",
            True,
            "ratio_of_sums",
            _segmentation_only(lambda result: (result.intersection, result.union)),
            bootstrap=True,
        ),
        MetricSpec("mean_iou", True, "mean", _segmentation_only(_iou_pair), bootstrap=True),
    )
}
"""Every metric reported per group, by name."""

AGGREGATIONS: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
    "mean": lambda numerators, denominators: float(numerators.sum() / denominators.sum()),
    "ratio_of_sums": lambda numerators, denominators: (
        float(numerators.sum() / denominators.sum()) if denominators.sum() > 0 else None
    ),
    "sum": lambda numerators, denominators: float(numerators.sum()),
}
"""Aggregation functions by name; each takes per-question numerators and denominators."""


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Compute the intersection over union of two boxes.

    Args:
        a: A box ``[x1, y1, x2, y2]``, with ``(x2, y2)`` the exclusive far
            corner, so its area is ``(x2 - x1) * (y2 - y1)``. Any unit works as
            long as both boxes share it (CrossMed uses 0-1000).
        b: The other box, in the same unit.

    Returns:
        The IoU in [0, 1]. Boxes with ``x2 <= x1`` or ``y2 <= y1`` are empty,
        and the IoU is 0.0 whenever the union is empty.
    """
    intersection, union = box_overlap(a, b)
    return intersection / union if union > 0 else 0.0


def box_overlap(a: Sequence[float] | None, b: Sequence[float] | None) -> tuple[float, float]:
    """Compute the intersection and union areas of two boxes; None is an empty box.

    Args:
        a: A box ``[x1, y1, x2, y2]`` (far corner exclusive), or None.
        b: The other box in the same unit, or None.

    Returns:
        ``(intersection, union)`` in squared box units.
    """
    area_a = _area(a)
    area_b = _area(b)
    if a is None or b is None:
        return 0.0, area_a + area_b

    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height if area_a > 0 and area_b > 0 else 0.0
    return float(intersection), float(area_a + area_b - intersection)


def compute_metrics(
    predictions: list[dict], *, n_bootstrap: int = 1000, seed: int = 0, circular: bool = False
) -> dict:
    """Score prediction records overall, per triplet, per source and per config.

    Segmentation IoU compares the CHOSEN option box with the true box ``bbox``
    (0-1000 coordinates, ``[x1, y1, x2, y2]`` with the far corner exclusive, so
    area is ``(x2 - x1) * (y2 - y1)``). An ``invalid`` or ``failed`` choice is
    an empty box: intersection 0 and union equal to the true box's area. cIoU
    is the sum of intersections over the sum of unions across questions, and
    mean IoU the mean of per-question IoUs.

    Without ``circular``, only rotation 0 (options as stored) is scored. With
    ``circular``, a question is correct only when all four rotations are
    present and correct. A question with an invalid or failed prediction in
    any rotation counts once as invalid or failed, and IoU uses rotation 0.
    Chance accuracy is then ``0.25 ** 4`` instead of ``0.25``.

    Args:
        predictions: Prediction records in the ``predictions.jsonl`` format. A
            ``"config"`` key on every record adds a per-config breakdown, and
            question identity becomes ``(config, id)``.
        n_bootstrap: Number of bootstrap resamples of subjects; 0 skips intervals.
        seed: Seed of the bootstrap. The same seed gives identical intervals.
        circular: Combine rotations as described above.

    Returns:
        A JSON-serialisable dict with ``overall``, ``per_triplet``,
        ``per_source``, ``per_config`` (empty without config keys), ``metrics``
        (the registry: direction and aggregation) and ``settings``. Each group
        holds ``n``, ``n_subjects``, ``chance``, every metric value (None where
        it does not apply) and ``<metric>_ci`` as ``[low, high]`` for
        bootstrapped metrics.

    Raises:
        ValueError: when ``predictions`` is empty, a record lacks a required
            key or its ``correct`` disagrees with ``prediction == answer``, a
            (config, id, rotation) repeats, only some records carry a config,
            or a segmentation record lacks its boxes.
    """
    if not predictions:
        raise ValueError("compute_metrics received no predictions; pass at least one prediction record")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be 0 or more, got {n_bootstrap}")

    results = score_questions(predictions, circular=circular)
    chance = (1.0 / len(LETTERS)) ** (ROTATIONS if circular else 1)
    groupings = {
        "per_triplet": lambda result: result.triplet,
        "per_source": lambda result: result.source,
        "per_config": lambda result: result.config,
    }

    summary: dict[str, Any] = {"overall": _summarise("overall", results, chance, n_bootstrap, seed)}
    for grouping, key_of in groupings.items():
        groups: dict[str, list[QuestionResult]] = defaultdict(list)
        for result in results:
            if key_of(result) is not None:
                groups[key_of(result)].append(result)
        summary[grouping] = {
            name: _summarise(f"{grouping}:{name}", members, chance, n_bootstrap, seed)
            for name, members in sorted(groups.items(), key=lambda item: triplet_sort_key(item[0]))
        }

    summary["metrics"] = {
        spec.name: {
            "higher_is_better": spec.higher_is_better,
            "aggregation": spec.aggregation,
            "bootstrap": spec.bootstrap,
        }
        for spec in METRICS.values()
    }
    summary["settings"] = {"n_bootstrap": n_bootstrap, "seed": seed, "circular": circular, "confidence": CONFIDENCE}
    return summary


def score_questions(predictions: list[dict], *, circular: bool = False) -> list[QuestionResult]:
    """Combine prediction records into one scored result per question.

    Args:
        predictions: Prediction records in the ``predictions.jsonl`` format.
        circular: Require every rotation 0..3 to be correct (see ``compute_metrics``).

    Returns:
        One ``QuestionResult`` per question, in order of first appearance.

    Raises:
        ValueError: on the malformed inputs listed in ``compute_metrics``.
    """
    has_config = ["config" in record for record in predictions]
    if any(has_config) and not all(has_config):
        raise ValueError(
            f"{has_config.count(False)} of {len(predictions)} prediction records lack a 'config' key; "
            "give every record a config or none"
        )

    by_question = _group_rotations(predictions)
    if not circular:
        skipped = sum(len(rotations) - (0 in rotations) for rotations in by_question.values())
        if skipped:
            logger.info("Scoring rotation 0 only; %d records of other rotations are ignored (circular=False)", skipped)
    return [_score_question(key, rotations, circular) for key, rotations in by_question.items()]


def _group_rotations(predictions: list[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    by_question: dict[tuple[str, str], dict[int, dict]] = {}
    for record in predictions:
        missing = [name for name in REQUIRED_KEYS if name not in record]
        if missing:
            raise ValueError(
                f"Prediction record {record.get('id', '<no id>')!r} lacks {missing}; "
                "write records in the predictions.jsonl format"
            )
        if bool(record["correct"]) != (record["prediction"] == record["answer"]):
            raise ValueError(
                f"Prediction record {record['id']!r} has correct={record['correct']!r} but prediction "
                f"{record['prediction']!r} and answer {record['answer']!r}; "
                "map both letters to the stored option order"
            )

        key = (str(record.get("config", "")), str(record["id"]))
        rotation = int(record.get("rotation", 0))
        rotations = by_question.setdefault(key, {})
        if rotation in rotations:
            raise ValueError(
                f"Prediction for question {record['id']!r} (config {record.get('config')!r}) "
                f"repeats rotation {rotation}; remove the duplicate records or score the runs separately"
            )
        rotations[rotation] = record
    return by_question


def _score_question(key: tuple[str, str], rotations: dict[int, dict], circular: bool) -> QuestionResult:
    used = [rotations[rotation] for rotation in sorted(rotations) if circular or rotation == 0]
    if not used:
        raise ValueError(
            f"Question {key[1]!r} has no rotation-0 prediction; score it with circular=True or add rotation 0"
        )

    if circular:
        complete = all(rotation in rotations for rotation in range(ROTATIONS))
        if not complete:
            logger.warning("Question %r lacks some of rotations 0..%d; it counts as wrong", key[1], ROTATIONS - 1)
        correct = complete and all(bool(record["correct"]) for record in used)
    else:
        correct = bool(used[0]["correct"])

    first = used[0]
    intersection, union = _chosen_box_overlap(first)
    return QuestionResult(
        key=key,
        subject=(str(first["source"]), str(first["subject_id"])),
        triplet=str(first["triplet"]),
        source=str(first["source"]),
        config=None if first.get("config") is None else str(first["config"]),
        task=str(first["task"]),
        correct=correct,
        invalid=any(record["prediction"] == INVALID for record in used),
        failed=any(record["prediction"] == FAILED for record in used),
        intersection=intersection,
        union=union,
    )


def _chosen_box_overlap(record: dict) -> tuple[float, float]:
    """Return (intersection, union) of the chosen box with ``bbox``; (0, 0) for classification."""
    if record["task"] != SEGMENTATION:
        return 0.0, 0.0

    truth = record.get("bbox")
    boxes = record.get("option_boxes")
    if truth is None or boxes is None or len(boxes) != len(LETTERS):
        raise ValueError(
            f"Segmentation prediction {record['id']!r} lacks 'bbox' or four 'option_boxes'; "
            "copy both from the dataset row into the record"
        )
    prediction = record["prediction"]
    chosen = boxes[LETTERS.index(prediction)] if prediction in LETTERS else None
    return box_overlap(truth, chosen)


def _summarise(label: str, results: list[QuestionResult], chance: float, n_bootstrap: int, seed: int) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "n": len(results),
        "n_subjects": len({result.subject for result in results}),
        "chance": chance,
    }
    for spec in METRICS.values():
        pairs = [(result, spec.item_value(result)) for result in results]
        pairs = [(result, value) for result, value in pairs if value is not None]
        if not pairs:
            summary[spec.name] = None
            continue

        numerators = np.array([value[0] for _, value in pairs], dtype=np.float64)
        denominators = np.array([value[1] for _, value in pairs], dtype=np.float64)
        summary[spec.name] = AGGREGATIONS[spec.aggregation](numerators, denominators)
        if spec.bootstrap:
            subjects = [result.subject for result, _ in pairs]
            summary[f"{spec.name}_ci"] = bootstrap_interval(
                numerators, denominators, subjects, n_bootstrap, _group_seed(seed, label, spec.name)
            )
    return summary


def bootstrap_interval(
    numerators: np.ndarray,
    denominators: np.ndarray,
    subjects: Sequence[Any],
    n_bootstrap: int,
    seed: int | Sequence[int],
    confidence: float = CONFIDENCE,
) -> list[float] | None:
    """Compute a percentile bootstrap interval of ``sum(numerators) / sum(denominators)``, resampling subjects.

    A subject can give several questions, so whole subjects are drawn with
    replacement and all their questions come along. This keeps correlated
    questions together and gives wider, honest intervals.

    Args:
        numerators: Per-question numerators, float64.
        denominators: Per-question denominators, float64, same length.
        subjects: Per-question subject keys, same length.
        n_bootstrap: Number of resamples; 0 returns None.
        seed: Seed (or seed sequence entropy) of the resampling.
        confidence: Central probability of the interval.

    Returns:
        ``[low, high]``, or None when ``n_bootstrap`` is 0 or every resample has a zero denominator.
    """
    if n_bootstrap == 0:
        return None

    subject_ids = {subject: index for index, subject in enumerate(dict.fromkeys(subjects))}
    indices = np.array([subject_ids[subject] for subject in subjects])
    subject_numerators = np.bincount(indices, weights=numerators, minlength=len(subject_ids))
    subject_denominators = np.bincount(indices, weights=denominators, minlength=len(subject_ids))

    rng = np.random.default_rng(seed)
    statistics = []
    for start in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
        draws = rng.integers(0, len(subject_ids), size=(min(_BOOTSTRAP_CHUNK, n_bootstrap - start), len(subject_ids)))
        totals = subject_denominators[draws].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            statistics.append(subject_numerators[draws].sum(axis=1) / totals)

    values = np.concatenate(statistics)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [float(low), float(high)]


def triplet_sort_key(name: str) -> tuple[int, str]:
    """Sort key that puts triplet names in ``builder.mat.TRIPLETS`` order and other names after them."""
    order = {triplet.name: index for index, triplet in enumerate(TRIPLETS)}
    return order.get(name, len(order)), name


def _group_seed(seed: int, label: str, metric: str) -> list[int]:
    # Each group and metric gets its own stream, so an interval does not change
    # when other groups are added to or removed from the predictions.
    digest = hashlib.sha256(f"{label}|{metric}".encode()).digest()
    return [seed, int.from_bytes(digest[:8], "little")]


def _area(box: Sequence[float] | None) -> float:
    if box is None:
        return 0.0
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))
