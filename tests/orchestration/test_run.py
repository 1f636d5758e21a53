"""summary.json written by orchestration.run.summarise, without starting nodes."""

from __future__ import annotations

import json

from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.run import _read_jsonl, run_totals, summarise


def test_hmac_authentication_is_recorded_as_computational(tmp_path):
    scenario = load_scenario(DEFAULT_SCENARIO, {"authentication": {"mode": "hmac"}})
    summarise(scenario, tmp_path, wall_seconds=1.0)  # an empty run directory: no rounds
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rounds"] == 0
    assert summary["authentication"] == {"mode": "computational-hmac",
                                         "epsilon_per_message": "computational"}


def test_a_node_log_that_is_a_device_is_not_read(tmp_path):
    """A full-disk drill puts a node's round log on /dev/full; the orchestrator's reader must not
    read the device's endless zeros (it did, until the test worker ran out of memory)."""
    log = tmp_path / "rounds.jsonl"
    log.symlink_to("/dev/full")
    assert _read_jsonl(log) == []
    (tmp_path / "nature").mkdir()
    (tmp_path / "nature" / "metrics.json").symlink_to("/dev/full")
    assert "coincidences" not in run_totals(tmp_path)
