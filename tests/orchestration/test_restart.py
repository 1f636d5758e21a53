"""A link that restarts when a node dies (runtime.restart, orchestration.supervision): a real run
of four processes in which a game day kills Bob for a second; the link comes back at a round no
user had emitted, keys flow again, and the two stores hold the same keys."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest
import yaml

from orchestration.config import load_scenario
from orchestration.run import RunFailed, execute, prepare_run_dir
from tests.short_rounds import short_round_overrides

ROUNDS = 8
DOWN_S = 1.0


def _scenario(tmp_path, restart: bool):
    data = yaml.safe_load((files("scenarios") / "quickstart.yaml").read_text())
    data.update(short_round_overrides())
    data.update(rounds=ROUNDS, title="bob restarts",
                runtime={"restart": restart, "max_restarts": 1, "message_timeout": "20s"},
                method=[{"at": "0.9s", "name": "bob down", "fault": {
                    "type": "kill", "target": "node/bob"},
                    **({"duration": f"{DOWN_S}s"} if restart else {})}])
    path = tmp_path / "restart.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_scenario(path)


def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow  # four processes, eight short rounds and a restart: about 30 s
def test_a_killed_bob_comes_back_and_the_link_resumes_with_identical_stores(tmp_path):
    scenario = _scenario(tmp_path, restart=True)
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    summary = execute(scenario, run_dir, fingerprint=True)

    [restart] = summary["restarts"]
    assert restart["node"] == "bob" and restart["exit_code"] == -9
    [kill] = json.loads((run_dir / "orchestrator" / "node_faults.json").read_text())["done"]
    assert kill["action"] == "killed"
    assert restart["restarted_at_unix"] - kill["unix"] >= DOWN_S  # down for the fault's duration
    resumed = restart["resume_round"]
    assert 0 < resumed < ROUNDS  # killed mid-run, and rounds were left to run
    alice = _records(run_dir / "alice" / "rounds.jsonl")
    final = {r["round"]: r for r in alice}  # a late settlement supersedes its round's record
    assert sorted(final) == list(range(ROUNDS))  # every round accounted for, once
    lost = [r for r in range(ROUNDS) if final[r].get("restart")]
    assert lost and max(lost) == resumed - 1  # the rounds the restart cost end where it resumed
    # production resumed: every round after the restart gave a key, committed on both sides
    after = [final[r] for r in range(resumed, ROUNDS)]
    assert all(not r["aborted"] and r["secure_bits"] > 0 for r in after), after
    # no half-stored and no mismatched key: the two stores hold the same keys, bit for bit
    assert summary["keys_match"] is True
    assert summary["secure_bits"] == sum(r["secure_bits"] for r in final.values())
    assert "determinism_fingerprint" in summary
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["resume"]["round"] == resumed


@pytest.mark.slow  # the same game day without restart: the run fails at the kill
def test_without_restart_the_killed_node_fails_the_run_naming_it(tmp_path):
    scenario = _scenario(tmp_path, restart=False)
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    with pytest.raises(RunFailed, match="node bob exited with code -9"):
        execute(scenario, run_dir)
    assert not (run_dir / "restarts.json").exists()
