"""The import arrows of ARCHITECTURE.md §2 point one way; the pure packages open no socket."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "channel": {"channel"},
    "classical": {"classical"},
    "nodes": {"nodes", "channel", "classical"},
    "orchestration": {"orchestration", "nodes", "channel", "classical"},
}
NO_SOCKETS = ("channel", "classical")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_downstream(package):
    project = set(ALLOWED)
    for path in (ROOT / package).rglob("*.py"):
        used = _imports(path) & project
        extra = used - ALLOWED[package]
        assert not extra, f"{path.relative_to(ROOT)} imports {extra}"


@pytest.mark.parametrize("package", NO_SOCKETS)
def test_pure_packages_open_no_sockets(package):
    for path in (ROOT / package).rglob("*.py"):
        assert not _imports(path) & {"zmq", "socket", "ray"}, path

