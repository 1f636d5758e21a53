"""`mdiqkd run` of a game day: runtime into rounds, journal.json, the verdict's exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestration.cli import HYPOTHESIS_FAILED, app
from orchestration.config import (
    DEFAULT_SCENARIO,
    MAX_ROUNDS,
    ScenarioError,
    load_scenario,
    rounds_for_duration,
)
from orchestration.run import prepare_run_dir
from tests.orchestration.reportcheck import check_report

runner = CliRunner()
QUICK = load_scenario(DEFAULT_SCENARIO)
SPR = QUICK.emulated_seconds_per_round  # 3.145728 s


@pytest.mark.parametrize(("duration", "rounds"), [
    (1e-3, 1), (SPR, 1), (SPR * (1 + 1e-12), 1), (SPR * 1.01, 2), (6.0, 2), (60.0, 20)])
def test_a_duration_is_rounded_up_to_whole_rounds(duration, rounds):
    assert rounds_for_duration(duration, SPR) == rounds
    sc = load_scenario(DEFAULT_SCENARIO, {"runtime": {"duration": duration}})
    assert sc.run_rounds == rounds and sc.for_run().rounds == rounds


def test_runtime_rounds_take_the_place_of_rounds_and_reach_the_nodes(tmp_path):
    sc = load_scenario(DEFAULT_SCENARIO, {"runtime": {"rounds": 5}})
    assert (sc.rounds, sc.run_rounds) == (3, 5)
    run_dir = prepare_run_dir(sc, tmp_path / "run")
    assert json.loads((run_dir / "config.json").read_text())["scenario"]["rounds"] == 5
    assert load_scenario(DEFAULT_SCENARIO).run_rounds == 3


def test_a_duration_of_more_rounds_than_the_bound_is_refused_naming_it(tmp_path):
    data = {**yaml.safe_load(DEFAULT_SCENARIO.read_text()), "round_frames": 1, "frame_bits": 10,
            "runtime": {"duration": "1000000s"}}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ScenarioError, match=r"long\.yaml:\d+: runtime\.duration: 1e\+06 s is "
                       rf"976562500000 rounds of 1\.024e-06 s, above the bound {MAX_ROUNDS} "):
        load_scenario(path)


def test_rounds_on_the_command_line_do_not_silently_replace_a_runtime(tmp_path):
    result = runner.invoke(app, ["run", "gameday_baseline", "--rounds", "1", "--out",
                                 str(tmp_path / "run")])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "--rounds: gameday_baseline sets its length in runtime.duration" in line
    assert not (tmp_path / "run").exists()


def test_validate_warns_of_a_probe_no_run_can_measure_yet(tmp_path):
    data = yaml.safe_load(DEFAULT_SCENARIO.read_text())
    data["steady_state"] = {"title": "t", "probes": [
        {"name": "cr", "metric": "coincidence_rate_hz", "tolerance": {"min": 1}},
        {"name": "cr-1s", "metric": "coincidence_rate_hz", "tolerance": {"min": 1},
         "window": "1s"}]}
    path = tmp_path / "cr.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["scenario", "validate", str(path)])
    assert result.exit_code == 0 and result.stdout.strip() == f"{path}: ok"
    (warning,) = result.stderr.splitlines()
    assert "probes.1.metric: 'cr-1s': coincidence_rate_hz is a run total only" in warning


# --- end to end: the real command, twice ------------------------------------------------------

#: A quick game day: two short rounds (each aborts: too few counts for a positive length), a
#: hypothesis with a probe that cannot hold (the X basis errs ~30 % of the time).
SMALL = {"round_frames": 256, "runtime": {"rounds": 2}, "steady_state": {
    "title": "quick", "probes": [
        {"name": "x-perfect", "metric": "qber_x", "tolerance": [0, 0], "window": "0.25s"},
        {"name": "no-mismatch", "metric": "key_mismatches", "tolerance": 0},
        {"name": "bsm", "metric": "bsm_rate_hz", "tolerance": {"min": 1}}]}}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gameday")
    data = {**yaml.safe_load(DEFAULT_SCENARIO.read_text()), **SMALL}
    path = tmp / "quick.yaml"
    path.write_text(yaml.safe_dump(data))
    runs = []
    for name in ("a", "b"):
        out = tmp / name
        args = ["run", str(path), "--out", str(out)] + (["--json"] if name == "b" else [])
        runs.append((runner.invoke(app, args), out))
    return runs


@pytest.mark.slow  # two real runs, about 30 s together
def test_a_probe_that_cannot_hold_fails_the_run_with_status_3_naming_it(two_runs):
    result, out = two_runs[0]
    assert result.exit_code == HYPOTHESIS_FAILED == 3, result.output
    deviated = [x for x in result.stderr.splitlines() if x.startswith("deviated: ")]
    assert deviated and all("probe x-perfect (qber_x) before: 0.3" in x for x in deviated)
    assert "above the max 0" in deviated[0]
    assert "steady-state hypothesis: quick — DEVIATED" in result.stdout
    assert "✗ deviated" in result.stdout and "✓ held" in result.stdout
    assert f"report: {out / 'report.html'}" in result.stdout
    check_report(out)
    journal = json.loads((out / "journal.json").read_text())
    assert journal["status"] == "completed" and journal["deviated"] is True
    probes = {p["name"]: p["results"][0] for p in journal["hypothesis"]["probes"]}
    assert probes["x-perfect"]["status"] == "deviated"
    assert [w["rounds"] for w in probes["x-perfect"]["windows"]] == [[0], [0, 1], [1]]
    assert probes["no-mismatch"]["status"] == probes["bsm"]["status"] == "held"
    assert journal["run"]["rounds_recorded"] == 2 and journal["timeline"] == []


@pytest.mark.slow
def test_the_journal_is_the_same_on_every_run_but_for_its_wall_clock(two_runs):
    (first, a), (second, b) = two_runs
    ja, jb = (json.loads((d / "journal.json").read_text()) for d in (a, b))
    assert ja.pop("wall_clock") != jb.pop("wall_clock")
    assert ja == jb
    assert second.exit_code == 3
    assert json.loads(second.stdout)["journal"]["deviated"] is True


def test_every_run_gets_a_journal_even_without_a_hypothesis(tmp_path: Path):
    from orchestration.run import write_journal

    journal = write_journal(QUICK, tmp_path, "failed", [], {"wall_seconds": 0.0})
    assert journal["deviated"] is False and journal["hypothesis"]["probes"] == []
    assert journal["run"]["mismatched_rounds"] is None
    assert json.loads((tmp_path / "journal.json").read_text()) == journal


def test_fail_fast_stops_the_run_in_order_at_the_first_settled_deviation(tmp_path):
    data = {**yaml.safe_load(DEFAULT_SCENARIO.read_text()), "round_frames": 256,
            "runtime": {"rounds": 6, "fail_fast": True},
            "steady_state": {"title": "no aborts", "probes": [
                {"name": "no-aborts", "metric": "aborted_rounds", "tolerance": 0,
                 "window": "0.25s"}]}}
    path = tmp_path / "ff.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 3, result.output
    # round 0 (aborted) fills the window [0, 0.25) s: its completion settles the deviation, and
    # the journal judges that round only, wherever the watcher noticed it
    assert "deviated: probe no-aborts (aborted_rounds) before: 1 in [0, 0.25) s, 1 above the " \
        "max 0" in result.stderr, result.stderr
    assert "runtime.fail_fast: stopped at round 0; the verdict judges 1 of 6 rounds" \
        in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted_by"] == "fail_fast" and summary["rounds"] < 6
    journal = json.loads((out / "journal.json").read_text())
    assert (journal["status"], journal["interrupted_by"]) == ("interrupted", "fail_fast")
    assert journal["deviated"] is True
    assert (journal["run"]["rounds_recorded"], journal["run"]["fail_fast_round"]) == (1, 0)
    report = check_report(out)  # a real run's report, also of a run stopped early
    assert "runtime.fail_fast stopped the run at round 0" in " ".join(report.text)


@pytest.mark.slow  # a real run with a fault, about 45 s
def test_a_fiber_cut_shows_in_the_phase_of_its_fault_and_nowhere_else(tmp_path):
    """Three rounds of 0.27 s; Bob's fiber is cut from 0.3 s to 0.5 s (in round 1)."""
    data = {**yaml.safe_load(DEFAULT_SCENARIO.read_text()), "round_frames": 256,
            "runtime": {"duration": "0.8s"},
            "steady_state": {"title": "Bell-state measurements keep coming", "probes": [
                {"name": "bsm-rate", "metric": "bsm_rate_hz", "tolerance": {"min": 5e5}},
                {"name": "recover", "metric": "time_to_recover_s", "tolerance": {"max": 0.5}},
                {"name": "no-mismatch", "metric": "key_mismatches", "tolerance": 0}]},
            "method": [{"at": "0.3s", "name": "cut", "duration": "0.2s",
                        "fault": {"type": "fiber_cut", "target": "link/bob-charles"}}],
            "rollbacks": [{"name": "clear", "action": {"type": "clear_faults"}}]}
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 3, result.output
    assert "deviated: probe bsm-rate (bsm_rate_hz) during cut: " in result.stderr
    journal = json.loads((tmp_path / "run" / "journal.json").read_text())
    status = {(p["name"], r["phase"]): r["status"] for p in journal["hypothesis"]["probes"]
              for r in p["results"]}
    assert status[("bsm-rate", "before")] == status[("bsm-rate", "after")] == "held"
    assert status[("bsm-rate", "during")] == "deviated"
    assert status[("recover", "after")] == "held"
    assert {s for (name, _), s in status.items() if name == "no-mismatch"} == {"held"}
    (cut,) = journal["timeline"]  # on the frames (2^20 slots) that start in [0.3, 0.5) s
    assert (cut["at_s"], cut["start_slot"], cut["stop_slot"], cut["ended_by"]) == (
        0.3, 287 << 20, 477 << 20, "duration")
    assert journal["rollbacks"][0]["executed"] is True
    check_report(tmp_path / "run")  # the cut shaded on every plot, the verdict in the table


# --- the orchestrator's part, with a launcher that starts no process ---------------------------


class ScriptedLauncher:
    """Plays a run: each poll, Alice records the next of ``records`` (a small-round record
    whose aborted flag is given), then every node exits with ``exit_code``. ``pace``: "step"
    (one round per poll), "burst" (every round at the first poll, as a watcher that looks late
    sees them), "done" (every round at the first poll, and the nodes have exited)."""

    def __init__(self, records, exit_code=0, pace="step"):
        self.records, self.exit_code, self.stopped_after = list(records), exit_code, None
        self.run_dir, self.pace = None, pace

    def start(self, run_dir):
        self.run_dir = run_dir
        (run_dir / "alice").mkdir(exist_ok=True)

    def poll(self):
        path = self.run_dir / "alice" / "rounds.jsonl"
        done = len(path.read_text().splitlines()) if path.exists() else 0
        if done < len(self.records):
            with path.open("a") as f:
                for record in self.records[done:done + 1 if self.pace == "step" else None]:
                    f.write(json.dumps(record) + "\n")
            if self.pace != "done":
                return dict.fromkeys(("alice", "bob", "charles", "nature"))
        return dict.fromkeys(("alice", "bob", "charles", "nature"), self.exit_code)

    def stop(self, grace_s=5.0):
        if self.stopped_after is None and self.run_dir is not None:
            path = self.run_dir / "alice" / "rounds.jsonl"
            self.stopped_after = len(path.read_text().splitlines()) if path.exists() else 0

    def cause(self, name):
        return "scripted failure"


def _record(k, slots, aborted):
    return {"round": k, "start_slot": k * slots, "stop_slot": (k + 1) * slots,
            "emulated_seconds": slots / 1e9, "announced": 1000, "aborted": aborted,
            "abort_reason": "too few counts: scripted" if aborted else None,
            "secure_bits": 0 if aborted else 10, "qber_x": 0.3, "x_bits": 10}


def _scripted(tmp_path, fail_fast, aborted, exit_code=0, pace="step"):
    from orchestration.run import execute

    sc = load_scenario(DEFAULT_SCENARIO, {
        "round_frames": 256, "runtime": {"rounds": len(aborted), "fail_fast": fail_fast},
        "steady_state": {"title": "t", "probes": [
            {"name": "no-aborts", "metric": "aborted_rounds", "tolerance": 0,
             "window": "0.2s"}]},
        "rollbacks": [{"name": "clear", "action": {"type": "clear_faults"}}]})
    run_dir = prepare_run_dir(sc, tmp_path / "run")
    launcher = ScriptedLauncher([_record(k, sc.round_slots, a) for k, a in enumerate(aborted)],
                                exit_code, pace)
    return execute(sc, run_dir, launcher=launcher), launcher, run_dir


def test_fail_fast_stops_at_the_first_settled_deviation_and_not_before(tmp_path):
    summary, launcher, run_dir = _scripted(tmp_path, True, [False, False, True, False, False])
    assert launcher.stopped_after == 3  # the window [0.4, 0.6) s holds round 2 once it ended
    assert summary["interrupted_by"] == "fail_fast" and summary["rounds"] == 3
    journal = json.loads((run_dir / "journal.json").read_text())
    assert (journal["status"], journal["deviated"]) == ("interrupted", True)


def test_without_fail_fast_the_run_goes_to_its_end_and_the_journal_says_completed(tmp_path):
    summary, launcher, run_dir = _scripted(tmp_path, False, [False, True, False])
    assert summary["rounds"] == 3 and not summary["interrupted"]
    journal = json.loads((run_dir / "journal.json").read_text())
    assert (journal["status"], journal["deviated"], journal["interrupted_by"]) == (
        "completed", True, None)


def test_a_failed_run_still_writes_its_journal(tmp_path):
    from orchestration.run import RunFailed

    with pytest.raises(RunFailed, match="scripted failure"):
        _scripted(tmp_path, False, [False], exit_code=1)
    journal = json.loads((tmp_path / "run" / "journal.json").read_text())
    assert journal["status"] == "failed" and journal["run"]["rounds_recorded"] == 1
    assert "The run FAILED" in " ".join(check_report(tmp_path / "run").text)


def test_fail_fast_on_the_last_round_lets_the_run_complete(tmp_path):
    """Round 2, the last, fills the window [0.4, 0.6) s with an aborted round: the run is over,
    so it completes (rollbacks run) and the deviation is in its verdict."""
    summary, launcher, run_dir = _scripted(tmp_path, True, [False, False, True])
    assert not summary["interrupted"] and summary["rounds"] == 3
    journal = json.loads((run_dir / "journal.json").read_text())
    assert (journal["status"], journal["deviated"], journal["interrupted_by"]) == (
        "completed", True, None)
    assert journal["rollbacks"][0]["executed"] is True
    assert journal["run"]["fail_fast_round"] is None


@pytest.mark.parametrize("pace", ["burst", "done"])
def test_a_fail_fast_journal_is_the_same_however_late_the_watcher_looks(tmp_path, pace):
    """Round 2's completion settles the deviation: the journal judges rounds 0 to 2, whether
    the watcher saw the rounds one by one, all at once, or only once the nodes were done."""
    aborted = [False, False, True, False, False]
    journals = []
    for how in ("step", pace):
        _, _, run_dir = _scripted(tmp_path / how, True, aborted, pace=how)
        journal = json.loads((run_dir / "journal.json").read_text())
        journal.pop("wall_clock")
        journals.append(journal)
    assert journals[0] == journals[1]
    assert (journals[0]["status"], journals[0]["interrupted_by"]) == ("interrupted", "fail_fast")
    assert (journals[0]["run"]["rounds_recorded"], journals[0]["run"]["fail_fast_round"]) == (
        3, 2)


def _journal_of(tmp_path, status, records, **overrides):
    from orchestration.run import write_journal

    sc = load_scenario(DEFAULT_SCENARIO, overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    return sc, write_journal(sc, tmp_path, status, records(sc), {"wall_seconds": 0.0})


def test_a_stopped_run_s_timeline_ends_where_it_stopped(tmp_path):
    """Stopped after round 0 (at 3.145728 s) of 7: the fault active then ends there, the
    fault planned at 8 s is never reached."""
    loss = {"type": "loss", "params": {"extra_db": 3}}
    sc, journal = _journal_of(tmp_path, "interrupted",
                              lambda sc: [_record(0, sc.round_slots, False)],
                              runtime={"rounds": 7}, method=[
                                  {"at": "2s", "name": "early", "duration": "5s",
                                   "fault": {**loss, "target": "link/bob-charles"}},
                                  {"at": "8s", "name": "late",
                                   "fault": {**loss, "target": "link/alice-charles"}}])
    stop = sc.round_slots
    assert [(s["ended_by"], s["reached"]) for s in journal["timeline"]] == [
        ("run stopped", True), ("run stopped", False)]
    early, late = ({k: s[k] for k in ("start_slot", "stop_slot", "ended_by", "reached")}
                   for s in journal["timeline"])
    assert early == {"start_slot": 1908 << 20, "stop_slot": stop, "ended_by": "run stopped",
                     "reached": True}
    assert late == {"start_slot": stop, "stop_slot": stop, "ended_by": "run stopped",
                    "reached": False}


def test_run_totals_are_no_data_when_their_file_is_missing_or_the_run_stopped(tmp_path):
    probe = {"title": "t", "probes": [
        {"name": "cr", "metric": "coincidence_rate_hz", "tolerance": {"min": 1}}]}
    records = lambda sc: [_record(k, sc.round_slots, False) for k in range(2)]  # noqa: E731
    status = lambda j: j["hypothesis"]["probes"][0]["results"][0]  # noqa: E731
    _, missing = _journal_of(tmp_path / "a", "completed", records, runtime={"rounds": 2},
                             steady_state=probe)
    assert status(missing)["status"] == "no data" and missing["deviated"]
    assert "nature/metrics.json" in status(missing)["note"]
    (tmp_path / "b" / "nature").mkdir(parents=True)
    (tmp_path / "b" / "nature" / "metrics.json").write_text(
        json.dumps({"coincidence_records_total": 1e6}))
    sc, there = _journal_of(tmp_path / "b", "completed", records, runtime={"rounds": 2},
                            steady_state=probe)
    assert status(there)["status"] == "held"
    assert status(there)["windows"][0]["value"] == pytest.approx(
        1e6 / (2 * sc.emulated_seconds_per_round))
    _, stopped = _journal_of(tmp_path / "b", "interrupted", lambda sc: records(sc)[:1],
                             runtime={"rounds": 2}, steady_state=probe)
    assert status(stopped)["status"] == "no data" and "stopped before its end" in \
        status(stopped)["note"]


def test_a_key_mismatch_exits_1_and_still_says_each_deviation(tmp_path, monkeypatch):
    import orchestration.run

    def fake_execute(sc, run_dir, **kwargs):
        journal = {"deviated": True, "hypothesis": {"title": "t", "probes": []},
                   "deviations": [{"message": "probe qz (qber_z) before: 0.2 in [0, 3.146) s, "
                                   "0.17 above the max 0.03"}],
                   "run": {"fail_fast_round": None, "rounds_recorded": 3}}
        (run_dir / "journal.json").write_text(json.dumps(journal))
        return {"rounds": 3, "aborted": 0, "secure_bits": 0, "key_rate_bps_emulated": 0.0,
                "keys_match": False, "emulated_seconds": 9.4, "wall_seconds": 1.0,
                "realtime_factor": 9.4, "realtime_factor_rounds": 9.4, "abort_reasons": [],
                "qber": {"Z": 0.2, "X": 0.3}, "interrupted": False}

    monkeypatch.setattr(orchestration.run, "execute", fake_execute)
    result = runner.invoke(app, ["run", "quickstart", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "deviated: probe qz (qber_z) before: 0.2 in [0, 3.146) s" in result.stderr
    assert "the users' stored keys differ" in result.stderr


def test_the_run_honours_exactly_the_faults_the_emulator_injects():
    from orchestration.experiment import IMPLEMENTED_FAULTS
    from orchestration.run import implemented_actions, implemented_faults

    assert implemented_faults() == IMPLEMENTED_FAULTS and "fiber_cut" in implemented_faults()
    assert implemented_actions() == {"clear_faults", "calibrate"}


@pytest.mark.slow  # two real runs of the shipped fiber-cut game day, about 20 s each
def test_a_game_day_with_a_fault_gives_the_same_journal_and_keys_on_every_run(tmp_path):
    from orchestration.config import build_fault_schedule, shipped_scenarios

    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = runner.invoke(app, ["run", "gameday_fiber_cut", "--out", str(out),
                                     "--fingerprint", "--json"])
        assert result.exit_code == 0, result.output
        runs.append((json.loads(result.stdout), json.loads((out / "journal.json").read_text())))
    (sa, ja), (sb, jb) = runs
    assert sa["determinism_fingerprint"] == sb["determinism_fingerprint"]
    assert sa["secure_bits"] > 0 and sa["aborted"] == 1  # the round of the cut aborts
    assert ja.pop("wall_clock") != jb.pop("wall_clock")
    assert ja == jb
    sc = load_scenario(shipped_scenarios()["gameday_fiber_cut"])
    schedule = build_fault_schedule(sc, 0)
    first, stop = schedule.frames_of(schedule.faults[0], sc.clock_rate_hz, sc.frame_bits)
    (cut,) = ja["timeline"]
    assert (cut["start_slot"], cut["stop_slot"]) == (first << sc.frame_bits,
                                                     stop << sc.frame_bits)
    status = {(p["name"], r["segment"]): r["status"] for p in ja["hypothesis"]["probes"]
              for r in p["results"]}
    assert status[("no-mismatch", "cut")] == status[("recover", "after")] == "held"
    assert (ja["status"], ja["deviated"]) == ("completed", False)


@pytest.mark.parametrize("calibration, loop, refusal", [
    (None, "polarization", "the polarization loop does not run in this scenario"),
    ({"polarization": True, "clock": False}, "clock", "the clock loop does not run"),
    ({"polarization": True}, "intensity", "the intensity monitor checks every round by itself"),
])
def test_a_calibrate_action_needs_a_loop_that_runs(tmp_path, calibration, loop, refusal):
    data = yaml.safe_load(DEFAULT_SCENARIO.read_text())
    if calibration is not None:
        data["calibration"] = calibration
    data["method"] = [{"at": "1s", "name": "tune", "action": {"type": "calibrate",
                                                             "params": {"loop": loop}}}]
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"method.0.action.params.loop: {refusal}" in result.stderr
    assert not (tmp_path / "run").exists()
