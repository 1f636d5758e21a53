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
    # shuffle seeds with the same SplitMix64), so it has one home and classical reads it there;
    # likewise the read-only form in which both hand arrays to numba kernels.
    "classical": {"channel.rng", "channel.arrays"},
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



#: Charles's software: what a malicious relay would replace wholesale. It must not be able to reach
#: the emulator (nature, which holds the pulses and the users' settings keys) or the settings
#: generator, nor the orchestration that holds the master seed. (``channel.rng`` is reachable
#: through classical's Cascade; it is a pure function, and Charles's process has no seed to feed
#: it: ``orchestration.secrets``.) Checked transitively over the project's modules.
CHARLES_MODULES = ("nodes/charles.py", "nodes/relay_software.py", "nodes/records.py",
                   "nodes/relay_faults.py", "nodes/relay_timing.py", "channel/timeline.py")
CHARLES_FORBIDDEN = {"nodes.nature", "nodes.users", "channel.settings", "channel.samplers",
                     "channel.link", "orchestration"}


def _project_file(module: str) -> Path | None:
    path = ROOT / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _reachable(path: Path) -> set[str]:
    """Project modules imported by ``path``, directly or through other project modules."""
    seen: set[str] = set()
    todo = [m for m in _modules(path) if m.split(".")[0] in ALLOWED]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        f = _project_file(m)
        if f is not None:
            todo += [x for x in _modules(f) if x.split(".")[0] in ALLOWED]
    return seen


@pytest.mark.parametrize("module", CHARLES_MODULES)
def test_charles_cannot_import_the_emulator_or_the_settings_generator(module):
    reached = {m for m in _reachable(ROOT / module) for f in CHARLES_FORBIDDEN
               if m == f or m.startswith(f + ".")}
    assert not reached, f"{module} reaches {reached}"


def test_the_charles_rule_would_catch_an_import_of_the_emulator(tmp_path):
    bad = tmp_path / "charles.py"
    bad.write_text("from nodes.nature import ChannelEmulator\nimport channel.settings\n")
    imported = _modules(bad)
    assert {m for m in imported for f in CHARLES_FORBIDDEN
            if m == f or m.startswith(f + ".")} == {"nodes.nature", "channel.settings"}


def test_only_nature_is_built_with_the_fault_timeline():
    """``node_main`` hands the fault timeline (nature's secrets) to nature's link alone, and the
    scenario every node reads leaves out what only nature and the orchestrator may know."""
    from orchestration.config import HIDDEN_FROM_NODES

    assert {"seed", "method", "rollbacks", "steady_state"} <= HIDDEN_FROM_NODES
    tree = ast.parse((ROOT / "orchestration" / "node_main.py").read_text())
    uses = [node for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "fault_timeline"]
    assert uses  # its link, and its emulator (which adds the live control plane's entries)
    build = next(n for n in ast.walk(tree)
                 if isinstance(n, ast.FunctionDef) and n.name == "build_node")
    nature = next(n for n in ast.walk(build) if isinstance(n, ast.If)
                  and ast.unparse(n.test) == "role == 'nature'")
    assert all(u in list(ast.walk(nature)) for u in uses)
    for module in ("nodes/users.py", "nodes/charles.py", "nodes/relay_software.py"):
        text = (ROOT / module).read_text()
        assert "fault_timeline" not in text and ".method" not in text, module
