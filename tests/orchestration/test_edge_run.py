"""A game day on the classical channels and a key store, three real processes and the
orchestrator's proxies: a lost announcement, a full key store and an outage each cost exactly
their round; keys flow before and after, and never differ
(``scenarios/gameday_classical.yaml``)."""

from __future__ import annotations

import json

import pytest

from nodes.keystore import KeyStore
from orchestration.config import load_scenario, shipped_scenarios
from orchestration.run import execute, prepare_run_dir


@pytest.mark.slow  # about a minute: round 3 waits out the 20 s message timeout
def test_lost_messages_cost_their_rounds_and_nothing_else(tmp_path):
    scenario = load_scenario(shipped_scenarios()["gameday_classical"])
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())["run"]
    assert set(config["connect"]) == {"alice", "bob", "charles"}  # every receiver has a proxy
    summary = execute(scenario, run_dir)
    rows = {r["round"]: r for r in map(json.loads,
                                       (run_dir / "rounds.jsonl").read_text().splitlines())}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert [r for r in rows if rows[r]["aborted"]] == [1, 2, 3]
    # round 1: Charles's announcement to Alice failed its tag; she learns it was lost when the
    # next one (round 2's) arrives, and tells Bob
    assert "its announcement was lost: the next one is for round 2" in rows[1]["abort_reason"]
    assert rows[1]["bob_abort_reason"].startswith("PeerAborted: no announcement from charles")
    # round 2: Bob's store had no room: he discarded the key and told Alice, who discarded hers
    assert "not confirmed: Bob's key store is full" in rows[2]["bob_abort_reason"]
    assert "not confirmed by Bob" in rows[2]["abort_reason"]
    # round 3: nothing crossed between the users. The one whose wait began first gives up
    # after the 20 s timeout and goes on to round 4; the other gives up on the timeout too, or
    # on that round-4 message, which is kept for round 4 (never taken as round 3's)
    for mine, theirs in (("abort_reason", "bob"), ("bob_abort_reason", "alice")):
        assert (f"no message from {theirs} within 20 s" in rows[3][mine]
                or f"{theirs} moved on to round 4" in rows[3][mine]), rows[3][mine]
    assert "within 20 s" in rows[3]["abort_reason"] + rows[3]["bob_abort_reason"]
    alice = json.loads((run_dir / "alice" / "metrics.json").read_text())
    bob = json.loads((run_dir / "bob" / "metrics.json").read_text())
    assert alice["rejected_from_charles_AuthenticationError"] == 1
    # RoundStart(3) was dropped too: Bob started round 3 from the plan, so its pulses were
    # paired and round 4 came through
    assert bob["round_starts_inferred_total"] == 1
    assert bob["keys_refused_store_full_total"] == 1 and "keys_refused_store_full_total" \
        not in alice
    edge = json.loads((run_dir / "orchestrator" / "edge.json").read_text())
    assert edge["effects"]["tampered announcements"] == {"tampered": 1}
    assert edge["effects"]["outage"]["dropped"] >= 2  # RoundStart(3) and round 3's dialogue
    # keys of the other rounds: stored on both sides, identical
    assert summary["keys_match"] is True
    stores = [KeyStore(run_dir / u / "keys.sqlite") for u in ("alice", "bob")]
    try:
        for r in (0, 4):
            assert rows[r]["secure_bits"] > 0
            assert stores[0].get(rows[r]["key_id"]).tolist() == \
                stores[1].get(rows[r]["key_id"]).tolist()
        assert len(list(stores[0].items())) == len(list(stores[1].items())) == 2
    finally:
        for s in stores:
            s.close()
    journal = json.loads((run_dir / "journal.json").read_text())
    assert journal["status"] == "completed" and journal["deviated"] is False
    assert [f["name"] for f in journal["timeline"]] == ["tampered announcements", "store full",
                                                         "outage"]
