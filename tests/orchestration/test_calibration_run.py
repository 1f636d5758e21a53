"""The calibration loops in a real run (three processes and nature): Bob's clock steps 150 ps
late, the users' clock loop finds the emission delay that undoes it, both users log the same
search, the journal holds it, and the X-basis error rate comes back to the healthy rounds'.

The run is the shipped calibration game day's link cut to short rounds (0.2 emulated seconds,
asymptotic, HMAC), its clock step alone from 1 s, and the clock loop alone (one coordinate), so
that it takes about half a minute; the polarization loop is checked against the exact model in
tests/nodes/test_calibration.py. Error rates are compared with binomial z-scores against
``tests.stats.z_bound`` (false alarm ``ALPHA``)."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import shipped_scenarios
from tests.stats import z_bound

runner = CliRunner()
OFFSET_PS = 150.0


def _events(path):
    return [{k: v for k, v in json.loads(line).items() if k != "at_unix"}
            for line in path.read_text().splitlines()]


def _x_z(a: dict, b: dict) -> float:
    """z-score of round ``a``'s QBER_X above round ``b``'s (pooled binomial)."""
    p = (a["qber_x"] * a["x_bits"] + b["qber_x"] * b["x_bits"]) / (a["x_bits"] + b["x_bits"])
    return (a["qber_x"] - b["qber_x"]) / math.sqrt(p * (1 - p) * (1 / a["x_bits"] +
                                                                 1 / b["x_bits"]))


def _short_run(tmp_path, name: str, rounds: int, calibration: dict, probes: list,
               fault: dict):
    """The calibration game day's link cut to short rounds (0.2 emulated s, asymptotic, HMAC),
    one fault from 1 s, run by ``mdiqkd run``: the run directory."""
    data = yaml.safe_load(shipped_scenarios()["gameday_calibration"].read_text())
    data.update(round_frames=200, calibration=calibration,
                postprocessing={"mode": "asymptotic", "qber_prior": 0.01},
                authentication={"mode": "hmac"}, runtime={"rounds": rounds, "pacing": "fast"},
                steady_state={"title": name, "probes": probes},
                method=[{"at": "1s", "name": name, "fault": fault}])
    scenario = tmp_path / f"{name.replace(' ', '-')}.yaml"
    scenario.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(scenario), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow  # one real run of 28 short rounds, about 25 s
def test_the_clock_loop_undoes_a_clock_step_in_a_real_run(tmp_path):
    out = _short_run(tmp_path, "clock step", 28, {"polarization": False, "clock": True},
                     [{"name": "acts", "metric": "calibration_actions", "tolerance": {"min": 1},
                       "phases": ["during"]}],
                     {"type": "clock_offset", "target": "source/bob",
                      "params": {"offset_ps": OFFSET_PS}})

    alice, bob = _events(out / "alice" / "calibration.jsonl"), _events(
        out / "bob" / "calibration.jsonl")
    assert alice == bob and bob  # one search, run by both users on the same public error rates
    assert json.loads((out / "journal.json").read_text())["calibration"] == bob
    actions = [e["action"] for e in bob]
    assert actions[0] == "started" and "moved" in actions and "converged" in actions, bob
    assert {e["loop"] for e in bob} == {"search", "clock"}

    # by round (a key settled late adds a second line for its round: the last one counts)
    by_round = {}
    for line in (out / "bob" / "rounds.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_round[record["round"]] = record
    rounds = [by_round[r] for r in sorted(by_round)]
    assert [r["round"] for r in rounds] == list(range(len(rounds)))
    healthy, started = rounds[0], next(e["round"] for e in bob if e["action"] == "started")
    assert _x_z(rounds[started], healthy) > z_bound()  # the step mattered
    # every round after the search converged carries the delay found, which undoes the step to
    # within two of the loop's smallest steps (10 ps): Bob's pulses arrive on time again, and
    # the X-basis error rate is back to the healthy round's (residual ≤ 20 ps lowers the mode
    # overlap by < 1 %: within the noise of 3·10⁴ X bits)
    converged = max(e["round"] for e in bob if e["action"] == "converged")
    after = rounds[converged + 3:]
    assert after, "the search must converge a few rounds before the run's end"
    for r in after:
        assert r["controls"]["bob_delay_ps"] == pytest.approx(-OFFSET_PS, abs=20.0), r["controls"]
        assert abs(_x_z(r, healthy)) <= z_bound(len(after)), (r["round"], r["qber_x"])
    assert all(r["controls"]["bob_rotation_rad"] == [0.0, 0.0, 0.0] for r in rounds)


@pytest.mark.slow  # one real run of 10 short rounds, about 15 s
def test_the_intensity_monitor_flags_a_miscalibrated_decoy_in_a_real_run(tmp_path):
    # Alice's decoy ν emits half its nominal mean photon number from 1 s: every round wholly
    # after that is flagged, naming her ν; no round before it is (false alarm 10⁻⁶ a round)
    out = _short_run(tmp_path, "weak decoy", 10, {"polarization": False, "clock": False},
                     [{"name": "flags", "metric": "calibration_actions",
                       "tolerance": {"min": 1}, "phases": ["during"]},
                      {"name": "quiet", "metric": "calibration_actions", "tolerance": 0,
                       "phases": ["before"]}],
                     {"type": "intensity_miscalibration", "target": "source/alice",
                      "params": {"intensity": "nu", "mean_photon_number_factor": 0.5}})

    alice, bob = _events(out / "alice" / "calibration.jsonl"), _events(
        out / "bob" / "calibration.jsonl")
    assert alice == bob
    round_s = 200 * 2**20 / 1e9
    faulty = {r for r in range(10) if r * round_s >= 1.0}  # rounds wholly after the fault
    flagged = {e["round"] for e in bob}
    assert faulty <= flagged and all(r * round_s + round_s > 1.0 for r in flagged)
    for e in bob:
        assert (e["loop"], e["action"]) == ("intensity", "flagged")
    # with two lit classes the counts fix only the ratio μ/ν of a user's intensities (the arm's
    # transmittance is refitted), so "ν × 0.5" and "μ × 2" are the same finding: Alice's ratio
    # doubled. Each wholly faulty round names Alice and one of the two, with its factor
    # within 5 % (the monitor's Fisher error at these counts is below 1 %)
    for e in bob:
        if e["round"] not in faulty:
            continue
        m = re.search(r"(\w+)'s class '(\w+)' at about ([0-9.]+)", e["detail"])
        assert m and m.group(1) == "alice", e["detail"]
        expected = {"nu": 0.5, "mu": 2.0}[m.group(2)]
        assert float(m.group(3)) == pytest.approx(expected, rel=0.05), e["detail"]
