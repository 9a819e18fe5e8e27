"""No code of the repository unpickles data: loading a pickle can run arbitrary code.

The scan parses every Python file of ``builder/``, ``eval/`` and ``crossmed.py``
and flags imports of pickle-based modules, ``torch.load`` without
``weights_only=True``, ``numpy.load`` with ``allow_pickle`` other than False,
and the pandas pickle readers. Import aliases (``import numpy as np``,
``from torch import load``) are resolved before calls are matched.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("builder", "eval", "crossmed.py")

# Modules whose import alone is flagged: each one loads pickles.
PICKLE_MODULES = frozenset({"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"})
PICKLE_READERS = frozenset({"pandas.read_pickle"})


def scanned_files(root: Path) -> list[Path]:
    files = []
    for name in SCANNED:
        path = root / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def _import_aliases(tree: ast.AST) -> dict[str, str]:
    """Map each name bound by an import to its dotted origin, e.g. ``np`` to ``numpy``."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # "import os.path" binds "os"; "import numpy.linalg as la" binds "la" to the submodule.
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _dotted_name(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        keyword.arg == name and isinstance(keyword.value, ast.Constant) and keyword.value.value is value
        for keyword in call.keywords
    )


def _import_findings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
        modules = [node.module]
    else:
        return []
    return [f"imports {module}" for module in modules if module.split(".")[0] in PICKLE_MODULES]


def _call_finding(call: ast.Call, aliases: dict[str, str]) -> str | None:
    name = _dotted_name(call.func, aliases)
    if name == "torch.load" and not _keyword_is(call, "weights_only", True):
        return "calls torch.load without weights_only=True"
    allow_pickle = [keyword for keyword in call.keywords if keyword.arg == "allow_pickle"]
    if name == "numpy.load" and allow_pickle and not _keyword_is(call, "allow_pickle", False):
        return "calls numpy.load with allow_pickle other than False"
    if name in PICKLE_READERS or (name or "").endswith(".to_pickle"):
        return f"calls {name}"
    return None


def pickle_findings(path: Path) -> list[str]:
    """Return ``file:line: what`` for every pickle use in one Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = _import_aliases(tree)
    findings = []
    for node in ast.walk(tree):
        messages = _import_findings(node)
        if isinstance(node, ast.Call):
            messages += [message for message in [_call_finding(node, aliases)] if message]
        findings += [f"{path}:{node.lineno}: {message}" for message in messages]
    return sorted(findings)


def test_no_pickle_in_repository() -> None:
    files = scanned_files(REPO_ROOT)
    findings = [finding for path in files for finding in pickle_findings(path)]

    assert len(files) > 10
    assert not findings, "pickle use found:\n" + "\n".join(findings)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import pickle\n", "2: imports pickle"),
        ("from joblib import load\n", "2: imports joblib"),
        ("import cloudpickle as cp\n", "2: imports cloudpickle"),
        ("import torch\ntorch.load('w.pt')\n", "3: calls torch.load without weights_only=True"),
        ("import torch\ntorch.load('w.pt', weights_only=False)\n", "3: calls torch.load without weights_only=True"),
        ("from torch import load\nload('w.pt')\n", "3: calls torch.load without weights_only=True"),
        ("import numpy as np\nnp.load('a.npy', allow_pickle=True)\n", "3: calls numpy.load with allow_pickle"),
        ("import pandas as pd\npd.read_pickle('t.pkl')\n", "3: calls pandas.read_pickle"),
    ],
)
def test_scan_flags_pickle_use(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "module.py"
    path.write_text("x = 1\n" + source, encoding="utf-8")

    findings = pickle_findings(path)

    assert len(findings) == 1, findings
    assert findings[0].startswith(f"{path}:{expected}")


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load('w.pt', weights_only=True)\n",
        "import numpy as np\nnp.load('a.npy')\n",
        "import numpy as np\nnp.load('a.npy', allow_pickle=False)\n",
        "import json\njson.load(open('a.json'))\n",
    ],
)
def test_scan_accepts_safe_loads(tmp_path: Path, source: str) -> None:
    path = tmp_path / "module.py"
    path.write_text(source, encoding="utf-8")

    assert pickle_findings(path) == []
