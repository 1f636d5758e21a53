"""The round's leakage, counted independently from the frames that cross the channel (issue 15,
item 1).

A ``wire`` hook opens every frame between Alice and Bob and adds up what the leakage rule of
``classical.leakage`` charges: Alice's reply bits, the bits Bob discloses in his requests, and
the verification tag. The round's ``leakage_bits`` must equal that count, and the key's length
must be the finite-key length recomputed from it and from counts taken straight from the two
users' views, so a ledger that forgets a message, or a final estimate that is handed the wrong
leakage, changes a number these tests compare.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pytest

from classical.estimation import DecoyObservations, estimate
from classical.pipeline import run_key_round
from classical.reconcilers import default_reconciler
from classical.reconciliation import Reconciler, Request
from classical.rounds import RoundConfig
from classical.sifting import BASIS_X, class_errors, sent_pairs, sift
from orchestration.inmemory import round_config
from tests.leakage_count import disclosed, open_frame
from tests.metro import shared_metro

CASCADE = default_reconciler()


@pytest.fixture(scope="module")
def users():
    return shared_metro()[0]


@pytest.fixture(scope="module")
def metro_round():
    return shared_metro()[1]


class LeakageTap:
    """A ``wire`` hook that decodes every frame and counts the disclosed bits by kind; it
    passes every frame unchanged."""

    def __init__(self) -> None:
        self.bits: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, direction: str, frame: bytes) -> bytes:
        message = open_frame(frame)
        with self._lock:
            self.frames[type(message).__name__] += 1
            counted = disclosed(message)
            if counted is not None:
                kind, bits = counted
                assert direction == ("alice->bob" if kind == "reply" else
                                     "bob->alice")  # replies from Alice, the rest from Bob
                self.bits[kind] += bits
        return frame

    @property
    def total(self) -> int:
        return sum(self.bits.values())


def _finite_key_length(metro_round, cfg: RoundConfig, leakage_bits: int) -> tuple[int, int]:
    """(secure length, Z errors) from the two users' views and a leakage, without the round's
    own report: sifting both sides, counting errors by comparing their bits."""
    ann, va, vb = metro_round.announcement, metro_round.alice, metro_round.bob
    sa = sift("alice", ann.bell, va.basis, va.bit, va.intensity, vb.basis, vb.intensity)
    sb = sift("bob", ann.bell, vb.basis, vb.bit, vb.intensity, va.basis, va.intensity)
    errors = class_errors(sa, sb.bits, where=sa.basis == BASIS_X)
    z_errors = int((sa.bits[sa.key_mask()] != sb.bits[sb.key_mask()]).sum())
    det = sa.detections
    errors[0, 0, 0] = np.round(z_errors * det[0, 0, 0] / det[0, 0, 0].sum())
    obs = DecoyObservations(cfg.intensities_a, cfg.intensities_b,
                            sent_pairs(va.sent_counts, vb.sent_counts, cfg.frame_slots), det,
                            errors)
    est = estimate(obs, leakage_bits, cfg.mode, cfg.security, cfg.decoy_method)
    return int(est.secure_length), z_errors


def _assert_paid_for(result, tap: LeakageTap, metro_round, cfg: RoundConfig) -> None:
    assert result.keys_match, (result.alice.abort_reason, result.bob.abort_reason)
    for outcome in (result.alice, result.bob):
        assert outcome.report["leakage_bits"] == tap.total
    length, z_errors = _finite_key_length(metro_round, cfg, tap.total)
    assert result.bob.report["corrected_bits"] == z_errors  # Cascade found every error
    assert result.alice.key.size == result.bob.key.size == length > 10_000


def test_the_leakage_charged_is_every_bit_that_crossed_the_channel(metro_round, users):
    cfg = round_config(*users)
    tap = LeakageTap()
    result = run_key_round(metro_round.announcement, metro_round.alice, metro_round.bob, cfg, 3,
                           wire=tap)
    # a real dialogue: many parities, no bits of Bob's, and one tag
    assert tap.frames["ReconcileReply"] == result.bob.report["round_trips"] > 1
    assert tap.bits["reply"] > 1000 and tap.bits["request"] == 0 and tap.bits["tag"] > 0
    assert tap.frames["VerifyRequest"] == 1
    _assert_paid_for(result, tap, metro_round, cfg)


def test_a_key_length_computed_without_the_leakage_would_be_longer(metro_round, users):
    """The check above can fail: the leakage changes the finite-key length bit for bit."""
    cfg = round_config(*users)
    tap = LeakageTap()
    run_key_round(metro_round.announcement, metro_round.alice, metro_round.bob, cfg, 3, wire=tap)
    with_leak, _ = _finite_key_length(metro_round, cfg, tap.total)
    without, _ = _finite_key_length(metro_round, cfg, 0)
    assert without - with_leak == pytest.approx(tap.total, abs=1)


@dataclass(frozen=True)
class DisclosingCascade(Reconciler):
    """Cascade after one opening exchange in which Bob discloses ``BOB_BITS`` of his key's bits
    outright (a method that sends Bob's bits: what ``Request.bits`` carries)."""

    name: ClassVar[str] = "disclosing-cascade"
    BOB_BITS: ClassVar[int] = 40

    @classmethod
    def from_settings(cls, settings):
        return cls()

    def plan(self, key_bits, qber_estimate, rng):
        return replace(CASCADE.plan(key_bits, qber_estimate, rng), method=self.name)

    def bob(self, key, plan, channel):
        channel.ask(Request(bits=key[:self.BOB_BITS].copy(), reply_bits=0))
        return CASCADE.bob(key, replace(plan, method=CASCADE.name), channel)

    def alice(self, key, plan):
        return _SkipFirst(CASCADE.alice(key, replace(plan, method=CASCADE.name)))


class _SkipFirst:
    def __init__(self, session) -> None:
        self.session, self.first = session, True

    def answer(self, request):
        if self.first:
            self.first = False
            assert request.bits.size == DisclosingCascade.BOB_BITS and request.rows.size == 0
            return np.zeros(0, np.uint8)
        return self.session.answer(request)


def test_bits_bob_discloses_are_charged_too(metro_round, users):
    cfg = round_config(*users, reconciler=DisclosingCascade())
    tap = LeakageTap()
    result = run_key_round(metro_round.announcement, metro_round.alice, metro_round.bob, cfg, 3,
                           wire=tap)
    assert tap.bits["request"] == DisclosingCascade.BOB_BITS
    _assert_paid_for(result, tap, metro_round, cfg)
