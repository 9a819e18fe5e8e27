"""Tests for eval.metrics: accuracy denominators, box IoU, cIoU, bootstrap and circular scoring."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eval.metrics import AGGREGATIONS, METRICS, box_iou, box_overlap, compute_metrics

SEGMENTATION_TRIPLET = "X-ray/Lung/Segmentation"
CLASSIFICATION_TRIPLET = "MRI/Brain/Classification"


def make_record(
    question_id: str,
    prediction: str,
    answer: str = "A",
    *,
    subject_id: str | None = None,
    triplet: str = CLASSIFICATION_TRIPLET,
    source: str = "brats",
    rotation: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    task = triplet.rsplit("/", 1)[1]
    record = {
        "id": question_id,
        "run_key": "test",
        "mode": "generate",
        "rotation": rotation,
        "raw_output": prediction,
        "scores": None,
        "prediction": prediction,
        "answer": answer,
        "correct": prediction == answer,
        "triplet": triplet,
        "source": source,
        "subject_id": subject_id or f"subject-{question_id}",
        "task": task,
        "bbox": None,
        "option_boxes": None,
    }
    record.update(extra)
    return record


def make_segmentation_record(question_id: str, prediction: str, truth: list[int], chosen: list[int]) -> dict[str, Any]:
    """A segmentation record whose option A is ``chosen`` and option B the truth."""
    boxes = [chosen, truth, [900, 900, 950, 950], [0, 900, 50, 950]]
    return make_record(
        question_id, prediction, "B", triplet=SEGMENTATION_TRIPLET, source="siim", bbox=truth, option_boxes=boxes
    )


def test_box_iou_half_overlap() -> None:
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)


def test_box_iou_identical() -> None:
    assert box_iou([100, 200, 300, 400], [100, 200, 300, 400]) == 1.0


def test_box_iou_disjoint() -> None:
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0


def test_box_iou_empty_boxes() -> None:
    assert box_iou([5, 5, 5, 10], [5, 5, 5, 10]) == 0.0


def test_box_overlap_none_is_empty() -> None:
    assert box_overlap([0, 0, 20, 10], None) == (0.0, 200.0)


def test_compute_metrics_ciou_hand_checked() -> None:
    """(truth area, chosen area, intersection) = (100, 100, 50) and (200, 100, 100) give cIoU 150/350."""
    predictions = [
        make_segmentation_record("q1", "A", truth=[0, 0, 10, 10], chosen=[5, 0, 15, 10]),
        make_segmentation_record("q2", "A", truth=[0, 0, 20, 10], chosen=[0, 0, 10, 10]),
    ]

    metrics = compute_metrics(predictions, n_bootstrap=0)
    group = metrics["per_triplet"][SEGMENTATION_TRIPLET]

    assert group["ciou"] == pytest.approx(150 / 350)
    assert group["mean_iou"] == pytest.approx((50 / 150 + 100 / 200) / 2)
    assert metrics["overall"]["ciou"] == pytest.approx(150 / 350)


def test_compute_metrics_invalid_box_is_empty() -> None:
    """An invalid choice adds 0 to the intersections and the true area to the unions."""
    predictions = [
        make_segmentation_record("q1", "A", truth=[0, 0, 10, 10], chosen=[5, 0, 15, 10]),
        make_segmentation_record("q2", "invalid", truth=[0, 0, 20, 10], chosen=[0, 0, 10, 10]),
    ]

    group = compute_metrics(predictions, n_bootstrap=0)["overall"]

    assert group["ciou"] == pytest.approx(50 / (150 + 200))
    assert group["mean_iou"] == pytest.approx((50 / 150) / 2)


def test_compute_metrics_correct_box_scores_one() -> None:
    predictions = [make_segmentation_record("q1", "B", truth=[0, 0, 10, 10], chosen=[5, 0, 15, 10])]

    group = compute_metrics(predictions, n_bootstrap=0)["overall"]

    assert group["ciou"] == 1.0
    assert group["accuracy"] == 1.0


def test_compute_metrics_denominator_is_questions() -> None:
    """Invalid and failed predictions stay in the denominator as wrong answers."""
    predictions = [
        make_record("q1", "A"),
        make_record("q2", "invalid"),
        make_record("q3", "failed"),
        make_record("q4", "B"),
    ]

    overall = compute_metrics(predictions, n_bootstrap=0)["overall"]

    assert overall["n"] == 4
    assert overall["accuracy"] == 0.25
    assert overall["parse_failure_rate"] == 0.25
    assert overall["invalid"] == 1
    assert overall["failed"] == 1


def test_compute_metrics_groups() -> None:
    predictions = [
        make_record("q1", "A", triplet="X-ray/Lung/Classification", source="chexpert"),
        make_record("q2", "B", triplet="X-ray/Lung/Classification", source="chexpert"),
        make_record("q3", "A", triplet=CLASSIFICATION_TRIPLET, source="brats"),
    ]

    metrics = compute_metrics(predictions, n_bootstrap=0)

    assert metrics["per_triplet"]["X-ray/Lung/Classification"]["accuracy"] == 0.5
    assert metrics["per_triplet"][CLASSIFICATION_TRIPLET]["accuracy"] == 1.0
    assert metrics["per_source"]["chexpert"]["n"] == 2
    assert metrics["per_config"] == {}
    assert metrics["per_triplet"][CLASSIFICATION_TRIPLET]["ciou"] is None


def test_compute_metrics_chance_level() -> None:
    predictions = [make_record(f"q{index}", "A") for index in range(2)]

    assert compute_metrics(predictions, n_bootstrap=0)["per_triplet"][CLASSIFICATION_TRIPLET]["chance"] == 0.25


def test_compute_metrics_per_config() -> None:
    """The same question id in two configs counts once per config."""
    predictions = [
        make_record("q1", "A", config="related"),
        make_record("q2", "A", config="related"),
        make_record("q1", "B", config="unrelated"),
        make_record("q2", "A", config="unrelated"),
    ]

    metrics = compute_metrics(predictions, n_bootstrap=0)

    assert metrics["per_config"]["related"]["accuracy"] == 1.0
    assert metrics["per_config"]["unrelated"]["accuracy"] == 0.5
    assert metrics["overall"]["n"] == 4


def test_compute_metrics_partial_config_raises() -> None:
    predictions = [make_record("q1", "A", config="related"), make_record("q2", "A")]

    with pytest.raises(ValueError, match="1 of 2 prediction records lack a 'config' key"):
        compute_metrics(predictions)


def test_compute_metrics_duplicate_raises() -> None:
    with pytest.raises(ValueError, match="'q1'.*repeats rotation 0"):
        compute_metrics([make_record("q1", "A"), make_record("q1", "B")])


def test_compute_metrics_empty_raises() -> None:
    with pytest.raises(ValueError, match="no predictions"):
        compute_metrics([])


def test_compute_metrics_missing_key_raises() -> None:
    record = make_record("q1", "A")
    del record["subject_id"]

    with pytest.raises(ValueError, match=r"'q1' lacks \['subject_id'\]"):
        compute_metrics([record])


def test_compute_metrics_inconsistent_correct_raises() -> None:
    record = make_record("q1", "B", "A")
    record["correct"] = True

    with pytest.raises(ValueError, match="'q1' has correct=True but prediction 'B' and answer 'A'"):
        compute_metrics([record])


def test_compute_metrics_segmentation_without_boxes_raises() -> None:
    record = make_record("q1", "A", triplet=SEGMENTATION_TRIPLET, source="siim")

    with pytest.raises(ValueError, match="'q1' lacks 'bbox' or four 'option_boxes'"):
        compute_metrics([record])


def test_compute_metrics_negative_bootstrap_raises() -> None:
    with pytest.raises(ValueError, match="n_bootstrap must be 0 or more, got -1"):
        compute_metrics([make_record("q1", "A")], n_bootstrap=-1)


def test_bootstrap_seed_reproducible() -> None:
    predictions = [make_record(f"q{index}", "AB"[index % 3 == 0], subject_id=f"s{index // 2}") for index in range(30)]

    first = compute_metrics(predictions, n_bootstrap=300, seed=7)
    second = compute_metrics(predictions, n_bootstrap=300, seed=7)
    other = compute_metrics(predictions, n_bootstrap=300, seed=8)

    assert first["overall"]["accuracy_ci"] == second["overall"]["accuracy_ci"]
    assert first["per_triplet"] == second["per_triplet"]
    assert first["overall"]["accuracy_ci"] != other["overall"]["accuracy_ci"]


def test_bootstrap_resamples_subjects() -> None:
    """Nine right answers from one subject and one wrong from another: drawing subjects can give 0."""
    predictions = [make_record(f"x{index}", "A", subject_id="x") for index in range(9)]
    predictions.append(make_record("y0", "B", subject_id="y"))

    overall = compute_metrics(predictions, n_bootstrap=1000, seed=0)["overall"]

    assert overall["accuracy"] == 0.9
    assert overall["n_subjects"] == 2
    assert overall["accuracy_ci"] == [0.0, 1.0]


def test_bootstrap_interval_contains_estimate() -> None:
    predictions = [make_record(f"q{index}", "AB"[index % 4 == 0]) for index in range(40)]

    overall = compute_metrics(predictions, n_bootstrap=500)["overall"]
    low, high = overall["accuracy_ci"]

    assert low <= overall["accuracy"] <= high
    assert high - low < 0.5


def test_bootstrap_zero_gives_no_interval() -> None:
    assert compute_metrics([make_record("q1", "A")], n_bootstrap=0)["overall"]["accuracy_ci"] is None


def test_circular_requires_all_rotations() -> None:
    predictions = [make_record("all", "A", rotation=rotation) for rotation in range(4)]
    predictions += [make_record("one_wrong", "A" if rotation else "C", rotation=rotation) for rotation in range(4)]
    predictions += [make_record("missing", "A", rotation=rotation) for rotation in range(3)]

    metrics = compute_metrics(predictions, n_bootstrap=0, circular=True)

    assert metrics["overall"]["n"] == 3
    assert metrics["overall"]["accuracy"] == pytest.approx(1 / 3)
    assert metrics["overall"]["chance"] == 0.25**4


def test_circular_off_scores_rotation_zero() -> None:
    predictions = [make_record("q1", "A" if rotation == 0 else "B", rotation=rotation) for rotation in range(4)]

    overall = compute_metrics(predictions, n_bootstrap=0)["overall"]

    assert overall["n"] == 1
    assert overall["accuracy"] == 1.0


def test_circular_invalid_rotation_counts_once() -> None:
    predictions = [make_record("q1", "invalid" if rotation == 2 else "A", rotation=rotation) for rotation in range(4)]

    overall = compute_metrics(predictions, n_bootstrap=0, circular=True)["overall"]

    assert overall["invalid"] == 1
    assert overall["parse_failure_rate"] == 1.0
    assert overall["accuracy"] == 0.0


def test_metrics_registry_declared() -> None:
    for name, spec in METRICS.items():
        assert spec.name == name
        assert isinstance(spec.higher_is_better, bool)
        assert spec.aggregation in AGGREGATIONS


def test_compute_metrics_json_serialisable() -> None:
    predictions = [
        make_record("q1", "A"),
        make_segmentation_record("q2", "A", truth=[0, 0, 10, 10], chosen=[5, 0, 15, 10]),
    ]

    metrics = compute_metrics(predictions, n_bootstrap=50)

    assert json.loads(json.dumps(metrics)) == metrics
    assert metrics["metrics"]["accuracy"] == {"higher_is_better": True, "aggregation": "mean", "bootstrap": True}
