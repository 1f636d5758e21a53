"""Charles's software faults (nodes/relay_faults.py) against their exact expectations.

Honest records of the quick-start link (frames of 2^16 slots) go through Charles's decision and
then through his faults. Each statistical assertion holds a count to its exact law (binomial, or
the exact model of docs/physics.md §5 for the classes it keeps) at the false-alarm budget of
tests/stats.py (ALPHA = 1e-4 per test, ``z_bound`` shared by the test's assertions); where the
expectation is known only within a stated interval (the fakes avoid the honest successes' slots;
rounding of click times to whole ps), the interval is added to the tolerance, never a number
copied from a run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from channel.analytic import exact_frame_statistics
from channel.relay import NO_CLICK_TIME, DetectionRecords
from channel.samplers import sample
from channel.timeline import TimelineEntry
from classical.sifting import BASIS_X, BASIS_Z, FAIL, PSI_MINUS, PSI_PLUS
from nodes.relay_faults import RelayMisbehaviour, charles_entries
from nodes.relay_software import BELL_OF_PATTERN, bell_successes, decide_batch
from orchestration.config import DEFAULT_SCENARIO, build_link, build_settings, load_scenario
from tests.stats import binomial_z, z_bound

FB = 16
N_SLOTS = 256 << FB
WINDOW_PS = 1000.0


@pytest.fixture(scope="module")
def honest():
    s = load_scenario(DEFAULT_SCENARIO, {"frame_bits": FB})
    link = build_link(s)
    alice, bob = build_settings(s, "alice"), build_settings(s, "bob")
    assert not link.physics(0, N_SLOTS).bob_slot_offset.any()  # slot s meets slot s
    out = sample(link, alice, bob, 0, N_SLOTS, 3)
    slots, bell = bell_successes(out.records, WINDOW_PS)
    return link, alice, bob, out.records, slots, bell


def relay(kind: str, params: dict, at_s: float = 0.0, duration_s: float | None = None,
          seed: int = 5) -> RelayMisbehaviour:
    entry = TimelineEntry(at_s, "f", kind, "relay", params, duration_s)
    m = RelayMisbehaviour.from_timeline([entry], seed, 1e9, FB)
    assert m is not None
    return m


def sifted(alice, bob, slots, bell):
    """Per slot: both users in Z, both in X, and (where they agree on the basis) whether Bob's
    bit after his flip differs from Alice's (he flips except for X-basis ψ⁺)."""
    a, b = alice.settings_at(slots), bob.settings_at(slots)
    zz = (a.basis == BASIS_Z) & (b.basis == BASIS_Z)
    xx = (a.basis == BASIS_X) & (b.basis == BASIS_X)
    flip = ~((a.basis == BASIS_X) & (bell == PSI_PLUS))
    error = a.bit != (b.bit ^ flip)
    return zz, xx, error


def within(observed: int, trials: int, p_lo: float, p_hi: float, z: float) -> bool:
    """``observed`` ~ Binomial(trials, p) for some p in [p_lo, p_hi], at |z| ≤ ``z``."""
    p_lo, p_hi = max(p_lo, 0.0), min(p_hi, 1.0)
    lo = trials * p_lo - z * math.sqrt(trials * p_lo * (1 - p_lo))
    hi = trials * p_hi + z * math.sqrt(trials * p_hi * (1 - p_hi))
    return lo <= observed <= hi


def basis_pair_probabilities(alice, bob) -> tuple[float, float]:
    """P(both Z), P(both X) at a uniform slot of [0, N_SLOTS): from each frame's class counts
    (the users' permutations place them independently)."""
    zz = xx = 0.0
    frames = N_SLOTS >> FB
    for f in range(frames):
        za = alice.frame_counts(f)[0::2].sum() / (1 << FB)
        zb = bob.frame_counts(f)[0::2].sum() / (1 << FB)
        zz += za * zb / frames
        xx += (1 - za) * (1 - zb) / frames
    return zz, xx


def test_only_the_relay_software_faults_reach_charles():
    entries = [
        TimelineEntry(0.0, "fake", "malicious_relay", "relay", {"mode": "fake_announcements"}),
        TimelineEntry(0.0, "ir", "malicious_relay", "relay", {"mode": "intercept_resend"}),
        TimelineEntry(0.0, "cut", "fiber_cut", "link/bob-charles"),
        TimelineEntry(0.1, "bug", "relay_firmware_bug", "relay", {"spurious_fraction": 0.1}),
        TimelineEntry(0.2, "clear-cut", "clear_faults", "link/bob-charles", is_action=True),
        TimelineEntry(0.3, "clear-relay", "clear_faults", "relay", is_action=True)]
    assert [e.name for e in charles_entries(entries)] == ["fake", "bug", "clear-relay"]
    m = RelayMisbehaviour.from_timeline(charles_entries(entries), 1, 1e9, FB)
    assert m is not None and [(f.name, f.end_s) for f in m.faults] == [("fake", 0.3),
                                                                        ("bug", 0.3)]
    assert RelayMisbehaviour.from_timeline(entries[1:3], 1, 1e9, FB) is None


def test_fake_announcements_keep_the_rate_and_err_half_the_time_in_both_bases(honest):
    """Half the successes replaced by fakes: exactly as many announcements; Binomial(H, ½)
    replaced; the fakes, uniform over the slots without a success, agree on the basis with the
    users' basis-pair probabilities and err with half of that, ψ⁺ half the time. Restricting a
    uniform slot to the complement of the E success slots moves any slot probability by at most
    δ = E / (N − E), which widens each interval."""
    _, alice, bob, _, slots, bell = honest
    m = relay("malicious_relay", {"mode": "fake_announcements", "fraction": 0.5})
    out_slots, out_bell = m.rewrite(slots, bell, 0, N_SLOTS)
    assert out_slots.size == slots.size and np.all(np.diff(out_slots) > 0)
    kept = np.isin(out_slots, slots)
    assert np.array_equal(out_bell[kept], bell[np.isin(slots, out_slots)])  # kept as decided
    fake_slots, fake_bell = out_slots[~kept], out_bell[~kept]
    k, h = fake_slots.size, slots.size
    p_zz, p_xx = basis_pair_probabilities(alice, bob)
    delta = h / (N_SLOTS - h)
    zz, xx, error = sifted(alice, bob, fake_slots, fake_bell)
    z = z_bound(7)
    assert abs(binomial_z(k, h, 0.5)) <= z
    assert abs(binomial_z(int((fake_bell == PSI_PLUS).sum()), k, 0.5)) <= z
    assert within(int(zz.sum()), k, p_zz - delta, p_zz + delta, z)
    assert within(int(xx.sum()), k, p_xx - delta, p_xx + delta, z)
    assert within(int((zz & error).sum()), k, p_zz / 2 - delta, p_zz / 2 + delta, z)
    assert within(int((xx & error).sum()), k, p_xx / 2 - delta, p_xx / 2 + delta, z)
    # and the honest X errors are far below ½: the fakes raise QBER_X
    hzz, hxx, herr = sifted(alice, bob, slots, bell)
    assert within(int((hxx & herr).sum()), int(hxx.sum()), 0.0, 0.4, z)


def test_full_fake_announcements_announce_no_success_at_all(honest):
    _, _, _, _, slots, bell = honest
    out_slots, out_bell = relay("malicious_relay", {"mode": "fake_announcements"}).rewrite(
        slots, bell, 0, N_SLOTS)
    assert out_slots.size == slots.size and not np.isin(out_slots, slots).any()
    assert set(np.unique(out_bell)) <= {PSI_PLUS, PSI_MINUS}


def test_biased_postselection_announces_only_the_chosen_states(honest):
    _, _, _, _, slots, bell = honest
    for announce, keep in ((["psi_minus"], PSI_MINUS), (["psi_plus"], PSI_PLUS)):
        m = relay("malicious_relay", {"mode": "biased_postselection", "announce": announce})
        out_slots, out_bell = m.rewrite(slots, bell, 0, N_SLOTS)
        assert np.array_equal(out_slots, slots[bell == keep])
        assert np.array_equal(out_bell, bell[bell == keep])
    default = relay("malicious_relay", {"mode": "biased_postselection"})
    assert np.array_equal(default.rewrite(slots, bell, 0, N_SLOTS)[0], slots[bell == PSI_MINUS])
    both = relay("malicious_relay", {"mode": "biased_postselection",
                                     "announce": ["psi_plus", "psi_minus"]})
    assert np.array_equal(both.rewrite(slots, bell, 0, N_SLOTS)[0], slots)


def test_biased_postselection_of_a_share_drops_that_share_of_the_other_state(honest):
    _, _, _, _, slots, bell = honest
    m = relay("malicious_relay", {"mode": "biased_postselection", "fraction": 0.3})
    out_slots, out_bell = m.rewrite(slots, bell, 0, N_SLOTS)
    assert np.array_equal(out_slots[out_bell == PSI_MINUS], slots[bell == PSI_MINUS])
    plus = int((bell == PSI_PLUS).sum())
    assert abs(binomial_z(plus - int((out_bell == PSI_PLUS).sum()), plus, 0.3)) <= z_bound()


def test_biased_postselection_matches_the_exact_model_of_the_announced_state(honest):
    """ψ⁻ only: each class's announcements and sifted errors follow the exact model (§5) with
    the ψ⁺ patterns counted as failures (``bell_of_pattern``), Z and X, bright and weak."""
    link, alice, bob, _, slots, bell = honest
    out_slots, out_bell = relay("malicious_relay", {"mode": "biased_postselection"}).rewrite(
        slots, bell, 0, N_SLOTS)
    minus_only = np.where(BELL_OF_PATTERN == PSI_PLUS, FAIL, BELL_OF_PATTERN)
    every = np.arange(N_SLOTS, dtype=np.int64)
    sa, sb = alice.settings_at(every), bob.settings_at(every)
    ann_a, ann_b = alice.settings_at(out_slots), bob.settings_at(out_slots)
    zz, xx, error = sifted(alice, bob, out_slots, out_bell)
    scores = []
    for basis, ia, ib in ((BASIS_Z, 0, 0), (BASIS_Z, 1, 0), (BASIS_X, 1, 1), (BASIS_X, 0, 1)):
        sent = int(((sa.basis == basis) & (sb.basis == basis) & (sa.intensity == ia)
                    & (sb.intensity == ib)).sum())
        here = ((ann_a.basis == basis) & (ann_b.basis == basis) & (ann_a.intensity == ia)
                & (ann_b.intensity == ib))
        st = exact_frame_statistics(link, alice.plan, bob.plan, 0, basis, ia, ib,
                                    bell_of_pattern=minus_only)
        assert st.gain_psi_plus == 0.0
        scores.append(binomial_z(int(here.sum()), sent, st.gain))
        scores.append(binomial_z(int((here & error).sum()), sent, st.gain * st.error_rate))
    assert zz.any() and xx.any()
    assert np.abs(scores).max() <= z_bound(len(scores)), scores


def test_a_fault_acts_on_its_window_only(honest):
    """From frame 64 for 64 frames (times in frames of 2^16 slots): outside, the honest
    announcements exactly; inside, none of them."""
    _, _, _, _, slots, bell = honest
    frame_s = (1 << FB) / 1e9
    m = relay("malicious_relay", {"mode": "fake_announcements"}, at_s=64 * frame_s,
              duration_s=64 * frame_s)
    out_slots, out_bell = m.rewrite(slots, bell, 0, N_SLOTS)
    lo, hi = 64 << FB, 128 << FB
    outside = (slots < lo) | (slots >= hi)
    out_outside = (out_slots < lo) | (out_slots >= hi)
    assert np.array_equal(out_slots[out_outside], slots[outside])
    assert np.array_equal(out_bell[out_outside], bell[outside])
    assert out_outside.sum() < out_slots.size
    assert not np.isin(out_slots[~out_outside], slots).any()
    # the same batch again, and the same slots cut into two batches: the same announcements
    again = m.rewrite(slots, bell, 0, N_SLOTS)
    assert np.array_equal(again[0], out_slots) and np.array_equal(again[1], out_bell)


def test_a_firmware_bug_s_timing_noise_drops_patterns_as_the_gaussian_spread_says(honest):
    """Click times carry the detectors' jitter σ_j (each rounded to a ps), the bug adds
    rint(σ z) to each: a Bell pattern's spread is N(0, 2(σ_j² + σ²)) within ±2 ps, so it stays
    within the 1000 ps window with a probability between those of W − 2 and W + 2."""
    link, _, _, records, slots, _ = honest
    sigma = 700.0
    m = relay("relay_firmware_bug", {"timing_noise_ps": sigma})
    noisy = m.noisy_records(records, 0, N_SLOTS)
    assert np.array_equal(noisy.slot, records.slot)
    assert np.array_equal(noisy.time_ps == NO_CLICK_TIME, records.time_ps == NO_CLICK_TIME)
    kept, _ = bell_successes(noisy, WINDOW_PS)
    assert np.isin(kept, slots).all()
    jitter = float(link.relay.jitters_ps.max())
    assert np.all(link.relay.jitters_ps == jitter)
    spread = math.sqrt(2 * (jitter ** 2 + sigma ** 2))
    p_lo, p_hi = (2 * sst.norm.cdf((WINDOW_PS + e) / spread) - 1 for e in (-2.0, 2.0))
    assert within(kept.size, slots.size, p_lo, p_hi, z_bound())
    assert kept.size < slots.size * 0.95


def test_a_firmware_bug_s_spurious_announcements_come_on_top(honest):
    _, _, _, _, slots, bell = honest
    m = relay("relay_firmware_bug", {"spurious_fraction": 0.2})
    out_slots, out_bell = decide_batch(DetectionRecords(np.zeros(0, np.int64),
                                                        np.zeros(0, np.uint8),
                                                        np.zeros((0, 4), np.int64)),
                                       0, N_SLOTS, _config(), m)
    assert out_slots.size == 0  # nothing honest, nothing spurious
    out_slots, out_bell = m.rewrite(slots, bell, 0, N_SLOTS)
    assert np.isin(slots, out_slots).all() and np.all(np.diff(out_slots) > 0)
    spurious = ~np.isin(out_slots, slots)
    k, h = int(spurious.sum()), slots.size
    z = z_bound(3)
    assert abs(binomial_z(k, h, 0.2)) <= z
    # at uniform slots without an announcement (δ as for the fakes): errors ½ in a matched basis
    _, alice, bob, _, _, _ = honest
    p_zz, p_xx = basis_pair_probabilities(alice, bob)
    delta = h / (N_SLOTS - h)
    zz, xx, error = sifted(alice, bob, out_slots[spurious], out_bell[spurious])
    assert within(int((zz & error).sum()), k, p_zz / 2 - delta, p_zz / 2 + delta, z)
    assert within(int((xx & error).sum()), k, p_xx / 2 - delta, p_xx / 2 + delta, z)


def _config():
    from nodes.relay_software import CharlesConfig

    return CharlesConfig(WINDOW_PS)
