"""A game day against a cheating relay, end to end: `mdiqkd run gameday_malicious_relay` (four
processes) with Charles's software faking announcements for 0.6 s, then his optics intercepting
and resending until a clear_faults action. What security demands, and nothing hard-coded: the
rounds the relay touched abort (the reason is in the journal's probe and in rounds.jsonl), no
stored key differs between the users or comes from an attacked round, and keys flow before and
after; each fault ends where its duration or the action ends it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import load_scenario, shipped_scenarios
from orchestration.secrets import read_node_secrets

runner = CliRunner()


@pytest.fixture(scope="module")
def relay_day(tmp_path_factory):
    out = tmp_path_factory.mktemp("relay-day") / "run"
    result = runner.invoke(app, ["run", "gameday_malicious_relay", "--out", str(out),
                                 "--json", "--fingerprint"])
    return result, out


@pytest.mark.slow  # four processes, four rounds of 1000 frames: 35 to 55 s on two cores
def test_the_rounds_the_relay_touched_abort_and_no_key_is_wrong_or_unpaid(relay_day):
    result, out = relay_day
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["keys_match"] and summary["secure_bits"] > 0
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["aborted"] for r in rounds] == [False, True, True, False]
    for r in rounds[1:3]:
        assert r["abort_reason"].startswith("secure length <= 0"), r
        assert r["secure_bits"] == 0 and r["bob_aborted"]
    assert all(r["secure_bits"] > 0 for r in (rounds[0], rounds[3]))
    journal = json.loads((out / "journal.json").read_text())
    assert (journal["status"], journal["deviated"]) == ("completed", False)
    assert journal["run"]["keys_match"] is True and journal["run"]["mismatched_rounds"] == []
    faults = {s["name"]: s for s in journal["timeline"] if s["kind"] == "fault"}
    assert faults["fake announcements"]["ended_by"] == "duration"
    assert faults["intercept-resend"]["ended_by"] == "action stop eve"
    sc = load_scenario(shipped_scenarios()["gameday_malicious_relay"])
    size = sc.round_slots
    for name, k in (("fake announcements", 1), ("intercept-resend", 2)):
        span = faults[name]  # inside round k, whose record is the aborted one
        assert k * size <= span["start_slot"] < span["stop_slot"] <= (k + 1) * size
    status = {(p["name"], r["segment"]): (r["status"], r["windows"][0]["value"] if r["windows"]
                                          else None)
              for p in journal["hypothesis"]["probes"] for r in p["results"]}
    assert status[("attacks-abort", "fake announcements")] == ("held", 1)
    assert status[("attacks-abort", "intercept-resend")] == ("held", 1)
    assert status[("no-attacked-key", "fake announcements")] == ("held", 0)
    assert status[("no-attacked-key", "intercept-resend")] == ("held", 0)
    assert status[("recover", "after")][0] == "held"
    assert journal["rollbacks"][0]["executed"] is True


@pytest.mark.slow
def test_only_charles_is_told_his_software_s_faults_and_only_nature_the_optics(relay_day):
    _, out = relay_day
    charles = read_node_secrets(out, "charles")
    assert [e.name for e in charles.relay_faults] == ["fake announcements"]
    assert charles.relay_seed is not None and charles.fault_timeline == ()
    for user in ("alice", "bob"):
        mine = read_node_secrets(out, user)
        assert mine.relay_faults == () and mine.fault_timeline == ()
    nature = read_node_secrets(out, "nature")
    assert [e.name for e in nature.fault_timeline] == ["fake announcements",
                                                       "intercept-resend", "stop eve"]
    assert nature.relay_faults == ()
    assert "method" not in json.loads((out / "config.json").read_text())["scenario"]


@pytest.mark.slow  # a second run of the game day
def test_the_relay_game_day_gives_the_same_journal_and_keys_on_every_run(relay_day,
                                                                        tmp_path):
    first, out = relay_day
    again = tmp_path / "again"
    result = runner.invoke(app, ["run", "gameday_malicious_relay", "--out", str(again),
                                 "--json", "--fingerprint"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["determinism_fingerprint"] == json.loads(
        first.stdout)["determinism_fingerprint"]
    ja, jb = (json.loads((d / "journal.json").read_text()) for d in (out, again))
    assert ja.pop("wall_clock") != jb.pop("wall_clock")
    assert ja == jb
    rounds = [[{k: r[k] for k in ("round", "aborted", "abort_reason", "announced", "secure_bits",
                                  "qber_x")}
               for r in map(json.loads, (d / "rounds.jsonl").read_text().splitlines())]
              for d in (out, again)]
    assert rounds[0] == rounds[1]
    from orchestration.run import key_mismatches_by_round

    assert key_mismatches_by_round(out) == key_mismatches_by_round(again) == {0: False,
                                                                             3: False}
