"""Run outputs: results.json, a Markdown report and PNG plots.

``write_outputs`` scores the predictions and writes everything a reader of a
run needs beside ``predictions.jsonl``. Every file is written atomically, so an
interrupted run never leaves a truncated report.
"""

from __future__ import annotations

import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from eval.metrics import compute_metrics, triplet_sort_key
from eval.plots import (
    ACCURACY_PLOT,
    SEGMENTATION_PLOT,
    plot_accuracy_per_triplet,
    plot_segmentation_examples,
    write_atomic,
)

__all__ = ["RESULTS_FILE", "REPORT_FILE", "write_outputs", "plot_segmentation_examples", "package_versions"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
VERSIONED_PACKAGES = ("torch", "transformers", "datasets", "numpy")
MISSING = "–"


def write_outputs(
    run_dir: Path,
    predictions: list[dict],
    settings: dict,
    dataset_fingerprint: str,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Score ``predictions`` and write results.json, report.md and the accuracy plot into ``run_dir``.

    The segmentation example figure needs the images, so the caller draws it
    with ``plot_segmentation_examples(run_dir, dataset, predictions)``. The
    report links that figure when it exists before this call.

    Args:
        run_dir: Output folder of the run; created when missing.
        predictions: Prediction records in the ``predictions.jsonl`` format.
        settings: Run settings stored verbatim in results.json. Keys the report
            reads when present: ``model``, ``dataset``, ``config``, ``split``,
            ``mode``, ``baseline``, ``blind``, ``circular`` (also passed to the
            metrics) and ``random_weights``.
        dataset_fingerprint: Fingerprint of the scored split, e.g. ``Dataset._fingerprint``.
        n_bootstrap: Bootstrap resamples for the 95% intervals.
        seed: Bootstrap seed.

    Returns:
        The results dict written to results.json: ``settings``, ``versions``,
        ``dataset_fingerprint``, ``n_predictions`` and ``metrics``.

    Raises:
        ValueError: from ``compute_metrics`` when the predictions are empty or malformed.
    """
    run_dir = Path(run_dir)
    metrics = compute_metrics(
        predictions, n_bootstrap=n_bootstrap, seed=seed, circular=bool(settings.get("circular", False))
    )
    results = {
        "settings": settings,
        "versions": package_versions(),
        "dataset_fingerprint": dataset_fingerprint,
        "n_predictions": len(predictions),
        "metrics": metrics,
    }

    write_atomic(run_dir / RESULTS_FILE, json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    plot_accuracy_per_triplet(run_dir, metrics)
    has_examples = (run_dir / SEGMENTATION_PLOT).is_file()
    write_atomic(run_dir / REPORT_FILE, render_report(results, segmentation_examples=has_examples))
    logger.info("Wrote %s, %s and %s to %s", RESULTS_FILE, REPORT_FILE, ACCURACY_PLOT, run_dir)
    return results


def package_versions() -> dict[str, str | None]:
    """Return the versions of Python and of the packages that change results; None for one not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def render_report(results: dict[str, Any], *, segmentation_examples: bool = False) -> str:
    """Render the Markdown report of a results dict as written by ``write_outputs``.

    Args:
        results: The dict that ``write_outputs`` returns.
        segmentation_examples: Whether to link ``segmentation_examples.png``.

    Returns:
        The Markdown text, ending with a newline.
    """
    settings = results["settings"]
    metrics = results["metrics"]
    overall = metrics["overall"]
    lines = [f"# CrossMed evaluation: {settings.get('model') or settings.get('baseline') or 'unnamed run'}", ""]
    lines += _settings_lines(settings, results)

    if settings.get("random_weights"):
        lines += [
            "",
            "> The model weights are random (`random_weights` is true), so accuracy at chance level is expected in "
            "likelihood mode. In generate mode such a model mostly writes text that names no option, which counts "
            "as invalid and wrong, so accuracy can fall below chance.",
        ]
    lines += [
        "",
        f"Questions: {overall['n']}. Accuracy {format_rate(overall['accuracy'])} "
        f"(95% CI {format_interval(overall.get('accuracy_ci'))}), chance {format_rate(overall['chance'])}. "
        f"Parse failures: {int(overall['invalid'])} ({format_rate(overall['parse_failure_rate'])}). "
        f"Failed: {int(overall['failed'])}.",
    ]

    sections = [("Per triplet", "per_triplet"), ("Per source", "per_source"), ("Per config", "per_config")]
    for title, key in sections:
        if metrics.get(key):
            lines += ["", f"## {title}", "", *group_table(metrics[key], overall)]

    lines += ["", "## Plots", "", f"![Accuracy per triplet]({ACCURACY_PLOT})"]
    if segmentation_examples:
        lines.append(f"![Segmentation examples]({SEGMENTATION_PLOT})")
    lines += ["", _method_note(metrics)]
    return "\n".join(lines) + "\n"


def group_table(groups: dict[str, dict[str, Any]], overall: dict[str, Any]) -> list[str]:
    """Render one Markdown table row per group, and an overall row, of the headline metrics."""
    header = "| Group | n | Subjects | Accuracy | 95% CI | Chance | Parse failures | Failed | cIoU | Mean IoU |"
    lines = [header, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    ordered = sorted(groups, key=triplet_sort_key)
    for name, group in [*((name, groups[name]) for name in ordered), ("**Overall**", overall)]:
        lines.append(
            f"| {name} | {group['n']} | {group['n_subjects']} | {format_rate(group['accuracy'])} "
            f"| {format_interval(group.get('accuracy_ci'))} | {format_rate(group['chance'])} "
            f"| {int(group['invalid'])} ({format_rate(group['parse_failure_rate'])}) | {int(group['failed'])} "
            f"| {format_number(group.get('ciou'))} | {format_number(group.get('mean_iou'))} |"
        )
    return lines


def format_rate(value: float | None) -> str:
    """Format a proportion as a percentage with one decimal, or a dash for None."""
    return MISSING if value is None else f"{100.0 * value:.1f}%"


def format_interval(interval: list[float] | None) -> str:
    """Format a ``[low, high]`` proportion interval in percent, or a dash for None."""
    return MISSING if interval is None else f"[{100.0 * interval[0]:.1f}, {100.0 * interval[1]:.1f}]"


def format_number(value: float | None) -> str:
    """Format a score in [0, 1] with three decimals, or a dash for None."""
    return MISSING if value is None else f"{value:.3f}"


def _settings_lines(settings: dict[str, Any], results: dict[str, Any]) -> list[str]:
    labels = [
        ("model", "Model"),
        ("baseline", "Baseline"),
        ("dataset", "Dataset"),
        ("config", "Config"),
        ("split", "Split"),
        ("mode", "Mode"),
        ("blind", "Blind (no image)"),
        ("circular", "Circular evaluation"),
    ]
    # A baseline run has no model, so its generation mode would only mislead.
    shown = [(key, label) for key, label in labels if not (key == "mode" and settings.get("baseline"))]
    lines = [f"- {label}: `{settings[key]}`" for key, label in shown if settings.get(key) is not None]
    lines.append(f"- Dataset fingerprint: `{results['dataset_fingerprint']}`")
    versions = ", ".join(f"{name} {version}" for name, version in results["versions"].items() if version)
    lines.append(f"- Versions: {versions}")
    return lines


def _method_note(metrics: dict[str, Any]) -> str:
    settings = metrics["settings"]
    circular = " A question counts as correct only when all four option rotations are." if settings["circular"] else ""
    return (
        f"Accuracy divides by all questions: invalid (unparseable) and failed predictions count as wrong. "
        f"Intervals are {100 * settings['confidence']:.0f}% percentile bootstrap intervals over subjects "
        f"({settings['n_bootstrap']} resamples, seed {settings['seed']}). cIoU is the sum of intersections over "
        f"the sum of unions of the chosen box with the true box; an invalid choice is an empty box.{circular}"
    )
