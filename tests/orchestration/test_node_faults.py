"""Faults on node processes (``orchestration.node_faults``): a pause stops the process for its
wall-clock duration once the link reaches it, a kill ends it; a run is refused what it cannot do."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from channel.timeline import Fault
from orchestration.config import load_scenario, shipped_scenarios
from orchestration.node_faults import NodeFaultWatcher
from orchestration.run import execute, prepare_run_dir


def _state(pid: int) -> str:
    """The process's state letter (T: stopped) from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def sleeper():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p
    p.kill()
    p.wait()


def test_a_pause_stops_the_process_when_the_link_reaches_it_and_continues_it(sleeper):
    link = {"now": 0.0}
    fault = Fault("freeze", "pause", "node/bob", {}, 2.0, 2.5)  # 0.5 s of wall clock
    watcher = NodeFaultWatcher([fault], {"bob": sleeper}, lambda: link["now"])
    watcher.start()
    try:
        time.sleep(0.3)
        assert _state(sleeper.pid) != "T"  # the link is not there yet
        link["now"] = 2.0
        deadline = time.monotonic() + 5
        while _state(sleeper.pid) != "T":
            assert time.monotonic() < deadline, "not paused"
            time.sleep(0.01)
        paused_at = time.monotonic()
        while _state(sleeper.pid) == "T":
            assert time.monotonic() < deadline, "not continued"
            time.sleep(0.01)
        assert time.monotonic() - paused_at >= 0.45  # its duration, on the wall clock
    finally:
        watcher.stop()
    assert [d["action"] for d in watcher.done] == ["paused", "continued"]


def test_stopping_the_watch_continues_a_paused_process(sleeper):
    fault = Fault("freeze", "pause", "node/bob", {}, 0.0, 3600.0)
    watcher = NodeFaultWatcher([fault], {"bob": sleeper}, lambda: 0.0)
    watcher.start()
    deadline = time.monotonic() + 5
    while _state(sleeper.pid) != "T":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    watcher.stop()
    assert _state(sleeper.pid) != "T"


def test_a_kill_ends_the_process(sleeper):
    watcher = NodeFaultWatcher([Fault("down", "kill", "node/alice", {}, 1.0, float("inf"))],
                               {"alice": sleeper}, lambda: 1.5)
    watcher.start()
    assert sleeper.wait(timeout=5) == -9
    watcher.stop()


@pytest.mark.parametrize(("entry", "needle"), [
    ({"at": "1s", "name": "down", "duration": "1s",
      "fault": {"type": "kill", "target": "node/bob"}}, "set runtime.restart: true"),
    ({"at": "1s", "name": "freeze", "fault": {"type": "pause", "target": "node/bob"}},
     "a pause needs a duration"),
])
def test_what_a_run_cannot_do_to_a_node_is_refused(entry, needle):
    from orchestration.run import implemented_actions, implemented_faults

    scenario = load_scenario(shipped_scenarios()["gameday_fiber_cut"], {"method": [entry]})
    refused = scenario.refused_game_day_parts(implemented_faults(), implemented_actions())
    assert len(refused) == 1 and needle in refused[0]


@pytest.mark.slow  # a real game day of three rounds, about 40 s
def test_a_paused_user_delays_the_run_and_costs_no_key(tmp_path):
    data = yaml.safe_load(shipped_scenarios()["gameday_fiber_cut"].read_text())
    data["method"] = [{"at": "1.2s", "name": "bob frozen", "duration": "3s",
                       "fault": {"type": "pause", "target": "node/bob"}}]
    data["steady_state"]["probes"] = [
        {"name": "no-mismatch", "metric": "key_mismatches", "tolerance": 0}]
    path = tmp_path / "pause.yaml"
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    summary = execute(scenario, run_dir)
    done = json.loads((run_dir / "orchestrator" / "node_faults.json").read_text())["done"]
    assert [d["action"] for d in done] == ["paused", "continued"]
    assert done[1]["unix"] - done[0]["unix"] >= 2.9  # three wall-clock seconds, stopped
    assert summary["aborted"] == 0 and summary["keys_match"] is True  # peers waited for Bob
