"""Tests for eval.report, eval.plots and eval.compare on fixture datasets and baseline runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from builder.mat import TRIPLETS
from eval.baselines import prior_predictions, random_predictions
from eval.compare import compare_runs
from eval.report import plot_segmentation_examples, write_outputs
from tests.eval.fixtures import make_crossmed_dataset

RANDOM_WEIGHTS_LINE = "The model weights are random"


@pytest.fixture(scope="module")
def test_split(tmp_path_factory: pytest.TempPathFactory):
    return make_crossmed_dataset(tmp_path_factory.mktemp("data"), n_rows=20)


def test_write_outputs_files(tmp_path: Path, test_split) -> None:
    predictions = random_predictions(test_split, seed=0)
    settings = {"model": "tiny-llava", "config": "related", "split": "test", "mode": "generate"}

    results = write_outputs(tmp_path / "run", predictions, settings, test_split._fingerprint, n_bootstrap=100)

    stored = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    assert stored == json.loads(json.dumps(results))
    assert stored["settings"] == settings
    assert stored["dataset_fingerprint"] == test_split._fingerprint
    assert set(stored["versions"]) >= {"python", "torch", "transformers", "datasets"}
    assert stored["metrics"]["overall"]["n"] == 20
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == [
        "accuracy_per_triplet.png",
        "report.md",
        "results.json",
    ]


def test_write_outputs_report_table(tmp_path: Path, test_split) -> None:
    predictions = random_predictions(test_split, seed=0)

    write_outputs(tmp_path, predictions, {"baseline": "random"}, "fingerprint", n_bootstrap=100)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")

    assert "| Group | n | Subjects | Accuracy | 95% CI | Chance | Parse failures | Failed | cIoU | Mean IoU |" in report
    for triplet in TRIPLETS:
        assert f"| {triplet.name} | 4 | 2 |" in report
    assert "| **Overall** | 20 |" in report
    assert "![Accuracy per triplet](accuracy_per_triplet.png)" in report
    assert RANDOM_WEIGHTS_LINE not in report


def test_write_outputs_random_weights_line(tmp_path: Path, test_split) -> None:
    predictions = random_predictions(test_split, seed=0)

    write_outputs(tmp_path, predictions, {"model": "tiny", "random_weights": True}, "fingerprint", n_bootstrap=0)

    assert RANDOM_WEIGHTS_LINE in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_write_outputs_circular_setting(tmp_path: Path, test_split) -> None:
    predictions = random_predictions(test_split, seed=0, rotations=4)

    results = write_outputs(tmp_path, predictions, {"circular": True}, "fingerprint", n_bootstrap=0)

    assert results["metrics"]["settings"]["circular"] is True
    assert results["metrics"]["overall"]["chance"] == 0.25**4


def test_write_outputs_replaces_files(tmp_path: Path, test_split) -> None:
    """A second write replaces the outputs and leaves no temporary files."""
    write_outputs(tmp_path, random_predictions(test_split, seed=0), {"baseline": "random"}, "first", n_bootstrap=0)
    write_outputs(tmp_path, random_predictions(test_split, seed=1), {"baseline": "random"}, "second", n_bootstrap=0)

    stored = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert stored["dataset_fingerprint"] == "second"
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


def test_write_outputs_empty_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no predictions"):
        write_outputs(tmp_path, [], {}, "fingerprint")


def test_accuracy_plot_is_png(tmp_path: Path, test_split) -> None:
    write_outputs(tmp_path, random_predictions(test_split, seed=0), {}, "fingerprint", n_bootstrap=50)

    with Image.open(tmp_path / "accuracy_per_triplet.png") as image:
        assert image.format == "PNG"
        assert image.width > 100


def test_plot_segmentation_examples(tmp_path: Path, test_split) -> None:
    predictions = random_predictions(test_split, seed=0)

    path = plot_segmentation_examples(tmp_path, test_split, predictions, limit=3)
    write_outputs(tmp_path, predictions, {}, "fingerprint", n_bootstrap=0)

    assert path == tmp_path / "segmentation_examples.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > image.height
    assert "![Segmentation examples](segmentation_examples.png)" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_plot_segmentation_examples_none(tmp_path: Path, test_split) -> None:
    classification = [record for record in random_predictions(test_split, seed=0) if record["task"] != "Segmentation"]

    assert plot_segmentation_examples(tmp_path, test_split, classification) is None
    assert not (tmp_path / "segmentation_examples.png").exists()


def test_plot_segmentation_examples_without_pixels(tmp_path: Path, test_split) -> None:
    predictions = random_predictions(test_split, seed=0)
    blank = test_split.map(lambda row: {"image": None, "mask": None})

    assert plot_segmentation_examples(tmp_path, blank, predictions) is None
    assert not (tmp_path / "segmentation_examples.png").exists()


def test_compare_runs_table(tmp_path: Path, test_split) -> None:
    train = make_crossmed_dataset(tmp_path / "train", n_rows=20, seed=1, split="train")
    random = random_predictions(test_split, seed=0)
    write_outputs(tmp_path / "random", random, {"baseline": "random"}, "f", n_bootstrap=0)
    prior = prior_predictions(train, test_split)
    write_outputs(tmp_path / "prior", prior, {"baseline": "prior", "config": "related"}, "f", n_bootstrap=0)

    table = compare_runs([tmp_path / "random", tmp_path / "prior"])
    lines = table.splitlines()

    assert lines[0] == "| Metric | random | prior |"
    assert "| Config | – | related |" in lines
    for triplet in TRIPLETS:
        assert any(line.startswith(f"| Accuracy, {triplet.name} |") for line in lines)
    assert any(line.startswith("| cIoU, X-ray/Lung/Segmentation |") for line in lines)
    assert not any(line.startswith("| cIoU, CT/Lung/Classification |") for line in lines)


def test_compare_runs_missing_results_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No results.json in .*empty_run"):
        compare_runs([tmp_path / "empty_run"])


def test_compare_runs_invalid_json_raises(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{", encoding="utf-8")

    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        compare_runs([tmp_path])


def test_compare_runs_empty_raises() -> None:
    with pytest.raises(ValueError, match="at least one run folder"):
        compare_runs([])
