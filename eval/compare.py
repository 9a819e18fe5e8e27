"""Side-by-side comparison of several runs, e.g. one model on related vs unrelated vs zero_overlap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.metrics import triplet_sort_key
from eval.report import MISSING, RESULTS_FILE, format_interval, format_number, format_rate


def compare_runs(run_dirs: list[Path]) -> str:
    """Build a Markdown table with one column per run and one row per metric.

    The first rows name each run's model or baseline, config and mode. Then
    come overall accuracy, accuracy per triplet (``accuracy [low, high]`` in
    percent), cIoU per segmentation triplet and the overall parse-failure
    rate. A run without a triplet shows a dash.

    Args:
        run_dirs: Run folders, each holding the ``results.json`` that
            ``eval.report.write_outputs`` wrote. Columns follow this order.

    Returns:
        The Markdown table, ending with a newline.

    Raises:
        FileNotFoundError: when a folder has no results.json.
        ValueError: when ``run_dirs`` is empty or a results.json is not valid JSON.
    """
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run folder")

    runs = [_read_results(Path(run_dir)) for run_dir in run_dirs]
    labels = _column_labels([Path(run_dir) for run_dir in run_dirs])
    triplets = _triplet_names(runs)

    rows: list[tuple[str, list[str]]] = [
        ("Model", [_setting(run, "model") or _setting(run, "baseline") or MISSING for run in runs]),
        ("Config", [_setting(run, "config") or MISSING for run in runs]),
        ("Mode", [_setting(run, "baseline") or _setting(run, "mode") or MISSING for run in runs]),
        ("Accuracy, overall", [_accuracy_cell(run["metrics"]["overall"]) for run in runs]),
    ]
    for triplet in triplets:
        cells = [_accuracy_cell(run["metrics"]["per_triplet"].get(triplet)) for run in runs]
        rows.append((f"Accuracy, {triplet}", cells))
    for triplet in triplets:
        values = [(run["metrics"]["per_triplet"].get(triplet) or {}).get("ciou") for run in runs]
        if any(value is not None for value in values):
            rows.append((f"cIoU, {triplet}", [format_number(value) for value in values]))
    rows.append(("Parse failures", [format_rate(run["metrics"]["overall"]["parse_failure_rate"]) for run in runs]))

    lines = ["| Metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return "\n".join(lines) + "\n"


def _read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {RESULTS_FILE} in {run_dir}; run the evaluation into that folder first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rerun the evaluation to rewrite it") from error


def _column_labels(run_dirs: list[Path]) -> list[str]:
    """Label columns by folder name, or by full path where two folders share a name."""
    names = [run_dir.name for run_dir in run_dirs]
    return [name if names.count(name) == 1 else str(run_dir) for name, run_dir in zip(names, run_dirs, strict=True)]


def _triplet_names(runs: list[dict[str, Any]]) -> list[str]:
    names = {name for run in runs for name in run["metrics"]["per_triplet"]}
    return sorted(names, key=triplet_sort_key)


def _setting(run: dict[str, Any], key: str) -> str | None:
    value = run.get("settings", {}).get(key)
    return None if value is None else str(value)


def _accuracy_cell(group: dict[str, Any] | None) -> str:
    if group is None:
        return MISSING
    return f"{format_rate(group['accuracy'])} {format_interval(group.get('accuracy_ci'))}"
