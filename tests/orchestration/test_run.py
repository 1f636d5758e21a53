"""summary.json written by orchestration.run.summarise, without starting nodes."""

from __future__ import annotations

import json

from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.run import summarise


def test_hmac_authentication_is_recorded_as_computational(tmp_path):
    scenario = load_scenario(DEFAULT_SCENARIO, {"authentication": {"mode": "hmac"}})
    summarise(scenario, tmp_path, wall_seconds=1.0)  # an empty run directory: no rounds
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rounds"] == 0
    assert summary["authentication"] == {"mode": "computational-hmac",
                                         "epsilon_per_message": "computational"}
