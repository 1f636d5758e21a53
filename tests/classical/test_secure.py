"""Authenticated links: gaps after a dropped frame, and repaying pool consumption from new key."""

from __future__ import annotations

import numpy as np
import pytest

from classical.authentication import ReplayError
from classical.messages import RoundAbort, VerifyResult
from classical.pipeline import shared_link_keys
from classical.secure import hmac_link, repay_key_debt, wegman_carter_link


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


def test_both_users_repay_the_same_bits_and_keep_the_same_net_key():
    ka, kb, alice, bob = _pair(1)
    for _ in range(5):
        bob.unpack(alice.pack(VerifyResult(0, True)))
    for _ in range(3):
        alice.unpack(bob.pack(VerifyResult(0, False)))
    key = np.random.default_rng(2).integers(0, 2, 4000, dtype=np.uint8)
    net_a, used_a = repay_key_debt(ka, key, "alice")
    net_b, used_b = repay_key_debt(kb, key, "bob")
    assert used_a == used_b == 8 * ka.consumed_bytes()
    assert np.array_equal(net_a, net_b) and net_a.size == key.size - used_a
    # repaid: a second call with no new traffic takes nothing
    assert repay_key_debt(ka, key, "alice")[1] == 0
    # and the replenished pools still authenticate each other (same bytes on both ends)
    while ka.outgoing.available_bytes >= 16:  # drain the pool into the replenished bytes
        bob.unpack(alice.pack(VerifyResult(1, True)))
    assert ka.outgoing.consumed_bytes > 4096  # past the initial secret: replenished key in use


def test_a_short_key_repays_what_it_can():
    ka, _, alice, bob = _pair(3)
    for _ in range(10):
        bob.unpack(alice.pack(VerifyResult(0, True)))
    net, used = repay_key_debt(ka, np.ones(64, np.uint8), "alice")
    assert net.size == 0 and used == 64


def test_hmac_links_have_no_pools():
    a = hmac_link(b"k" * 32, b"m" * 32)
    b = hmac_link(b"m" * 32, b"k" * 32)
    assert a.keys is None
    msg, _ = b.unpack(a.pack(VerifyResult(0, True)))
    assert msg == VerifyResult(0, True)
