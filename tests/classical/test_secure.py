"""Authenticated links: gaps after a dropped frame, names bound to frames, and repaying pool
consumption from new key by authenticated progress."""

from __future__ import annotations

import numpy as np
import pytest

from classical.authentication import AuthenticationError, ReplayError
from classical.messages import RoundAbort, VerifyResult
from classical.pipeline import shared_link_keys
from classical.secure import hmac_link, wegman_carter_link


def _pair(seed: int = 0):
    ka, kb = shared_link_keys(4096, np.random.default_rng(seed))
    return ka, kb, wegman_carter_link(ka), wegman_carter_link(kb)


def test_a_dropped_frame_leaves_a_gap_not_a_wedged_direction():
    _, _, alice, bob = _pair()
    bob.opener.allow_gaps = True
    frames = [alice.pack(VerifyResult(0, True)) for _ in range(3)]
    bob.unpack(frames[0])
    bob.unpack(frames[2])  # frame 1 was lost on the way
    assert bob.opener.skipped == 1
    with pytest.raises(ReplayError):
        bob.unpack(frames[1])  # ... and cannot come back later
    assert bob.rejected == {"ReplayError": 1}


def test_strict_links_reject_gaps():
    _, _, alice, bob = _pair()
    frames = [alice.pack(RoundAbort(0, "x")) for _ in range(2)]
    with pytest.raises(ReplayError, match="reorder"):
        bob.unpack(frames[1])


def _settle(link, key, role):
    """Repay everything authenticated so far (as at the end of a round) from ``key``."""
    if role == "alice":
        rep = link.repayment("alice", link.last_sealed, link.last_accepted)
    else:
        rep = link.repayment("bob", link.last_accepted, link.last_sealed)
    return rep, *link.settle(key, rep, role)


def test_both_users_repay_the_same_bits_and_keep_the_same_net_key():
    ka, kb, alice, bob = _pair(1)
    for _ in range(5):
        bob.unpack(alice.pack(VerifyResult(0, True)))
    for _ in range(3):
        alice.unpack(bob.pack(VerifyResult(0, False)))
    key = np.random.default_rng(2).integers(0, 2, 4000, dtype=np.uint8)
    rep_a, net_a, used_a = _settle(alice, key, "alice")
    rep_b, net_b, used_b = _settle(bob, key, "bob")
    assert rep_a == rep_b
    # two 8-byte hash keys, then one 16-byte pad per frame: 5 frames A→B, 3 frames B→A
    assert (rep_a.a_to_b_bytes, rep_a.b_to_a_bytes) == (16 + 16 * 5, 16 + 16 * 3)
    assert used_a == used_b == 8 * ka.consumed_bytes()
    assert np.array_equal(net_a, net_b) and net_a.size == key.size - used_a
    # repaid: a second settlement with no new traffic takes nothing
    assert _settle(alice, key, "alice")[2] == 0
    # and the replenished pools still authenticate each other (same bytes on both ends)
    while ka.outgoing.available_bytes >= 16:  # drain the pool into the replenished bytes
        bob.unpack(alice.pack(VerifyResult(1, True)))
    assert ka.outgoing.consumed_bytes > 4096  # past the initial secret: replenished key in use


def _forged(frame: bytes, seq: int) -> bytes:
    """``frame`` claiming sequence number ``seq``, with a wrong tag."""
    return frame[:1] + seq.to_bytes(8, "big") + frame[9:-1] + bytes([frame[-1] ^ 1])


def test_forged_frames_that_make_the_verifier_draw_ahead_do_not_change_the_repayment():
    """The attack of issue 10 (item 2): a forged frame claiming a sequence number 60 ahead makes
    Bob's verifier draw 60 pads early. What the users repay must depend on authenticated progress
    only, so both still take the same bits from the same key."""
    _, _, alice, bob = _pair(4)
    bob.opener.allow_gaps = True
    frame = alice.pack(VerifyResult(0, True))
    for seq in (60, 30, 63):
        with pytest.raises(AuthenticationError):
            bob.unpack(_forged(frame, seq))
    bob.unpack(frame)
    alice.unpack(bob.pack(VerifyResult(0, False)))
    key = np.random.default_rng(5).integers(0, 2, 4000, dtype=np.uint8)
    rep_a, net_a, _ = _settle(alice, key, "alice")
    rep_b, net_b, _ = _settle(bob, key, "bob")
    assert rep_a == rep_b and np.array_equal(net_a, net_b)
    # and the link still works both ways afterwards (pools in step)
    for _ in range(3):
        bob.unpack(alice.pack(VerifyResult(1, True)))
        alice.unpack(bob.pack(VerifyResult(1, True)))


def test_a_forged_frame_beyond_the_pool_is_an_authentication_failure_not_a_crash():
    """Issue 10 (item 2): four forged frames used to raise KeyPoolExhausted, ending the node."""
    ka, kb = shared_link_keys(16 * 2 + 16 * 8, np.random.default_rng(6))  # keys + 8 pads
    alice, bob = wegman_carter_link(ka), wegman_carter_link(kb)
    frame = alice.pack(VerifyResult(0, True))
    with pytest.raises(AuthenticationError, match="key pool exhausted"):
        bob.unpack(_forged(frame, 40))
    assert bob.rejected == {"AuthenticationError": 1}
    assert bob.unpack(frame)[0] == VerifyResult(0, True)


def test_the_names_are_authenticated_a_frame_cannot_change_direction_or_sender():
    ka, kb = shared_link_keys(4096, np.random.default_rng(7))
    _, kb_copy = shared_link_keys(4096, np.random.default_rng(7))
    alice = wegman_carter_link(ka, "alice", "bob")
    bob = wegman_carter_link(kb, "bob", "alice")
    impostor = wegman_carter_link(kb_copy, "bob", "charles")  # the same key, other names
    frame = alice.pack(VerifyResult(0, True))
    with pytest.raises(AuthenticationError):
        impostor.unpack(frame)
    assert bob.unpack(frame)[0] == VerifyResult(0, True)


def test_a_short_key_repays_what_it_can():
    ka, _, alice, bob = _pair(3)
    for _ in range(10):
        bob.unpack(alice.pack(VerifyResult(0, True)))
    rep, net, used = _settle(alice, np.ones(64, np.uint8), "alice")
    assert net.size == 0 and used == 64 and rep.a_to_b_bytes > 8


def test_hmac_links_have_no_pools():
    a = hmac_link(b"k" * 32, b"m" * 32)
    b = hmac_link(b"m" * 32, b"k" * 32)
    assert a.keys is None
    msg, _ = b.unpack(a.pack(VerifyResult(0, True)))
    assert msg == VerifyResult(0, True)
