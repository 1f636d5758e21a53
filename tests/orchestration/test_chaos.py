"""The Chaos Toolkit extension (``orchestration.chaos``) against a live emulation: the real
``chaos run`` of the shipped example experiment drives a running game day through its control
plane, and both journals say what happened."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from importlib import resources

import pytest
import yaml

from orchestration import chaos
from orchestration.config import load_scenario, shipped_scenarios
from orchestration.control import ControlError
from orchestration.run import execute, prepare_run_dir

EXPERIMENT = resources.files("scenarios") / "chaos" / "loss_experiment.json"


def test_the_example_experiment_is_package_data_and_names_only_real_functions():
    experiment = json.loads(EXPERIMENT.read_text())
    steps = [*experiment["steady-state-hypothesis"]["probes"], *experiment["method"],
             *experiment["rollbacks"]]
    for step in steps:
        provider = step["provider"]
        assert provider["module"] == "orchestration.chaos"
        assert provider["func"] in chaos.__all__, provider["func"]
    metrics = {s["provider"]["arguments"]["name"] for s in steps
               if s["provider"]["func"] == "metric"}
    assert metrics <= set(chaos.METRICS)


def test_probes_refuse_an_unknown_metric_and_a_run_without_a_control_plane(tmp_path):
    with pytest.raises(ValueError, match="unknown metric 'qber'"):
        chaos.metric(str(tmp_path), "qber")
    with pytest.raises(ControlError, match="control.json does not exist"):
        chaos.metric(str(tmp_path), "qber_z")


def test_a_qber_probe_reads_the_last_round_that_measured_it_and_fails_before_any(tmp_path,
                                                                                monkeypatch):
    """A round that aborts before its estimate measures no error rate: the probe reads the
    latest round that did, and, while none has, fails (an exception Chaos Toolkit records as a
    failed probe) instead of returning None, which no tolerance can be checked against."""
    from orchestration import control

    scenario = load_scenario(shipped_scenarios()["gameday_fiber_cut"])
    rows = [{"round": 0, "stop_slot": 10, "qber_z": 0.004, "qber_x": 0.3, "secure_bits": 5},
            {"round": 1, "stop_slot": 20, "qber_z": None, "aborted": True, "secure_bits": 0}]
    seen: list = []
    monkeypatch.setattr(control, "read_rounds", lambda _dir: seen)
    monkeypatch.setattr(chaos, "_client", lambda _dir: type("C", (), {"call": staticmethod(
        lambda method, path, body=None: control.status(tmp_path, scenario, None))})())
    with pytest.raises(ValueError, match="no round has measured qber_z yet"):
        chaos.metric(str(tmp_path), "qber_z")
    seen.extend(rows)
    assert chaos.metric(str(tmp_path), "qber_z") == 0.004  # round 1 aborted unmeasured
    assert chaos.metric(str(tmp_path), "qber_x") == 0.3
    assert control.status(tmp_path, scenario, None)["last_measured"]["qber_z"] == {
        "round": 0, "value": 0.004}


@pytest.mark.slow  # a real game day and a real `chaos run`, about a minute
def test_chaos_run_of_the_example_experiment_passes_against_a_live_emulation(tmp_path):
    chaos_bin = shutil.which("chaos") or os.path.join(os.path.dirname(sys.executable), "chaos")
    assert os.path.exists(chaos_bin), "chaostoolkit is in the test extras: `chaos` must exist"
    data = yaml.safe_load(shipped_scenarios()["gameday_fiber_cut"].read_text())
    for k in ("method", "rollbacks"):
        data.pop(k)
    data["runtime"] = {"rounds": 10, "pacing": "realtime"}
    data["steady_state"]["probes"] = [
        {"name": "no-mismatch", "metric": "key_mismatches", "tolerance": 0}]
    path = tmp_path / "day.yaml"
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(summary=execute(scenario, run_dir)))
    worker.start()
    deadline = time.monotonic() + 180
    while not (run_dir / "orchestrator" / "control.json").exists():
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.1)
    work = tmp_path / "chaos"
    work.mkdir()
    result = subprocess.run(
        [chaos_bin, "--no-version-check", "run", "--journal-path", str(work / "journal.json"),
         str(EXPERIMENT)], cwd=work, env={**os.environ, "MDIQKD_RUN_DIR": str(run_dir)},
        capture_output=True, text=True, timeout=300)
    worker.join(timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    journal = json.loads((work / "journal.json").read_text())
    assert journal["status"] == "completed" and journal["deviated"] is False
    before = journal["steady_states"]["before"]
    assert before["steady_state_met"] is True
    assert journal["steady_states"]["after"]["steady_state_met"] is True
    (inject, listed) = journal["run"]
    assert inject["status"] == "succeeded" and inject["output"]["name"] == "chaos splice"
    assert "chaos splice" in listed["output"]  # active where the link has reached
    assert journal["rollbacks"][0]["status"] == "succeeded"
    # the emulation's own journal has the fault, at the time it took effect
    ours = json.loads((run_dir / "journal.json").read_text())
    (live,) = ours["live"]
    assert live["name"] == "chaos splice" and live["params"] == {"extra_db": 3}
    assert live["start_s"] == inject["output"]["start_s"]
    assert out["summary"]["keys_match"] is True
