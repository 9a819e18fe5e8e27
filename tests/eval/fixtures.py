"""Small CrossMed datasets built in tmp_path for the eval tests.

The rows have the real CrossMed features (``builder.features.crossmed_features``)
and real PNG images and masks. Classification rows have four option texts.
Segmentation rows have four box texts such as ``"[120, 300, 410, 620]"`` as
options, with the true box stored in ``bbox``. Triplets cycle
through ``builder.mat.TRIPLETS`` row by row, and each subject gives two questions
of its triplet, so bootstrap tests see subjects with several questions.

Everything is deterministic from ``seed``: two calls with the same arguments
return identical rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import numpy as np

from builder.features import crossmed_features
from builder.imaging import encode_mask_png, encode_png
from builder.mat import LETTERS, TRIPLETS, TRIPLETS_BY_SOURCE, Triplet

IMAGE_SIDE = 32
"""Width and height of every fixture image, in pixels."""

QUESTIONS_PER_SUBJECT = 2

OPTION_TEXTS: dict[str, tuple[str, ...]] = {
    "X-ray/Lung/Classification": ("Pleural Effusion", "Cardiomegaly", "Atelectasis", "No Finding"),
    "MRI/Brain/Classification": ("FLAIR", "T1", "T1ce", "T2"),
    "CT/Lung/Classification": ("CT-0", "CT-1", "CT-2", "CT-3"),
}
"""The four option texts of each classification triplet; every text is also a correct answer somewhere."""

SOURCE_BY_TRIPLET: dict[str, str] = {
    triplet.name: source for source, triplets in TRIPLETS_BY_SOURCE.items() for triplet in triplets
}


def box_text(box: list[int]) -> str:
    """Format a 0-1000 box as the option text the builder writes, e.g. ``"[120, 300, 410, 620]"``."""
    return "[" + ", ".join(str(value) for value in box) + "]"


def make_crossmed_rows(n_rows: int = 16, seed: int = 0, split: str = "test") -> list[dict[str, Any]]:
    """Build ``n_rows`` CrossMed rows as plain dicts, with images as PNG bytes.

    Args:
        n_rows: Number of questions. Triplets cycle through ``TRIPLETS`` in order,
            so any ``n_rows >= 2`` gives classification and segmentation rows.
        seed: Seed of the random images, boxes and option texts.
        split: Split name, used in ids and subject ids so that splits never share a subject.

    Returns:
        One dict per row with every column of ``crossmed_features()``. Answer
        letters cycle over A-D within each triplet, starting at a different
        letter per triplet. They are balanced within every triplet when
        ``n_rows`` is a multiple of 20, balanced overall for 16 or 20 rows, and
        otherwise the letter counts within a triplet differ by at most one.
    """
    rng = np.random.default_rng(seed)
    count_by_triplet = {triplet.name: 0 for triplet in TRIPLETS}
    rows = []

    for index in range(n_rows):
        triplet_index = index % len(TRIPLETS)
        triplet = TRIPLETS[triplet_index]
        position = count_by_triplet[triplet.name]
        count_by_triplet[triplet.name] += 1

        answer_index = (position + triplet_index) % len(LETTERS)
        subject_number = position // QUESTIONS_PER_SUBJECT
        rows.append(_make_row(rng, index, triplet, answer_index, subject_number, split))
    return rows


def make_crossmed_dataset(tmp_path: Path, n_rows: int = 16, seed: int = 0, split: str = "test") -> datasets.Dataset:
    """Build a CrossMed dataset and return it as ``load_dataset`` reads it back from Parquet.

    The rows go through a Parquet file under ``tmp_path`` so that the returned
    dataset has the same features and decoding as a published config.

    Args:
        tmp_path: Folder for the Parquet file and the ``datasets`` cache.
        n_rows: Number of questions (see ``make_crossmed_rows``).
        seed: Seed of the random images, boxes and option texts.
        split: Split name of the returned dataset.

    Returns:
        A ``datasets.Dataset`` with ``crossmed_features()``; ``image`` and ``mask`` decode to PIL images.
    """
    folder = write_crossmed_folder(tmp_path / f"crossmed_{split}_{n_rows}_{seed}", n_rows, seed, splits=(split,))
    return datasets.load_dataset(str(folder), split=split, cache_dir=str(tmp_path / "hf_cache"))


def write_crossmed_folder(
    tmp_path: Path,
    n_rows: int = 16,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "test"),
    config_name: str = "related",
) -> Path:
    """Write a Hub-layout CrossMed folder: ``data/<split>.parquet`` and a README with ``configs:`` YAML.

    The folder loads with ``load_dataset(str(folder), config_name, split=...)``
    and, because its only config is the default, with ``load_dataset(str(folder), split=...)``.

    Args:
        tmp_path: Folder to write into; created when missing.
        n_rows: Number of questions per split.
        seed: Seed of the first split; split ``k`` uses ``seed + k`` so splits differ.
        splits: Split names to write.
        config_name: Name of the single config in the README.

    Returns:
        The folder, ``tmp_path`` itself.
    """
    data_folder = tmp_path / "data"
    data_folder.mkdir(parents=True, exist_ok=True)
    for offset, split in enumerate(splits):
        rows = make_crossmed_rows(n_rows, seed + offset, split)
        columns = {name: [row[name] for row in rows] for name in crossmed_features()}
        dataset = datasets.Dataset.from_dict(columns, features=crossmed_features())
        dataset.to_parquet(str(data_folder / f"{split}.parquet"))

    data_files = "".join(f"      - split: {split}\n        path: data/{split}.parquet\n" for split in splits)
    readme = f"---\nconfigs:\n  - config_name: {config_name}\n    default: true\n    data_files:\n{data_files}---\n"
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    return tmp_path


def _make_row(
    rng: np.random.Generator, index: int, triplet: Triplet, answer_index: int, subject_number: int, split: str
) -> dict[str, Any]:
    source = SOURCE_BY_TRIPLET[triplet.name]
    image = rng.integers(0, 256, size=(IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    row: dict[str, Any] = {
        "id": f"fixture-{split}-{index:04d}",
        "image": {"bytes": encode_png(image), "path": None},
        "answer": LETTERS[answer_index],
        "answer_index": answer_index,
        "modality": triplet.modality,
        "anatomy": triplet.anatomy,
        "task": triplet.task,
        "triplet": triplet.name,
        "source": source,
        "subject_id": f"{source}-{split}-{subject_number:03d}",
        "slice_index": 0 if triplet.modality == "X-ray" else 40 + index,
        "source_file": f"{source}/{split}/case_{index:04d}",
        "template_id": index % 3,
        "mask": None,
        "bbox": None,
        "option_boxes": None,
    }
    if triplet.task == "Segmentation":
        row.update(_segmentation_columns(rng, answer_index))
        row["question"] = "Which box encloses the abnormal region in this image?"
    else:
        row["options"] = _classification_options(rng, triplet, answer_index)
        row["question"] = "Which finding does this image show?"
    return row


def _classification_options(rng: np.random.Generator, triplet: Triplet, answer_index: int) -> list[str]:
    texts = list(OPTION_TEXTS[triplet.name])
    correct = texts.pop(int(rng.integers(len(texts))))
    distractors = [texts[int(position)] for position in rng.permutation(len(texts))]
    return distractors[:answer_index] + [correct] + distractors[answer_index:]


def _segmentation_columns(rng: np.random.Generator, answer_index: int) -> dict[str, Any]:
    truth_pixels = _random_pixel_box(rng)
    distractors: list[list[int]] = []
    while len(distractors) < len(LETTERS) - 1:
        candidate = _random_pixel_box(rng)
        if all(_pixel_iou(candidate, other) < 0.3 for other in [truth_pixels, *distractors]):
            distractors.append(candidate)

    boxes = [_to_thousandths(box) for box in distractors]
    truth = _to_thousandths(truth_pixels)
    boxes.insert(answer_index, truth)

    mask = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=bool)
    x1, y1, x2, y2 = truth_pixels
    mask[y1:y2, x1:x2] = True
    return {
        "options": [box_text(box) for box in boxes],
        "mask": {"bytes": encode_mask_png(mask), "path": None},
        "bbox": truth,
        "option_boxes": boxes,
    }


def _random_pixel_box(rng: np.random.Generator) -> list[int]:
    """Draw a pixel box ``[x1, y1, x2, y2]`` (far corner exclusive) that is 4-12 pixels wide and high."""
    width, height = (int(value) for value in rng.integers(4, 13, size=2))
    x1 = int(rng.integers(0, IMAGE_SIDE - width + 1))
    y1 = int(rng.integers(0, IMAGE_SIDE - height + 1))
    return [x1, y1, x1 + width, y1 + height]


def _pixel_iou(first: list[int], second: list[int]) -> float:
    width = max(0, min(first[2], second[2]) - max(first[0], second[0]))
    height = max(0, min(first[3], second[3]) - max(first[1], second[1]))
    intersection = width * height
    union = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
    return intersection / (union - intersection)


def _to_thousandths(box: list[int]) -> list[int]:
    return [round(value * 1000 / IMAGE_SIDE) for value in box]
