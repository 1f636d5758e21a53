"""Timing faults: ``clock_offset``, ``clock_skew`` and ``jitter`` on a source's clock or the
relay's (channel/impairments.py ``FaultSchedule.clock_effects``, docs/physics.md §9).

The predictions are written here from the physics, independently of the fault code:

* a source's clock error δt moves the Alice–Bob arrival offset, so the mode overlap is
  |γ| = exp(−δt²/(8τ²)) (docs/physics.md §5) and every class follows the general formula with that
  γ; past half a slot, pulses of neighbouring slots meet, Bob's sent bit is independent of the
  light, and every sifted error rate is exactly 1/2;
* the relay's clock error Δ shifts every timestamp by Δ (which the coincidence window, a spread
  between clicks, does not see), and past half a slot the relay labels each event with the slot
  its clock says, s + round(Δ/slot): sifted errors 1/2 again;
* extra jitter σ on the relay's time tags spreads the two clicks of a Bell pattern by a difference
  of rms σ√2, so the share of Bell patterns Charles keeps is erf(W / (2σ)) for a window W.

Statistics as in tests/channel/test_impairments.py: binomial z-scores, χ²/dof and max|z| at the
false-alarm probability ``tests.stats.ALPHA`` = 10⁻⁴ per assertion (``assert_z_scores_consistent``,
``z_bound``); the per-frame physics, the removal and determinism are checked exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from channel.analytic import exact_class_statistics, exact_frame_statistics
from channel.impairments import FaultSchedule
from channel.link import Link
from channel.samplers import sample
from nodes.relay_software import BELL_OF_PATTERN, DEFAULT_COINCIDENCE_WINDOW_PS, bell_states
from tests.channel.test_impairments import (
    DARK,
    EFF,
    FB,
    FRAME_S,
    PLAN,
    RUN,
    T_ARM,
    WINDOW,
    _class_z,
    _exact,
    _key_z,
    _measure,
    clear,
    fault,
    link_with,
    users,
)
from tests.stats import (
    assert_normal_sample_consistent,
    assert_z_scores_consistent,
    binomial_z,
    z_bound,
)

TAU_PS = Link.pulse_rms_ps  # the link's default pulse duration (rms, ps)
SLOT_PS = 1000.0  # 1 GHz


def _gamma(delta_t_ps: float) -> float:
    return math.exp(-delta_t_ps**2 / (8 * TAU_PS**2))


def _exact_gamma(gamma: float):
    def stats_of(basis, mu_a, mu_b):
        return exact_class_statistics(basis, mu_a, mu_b, T_ARM, T_ARM, None, None, EFF, DARK,
                                      gamma, bell_of_pattern=BELL_OF_PATTERN)
    return stats_of


def _window_link(kind: str, target: str, params: dict) -> Link:
    return link_with(fault(WINDOW[0], "t", kind, target, params), clear(WINDOW[1], "rollback"))


# --- per frame, exactly ----------------------------------------------------------------------


def test_a_source_offset_moves_the_arrival_offset_and_the_overlap_inside_its_window_only():
    link = link_with(fault(2, "late", "clock_offset", "source/bob", {"offset_ps": 120.0},
                           frames=3),
                     fault(4, "early", "clock_offset", "source/alice", {"offset_ps": 30.0}),
                     clear(8, "all"))
    ph = link.physics(0, 10 << FB)
    dt = np.array([0, 0, 120, 120, 90, 0 - 30, -30, -30, 0, 0], float)
    np.testing.assert_array_equal(ph.residual_offset_ps, dt)
    np.testing.assert_allclose(ph.gamma, [_gamma(x) for x in dt], rtol=1e-14)
    assert not ph.bob_slot_offset.any() and not ph.relay_error_ps.any()


def test_past_half_a_slot_pulses_of_neighbouring_slots_meet():
    ph = _window_link("clock_offset", "source/bob", {"offset_ps": 1.3 * SLOT_PS}).physics(
        0, RUN << FB)
    inside = np.zeros(RUN, bool)
    inside[WINDOW[0]:WINDOW[1]] = True
    # Bob's clock late by 1.3 slots: Alice's slot s meets Bob's slot s − 1, 0.3 slot apart
    assert (ph.bob_slot_offset[inside] == -1).all() and not ph.bob_slot_offset[~inside].any()
    np.testing.assert_allclose(ph.residual_offset_ps[inside], 0.3 * SLOT_PS, rtol=1e-12)
    np.testing.assert_allclose(ph.gamma[inside], _gamma(0.3 * SLOT_PS), rtol=1e-12)


def test_a_skew_grows_the_offset_linearly_from_its_start_and_is_gone_when_it_ends():
    skew_ppm = 0.05
    link = link_with(fault(3, "skew", "clock_skew", "source/alice", {"skew_ppm": skew_ppm},
                           frames=6))
    ph = link.physics(0, 12 << FB)
    elapsed_s = np.clip(np.arange(12) - 3, 0, None) * FRAME_S
    expected = np.where(np.arange(12) < 9, -skew_ppm * 1e-6 * elapsed_s * 1e12, 0.0)
    np.testing.assert_allclose(ph.residual_offset_ps, expected, rtol=1e-12, atol=1e-12)
    assert ph.residual_offset_ps[8] == pytest.approx(-5 * skew_ppm * FRAME_S * 1e6)


def test_relay_faults_move_its_timestamps_not_the_optics():
    link = link_with(fault(1, "off", "clock_offset", "relay", {"offset_ps": 250.0}),
                     fault(2, "skew", "clock_skew", "relay", {"skew_ppm": -1.0}),
                     fault(3, "jit", "jitter", "relay", {"jitter_ps": 40.0}),
                     fault(3, "src", "jitter", "source/bob", {"jitter_ps": 30.0}),
                     clear(5, "all"))
    ph, healthy = link.physics(0, 6 << FB), link_with().physics(0, 6 << FB)
    for name in ("gamma", "residual_offset_ps", "bob_slot_offset", "transmittance_a",
                 "unitary_b"):
        assert np.array_equal(getattr(ph, name), getattr(healthy, name)), name
    skew = -1.0 * 1e-6 * np.array([0, 0, 0, 1, 2, 0]) * FRAME_S * 1e12
    np.testing.assert_allclose(ph.relay_error_ps, np.array([0, 250, 250, 250, 250, 0]) + skew,
                               rtol=1e-12)
    expected = np.zeros(6)
    expected[3:5] = math.sqrt(40.0**2 + 30.0**2 / 2)  # the relay's, and Bob's half (mid-point)
    np.testing.assert_allclose(ph.click_jitter_ps, np.repeat(expected[:, None], 4, 1),
                               rtol=1e-12)


def test_the_exact_model_sees_the_overlap_of_the_faulty_frames():
    k = 2.0
    link = _window_link("clock_offset", "source/bob", {"offset_ps": k * TAU_PS})
    for frame, gamma in ((WINDOW[0], math.exp(-k**2 / 8)), (WINDOW[1], 1.0)):
        for basis in (0, 1):
            got = exact_frame_statistics(link, PLAN, PLAN, frame, basis, 0, 1,
                                         bell_of_pattern=BELL_OF_PATTERN)
            want = _exact_gamma(gamma)(basis, PLAN.mean_photon_numbers[0],
                                       PLAN.mean_photon_numbers[1])
            assert got.gain == pytest.approx(want.gain, rel=1e-12)
            assert got.error_rate == pytest.approx(want.error_rate, rel=1e-12)


# --- sampled effects against the exact model ---------------------------------------------------


def _inside_and_outside(measured, inside_stats, min_classes=8):
    lo, hi = WINDOW[0] << FB, WINDOW[1] << FB
    z_in = _class_z(measured, lo, hi, inside_stats)
    z_out = _class_z(measured, 0, lo, _exact()) + _class_z(measured, hi, RUN << FB, _exact())
    assert len(z_in) >= min_classes and len(z_out) >= 16
    assert_z_scores_consistent(z_in, "inside the fault")
    assert_z_scores_consistent(z_out, "outside the fault (healthy, after the rollback)")


def test_an_offset_of_two_pulse_widths_lowers_the_visibility_as_the_exact_model_says():
    """δt = 2τ: |γ| = e^(−1/2), HOM visibility |γ|² = e^(−1) ≈ 0.37; X-basis errors rise."""
    link = _window_link("clock_offset", "source/bob", {"offset_ps": 2 * TAU_PS})
    measured = _measure(link, 0, RUN << FB, 22)
    _inside_and_outside(measured, _exact_gamma(math.exp(-0.5)))
    # the X basis's errors inside the window reject the healthy link's at the false-alarm budget
    assert _x_error_z(measured, WINDOW, _exact()) > z_bound()


def test_the_reference_sampler_sees_the_same_offset():
    link = link_with(fault(2, "t", "clock_offset", "source/bob", {"offset_ps": 2 * TAU_PS}),
                     clear(10, "rollback"))
    measured = _measure(link, 0, 12 << FB, 21, "reference")
    z = _class_z(measured, 2 << FB, 10 << FB, _exact_gamma(math.exp(-0.5)), min_events=20)
    assert len(z) >= 4
    assert_z_scores_consistent(z, "reference sampler, inside the fault")


def _x_error_z(measured, frames, stats_of) -> float:
    """z of the X basis's sifted errors in ``frames``, every intensity pair pooled, against
    ``stats_of``'s error rates: given the successes d_c of each class, a sum of binomials
    (mean Σ d_c e_c, variance Σ d_c e_c (1 − e_c))."""
    _, slots, sa, sb, err = measured
    lo, hi = frames[0] << FB, frames[1] << FB
    here = (slots >= lo) & (slots < hi) & (sa.basis == 1) & (sb.basis == 1)
    mu = PLAN.mean_photon_numbers
    mean = var = observed = 0.0
    for ia in range(mu.size):
        for ib in range(mu.size):
            sel = here & (sa.intensity == ia) & (sb.intensity == ib)
            e = stats_of(1, float(mu[ia]), float(mu[ib])).error_rate
            observed += float(err[sel].sum())
            mean += sel.sum() * e
            var += sel.sum() * e * (1 - e)
    return (observed - mean) / math.sqrt(var)


def _sifted_error_z(measured, lo: int, hi: int, p: float) -> list[float]:
    """z-scores of the sifted errors per basis in slots [lo, hi) against the rate ``p``."""
    _, slots, sa, sb, err = measured
    z = []
    for basis in (0, 1):
        sel = (slots >= lo) & (slots < hi) & (sa.basis == basis) & (sb.basis == basis)
        assert sel.sum() > 500
        z.append(binomial_z(int(err[sel].sum()), int(sel.sum()), p))
    return z


@pytest.mark.parametrize("target, offset_ps", [("source/bob", 1.0 * SLOT_PS),
                                               ("source/alice", -2.0 * SLOT_PS),
                                               ("relay", 1.2 * SLOT_PS)])
def test_an_offset_past_half_a_slot_makes_every_sifted_bit_a_coin_toss(target, offset_ps):
    """The users sift bits of slots whose light another slot's settings made: in both bases the
    error rate is exactly 1/2 (the bits are independent and uniform), and healthy after it."""
    link = link_with(fault(2, "t", "clock_offset", target, {"offset_ps": offset_ps}),
                     clear(22, "rollback"))
    measured = _measure(link, 0, 30 << FB, 23)
    assert_z_scores_consistent(_sifted_error_z(measured, 2 << FB, 22 << FB, 0.5),
                               "errors inside the fault against 1/2")
    z_out = _class_z(measured, 22 << FB, 30 << FB, _exact())
    assert len(z_out) >= 8
    assert_z_scores_consistent(z_out, "after the rollback")


def test_a_skew_lowers_the_overlap_frame_by_frame_as_the_exact_model_says():
    """The offset grows by skew × frame time per frame (0 → 3τ over the window); successes and
    sifted errors over stretches of 10 frames are sums of per-frame binomials with each frame's γ
    (as for the drift fault in test_impairments.py)."""
    n = 40
    skew_ppm = 3 * TAU_PS * 1e-12 / (n * FRAME_S) * 1e6
    link = link_with(fault(0, "skew", "clock_skew", "source/alice", {"skew_ppm": skew_ppm}))
    _, slots, sa, sb, errors = _measure(link, 0, n << FB, 24)
    dt = -skew_ppm * 1e-6 * np.arange(n) * FRAME_S * 1e12  # Bob − Alice: Alice is late
    gammas = np.exp(-dt**2 / (8 * TAU_PS**2))
    p, mu = PLAN.combo_probabilities, PLAN.mean_photon_numbers
    frame, same = slots >> FB, sa.basis == sb.basis
    z = []
    for basis in (0, 1):
        for ia, ib in ((0, 0), (0, 1), (1, 0))[:3 - 2 * basis]:
            sel = same & (sa.basis == basis) & (sa.intensity == ia) & (sb.intensity == ib)
            d_f = np.bincount(frame[sel], minlength=n)
            err_f = np.bincount(frame[sel], weights=errors[sel], minlength=n)
            rows = [_exact_gamma(g)(basis, mu[ia], mu[ib]) for g in gammas]
            q = p[2 * ia + basis] * p[2 * ib + basis] * np.array([r.gain for r in rows])
            e = np.array([r.error_rate for r in rows])
            for lo in range(0, n, 10):
                f = slice(lo, lo + 10)
                mean, var = (1 << FB) * q[f].sum(), ((1 << FB) * q[f] * (1 - q[f])).sum()
                if mean < 30:
                    continue
                z.append((d_f[f].sum() - mean) / math.sqrt(var))
                me, ve = (d_f[f] * e[f]).sum(), (d_f[f] * e[f] * (1 - e[f])).sum()
                if me >= 30:
                    z.append((err_f[f].sum() - me) / math.sqrt(ve))
    assert len(z) >= 12
    assert_z_scores_consistent(z, "skew, per frame")
    # the last stretch's X errors reject the healthy link's (probability ALPHA / 2 if healthy)
    assert _x_error_z((None, slots, sa, sb, errors), (30, 40), _exact()) > z_bound()


def test_relay_jitter_loses_the_share_of_coincidences_the_window_predicts():
    """Each click's tag gets an independent N(0, σ²): the two clicks of a Bell pattern differ by
    N(0, 2σ²) (checked as a normal sample, integer rounding adds 1/6 ps² of variance, below 10⁻⁶
    of 2σ²) and Charles keeps the pattern when the difference is within W: a share
    erf(W / (2σ)), checked as a binomial (the rounding moves it by less than 1 ps times the
    difference's density, under 4·10⁻⁴, against a standard deviation of about 5·10⁻³)."""
    sigma, window = 500.0, DEFAULT_COINCIDENCE_WINDOW_PS
    link = _window_link("jitter", "relay", {"jitter_ps": sigma})
    measured = _measure(link, 0, RUN << FB, 25)
    records = measured[0].records
    bell_patterns = BELL_OF_PATTERN[records.pattern] != 0
    inside = ((records.slot >> FB) >= WINDOW[0]) & ((records.slot >> FB) < WINDOW[1])
    times = records.time_ps[bell_patterns & inside]
    pairs = times[times != np.iinfo(np.int64).min].reshape(-1, 2)  # the two clicks, in order
    diff = pairs[:, 0] - pairs[:, 1]
    assert_normal_sample_consistent(diff, sigma * math.sqrt(2), "click-time difference")
    kept = bell_states(records, window)[bell_patterns & inside] != 0
    share = math.erf(window / (2 * sigma))
    assert abs(binomial_z(int(kept.sum()), kept.size, share)) <= z_bound()
    assert kept.size - kept.sum() > 1000  # coincidences were lost
    # outside the window nothing is lost: clicks share one time
    outside = bell_patterns & ~inside
    assert (bell_states(records, window)[outside] != 0).all()
    # and the class statistics Charles announces inside follow the exact model times the share
    kept_stats = _exact()

    def scaled(basis, mu_a, mu_b):
        st = kept_stats(basis, mu_a, mu_b)
        return type(st)(st.gain * share, st.error_rate, st.gain_psi_plus * share,
                        st.gain_psi_minus * share)
    z = _class_z(measured, WINDOW[0] << FB, WINDOW[1] << FB, scaled)
    assert len(z) >= 8
    assert_z_scores_consistent(z, "announced classes under relay jitter")


def test_source_jitter_spreads_click_times_by_half_its_variance():
    """A source's jitter moves the mid-point of the two pulses by half its value (the same
    convention as a configured clock's jitter): rms σ/√2 per click."""
    sigma = 600.0
    link = link_with(fault(0, "j", "jitter", "source/alice", {"jitter_ps": sigma}))
    out = sample(link, *users(3), 0, 20 << FB, 26)
    t = out.records.time_ps
    clicked = t != np.iinfo(np.int64).min
    base = (out.records.slot * SLOT_PS)[:, None]
    assert_normal_sample_consistent((t - base)[clicked], sigma / math.sqrt(2),
                                    "click time − slot time")


def test_a_relay_offset_below_half_a_slot_shifts_every_tag_and_loses_nothing():
    """Exactly the healthy link's records, every click time later by the offset."""
    offset = 400.0
    link = link_with(fault(2, "off", "clock_offset", "relay", {"offset_ps": offset}),
                     clear(6, "rollback"))
    alice, bob = users(4)
    got = sample(link, alice, bob, 0, 8 << FB, 27)
    want = sample(link_with(), alice, bob, 0, 8 << FB, 27)
    assert np.array_equal(got.records.slot, want.records.slot)
    assert np.array_equal(got.records.pattern, want.records.pattern)
    shift = np.where((got.records.slot >> FB >= 2) & (got.records.slot >> FB < 6), offset, 0)
    clicked = want.records.time_ps != np.iinfo(np.int64).min
    np.testing.assert_array_equal((got.records.time_ps - want.records.time_ps)[clicked],
                                  np.broadcast_to(shift[:, None], clicked.shape)[clicked])


def test_a_relay_offset_past_half_a_slot_relabels_the_events():
    """Label = slot + round(Δ / slot); events labelled past the range are not reported."""
    link = link_with(fault(0, "off", "clock_offset", "relay", {"offset_ps": -1.6 * SLOT_PS}))
    alice, bob = users(5)
    got = sample(link, alice, bob, 0, 4 << FB, 28).records
    want = sample(link_with(), alice, bob, 0, 4 << FB, 28).records
    keep = want.slot >= 2
    assert np.array_equal(got.slot, want.slot[keep] - 2)
    assert np.array_equal(got.pattern, want.pattern[keep])


@pytest.mark.parametrize("kind, target, params", [
    ("clock_offset", "source/bob", {"offset_ps": 300.0}),
    ("clock_skew", "relay", {"skew_ppm": 50.0}),
    ("jitter", "relay", {"jitter_ps": 700.0}),
    ("jitter", "source/alice", {"jitter_ps": 700.0})])
def test_before_and_after_a_timing_fault_the_records_are_exactly_the_healthy_links(
        kind, target, params):
    alice, bob = users(6)
    faulty = link_with(fault(3, "t", kind, target, params, frames=4))
    healthy = link_with()
    for lo, hi in ((0, 3), (7, 10)):
        a = sample(faulty, alice, bob, lo << FB, hi << FB, 29).records
        b = sample(healthy, alice, bob, lo << FB, hi << FB, 29).records
        assert len(a) > 100
        for name in ("slot", "pattern", "time_ps"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    inside = sample(faulty, alice, bob, 3 << FB, 7 << FB, 29).records
    healthy_inside = sample(healthy, alice, bob, 3 << FB, 7 << FB, 29).records
    assert not np.array_equal(inside.time_ps, healthy_inside.time_ps)


@pytest.mark.parametrize("sampler", ["fast", "skip-empty", "reference"])
def test_the_same_timing_faults_and_seed_give_the_same_records(sampler):
    def link() -> Link:
        return link_with(
            fault(1, "o", "clock_offset", "source/bob", {"offset_ps": 700.0}, frames=2),
            fault(2, "s", "clock_skew", "source/alice", {"skew_ppm": 0.5}),
            fault(3, "r", "clock_offset", "relay", {"offset_ps": 900.0}, frames=2),
            fault(3, "j", "jitter", "relay", {"jitter_ps": 80.0}),
            clear(8, "rollback"))
    alice, bob = users(7)
    runs = [sample(link(), alice, bob, 0, 10 << FB, 30, sampler) for _ in range(2)]
    for name in ("slot", "pattern", "time_ps"):
        assert np.array_equal(getattr(runs[0].records, name), getattr(runs[1].records, name))
    assert np.array_equal(runs[0].singles, runs[1].singles)
    assert np.all(np.diff(runs[0].records.slot) > 0)  # sorted, one record per label


def test_timing_faults_are_kept_by_the_schedule():
    entries = [fault(1, "o", "clock_offset", "relay", {"offset_ps": 1.0}),
               fault(1, "s", "clock_skew", "source/alice", {"skew_ppm": 1.0}),
               fault(1, "j", "jitter", "source/bob", {"jitter_ps": 1.0})]
    schedule = FaultSchedule.from_timeline(entries, 0)
    assert [f.name for f in schedule.faults] == ["o", "s", "j"]
    assert [f.name for f in schedule.link_only().faults] == ["o", "s", "j"]


def test_key_class_gain_is_untouched_by_the_relays_offset_below_half_a_slot():
    """A control: the same exact statistics as the healthy link (``_key_z`` within bounds)."""
    link = _window_link("clock_offset", "relay", {"offset_ps": 450.0})
    measured = _measure(link, 0, RUN << FB, 31)
    assert abs(_key_z(measured, *WINDOW, _exact())) <= z_bound()
