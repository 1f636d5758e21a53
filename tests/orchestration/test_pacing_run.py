"""``runtime.pacing: realtime`` in a real run: emission follows the wall clock."""

from __future__ import annotations

import json

import pytest

from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.run import execute, prepare_run_dir


@pytest.mark.slow  # about 20 s: two rounds of 4.2 emulated seconds, paced
def test_realtime_rounds_start_no_faster_than_the_emulated_clock(tmp_path):
    # a 1 MHz clock: rounds of 4 frames of 2^20 slots are 4.19 s long and sampled in a moment,
    # so only the pacing can make the second round start that much after the first
    scenario = load_scenario(DEFAULT_SCENARIO, {
        "clock_rate_hz": 1e6, "round_frames": 4,
        "runtime": {"rounds": 2, "pacing": "realtime"}})
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    summary = execute(scenario, run_dir)
    period = scenario.emulated_seconds_per_round
    for user in ("alice", "bob"):
        rows = [json.loads(x) for x in (run_dir / user / "rounds.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rows] == [0, 1]
        gap = rows[1]["emitted_at_unix"] - rows[0]["emitted_at_unix"]
        assert gap >= period - 0.05, f"{user} started round 1 {gap:.3f} s after round 0"
    assert summary["rounds"] == 2
