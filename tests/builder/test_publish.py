"""Tests of builder.publish: versions, changelog, plans, and real pushes to a loopback Hub.

The push tests run ``python -m builder.publish`` in a subprocess with
``HF_ENDPOINT`` pointing at ``tests.builder.hub_server`` on 127.0.0.1, because
``huggingface_hub`` reads the endpoint and the offline switch when it is
imported, and the test session sets ``HF_HUB_OFFLINE=1``. The subprocesses
contact no host other than that loopback server.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, HfApi

from builder.mat import CT_LUNG_CLASSIFICATION
from builder.publish import (
    GATED_PROMPT,
    PublishError,
    PublishRequest,
    RemoteFile,
    RemoteState,
    changelog_entries,
    git_blob_oid,
    main,
    parse_version,
    plan_changes,
    publish,
    update_card,
)
from builder.restore import BuildSettings
from tests.builder.hub_server import HubServer
from tests.builder.pool_fixture import make_export

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "crossmed-test/crossmed"
FAKE_TOKEN = "hf_fakeTokenForCrossMedPublishTests0123456789"

# Reads both revisions back from the loopback Hub. An explicit revision also
# keeps datasets from asking the dataset viewer (another host) for parquet exports.
LOADER = """
import json, sys
import datasets
datasets.disable_progress_bars()
result = {}
for revision in ("v1.0.0", "v1.1.0"):
    loaded = datasets.load_dataset(sys.argv[1], "all", revision=revision)
    result[revision] = {split: sorted(zip(part["id"], part["question"])) for split, part in loaded.items()}
streamed = datasets.load_dataset(sys.argv[1], "unrelated", revision="v1.1.0", streaming=True)
result["unrelated-streaming"] = {split: sorted(row["id"] for row in part) for split, part in streamed.items()}
print("RESULT " + json.dumps(result))
"""


@pytest.mark.parametrize(("text", "tag"), [("1.2.3", "v1.2.3"), ("v0.1.0", "v0.1.0"), (" 10.0.12 ", "v10.0.12")])
def test_parse_version_valid(text: str, tag: str) -> None:
    assert parse_version(text) == tag


@pytest.mark.parametrize("text", ["1.2", "01.2.3", "v1.2.3-rc1", "latest", "1.2.3.4"])
def test_parse_version_invalid(text: str) -> None:
    with pytest.raises(ValueError, match=r"Invalid --version .*expected MAJOR\.MINOR\.PATCH"):
        parse_version(text)


def test_update_card_changelog(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nlicense: other\n---\n\n# Card\n\n## Citation\n\ntext\n", encoding="utf-8")

    update_card(tmp_path, "v1.0.0", "First release", "2026-01-05", [], gated=False)
    first = (tmp_path / "README.md").read_text(encoding="utf-8")
    update_card(tmp_path, "v1.1.0", "Add  MosMed\nmasks", "2026-02-01", changelog_entries(first), gated=True)
    second = (tmp_path / "README.md").read_text(encoding="utf-8")

    assert changelog_entries(second) == [
        "- **v1.1.0** (2026-02-01): Add MosMed masks",
        "- **v1.0.0** (2026-01-05): First release",
    ]
    assert second.count("## Changelog") == 1
    assert second.index("## Citation") < second.index("## Changelog")
    assert DatasetCard.load(tmp_path / "README.md").data["extra_gated_prompt"] == GATED_PROMPT


def test_update_card_replaces_same_version(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nlicense: other\n---\n\n# Card\n", encoding="utf-8")
    previous = ["- **v1.0.0** (2026-01-05): old text", "- **v0.9.0** (2025-12-01): beta"]

    update_card(tmp_path, "v1.0.0", "new text", "2026-01-06", previous, gated=False)

    assert changelog_entries((tmp_path / "README.md").read_text(encoding="utf-8")) == [
        "- **v1.0.0** (2026-01-06): new text",
        "- **v0.9.0** (2025-12-01): beta",
    ]


def test_plan_changes_statuses(tmp_path: Path) -> None:
    files = {
        "README.md": b"card",
        "data/a.parquet": b"same",
        "data/b.parquet": b"new content",
        "data/c.parquet": b"added",
    }
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    state = RemoteState(
        REPO_ID,
        exists=True,
        head="a" * 40,
        files={
            ".gitattributes": RemoteFile(10, "0" * 40),
            "README.md": RemoteFile(3, git_blob_oid(b"old")),
            "data/a.parquet": RemoteFile(4, "1" * 40, hashlib.sha256(b"same").hexdigest()),
            "data/b.parquet": RemoteFile(3, git_blob_oid(b"old")),
            "data/gone.parquet": RemoteFile(7, "2" * 40),
        },
    )

    plan = plan_changes(tmp_path, state, "v1.1.0")

    assert [change.path for change in plan.with_status("added")] == ["data/c.parquet"]
    assert [change.path for change in plan.with_status("changed")] == ["README.md", "data/b.parquet"]
    assert [change.path for change in plan.with_status("deleted")] == ["data/gone.parquet"]
    assert [change.path for change in plan.with_status("unchanged")] == ["data/a.parquet"]
    assert "  changed  data/b.parquet  11 B (was 3 B)" in plan.describe()
    assert "1 added, 2 changed, 1 deleted, 1 unchanged (4 B)" in plan.describe()


def test_request_rejects_no_pixels_for_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--no-pixels applies to builds from --data-dir"):
        PublishRequest(
            out_dir=tmp_path / "out",
            version="1.0.0",
            message="m",
            folder=tmp_path / "export",
            settings=BuildSettings(ship_pixels={"brats": False}),
        )


def test_request_push_needs_repo_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--push needs --repo-id"):
        PublishRequest(out_dir=tmp_path / "out", version="1.0.0", message="m", folder=tmp_path / "export", push=True)


def test_push_without_token(tmp_path: Path) -> None:
    request = PublishRequest(
        out_dir=tmp_path / "out", version="1.0.0", message="m", folder=tmp_path / "export", repo_id=REPO_ID, push=True
    )

    with pytest.raises(PublishError, match=r"No Hugging Face token found: set HF_TOKEN"):
        publish(request, api=HfApi(token=False))
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Version 1 and version 1.1 of a small export; 1.1 changes the CT/Lung/Classification rows only."""
    root = tmp_path_factory.mktemp("exports")
    return {
        "v1.0.0": make_export(root / "v1"),
        "v1.1.0": make_export(root / "v1.1", extra_rows={CT_LUNG_CLASSIFICATION: 1}, question_suffix=" (revised)"),
    }


def test_dry_run_writes_repo_folder(exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "repo"
    status = main(
        [
            "--folder",
            str(exports["v1.0.0"]),
            "--out",
            str(out),
            "--version",
            "1.0.0",
            "--message",
            "First release",
            "--date",
            "2026-01-05",
            "--skip-load-check",
        ]
    )

    printed = capsys.readouterr().out
    assert status == 0
    assert "Plan for a new repo (no --repo-id given), version v1.0.0, compared with nothing (new repo):" in printed
    assert "18 added, 0 changed, 0 deleted, 0 unchanged" in printed
    assert "Dry run: nothing was uploaded." in printed
    assert changelog_entries((out / "README.md").read_text(encoding="utf-8")) == [
        "- **v1.0.0** (2026-01-05): First release"
    ]
    assert (out / "data/ct-lung-classification/test-00000-of-00001.parquet").read_bytes() == (
        exports["v1.0.0"] / "data/ct-lung-classification/test-00000-of-00001.parquet"
    ).read_bytes()


def test_dry_run_validation_failure(exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(
        [
            "--folder",
            str(exports["v1.0.0"]),
            "--out",
            str(tmp_path / "repo"),
            "--version",
            "1.0.0",
            "--message",
            "m",
            "--row-group-budget-mb",
            "0.001",
            "--skip-load-check",
        ]
    )

    error = capsys.readouterr().err
    assert status == 1
    assert "failed validation" in error
    assert "data/mri-brain-classification/test-00000-of-00001.parquet: row group 0 is " in error


@dataclass
class PushRun:
    """One ``python -m builder.publish`` subprocess and what it printed."""

    status: int
    stdout: str
    stderr: str


def hub_env(hub: HubServer, home: Path) -> dict[str, str]:
    """Environment of a subprocess that talks to the loopback Hub with the fake token."""
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=hub.url,
        HF_TOKEN=FAKE_TOKEN,
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(home),
        PYTHONPATH=str(REPO_ROOT),
        # A request to any other host would go to this closed loopback port and fail, so none can leave the machine.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        ALL_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1",
    )
    env.pop("HF_DATASETS_OFFLINE", None)
    return env


def run_publish(hub: HubServer, home: Path, *arguments: str) -> PushRun:
    command = [sys.executable, "-m", "builder.publish", *arguments, "--log-level", "DEBUG"]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=hub_env(hub, home), capture_output=True, text=True, timeout=300, check=False
    )
    return PushRun(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def published(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Push v1.0.0, then v1.1.0 (gated), then try v1.0.0 again and a folder that fails validation."""
    root = tmp_path_factory.mktemp("published")
    with HubServer(FAKE_TOKEN) as hub:
        runs = {}
        for version, extra in (("v1.0.0", []), ("v1.1.0", ["--gated"])):
            runs[version] = run_publish(
                hub,
                root / "home",
                "--folder",
                str(exports[version]),
                "--out",
                str(root / version),
                "--repo-id",
                REPO_ID,
                "--version",
                version,
                "--message",
                f"Release {version}",
                "--date",
                "2026-03-01",
                "--push",
                "--skip-load-check",
                *extra,
            )
        runs["reuse"] = run_publish(
            hub,
            root / "home",
            "--folder",
            str(exports["v1.1.0"]),
            "--out",
            str(root / "reuse"),
            "--repo-id",
            REPO_ID,
            "--version",
            "1.0.0",
            "--message",
            "again",
            "--push",
            "--skip-load-check",
        )
        runs["invalid"] = run_publish(
            hub,
            root / "home",
            "--folder",
            str(exports["v1.1.0"]),
            "--out",
            str(root / "invalid"),
            "--repo-id",
            REPO_ID,
            "--version",
            "1.2.0",
            "--message",
            "too big",
            "--push",
            "--skip-load-check",
            "--row-group-budget-mb",
            "0.001",
        )
        loaded = subprocess.run(
            [sys.executable, "-c", LOADER, REPO_ID],
            cwd=root,
            env=hub_env(hub, root / "loader-home"),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        yield hub, runs, loaded, root


def test_push_succeeds(published) -> None:
    _, runs, _, _ = published

    for version in ("v1.0.0", "v1.1.0"):
        assert runs[version].status == 0, runs[version].stderr[-3000:]
        assert f"Published {version} to datasets/{REPO_ID}." in runs[version].stdout


def test_push_tags_one_commit_per_version(published) -> None:
    hub, _, _, _ = published
    commits = hub.commits(REPO_ID)
    repo = hub.state.repos[REPO_ID]

    assert [commit.title for commit in commits] == ["initial commit", "Release v1.0.0", "Release v1.1.0"]
    assert repo.tags == {"v1.0.0": commits[1].oid, "v1.1.0": commits[2].oid}
    assert repo.gated == "auto"


def test_second_push_touches_changed_files_only(published, exports: dict[str, Path]) -> None:
    hub, _, _, _ = published
    first, second = hub.commits(REPO_ID)[1:]

    assert len(first.operations) == 18
    assert sorted(second.operations) == [
        ("add", "README.md"),
        ("add", "data/ct-lung-classification/test-00000-of-00001.parquet"),
        ("add", "data/ct-lung-classification/train-00000-of-00001.parquet"),
        ("add", "data/ct-lung-classification/validation-00000-of-00001.parquet"),
        ("add", "dataset_infos.json"),
    ]
    unchanged = "data/mri-brain-segmentation/train-00000-of-00001.parquet"
    assert second.files[unchanged] == first.files[unchanged]
    assert (
        second.files["data/ct-lung-classification/train-00000-of-00001.parquet"]
        == (exports["v1.1.0"] / "data/ct-lung-classification/train-00000-of-00001.parquet").read_bytes()
    )


def test_push_card_changelog_and_gate(published) -> None:
    hub, _, _, root = published
    card_text = hub.commits(REPO_ID)[2].files["README.md"].decode()

    assert changelog_entries(card_text) == [
        "- **v1.1.0** (2026-03-01): Release v1.1.0",
        "- **v1.0.0** (2026-03-01): Release v1.0.0",
    ]
    assert f"extra_gated_prompt: {GATED_PROMPT[:40]}" in card_text
    assert (root / "v1.1.0" / "README.md").read_text(encoding="utf-8") == card_text


def test_push_rejects_existing_tag(published) -> None:
    hub, runs, _, _ = published

    assert runs["reuse"].status == 1
    assert f"error: Tag v1.0.0 already exists in datasets/{REPO_ID}" in runs["reuse"].stderr
    assert len(hub.commits(REPO_ID)) == 3


def test_push_blocked_by_validation(published) -> None:
    hub, runs, _, _ = published

    assert runs["invalid"].status == 1
    assert "failed validation" in runs["invalid"].stderr
    assert "v1.2.0" not in hub.state.repos[REPO_ID].tags
    commit_requests = [path for method, path, _ in hub.state.requests if method == "POST" and "/commit/" in path]
    assert len(commit_requests) == 2


def test_push_token_never_printed(published) -> None:
    hub, runs, _, _ = published

    for run in runs.values():
        assert FAKE_TOKEN not in run.stdout
        assert FAKE_TOKEN not in run.stderr
        # DEBUG logging of every library goes to stderr: the records were emitted, the token is in none of them.
        assert "DEBUG" in run.stderr
    writes = [entry for entry in hub.state.requests if entry[0] in ("POST", "PUT")]
    assert writes and all(authorized for _, _, authorized in writes)


def test_load_back_both_versions(published, exports: dict[str, Path]) -> None:
    _, _, loaded, _ = published
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.split("RESULT ", 1)[1])

    for version in ("v1.0.0", "v1.1.0"):
        assert result[version] == {
            split: [list(pair) for pair in rows] for split, rows in local_rows(exports[version]).items()
        }
    assert len(result["v1.1.0"]["train"]) == len(result["v1.0.0"]["train"]) + 1
    assert len(result["unrelated-streaming"]["test"]) == 6


def local_rows(export: Path) -> dict[str, list[tuple[str, str]]]:
    """Return the sorted (id, question) pairs of each pool split of an export folder."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((export / "data").rglob("*.parquet")):
        split = path.name.split("-", 1)[0]
        table = pq.read_table(path, columns=["id", "question"])
        rows.setdefault(split, []).extend(zip(table.column("id").to_pylist(), table.column("question").to_pylist()))
    return {split: sorted(pairs) for split, pairs in rows.items()}


def test_publish_warns_restricted_pixels_ungated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from builder.publish import _warn_about_contents

    export = make_export(tmp_path / "export", rows_per_part=1)
    request = PublishRequest(out_dir=tmp_path / "out", version="1.0.0", message="m", folder=export)

    _warn_about_contents(export, request)

    assert "Images of chexpert, brats, mosmed are included and the repo is not gated" in caplog.text
    assert "synthetic" not in caplog.text


def test_publish_no_warning_without_restricted_pixels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from builder.publish import _warn_about_contents
    from builder.restore import write_build_settings

    export = make_export(tmp_path / "export", rows_per_part=1)
    write_build_settings(export, BuildSettings(ship_pixels={"chexpert": False, "brats": False, "mosmed": False}))
    request = PublishRequest(out_dir=tmp_path / "out", version="1.0.0", message="m", folder=export)

    _warn_about_contents(export, request)

    assert "are included" not in caplog.text
