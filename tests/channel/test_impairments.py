"""Physics faults at emulated times (channel/impairments.py, docs/physics.md §9).

Each fault type is sampled and held to the exact model of docs/physics.md §5
(``exact_class_statistics``) evaluated with the device values the fault means, written here
independently of the fault code (3 dB: T × 10^−0.3; a dead detector: efficiency and dark counts 0;
…). Statistics: every per-class gain and sifted error rate becomes a binomial z-score and each set
passes χ²/dof and max|z| at the false-alarm probability ``tests.stats.ALPHA`` = 10⁻⁴ per
assertion (``assert_z_scores_consistent``): a correct emulation fails one of these tests with
probability below about 10⁻³ in all, while a fault applied with the wrong size (a factor of 2 in
dB, the wrong arm or detector) moves the affected classes by tens of standard deviations at the
counts used (≥ 10³ detections per class). Where the law allows no event at all (a dead
detector's clicks) the check is exact. The windows, the per-frame values and determinism are
checked exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from channel.analytic import (
    clipped_normal_rule,
    detector_fields,
    exact_class_statistics,
    exact_frame_statistics,
    pattern_probabilities,
)
from channel.fiber import PAULI, Fiber, linear_rotation, su2
from channel.impairments import (
    FAULT_RAMP_AXIS,
    WALK_BLOCK,
    Fault,
    FaultSchedule,
    TimelineEntry,
    fault_windows,
    faulty_relay,
    faulty_source,
    frame_at,
)
from channel.link import Link
from channel.relay import Detector, RelayOptics
from channel.samplers import sample, sample_fast, singles_probabilities
from channel.settings import SettingsGenerator, SettingsPlan, three_intensity_plan
from channel.source import JONES, Source
from classical.sifting import bob_flip
from nodes.relay_software import BELL_OF_PATTERN, DEFAULT_COINCIDENCE_WINDOW_PS, bell_states
from tests.stats import (
    assert_normal_sample_consistent,
    assert_z_scores_consistent,
    binomial_z,
    z_bound,
)

FB = 16  # 65 536-slot frames
RATE = 1e9
FRAME_S = (1 << FB) / RATE
EFF, DARK = 0.6, 1e-6
PLAN = three_intensity_plan(0.5, 0.1, 0.0)
ARM_KM = 5.0
T_ARM = 10 ** (-ARM_KM * 0.2 / 10)


def fault(at_frames: float, name: str, kind: str, target: str, params=None,
          frames: float | None = None) -> TimelineEntry:
    """A fault entry starting at a frame boundary (times in frames of ``FB`` bits)."""
    return TimelineEntry(at_frames * FRAME_S, name, kind, target, params or {},
                         None if frames is None else frames * FRAME_S)


def clear(at_frames: float, name: str, target: str | None = None, **params) -> TimelineEntry:
    return TimelineEntry(at_frames * FRAME_S, name, "clear_faults", target, params,
                         is_action=True)


def link_with(*entries: TimelineEntry, seed: int = 0) -> Link:
    schedule = FaultSchedule.from_timeline(entries, seed) if entries else None
    return Link(Source(PLAN), Source(PLAN), Fiber(ARM_KM), Fiber(ARM_KM),
                relay=RelayOptics.uniform(EFF, DARK), frame_bits=FB, faults=schedule)


def users(seed: int = 1) -> tuple[SettingsGenerator, SettingsGenerator]:
    return SettingsGenerator(PLAN, 10 + seed, FB), SettingsGenerator(PLAN, 20 + seed, FB)


# --- the timeline ---------------------------------------------------------------------------


def test_a_duration_ends_a_fault_and_clear_faults_ends_what_it_matches():
    entries = [fault(1, "a", "loss", "link/alice-charles", {"extra_db": 3}, frames=4),
               fault(2, "b", "fiber_cut", "link/bob-charles"),
               fault(2, "c", "detector_dead", "relay", {"detector": "cH"}),
               fault(3, "d", "polarization_rotation", "link/alice-charles", {"angle_rad": 0.1}),
               clear(6, "by-target", "link/bob-charles"),
               clear(7, "by-name", fault="c"),
               clear(9, "all"),
               fault(9, "e", "loss", "link/bob-charles", {"extra_db": 1})]  # after the clear
    ends = {f.name: (f.start_s / FRAME_S, f.end_s / FRAME_S) for f in fault_windows(entries)}
    assert ends["a"] == pytest.approx((1, 5))
    assert ends["b"] == pytest.approx((2, 6))
    assert ends["c"] == pytest.approx((2, 7))
    assert ends["d"] == pytest.approx((3, 9))
    assert ends["e"][0] == pytest.approx(9) and math.isinf(ends["e"][1])


def test_entries_apply_in_time_order_then_file_order():
    late_clear = [clear(5, "x"), fault(2, "f", "fiber_cut", "link/alice-charles")]
    assert fault_windows(late_clear)[0].end_s == pytest.approx(5 * FRAME_S)
    same_time = [clear(2, "x"), fault(2, "f", "fiber_cut", "link/alice-charles")]
    assert math.isinf(fault_windows(same_time)[0].end_s)  # the clear came first
    cleared = [fault(2, "f", "fiber_cut", "link/alice-charles"), clear(2, "x")]
    assert FaultSchedule.from_timeline(cleared, 0).faults == ()  # empty window: dropped


def test_a_fault_acts_on_the_frames_whose_start_its_window_holds():
    assert frame_at(0.0, RATE, FB) == 0
    assert frame_at(FRAME_S, RATE, FB) == 1
    assert frame_at(FRAME_S + 1e-9, RATE, FB) == 2  # one slot after frame 1 starts
    assert frame_at(FRAME_S + 0.4e-9, RATE, FB) == 1  # rounded to the nearest slot
    assert frame_at(math.inf, RATE, FB) > 1 << 40


def test_only_the_physics_faults_are_kept():
    entries = [fault(1, "lag", "latency", "classical/alice-bob", {"latency_ms": 5}),
               fault(1, "cut", "fiber_cut", "link/alice-charles")]
    assert [f.name for f in FaultSchedule.from_timeline(entries, 0).faults] == ["cut"]


# --- link faults, per frame -------------------------------------------------------------------


def test_link_faults_change_only_their_arm_and_only_inside_their_window():
    healthy = link_with().physics(0, 12 << FB)
    link = link_with(fault(2, "loss", "loss", "link/alice-charles", {"extra_db": 3}, frames=3),
                     fault(4, "turn", "polarization_rotation", "link/bob-charles",
                           {"angle_rad": 0.3}),
                     clear(9, "clear"))
    ph = link.physics(0, 12 << FB)
    inside = np.isin(np.arange(12), [2, 3, 4])
    np.testing.assert_allclose(ph.transmittance_a[inside], T_ARM * 10 ** -0.3, rtol=1e-12)
    assert np.array_equal(ph.transmittance_a[~inside], healthy.transmittance_a[~inside])
    assert np.array_equal(ph.transmittance_b, healthy.transmittance_b)
    turned = np.isin(np.arange(12), np.arange(4, 9))
    np.testing.assert_allclose(ph.unitary_b[turned], np.broadcast_to(linear_rotation(0.3),
                                                                     (5, 2, 2)), atol=1e-15)
    assert np.array_equal(ph.unitary_b[~turned], healthy.unitary_b[~turned])
    assert np.array_equal(ph.unitary_a, healthy.unitary_a)


def test_a_loss_ramp_grows_linearly_in_db_frame_by_frame():
    ramp_frames = 8
    link = link_with(fault(3, "ramp", "loss", "link/bob-charles",
                           {"extra_db": 4.0, "ramp_s": ramp_frames * FRAME_S}))
    ph = link.physics(0, 16 << FB)
    extra_db = -10 * np.log10(ph.transmittance_b / T_ARM)
    expected = np.clip((np.arange(16) - 3) / ramp_frames, 0, 1) * 4.0
    np.testing.assert_allclose(extra_db, expected, atol=1e-12)


def test_fiber_cut_zeroes_the_transmittance():
    ph = link_with(fault(1, "cut", "fiber_cut", "link/alice-charles", frames=2)).physics(
        0, 4 << FB)
    assert ph.transmittance_a.tolist() == [T_ARM, 0.0, 0.0, T_ARM]


def _rotation_vector(u: np.ndarray) -> np.ndarray:
    theta = 2 * np.arccos(np.clip(np.trace(u).real / 2, -1.0, 1.0))
    n_sin = np.array([-np.trace(u @ p).imag / 2 for p in PAULI])
    s = np.sin(theta / 2)
    return n_sin * (theta / s) if s > 0 else np.zeros(3)


def test_a_drift_ramp_turns_about_the_circular_axis_at_its_rate():
    rate = 20.0  # rad/s on the Poincaré sphere
    link = link_with(fault(2, "ramp", "polarization_drift", "link/alice-charles",
                           {"ramp_rad_per_s": rate}))
    ph = link.physics(0, 40 << FB)
    for f in (0, 2, 3, 39):
        angle = rate * max(f - 2, 0) * FRAME_S
        np.testing.assert_allclose(ph.unitary_a[f], su2(np.array(FAULT_RAMP_AXIS), angle),
                                   atol=1e-12)
    # about S3 a Poincaré angle 2θ is a real-space rotation by θ: both bases see it
    np.testing.assert_allclose(ph.unitary_a[39], linear_rotation(rate * 37 * FRAME_S / 2),
                               atol=1e-12)


def test_a_drift_random_walk_spreads_as_its_rate_says_on_every_axis():
    """After n frames each component of the walk's rotation vector is N(0, σ² n Δt) (small
    steps, so rotations add as vectors up to O(θ²)); 600 independent walks (seeds), each axis's
    mean and spread at the false-alarm budget of tests/stats.py: a walk that runs √(2/3) slow or
    loses an axis fails. Frame 1500 lies in the walk's second block, so the block checkpoint is
    on the path."""
    rate, n = 0.5, 1500
    sigma = rate * math.sqrt(n * FRAME_S)
    vectors = []
    for seed in range(600):
        link = link_with(fault(0, "walk", "polarization_drift", "link/bob-charles",
                               {"rate_rad_per_sqrt_s": rate}), seed=seed)
        vectors.append(_rotation_vector(link.physics(n << FB, (n + 1) << FB).unitary_b[0]))
    vectors = np.array(vectors)
    for axis in range(3):
        assert_normal_sample_consistent(vectors[:, axis], sigma, f"axis {axis}", assertions=3)


def test_the_walk_is_the_same_whatever_ranges_are_asked_and_in_any_order():
    entries = (fault(5, "walk", "polarization_drift", "link/bob-charles",
                     {"rate_rad_per_sqrt_s": 2.0, "ramp_rad_per_s": 1.0}),)
    stop = 2 * WALK_BLOCK + 300
    whole = link_with(*entries, seed=3).physics(0, stop << FB).unitary_b
    pieces = link_with(*entries, seed=3)
    cuts = [0, 7, WALK_BLOCK + 11, WALK_BLOCK + 12, stop]
    parts = {lo: pieces.physics(lo << FB, hi << FB).unitary_b
             for lo, hi in reversed(list(zip(cuts, cuts[1:], strict=False)))}
    np.testing.assert_allclose(np.concatenate([parts[lo] for lo in cuts[:-1]]), whole,
                               atol=1e-12)
    other = link_with(*entries, seed=4).physics(0, stop << FB).unitary_b
    assert not np.allclose(other[6:], whole[6:])
    # the product of every step, as PolarizationDrift.unitaries composes them, one by one
    from channel.impairments import _prefix_products

    steps = np.random.default_rng(0).standard_normal((37, 3))
    from channel.fiber import PolarizationDrift

    drift = PolarizationDrift(2.0, 1.0, FAULT_RAMP_AXIS)
    s = drift.steps(steps, FRAME_S)
    u, expected = np.eye(2, dtype=complex), []
    for k in range(37):
        u = s[k] @ u
        expected.append(u)
    np.testing.assert_allclose(_prefix_products(s), np.array(expected), atol=1e-13)


# --- sampled effects against the exact model ---------------------------------------------------


def _measure(link: Link, lo: int, hi: int, seed: int, sampler: str = "fast"):
    alice, bob = users(seed)
    out = sample(link, alice, bob, lo, hi, seed, sampler)
    bell = bell_states(out.records, DEFAULT_COINCIDENCE_WINDOW_PS)
    ok = bell != 0
    slots = out.records.slot[ok]
    sa, sb = alice.settings_at(slots), bob.settings_at(slots)
    errors = sa.bit != (sb.bit ^ bob_flip(sb.basis, bell[ok]))
    return out, slots, sa, sb, errors


def _class_z(measured, lo: int, hi: int, stats_of, *, mu_a=None, mu_b=None,
             min_events: int = 30) -> list[float]:
    """z-scores of each (basis, intensity pair) class's Bell successes with matching bases in
    slots [lo, hi), and of its sifted errors, against ``stats_of(basis, μ_a, μ_b)``. Each slot is
    independently of a class and a success with probability p_class × gain: binomial."""
    _, slots, sa, sb, errors = measured
    here = (slots >= lo) & (slots < hi) & (sa.basis == sb.basis)
    p = PLAN.combo_probabilities
    nominal = PLAN.mean_photon_numbers
    mu_a = nominal if mu_a is None else mu_a
    mu_b = nominal if mu_b is None else mu_b
    z = []
    for ia in range(3):
        for ib in range(3):
            for basis in (0, 1):
                st = stats_of(basis, float(mu_a[ia]), float(mu_b[ib]))
                sel = here & (sa.basis == basis) & (sa.intensity == ia) & (sb.intensity == ib)
                trials = hi - lo
                prob = p[2 * ia + basis] * p[2 * ib + basis] * st.gain
                if trials * prob < min_events:
                    continue
                d = int(sel.sum())
                z.append(binomial_z(d, trials, prob))
                if d * st.error_rate >= min_events:
                    z.append(binomial_z(int(errors[sel].sum()), d, st.error_rate))
    return z


def _key_z(measured, lo_frame: int, hi_frame: int, stats_of, errors: bool = False) -> float:
    """The z-score of the key class's (Z basis, signal from both users) Bell successes in frames
    [lo, hi) against ``stats_of``, or with ``errors`` of its sifted errors given those
    successes."""
    _, slots, sa, sb, err = measured
    lo, hi = lo_frame << FB, hi_frame << FB
    key = (slots >= lo) & (slots < hi) & (sa.basis == 0) & (sb.basis == 0) & \
        (sa.intensity == 0) & (sb.intensity == 0)
    st = stats_of(0, float(PLAN.mean_photon_numbers[0]), float(PLAN.mean_photon_numbers[0]))
    if errors:
        return binomial_z(int(err[key].sum()), int(key.sum()), st.error_rate)
    p = PLAN.combo_probabilities
    return binomial_z(int(key.sum()), hi - lo, p[0] * p[0] * st.gain)


def _exact(t_a=T_ARM, t_b=T_ARM, u_a=None, u_b=None, eff=EFF, dark=DARK):
    def stats_of(basis, mu_a, mu_b):
        return exact_class_statistics(basis, mu_a, mu_b, t_a, t_b, u_a, u_b, eff, dark,
                                      bell_of_pattern=BELL_OF_PATTERN)
    return stats_of


WINDOW = (40, 80)  # frames of the fault; the run covers 0 … 120
RUN = 120


def _run_with(entry_kind: str, target: str, params: dict, seed: int, sampler: str = "fast"):
    link = link_with(fault(WINDOW[0], "f", entry_kind, target, params),
                     clear(WINDOW[1], "rollback"))
    return _measure(link, 0, RUN << FB, seed, sampler)


def _inside_and_outside(measured, inside_stats, outside_stats=None, min_classes=8, **mu):
    lo, hi = WINDOW[0] << FB, WINDOW[1] << FB
    z_in = _class_z(measured, lo, hi, inside_stats, **mu)
    z_out = _class_z(measured, 0, lo, outside_stats or _exact()) + _class_z(
        measured, hi, RUN << FB, outside_stats or _exact())
    assert len(z_in) >= min_classes and len(z_out) >= 16
    assert_z_scores_consistent(z_in, "inside the fault")
    assert_z_scores_consistent(z_out, "outside the fault")


def test_three_db_on_one_arm_scales_the_gains_as_the_exact_model_says():
    measured = _run_with("loss", "link/alice-charles", {"extra_db": 3.0}, seed=1)
    _inside_and_outside(measured, _exact(t_a=T_ARM * 10 ** -0.3))
    # and the effect is large against the statistics: inside the window the signal Z class's
    # gain rejects the healthy link's at the false-alarm budget (a healthy link gives z below
    # −z_bound() with probability ALPHA / 2; here z is about −27)
    assert _key_z(measured, *WINDOW, _exact()) < -z_bound()


def test_fiber_cut_leaves_only_bobs_own_light_and_dark_counts():
    measured = _run_with("fiber_cut", "link/alice-charles", {}, seed=2)
    _inside_and_outside(measured, _exact(t_a=0.0), min_classes=4)


def test_a_static_rotation_raises_the_qber_as_the_exact_model_says():
    theta = 0.35  # sin²θ ≈ 12 % of single-photon errors in both bases
    measured = _run_with("polarization_rotation", "link/bob-charles", {"angle_rad": theta},
                         seed=3)
    _inside_and_outside(measured, _exact(u_b=linear_rotation(theta)))
    # the key's errors inside the window reject the healthy error rate at the false-alarm
    # budget (probability ALPHA / 2 for a healthy link; here z is in the thousands)
    assert _key_z(measured, *WINDOW, _exact(), errors=True) > z_bound()


def test_a_drift_fault_follows_the_exact_model_frame_by_frame():
    """Each frame has its own unitary (the walk's, tested above); every class's successes and
    sifted errors over stretches of 10 frames follow the exact model with each frame's unitary:
    successes are a sum of per-frame binomials (mean Σ N p_f, variance Σ N p_f (1 − p_f)),
    errors given the per-frame successes d_f a sum of binomials of rates e_f."""
    n = 40
    link = link_with(fault(10, "drift", "polarization_drift", "link/alice-charles",
                           {"rate_rad_per_sqrt_s": 30.0, "ramp_rad_per_s": 40.0}), seed=5)
    _, slots, sa, sb, errors = _measure(link, 0, n << FB, 5)
    ph = link.physics(0, n << FB)
    assert len(np.unique(ph.unitary_a.round(12), axis=0)) == n - 10  # identity up to frame 10
    p, mu = PLAN.combo_probabilities, PLAN.mean_photon_numbers
    frame, same = slots >> FB, sa.basis == sb.basis
    z, key_errors = [], []
    for basis in (0, 1):
        for ia, ib in ((0, 0), (0, 1), (1, 0))[:3 - 2 * basis]:
            sel = same & (sa.basis == basis) & (sa.intensity == ia) & (sb.intensity == ib)
            d_f = np.bincount(frame[sel], minlength=n)
            err_f = np.bincount(frame[sel], weights=errors[sel], minlength=n)
            rows = [exact_class_statistics(basis, mu[ia], mu[ib], T_ARM, T_ARM, ph.unitary_a[f],
                                           None, EFF, DARK, bell_of_pattern=BELL_OF_PATTERN)
                    for f in range(n)]
            q = p[2 * ia + basis] * p[2 * ib + basis] * np.array([r.gain for r in rows])
            e = np.array([r.error_rate for r in rows])
            if (basis, ia, ib) == (0, 0, 0):
                key_errors = [err_f[:10].sum(), int(err_f[10:].sum()), int(d_f[10:].sum())]
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
    assert_z_scores_consistent(z, "drift, per frame")
    # the drift turned far enough to matter: after its start the key's errors reject the healthy
    # error rate at the false-alarm budget (probability ALPHA / 2 for a link that did not turn)
    healthy = exact_class_statistics(0, mu[0], mu[0], T_ARM, T_ARM, None, None, EFF, DARK,
                                     bell_of_pattern=BELL_OF_PATTERN).error_rate
    assert binomial_z(key_errors[1], key_errors[2], healthy) > z_bound()


def _singles_z(kind: str, params: dict, relay: RelayOptics, seed: int) -> list[float]:
    """Each detector's clicks over the fault's window against the averaged click probability of
    a link built by hand with ``relay``: which detector a fault hits shows here, where the Bell
    classes (averaged over bits, symmetric between detectors) cannot tell."""
    alice, bob = users(seed)
    lo, hi = WINDOW[0] << FB, WINDOW[1] << FB
    link = link_with(fault(WINDOW[0], "f", kind, "relay", params), clear(WINDOW[1], "rollback"))
    out = sample(link, alice, bob, lo, hi, seed)
    by_hand = Link(Source(PLAN), Source(PLAN), Fiber(ARM_KM), Fiber(ARM_KM), relay=relay,
                   frame_bits=FB)
    p = singles_probabilities(by_hand, by_hand.physics(lo, hi), alice, bob)[0]
    return [binomial_z(out.singles[k], hi - lo, p[k]) for k in range(4)]


def test_a_dark_count_surge_raises_dark_clicks_and_errors_as_the_exact_model_says():
    surge = 2e-4
    total = 1 - (1 - DARK) * (1 - surge)  # the configured dark counts stay
    measured = _run_with("dark_count_surge", "relay", {"dark_count_probability": surge}, seed=6)
    _inside_and_outside(measured, _exact(dark=total))
    z = _singles_z("dark_count_surge", {"dark_count_probability": surge},
                   RelayOptics.uniform(EFF, total), 61)
    assert_z_scores_consistent(z, "singles")


def test_a_surge_on_one_detector_shows_in_that_detectors_dark_clicks():
    """Both fibers cut too: the singles are dark clicks only, Binomial(slots, p_dark) each."""
    surge = 5e-4
    alice, bob = users(62)
    lo, hi = WINDOW[0] << FB, WINDOW[1] << FB
    link = link_with(*(fault(WINDOW[0], f"cut {t}", "fiber_cut", t)
                       for t in ("link/alice-charles", "link/bob-charles")),
                     fault(WINDOW[0], "f", "dark_count_surge", "relay",
                           {"dark_count_probability": surge, "detector": "dH"}))
    out = sample(link, alice, bob, lo, hi, 62)
    p = [DARK, DARK, 1 - (1 - DARK) * (1 - surge), DARK]
    assert_z_scores_consistent([binomial_z(out.singles[k], hi - lo, p[k]) for k in range(4)],
                               "dark singles")


def test_one_detector_losing_efficiency_follows_the_exact_model():
    factor = 0.4
    measured = _run_with("detector_efficiency", "relay",
                         {"efficiency_factor": factor, "detector": "dV"}, seed=7)
    _inside_and_outside(measured, _exact(eff=np.array([EFF, EFF, EFF, EFF * factor])))
    det = Detector(EFF, DARK)
    z = _singles_z("detector_efficiency", {"efficiency_factor": factor, "detector": "dV"},
                   RelayOptics((det, det, det, Detector(EFF * factor, DARK))), 71)
    assert_z_scores_consistent(z, "singles")


def test_all_detectors_losing_efficiency_follow_the_exact_model():
    measured = _run_with("detector_efficiency", "relay", {"efficiency_factor": 0.5}, seed=8)
    _inside_and_outside(measured, _exact(eff=EFF * 0.5))


def test_a_dead_detector_never_clicks_inside_its_window_and_clicks_after_it():
    measured = _run_with("detector_dead", "relay", {"detector": "cH"}, seed=9)
    out = measured[0]
    frame = out.records.slot >> FB
    inside = (frame >= WINDOW[0]) & (frame < WINDOW[1])
    ch = (out.records.pattern & 1) == 1
    assert ch[inside].sum() == 0 and ch[~inside].sum() > 1000
    _inside_and_outside(measured, _exact(eff=np.array([0.0, EFF, EFF, EFF]),
                                         dark=np.array([0.0, DARK, DARK, DARK])))
    alice, bob = users(9)
    link = link_with(fault(WINDOW[0], "f", "detector_dead", "relay", {"detector": "cH"}))
    assert sample(link, alice, bob, WINDOW[0] << FB, (WINDOW[0] + 5) << FB, 1).singles[0] == 0


def test_a_miscalibrated_class_emits_its_factor_while_the_plan_keeps_the_nominal_value():
    factor = 1.6
    measured = _run_with("intensity_miscalibration", "source/alice",
                         {"intensity": "nu", "mean_photon_number_factor": factor}, seed=10)
    real = PLAN.mean_photon_numbers * np.array([1.0, factor, 1.0])
    lo, hi = WINDOW[0] << FB, WINDOW[1] << FB
    assert_z_scores_consistent(_class_z(measured, lo, hi, _exact(), mu_a=real), "inside")
    z_out = _class_z(measured, 0, lo, _exact()) + _class_z(measured, hi, RUN << FB, _exact())
    assert_z_scores_consistent(z_out, "outside")
    link = link_with(fault(WINDOW[0], "f", "intensity_miscalibration", "source/alice",
                           {"intensity": "nu", "mean_photon_number_factor": factor}))
    (_, _, healthy), (_, _, faulty) = link.device_segments(0, RUN << FB)
    assert faulty.source_a.plan == PLAN  # the users' view: nominal
    np.testing.assert_allclose(faulty.source_a.emitted_mean_photon_numbers(PLAN), real)
    assert healthy.source_a.emitted_mean_photon_numbers(PLAN).tolist() == \
        PLAN.mean_photon_numbers.tolist()


@pytest.mark.parametrize("configured", [0.0, 0.16])
def test_intensity_fluctuation_averages_the_exact_model_over_the_pulse_energies(configured):
    """Alice alone sends light (μ = 0.5, Bob's pulses are vacuum): her coincidences come from two
    of her own photons, so they grow about as E[μ²] = μ²(1 + r²): 3 % at r = 0.2 (the detectors
    saturate a little), which the ~7·10⁴ coincidences resolve at 8σ (gains of interfering
    pairs, linear in each μ, barely move). The fault adds in quadrature to the configured
    fluctuation r₀: the fault's r_f = √(0.2² − r₀²) makes r = 0.2 during it either way (with
    r₀ = 0.16, r_f = 0.12 alone would give 1.4 % instead of 4 %, about 6σ off). Expected: the
    exact P(≥ 2 clicks) averaged over μ(1 + r z), z standard normal clipped at ±5 as the
    samplers clip it (``clipped_normal_rule``); after the clear, averaged with r₀."""
    r, mu = 0.2, 0.5
    r_fault = math.sqrt(r**2 - configured**2)
    plan_a, plan_b = SettingsPlan.fixed(mu, 0), SettingsPlan.fixed(0.0, 0)
    link = Link(Source(plan_a, intensity_fluctuation_rel=configured), Source(plan_b),
                Fiber(ARM_KM), Fiber(ARM_KM), relay=RelayOptics.uniform(EFF, DARK), frame_bits=FB,
                faults=FaultSchedule.from_timeline(
                    [fault(0, "f", "intensity_fluctuation", "source/alice",
                           {"fluctuation_rel": r_fault}), clear(WINDOW[1], "rollback")], 0))
    alice, bob = SettingsGenerator(plan_a, 1, FB), SettingsGenerator(plan_b, 2, FB)
    out = sample(link, alice, bob, 0, RUN << FB, 13)
    x, w = clipped_normal_rule()
    # the rule's errors, far below the 10⁻² resolution here
    assert abs(w.sum() - 1) < 1e-6 and abs((w * x**2).sum() - 1) < 1e-5

    def p_coincidence(m: float) -> float:
        xa, ya = detector_fields(m, 0.0, T_ARM, T_ARM, JONES[0, 0], JONES[0, 0],
                                 np.full(4, EFF))
        probs = pattern_probabilities(xa, ya, 1.0, np.full(4, DARK))
        return float(probs[[c for c in range(16) if bin(c).count("1") >= 2]].sum())

    def averaged(rel: float) -> float:
        return float(sum(wk * p_coincidence(mu * (1 + rel * z)) for wk, z in zip(w, x,
                                                                                 strict=True)))

    fluctuating = averaged(r)
    assert fluctuating / p_coincidence(mu) - 1 > 0.025
    frame = out.records.slot >> FB
    n_in, n_out = int((frame < WINDOW[1]).sum()), int((frame >= WINDOW[1]).sum())
    assert_z_scores_consistent(
        [binomial_z(n_in, WINDOW[1] << FB, fluctuating),
         binomial_z(n_out, (RUN - WINDOW[1]) << FB, averaged(configured))], "coincidences")


def test_the_reference_sampler_sees_the_same_faults():
    """A second sampler through the same pieces: a loss step and a dead detector."""
    link = link_with(fault(2, "loss", "loss", "link/bob-charles", {"extra_db": 3.0}),
                     fault(2, "dead", "detector_dead", "relay", {"detector": "dH"}))
    lo, hi = 2 << FB, 10 << FB
    measured = _measure(link, lo, hi, 12, "reference")
    assert (measured[0].records.pattern & 4).sum() == 0
    z = _class_z(measured, lo, hi, _exact(t_b=T_ARM * 10 ** -0.3,
                                          eff=np.array([EFF, EFF, 0.0, EFF]),
                                          dark=np.array([DARK, DARK, 0.0, DARK])),
                 min_events=20)
    assert len(z) >= 4
    assert_z_scores_consistent(z, "reference sampler")


def _composed() -> Link:
    """Several faults at once, each constant over stretches of 5 frames."""
    return link_with(
        fault(5, "loss", "loss", "link/alice-charles", {"extra_db": 2.0}),
        fault(10, "turn", "polarization_rotation", "link/alice-charles", {"angle_rad": 0.25}),
        fault(15, "dark", "dark_count_surge", "relay", {"dark_count_probability": 1e-4},
              frames=15),
        fault(15, "mis", "intensity_miscalibration", "source/bob",
              {"intensity": "nu", "mean_photon_number_factor": 1.5}),
        fault(20, "eff", "detector_efficiency", "relay", {"efficiency_factor": 0.5,
                                                          "detector": "cV"}),
        fault(25, "dead", "detector_dead", "relay", {"detector": "dV"}, frames=5),
        clear(35, "rollback"))


def test_the_exact_frame_statistics_are_the_general_formula_with_the_faults_values():
    link = _composed()
    det = np.array([EFF, EFF * 0.5, EFF, 0.0])
    surged = 1 - (1 - DARK) * (1 - 1e-4)
    dark = np.array([surged, surged, surged, 0.0])
    for basis in (0, 1):
        got = exact_frame_statistics(link, PLAN, PLAN, 27, basis, 0, 1,
                                     bell_of_pattern=BELL_OF_PATTERN)
        want = exact_class_statistics(basis, 0.5, 0.15, T_ARM * 10 ** -0.2, T_ARM,
                                      linear_rotation(0.25), None, det, dark,
                                      bell_of_pattern=BELL_OF_PATTERN)
        assert got.gain == pytest.approx(want.gain, rel=1e-12)
        assert got.error_rate == pytest.approx(want.error_rate, rel=1e-12)
    healthy = exact_frame_statistics(link, PLAN, PLAN, 36, 0, 0, 0,
                                     bell_of_pattern=BELL_OF_PATTERN)
    assert healthy.gain == pytest.approx(_exact()(0, 0.5, 0.5).gain, rel=1e-12)


def test_faults_at_once_compose_as_the_exact_frame_statistics_say():
    """Loss and a rotation on one arm, a surge, a miscalibrated class, a weak and a dead
    detector, overlapping: every class over each stretch of constant physics against
    ``exact_frame_statistics`` (itself pinned to the general formula above)."""
    link, n = _composed(), 40
    measured = _measure(link, 0, n << FB, 14)
    z = []
    for lo in range(0, n, 5):
        ph = link.physics(lo << FB, (lo + 5) << FB)
        assert np.all(ph.transmittance_a == ph.transmittance_a[0])
        stats = {}

        def stats_of(basis, mu_a, mu_b, lo=lo, stats=stats):
            ia = int(np.flatnonzero(PLAN.mean_photon_numbers == mu_a)[0])
            ib = int(np.flatnonzero(PLAN.mean_photon_numbers == mu_b)[0])
            key = (basis, ia, ib)
            if key not in stats:
                stats[key] = exact_frame_statistics(link, PLAN, PLAN, lo, basis, ia, ib,
                                                    bell_of_pattern=BELL_OF_PATTERN)
            return stats[key]

        z += _class_z(measured, lo << FB, (lo + 5) << FB, stats_of)
    assert len(z) >= 40
    assert_z_scores_consistent(z, "faults at once")


# --- absent outside the window, and deterministic ----------------------------------------------


def _every_fault(seed: int = 0) -> Link:
    return link_with(
        fault(3, "loss", "loss", "link/alice-charles", {"extra_db": 2.0, "ramp_s": 4 * FRAME_S}),
        fault(4, "cut", "fiber_cut", "link/bob-charles", frames=1),
        fault(5, "turn", "polarization_rotation", "link/bob-charles", {"angle_rad": 0.2}),
        fault(5, "drift", "polarization_drift", "link/alice-charles",
              {"rate_rad_per_sqrt_s": 3.0}),
        fault(6, "dark", "dark_count_surge", "relay", {"dark_count_probability": 1e-4}),
        fault(6, "eff", "detector_efficiency", "relay", {"efficiency_factor": 0.5,
                                                         "detector": "cV"}),
        fault(7, "dead", "detector_dead", "relay", {"detector": "dV"}, frames=1),
        fault(7, "mis", "intensity_miscalibration", "source/bob",
              {"intensity": "mu", "mean_photon_number_factor": 1.3}),
        fault(8, "fluct", "intensity_fluctuation", "source/alice", {"fluctuation_rel": 0.1}),
        clear(10, "rollback"), seed=seed)


def test_before_and_after_the_faults_the_records_are_exactly_the_healthy_links():
    alice, bob = users(0)
    faulty, healthy = _every_fault(), link_with()
    for lo, hi in ((0, 3), (10, 14)):
        a = sample(faulty, alice, bob, lo << FB, hi << FB, 99)
        b = sample(healthy, alice, bob, lo << FB, hi << FB, 99)
        assert len(a.records) > 100
        assert np.array_equal(a.records.slot, b.records.slot)
        assert np.array_equal(a.records.pattern, b.records.pattern)
        assert np.array_equal(a.singles, b.singles)


@pytest.mark.parametrize("sampler", ["fast", "skip-empty", "reference"])
def test_the_same_schedule_and_seed_give_the_same_records(sampler):
    alice, bob = users(0)
    runs = [sample(_every_fault(), alice, bob, 0, 12 << FB, 5, sampler) for _ in range(2)]
    assert np.array_equal(runs[0].records.slot, runs[1].records.slot)
    assert np.array_equal(runs[0].records.pattern, runs[1].records.pattern)
    assert np.array_equal(runs[0].records.time_ps, runs[1].records.time_ps)
    assert np.array_equal(runs[0].singles, runs[1].singles)
    other = sample(_every_fault(seed=1), alice, bob, 0, 12 << FB, 5, sampler)
    assert not np.array_equal(other.records.slot, runs[0].records.slot)  # the walk's seed


def test_a_sampler_called_directly_refuses_device_faults_it_would_leave_out():
    alice, bob = users(0)
    with pytest.raises(ValueError, match="device faults"):
        sample_fast(_every_fault(), alice, bob, 0, 1 << FB, 0)


def test_device_pieces_follow_the_windows():
    pieces = _every_fault().device_segments(0, 12 << FB)
    assert [(lo >> FB, hi >> FB) for lo, hi, _ in pieces] == [(0, 6), (6, 7), (7, 8), (8, 10),
                                                               (10, 12)]
    relay = {lo >> FB: link.relay for lo, _, link in pieces}
    assert relay[6].efficiencies.tolist() == [EFF, EFF * 0.5, EFF, EFF]
    assert relay[7].efficiencies.tolist() == [EFF, EFF * 0.5, EFF, 0.0]
    surged = 1 - (1 - DARK) * (1 - 1e-4)
    assert relay[7].dark_count_probabilities.tolist() == [surged, surged, surged, 0.0]
    assert relay[8].efficiencies.tolist() == [EFF, EFF * 0.5, EFF, EFF]
    assert relay[10] == relay[0] == RelayOptics.uniform(EFF, DARK)
    assert isinstance(pieces[0][2].faults.faults[0], Fault)


# --- faults add to the configured device values ------------------------------------------------


def test_a_surge_adds_dark_counts_to_the_configured_ones_never_lowers_them():
    """Two independent causes of a dark click: p = 1 − (1 − p₀)(1 − p_s). A surge of 10⁻⁹ on a
    detector of 10⁻⁷ leaves it above 10⁻⁷ (setting p to 10⁻⁹ would have cut dark counts)."""
    relay = RelayOptics.uniform(EFF, 1e-7)
    surge = Fault("s", "dark_count_surge", "relay", {"dark_count_probability": 1e-9}, 0.0, 1.0)
    got = faulty_relay(relay, [surge]).dark_count_probabilities
    assert got.tolist() == [1 - (1 - 1e-7) * (1 - 1e-9)] * 4
    assert np.all(got > 1e-7)
    one = Fault("s", "dark_count_surge", "relay", {"dark_count_probability": 1e-4,
                                                   "detector": "dV"}, 0.0, 1.0)
    assert faulty_relay(relay, [one]).dark_count_probabilities.tolist() == [
        1e-7, 1e-7, 1e-7, 1 - (1 - 1e-7) * (1 - 1e-4)]


def test_a_fluctuation_fault_adds_in_quadrature_to_the_configured_fluctuation():
    """Independent Gaussian fluctuations of the pulse energy: r = √(r₀² + r_f²), so a fault never
    steadies a fluctuating source."""
    shaky = Source(PLAN, intensity_fluctuation_rel=0.12)
    fault_ = Fault("f", "intensity_fluctuation", "source/alice", {"fluctuation_rel": 0.05},
                   0.0, 1.0)
    assert faulty_source(shaky, [fault_]).intensity_fluctuation_rel == pytest.approx(0.13,
                                                                                     rel=1e-12)
    assert faulty_source(Source(PLAN), [fault_]).intensity_fluctuation_rel == 0.05
