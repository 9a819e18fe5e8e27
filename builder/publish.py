"""Publish a CrossMed version to the Hugging Face Hub: build, validate, plan, push and tag.

Usage::

    python -m builder.publish --data-dir SOURCES --out REPO --repo-id ORG/crossmed \\
        --version 1.1.0 --message "Add MosMed masks" [--no-pixels brats chexpert] [--gated] [--push]
    python -m builder.publish --folder EXPORT --out REPO --version 1.1.0 --message "..."
    python -m builder.publish restore --folder EXPORT --data-dir SOURCES --out RESTORED

A run writes the exact folder that would be pushed (``--out``): the export, its
build settings (``crossmed_build.json``) and a card whose ``## Changelog``
section gains one line for the version. The folder is then validated
(``builder.validate``) and compared with the current ``main`` revision of the
Hub repo, or with nothing for a new repo or without ``--repo-id``. The plan,
the files added, changed and deleted with their sizes, is printed. Only
``--push`` uploads: one commit with every change, then the tag
``vMAJOR.MINOR.PATCH``. A tag that exists already is rejected before anything
is built or uploaded.

The token comes from the ``HF_TOKEN`` environment variable or the
``huggingface_hub`` login (``hf auth login``), through
``huggingface_hub.get_token()``. There is no command-line option for it, and
it is never logged or printed. ``HF_ENDPOINT`` selects another Hub endpoint,
which ``huggingface_hub`` reads when it is imported.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile

from builder.export import ROW_GROUP_BUDGET_BYTES
from builder.mat import SOURCES
from builder.policy import POLICIES
from builder.restore import BuildSettings, RestoreError, restore_pixels, write_build_settings
from builder.validate import ValidationError, validate_export

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
BRANCH = "main"
VERSION_PATTERN = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
CHANGELOG_HEADING = "## Changelog"
CHANGELOG_ENTRY = re.compile(r"^- \*\*(v\d+\.\d+\.\d+)\*\*")
# Files the Hub creates itself; a push never deletes them even though the export lacks them.
HUB_OWNED_FILES: frozenset[str] = frozenset({".gitattributes"})
GATED_PROMPT = (
    "CrossMed rows come from CheXpert, SIIM-ACR, BraTS 2020 and MosMedData. By requesting access you agree "
    "to follow the terms of each of these sources, listed in this card, including their non-commercial clauses."
)


class PublishError(RuntimeError):
    """A publish request that cannot go ahead, e.g. a tag that exists or a missing token."""


def parse_version(text: str) -> str:
    """Return the tag ``vMAJOR.MINOR.PATCH`` of a version written ``1.2.0`` or ``v1.2.0``.

    Raises:
        ValueError: when ``text`` is not three dot-separated integers without leading zeros.
    """
    match = VERSION_PATTERN.match(text.strip())
    if match is None:
        raise ValueError(f"Invalid --version {text!r}: expected MAJOR.MINOR.PATCH such as 1.2.0 or v1.2.0")
    return "v" + ".".join(match.groups())


@dataclass(frozen=True)
class RemoteFile:
    """One file of the Hub revision: its size in bytes and the hashes that identify its content."""

    size: int
    git_oid: str
    lfs_sha256: str | None = None


@dataclass
class RemoteState:
    """The Hub repo that the plan compares with: absent, or a head commit with its files, tags and card text."""

    repo_id: str | None
    exists: bool = False
    head: str | None = None
    files: dict[str, RemoteFile] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    card_text: str | None = None


@dataclass(frozen=True)
class FileChange:
    """One path of the plan: ``added``, ``changed``, ``deleted`` or ``unchanged``, with sizes in bytes."""

    path: str
    status: str
    size: int
    remote_size: int | None = None


@dataclass
class PublishPlan:
    """The changes a push makes to the Hub repo's ``main`` branch."""

    repo_id: str | None
    tag: str
    head: str | None
    changes: list[FileChange]

    def with_status(self, status: str) -> list[FileChange]:
        """Return the changes of one status, sorted by path."""
        return sorted((change for change in self.changes if change.status == status), key=lambda change: change.path)

    def describe(self) -> str:
        """Return the plan as text: one line per added, changed or deleted file, then a summary."""
        target = f"datasets/{self.repo_id}" if self.repo_id else "a new repo (no --repo-id given)"
        base = f"main at {self.head[:12]}" if self.head else "nothing (new repo)"
        lines = [f"Plan for {target}, version {self.tag}, compared with {base}:"]
        for status in ("added", "changed", "deleted"):
            for change in self.with_status(status):
                previous = f" (was {format_size(change.remote_size)})" if change.status == "changed" else ""
                lines.append(f"  {status:<8} {change.path}  {format_size(change.size)}{previous}")
        unchanged = self.with_status("unchanged")
        lines.append(
            f"  {len(self.with_status('added'))} added, {len(self.with_status('changed'))} changed, "
            f"{len(self.with_status('deleted'))} deleted, {len(unchanged)} unchanged "
            f"({format_size(sum(change.size for change in unchanged))})"
        )
        return "\n".join(lines)


def format_size(size: int | None) -> str:
    """Return a byte count as text with a binary unit, e.g. ``1.5 MiB``."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def make_api() -> HfApi:
    """Return an HfApi client with the token from ``HF_TOKEN`` or the stored login, or none."""
    return HfApi(token=get_token() or False, library_name="crossmed")


def fetch_remote_state(api: HfApi, repo_id: str) -> RemoteState:
    """Read the head of ``main``, its files, the tags and the card of a Hub dataset repo.

    Returns:
        The state; ``exists`` is False when the repo is not found or has no ``main`` branch.
    """
    try:
        info = api.dataset_info(repo_id, revision=BRANCH)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        logger.info("Dataset repo %s not found on %s, so the plan compares with an empty repo", repo_id, api.endpoint)
        return RemoteState(repo_id)

    state = RemoteState(repo_id, exists=True, head=info.sha)
    for entry in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=info.sha, recursive=True):
        if isinstance(entry, RepoFile):
            lfs_sha256 = entry.lfs.sha256 if entry.lfs else None
            state.files[entry.path] = RemoteFile(entry.size, entry.blob_id, lfs_sha256)
    state.tags = remote_tags(api, repo_id)
    if "README.md" in state.files:
        with tempfile.TemporaryDirectory(prefix="crossmed-card-") as folder:
            path = api.hf_hub_download(repo_id, "README.md", repo_type=REPO_TYPE, revision=info.sha, local_dir=folder)
            state.card_text = Path(path).read_text(encoding="utf-8")
    return state


def remote_tags(api: HfApi, repo_id: str) -> set[str]:
    """Return the tag names of a Hub dataset repo."""
    return {ref.name for ref in api.list_repo_refs(repo_id, repo_type=REPO_TYPE).tags}


def check_tag_free(tags: set[str], tag: str, repo_id: str | None) -> None:
    """Raise when ``tag`` is among the repo's tags.

    Raises:
        PublishError: naming the tag and the repo.
    """
    if tag in tags:
        raise PublishError(
            f"Tag {tag} already exists in datasets/{repo_id}. A published version is never replaced, "
            "so choose a new --version."
        )


def git_blob_oid(data: bytes) -> str:
    """Return the git blob SHA-1 of ``data``, which the Hub reports as the oid of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def plan_changes(folder: Path, state: RemoteState, tag: str) -> PublishPlan:
    """Compare the files of ``folder`` with the Hub revision by content hash."""
    changes = []
    local_paths = set()
    for path in sorted(item for item in folder.rglob("*") if item.is_file()):
        relative = path.relative_to(folder).as_posix()
        local_paths.add(relative)
        data = path.read_bytes()
        remote = state.files.get(relative)
        if remote is None:
            changes.append(FileChange(relative, "added", len(data)))
            continue
        if remote.lfs_sha256 is not None:
            same = hashlib.sha256(data).hexdigest() == remote.lfs_sha256
        else:
            same = git_blob_oid(data) == remote.git_oid
        changes.append(FileChange(relative, "unchanged" if same else "changed", len(data), remote.size))

    for relative, remote in state.files.items():
        if relative not in local_paths and relative not in HUB_OWNED_FILES:
            changes.append(FileChange(relative, "deleted", 0, remote.size))
    return PublishPlan(state.repo_id, tag, state.head, changes)


def changelog_entries(card_text: str | None) -> list[str]:
    """Return the lines of the ``## Changelog`` section of a card, newest first as written."""
    if not card_text or CHANGELOG_HEADING not in card_text:
        return []
    section = card_text.split(CHANGELOG_HEADING, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.MULTILINE)[0]
    return [line.rstrip() for line in section.splitlines() if line.startswith("- ")]


def update_card(folder: Path, tag: str, message: str, date: str, previous: list[str], gated: bool) -> None:
    """Rewrite the card of ``folder`` with the changelog entry of ``tag`` first, and the gating prompt if ``gated``.

    Args:
        folder: The repo folder whose README.md is rewritten.
        tag: The version tag, ``vMAJOR.MINOR.PATCH``.
        message: The maintainer's one-line description of the version.
        date: The release date, ``YYYY-MM-DD``.
        previous: Earlier changelog lines; a line of the same version is replaced.
        gated: Add ``extra_gated_prompt`` to the card metadata.
    """
    card = DatasetCard.load(folder / "README.md")
    if gated:
        card.data["extra_gated_prompt"] = GATED_PROMPT

    summary = " ".join(message.split())
    entries = [f"- **{tag}** ({date}): {summary}"]
    entries += [line for line in previous if _entry_version(line) != tag]
    body = card.text
    if CHANGELOG_HEADING in body:
        before, after = body.split(CHANGELOG_HEADING, 1)
        rest = re.split(r"^## ", after, maxsplit=1, flags=re.MULTILINE)
        body = before + ("## " + rest[1] if len(rest) > 1 else "")
    card.text = body.rstrip() + f"\n\n{CHANGELOG_HEADING}\n\n" + "\n".join(entries) + "\n"
    card.save(folder / "README.md")


def _entry_version(line: str) -> str | None:
    match = CHANGELOG_ENTRY.match(line)
    return match.group(1) if match else None


@dataclass
class PublishRequest:
    """A maintainer's publish request.

    Attributes:
        out_dir: The repo folder to write: exactly what a push uploads.
        version: The version tag, ``vMAJOR.MINOR.PATCH``.
        message: One line for the changelog and the commit description.
        data_dir: The sources to build from; None when ``folder`` is given.
        folder: An export folder to publish as it is; None when ``data_dir`` is given.
        repo_id: The Hub dataset repo, ``ORG/NAME``; None plans against an empty repo.
        settings: The build settings, used when building from ``data_dir``.
        push: Upload and tag; False writes the folder and prints the plan only.
        gated: Make the repo gated (card prompt, and automatic approval on the Hub).
        private: Create the repo private when it does not exist.
        date: The changelog date, ``YYYY-MM-DD``; today in UTC by default.
        row_group_budget_bytes: Maximum uncompressed bytes of one Parquet row group.
        load_check: Load every config with ``load_dataset`` during validation.
        overwrite: Replace an existing ``out_dir``.
        num_proc: Worker processes for image decoding during the build.
    """

    out_dir: Path
    version: str
    message: str
    data_dir: Path | None = None
    folder: Path | None = None
    repo_id: str | None = None
    settings: BuildSettings = field(default_factory=BuildSettings)
    push: bool = False
    gated: bool = False
    private: bool = False
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).date().isoformat())
    row_group_budget_bytes: int = ROW_GROUP_BUDGET_BYTES
    load_check: bool = True
    overwrite: bool = False
    num_proc: int | None = None

    def __post_init__(self) -> None:
        self.version = parse_version(self.version)
        if (self.data_dir is None) == (self.folder is None):
            raise ValueError("Pass exactly one of --data-dir (build from sources) and --folder (publish an export)")
        if not self.message.strip():
            raise ValueError("Invalid --message: the changelog line must not be empty")
        if self.push and self.repo_id is None:
            raise ValueError("--push needs --repo-id ORG/NAME")
        if self.folder is not None and Path(self.folder).resolve() == Path(self.out_dir).resolve():
            raise ValueError(f"--out {self.out_dir} must differ from --folder, because the repo folder is written anew")
        if self.folder is not None and self.settings.without_pixels():
            raise ValueError(
                "--no-pixels applies to builds from --data-dir only, because an export folder keeps the pixels it was exported with"
            )


def build_export(data_dir: Path, out_dir: Path, settings: BuildSettings, *, num_proc: int | None = None) -> Path:
    """Build every config from ``data_dir`` into ``out_dir`` and store the build settings next to the card.

    Rows of the sources that ``settings.ship_pixels`` marks False are exported
    without image and mask bytes; ``crossmed_build.json`` lets users rebuild them.
    """
    from builder.build import build_and_export

    result = build_and_export(
        data_dir,
        out_dir,
        num_proc=num_proc,
        overwrite=True,
        ship_pixels=settings.ship_pixels,
        **settings.config_kwargs(),
    )
    write_build_settings(result.out_dir, settings)
    skipped = result.skipped.summary_lines()
    if skipped:
        logger.warning("The build skipped inputs:\n%s", "\n".join(skipped))
    return result.out_dir


def prepare_folder(request: PublishRequest, previous_changelog: list[str]) -> Path:
    """Write the repo folder ``request.out_dir``: the export, its build settings and the updated card.

    Raises:
        FileExistsError: when ``out_dir`` exists and ``overwrite`` is False.
    """
    out_dir = Path(request.out_dir)
    if out_dir.exists() and not request.overwrite:
        raise FileExistsError(f"Output folder {out_dir} already exists. Pass --overwrite to replace it.")
    if out_dir.exists():
        shutil.rmtree(out_dir)

    if request.data_dir is not None:
        build_export(Path(request.data_dir), out_dir, request.settings, num_proc=request.num_proc)
    elif request.folder is not None:
        source = Path(request.folder)
        if not (source / "README.md").is_file():
            raise FileNotFoundError(f"Export folder {source} has no README.md. Expected a folder written by the build.")
        shutil.copytree(source, out_dir)

    update_card(out_dir, request.version, request.message, request.date, previous_changelog, request.gated)
    return out_dir


def publish(request: PublishRequest, api: HfApi | None = None) -> PublishPlan:
    """Write and validate the repo folder, plan the changes and, with ``request.push``, upload and tag.

    Args:
        request: What to publish and where.
        api: The Hub client; by default one with the token from the environment or the login.

    Returns:
        The plan, as compared with the Hub before any upload.

    Raises:
        PublishError: when the tag exists, or a push has no token.
        ValidationError: when the repo folder fails validation; nothing is uploaded.
    """
    api = api or make_api()
    if request.push and not api.token:
        raise PublishError("No Hugging Face token found: set HF_TOKEN or log in with `hf auth login`, then push again")
    state = RemoteState(request.repo_id)
    if request.repo_id is not None:
        state = fetch_remote_state(api, request.repo_id)
        check_tag_free(state.tags, request.version, request.repo_id)

    previous = changelog_entries(state.card_text) if state.exists else _folder_changelog(request.folder)
    out_dir = prepare_folder(request, previous)
    validate_export(out_dir, row_group_budget_bytes=request.row_group_budget_bytes, load=request.load_check)
    _warn_about_contents(out_dir, request)
    plan = plan_changes(out_dir, state, request.version)
    if request.push:
        push(api, out_dir, plan, request)
    return plan


# Sources whose terms forbid redistributing their images, or modified versions of them.
RESTRICTED_SOURCES: tuple[str, ...] = ("chexpert", "brats", "mosmed")


def _warn_about_contents(out_dir: Path, request: PublishRequest) -> None:
    """Log a warning for a synthetic build, and for restricted pixels bound for a repo that is not gated."""
    from builder.card import SYNTHETIC_NOTE
    from builder.restore import read_build_settings

    if SYNTHETIC_NOTE in (out_dir / "README.md").read_text(encoding="utf-8"):
        logger.warning("%s was built from synthetic sources; its card says so. Publish it only as a demo.", out_dir)

    settings = read_build_settings(out_dir)
    ship_pixels = settings.ship_pixels if settings is not None else {}
    shipped = [source for source in RESTRICTED_SOURCES if ship_pixels.get(source, True)]
    if shipped and not request.gated:
        logger.warning(
            "Images of %s are included and the repo is not gated, although their terms forbid redistribution; "
            "pass --no-pixels %s or --gated if the terms allow it",
            ", ".join(shipped), " ".join(shipped),
        )


def _folder_changelog(folder: Path | None) -> list[str]:
    if folder is None or not (Path(folder) / "README.md").is_file():
        return []
    return changelog_entries((Path(folder) / "README.md").read_text(encoding="utf-8"))


def push(api: HfApi, folder: Path, plan: PublishPlan, request: PublishRequest) -> str:
    """Upload the plan's changes in one commit on ``main``, tag it, and gate the repo if asked.

    Returns:
        The commit oid that the tag points at.

    Raises:
        PublishError: when the tag appeared on the Hub since the plan was made.
    """
    repo_id = str(plan.repo_id)
    api.create_repo(repo_id, repo_type=REPO_TYPE, private=request.private, exist_ok=True)
    check_tag_free(remote_tags(api, repo_id), plan.tag, repo_id)

    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=change.path, path_or_fileobj=str(folder / change.path))
        for change in plan.changes
        if change.status in ("added", "changed")
    ]
    operations += [CommitOperationDelete(path_in_repo=change.path) for change in plan.with_status("deleted")]
    commit = api.create_commit(
        repo_id,
        operations,
        commit_message=f"Release {plan.tag}",
        commit_description=request.message,
        repo_type=REPO_TYPE,
        revision=BRANCH,
        # Fails instead of overwriting when someone pushed since the plan was made.
        parent_commit=plan.head,
    )
    api.create_tag(repo_id, tag=plan.tag, tag_message=request.message, revision=commit.oid, repo_type=REPO_TYPE)
    if request.gated:
        api.update_repo_settings(repo_id, gated="auto", repo_type=REPO_TYPE)
    logger.info("Pushed %s to datasets/%s as commit %s (%d operations)", plan.tag, repo_id, commit.oid, len(operations))
    return commit.oid


def make_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m builder.publish`` (publish options; ``restore`` has its own parser)."""
    parser = argparse.ArgumentParser(
        prog="python -m builder.publish",
        description="Write, validate and (with --push) publish a CrossMed version to the Hugging Face Hub. "
        "The token comes from HF_TOKEN or `hf auth login`. "
        "Run `python -m builder.publish restore --help` to rebuild images of rows published without pixels.",
    )

    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument(
        "--data-dir", type=Path, help="build from the sources in this folder (one subfolder per source)"
    )
    inputs.add_argument("--folder", type=Path, help="publish this export folder as it is (no build)")
    parser.add_argument("--out", type=Path, required=True, help="repo folder to write: exactly what --push uploads")

    parser.add_argument("--repo-id", help="Hub dataset repo ORG/NAME to compare with and push to")
    parser.add_argument(
        "--version", required=True, help="version to publish, MAJOR.MINOR.PATCH; tagged vMAJOR.MINOR.PATCH"
    )
    parser.add_argument("--message", required=True, help="one line for the card changelog and the commit")
    parser.add_argument("--push", action="store_true", help="upload one commit and tag it (default: dry run)")
    parser.add_argument("--gated", action="store_true", help="gate the repo: card prompt, automatic approval")
    parser.add_argument("--private", action="store_true", help="create the repo private when it does not exist")

    parser.add_argument(
        "--no-pixels",
        nargs="+",
        choices=SOURCES,
        default=[],
        metavar="SOURCE",
        help="sources whose rows ship without image and mask bytes (rows keep source_file): " + ", ".join(SOURCES),
    )

    parser.add_argument(
        "--row-group-budget-mb",
        type=float,
        default=100.0,
        help="maximum uncompressed size of one Parquet row group in MiB (default 100, the Hub viewer limit)",
    )
    parser.add_argument(
        "--skip-load-check",
        action="store_true",
        help="skip loading every config with load_dataset during validation (the other checks still run)",
    )

    parser.add_argument("--date", help="changelog date YYYY-MM-DD (default: today in UTC)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _add_build_options(parser)
    return parser


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("build options (with --data-dir)")
    group.add_argument(
        "--seed", type=int, default=0, help="seed of templates, distractors, letters and boxes (default 0)"
    )
    group.add_argument(
        "--sources", nargs="+", choices=SOURCES, default=list(SOURCES), help="sources to read (default all)"
    )
    group.add_argument("--allow-missing-sources", action="store_true", help="build from the sources present")
    group.add_argument("--cap", action="append", default=[], metavar="TRIPLET=N", help="maximum questions of a triplet")
    group.add_argument("--no-caps", action="store_true", help="keep every question of every triplet")
    group.add_argument("--on-bad-input", choices=POLICIES, default="error", help="error (default), warn or skip")
    group.add_argument(
        "--max-side",
        type=int,
        default=1024,
        help="maximum image side in pixels, larger images shrink (default 1024, 0 keeps source sizes)",
    )
    group.add_argument("--num-proc", type=int, default=None, help="worker processes that decode images and write rows (default 1)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level")


def make_restore_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m builder.publish restore``."""
    parser = argparse.ArgumentParser(
        prog="python -m builder.publish restore",
        description="Rebuild the images of rows published without pixels, from your copy of the sources.",
    )
    parser.add_argument("--folder", type=Path, required=True, help="export folder, e.g. a download of the Hub repo")
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with one subfolder per source")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the export with images into")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level")
    return parser


def request_from_args(args: argparse.Namespace) -> PublishRequest:
    """Turn parsed publish options into a PublishRequest."""
    from builder.cli import parse_caps

    settings = BuildSettings(
        seed=args.seed,
        sources=tuple(args.sources),
        allow_missing_sources=args.allow_missing_sources,
        caps=parse_caps(args.cap, args.no_caps),
        on_bad_input=args.on_bad_input,
        max_side=args.max_side or None,
        ship_pixels={source: False for source in args.no_pixels},
    )
    optional = {"date": args.date} if args.date else {}
    return PublishRequest(
        out_dir=args.out,
        version=args.version,
        message=args.message,
        data_dir=args.data_dir,
        folder=args.folder,
        repo_id=args.repo_id,
        settings=settings,
        push=args.push,
        gated=args.gated,
        private=args.private,
        row_group_budget_bytes=int(args.row_group_budget_mb * 1024 * 1024),
        load_check=not args.skip_load_check,
        overwrite=args.overwrite,
        num_proc=args.num_proc,
        **optional,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status: 0 on success, 1 when publishing or restoring failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    restoring = bool(argv) and argv[0] == "restore"
    args = make_restore_parser().parse_args(argv[1:]) if restoring else make_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":
        logging.getLogger("datasets").setLevel(logging.WARNING)

    try:
        return _run_restore(args) if restoring else _run_publish(args)
    except (
        PublishError,
        ValidationError,
        RestoreError,
        HfHubHTTPError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _run_publish(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    plan = publish(request)
    print(plan.describe())
    if request.push:
        print(f"\nPublished {request.version} to datasets/{request.repo_id}.")
    else:
        print(
            f"\nDry run: nothing was uploaded. The repo folder is {request.out_dir}. Rerun with --push to publish it."
        )
    return 0


def _run_restore(args: argparse.Namespace) -> int:
    report = restore_pixels(args.folder, args.data_dir, args.out, overwrite=args.overwrite)
    counts = ", ".join(f"{source} {count}" for source, count in sorted(report.rows.items())) or "none"
    print(f"Restored images of {counts} row(s) into {report.out_dir} ({len(report.files)} Parquet files rewritten).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
