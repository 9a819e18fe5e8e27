"""Exports of a config to VLMEvalKit TSV, an lmms-eval task folder and LLaVA conversation JSON Lines."""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import py_compile
from pathlib import Path
from types import ModuleType

import datasets
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from builder.formats import (
    FORMATS,
    VLMEVALKIT_COLUMNS,
    conversation_record,
    export_formats,
)
from builder.mat import LETTERS, MRI_BRAIN_CLASSIFICATION
from builder.protocols import get_protocol
from eval.prompts import format_prompt
from tests.builder.pool_fixture import make_export

ROWS_PER_PART = 3
CONFIG = "unrelated"


class TaskLoader(yaml.SafeLoader):
    """A YAML loader that reads lmms-eval's ``!function`` tag as ``("function", "module.name")``."""


TaskLoader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("formats") / "crossmed", ROWS_PER_PART)


@pytest.fixture(scope="module")
def written(export_dir, tmp_path_factory) -> dict[str, Path]:
    return export_formats(export_dir, CONFIG, tmp_path_factory.mktemp("formats-out"))


def load_split(export_dir: Path, split: str) -> datasets.Dataset:
    return datasets.load_dataset(str(export_dir), CONFIG, split=split)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def import_utils(task_folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("crossmed_lmms_utils", task_folder / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream, delimiter="\t"))


def test_export_formats_returns_paths(written):
    assert set(written) == set(FORMATS)
    assert written["vlmevalkit"].name == f"crossmed_{CONFIG}.tsv"
    assert written["vlmevalkit"].is_file()
    assert written["lmms_eval"].is_dir()
    assert written["conversations"].name == "train.jsonl"


def test_vlmevalkit_columns_and_rows(written, export_dir):
    records = read_tsv(written["vlmevalkit"])
    test = load_split(export_dir, "test")
    protocol = get_protocol(CONFIG)

    assert list(records[0]) == list(VLMEVALKIT_COLUMNS)
    assert len(records) == len(protocol.test) * ROWS_PER_PART
    assert [record["id"] for record in records] == test["id"]
    assert sorted(int(record["index"]) for record in records) == list(range(len(records)))
    assert {record["category"] for record in records} == {triplet.name for triplet in protocol.test}
    assert {record["l2-category"] for record in records} == {"siim", "brats"}
    assert {record["split"] for record in records} == {"test"}


def test_vlmevalkit_options_and_answers(written, export_dir):
    records = read_tsv(written["vlmevalkit"])
    test = load_split(export_dir, "test")

    for record, row in zip(records, test, strict=True):
        assert [record[letter] for letter in LETTERS] == row["options"]
        assert record["answer"] == row["answer"]
        assert record["question"] == row["question"]


def test_vlmevalkit_reads_with_pandas(written):
    table = pd.read_csv(written["vlmevalkit"], sep="\t")

    assert table["index"].dtype.kind == "i"
    assert table["index"].is_unique
    assert len(table) == len(read_tsv(written["vlmevalkit"]))


def test_vlmevalkit_image_round_trip(written, export_dir):
    record = read_tsv(written["vlmevalkit"])[1]
    row = load_split(export_dir, "test")[1]

    data = base64.b64decode(record["image"])
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(pixels(Image.open(io.BytesIO(data))), pixels(row["image"]))


def test_conversations_rows_and_turns(written, export_dir):
    lines = written["conversations"].read_text(encoding="utf-8").splitlines()
    train = load_split(export_dir, "train")

    assert len(lines) == len(get_protocol(CONFIG).train) * ROWS_PER_PART
    for line, row in zip(lines, train, strict=True):
        record = json.loads(line)
        human, gpt = record["conversations"]
        assert record["id"] == row["id"]
        assert record["image"] == f"images/{row['id']}.png"
        assert human == {"from": "human", "value": "<image>\n" + format_prompt(row["question"], row["options"])}
        answer_text = row["options"][LETTERS.index(row["answer"])]
        assert gpt == {"from": "gpt", "value": f"{row['answer']}. {answer_text}"}


def test_conversations_image_round_trip(written, export_dir):
    folder = written["conversations"].parent
    records = [json.loads(line) for line in written["conversations"].read_text(encoding="utf-8").splitlines()]
    train = load_split(export_dir, "train")

    assert len(list((folder / "images").glob("*.png"))) == len(records)
    with Image.open(folder / records[2]["image"]) as image:
        assert np.array_equal(pixels(image), pixels(train[2]["image"]))


def test_lmms_eval_yaml_fields(written, export_dir):
    task = f"crossmed_{CONFIG}"
    config = yaml.load((written["lmms_eval"] / f"{task}.yaml").read_text(encoding="utf-8"), Loader=TaskLoader)

    assert config["task"] == task
    assert config["dataset_path"] == str(export_dir.resolve())
    assert config["dataset_name"] == CONFIG
    assert config["test_split"] == "test"
    assert config["output_type"] == "generate_until"
    for hook in ("doc_to_visual", "doc_to_text", "doc_to_target", "process_results"):
        assert config[hook] == ("function", f"utils.{hook}")
    assert config["metric_list"] == [{"metric": "accuracy", "aggregation": "mean", "higher_is_better": True}]


def test_lmms_eval_dataset_path_parameter(export_dir, tmp_path):
    written = export_formats(export_dir, CONFIG, tmp_path, ["lmms_eval"], dataset_path="org/crossmed")
    config = yaml.load((written["lmms_eval"] / f"crossmed_{CONFIG}.yaml").read_text(encoding="utf-8"), Loader=TaskLoader)

    assert set(written) == {"lmms_eval"}
    assert config["dataset_path"] == "org/crossmed"


def test_lmms_eval_utils_compiles(written, tmp_path):
    py_compile.compile(str(written["lmms_eval"] / "utils.py"), cfile=str(tmp_path / "utils.pyc"), doraise=True)


def test_lmms_eval_utils_on_row(written, export_dir):
    utils = import_utils(written["lmms_eval"])
    row = load_split(export_dir, "test")[0]

    visuals = utils.doc_to_visual(row)
    assert len(visuals) == 1
    assert visuals[0].mode == "RGB"
    assert np.array_equal(pixels(visuals[0])[..., 0], pixels(row["image"]))
    assert utils.doc_to_text(row) == format_prompt(row["question"], row["options"])
    assert utils.doc_to_text(row, {"pre_prompt": "", "post_prompt": ""}) == format_prompt(row["question"], row["options"])
    assert utils.doc_to_target(row) == row["answer"]


def test_lmms_eval_process_results(written, export_dir):
    utils = import_utils(written["lmms_eval"])
    row = load_split(export_dir, "test")[0]
    wrong = next(letter for letter in LETTERS if letter != row["answer"])

    assert utils.process_results(row, [row["answer"]]) == {"accuracy": 1.0}
    assert utils.process_results(row, [f"Answer: {row['answer']}"]) == {"accuracy": 1.0}
    assert utils.process_results(row, [wrong]) == {"accuracy": 0.0}
    assert utils.process_results(row, ["I cannot tell."]) == {"accuracy": 0.0}
    assert utils.process_results(row, []) == {"accuracy": 0.0}


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("B", "B"),
        (" (b) ", "B"),
        ("**C**", "C"),
        ("D.", "D"),
        ("Ｂ", "B"),
        ("B. Edema", "B"),
        ("(A) [100, 100, 300, 300]", "A"),
        ("Answer: C", "C"),
        ("The answer is (D).", "D"),
        ("A pneumothorax is visible", "invalid"),
        ("the answer is a mass", "invalid"),
        ("", "invalid"),
    ],
)
def test_lmms_eval_extract_letter(written, reply, letter):
    assert import_utils(written["lmms_eval"]).extract_letter(reply) == letter


def test_export_formats_unknown_format(export_dir, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown export format 'tsv': expected any of vlmevalkit, lmms_eval, conversations"):
        export_formats(export_dir, CONFIG, tmp_path, ["vlmevalkit", "tsv"])


def test_export_formats_empty_formats(export_dir, tmp_path):
    with pytest.raises(ValueError, match="No export format given"):
        export_formats(export_dir, CONFIG, tmp_path, [])


def test_export_formats_missing_folder(tmp_path):
    missing = tmp_path / "no-export"
    with pytest.raises(FileNotFoundError, match=f"Export folder {missing} not found"):
        export_formats(missing, CONFIG, tmp_path / "out")


def test_export_formats_unknown_config(export_dir, tmp_path):
    with pytest.raises(ValueError, match=r"has no config 'nope'\. Its configs are all, related, unrelated"):
        export_formats(export_dir, "nope", tmp_path)


def test_export_formats_missing_split(tmp_path):
    export = make_export(tmp_path / "crossmed", rows_per_part=0, extra_rows={MRI_BRAIN_CLASSIFICATION: 2})
    config = "unrelated-mri-brain-classification"

    with pytest.raises(ValueError, match=rf"Config '{config}' has no train split, which the conversations format"):
        export_formats(export, config, tmp_path / "out", ["vlmevalkit", "conversations"])
    assert not (tmp_path / "out").exists()


def test_export_formats_existing_output(export_dir, tmp_path):
    first = export_formats(export_dir, CONFIG, tmp_path, ["lmms_eval"])

    with pytest.raises(FileExistsError, match=f"Outputs already exist: {first['lmms_eval']}\\."):
        export_formats(export_dir, CONFIG, tmp_path, ["vlmevalkit", "lmms_eval"])
    assert not (tmp_path / "vlmevalkit").exists()


def test_export_formats_overwrite(export_dir, tmp_path):
    export_formats(export_dir, CONFIG, tmp_path, ["vlmevalkit", "lmms_eval"])
    written = export_formats(
        export_dir, CONFIG, tmp_path, ["vlmevalkit", "lmms_eval"], dataset_path="org/crossmed", overwrite=True
    )

    assert '"org/crossmed"' in (written["lmms_eval"] / f"crossmed_{CONFIG}.yaml").read_text(encoding="utf-8")
    assert len(read_tsv(written["vlmevalkit"])) == len(get_protocol(CONFIG).test) * ROWS_PER_PART
    assert [path.name for path in (tmp_path / "vlmevalkit").iterdir()] == [f"crossmed_{CONFIG}.tsv"]
    assert [path.name for path in (tmp_path / "lmms_eval").iterdir()] == [f"crossmed_{CONFIG}"]


@pytest.mark.parametrize(("format_name", "source"), [("vlmevalkit", "siim"), ("conversations", "brats")])
def test_export_formats_rows_without_pixels(tmp_path, format_name, source):
    export = make_export(tmp_path / "crossmed", rows_per_part=1, ship_pixels={source: False})
    out = tmp_path / "out"

    with pytest.raises(ValueError, match=rf"Row '{source}-.*' \(source {source}\) has no image bytes\. .*publish restore"):
        export_formats(export, CONFIG, out, [format_name])
    assert list((out / format_name).iterdir()) == []


def test_conversation_record_unsafe_id():
    row = {"id": "../escape", "question": "Which?", "options": ["a", "b", "c", "d"], "answer": "A"}

    with pytest.raises(ValueError, match=r"Row id '\.\./escape' cannot name an image file"):
        conversation_record(row)


def test_conversation_record_invalid_answer():
    row = {"id": "chexpert-1", "question": "Which?", "options": ["a", "b", "c", "d"], "answer": "E"}

    with pytest.raises(ValueError, match=r"Row 'chexpert-1' has invalid answer 'E': expected one of A, B, C, D"):
        conversation_record(row)
