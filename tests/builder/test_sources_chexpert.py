"""Tests for the CheXpert reader on the real sample files and on trees written in tmp_path."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builder.mat import XRAY_LUNG_CLASSIFICATION
from builder.policy import BadInputError, BadInputLog
from builder.sources import reader_class
from builder.sources.chexpert import (
    PARENT_FINDINGS,
    OBSERVATIONS,
    CheXpertReader,
    LabelState,
    choose_answer,
    parse_label,
    resolve_label,
)

RELEASE = "CheXpert-v1.0-small"
HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]


def write_jpeg(path: Path, size: tuple[int, int] = (12, 10)) -> None:
    """Write a small grayscale JPEG of ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gradient = np.linspace(0, 255, size[0] * size[1]).reshape(size[1], size[0]).astype(np.uint8)
    Image.fromarray(gradient, mode="L").save(path, format="JPEG")


def write_release(root: Path, table: str, csv_text: str, with_images: bool = True) -> Path:
    """Write ``<root>/CheXpert-v1.0-small/<table>`` and a JPEG for every ``Path`` in it."""
    release = root / RELEASE
    release.mkdir(parents=True, exist_ok=True)
    (release / table).write_text(csv_text, encoding="utf-8")
    if with_images:
        for row in csv.DictReader(io.StringIO(csv_text)):
            write_jpeg(root / row["Path"])
    return release


def make_row(path: str, labels: dict[str, str], view: str = "Frontal", sex: str = "Female", age: str = "50") -> str:
    """Return one CSV line with blank cells for the observations not in ``labels``."""
    cells = [path, sex, age, view, "AP" if view == "Frontal" else ""]
    cells += [labels.get(column, "") for column in OBSERVATIONS]
    return ",".join(cells)


def make_csv(*rows: str) -> str:
    return "\n".join([",".join(HEADER), *rows]) + "\n"


@pytest.fixture
def real_train(tmp_path: Path, samples_dir: Path) -> tuple[Path, list[dict[str, str]]]:
    """The real 30-row train.csv in a release folder in tmp_path, with a small JPEG per row."""
    source = samples_dir / "chexpert" / "csv_rows_without_images" / "train.csv"
    release = tmp_path / RELEASE
    release.mkdir()
    shutil.copyfile(source, release / "train.csv")
    with source.open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        write_jpeg(tmp_path / row["Path"])
    return tmp_path, rows


def rows_by_case_id(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """Key CSV rows by the case id the reader derives from ``Path``."""
    keyed = {}
    for row in rows:
        _, _, patient, study, file_name = row["Path"].split("/")
        keyed[f"{patient}-{study}-{Path(file_name).stem}"] = row
    return keyed


# Label parsing.


@pytest.mark.parametrize(
    ("cell", "state"),
    [
        ("1.0", LabelState.POSITIVE),
        ("1", LabelState.POSITIVE),
        ("0.0", LabelState.NEGATIVE),
        ("0", LabelState.NEGATIVE),
        ("-1.0", LabelState.UNCERTAIN),
        ("-1", LabelState.UNCERTAIN),
        ("", LabelState.BLANK),
        ("  ", LabelState.BLANK),
        (" 1.0 ", LabelState.POSITIVE),
    ],
)
def test_parse_label_states(cell: str, state: LabelState) -> None:
    assert parse_label(cell) is state


@pytest.mark.parametrize("cell", ["nan", "NaN", "2.0", "-2", "0.5", "inf", "yes", "True"])
def test_parse_label_invalid(cell: str) -> None:
    with pytest.raises(ValueError, match=rf"Invalid label {cell!r}: expected 1\.0, 0\.0, -1\.0 or blank"):
        parse_label(cell)


@pytest.mark.parametrize(
    ("uncertain", "blank", "expected"),
    [
        ("ignore", "negative", (True, False, None, False)),
        ("ignore", "ignore", (True, False, None, None)),
        ("positive", "negative", (True, False, True, False)),
        ("positive", "ignore", (True, False, True, None)),
        ("negative", "negative", (True, False, False, False)),
        ("negative", "ignore", (True, False, False, None)),
    ],
)
def test_resolve_label_policies(uncertain: str, blank: str, expected: tuple[bool | None, ...]) -> None:
    states = (LabelState.POSITIVE, LabelState.NEGATIVE, LabelState.UNCERTAIN, LabelState.BLANK)

    resolved = tuple(resolve_label(state, uncertain, blank) for state in states)

    assert resolved == expected


def test_resolve_label_invalid_policy() -> None:
    with pytest.raises(ValueError, match=r"Invalid uncertain 'unsure'"):
        resolve_label(LabelState.UNCERTAIN, uncertain="unsure")


def test_choose_answer_stable() -> None:
    positives = ["Pleural Effusion", "Cardiomegaly", "Edema"]

    first = choose_answer("patient00001-study1-view1_frontal", positives)

    assert first in positives
    assert choose_answer("patient00001-study1-view1_frontal", list(reversed(positives))) == first
    answers = {choose_answer(f"patient{number:05d}-study1-view1_frontal", positives) for number in range(40)}
    assert answers == set(positives)


def test_choose_answer_empty() -> None:
    with pytest.raises(ValueError, match=r"No positive finding to choose from for case 'patient00001-study1-view1'"):
        choose_answer("patient00001-study1-view1", [])


# The real sample files.


@pytest.mark.parametrize("release_as_root", [False, True])
def test_chexpert_real_sample(samples_dir: Path, release_as_root: bool) -> None:
    root = samples_dir / "chexpert"
    if release_as_root:
        root = root / RELEASE
    with (samples_dir / "chexpert" / RELEASE / "valid.csv").open(encoding="utf-8") as stream:
        row = next(csv.DictReader(stream))

    cases = CheXpertReader(root).list_cases()

    assert len(cases) == 1
    case = cases[0]
    assert case.case_id == "patient64541-study1-view1_frontal"
    assert case.subject_id == "patient64541"
    expected_file = "valid/patient64541/study1/view1_frontal.jpg"
    assert case.files == ((expected_file,) if release_as_root else (f"{RELEASE}/{expected_file}",))
    (item,) = case.items
    assert item.triplet == XRAY_LUNG_CLASSIFICATION
    assert item.view == "image"
    assert row[item.answer] == "1.0"
    assert item.distractors
    for distractor in item.distractors:
        assert row[distractor] == "0.0", distractor
    assert item.distractors == {column for column in OBSERVATIONS if row[column] == "0.0"}


def test_chexpert_real_sample_load(samples_dir: Path) -> None:
    reader = CheXpertReader(samples_dir / "chexpert")
    case = reader.list_cases()[0]

    samples = reader.load(case)

    sample = samples["image"]
    assert sample.image.dtype == np.uint8
    assert sample.image.shape == (320, 390)
    assert sample.mask is None
    assert sample.slice_index == -1
    assert sample.source_file == case.files[0]


def test_chexpert_registry_lookup() -> None:
    assert reader_class("chexpert") is CheXpertReader


# The real train.csv rows, with JPEGs written in tmp_path.


def test_chexpert_real_rows_default_policy(real_train: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = real_train
    frontal_with_positive = [
        row for row in rows if row["Frontal/Lateral"] == "Frontal" and any(row[c] == "1.0" for c in OBSERVATIONS)
    ]

    cases = CheXpertReader(root).list_cases()

    assert len(cases) == len(frontal_with_positive)
    assert [case.case_id for case in cases] == sorted(case.case_id for case in cases)
    by_id = rows_by_case_id(rows)
    for case in cases:
        row = by_id[case.case_id]
        (item,) = case.items
        assert row["Frontal/Lateral"] == "Frontal"
        assert row[item.answer] == "1.0", case.case_id
        positives = {c for c in OBSERVATIONS if row[c] == "1.0"}
        implied = {parent for finding in positives for parent in PARENT_FINDINGS.get(finding, ())}
        assert item.distractors == {c for c in OBSERVATIONS if row[c] in ("0.0", "") and c not in implied}, case.case_id
        assert case.subject_id == case.case_id.split("-")[0]


def test_chexpert_parent_of_positive_not_distractor(real_train: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = real_train
    row = rows_by_case_id(rows)["patient00003-study1-view1_frontal"]
    assert row["Edema"] == "1.0" and row["Lung Opacity"] == ""

    (case,) = [case for case in CheXpertReader(root).list_cases() if case.case_id == "patient00003-study1-view1_frontal"]

    assert "Lung Opacity" not in case.items[0].distractors
    assert "Fracture" in case.items[0].distractors or row["Fracture"] != ""


def test_chexpert_real_rows_uncertain_positive(real_train: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = real_train
    by_id = rows_by_case_id(rows)

    cases = CheXpertReader(root, uncertain="positive").list_cases()

    answers = set()
    for case in cases:
        row = by_id[case.case_id]
        (item,) = case.items
        assert row[item.answer] in ("1.0", "-1.0"), case.case_id
        assert all(row[c] in ("0.0", "") for c in item.distractors), case.case_id
        answers.add(row[item.answer])
    assert answers == {"1.0", "-1.0"}


def test_chexpert_uncertain_only_row(tmp_path: Path) -> None:
    path = f"{RELEASE}/train/patient00009/study1/view1_frontal.jpg"
    write_release(tmp_path, "train.csv", make_csv(make_row(path, {"Edema": "-1.0", "Fracture": "0.0"})))

    cases = CheXpertReader(tmp_path, uncertain="positive").list_cases()

    assert cases[0].items[0].answer == "Edema"
    assert "Edema" not in cases[0].items[0].distractors
    assert CheXpertReader(tmp_path).list_cases() == []


def test_chexpert_real_rows_uncertain_negative(real_train: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = real_train
    by_id = rows_by_case_id(rows)

    cases = CheXpertReader(root, uncertain="negative", blank="ignore").list_cases()

    uncertain_distractors = 0
    for case in cases:
        row = by_id[case.case_id]
        (item,) = case.items
        assert row[item.answer] == "1.0"
        assert item.distractors == {c for c in OBSERVATIONS if row[c] in ("0.0", "-1.0")}, case.case_id
        uncertain_distractors += sum(row[c] == "-1.0" for c in item.distractors)
    assert uncertain_distractors > 0


def test_chexpert_real_rows_blank_ignore(real_train: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = real_train
    by_id = rows_by_case_id(rows)

    cases = CheXpertReader(root, blank="ignore").list_cases()

    for case in cases:
        row = by_id[case.case_id]
        assert case.items[0].distractors == {c for c in OBSERVATIONS if row[c] == "0.0"}, case.case_id


def test_chexpert_real_rows_all_views(real_train: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = real_train
    with_positive = [row for row in rows if any(row[c] == "1.0" for c in OBSERVATIONS)]

    cases = CheXpertReader(root, views="all").list_cases()

    assert len(cases) == len(with_positive)
    assert any(case.metadata["frontal_lateral"] == "Lateral" for case in cases)
    assert "patient00002-study1-view2_lateral" in {case.case_id for case in cases}


def test_chexpert_list_cases_repeatable(real_train: tuple[Path, list[dict[str, str]]]) -> None:
    root, _ = real_train

    assert CheXpertReader(root).list_cases() == CheXpertReader(root).list_cases()


# Trees written in tmp_path.


def test_chexpert_reads_train_and_valid(tmp_path: Path) -> None:
    train_row = make_row(f"{RELEASE}/train/patient00001/study1/view1_frontal.jpg", {"Edema": "1.0"})
    valid_row = make_row(f"{RELEASE}/valid/patient64541/study1/view1_frontal.jpg", {"Cardiomegaly": "1.0"})
    write_release(tmp_path, "train.csv", make_csv(train_row))
    write_release(tmp_path, "valid.csv", make_csv(valid_row))

    cases = CheXpertReader(tmp_path).list_cases()

    assert [case.subject_id for case in cases] == ["patient00001", "patient64541"]
    assert [case.metadata["table"] for case in cases] == ["train.csv", "valid.csv"]


def test_chexpert_full_release_folder(tmp_path: Path) -> None:
    release = tmp_path / "CheXpert-v1.0"
    release.mkdir()
    (release / "valid.csv").write_text(
        make_csv(make_row("CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg", {"Edema": "1.0"}))
    )
    write_jpeg(release / "valid/patient64541/study1/view1_frontal.jpg")

    cases = CheXpertReader(tmp_path).list_cases()

    assert cases[0].files == ("CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg",)
    assert CheXpertReader(tmp_path).load(cases[0])["image"].image.shape == (10, 12)


def test_chexpert_linked_image_folder(tmp_path: Path) -> None:
    # The train images stay on another disk and are linked into the release folder.
    root = tmp_path / "sources"
    row = make_row(f"{RELEASE}/train/patient00001/study1/view1_frontal.jpg", {"Edema": "1.0"})
    write_release(root, "train.csv", make_csv(row), with_images=False)
    write_jpeg(tmp_path / "other-disk/train/patient00001/study1/view1_frontal.jpg")
    (root / RELEASE / "train").symlink_to(tmp_path / "other-disk/train", target_is_directory=True)

    reader = CheXpertReader(root)
    cases = reader.list_cases()

    assert [case.files for case in cases] == [(f"{RELEASE}/train/patient00001/study1/view1_frontal.jpg",)]
    assert reader.load(cases[0])["image"].image.shape == (10, 12)


def test_chexpert_unknown_age_and_sex_kept(tmp_path: Path) -> None:
    path = f"{RELEASE}/train/patient00009/study1/view1_frontal.jpg"
    write_release(tmp_path, "train.csv", make_csv(make_row(path, {"Fracture": "1.0"}, sex="Unknown", age="0")))

    cases = CheXpertReader(tmp_path).list_cases()

    assert len(cases) == 1
    assert cases[0].metadata["sex"] == "Unknown"
    assert cases[0].metadata["age"] == "0"


def test_chexpert_no_positive_no_case(tmp_path: Path) -> None:
    path = f"{RELEASE}/train/patient00009/study1/view1_frontal.jpg"
    write_release(tmp_path, "train.csv", make_csv(make_row(path, {"Fracture": "0.0"})))

    assert CheXpertReader(tmp_path).list_cases() == []


def test_chexpert_invalid_label_raises(tmp_path: Path) -> None:
    path = f"{RELEASE}/train/patient00009/study1/view1_frontal.jpg"
    write_release(tmp_path, "train.csv", make_csv(make_row(path, {"Edema": "1.0", "Pneumonia": "nan"})))

    with pytest.raises(BadInputError, match=r"train\.csv: row 1 \(Path .*\), column 'Pneumonia': Invalid label 'nan'"):
        CheXpertReader(tmp_path).list_cases()


def test_chexpert_invalid_label_warn_skips_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = make_row(f"{RELEASE}/train/patient00001/study1/view1_frontal.jpg", {"Edema": "1.0"})
    bad = make_row(f"{RELEASE}/train/patient00002/study1/view1_frontal.jpg", {"Edema": "yes"})
    write_release(tmp_path, "train.csv", make_csv(good, bad))
    log = BadInputLog("warn")

    with caplog.at_level(logging.WARNING):
        cases = CheXpertReader(tmp_path, bad_inputs=log).list_cases()

    assert [case.subject_id for case in cases] == ["patient00001"]
    assert len(log.skipped) == 1
    assert "row 2" in log.skipped[0].reason
    assert "'yes'" in log.skipped[0].reason
    assert "train.csv" in caplog.text


@pytest.mark.parametrize(
    "value",
    ["../../outside/patient00001/study1/view1_frontal.jpg", f"{RELEASE}/../../outside/patient00001/study1/x.jpg"],
)
def test_chexpert_path_traversal_rejected(tmp_path: Path, value: str) -> None:
    root = tmp_path / "sources"
    write_release(root, "train.csv", make_csv(make_row(value, {"Edema": "1.0"})), with_images=False)
    write_jpeg(tmp_path / "outside/patient00001/study1/view1_frontal.jpg")

    with pytest.raises(BadInputError, match=r"leaves the data folder"):
        CheXpertReader(root).list_cases()


def test_chexpert_absolute_path_rejected(tmp_path: Path) -> None:
    image = tmp_path / "elsewhere/patient00001/study1/view1_frontal.jpg"
    write_jpeg(image)
    root = tmp_path / "sources"
    write_release(root, "train.csv", make_csv(make_row(str(image), {"Edema": "1.0"})), with_images=False)

    with pytest.raises(BadInputError, match=r"is absolute"):
        CheXpertReader(root).list_cases()


def test_chexpert_missing_image(tmp_path: Path) -> None:
    path = f"{RELEASE}/train/patient00001/study1/view1_frontal.jpg"
    write_release(tmp_path, "train.csv", make_csv(make_row(path, {"Edema": "1.0"})), with_images=False)

    with pytest.raises(BadInputError, match=r"row 1 .*image not found at .*view1_frontal\.jpg"):
        CheXpertReader(tmp_path).list_cases()


def test_chexpert_repeated_row(tmp_path: Path) -> None:
    row = make_row(f"{RELEASE}/train/patient00001/study1/view1_frontal.jpg", {"Edema": "1.0"})
    write_release(tmp_path, "train.csv", make_csv(row, row))

    message = r"row 2: Path .* repeats case id patient00001-study1-view1_frontal of an earlier row"
    with pytest.raises(BadInputError, match=message):
        CheXpertReader(tmp_path).list_cases()


def test_chexpert_unknown_view_value(tmp_path: Path) -> None:
    path = f"{RELEASE}/train/patient00001/study1/view1_frontal.jpg"
    write_release(tmp_path, "train.csv", make_csv(make_row(path, {"Edema": "1.0"}, view="Oblique")))

    with pytest.raises(BadInputError, match=r"Frontal/Lateral is 'Oblique'; expected Frontal or Lateral"):
        CheXpertReader(tmp_path).list_cases()


def test_chexpert_path_without_patient(tmp_path: Path) -> None:
    row = make_row(f"{RELEASE}/train/images/view1_frontal.jpg", {"Edema": "1.0"})
    write_release(tmp_path, "train.csv", make_csv(row))

    with pytest.raises(BadInputError, match=r"expected a path of the form <split>/patientNNNNN/studyN"):
        CheXpertReader(tmp_path).list_cases()


def test_chexpert_missing_column(tmp_path: Path) -> None:
    release = tmp_path / RELEASE
    release.mkdir()
    (release / "train.csv").write_text("Path,Sex,Age,Frontal/Lateral\n")

    with pytest.raises(BadInputError, match=r"train\.csv: missing column\(s\) No Finding"):
        CheXpertReader(tmp_path).list_cases()


def test_chexpert_corrupt_image(tmp_path: Path) -> None:
    path = f"{RELEASE}/train/patient00001/study1/view1_frontal.jpg"
    write_release(tmp_path, "train.csv", make_csv(make_row(path, {"Edema": "1.0"})))
    reader = CheXpertReader(tmp_path)
    case = reader.list_cases()[0]
    (tmp_path / path).write_bytes(b"not a jpeg")

    with pytest.raises(BadInputError, match=r"view1_frontal\.jpg: failed to read the image"):
        reader.load(case)


def test_chexpert_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"chexpert source folder not found: .*absent"):
        CheXpertReader(tmp_path / "absent")


def test_chexpert_root_without_tables(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No train\.csv or valid\.csv found in .*CheXpert-v1\.0-small"):
        CheXpertReader(tmp_path)


def test_chexpert_two_releases(tmp_path: Path) -> None:
    for name in ("CheXpert-v1.0-small", "CheXpert-v1.0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "valid.csv").write_text(make_csv())

    with pytest.raises(ValueError, match=r"Both CheXpert-v1\.0-small and CheXpert-v1\.0 are in"):
        CheXpertReader(tmp_path)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("uncertain", "maybe", r"Invalid uncertain 'maybe': expected one of 'ignore', 'positive', 'negative'"),
        ("blank", "positive", r"Invalid blank 'positive': expected one of 'negative', 'ignore'"),
        ("views", "Frontal", r"Invalid views 'Frontal'.*Did you mean 'frontal'\?"),
        ("view", "all", r"Unknown CheXpert option\(s\) \['view'\]"),
    ],
)
def test_chexpert_invalid_options(tmp_path: Path, option: str, value: str, message: str) -> None:
    write_release(tmp_path, "valid.csv", make_csv())

    with pytest.raises(ValueError, match=message):
        CheXpertReader(tmp_path, **{option: value})


def test_chexpert_answer_prefers_specific_finding(tmp_path: Path) -> None:
    labels = {"Lung Opacity": "1.0", "Edema": "1.0", "Enlarged Cardiomediastinum": "1.0", "Cardiomegaly": "1.0"}
    root = write_release(
        tmp_path, "valid.csv", make_csv(make_row("CheXpert-v1.0-small/valid/patient00001/study1/view1_frontal.jpg", labels))
    )

    (case,) = CheXpertReader(root).list_cases()

    assert case.items[0].answer in {"Edema", "Cardiomegaly"}
