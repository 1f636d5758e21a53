"""Sifting: the flip rule, hand-made announcements, pair counts, and a sampled round.

The sampled round (fast sampler, 2×25 km, random three-intensity settings, 10⁹ slots) checks that
the sifted keys of Alice and Bob differ only by the physical errors: per class, the measured gain
(detections / sent pairs from ``sent_pairs``) and error rate are binomial z-scores against the exact
model (tests/stats.py, false-alarm level 1e-4 per assertion).
"""

from __future__ import annotations

import numpy as np
import pytest

from channel.analytic import exact_class_statistics
from channel.fiber import Fiber
from channel.link import Link
from channel.samplers import sample
from channel.settings import SettingsGenerator, three_intensity_plan
from channel.source import Source
from classical.sifting import (
    BASIS_X,
    BASIS_Z,
    FAIL,
    PSI_MINUS,
    PSI_PLUS,
    SiftedData,
    bob_flip,
    class_errors,
    sent_pairs,
    sift,
    sifted_errors,
)
from nodes.relay_software import BELL_OF_PATTERN, DEFAULT_COINCIDENCE_WINDOW_PS, bell_states
from tests.stats import assert_z_scores_consistent, binomial_z


def test_flip_rule_table():
    # LCQ Table I: Bob flips every success except (X basis, ψ⁺); failures are never flipped.
    table = {(BASIS_Z, FAIL): 0, (BASIS_Z, PSI_PLUS): 1, (BASIS_Z, PSI_MINUS): 1,
             (BASIS_X, FAIL): 0, (BASIS_X, PSI_PLUS): 0, (BASIS_X, PSI_MINUS): 1}
    basis = np.array([b for b, _ in table], dtype=np.uint8)
    bell = np.array([s for _, s in table], dtype=np.uint8)
    assert bob_flip(basis, bell).tolist() == list(table.values())
    assert bob_flip(basis, bell).dtype == np.uint8


def _hand_made() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    # slot:        10  11  12  13  14  15  16  17
    bell = np.array([1, 0, 2, 1, 2, 1, 2, 1], dtype=np.uint8)
    alice = dict(basis=np.array([0, 0, 0, 1, 1, 0, 1, 1]), bit=np.array([0, 1, 1, 1, 0, 1, 1, 0]),
                 intensity=np.array([0, 0, 1, 0, 2, 0, 1, 0]))
    bob = dict(basis=np.array([0, 0, 0, 1, 1, 1, 1, 1]), bit=np.array([1, 0, 0, 1, 1, 0, 0, 0]),
               intensity=np.array([0, 1, 0, 2, 1, 0, 1, 0]))
    slots = np.arange(10, 18)
    return alice, bob, bell, slots


def _sift_both(alice, bob, bell, slots) -> tuple[SiftedData, SiftedData]:
    a = sift("alice", bell, alice["basis"], alice["bit"], alice["intensity"], bob["basis"],
             bob["intensity"], slots=slots)
    b = sift("bob", bell, bob["basis"], bob["bit"], bob["intensity"], alice["basis"],
             alice["intensity"], slots=slots)
    return a, b


def test_hand_made_announcement_sifts_to_the_expected_keys():
    alice, bob, bell, slots = _hand_made()
    a, b = _sift_both(alice, bob, bell, slots)
    # kept: successes with matching bases -> slots 10, 12, 13, 14, 16, 17 (11 failed, 15 mismatched)
    assert a.slot.tolist() == b.slot.tolist() == [10, 12, 13, 14, 16, 17]
    assert a.index.tolist() == [0, 2, 3, 4, 6, 7]
    assert a.bits.tolist() == [0, 1, 1, 0, 1, 0]
    # Bob: Z ψ⁺ flip, Z ψ⁻ flip, X ψ⁺ keep, X ψ⁻ flip, X ψ⁻ flip, X ψ⁺ keep
    assert b.bits.tolist() == [0, 1, 1, 0, 1, 0]
    assert not sifted_errors(a.bits, b.bits).any()
    assert a.announced == 8 and a.successes == 7 and len(a) == 6
    assert a.intensity_a.tolist() == b.intensity_a.tolist() == [0, 1, 0, 2, 1, 0]
    assert a.intensity_b.tolist() == b.intensity_b.tolist() == [0, 0, 2, 1, 1, 0]
    expected = np.zeros((3, 3, 2, 2), dtype=np.int64)
    for ia, ib, basis, bell_state in [(0, 0, 0, 1), (1, 0, 0, 2), (0, 2, 1, 1), (2, 1, 1, 2),
                                      (1, 1, 1, 2), (0, 0, 1, 1)]:
        expected[ia, ib, basis, bell_state - 1] += 1
    assert np.array_equal(a.detections, expected)
    assert np.array_equal(b.detections, expected)
    assert a.key_mask().tolist() == [True, False, False, False, False, False]
    assert a.mask(basis=BASIS_X, bell=PSI_PLUS).tolist() == [False, False, True, False, False, True]


def test_errors_are_counted_per_class():
    alice, bob, bell, slots = _hand_made()
    bob["bit"] = bob["bit"].copy()
    bob["bit"][[2, 6]] ^= 1  # a Z-basis (nu, mu) error and an X-basis (nu, nu) error
    a, b = _sift_both(alice, bob, bell, slots)
    errors = class_errors(a, b.bits)
    assert errors.sum() == 2
    assert errors[1, 0, BASIS_Z, PSI_MINUS - 1] == 1
    assert errors[1, 1, BASIS_X, PSI_MINUS - 1] == 1
    x_only = class_errors(a, b.bits, where=a.basis == BASIS_X)
    assert x_only.sum() == 1 and x_only[1, 1, BASIS_X, PSI_MINUS - 1] == 1


def test_bad_inputs_are_rejected():
    alice, bob, bell, slots = _hand_made()
    with pytest.raises(ValueError, match="role"):
        sift("charles", bell, alice["basis"], alice["bit"], alice["intensity"], bob["basis"],
             bob["intensity"])
    with pytest.raises(ValueError, match="equal length"):
        sift("alice", bell[:-1], alice["basis"], alice["bit"], alice["intensity"], bob["basis"],
             bob["intensity"])
    with pytest.raises(ValueError, match="out of range"):
        sift("alice", bell, alice["basis"], alice["bit"], alice["intensity"] + 3, bob["basis"],
             bob["intensity"])


def test_empty_announcement():
    empty = np.zeros(0, dtype=np.uint8)
    a = sift("bob", empty, empty, empty, empty, empty, empty)
    assert len(a) == 0 and a.detections.shape == (3, 3, 2, 2) and a.detections.sum() == 0


def test_sent_pairs_single_block_is_product_of_marginals():
    sent_a = np.array([40, 10, 20, 10, 15, 5])  # combos (mu,Z) (mu,X) (nu,Z) (nu,X) (om,Z) (om,X)
    sent_b = np.array([30, 20, 10, 20, 10, 10])
    pairs = sent_pairs(sent_a, sent_b, 100)
    assert pairs.shape == (3, 3, 2)
    assert pairs[0, 0, BASIS_Z] == pytest.approx(100 * 0.40 * 0.30)
    assert pairs[2, 1, BASIS_X] == pytest.approx(100 * 0.05 * 0.20)
    with pytest.raises(ValueError, match="sum to"):
        sent_pairs(sent_a, sent_b, 99)


def test_sent_pairs_per_frame_is_the_conditional_expectation_of_the_joint_count():
    # Small frames, every slot enumerated: the exact joint counts scatter around the per-frame
    # expectation with no bias (z-score of the total over 256 frames per class).
    frame_bits, n_frames = 10, 256
    plan = three_intensity_plan(0.4, 0.1, 0.0, (0.5, 0.25, 0.25))
    ga = SettingsGenerator(plan, 7, frame_bits=frame_bits)
    gb = SettingsGenerator(plan, 8, frame_bits=frame_bits)
    n = n_frames << frame_bits
    sa, sb = ga.settings_at(np.arange(n)), gb.settings_at(np.arange(n))
    same = sa.basis == sb.basis
    flat = (sa.intensity.astype(int) * 3 + sb.intensity) * 2 + sa.basis
    exact = np.bincount(flat[same], minlength=18).reshape(3, 3, 2)
    per_frame = np.array([ga.frame_counts(f) for f in range(n_frames)])
    per_frame_b = np.array([gb.frame_counts(f) for f in range(n_frames)])
    expected = sent_pairs(per_frame, per_frame_b, 1 << frame_bits)
    assert expected.sum() == pytest.approx(same.sum(), rel=0.02)
    z = (exact - expected) / np.sqrt(expected)  # hypergeometric variance ≤ the mean
    assert np.abs(z).max() < 4.5, z
    single = sent_pairs(ga.sent_counts(0, n), gb.sent_counts(0, n), n)
    assert np.allclose(single, expected, rtol=0.05)


def test_sampled_round_keys_differ_only_by_physical_errors():
    slots, e_d = 10**9, 0.015
    plan = three_intensity_plan(0.4, 0.1, 0.0, (0.5, 0.25, 0.25))
    link = Link(Source(plan, bit_flip_probability=e_d), Source(plan), Fiber(25.0), Fiber(25.0))
    ga, gb = SettingsGenerator(plan, 31), SettingsGenerator(plan, 32)
    out = sample(link, ga, gb, 0, slots, seed=33, sampler="fast")
    bell = bell_states(out.records, DEFAULT_COINCIDENCE_WINDOW_PS)
    announced = bell != FAIL
    slot = out.records.slot[announced]
    sa, sb = ga.settings_at(slot), gb.settings_at(slot)
    a = sift("alice", bell[announced], sa.basis, sa.bit, sa.intensity, sb.basis, sb.intensity,
             slots=slot)
    b = sift("bob", bell[announced], sb.basis, sb.bit, sb.intensity, sa.basis, sa.intensity,
             slots=slot)
    assert np.array_equal(a.slot, b.slot) and np.array_equal(a.detections, b.detections)
    pairs = sent_pairs(ga.sent_counts(0, slots), gb.sent_counts(0, slots), slots)
    errors = class_errors(a, b.bits)
    t = link.fiber_a.transmittance
    mus = plan.mean_photon_numbers
    z = []
    for ia in range(3):
        for ib in range(3):
            for basis in (BASIS_Z, BASIS_X):
                st = exact_class_statistics(basis, mus[ia], mus[ib], t, t, flip_misalignment=e_d,
                                            bell_of_pattern=BELL_OF_PATTERN)
                n_pairs = pairs[ia, ib, basis]
                if n_pairs * st.gain < 50:
                    continue
                d = int(a.detections[ia, ib, basis].sum())
                z.append(binomial_z(d, n_pairs, st.gain))
                z.append(binomial_z(int(errors[ia, ib, basis].sum()), d, st.error_rate))
    assert len(z) >= 16
    assert_z_scores_consistent(z, "sifted gains and error rates")
    key = a.key_mask()
    qber_z = sifted_errors(a.bits[key], b.bits[key]).mean()
    assert 0.005 < qber_z < 0.03  # E_Z ≈ e_d for Z-basis signal pulses


def test_four_intensity_classes_and_an_explicit_key_class():
    # Alice's intensities 0..3 and Bob's; bases match on every slot
    bell = np.array([PSI_PLUS, PSI_MINUS, PSI_PLUS, PSI_PLUS, PSI_MINUS], np.uint8)
    basis = np.array([0, 0, 1, 1, 0], np.uint8)
    ia = np.array([0, 0, 3, 1, 3], np.uint8)
    ib = np.array([0, 0, 2, 3, 0], np.uint8)
    bits = np.zeros(5, np.uint8)
    a = sift("alice", bell, basis, bits, ia, basis, ib, n_intensities=(4, 4))
    assert a.detections.shape == (4, 4, 2, 2)
    assert a.detections[0, 0, BASIS_Z].tolist() == [1, 1]
    assert a.detections[3, 2, BASIS_X, 0] == 1 and a.detections[1, 3, BASIS_X, 0] == 1
    assert a.key_mask().tolist() == [True, True, False, False, False]
    assert a.key_mask(key_intensity=(3, 0)).tolist() == [False, False, False, False, True]
    with pytest.raises(ValueError, match="out of range"):
        sift("alice", bell, basis, bits, ia, basis, ib)  # the three-intensity default
