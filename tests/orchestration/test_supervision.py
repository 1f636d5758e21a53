"""Supervision (issue 11, item 1): however `mdiqkd run` ends, no node outlives it, the nodes stop
in order (no traceback in any log), and both key stores hold the same keys.

Each test runs the real command with its four node processes on 127.0.0.1 and stops it the way
an operator or the system would: SIGTERM, SIGHUP, SIGKILL to the command, Ctrl-C to its process
group; and a node that fails because its disk is full.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodes.keystore import KeyStore
from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.run import RunFailed, execute, new_run_dir, prepare_run_dir
from tests.short_rounds import write_short_round_scenario

pytestmark = pytest.mark.slow

#: The run is long enough (100 short rounds, tests/short_rounds.py: a minute) that every stop
#: lands mid-run.
ROUNDS = 100
#: The acceptance bound: every node is gone this long after the command was stopped.
NODES_GONE_S = 5.0


def _start(out: Path, *, new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "run",
         str(write_short_round_scenario(out.parent)), "--rounds", str(ROUNDS), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        start_new_session=new_session)


def _node_pids(run_dir: Path) -> list[int]:
    """PIDs of the node processes of this run (their command line names the run directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"orchestration.node_main" in argv and str(run_dir).encode() in argv:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":  # a zombie has stopped; only its parent's wait is missing
                pids.append(int(entry.name))
    return pids


def _wait_for_first_key(run_dir: Path, proc: subprocess.Popen[str]) -> None:
    """Until Alice has logged two rounds (the run is under way, keys are being committed, and
    the kernels the rounds need are loaded)."""
    log = run_dir / "alice" / "rounds.jsonl"
    deadline = time.monotonic() + 240
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "no round within 240 s"
        time.sleep(0.2)
    time.sleep(1.0)  # into the next round's distillation


def _wait_nodes_gone(run_dir: Path, since: float) -> float:
    while _node_pids(run_dir):
        assert time.monotonic() - since < NODES_GONE_S, (
            f"node processes still alive {NODES_GONE_S} s after the stop: {_node_pids(run_dir)}")
        time.sleep(0.05)
    return time.monotonic() - since


def _stores(run_dir: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    out = []
    for user in ("alice", "bob"):
        store = KeyStore(run_dir / user / "keys.sqlite")
        try:
            out.append({key_id: bits.tolist() for key_id, _, bits in store.items()})
        finally:
            store.close()
    return out[0], out[1]


def _assert_orderly(run_dir: Path) -> None:
    for log in (run_dir / "logs").iterdir():
        text = log.read_text()
        assert f"{log.stem}: stopped by SIG" in text, f"{log.name}:\n{text}"
        assert "Traceback" not in text and ": failed" not in text, f"{log.name}:\n{text}"
        assert "did not stop within" not in text, f"{log.name}:\n{text}"
    alice, bob = _stores(run_dir)
    assert alice == bob, "the key stores differ after the stop"
    assert alice, "the run was stopped after its first rounds: keys were committed"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_to_the_command_stops_every_node_in_order(tmp_path, signum):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for_first_key(run_dir, proc)
    stopped = time.monotonic()
    proc.send_signal(signum)
    _wait_nodes_gone(run_dir, stopped)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    _assert_orderly(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["interrupted_by"] == signum.name
    assert 1 <= summary["rounds"] < ROUNDS and summary["keys_match"] is True
    assert summary["secure_bits"] == sum(len(b) for b in _stores(run_dir)[0].values())
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted ({signum.name}): the nodes stopped in order")


def test_ctrl_c_to_the_process_group_stops_in_order_with_one_line(tmp_path):
    """Ctrl-C reaches the command and its four nodes at once (one process group)."""
    run_dir = tmp_path / "run"
    proc = _start(run_dir, new_session=True)
    _wait_for_first_key(run_dir, proc)
    stopped = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _wait_nodes_gone(run_dir, stopped)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    _assert_orderly(run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["interrupted_by"] == "SIGINT"


def test_no_node_outlives_a_killed_command(tmp_path):
    """SIGKILL cannot be handled: the nodes notice their parent is gone and stop in order."""
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for_first_key(run_dir, proc)
    assert len(_node_pids(run_dir)) == 4
    stopped = time.monotonic()
    proc.kill()
    proc.wait()
    _wait_nodes_gone(run_dir, stopped)
    _assert_orderly(run_dir)
    assert not (run_dir / "summary.json").exists()  # nobody was left to write it


def test_a_node_that_fails_on_a_full_disk_is_named_with_the_cause(tmp_path):
    """Alice's round log and her log file are on a full disk (/dev/full: every write fails with
    ENOSPC): the run names her and the error, read from her output, not from her log file."""
    scenario = load_scenario(DEFAULT_SCENARIO, {"round_frames": 256, "rounds": 1})
    run_dir = prepare_run_dir(scenario, tmp_path / "full")
    (run_dir / "alice" / "rounds.jsonl").symlink_to("/dev/full")
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "alice.log").symlink_to("/dev/full")
    with pytest.raises(RunFailed) as failure:
        execute(scenario, run_dir, timeout_s=240)
    first = str(failure.value).splitlines()[0]
    assert first.startswith("node alice exited with code 1: ")
    assert "No space left on device" in first


def test_default_run_directories_are_unique_within_a_second(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261203-120000")
    made = [new_run_dir(tmp_path / "runs") for _ in range(3)]
    assert [p.name for p in made] == ["20261203-120000", "20261203-120000-2",
                                      "20261203-120000-3"]
    assert all(p.is_dir() for p in made)
