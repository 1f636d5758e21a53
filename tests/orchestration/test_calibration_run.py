"""The calibration loops in a real run (three processes and nature): a polarization rotation
appears on Bob's fiber, the users' polarization loop finds the controller settings that undo it,
both users log the same search, and QBER_Z comes back to the healthy rounds' value.

The run is the shipped calibration game day (scenarios/gameday_calibration.yaml) cut to its
first fault and to 16 rounds, with the clock loop off (one loop, six coordinates). QBER_Z is
compared with binomial z-scores against ``tests.stats.z_bound`` (false alarm ``ALPHA``)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import shipped_scenarios
from tests.stats import z_bound

runner = CliRunner()


def _z(a: dict, b_errors: float, b_bits: float) -> float:
    """z-score of round ``a``'s QBER_Z against a pooled rate of ``b_errors`` / ``b_bits``."""
    p = (a["corrected_bits"] + b_errors) / (a["key_bits_raw"] + b_bits)
    se = math.sqrt(p * (1 - p) * (1 / a["key_bits_raw"] + 1 / b_bits))
    return (a["corrected_bits"] / a["key_bits_raw"] - b_errors / b_bits) / se


def _events(path):
    return [{k: v for k, v in json.loads(line).items() if k != "at_unix"}
            for line in path.read_text().splitlines()]


@pytest.mark.slow  # one real run of 16 quick-start rounds, about 80 s
def test_the_polarization_loop_undoes_a_rotated_fiber_in_a_real_run(tmp_path):
    data = yaml.safe_load(shipped_scenarios()["gameday_calibration"].read_text())
    data["calibration"] = {"polarization": True, "clock": False}
    data["method"] = [e for e in data["method"] if e["name"] == "rotated fiber"]
    data["runtime"] = {"rounds": 16, "pacing": "fast"}
    scenario = tmp_path / "calibration.yaml"
    scenario.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(scenario), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output

    alice, bob = _events(out / "alice" / "calibration.jsonl"), _events(
        out / "bob" / "calibration.jsonl")
    assert alice == bob  # one search, run by both users on the same public error rates
    assert json.loads((out / "journal.json").read_text())["calibration"] == bob
    actions = [e["action"] for e in bob]
    assert actions[0] == "started" and "moved" in actions
    assert actions[-1] == "converged", bob

    rounds = [json.loads(line) for line in (out / "bob" / "rounds.jsonl").read_text().splitlines()]
    healthy = [r for r in rounds[:1] if r.get("corrected_bits") is not None]
    assert healthy, "the first round (before the fault) must be reconciled"
    errors = sum(r["corrected_bits"] for r in healthy)
    bits = sum(r["key_bits_raw"] for r in healthy)
    # the fault raised QBER_Z beyond the false-alarm bound in a round at the old setting ...
    started = next(e["round"] for e in bob if e["action"] == "started")
    assert _z(rounds[started], errors, bits) > z_bound()
    # ... and the last round, at the converged setting, gives key with QBER_Z back near the
    # healthy rate. "Converged" promises the cost J = QBER_Z + QBER_X within accept_sigmas
    # standard errors of J's reference (docs/calibration.md); QBER_Z alone may then be off by
    # that much plus the X-basis noise the sum hides, each bounded at the false-alarm level
    last = rounds[-1]
    assert last.get("corrected_bits") is not None and not last["aborted"], last
    ref = healthy[0]
    var = {k: r["qber_x"] * (1 - r["qber_x"]) / r["x_bits"] + (r["corrected_bits"] / bits) * (
        1 - r["corrected_bits"] / bits) / r["key_bits_raw"] for k, r in (("last", last),
                                                                       ("ref", ref))}
    accept = data.get("calibration", {}).get("accept_sigmas", 3.0)
    sd_x = math.sqrt(sum(r["qber_x"] * (1 - r["qber_x"]) / r["x_bits"] for r in (last, ref)))
    sd_z = math.sqrt(sum((r["corrected_bits"] / r["key_bits_raw"]) / r["key_bits_raw"]
                         for r in (last, ref)))
    tolerance = accept * math.sqrt(var["last"] + var["ref"]) + z_bound() * (sd_x + sd_z)
    rise = last["corrected_bits"] / last["key_bits_raw"] - errors / bits
    broken = rounds[started]["corrected_bits"] / rounds[started]["key_bits_raw"] - errors / bits
    assert rise <= tolerance < broken / 2, (rise, tolerance, broken)
    assert last["controls"]["bob_rotation_rad"] != [0.0, 0.0, 0.0]
