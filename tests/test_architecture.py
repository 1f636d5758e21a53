"""The import arrows of docs/architecture.md §6 point one way; the pure packages open no socket."""

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
# Single modules a package may import across the arrows, by full name.
ALLOWED_MODULES = {
    # Counter-based randomness is shared by nature and the protocol (Cascade expands its public
    # shuffle seeds with the same SplitMix64), so it has one home and classical reads it there.
    "classical": {"channel.rng"},
}
NO_SOCKETS = ("channel", "classical")


def _modules(path: Path) -> set[str]:
    """Full names of the absolute imports in ``path``."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


def _forbidden(package: str, modules: set[str]) -> set[str]:
    """The project modules among ``modules`` that ``package`` may not import."""
    allowed = ALLOWED_MODULES.get(package, set())
    return {m for m in modules if m.split(".")[0] in ALLOWED
            and m.split(".")[0] not in ALLOWED[package] and m not in allowed}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_downstream(package):
    for path in (ROOT / package).rglob("*.py"):
        extra = _forbidden(package, _modules(path))
        assert not extra, f"{path.relative_to(ROOT)} imports {extra}"


def test_the_allowance_names_one_module_not_its_package():
    assert not _forbidden("classical", {"channel.rng", "numpy", "classical.codec"})
    assert _forbidden("classical", {"channel.settings", "channel"}) == {"channel.settings",
                                                                        "channel"}


@pytest.mark.parametrize("package", NO_SOCKETS)
def test_pure_packages_open_no_sockets(package):
    for path in (ROOT / package).rglob("*.py"):
        assert not _imports(path) & {"zmq", "socket", "ray"}, path

