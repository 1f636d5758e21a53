"""The live control plane (``orchestration.control``): the API refuses what it cannot do, with
the reason, and a running game day takes a fault injected and cleared through it, at the emulated
times it reports, into its journal and verdict."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import load_scenario, shipped_scenarios
from orchestration.control import ControlClient, ControlError, ControlServer, LiveFaults
from orchestration.edge import EdgeBook
from orchestration.run import execute, prepare_run_dir

runner = CliRunner()
FIBER_CUT = shipped_scenarios()["gameday_fiber_cut"]


@pytest.fixture
def server(tmp_path):
    """A control server over a scenario with classical proxies but no channel emulator."""
    scenario = load_scenario(FIBER_CUT)
    book = EdgeBook()
    book.latest_round = 1
    live = LiveFaults(scenario, book, None)
    srv = ControlServer(tmp_path, scenario, live)
    srv.start(tmp_path / "orchestrator")
    yield tmp_path, live, book
    srv.stop(tmp_path / "orchestrator")


def _inject(run_dir: Path, **body):
    return ControlClient(run_dir).call("POST", "/faults", body)


def test_a_classical_fault_starts_at_the_round_after_the_latest_seen(server):
    run_dir, live, book = server
    record = _inject(run_dir, target="classical/alice-bob", type="latency",
                     params={"latency_ms": 20}, duration_s=1.0, name="slow")
    round_s = live.round_s
    assert record["start_s"] == pytest.approx(2 * round_s)  # round 1 seen: from round 2
    (fault,) = book.faults
    assert (fault.name, fault.first_round, fault.stop_round) == ("slow", 2, 3)
    assert [e.name for e in live.method()][-1] == "slow"
    ended = ControlClient(run_dir).call("POST", "/faults/clear", {"name": "slow"})["ended"]
    assert ended == [{"name": "slow", "end_s": pytest.approx(2 * round_s)}]
    assert book.faults[0].stop_round == 2  # nothing of it is left


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"target": "link/bob-charles", "type": "los", "params": {}}, 400, "did you mean 'loss'"),
    ({"target": "link/bob-charles", "type": "loss", "params": {"extra_db": -3}}, 400,
     "fault.params.extra_db"),
    ({"target": "relay", "type": "loss", "params": {"extra_db": 3}}, 400,
     "does not apply to 'relay'"),
    ({"target": "keystore/bob", "type": "full"}, 422, "cannot be injected live"),
    ({"target": "link/bob-charles", "type": "fiber_cut"}, 400, "no control socket"),
    ({"target": "link/bob-charles", "type": "fiber_cut", "when": 3}, 400, "unknown field"),
])
def test_what_cannot_be_injected_is_refused_with_the_reason(server, body, status, needle):
    run_dir, live, _ = server
    with pytest.raises(ControlError, match=needle) as e:
        ControlClient(run_dir).call("POST", "/faults", body)
    assert e.value.status == status
    assert live.entries == []


def test_the_api_wants_its_token_and_control_json_is_owner_only(server):
    run_dir, _, _ = server
    path = run_dir / "orchestrator" / "control.json"
    assert path.stat().st_mode & 0o777 == 0o600
    client = ControlClient(run_dir)
    client.token = "wrong"
    with pytest.raises(ControlError, match="token") as e:
        client.call("GET", "/status")
    assert e.value.status == 401


def test_the_cli_says_when_there_is_no_live_run(tmp_path):
    result = runner.invoke(app, ["fault", "list", str(tmp_path)])
    assert result.exit_code == 2
    assert "control.json does not exist: the run has ended" in result.stderr


def test_the_cli_refuses_a_malformed_parameter(server):
    run_dir, _, _ = server
    result = runner.invoke(app, ["fault", "inject", str(run_dir), "classical/alice-bob",
                                 "latency", "latency_ms"])
    assert result.exit_code == 2 and "give parameters as key=value" in result.stderr
    result = runner.invoke(app, ["fault", "inject", str(run_dir), "classical/alice-bob",
                                 "latency", "latency_ms=5", "--duration", "2x"])
    assert result.exit_code == 2 and "--duration" in result.stderr


@pytest.mark.slow  # a real game day of 8 paced rounds, about a minute
def test_a_fault_injected_live_is_applied_from_the_time_it_reports_and_judged(tmp_path):
    data = yaml.safe_load(FIBER_CUT.read_text())
    for k in ("method", "rollbacks"):
        data.pop(k)
    data["runtime"] = {"rounds": 8, "pacing": "realtime"}
    data["steady_state"]["probes"] = [
        {"name": "bsm-rate", "metric": "bsm_rate_hz", "tolerance": {"min": 5e5}},
        {"name": "no-mismatch", "metric": "key_mismatches", "tolerance": 0}]
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(summary=execute(scenario, run_dir)))
    worker.start()
    rounds_log = run_dir / "alice" / "rounds.jsonl"

    def recorded() -> list[dict]:
        return [json.loads(x) for x in rounds_log.read_text().splitlines()] \
            if rounds_log.exists() else []

    deadline = time.monotonic() + 180
    while not recorded():
        assert time.monotonic() < deadline and worker.is_alive(), "no round within 180 s"
        time.sleep(0.1)
    client = ControlClient(run_dir)
    status = client.call("GET", "/status")
    assert status["rounds_done"] >= 1 and status["rounds_planned"] == 8
    cut = client.call("POST", "/faults", {"target": "link/bob-charles", "type": "fiber_cut",
                                          "name": "live cut"})
    start_s = cut["start_s"]
    slot_s = 1 / scenario.clock_rate_hz
    while not any(r["start_slot"] * slot_s >= start_s for r in recorded()):
        assert time.monotonic() < deadline and worker.is_alive(), "no round after the cut"
        time.sleep(0.1)
    listed = client.call("GET", "/faults")["faults"]
    assert [(f["name"], f["source"]) for f in listed] == [("live cut", "live")]
    (ended,) = client.call("POST", "/faults/clear", {"name": "live cut"})["ended"]
    end_s = ended["end_s"]
    worker.join(timeout=300)
    assert "summary" in out
    assert end_s < 8 * scenario.emulated_seconds_per_round, "cleared after the last round"
    rows = recorded()
    inside = [r for r in rows if start_s <= r["start_slot"] * slot_s
              and r["stop_slot"] * slot_s <= end_s]
    outside = [r for r in rows if r["stop_slot"] * slot_s <= start_s
               or r["start_slot"] * slot_s >= end_s]
    assert inside and outside
    # Bob's fiber cut: only Alice's multi-photon pulses still make coincidences (about half the
    # rate, far below); no single-photon yield is left, so every such round aborts
    assert all(r["aborted"] for r in inside) and not any(r["aborted"] for r in outside)
    assert max(r["announced"] for r in inside) < 0.6 * min(r["announced"] for r in outside)
    journal = json.loads((run_dir / "journal.json").read_text())
    assert [x["name"] for x in journal["live"]] == ["live cut"]
    assert journal["live"][0]["start_s"] == start_s and journal["live"][0]["cleared_s"] == end_s
    (span,) = [t for t in journal["timeline"] if t["kind"] == "fault"]
    assert span["name"] == "live cut" and span["start_s"] == pytest.approx(start_s, abs=1e-9)
    assert span["end_s"] == pytest.approx(end_s, abs=1e-9)
    status_of = {(p["name"], r["phase"]): r["status"] for p in journal["hypothesis"]["probes"]
                 for r in p["results"]}
    assert status_of[("bsm-rate", "before")] == "held"
    assert status_of[("bsm-rate", "during")] == "deviated"  # judged like a scenario fault
    assert not (run_dir / "orchestrator" / "control.json").exists()  # gone with the run
    assert out["summary"]["keys_match"] is True
