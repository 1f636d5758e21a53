"""Key rounds end to end in memory: channel sampler → Charles → Alice ⇄ Bob over the real wire
format (codec + Wegman–Carter tags + sequence numbers), with faults injected at the wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from channel.fiber import Fiber
from channel.link import Link
from channel.relay import RelayOptics
from channel.settings import IntensityClass, SettingsPlan
from channel.source import Source
from classical.estimation import DecoyObservations, estimate
from classical.pipeline import run_key_round
from classical.reconciliation import BobOutcome, ReconcilePlan, Reconciler, Request
from classical.sifting import BASIS_X, class_errors, sent_pairs, sift
from orchestration.inmemory import emulate_round, round_config
from tests.metro import shared_metro

# A metro link with modern detectors: the smallest round (≈3·10⁹ slots) with a positive finite key.
PLAN = SettingsPlan(tuple(IntensityClass(n, m, p, z) for n, m, p, z in zip(
    ("mu", "nu", "omega"), (0.4, 0.1, 0.0), (0.3, 0.5, 0.2), (0.95, 0.2, 0.5), strict=True)))
ROUND_SLOTS = 3000 << 20


def _link(flip: float = 0.01) -> Link:
    return Link(Source(PLAN), Source(PLAN, bit_flip_probability=flip), Fiber(25), Fiber(25),
                relay=RelayOptics.uniform(0.8, 1e-7))


@pytest.fixture(scope="module")
def users():
    return shared_metro()[0]  # SettingsGenerator(PLAN, 101) and (PLAN, 202)


@pytest.fixture(scope="module")
def metro_round():
    # _link() over [0, ROUND_SLOTS), round 7, seed 11: tests/metro.py's, emulated once per process
    return shared_metro()[1]


def test_both_users_hold_identical_keys_of_the_finite_key_length(metro_round, users):
    alice, bob = users
    cfg = round_config(alice, bob)
    result = run_key_round(metro_round.announcement, metro_round.alice, metro_round.bob, cfg, 3)
    assert result.alice.abort_reason is None and result.bob.abort_reason is None
    assert result.keys_match
    assert result.alice.key_id == result.bob.key_id
    # Recompute the length from the observed counts and the leakage actually disclosed.
    ann, va, vb = metro_round.announcement, metro_round.alice, metro_round.bob
    sa = sift("alice", ann.bell, va.basis, va.bit, va.intensity, vb.basis, vb.intensity)
    sb = sift("bob", ann.bell, vb.basis, vb.bit, vb.intensity, va.basis, va.intensity)
    x = sa.basis == BASIS_X
    errors = class_errors(sa, sb.bits, where=x)
    key_a, key_b = sa.bits[sa.key_mask()], sb.bits[sb.key_mask()]
    det = sa.detections
    z_err = int((key_a != key_b).sum())
    errors[0, 0, 0] = np.round(z_err * det[0, 0, 0] / det[0, 0, 0].sum())
    report = result.bob.report
    assert report["corrected_bits"] == z_err  # Cascade found every error
    obs = DecoyObservations(cfg.intensities_a, cfg.intensities_b,
                            sent_pairs(va.sent_counts, vb.sent_counts, cfg.frame_slots), det,
                            errors)
    expected = estimate(obs, report["leakage_bits"], "finite")
    assert result.alice.key.size == expected.secure_length > 10_000
    assert report["output_bits"] == expected.secure_length


def test_a_tampered_frame_is_dropped_and_its_loss_aborts_the_round_with_no_key(metro_round,
                                                                               users):
    sent = []

    def flip_a_byte_of_bobs_third_frame(direction: str, frame: bytes) -> bytes:
        if direction != "bob->alice":
            return frame
        sent.append(frame)
        if len(sent) == 3:
            frame = frame[:20] + bytes([frame[20] ^ 0x01]) + frame[21:]
        return frame

    result = run_key_round(metro_round.announcement, metro_round.alice, metro_round.bob,
                           round_config(*users), 3, wire=flip_a_byte_of_bobs_third_frame,
                           timeout_s=5)
    assert result.alice.key is None and result.bob.key is None
    assert "no message from" in result.alice.abort_reason + result.bob.abort_reason


def test_a_replayed_frame_is_rejected(metro_round, users):
    sent = []

    def replay_the_first_frame_later(direction: str, frame: bytes) -> bytes:
        if direction != "alice->bob":
            return frame
        sent.append(frame)
        return sent[0] if len(sent) == 3 else frame

    result = run_key_round(metro_round.announcement, metro_round.alice, metro_round.bob,
                           round_config(*users), 3, wire=replay_the_first_frame_later,
                           timeout_s=5)
    assert result.alice.key is None and result.bob.key is None


def test_high_qber_aborts_with_its_reason(users):
    alice, bob = users
    noisy = emulate_round(_link(flip=0.2), alice, bob, 1, 0, 64 << 20, seed=5)
    result = run_key_round(noisy.announcement, noisy.alice, noisy.bob,
                           round_config(alice, bob, mode="asymptotic", decoy_method="analytic"),
                           3)
    assert result.alice.key is None and result.bob.key is None
    assert result.alice.abort_reason == result.bob.abort_reason
    assert "QBER" in result.alice.abort_reason or "length" in result.alice.abort_reason


def test_too_few_counts_abort_before_reconciliation(users):
    alice, bob = users
    far = Link(Source(PLAN), Source(PLAN), Fiber(150), Fiber(150),
               relay=RelayOptics.uniform(0.8, 1e-7))
    tiny = emulate_round(far, alice, bob, 2, 0, 1 << 20, seed=6)
    result = run_key_round(tiny.announcement, tiny.alice, tiny.bob, round_config(alice, bob), 3)
    assert result.alice.key is None
    assert "too few" in result.alice.abort_reason
    assert "reconcile" not in result.alice.report["timings_s"]


@dataclass(frozen=True)
class RevealReconciler(Reconciler):
    """A one-way method no registry knows: Alice's one reply is her whole key."""

    name: ClassVar[str] = "reveal"

    @classmethod
    def from_settings(cls, settings):
        return cls()

    def plan(self, key_bits, qber_estimate, rng):
        return ReconcilePlan(self.name, key_bits, qber_estimate, 0, ())

    def bob(self, key, plan, channel):
        alice = channel.ask(Request(reply_bits=key.size))
        return BobOutcome(alice.copy(), int((alice != key).sum()))

    def alice(self, key, plan):
        return RevealSession(key)


@dataclass(frozen=True)
class RevealSession:
    key: np.ndarray

    def answer(self, request):
        return self.key


def test_the_round_not_the_method_counts_what_a_reconciler_discloses(metro_round, users):
    result = run_key_round(metro_round.announcement, metro_round.alice, metro_round.bob,
                           round_config(*users, reconciler=RevealReconciler()), 3)
    for outcome in (result.alice, result.bob):
        report = outcome.report
        assert report["reconciler"] == "reveal" and report["round_trips"] == 1
        assert report["disclosed_bits"] == report["key_bits_raw"]  # every key bit, counted once
    assert result.alice.key is None and result.bob.key is None  # nothing secret is left
