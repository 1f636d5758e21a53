"""The relay's intercept–resend (channel/relay_attack.py), emulated by nature, against its exact
model: per class of sent states, the announcements Charles's unchanged software decodes and the
sifted errors are binomial with the probabilities of ``attack_class_statistics``; every z-score
of a test is held at the false-alarm budget of tests/stats.py (ALPHA = 1e-4 per test, with a
Bonferroni bound over its scores, ``assert_z_scores_consistent``)."""

from __future__ import annotations

import numpy as np
import pytest

from channel.analytic import exact_frame_statistics
from channel.relay import RelayOptics
from channel.relay_attack import (
    PATTERN_PSI_MINUS,
    PATTERN_PSI_PLUS,
    attack_class_statistics,
)
from channel.samplers import sample
from classical.sifting import BASIS_X, BASIS_Z, PSI_PLUS
from nodes.relay_software import BELL_OF_PATTERN, bell_successes
from orchestration.config import DEFAULT_SCENARIO, build_link, build_settings, load_scenario
from tests.stats import assert_z_scores_consistent, binomial_z, z_bound

FB = 16
N_SLOTS = 256 << FB


def attacked_scenario(fraction: float):
    return load_scenario(DEFAULT_SCENARIO, {"frame_bits": FB, "method": [
        {"at": 0, "name": "eve", "fault": {"type": "malicious_relay", "target": "relay",
                                           "params": {"mode": "intercept_resend",
                                                      "fraction": fraction}}}]})


@pytest.fixture(scope="module")
def users():
    s = load_scenario(DEFAULT_SCENARIO, {"frame_bits": FB})
    return build_settings(s, "alice"), build_settings(s, "bob")


def test_weak_pulses_err_a_third_in_z_and_a_sixth_in_x():
    """The rule's single-photon limit (no dark counts, ideal detectors): in Z the announcement is
    right when Charles guessed Z (announced half the time: equal results are not announced) and
    random when he guessed X (always announced): errors ½·1 / (½ + 1) = 1/3; in X, right when he
    guessed X (always announced) and random when he guessed Z (announced half the time): 1/6."""
    relay = RelayOptics.uniform(1.0, 0.0)
    eye = np.eye(2, dtype=np.complex128)
    for basis, expected in ((BASIS_Z, 1 / 3), (BASIS_X, 1 / 6)):
        gain, error, plus, minus = attack_class_statistics(basis, basis, 1e-4, 1e-4, 1.0, 1.0,
                                                           eye, eye, relay)
        assert error / gain == pytest.approx(expected, rel=1e-3)
        assert plus + minus == pytest.approx(gain, rel=1e-12)
    gain_zx, error_zx, _, _ = attack_class_statistics(BASIS_Z, BASIS_X, 1e-4, 1e-4, 1.0, 1.0,
                                                      eye, eye, relay)
    assert error_zx == 0.0 and gain_zx > 0


def test_the_attack_follows_its_exact_model_class_by_class(users):
    alice, bob = users
    link = build_link(attacked_scenario(1.0))
    out = sample(link, alice, bob, 0, N_SLOTS, 21)
    assert set(np.unique(out.records.pattern)) <= {PATTERN_PSI_PLUS, PATTERN_PSI_MINUS}
    slots, bell = bell_successes(out.records, 1000.0)
    assert slots.size == len(out.records)  # Charles's software decodes every faked pattern
    every = np.arange(N_SLOTS, dtype=np.int64)
    sa, sb = alice.settings_at(every), bob.settings_at(every)
    aa, ab = alice.settings_at(slots), bob.settings_at(slots)
    flip = ~((aa.basis == BASIS_X) & (bell == PSI_PLUS))
    error = aa.bit != (ab.bit ^ flip)
    (_, _, piece), = link.device_segments(0, N_SLOTS)
    with pytest.raises(ValueError, match="the relay attacks frame 0"):
        exact_frame_statistics(link, alice.plan, bob.plan, 0, BASIS_Z, 0, 0,
                               bell_of_pattern=BELL_OF_PATTERN)
    ph = piece.physics(0, 1)
    mu_a = piece.source_a.emitted_mean_photon_numbers(alice.plan)
    mu_b = piece.source_b.emitted_mean_photon_numbers(bob.plan)
    scores = []
    for ba, bb, ia, ib in ((BASIS_Z, BASIS_Z, 0, 0), (BASIS_X, BASIS_X, 0, 0),
                           (BASIS_X, BASIS_X, 1, 1), (BASIS_Z, BASIS_Z, 0, 1),
                           (BASIS_Z, BASIS_X, 0, 0), (BASIS_X, BASIS_Z, 1, 0)):
        sent = int(((sa.basis == ba) & (sb.basis == bb) & (sa.intensity == ia)
                    & (sb.intensity == ib)).sum())
        here = (aa.basis == ba) & (ab.basis == bb) & (aa.intensity == ia) & (ab.intensity == ib)
        gain, err, plus, _ = attack_class_statistics(
            ba, bb, float(mu_a[ia]), float(mu_b[ib]), float(ph.transmittance_a[0]),
            float(ph.transmittance_b[0]), ph.unitary_a[0], ph.unitary_b[0], piece.relay,
            piece.source_a.bit_flip_probability, piece.source_b.bit_flip_probability)
        scores.append(binomial_z(int(here.sum()), sent, gain))
        scores.append(binomial_z(int((here & (bell == PSI_PLUS)).sum()), sent, plus))
        if ba == bb:
            scores.append(binomial_z(int((here & error).sum()), sent, err))
    assert_z_scores_consistent(scores, "intercept-resend classes")


def test_unattacked_slots_keep_exactly_their_honest_records(users):
    alice, bob = users
    honest = sample(build_link(load_scenario(DEFAULT_SCENARIO, {"frame_bits": FB})), alice, bob,
                    0, N_SLOTS, 21).records
    link = build_link(attacked_scenario(0.5))
    out = sample(link, alice, bob, 0, N_SLOTS, 21).records
    (_, _, piece), = link.device_segments(0, N_SLOTS)
    attack = piece.attack
    assert attack is not None and attack.fraction == 0.5
    spared_out, spared_honest = ~attack.attacked(out.slot), ~attack.attacked(honest.slot)
    assert np.array_equal(out.slot[spared_out], honest.slot[spared_honest])
    assert np.array_equal(out.pattern[spared_out], honest.pattern[spared_honest])
    assert np.array_equal(out.time_ps[spared_out], honest.time_ps[spared_honest])
    assert np.all(np.diff(out.slot) > 0)
    faked = out.pattern[~spared_out]
    assert faked.size > 100 and set(np.unique(faked)) <= {PATTERN_PSI_PLUS, PATTERN_PSI_MINUS}
    share = attack.attacked(np.arange(1 << 20, dtype=np.int64)).mean()
    assert abs(binomial_z(share * (1 << 20), 1 << 20, 0.5)) <= z_bound()  # the hash picks half


def test_the_attack_s_window_is_cut_at_its_frames(users):
    alice, bob = users
    frame_s = (1 << FB) / 1e9
    s = load_scenario(DEFAULT_SCENARIO, {"frame_bits": FB, "method": [
        {"at": 10 * frame_s, "name": "eve", "duration": 20 * frame_s,
         "fault": {"type": "malicious_relay", "target": "relay",
                   "params": {"mode": "intercept_resend"}}}]})
    link = build_link(s)
    pieces = link.device_segments(0, 64 << FB)
    assert [(lo >> FB, hi >> FB, p.attack is not None) for lo, hi, p in pieces] == [
        (0, 10, False), (10, 30, True), (30, 64, False)]
    honest = sample(build_link(load_scenario(DEFAULT_SCENARIO, {"frame_bits": FB})), alice, bob,
                    0, 64 << FB, 4).records
    out = sample(link, alice, bob, 0, 64 << FB, 4).records
    again = sample(build_link(s), alice, bob, 0, 64 << FB, 4).records  # the same scenario, seed
    for field in ("slot", "pattern", "time_ps"):
        assert np.array_equal(getattr(again, field), getattr(out, field))
    inside = ((out.slot >> FB) >= 10) & ((out.slot >> FB) < 30)
    assert set(np.unique(out.pattern[inside])) <= {PATTERN_PSI_PLUS, PATTERN_PSI_MINUS}
    assert not np.isin(out.slot[inside], honest.slot).all()
    assert (~inside).sum() > 100
