"""The shipped timing game day (scenarios/gameday_clock.yaml), run end to end by `mdiqkd run`.

Its two faults show with the size the physics predicts:

* relay jitter σ = 400 ps against Charles's 1000 ps window loses a share erfc(W / (2σ)) of the Bell
  patterns in the frames it covers (tests/channel/test_timing_faults.py derives it), so the round
  it falls in announces (1 − f · erfc(1.25)) times a healthy round's count, f the share of that
  round's frames the fault covers. The healthy rate is estimated from the two healthy rounds;
  counts are sums of many rare independent successes (variance ≈ count), so the ratio's z-score
  is checked against ``tests.stats.z_bound`` (false alarm ``ALPHA`` = 10⁻⁴);
* Bob's clock 100 ps (2τ) late lowers the mode overlap to e^(−1/2): the round of the fault has
  more X-basis errors than the healthy rounds, beyond the false-alarm budget, and aborts.
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import build_fault_schedule, load_scenario, shipped_scenarios
from tests.stats import z_bound

runner = CliRunner()


@pytest.mark.slow  # one real run of the shipped game day, about 50 s
def test_the_timing_game_day_shows_each_fault_with_its_predicted_size(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "gameday_clock", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["aborted"] for r in rounds] == [False, True, False, False]
    healthy = (rounds[0], rounds[3])

    sc = load_scenario(shipped_scenarios()["gameday_clock"])
    schedule = build_fault_schedule(sc, 0)
    jitter = next(f for f in schedule.faults if f.kind == "jitter")
    first, stop = schedule.frames_of(jitter, sc.clock_rate_hz, sc.frame_bits)
    round_first = rounds[2]["start_slot"] >> sc.frame_bits
    share = (min(stop, round_first + sc.round_frames) - max(first, round_first)) / sc.round_frames
    assert 0.5 < share < 0.6
    window, sigma = sc.relay.coincidence_window_ps, jitter.params["jitter_ps"]
    ratio = 1 - share * math.erfc(window / (2 * sigma))
    mean_healthy = sum(r["announced"] for r in healthy) / 2
    got = rounds[2]["announced"]
    z = (got - ratio * mean_healthy) / math.sqrt(got + ratio**2 * mean_healthy / 2)
    assert abs(z) <= z_bound(), (got, ratio * mean_healthy, z)

    # the late clock: X-basis errors well above the healthy rounds' (pooled binomial z)
    x_errors = sum(r["qber_x"] * r["x_bits"] for r in healthy)
    x_bits = sum(r["x_bits"] for r in healthy)
    p = x_errors / x_bits
    late = rounds[1]
    z_late = (late["qber_x"] - p) / math.sqrt(p * (1 - p) * (1 / late["x_bits"] + 1 / x_bits))
    assert z_late > z_bound()
    journal = json.loads((out / "journal.json").read_text())
    assert [e["name"] for e in journal["timeline"]] == ["late clock", "jittery tags"]
    assert (journal["status"], journal["deviated"]) == ("completed", False)
