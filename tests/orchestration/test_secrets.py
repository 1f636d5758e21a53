"""Each process gets its own secrets only (issue 10, item 5): the master seed stays with the
orchestrator, Charles holds nothing of the users', nature nothing of the protocol's."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from classical.entropy import OsRandom
from nodes.keystore import KeyStore
from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.run import execute, prepare_run_dir
from orchestration.secrets import NODES, node_secrets, read_node_secrets


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(DEFAULT_SCENARIO, {"rounds": 1})


def test_each_node_holds_only_its_own_secrets(scenario):
    s = node_secrets(scenario)
    assert set(s) == set(NODES)
    for user in ("alice", "bob"):
        assert s[user].settings_key is not None and s[user].protocol_seed is not None
        assert s[user].nature_seed is None and s[user].drift_seed is None
        assert set(s[user].pools) == {"alice", "bob", "charles"} - {user}
    charles = s["charles"]
    assert (charles.settings_key, charles.protocol_seed, charles.nature_seed,
            charles.drift_seed) == (None, None, None, None)
    assert set(charles.pools) == {"alice", "bob"}
    nature = s["nature"]
    assert nature.pools == {} and nature.settings_key is None and nature.protocol_seed is None
    # a pool is shared by exactly the two ends of its direction
    assert s["alice"].pools["bob"] == tuple(reversed(s["bob"].pools["alice"]))
    assert s["alice"].pools["charles"] == tuple(reversed(s["charles"].pools["alice"]))
    assert s["alice"].pools["bob"][0] not in {*s["charles"].pools["alice"],
                                              *s["charles"].pools["bob"]}
    assert len({s["alice"].settings_key, s["bob"].settings_key, s["alice"].protocol_seed,
                s["bob"].protocol_seed, nature.nature_seed, nature.drift_seed}) == 6


def test_seeded_secrets_are_reproducible_and_os_secrets_are_not(scenario):
    assert node_secrets(scenario) == node_secrets(scenario)
    os_mode = scenario.model_copy(update={"entropy": "os"})
    a, b = node_secrets(os_mode), node_secrets(os_mode)
    assert a["alice"].settings_key != b["alice"].settings_key
    assert a["alice"].pools["bob"] == tuple(reversed(a["bob"].pools["alice"]))  # still shared


def test_the_run_directory_gives_no_node_the_master_seed(scenario, tmp_path):
    run_dir = prepare_run_dir(scenario.model_copy(update={"seed": 987654321}), tmp_path / "r")
    config = (run_dir / "config.json").read_text()
    assert "seed" not in json.loads(config)["scenario"] and "987654321" not in config
    for node in NODES:
        path = run_dir / node / "secrets.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((run_dir / node).stat().st_mode) == 0o700
        assert read_node_secrets(run_dir, node).role == node
    (run_dir / "bob" / "secrets.json").replace(run_dir / "bob" / "moved.json")
    (run_dir / "alice" / "secrets.json").replace(run_dir / "bob" / "secrets.json")
    with pytest.raises(ValueError, match="holds alice's secrets, not bob's"):
        read_node_secrets(run_dir, "bob")


def test_os_random_draws_in_range_from_the_os():
    rng = OsRandom()
    assert len(rng.bytes(33)) == 33 and rng.bytes(16) != rng.bytes(16)
    x = rng.integers(0, 2**61 - 1, size=1000, dtype=np.uint64)
    assert x.dtype == np.uint64 and x.max() < 2**61 - 1 and len(set(x.tolist())) == 1000
    assert 5 <= int(rng.integers(5, 7)) < 7
    with pytest.raises(ValueError):
        rng.integers(3, 3)


def test_an_os_entropy_run_delivers_matching_keys_from_secrets_the_seed_does_not_give(
        scenario, tmp_path):
    this = scenario.model_copy(update={"entropy": "os"})
    run_dir = prepare_run_dir(this, tmp_path / "os")
    summary = execute(this, run_dir)
    assert summary["keys_match"] and summary["entropy"] == "os"
    (key_id, _, bits), = KeyStore(run_dir / "alice" / "keys.sqlite").items()
    assert KeyStore(run_dir / "bob" / "keys.sqlite").get(key_id).tolist() == bits.tolist()
    seeded = node_secrets(scenario)
    for node in NODES:  # nothing the run used could have come from the seed
        drawn = read_node_secrets(run_dir, node)
        assert drawn.entropy == "os"
        assert (drawn.settings_key, drawn.protocol_seed, drawn.nature_seed) != (
            seeded[node].settings_key, seeded[node].protocol_seed, seeded[node].nature_seed) or \
            node == "charles"
        assert not set(drawn.pools.values()) & set(seeded[node].pools.values())


GAME_DAY_ONLY = ("method", "rollbacks", "steady_state")


def _as_a_node_loads_it(run_dir):
    """The scenario a node builds from: config.json's, validated as ``node_main`` does."""
    from orchestration.config import Scenario

    return Scenario.model_validate(json.loads((run_dir / "config.json").read_text())["scenario"])


def test_no_user_and_not_charles_learns_the_fault_timeline(tmp_path):
    """The timeline says when and how the link will be broken (an intensity_miscalibration's
    factor, which the users' estimation must not know; an attack's window): Alice, Bob and
    Charles build from a scenario without it, and their secrets hold none of it."""
    from orchestration.config import shipped_scenarios

    day = load_scenario(shipped_scenarios()["gameday_drift"])
    assert day.method and day.rollbacks and day.steady_state
    run_dir = prepare_run_dir(day, tmp_path / "r")
    config = (run_dir / "config.json").read_text()
    assert not set(GAME_DAY_ONLY) & set(json.loads(config)["scenario"])
    seen = _as_a_node_loads_it(run_dir)
    assert (seen.method, seen.rollbacks, seen.steady_state) == (None, None, None)
    for node in ("alice", "bob", "charles"):
        assert read_node_secrets(run_dir, node).fault_timeline == ()
    timeline = read_node_secrets(run_dir, "nature").fault_timeline
    assert [e.name for e in timeline] == [e.name for e in day.method]
    assert stat.S_IMODE((run_dir / "orchestrator").stat().st_mode) == 0o700
    record = json.loads((run_dir / "orchestrator" / "scenario.json").read_text())
    assert record["method"] == json.loads(day.model_dump_json())["method"]
    assert "seed" not in record


@pytest.mark.slow  # about 20 s: four processes, numba warm-up
def test_nature_still_applies_the_faults_it_alone_is_given(tmp_path):
    """A real run (four processes) with a dead detector for the whole run: nature, the only node
    given the timeline, counts no single of that detector; the others click."""
    day = load_scenario(DEFAULT_SCENARIO, {
        "rounds": 1, "round_frames": 200,
        "method": [{"at": 0, "name": "dead cH", "fault": {
            "type": "detector_dead", "target": "relay", "params": {"detector": "cH"}}}]})
    run_dir = prepare_run_dir(day, tmp_path / "r")
    assert "method" not in json.loads((run_dir / "config.json").read_text())["scenario"]
    execute(day, run_dir)
    singles = json.loads((run_dir / "nature" / "metrics.json").read_text())
    assert singles["singles_cH_total"] == 0
    assert min(singles[f"singles_{d}_total"] for d in ("cV", "dH", "dV")) > 1000


def test_a_user_learns_only_the_rounds_its_own_key_store_is_full(tmp_path):
    """``full`` on keystore/bob: Bob is told the rounds his store has no room for (the rounds the
    fault overlaps), as plain round numbers; Alice, Charles and nature nothing of it."""
    from orchestration.config import shipped_scenarios

    day = load_scenario(shipped_scenarios()["gameday_classical"])  # full in [2.2, 2.8) s
    run_dir = prepare_run_dir(day, tmp_path / "r")
    assert read_node_secrets(run_dir, "bob").store_full_rounds == ((2, 3),)  # rounds of 1.05 s
    for node in ("alice", "charles", "nature"):
        assert read_node_secrets(run_dir, node).store_full_rounds == ()
    assert read_node_secrets(run_dir, "bob").fault_timeline == ()


def test_charles_is_told_his_own_software_s_faults_and_nothing_else():
    """A cheating relay knows what its software does: Charles's secrets hold his software's
    faults (and the clear_faults that ends one), with a seed for their randomness; not the
    optical attack, not the link's faults, not the others' actions. The users hold none."""
    relay = {"type": "malicious_relay", "target": "relay"}
    day = load_scenario(DEFAULT_SCENARIO, {"method": [
        {"at": "1s", "name": "fake", "fault": {**relay, "params": {"mode": "fake_announcements"}}},
        {"at": "2s", "name": "stop fake", "action": {"type": "clear_faults",
                                                     "params": {"fault": "fake"}}},
        {"at": "3s", "name": "eve", "duration": "1s",
         "fault": {**relay, "params": {"mode": "intercept_resend"}}},
        {"at": "4.5s", "name": "bug", "duration": "1s",
         "fault": {"type": "relay_firmware_bug", "target": "relay",
                   "params": {"timing_noise_ps": 100}}},
        {"at": "5s", "name": "cut", "fault": {"type": "fiber_cut",
                                              "target": "link/bob-charles"}},
        {"at": "6s", "name": "mend", "action": {"type": "clear_faults",
                                                "target": "link/bob-charles"}}]})
    s = node_secrets(day)
    assert [e.name for e in s["charles"].relay_faults] == ["fake", "stop fake", "bug"]
    assert isinstance(s["charles"].relay_seed, int) and s["charles"].fault_timeline == ()
    assert node_secrets(day)["charles"].relay_seed == s["charles"].relay_seed  # seeded
    for node in ("alice", "bob", "nature"):
        assert s[node].relay_faults == () and s[node].relay_seed is None
    assert len(s["nature"].fault_timeline) == 6
