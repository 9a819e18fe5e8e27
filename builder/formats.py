"""Export one config of a CrossMed export folder to the formats other tools read.

Three formats are written, each under its own folder of ``out_dir``:

- ``vlmevalkit``: ``vlmevalkit/crossmed_<config>.tsv``, the config's test split
  as a VLMEvalKit multiple-choice image TSV. Put the file in ``$LMUData``, where
  its stem is the dataset name.
- ``lmms_eval``: ``lmms_eval/crossmed_<config>/``, a task folder with
  ``crossmed_<config>.yaml`` and the ``utils.py`` its ``!function`` hooks name.
  Pass the folder to lmms-eval with ``--include_path``.
- ``conversations``: ``conversations/crossmed_<config>/train.jsonl``, the
  config's train split in the LLaVA fine-tuning layout, with one PNG per row
  under ``images/`` next to it.

The lmms-eval task and the conversations word every prompt as
:func:`eval.prompts.format_prompt` does, so a model receives the same text there as
in ``python -m eval``. VLMEvalKit builds its own prompt from the TSV columns.
Each output is written into a temporary folder next to its destination and
renamed into place at the end, so an interrupted export leaves no output that
looks complete.

NOTE: The TSV columns follow VLMEvalKit's development guide and the task YAML
follows lmms-eval's task guide. The tests check the files, but neither tool
runs in them.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import string
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
from PIL import Image
from tqdm.auto import tqdm

from builder.export import _apply_umask, _owner_tag, remove_stale_staging, replace_folder
from builder.mat import LETTERS
from eval.prompts import INSTRUCTION, PROMPT_VERSION, format_prompt

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("vlmevalkit", "lmms_eval", "conversations")

VLMEVALKIT_COLUMNS: tuple[str, ...] = (
    "index", "image", "question", *LETTERS, "answer", "category", "l2-category", "id", "split",
)
"""The TSV columns. ``category`` is the triplet name and ``l2-category`` the source."""

IMAGE_TOKEN = "<image>"
"""The placeholder that LLaVA fine-tuning scripts replace with the image features."""

RESTORE_HINT = (
    "Rows exported without pixels need their images rebuilt first: "
    "python -m builder.publish restore --folder EXPORT --data-dir SOURCES --out RESTORED"
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Row ids become image file names, so they must not contain path separators or start with a dot.
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_COLUMNS = ("id", "image", "question", "options", "answer", "triplet", "source")
_SPLIT_OF_FORMAT = {"vlmevalkit": "test", "lmms_eval": "test", "conversations": "train"}


def export_formats(
    export_dir: Path,
    config: str,
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    *,
    dataset_path: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write one config of an export folder in the formats of VLMEvalKit, lmms-eval and LLaVA fine-tuning.

    Args:
        export_dir: An export folder in the Hub layout, as written by ``python crossmed.py build``.
        config: A config of that folder, e.g. ``"unrelated"``.
        out_dir: The folder to write into. Each format gets a subfolder, so
            several configs can share one ``out_dir``.
        formats: Any of ``"vlmevalkit"``, ``"lmms_eval"`` and ``"conversations"``.
        dataset_path: The ``dataset_path`` written into the lmms-eval task: a
            Hub dataset id such as ``"org/crossmed"``, or a folder. None writes
            the absolute path of ``export_dir``.
        overwrite: Replace outputs of the same config that already exist.

    Returns:
        Per format, what was written: the TSV file, the lmms-eval task folder,
        and the JSON Lines file.

    Raises:
        ValueError: when a format is unknown, ``formats`` is empty, the folder
            has no such config or the config lacks the split a format needs,
            or a row has no image bytes or an id unfit for a file name.
        FileNotFoundError: when ``export_dir`` is not a folder.
        FileExistsError: when an output exists and ``overwrite`` is False.
    """
    requested = _check_formats(formats)
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    _check_config(export_dir, config)
    builder = datasets.load_dataset_builder(str(export_dir), config)
    targets = {name: output_path(name, out_dir, config) for name in requested}
    _check_outputs(builder, targets, overwrite)

    task_dataset_path = dataset_path or str(export_dir.resolve())
    writers: dict[str, Callable[[Path], Path]] = {
        "vlmevalkit": lambda target: _write_vlmevalkit(builder, config, target, overwrite),
        "lmms_eval": lambda target: _write_lmms_eval(config, target, task_dataset_path, overwrite),
        "conversations": lambda target: _write_conversations(builder, config, target, overwrite),
    }
    written = {name: writers[name](target) for name, target in targets.items()}
    for name, path in written.items():
        logger.info("Wrote %s export of config %s to %s", name, config, path)
    return written


def _check_formats(formats: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    if not formats:
        raise ValueError(f"No export format given. Pass one or more of {', '.join(FORMATS)}.")

    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ValueError(f"Unknown export format {', '.join(map(repr, unknown))}: expected any of {', '.join(FORMATS)}.")
    return list(dict.fromkeys(formats))


def _check_config(export_dir: Path, config: str) -> None:
    if not export_dir.is_dir():
        raise FileNotFoundError(
            f"Export folder {export_dir} not found. Build one with `python crossmed.py build --out {export_dir}`."
        )

    configs = datasets.get_dataset_config_names(str(export_dir))
    if config not in configs:
        raise ValueError(f"Export folder {export_dir} has no config {config!r}. Its configs are {', '.join(configs)}.")


def output_path(format_name: str, out_dir: Path, config: str) -> Path:
    """Return where ``export_formats`` writes one format of one config.

    Returns:
        ``vlmevalkit/crossmed_<config>.tsv``, or the folder ``lmms_eval/crossmed_<config>``
        or ``conversations/crossmed_<config>``, under ``out_dir``.
    """
    name = f"crossmed_{config}"
    return out_dir / format_name / (f"{name}.tsv" if format_name == "vlmevalkit" else name)


def _check_outputs(builder: datasets.DatasetBuilder, targets: dict[str, Path], overwrite: bool) -> None:
    """Raise before anything is written when a format's split is missing or its output exists."""
    data_files = builder.config.data_files or {}
    for name in targets:
        split = _SPLIT_OF_FORMAT[name]
        if split not in data_files:
            raise ValueError(
                f"Config {builder.config.name!r} has no {split} split, which the {name} format exports. "
                f"Its splits are {', '.join(sorted(data_files))}."
            )

    existing = [str(target) for target in targets.values() if target.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"Outputs already exist: {', '.join(existing)}. Pass overwrite=True (--overwrite) to replace them."
        )


def _load_split(builder: datasets.DatasetBuilder, split: str) -> datasets.Dataset:
    """Load one split through its data files, with images as undecoded ``{"bytes", "path"}`` dicts.

    ``load_dataset(folder, config)`` in datasets 5.2 caches a local folder under
    a key that ignores the files' modification times, so it would return old
    rows after the folder is rebuilt in place. The packaged ``parquet`` builder
    given the resolved data files keys its cache by path and modification time.
    ``eval.data`` does the same, but importing it loads torch, so the steps are repeated here.
    """
    data_files = builder.config.data_files or {}
    if split not in data_files:
        raise ValueError(
            f"Config {builder.config.name!r} has no {split} split. Its splits are {', '.join(sorted(data_files))}."
        )

    loaded = datasets.load_dataset(
        builder.name, data_files={split: list(data_files[split])}, split=split, features=builder.info.features
    )
    return loaded.select_columns(list(_COLUMNS)).cast_column("image", datasets.Image(decode=False))


def _rows(dataset: datasets.Dataset, description: str) -> Iterator[dict[str, Any]]:
    """Yield the rows with ``triplet`` and ``source`` as names instead of ClassLabel ids."""
    triplets, sources = dataset.features["triplet"], dataset.features["source"]
    for row in tqdm(dataset, desc=description, unit="row", total=dataset.num_rows):
        yield {**row, "triplet": triplets.int2str(row["triplet"]), "source": sources.int2str(row["source"])}


def _png_bytes(row: dict[str, Any]) -> bytes:
    """Return the row's image as PNG bytes. Images stored in another format are re-encoded losslessly."""
    data = (row["image"] or {}).get("bytes")
    if not data:
        raise ValueError(f"Row {row['id']!r} (source {row['source']}) has no image bytes. {RESTORE_HINT}.")
    if data.startswith(_PNG_SIGNATURE):
        return data

    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def _staged(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``, whose content replaces ``target`` on success.

    The caller writes ``target``'s name inside the folder: a file or a folder.
    A failure deletes the temporary folder and leaves ``target`` untouched.
    """
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists. Pass overwrite=True (--overwrite) to replace it.")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{_owner_tag()}~", dir=target.parent))
    try:
        yield staging
        written = staging / target.name
        if written.is_dir():
            _apply_umask(written)
            replace_folder(written, target)
        else:
            os.replace(written, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    remove_stale_staging(target)


def _write_vlmevalkit(builder: datasets.DatasetBuilder, config: str, target: Path, overwrite: bool) -> Path:
    dataset = _load_split(builder, "test")

    with (
        _staged(target, overwrite) as staging,
        (staging / target.name).open("w", encoding="utf-8", newline="") as stream,
    ):
        writer = csv.DictWriter(stream, fieldnames=VLMEVALKIT_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for index, row in enumerate(_rows(dataset, f"VLMEvalKit TSV of {config}")):
            writer.writerow(vlmevalkit_record(row, index, "test"))
    return target


def vlmevalkit_record(row: dict[str, Any], index: int, split: str) -> dict[str, Any]:
    """Return the VLMEvalKit TSV record of one row.

    Args:
        row: A CrossMed row with ``triplet`` and ``source`` as names and
            ``image`` as an undecoded ``{"bytes": ..., "path": ...}`` dict.
        index: The record's ``index``, unique within the TSV.
        split: The CrossMed split the row comes from.

    Returns:
        A dict keyed by :data:`VLMEVALKIT_COLUMNS`. ``image`` is the base64 of
        the PNG bytes, ``question`` the question without options.

    Raises:
        ValueError: when the row has no image bytes.
    """
    record = {
        "index": index,
        "image": base64.b64encode(_png_bytes(row)).decode("ascii"),
        "question": row["question"],
        "answer": row["answer"],
        "category": row["triplet"],
        "l2-category": row["source"],
        "id": row["id"],
        "split": split,
    }
    record.update(zip(LETTERS, row["options"], strict=True))
    return record


def _write_conversations(builder: datasets.DatasetBuilder, config: str, target: Path, overwrite: bool) -> Path:
    dataset = _load_split(builder, "train")

    with _staged(target, overwrite) as staging:
        folder = staging / target.name
        (folder / "images").mkdir(parents=True)
        with (folder / "train.jsonl").open("w", encoding="utf-8") as stream:
            for row in _rows(dataset, f"Conversations of {config}"):
                record = conversation_record(row)
                (folder / record["image"]).write_bytes(_png_bytes(row))
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    return target / "train.jsonl"


def conversation_record(row: dict[str, Any]) -> dict[str, Any]:
    """Return the LLaVA fine-tuning record of one row, without writing the image.

    Args:
        row: A CrossMed row with ``id``, ``question``, ``options`` and ``answer``.

    Returns:
        ``{"id", "image", "conversations"}``. ``image`` is ``images/<id>.png``,
        relative to the JSON Lines file. The human turn is ``"<image>\\n"`` and
        the prompt of :func:`eval.prompts.format_prompt`. The reply is the
        letter, a full stop and the option text, e.g. ``"B. Edema"``.

    Raises:
        ValueError: when the id is unfit for a file name or the answer is not a letter A to D.
    """
    if not _SAFE_ID.fullmatch(row["id"]):
        raise ValueError(
            f"Row id {row['id']!r} cannot name an image file: expected letters, digits, '.', '_' and '-' only."
        )
    if row["answer"] not in LETTERS:
        raise ValueError(f"Row {row['id']!r} has invalid answer {row['answer']!r}: expected one of {', '.join(LETTERS)}.")

    answer_text = row["options"][LETTERS.index(row["answer"])]
    return {
        "id": row["id"],
        "image": f"images/{row['id']}.png",
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{format_prompt(row['question'], row['options'])}"},
            {"from": "gpt", "value": f"{row['answer']}. {answer_text}"},
        ],
    }


def _write_lmms_eval(config: str, target: Path, dataset_path: str, overwrite: bool) -> Path:
    task = target.name
    with _staged(target, overwrite) as staging:
        folder = staging / target.name
        folder.mkdir()
        (folder / f"{task}.yaml").write_text(lmms_eval_task_yaml(task, dataset_path, config), encoding="utf-8")
        (folder / "utils.py").write_text(lmms_eval_utils_source(task), encoding="utf-8")
    return target


def lmms_eval_task_yaml(task: str, dataset_path: str, config: str) -> str:
    """Return the lmms-eval task YAML of one config.

    Args:
        task: The task name, ``crossmed_<config>``.
        dataset_path: A Hub dataset id or a folder, passed to ``load_dataset``.
        config: The config name, passed to ``load_dataset`` as ``name``.

    Returns:
        YAML text. The ``!function`` tags refer to ``utils.py`` in the same folder.
    """
    # json.dumps gives a double-quoted scalar that YAML reads back as the same string.
    return _LMMS_EVAL_YAML.substitute(
        task=json.dumps(task), dataset_path=json.dumps(dataset_path), config=json.dumps(config),
        prompt_version=json.dumps(PROMPT_VERSION),
    )


def lmms_eval_utils_source(task: str) -> str:
    """Return the source of the ``utils.py`` that the lmms-eval task imports.

    The module needs only the Python standard library. It embeds the option
    letters and the instruction of :mod:`eval.prompts`, so its ``doc_to_text``
    returns the text of :func:`eval.prompts.format_prompt`.

    Args:
        task: The task name, used in the module docstring.

    Returns:
        Python source text.
    """
    return _LMMS_EVAL_UTILS.substitute(
        task=task, letters=repr(LETTERS), instruction=repr(INSTRUCTION),
        prompt_version=PROMPT_VERSION, restore_hint=repr(RESTORE_HINT),
    )


_LMMS_EVAL_YAML = string.Template(
    """\
task: $task
dataset_path: $dataset_path
dataset_name: $config
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
generation_kwargs:
  max_new_tokens: 16
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: ""
metadata:
  version: 1.0
  crossmed_prompt_version: $prompt_version
"""
)

_LMMS_EVAL_UTILS = string.Template(
    '''\
"""lmms-eval hooks of the CrossMed task $task, written by CrossMed's format export.

doc_to_text renders the prompt of the CrossMed evaluation package (prompt
version $prompt_version): the question, one "A. text" line per option, then the
instruction to reply with the letter. process_results reads one letter from the
reply with the rules below. A reply that no rule reads counts as wrong.
"""

from __future__ import annotations

import re
import unicodedata

LETTERS = $letters
INSTRUCTION = $instruction
INVALID = "invalid"
RESTORE_HINT = $restore_hint

# The whole reply is one letter, maybe bracketed, bold or followed by a stop: "B", "(b)", "**C**", "D.".
_LETTER_ONLY = re.compile(r"^[\\s(\\[*]*([A-Da-d])[\\s)\\].*]*$$")
# The reply starts with a capital letter and a delimiter: "B. Edema", "C) ...", "(A) ...".
_LEADING_LETTER = re.compile(r"^[\\s(\\[*]*([A-D])\\s*[.):\\],*]")
# An answer phrase anywhere: "Answer: B", "The answer is (C).".
_ANSWER_PHRASE = re.compile(r"(?i:answer)\\s*(?:(?i:is)\\s*)?:?\\s*[(\\[]?([A-D])(?![A-Za-z0-9])")


def doc_to_visual(doc):
    """Return the row's image as a one-element list of RGB PIL images."""
    if doc["image"] is None:
        raise ValueError(f"Row {doc['id']!r} has no image. {RESTORE_HINT}.")
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """Return the prompt: the question, the lettered options, the instruction."""
    options = doc["options"]
    if len(options) != len(LETTERS):
        raise ValueError(f"Row {doc['id']!r} has {len(options)} options, expected {len(LETTERS)}.")

    kwargs = lmms_eval_specific_kwargs or {}
    lines = [doc["question"].strip()]
    lines += [f"{LETTERS[position]}. {text}" for position, text in enumerate(options)]
    lines.append(INSTRUCTION)
    return kwargs.get("pre_prompt", "") + "\\n".join(lines) + kwargs.get("post_prompt", "")


def doc_to_target(doc):
    """Return the correct letter."""
    return doc["answer"]


def extract_letter(reply):
    """Return the letter A to D that a reply names, or INVALID when no rule finds one."""
    text = unicodedata.normalize("NFKC", reply).strip()
    for pattern in (_LETTER_ONLY, _LEADING_LETTER, _ANSWER_PHRASE):
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    return INVALID


def process_results(doc, results):
    """Score the first generation: accuracy 1.0 when its letter is the correct one, else 0.0."""
    prediction = extract_letter(results[0]) if results else INVALID
    return {"accuracy": float(prediction == doc["answer"])}
'''
)
