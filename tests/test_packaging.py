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
    # Build from a copy of the tracked files: setuptools writes build/ and *.egg-info/ beside
    # the sources, and nothing untracked (a venv, old build output) may leak into the wheel.
    source = out / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(out), str(source)], check=True, cwd=out)
    (path,) = out.glob("mdiqkd-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_every_scenario_as_package_data(wheel):
    names = set(wheel.namelist())
    for scenario in (ROOT / "scenarios").glob("*.yaml"):
        assert f"scenarios/{scenario.name}" in names
    assert "scenarios/__init__.py" in names


def test_the_wheel_ships_the_rules_and_dashboards_mdiqkd_observe_uses(wheel):
    names = set(wheel.namelist())
    for path in [*(ROOT / "observability" / "rules").glob("*.yml"),
                 *(ROOT / "observability" / "dashboards").glob("*.json")]:
        assert f"observability/{path.parent.name}/{path.name}" in names


def test_the_wheel_holds_every_package_and_no_tests(wheel):
    top = {n.split("/")[0] for n in wheel.namelist() if not n.startswith("mdiqkd-")}
    assert top == {"channel", "classical", "nodes", "observability", "orchestration", "scenarios"}
