"""The wheel a user installs carries everything a run needs: the shipped scenarios as package
data, and every package the `mdiqkd` entry point imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools writes build/ and *.egg-info/ beside the sources.
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "runs", "*.egg-info", "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(out), str(source)], check=True, cwd=out)
    (path,) = out.glob("mdiqkd-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_every_scenario_as_package_data(wheel):
    names = set(wheel.namelist())
    for scenario in (ROOT / "scenarios").glob("*.yaml"):
        assert f"scenarios/{scenario.name}" in names
    assert "scenarios/__init__.py" in names


def test_the_wheel_holds_every_package_and_no_tests(wheel):
    top = {n.split("/")[0] for n in wheel.namelist() if not n.startswith("mdiqkd-")}
    assert top == {"channel", "classical", "nodes", "orchestration", "scenarios"}
