"""PNG plots of a run: accuracy per triplet with intervals, and segmentation examples.

The figures are drawn with matplotlib's object API on the Agg canvas, so no
display and no global pyplot state are involved, and they are written
atomically next to the other run outputs.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from builder.mat import LETTERS
from eval.metrics import triplet_sort_key

logger = logging.getLogger(__name__)

ACCURACY_PLOT = "accuracy_per_triplet.png"
SEGMENTATION_PLOT = "segmentation_examples.png"
_DPI = 120


def plot_accuracy_per_triplet(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """Draw accuracy per triplet as horizontal bars with 95% interval whiskers and the chance level.

    Args:
        run_dir: Output folder of the run; created when missing.
        metrics: The dict returned by ``eval.metrics.compute_metrics``.

    Returns:
        The written PNG path, ``run_dir / "accuracy_per_triplet.png"``.
    """
    groups = metrics["per_triplet"]
    names = sorted(groups, key=triplet_sort_key)
    accuracies = [groups[name]["accuracy"] for name in names]
    errors = np.array([_whiskers(groups[name]) for name in names], dtype=np.float64).reshape(-1, 2).T

    figure = Figure(figsize=(7.0, 1.0 + 0.5 * max(len(names), 1)), dpi=_DPI, layout="constrained")
    axes = figure.subplots()
    positions = np.arange(len(names))
    axes.barh(positions, accuracies, xerr=errors, color="#4c72b0", capsize=4)
    axes.axvline(metrics["overall"]["chance"], color="#c44e52", linestyle="--", label="chance")
    axes.set_yticks(positions, labels=[f"{name} (n={groups[name]['n']})" for name in names])
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("accuracy (95% bootstrap interval over subjects)")
    axes.legend(loc="best")
    return save_figure(figure, Path(run_dir) / ACCURACY_PLOT)


def plot_segmentation_examples(
    run_dir: Path, dataset: datasets.Dataset, predictions: list[dict], limit: int = 4
) -> Path | None:
    """Draw segmentation questions with their four lettered option boxes, the true box and the chosen box.

    Option boxes are thin white outlines labelled A-D, the true box a dashed
    green outline and the chosen box a thick orange outline (absent when the
    prediction is invalid or failed). Boxes are converted from the 0-1000 scale
    to pixels with ``x * width / 1000`` and ``y * height / 1000``.

    Args:
        run_dir: Output folder of the run; created when missing.
        dataset: The scored split, with images; rows are looked up by ``id``.
        predictions: Prediction records; the first ``limit`` rotation-0
            segmentation records whose id is in ``dataset`` are drawn.
        limit: Maximum number of questions drawn.

    Returns:
        The written PNG path, ``run_dir / "segmentation_examples.png"``, or None
        when there is no segmentation prediction to draw.
    """
    row_index = {question_id: index for index, question_id in enumerate(dataset["id"])}
    chosen = []
    for record in predictions:
        if len(chosen) == limit:
            break
        if record.get("task") != "Segmentation" or record.get("rotation", 0) != 0 or record["id"] not in row_index:
            continue
        row = dataset[row_index[record["id"]]]
        # Rows published without pixels have no image to draw on.
        if row["image"] is not None:
            chosen.append((row, record))
    if not chosen:
        logger.info("No segmentation predictions with images to draw; %s not written", SEGMENTATION_PLOT)
        return None

    figure = Figure(figsize=(3.2 * len(chosen), 3.8), dpi=_DPI, layout="constrained")
    for axes, (row, record) in zip(figure.subplots(1, len(chosen), squeeze=False)[0], chosen, strict=True):
        _draw_segmentation_example(axes, row, record)
    return save_figure(figure, Path(run_dir) / SEGMENTATION_PLOT)


def save_figure(figure: Figure, path: Path) -> Path:
    """Render ``figure`` as PNG on the Agg canvas and write it atomically to ``path``."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
    return path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    Readers never see a half-written file, because ``os.replace`` is atomic on
    one file system. Text is encoded as UTF-8.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data

    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
        # mkstemp creates the file readable by its owner only; give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        raise


def _whiskers(group: dict[str, Any]) -> tuple[float, float]:
    interval = group.get("accuracy_ci")
    if interval is None:
        return 0.0, 0.0
    return max(0.0, group["accuracy"] - interval[0]), max(0.0, interval[1] - group["accuracy"])


def _draw_segmentation_example(axes: Any, row: dict[str, Any], record: dict[str, Any]) -> None:
    image = np.asarray(row["image"].convert("L"))
    height, width = image.shape
    axes.imshow(image, cmap="gray", vmin=0, vmax=255)

    def to_pixels(box: list[int]) -> tuple[float, float, float, float]:
        # imshow puts pixel centres on integers, so the edge of pixel 0 is at -0.5.
        x1, y1, x2, y2 = (value / 1000.0 for value in box)
        return x1 * width - 0.5, y1 * height - 0.5, (x2 - x1) * width, (y2 - y1) * height

    for letter, box in zip(LETTERS, record["option_boxes"], strict=True):
        x, y, box_width, box_height = to_pixels(box)
        axes.add_patch(Rectangle((x, y), box_width, box_height, fill=False, edgecolor="white", linewidth=0.8))
        axes.text(x, y, letter, color="black", backgroundcolor="white", fontsize=7, va="bottom")

    x, y, box_width, box_height = to_pixels(record["bbox"])
    truth = Rectangle((x, y), box_width, box_height, fill=False, edgecolor="#55a868", linestyle="--", linewidth=2)
    axes.add_patch(truth)
    if record["prediction"] in LETTERS:
        x, y, box_width, box_height = to_pixels(record["option_boxes"][LETTERS.index(record["prediction"])])
        axes.add_patch(Rectangle((x, y), box_width, box_height, fill=False, edgecolor="#dd8452", linewidth=2.5))

    verdict = "correct" if record["correct"] else "wrong"
    axes.set_title(f"{record['id']}\nanswer {record['answer']}, chose {record['prediction']} ({verdict})", fontsize=8)
    axes.set_axis_off()
