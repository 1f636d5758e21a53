"""A full intercept–resend attack on a fiber, run end to end by `mdiqkd run`: every round aborts
and nothing is stored (issue 12's acceptance). The physics of the attack is held to the exact
model in tests/channel/test_eavesdropper.py; here the protocol must turn it into aborts, never a
key, which is what MDI-QKD's security proof demands of an attack that destroys the two-photon
interference (the X basis's errors, and the decoy statistics, move far past what a key allows)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import shipped_scenarios

runner = CliRunner()


@pytest.mark.slow  # one real run of two short rounds, about 30 s
def test_a_full_intercept_resend_attack_aborts_every_round_and_stores_nothing(tmp_path):
    day = yaml.safe_load(shipped_scenarios()["gameday_fiber_cut"].read_text())
    day.update(title="Eve on Alice's fiber", seed=5, runtime={"duration": "2s", "pacing": "fast"})
    day["steady_state"] = {"title": "no key Eve knows", "probes": [
        {"name": "no-mismatch", "metric": "key_mismatches", "tolerance": 0},
        {"name": "no-attacked-key", "metric": "keys_from_attacked_rounds", "tolerance": 0}]}
    day["method"] = [{"at": "0s", "name": "eve", "fault": {
        "type": "intercept_resend", "target": "link/alice-charles", "params": {"fraction": 1}}}]
    path = tmp_path / "eve.yaml"
    path.write_text(yaml.safe_dump(day, sort_keys=False))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert len(rounds) == 2
    assert all(r["aborted"] and r["secure_bits"] == 0 for r in rounds), rounds
    assert all(r["announced"] > 0 for r in rounds)  # the relay still announced coincidences
    summary = json.loads(result.stdout)
    assert summary["secure_bits"] == 0 and summary["aborted"] == 2
    journal = json.loads((out / "journal.json").read_text())
    assert (journal["status"], journal["deviated"]) == ("completed", False)
