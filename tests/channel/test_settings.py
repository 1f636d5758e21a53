"""Counter-based settings: exact counts, order independence, a true permutation."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from channel.rng import (
    feistel_invert_rk,
    feistel_permute,
    feistel_permute_rk,
    feistel_round_keys,
    hash2,
)
from channel.settings import (
    _BIT_SALT,
    IntensityClass,
    SettingsGenerator,
    SettingsPlan,
    bit_hash_key,
    four_intensity_plan,
    lookup_bit_hk,
    lookup_combo_rk,
    three_intensity_plan,
)


def test_feistel_is_a_permutation():
    bits = 10
    image = {int(feistel_permute(np.uint64(42), np.uint64(x), bits)) for x in range(1 << bits)}
    assert image == set(range(1 << bits))


@njit
def _feistel_mismatches(keys, bits):
    round_keys = feistel_round_keys(keys)
    bad = 0
    for i in range(keys.size):
        for x in range(1 << bits):
            y = feistel_permute_rk(round_keys[i], np.uint64(x), bits)
            bad += y != feistel_permute(keys[i], np.uint64(x), bits)
            bad += feistel_invert_rk(round_keys[i], y, bits) != x
    return bad


def test_hoisted_feistel_equals_the_definition_and_inverts_it():
    keys = np.array([0, 42, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    assert _feistel_mismatches(keys, 10) == 0
    assert _feistel_mismatches(keys[:1], 16) == 0


def test_hoisted_lookups_equal_the_definitions():
    gen = SettingsGenerator(three_intensity_plan(), key=2**63 + 77, frame_bits=12)
    slots = np.random.default_rng(3).integers(0, 40 << 12, 20_000)
    table = gen.table(0, 39)
    got = gen.settings_at(slots)  # the hoisted kernels
    # the definitions: a frame's Feistel permutation places the slot at a position whose class
    # the cumulative counts give; the bit is the top bit of a keyed hash of the slot
    frames, local = slots[:2000] >> 12, slots[:2000] & 4095
    positions = [int(feistel_permute(table.frame_keys[f], np.uint64(x), 12))
                 for f, x in zip(frames, local, strict=True)]
    combo = np.array([np.searchsorted(table.cum_counts[f], p, side="right")
                      for f, p in zip(frames, positions, strict=True)])
    bits = np.array([int(hash2(np.uint64(gen.key) ^ _BIT_SALT, np.uint64(s))) >> 63
                     for s in slots])
    hk = bit_hash_key(gen.key)
    assert np.array_equal(bits, [lookup_bit_hk(s, hk) for s in slots])
    assert np.array_equal(got.bit, bits)
    assert np.array_equal(2 * got.intensity[:2000].astype(int) + got.basis[:2000], combo)
    rk = feistel_round_keys(table.frame_keys)
    assert np.array_equal(combo, [lookup_combo_rk(s, table.first_frame, rk, table.cum_counts, 12)
                                  for s in slots[:2000]])


def test_sent_counts_equal_enumeration_over_partial_frames():
    gen = SettingsGenerator(three_intensity_plan(), key=7, frame_bits=10)
    start, stop = 333, 5 * 1024 + 77
    s = gen.settings_at(np.arange(start, stop))
    enumerated = np.bincount(2 * s.intensity.astype(int) + s.basis, minlength=6)
    assert gen.sent_counts(start, stop).tolist() == enumerated.tolist()


def test_settings_do_not_depend_on_query_order():
    gen = SettingsGenerator(three_intensity_plan(), key=99, frame_bits=12)
    slots = np.random.default_rng(0).integers(0, 1 << 20, 5000)
    a = gen.settings_at(slots)
    order = np.argsort(slots)
    b = SettingsGenerator(three_intensity_plan(), key=99, frame_bits=12).settings_at(slots[order])
    assert np.array_equal(a.bit[order], b.bit)
    assert np.array_equal(a.intensity[order], b.intensity)
    assert np.array_equal(a.basis[order], b.basis)


def test_class_frequencies_follow_the_plan():
    plan = three_intensity_plan(probabilities=(0.6, 0.3, 0.1), z_probability=0.8)
    gen = SettingsGenerator(plan, key=3)
    counts = gen.sent_counts(0, 64 << 20)
    n = counts.sum()
    expected = plan.combo_probabilities * n
    z = (counts - expected) / np.sqrt(expected * (1 - plan.combo_probabilities))
    assert np.abs(z).max() < 5  # multinomial: per-combo false alarm < 1e-6
    bits = gen.settings_at(np.arange(1 << 20)).bit
    assert abs(bits.mean() - 0.5) < 5 * 0.5 / 1024


def test_different_keys_give_different_settings():
    a = SettingsGenerator(three_intensity_plan(), 1).settings_at(np.arange(4096))
    b = SettingsGenerator(three_intensity_plan(), 2).settings_at(np.arange(4096))
    assert (a.bit != b.bit).mean() > 0.4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"name": "x", "mean_photon_number": -1, "probability": 1}, "mean_photon_number"),
     ({"name": "x", "mean_photon_number": 1, "probability": 1.5}, "probability"),
     ({"name": "x", "mean_photon_number": 1, "probability": 1, "z_probability": -0.1},
      "z_probability")])
def test_bad_intensity_classes_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IntensityClass(**kwargs)


def test_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        SettingsPlan((IntensityClass("a", 0.5, 0.5), IntensityClass("b", 0.1, 0.4)))
    with pytest.raises(ValueError, match="mu > nu > omega"):
        three_intensity_plan(mu=0.1, nu=0.2)


def test_preloaded_counts_are_the_ones_used_and_are_checked():
    gen = SettingsGenerator(three_intensity_plan(), key=5, frame_bits=10)
    counts = np.array([[1024, 0, 0, 0, 0, 0]])
    gen.preload(3, counts)
    s = gen.settings_at(np.arange(3 * 1024, 4 * 1024))
    assert set(s.intensity.tolist()) == {0} and set(s.basis.tolist()) == {0}
    with pytest.raises(ValueError, match="sum to 1024"):
        gen.preload(0, np.array([[1, 0, 0, 0, 0, 0]]))


def test_four_intensity_plan_sends_the_signal_only_in_z_and_the_decoys_only_in_x():
    plan = four_intensity_plan(0.5, 0.3, 0.05, (0.4, 0.2, 0.3, 0.1), vacuum_z_probability=0.25)
    assert [c.name for c in plan.intensities] == ["s", "mu", "nu", "o"]
    assert plan.mean_photon_numbers.tolist() == [0.5, 0.3, 0.05, 0.0]
    p = plan.combo_probabilities.reshape(4, 2)  # (intensity, basis)
    assert np.allclose(p, [[0.4, 0.0], [0.0, 0.2], [0.0, 0.3], [0.025, 0.075]], rtol=0, atol=1e-15)
    gen = SettingsGenerator(plan, key=11, frame_bits=12)
    s = gen.settings_at(np.arange(8 * gen.frame_size))
    assert set(s.basis[s.intensity == 0].tolist()) == {0}
    assert set(s.basis[(s.intensity == 1) | (s.intensity == 2)].tolist()) == {1}
    assert set(s.basis[s.intensity == 3].tolist()) == {0, 1}


def test_four_intensity_plan_rejects_a_bad_layout():
    with pytest.raises(ValueError, match="mu > nu > 0"):
        four_intensity_plan(mu=0.05, nu=0.1)
    with pytest.raises(ValueError, match="signal"):
        four_intensity_plan(signal=0.35, mu=0.35)
    with pytest.raises(ValueError, match="sum to 1"):
        four_intensity_plan(probabilities=(0.5, 0.2, 0.2, 0.2))
