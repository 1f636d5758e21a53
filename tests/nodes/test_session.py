"""A restarted link resumes without ever using a one-time pad twice and without a key held by one
user only (nodes.session, the key store as the custody's ledger, SecureLink.resume)."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from classical.authentication import AuthenticationError, KeyPool, ReplayError
from classical.custody import KeyCustody, PendingKey
from classical.messages import Committed, RoundAbort
from classical.pipeline import QueuePeer
from classical.rounds import RecordingObserver, run_alice_round, run_bob_round
from classical.secure import LinkKeys, Repayment, SecureLink, wegman_carter_link
from nodes.keystore import KeyStore
from nodes.session import (
    Progress,
    custody_from_ledger,
    read_progress,
    replay_refills,
    resume_links,
    resume_round,
    resume_seqs,
)
from tests.classical.test_mutants_rounds import _small_round

POOL_BYTES = 1 << 16
KIND_OFFSET = 13 + 1  # frame header, the codec's version byte, then the message kind


def _pools(seed: int = 0) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(seed)
    return rng.bytes(POOL_BYTES), rng.bytes(POOL_BYTES)


def _links(ab: bytes, ba: bytes) -> tuple[SecureLink, SecureLink]:
    """Alice's and Bob's ends, freshly built from the pre-shared bytes (as a node starts)."""
    return (wegman_carter_link(LinkKeys(KeyPool(ab), KeyPool(ba)), "alice", "bob"),
            wegman_carter_link(LinkKeys(KeyPool(ba), KeyPool(ab)), "bob", "alice"))


def test_a_resumed_direction_seals_past_every_pad_used_and_refuses_the_old_session():
    ab, ba = _pools()
    alice, bob = _links(ab, ba)
    old = [alice.pack(RoundAbort(0, f"m{i}")) for i in range(5)]
    for frame in old[:3]:  # the last two never arrived
        bob.unpack(frame)
    # the restart: fresh ends from the same pre-shared bytes, resumed at 5 (one past Alice's seal)
    alice2, bob2 = _links(ab, ba)
    alice2.resume(5, 0)
    bob2.resume(0, 5)
    assert alice2.last_sealed == 4
    frame = alice2.pack(RoundAbort(1, "after"))
    assert bob2.unpack(frame)[0] == RoundAbort(1, "after")
    # the pads of 0..4 are spent: a frame of the earlier session is a replay, not accepted
    with pytest.raises(ReplayError):
        bob2.unpack(old[4])
    # and the pools stand at the same position on both ends (what the repayment is computed from)
    assert alice2.repayment("alice", 5, -1) == bob2.repayment("bob", 5, -1)
    with pytest.raises(ValueError, match="already"):  # never back to a spent pad
        alice2.resume(3, 0)


def test_a_node_resumes_past_its_own_record_whatever_the_orchestrator_says(tmp_path):
    ab, ba = _pools()
    alice, bob = _links(ab, ba)
    progress = Progress(tmp_path, {"bob": alice})
    frames = [alice.pack(RoundAbort(0, str(i))) for i in range(3)]  # recorded before it is sent
    assert read_progress(tmp_path, ["bob"]).sealed == {"bob": 2}
    progress.close()
    alice2, bob2 = _links(ab, ba)
    # an orchestrator that says "resume at 0" cannot make Alice seal seq 0 again ...
    resume_links("alice", {"bob": alice2}, {"alice->bob": 0}, read_progress(tmp_path, ["bob"]))
    reused = alice2.pack(RoundAbort(0, "again"))
    assert reused[1:9] == (3).to_bytes(8, "big")
    # ... it only makes Bob, told the same, refuse her tags: detected, never a pad used twice
    bob.unpack(frames[0])
    bob2.resume(0, 0)
    with pytest.raises((AuthenticationError, ReplayError)):
        bob2.unpack(reused)


def test_the_orchestrator_resumes_each_direction_one_past_what_either_end_used():
    from nodes.session import NodeProgress

    progress = {"alice": NodeProgress(4, {"bob": 9, "charles": 2}, {"bob": 7, "charles": 3}),
                "bob": NodeProgress(5, {"alice": 7, "charles": 1}, {"alice": 8, "charles": 0}),
                "charles": NodeProgress(-1, {"alice": 3, "bob": 0}, {"alice": 1, "bob": 1}),
                "nature": None}
    assert resume_seqs(progress) == {"alice->bob": 10, "alice->charles": 3, "bob->alice": 8,
                                     "bob->charles": 2, "charles->alice": 4, "charles->bob": 1}
    assert resume_round(progress) == 6  # past every round either user emitted


def test_the_ledger_keeps_a_commit_and_its_refills_together_and_a_pending_key_across_reopen(
        tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    bits = np.arange(40) % 2
    store.hold("r3-k", 3, bits, "[1, 2, 3, 4]")
    store.close()
    store = KeyStore(tmp_path / "keys.sqlite")  # as a restarted node opens it
    pending, last = custody_from_ledger(store)
    assert pending == PendingKey(3, "r3-k", pending.key, Repayment(1, 2, 3, 4))
    assert np.array_equal(pending.key, bits) and last == ""
    store.commit("r3-k", 3, bits[16:], (b"\x01", b"\x02"))
    assert store.pending() is None
    assert store.commits() == [("r3-k", 3, b"\x01", b"\x02")]
    assert np.array_equal(store.get("r3-k"), bits[16:])
    store.commit("r4-k", 4, np.zeros(0, np.uint8), (b"\x03", b""))  # all of it repaid the pools
    assert custody_from_ledger(store)[1] == "r4-k" and store.total_bits() == 24
    store.close()


def _round(links, tmp_path, seeds, wire=None, timeout_s=2.0):
    """One small key round between Alice and Bob over ``links``, each user's custody kept in its
    own ledger (``ROLE/keys.sqlite``) and restored from it first, as a (re)started user node
    does."""
    cfg, em = _small_round()
    ab, ba = queue.Queue(), queue.Queue()
    peers = {"alice": QueuePeer(links["alice"], ab, ba, timeout_s, wire, "alice->bob"),
             "bob": QueuePeer(links["bob"], ba, ab, timeout_s, wire, "bob->alice")}
    outcomes = {}

    def side(role, run, view):
        store = KeyStore(tmp_path / role / "keys.sqlite")  # SQLite: used in its own thread
        custody = KeyCustody(role, links[role], ledger=store)
        custody.restore(*custody_from_ledger(store))
        try:
            outcomes[role] = run(em.announcement, view, cfg, peers[role],
                                 np.random.default_rng(seeds[role]), RecordingObserver(), 0.01,
                                 custody)
        finally:
            store.close()

    threads = [threading.Thread(target=side, args=("alice", run_alice_round, em.alice)),
               threading.Thread(target=side, args=("bob", run_bob_round, em.bob))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def _restarted(tmp_path, ab, ba):
    """Both users' ends rebuilt as a restarted link does: pools from the pre-shared bytes and
    the refills in their ledgers, then resumed one past what either end recorded."""
    links = dict(zip(("alice", "bob"), _links(ab, ba), strict=True))
    progress = {r: read_progress(tmp_path / r, [p]) for r, p in (("alice", "bob"),
                                                                 ("bob", "alice"))}
    for role, peer in (("alice", "bob"), ("bob", "alice")):
        store = KeyStore(tmp_path / role / "keys.sqlite")
        replay_refills(links[role], role, store.commits())
        store.close()
        resume_links(role, {peer: links[role]}, resume_seqs(progress), progress[role])
    return links


@pytest.mark.parametrize("killed", ["bob", "alice"])
def test_a_key_alice_committed_and_bob_holds_is_settled_when_the_link_restarts(tmp_path,
                                                                              killed):
    """The window in which the stores could part: Bob has sent Confirm, Alice committed and her
    Committed never reached him. Bob killed there: his ledger keeps the key pending across the
    restart. Alice killed there: Bob, halted as a survivor, hears nothing from her and stops
    holding the key, but leaves it pending in his ledger (a discard would lose the key Alice
    stored). Either way Alice's next Amplify names it, and Bob commits it then."""
    ab, ba = _pools()
    links = dict(zip(("alice", "bob"), _links(ab, ba), strict=True))
    for role, peer in (("alice", "bob"), ("bob", "alice")):
        (tmp_path / role).mkdir()
        Progress(tmp_path / role, {peer: links[role]})

    def no_committed(direction, frame):  # Bob dies before Alice's Committed reaches him
        return None if frame[KIND_OFFSET] == Committed.KIND else frame

    first = _round(links, tmp_path, {"alice": 1, "bob": 2}, no_committed)
    assert first["alice"].committed and first["bob"].pending
    key1 = first["alice"].key_id
    stores = {r: KeyStore(tmp_path / r / "keys.sqlite") for r in ("alice", "bob")}
    assert [k for k, *_ in stores["alice"].commits()] == [key1]
    assert stores["bob"].commits() == [] and stores["bob"].pending()[0] == key1
    if killed == "alice":  # Bob is halted: UserNode.close, without a word from the dead Alice
        held = KeyCustody("bob", links["bob"], ledger=stores["bob"])
        held.restore(*custody_from_ledger(stores["bob"]))
        assert held.stop_holding() and held.pending is None
        assert stores["bob"].pending()[0] == key1  # still pending in the ledger

    # the link restarts with everything rebuilt from disk
    links = _restarted(tmp_path, ab, ba)
    second = _round(links, tmp_path, {"alice": 3, "bob": 4})
    assert second["alice"].committed and second["bob"].committed, (
        second["alice"].abort_reason, second["bob"].abort_reason)
    key2 = second["alice"].key_id
    # both ledgers and both stores hold the same keys: round one's settled late by Bob
    assert [c[:2] for c in stores["alice"].commits()] == [c[:2] for c in stores["bob"].commits()]
    assert [c[0] for c in stores["bob"].commits()] == [key1, key2]
    got = {r: dict((k, bits) for k, _r, bits in stores[r].items()) for r in stores}
    assert got["alice"].keys() == got["bob"].keys() == {key1, key2}
    assert all(np.array_equal(got["alice"][k], got["bob"][k]) for k in got["alice"])
    # and the pools are in step: what each direction was repaid is the same on both ends
    ka, kb = links["alice"].keys, links["bob"].keys
    assert ka.outgoing.replenished_bytes == kb.incoming.replenished_bytes > 0
    assert ka.incoming.replenished_bytes == kb.outgoing.replenished_bytes


def test_without_a_ledger_a_stopping_bob_must_discard_his_pending_key():
    custody = KeyCustody("bob")  # a link that does not restart
    custody.hold(PendingKey(1, "r1-k", np.ones(8, np.uint8), Repayment()))
    assert custody.stop_holding() is False and custody.pending is not None


def test_a_progress_file_left_empty_by_a_kill_reads_as_no_progress(tmp_path):
    (tmp_path / "session.progress").write_bytes(b"")  # created, not yet written: nothing sent
    assert read_progress(tmp_path, ["alice", "bob"]) is None
    ab, ba = _pools()
    alice, _ = _links(ab, ba)
    Progress(tmp_path, {"bob": alice}).close()  # the restarted node starts over it
    assert read_progress(tmp_path, ["bob"]).sealed == {"bob": -1}
