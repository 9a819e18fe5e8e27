"""A small in-memory Hugging Face Hub for tests, served on 127.0.0.1.

It implements the routes that ``huggingface_hub`` 2.4 (``HfApi`` and
``HfFileSystem``) and ``datasets`` 5.2 (``load_dataset`` on a Hub repo) call for
dataset repos, read from their sources:

- ``POST /api/repos/create``
- ``GET /api/datasets/{repo}`` and ``GET /api/datasets/{repo}/revision/{revision}`` (repo info with siblings)
- ``GET /api/datasets/{repo}/tree/{revision}[/{path}]`` with ``recursive`` and ``expand``
- ``POST /api/datasets/{repo}/paths-info/{revision}`` (form fields ``paths`` and ``expand``)
- ``GET /api/datasets/{repo}/refs`` and ``POST /api/datasets/{repo}/tag/{revision}``
- ``POST /api/datasets/{repo}/preupload/{revision}``, which returns ``regular`` for every file
- ``POST /api/datasets/{repo}/commit/{revision}`` (NDJSON with base64 files and deletions)
- ``PUT /api/datasets/{repo}/settings`` and ``POST /api/validate-yaml``
- ``GET`` and ``HEAD /datasets/{repo}/resolve/{revision}/{path}`` with ``ETag``,
  ``X-Repo-Commit`` and byte ranges

Because preupload returns ``regular``, file contents arrive base64-encoded
inside the commit request. The server never returns ``lfs`` and rejects
``lfsFile`` commit lines, so the LFS and Xet upload paths are not exercised.
Every commit keeps a full copy of the repo files, so old revisions and tags
stay readable. Point the client at it with ``HF_ENDPOINT`` (read when
``huggingface_hub`` is imported) and set ``HF_HUB_DISABLE_XET=1``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

logger = logging.getLogger(__name__)

GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
DEFAULT_NAMESPACE = "tester"

REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("GET", re.compile(rf"^/api/datasets/{REPO}$"), "repo_info"),
    ("GET", re.compile(rf"^/api/datasets/{REPO}/revision/(?P<revision>[^/]+)$"), "repo_info"),
    ("GET", re.compile(rf"^/api/datasets/{REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?$"), "tree"),
    ("POST", re.compile(rf"^/api/datasets/{REPO}/paths-info/(?P<revision>[^/]+)$"), "paths_info"),
    ("GET", re.compile(rf"^/api/datasets/{REPO}/refs$"), "refs"),
    ("POST", re.compile(rf"^/api/datasets/{REPO}/tag/(?P<revision>[^/]+)$"), "create_tag"),
    ("POST", re.compile(rf"^/api/datasets/{REPO}/preupload/(?P<revision>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/datasets/{REPO}/commit/(?P<revision>[^/]+)$"), "commit"),
    ("PUT", re.compile(rf"^/api/datasets/{REPO}/settings$"), "settings"),
    ("GET", re.compile(rf"^/datasets/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/datasets/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$"), "resolve"),
]


def git_blob_oid(content: bytes) -> str:
    """Return the git blob SHA-1 of ``content``, the ``oid`` the Hub reports for a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubError(Exception):
    """An HTTP error response, with the ``X-Error-Code`` header that ``huggingface_hub`` maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.commit = commit


@dataclass
class Commit:
    """One commit: the full file set after it and the operations it applied."""

    oid: str
    parent: str | None
    title: str
    files: dict[str, bytes]
    operations: list[tuple[str, str]]
    date: str = field(default_factory=_now)


@dataclass
class Repo:
    """One dataset repo: commits by oid, branches and tags pointing at commit oids, and settings."""

    repo_id: str
    private: bool = False
    gated: str | bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)

    def resolve(self, revision: str) -> Commit:
        """Return the commit a branch, a tag or a full commit oid names.

        Raises:
            HubError: 404 ``RevisionNotFound`` when nothing matches.
        """
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and revision in self.commits:
            oid = revision
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def add_commit(self, branch: str, title: str, files: dict[str, bytes], operations: list[tuple[str, str]]) -> Commit:
        """Record a commit on ``branch`` and move the branch to it."""
        parent = self.branches.get(branch)
        seed = f"{self.repo_id}\n{parent}\n{title}\n{len(self.commits)}".encode()
        oid = hashlib.sha1(seed).hexdigest()
        commit = Commit(oid, parent, title, files, operations)
        self.commits[oid] = commit
        self.branches[branch] = oid
        return commit


class HubState:
    """Repos, the token that write routes accept, and a record of every request (without header values)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.base_url = ""
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()

    def repo(self, repo_id: str, authorized: bool) -> Repo:
        """Return a repo, raising 404 ``RepoNotFound`` when it is missing or private to an anonymous caller."""
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo


class HubServer:
    """The loopback Hub: ``with HubServer(token) as hub:`` serves on ``hub.url`` until the block ends.

    Args:
        token: The only token write routes accept, as ``Authorization: Bearer <token>``.
    """

    def __init__(self, token: str) -> None:
        self.state = HubState(token)
        handler = type("BoundHubHandler", (HubHandler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.state.base_url = self.url
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def commits(self, repo_id: str, branch: str = "main") -> list[Commit]:
        """Return the commits of a branch, oldest first."""
        repo = self.state.repos[repo_id]
        chain = []
        oid: str | None = repo.branches[branch]
        while oid is not None:
            chain.append(repo.commits[oid])
            oid = repo.commits[oid].parent
        return chain[::-1]


class HubHandler(BaseHTTPRequestHandler):
    """Dispatch each request to the ``do_<route>`` method of its route and turn HubError into an HTTP error response."""

    protocol_version = "HTTP/1.1"
    state: HubState

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes, so without TCP_NODELAY the body can wait for a delayed ACK.
        # That wait was about 40 ms per response on loopback here.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        # The request line never carries the token (it travels in the Authorization header).
        logger.debug("hub server: " + format, *args)

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query)
        self.body = self._read_body()
        self.authorized = self.headers.get("Authorization") == f"Bearer {self.state.token}"
        with self.state.lock:
            self.state.requests.append((method, parts.path, self.authorized))
        try:
            for route_method, pattern, name in ROUTES:
                match = pattern.match(parts.path)
                if route_method == method and match:
                    arguments = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    with self.state.lock:
                        getattr(self, f"route_{name}")(**arguments)
                    return
            raise HubError(404, f"No route for {method} {parts.path} in the test Hub server")
        except HubError as error:
            self._send_error(error)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: object, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode())

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        if error.commit:
            headers["X-Repo-Commit"] = error.commit
        self._send(error.status, json.dumps({"error": error.message}).encode(), headers)

    def _require_token(self) -> None:
        if not self.authorized:
            raise HubError(401, "Invalid credentials in Authorization header")

    def _json_body(self) -> dict:
        return json.loads(self.body or b"{}")

    def route_create_repo(self) -> None:
        self._require_token()
        payload = self._json_body()
        if payload.get("type") != "dataset":
            raise HubError(400, f"The test Hub server only hosts dataset repos, got type {payload.get('type')!r}")
        repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload['name']}"
        url = f"{self._base_url()}/datasets/{repo_id}"
        if repo_id in self.state.repos:
            # The Hub's 409 response carries the repo URL, which create_repo(exist_ok=True) returns.
            message = f"You already created this dataset repo: {repo_id}"
            self._send(409, json.dumps({"error": message, "url": url}).encode(), {"X-Error-Message": message})
            return

        repo = Repo(repo_id, private=payload.get("visibility") == "private")
        repo.add_commit("main", "initial commit", {".gitattributes": GITATTRIBUTES}, [("add", ".gitattributes")])
        self.state.repos[repo_id] = repo
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def route_validate_yaml(self) -> None:
        content = str(self._json_body().get("content", ""))
        match = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
        if match is None:
            self._send_json({"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
            return
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            self._send_json({"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []}, status=400)
            return
        if not isinstance(metadata, dict):
            self._send_json({"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []}, status=400)
            return
        self._send_json({"errors": [], "warnings": []})

    def route_whoami(self) -> None:
        self._require_token()
        self._send_json({"type": "user", "name": DEFAULT_NAMESPACE, "orgs": [], "auth": {"type": "access_token"}})

    def route_repo_info(self, repo: str, revision: str = "main") -> None:
        hub_repo = self.state.repo(repo, self.authorized)
        commit = hub_repo.resolve(revision)
        with_blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, content in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=len(content), blobId=git_blob_oid(content))
            siblings.append(sibling)
        self._send_json(
            {
                "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
                "id": repo,
                "author": repo.split("/")[0],
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": hub_repo.created_at,
                "private": hub_repo.private,
                "gated": hub_repo.gated,
                "disabled": False,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": siblings,
            }
        )

    def route_tree(self, repo: str, revision: str, path: str = "") -> None:
        commit = self.state.repo(repo, self.authorized).resolve(revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = self.query.get("expand", ["false"])[0].lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(name.startswith(prefix) for name in commit.files):
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound", commit.oid)

        entries: dict[str, dict] = {}
        for name in sorted(commit.files):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for level in range(1, min(depth, len(parts)) + 1):
                entry_path = prefix + "/".join(parts[:level])
                if entry_path not in entries:
                    entries[entry_path] = self._path_entry(commit, entry_path, expand)
        self._send_json(list(entries.values()))

    def route_paths_info(self, repo: str, revision: str) -> None:
        commit = self.state.repo(repo, self.authorized).resolve(revision)
        form = parse_qs(self.body.decode())
        expand = form.get("expand", ["False"])[0].lower() in ("1", "true")
        entries = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files or any(name.startswith(path + "/") for name in commit.files):
                entries.append(self._path_entry(commit, path, expand))
        self._send_json(entries)

    def _path_entry(self, commit: Commit, path: str, expand: bool) -> dict:
        if path in commit.files:
            content = commit.files[path]
            entry: dict[str, Any] = {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": path}
        else:
            tree_id = hashlib.sha1(f"{commit.oid}/{path}".encode()).hexdigest()
            entry = {"type": "directory", "oid": tree_id, "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    def route_refs(self, repo: str) -> None:
        hub_repo = self.state.repo(repo, self.authorized)

        def refs(names: dict[str, str], kind: str) -> list[dict]:
            return [
                {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid} for name, oid in sorted(names.items())
            ]

        self._send_json(
            {
                "branches": refs(hub_repo.branches, "heads"),
                "converts": [],
                "tags": refs(hub_repo.tags, "tags"),
                "pullRequests": [],
            }
        )

    def route_create_tag(self, repo: str, revision: str) -> None:
        self._require_token()
        hub_repo = self.state.repo(repo, True)
        commit = hub_repo.resolve(revision)
        tag = str(self._json_body().get("tag", ""))
        if not tag:
            raise HubError(400, "Missing tag name in the request body")
        if tag in hub_repo.tags or tag in hub_repo.branches:
            raise HubError(409, f"Tag {tag} already exists")
        hub_repo.tags[tag] = commit.oid
        self._send_json({"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": commit.oid})

    def route_preupload(self, repo: str, revision: str) -> None:
        self._require_token()
        commit = self.state.repo(repo, True).resolve(revision)
        answers = []
        for item in self._json_body().get("files", []):
            existing = commit.files.get(item["path"])
            answers.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(existing) if existing is not None else None,
                }
            )
        self._send_json({"files": answers, "commitOid": commit.oid})

    def route_commit(self, repo: str, revision: str) -> None:
        self._require_token()
        hub_repo = self.state.repo(repo, True)
        if revision not in hub_repo.branches:
            raise HubError(404, f"Branch {revision} not found. Commits must target a branch.", "RevisionNotFound")
        head = hub_repo.commits[hub_repo.branches[revision]]

        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != head.oid:
            raise HubError(412, f"Parent commit {parent} is not the head of {revision} ({head.oid})")

        files = dict(head.files)
        operations = [self._apply_operation(files, line) for line in lines[1:]]
        commit = hub_repo.add_commit(revision, str(header.get("summary", "")), files, operations)
        self._send_json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._base_url()}/datasets/{repo}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    @staticmethod
    def _apply_operation(files: dict[str, bytes], line: dict) -> tuple[str, str]:
        key, value = line.get("key"), line.get("value", {})
        path = str(value.get("path", "")).strip("/")
        if key == "file":
            files[path] = base64.b64decode(value["content"])
            return ("add", path)
        if key == "deletedFile":
            if path not in files:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del files[path]
            return ("delete", path)
        if key == "deletedFolder":
            for name in [name for name in files if name.startswith(path + "/")]:
                del files[name]
            return ("delete-folder", path)
        if key == "lfsFile":
            raise HubError(
                400,
                f"LFS pointers are not supported by the test Hub server (file {path}), because preupload returns regular",
            )
        raise HubError(400, f"Unknown commit operation {key!r}")

    def route_settings(self, repo: str) -> None:
        self._require_token()
        hub_repo = self.state.repo(repo, True)
        payload = self._json_body()
        if "gated" in payload:
            hub_repo.gated = payload["gated"]
        if "visibility" in payload:
            hub_repo.private = payload["visibility"] == "private"
        self._send_json({})

    def route_resolve(self, repo: str, revision: str, path: str) -> None:
        hub_repo = self.state.repo(repo, self.authorized)
        if hub_repo.gated and not self.authorized:
            raise HubError(401, f"Access to dataset {repo} is restricted. You must be authenticated.", "GatedRepo")
        commit = hub_repo.resolve(revision)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.oid)

        content = commit.files[path]
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_oid(content)}"',
            "Accept-Ranges": "bytes",
        }
        byte_range = self.headers.get("Range")
        if byte_range is None:
            self._send(200, content, headers, content_type="application/octet-stream")
            return

        start, end = self._parse_range(byte_range, len(content))
        headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        self._send(206, content[start : end + 1], headers, content_type="application/octet-stream")

    @staticmethod
    def _parse_range(value: str, size: int) -> tuple[int, int]:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
        if match is None:
            raise HubError(416, f"Unsupported Range header {value!r}")
        first, last = match.groups()
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size:
            raise HubError(416, f"Range {value!r} starts past the end of a {size}-byte file")
        return start, end

    def _base_url(self) -> str:
        return self.state.base_url
