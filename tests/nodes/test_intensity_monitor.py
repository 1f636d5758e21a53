"""The decoy-intensity monitor (nodes/intensity_monitor.py, docs/calibration.md).

Expectations come from the exact model (``channel.analytic``'s general formula, which the
monitor's vectorized model must reproduce) and the samplers; every statistical assertion has its
false-alarm probability from tests/stats.py (ALPHA per assertion, split where one test makes
several). Rounds: the quick start's link (scenarios/quickstart.yaml); "quick-start size" is its
3000 frames of 2^20 slots, whose expected pulse pairs per class the plans give.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from channel.analytic import exact_class_statistics
from channel.fiber import linear_rotation, su2
from channel.impairments import FaultSchedule
from channel.link import Link
from channel.relay import RelayOptics
from channel.settings import SettingsGenerator, four_intensity_plan
from channel.timeline import TimelineEntry
from classical.estimation import DecoyObservations
from classical.sifting import sent_pairs, sift
from nodes.intensity_monitor import (
    IntensityMonitor,
    LinkModel,
    detection_probabilities,
)
from orchestration.config import Scenario, build_link, build_settings, load_scenario
from orchestration.inmemory import emulate_round
from tests.stats import ALPHA, z_bound

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"
#: The standard Bell decisions: ψ⁺ = {cH, cV}, {dH, dV}; ψ⁻ = {cH, dV}, {cV, dH}.
BELL = np.zeros(16, dtype=np.int64)
BELL[[0b0011, 0b1100]] = 1
BELL[[0b1001, 0b0110]] = 2


@functools.cache
def quickstart() -> tuple[Scenario, Link, SettingsGenerator, SettingsGenerator]:
    s = load_scenario(QUICKSTART)
    return s, build_link(s, timeline=()), build_settings(s, "alice"), build_settings(s, "bob")


def make_monitor(**kwargs: object) -> IntensityMonitor:
    _, link, alice, bob = quickstart()
    return IntensityMonitor(LinkModel.from_link(link), alice.plan.mean_photon_numbers,
                            bob.plan.mean_photon_numbers,
                            [c.name for c in alice.plan.intensities],
                            [c.name for c in bob.plan.intensities], **kwargs)  # type: ignore[arg-type]


def expected_pairs(frames: int | None = None) -> np.ndarray:
    """Expected pulse pairs per (i_a, i_b, basis) with matching bases in a round."""
    s, _, alice, bob = quickstart()
    slots = (frames or s.round_frames) << s.frame_bits

    def per_class(plan):  # (K, basis): P(class i in basis b)
        return np.array([[c.probability * c.z_probability, c.probability * (1 - c.z_probability)]
                         for c in plan.intensities])

    return slots * per_class(alice.plan)[:, None, :] * per_class(bob.plan)[None, :, :]


def model_counts(rng: np.random.Generator, factors_a=(1.0, 1.0, 1.0), factors_b=(1.0, 1.0, 1.0),
                 extra_db_a: float = 0.0, unitary_a: np.ndarray | None = None) -> np.ndarray:
    """Poisson detections of a quick-start-size round drawn from the exact model, with Alice's
    and Bob's classes emitting ``factors`` × nominal and Alice's arm ``extra_db_a`` lossier."""
    _, link, alice, bob = quickstart()
    model = LinkModel.from_link(link)
    ta = model.transmittance_a * 10 ** (-extra_db_a / 10)
    probs = detection_probabilities(ta * alice.plan.mean_photon_numbers * np.asarray(factors_a),
                                    model.transmittance_b * bob.plan.mean_photon_numbers
                                    * np.asarray(factors_b), model, unitary_a)
    return rng.poisson(expected_pairs() * probs).astype(np.float64)


def with_fault(link: Link, kind: str, target: str, params: dict[str, object]) -> Link:
    """``link`` with a game-day fault from the round's start on, as nature builds it."""
    entry = TimelineEntry(0.0, "fault", kind, target, params)
    return dataclasses.replace(link, faults=FaultSchedule.from_timeline([entry], 1))


def emulated_observations(link: Link, frames: int, seed: int, round_id: int = 0
                          ) -> DecoyObservations:
    """A round emulated by nature's sampler and Charles's software, sifted as the users sift."""
    s, _, alice, bob = quickstart()
    em = emulate_round(link, alice, bob, round_id, 0, frames << s.frame_bits, seed)
    a, b = em.alice, em.bob
    sifted = sift("alice", em.announcement.bell, a.basis, a.bit, a.intensity, b.basis,
                  b.intensity, n_intensities=(3, 3), slots=em.announcement.slots)
    pairs = sent_pairs(a.sent_counts, b.sent_counts, alice.frame_size)
    return DecoyObservations(tuple(alice.plan.mean_photon_numbers),
                             tuple(bob.plan.mean_photon_numbers), pairs, sifted.detections,
                             np.zeros_like(sifted.detections))


def deviance(k: np.ndarray, lam: np.ndarray) -> float:
    """Poisson deviance 2 Σ [k ln(k/λ) − (k − λ)]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(k > 0, k * np.log(k / lam), 0.0) - (k - lam)
    return 2.0 * float(terms.sum())


def log_light_standard_errors(pairs: np.ndarray, m_a: np.ndarray, m_b: np.ndarray,
                              model: LinkModel, ignored: np.ndarray) -> np.ndarray:
    """Covariance of the maximum-likelihood log m of every non-vacuum class (Alice's, then
    Bob's) with each class free: the inverse Fisher information of the Poisson counts."""
    h = 1e-6
    base = pairs * detection_probabilities(m_a, m_b, model)
    cols = []
    for user, m in ((0, m_a), (1, m_b)):
        for i in np.flatnonzero(m > 0):
            bumped = m.copy()
            bumped[i] *= math.exp(h)
            args = (bumped, m_b) if user == 0 else (m_a, bumped)
            cols.append(((pairs * detection_probabilities(*args, model) - base) / h)[~ignored])
    jac = np.stack(cols, axis=-1)
    lam = base[~ignored]
    return np.linalg.inv(jac.T @ (jac / lam[:, None]))


# --- the model is the exact one ---------------------------------------------------------------


def test_the_model_reproduces_the_general_formula_under_rotations_and_imperfect_overlap():
    model = LinkModel(0.3, 0.12, (0.8, 0.7, 0.75, 0.8), (1e-7, 3e-7, 1e-7, 2e-7), 0.05, -0.1,
                      0.9)
    mu = np.array([0.5, 0.1, 0.02, 0.0])
    u_a = su2(np.array([1.0, 0.3, -0.2]), 0.4) @ linear_rotation(0.05)
    probs = detection_probabilities(0.3 * mu, 0.12 * mu, model, unitary_a=u_a)
    for i, j, basis in np.ndindex(4, 4, 2):
        exact = exact_class_statistics(basis, mu[i], mu[j], 0.3, 0.12, u_a, linear_rotation(-0.1),
                                       np.array(model.efficiencies),
                                       np.array(model.dark_count_probabilities), 0.9,
                                       bell_of_pattern=BELL).gain
        # both are the same inclusion–exclusion: they agree to rounding, 1e-15 of the terms ~1
        assert probs[i, j, basis] == pytest.approx(exact, rel=1e-9, abs=1e-15), (i, j, basis)


# --- (1) healthy rounds -----------------------------------------------------------------------


def test_healthy_emulated_rounds_fit_the_nominal_model_and_are_not_flagged():
    """Three rounds of the real sampler (600 frames, seeds 1–3), each alone and pooled in a
    window: not flagged, and the Poisson deviance of the counts from the nominal model with the
    fitted transmittances is within its χ² bound (ALPHA split over the four windows)."""
    _, link, _, _ = quickstart()
    single = make_monitor()
    pooled = make_monitor(window_rounds=3)
    checks = []
    for r, seed in enumerate((1, 2, 3)):
        obs = emulated_observations(link, 600, seed, round_id=r)
        checks.append((obs.pairs, obs.detections.sum(-1), single.observe(r, obs)))
        window = pooled.observe(r, obs)
        assert (window is None) == (r < 2)
    pairs = sum(p for p, _, _ in checks)
    counts = sum(k for _, k, _ in checks)
    checks.append((pairs, counts, window))
    ignored = single.ignored_classes
    dof = int((~ignored).sum()) - 2
    for n, k, check in checks:
        assert check is not None and not check.flagged, check.summary()
        lam = single.expected_detections(n, check.transmittance_a, check.transmittance_b)
        g = deviance(k[~ignored], lam[~ignored])
        assert g <= stats.chi2.isf(ALPHA / 4, dof), (g, check.summary())
    assert window.round_ids == (0, 1, 2)
    assert window.detections == int(counts[~ignored].sum())


def test_the_flag_rate_of_model_counts_matches_the_false_alarm_budget():
    """200 quick-start-size rounds of Poisson counts from the nominal model at false_alarm 0.1:
    the number flagged is Binomial(200, 0.1) (two-sided, ALPHA/2) and the p-values uniform
    (Kolmogorov–Smirnov, ALPHA/2)."""
    rng = np.random.default_rng(20261204)
    monitor = make_monitor(false_alarm=0.1, fit_polarization=False)
    n = expected_pairs()
    checks = [monitor.check(n, model_counts(rng), (r,)) for r in range(200)]
    flagged = sum(c.flagged for c in checks)
    lo, hi = stats.binom.ppf(ALPHA / 4, 200, 0.1), stats.binom.isf(ALPHA / 4, 200, 0.1)
    assert lo <= flagged <= hi, (flagged, lo, hi)
    p_values = [c.p_value for c in checks]
    assert stats.kstest(p_values, "uniform").pvalue > ALPHA / 2


# --- (2) a miscalibrated class ----------------------------------------------------------------

MISCALIBRATIONS = [  # (user, class index, factor)
    ("alice", 1, 0.5), ("alice", 1, 1.5), ("bob", 0, 0.5), ("bob", 0, 1.5)]


@pytest.mark.parametrize(("user", "index", "factor"), MISCALIBRATIONS)
def test_a_miscalibrated_class_is_flagged_and_named(user, index, factor):
    """Quick-start-size Poisson rounds from the exact model with one class × factor: flagged,
    the class named; its factor within z_bound × the Fisher standard error of the class's log
    light relative to the user's other class (nominal-polarization test), and within 10 % by the
    default test (with the polarization nuisance, whose extra freedom widens the error)."""
    rng = np.random.default_rng([7, index, int(10 * factor)])
    factors = [1.0, 1.0, 1.0]
    factors[index] = factor
    kwargs = {"factors_a": factors} if user == "alice" else {"factors_b": factors}
    counts = model_counts(rng, **kwargs)  # type: ignore[arg-type]
    n = expected_pairs()
    strict = make_monitor(fit_polarization=False).check(n, counts, (0,))
    default = make_monitor().check(n, counts, (0,))
    _, link, alice, bob = quickstart()
    name = (alice if user == "alice" else bob).plan.intensities[index].name
    for check in (strict, default):
        assert check.flagged and check.suspect == (user, name), check.summary()
    model = LinkModel.from_link(link)
    m_a = model.transmittance_a * alice.plan.mean_photon_numbers * (
        np.asarray(factors) if user == "alice" else 1.0)
    m_b = model.transmittance_b * bob.plan.mean_photon_numbers * (
        np.asarray(factors) if user == "bob" else 1.0)
    cov = log_light_standard_errors(n, m_a, m_b, model, make_monitor().ignored_classes)
    first = 0 if user == "alice" else 2  # the two non-vacuum classes of the user
    se = math.sqrt(cov[first, first] + cov[first + 1, first + 1] - 2 * cov[first, first + 1])
    assert abs(math.log(strict.factor_estimate / factor)) <= z_bound(4 * 2) * se, (
        strict.factor_estimate, se)
    assert default.factor_estimate == pytest.approx(factor, rel=0.1)


def test_the_detection_power_at_quick_start_size():
    """Power from the noncentral χ²: Λ evaluated on the expected counts is the noncentrality.
    Against factors 0.5 and 1.5 on Alice's ν or Bob's μ the test misses with probability below
    10⁻⁶, and so it does against a 2 % error on Alice's ν (docs/calibration.md quotes the
    figures)."""
    _, link, alice, bob = quickstart()
    model = LinkModel.from_link(link)
    monitor = make_monitor(fit_polarization=False)
    n = expected_pairs()
    for user, index, factor in [*MISCALIBRATIONS, ("alice", 1, 0.98)]:
        fa, fb = np.ones(3), np.ones(3)
        (fa if user == "alice" else fb)[index] = factor
        lam = n * detection_probabilities(model.transmittance_a * alice.plan.mean_photon_numbers
                                          * fa, model.transmittance_b
                                          * bob.plan.mean_photon_numbers * fb, model)
        check = monitor.check(n, lam)
        assert check.degrees_of_freedom == 2
        power = stats.ncx2.sf(check.threshold, 2, check.statistic)
        assert power >= 1 - 1e-6, (user, index, factor, power)


def test_an_emulated_miscalibrated_round_is_flagged():
    """The real sampler, the game day's ``intensity_miscalibration`` fault on Alice's ν at half
    its nominal mean photon number (600 frames)."""
    _, link, _, _ = quickstart()
    bad = with_fault(link, "intensity_miscalibration", "source/alice",
                     {"intensity": "nu", "mean_photon_number_factor": 0.5})
    check = make_monitor().observe(0, emulated_observations(bad, 600, 4))
    assert check is not None and check.flagged and check.suspect == ("alice", "nu")
    assert check.factor_estimate == pytest.approx(0.5, rel=0.1)


# --- (3) what is not a miscalibration ---------------------------------------------------------


def test_three_db_more_loss_on_one_arm_is_not_flagged_and_the_transmittance_refits():
    """Real sampler, the game day's ``loss`` fault of 3 dB on Alice's fiber (600 frames): not
    flagged; the fitted
    transmittance is half the nominal one within z_bound × its Fisher standard error (the
    shared log-transmittance: the information-weighted mean of the classes')."""
    _, link, alice, bob = quickstart()
    lossy = with_fault(link, "loss", "link/alice-charles", {"extra_db": 3.0})
    monitor = make_monitor()
    check = monitor.observe(0, emulated_observations(lossy, 600, 5))
    assert check is not None and not check.flagged, check.summary()
    assert not check.polarization_fitted
    model = LinkModel.from_link(link)
    t_true = model.transmittance_a * 10 ** -0.3
    cov = log_light_standard_errors(expected_pairs(600), t_true * alice.plan.mean_photon_numbers,
                                    model.transmittance_b * bob.plan.mean_photon_numbers, model,
                                    monitor.ignored_classes)
    info = np.linalg.inv(cov)[:2, :2].sum()  # Fisher information of log T_a (Alice's classes)
    assert abs(math.log(check.transmittance_a / t_true)) <= z_bound() * 2 / math.sqrt(info)


def test_a_fiber_loss_step_in_model_counts_is_not_flagged():
    """Quick-start size, 3 dB on Alice's arm: Λ stays under the threshold of false_alarm 10⁻⁶
    (a healthy round crosses it with probability 10⁻⁶ ≤ ALPHA)."""
    check = make_monitor().check(expected_pairs(), model_counts(np.random.default_rng(9),
                                                                extra_db_a=3.0))
    assert not check.flagged and not check.polarization_fitted, check.summary()


def test_a_polarization_rotation_is_taken_for_polarization_not_for_intensity():
    """A 0.2 rad rotation on Alice's arm changes the multi-photon coincidences across her
    classes: the nominal-polarization test rejects, the refit with the arms' polarization free
    does not (quick-start size, Poisson counts from the exact model)."""
    _, link, _, _ = quickstart()
    u = linear_rotation(0.2) @ link.fiber_a.static_unitary
    counts = model_counts(np.random.default_rng(11), unitary_a=u)
    strict = make_monitor(fit_polarization=False).check(expected_pairs(), counts)
    assert strict.flagged
    check = make_monitor().check(expected_pairs(), counts)
    assert check.polarization_fitted and not check.flagged, check.summary()
    assert check.nominal_statistic == strict.statistic


# --- decisions are public and deterministic ---------------------------------------------------


def test_both_users_reach_the_same_decision_from_the_same_public_counts():
    counts = model_counts(np.random.default_rng(13), factors_a=(1.0, 0.7, 1.0))
    a = make_monitor().check(expected_pairs(), counts, (3,))
    b = make_monitor().check(expected_pairs(), counts.copy(), (3,))
    assert repr(a) == repr(b)
    assert "MISCALIBRATION" in a.summary() and "'nu'" in a.summary()


# --- (4) bad input ----------------------------------------------------------------------------


def test_bad_counts_are_refused_with_a_clear_error():
    monitor = make_monitor()
    n = expected_pairs()
    k = np.ones_like(n)
    with pytest.raises(ValueError, match=r"pairs must have shape \(3, 3, 2\)"):
        monitor.check(n[:2], k)
    with pytest.raises(ValueError, match="detections must be finite and >= 0"):
        monitor.check(n, -k)
    with pytest.raises(ValueError, match="detections must be finite and >= 0"):
        monitor.check(n, k * np.nan)
    with pytest.raises(ValueError, match="cannot exceed pulse pairs"):
        monitor.check(n, n + 1)
    assert monitor.check(n, np.zeros_like(n)) is None  # no detection: nothing to judge


def test_bad_observations_and_settings_are_refused_with_a_clear_error():
    monitor = make_monitor()
    good = DecoyObservations((0.4, 0.1, 0.0), (0.4, 0.1, 0.0), np.ones((3, 3, 2)),
                             np.ones((3, 3, 2, 2)) / 4, np.zeros((3, 3, 2, 2)))
    with pytest.raises(TypeError, match="must be classical.estimation.DecoyObservations"):
        monitor.observe(0, {"pairs": good.pairs})  # type: ignore[arg-type]
    other = dataclasses.replace(good, intensities_a=(0.5, 0.1, 0.0))
    with pytest.raises(ValueError, match="alice's intensities .* are not the monitor's"):
        monitor.observe(0, other)
    with pytest.raises(ValueError, match="round_id must be an integer >= 0"):
        monitor.observe(-1, good)
    monitor.observe(4, good)
    with pytest.raises(ValueError, match="rounds must come in increasing order"):
        monitor.observe(4, good)
    with pytest.raises(ValueError, match="detections must have shape"):
        DecoyObservations((0.4, 0.1, 0.0), (0.4, 0.1, 0.0), np.ones((3, 3, 2)),
                          np.ones((3, 3, 2)), np.zeros((3, 3, 2, 2)))
    with pytest.raises(ValueError, match="false_alarm must be in"):
        make_monitor(false_alarm=0.0)
    with pytest.raises(ValueError, match="window_rounds must be an integer >= 1"):
        make_monitor(window_rounds=0)
    with pytest.raises(ValueError, match="3 class names for 2 intensities"):
        IntensityMonitor(LinkModel(0.5, 0.5), (0.4, 0.1), (0.4, 0.1), ("a", "b", "c"))
    with pytest.raises(ValueError, match="bob's intensities must be"):
        IntensityMonitor(LinkModel(0.5, 0.5), (0.4, 0.1), (0.4, -0.1))
    with pytest.raises(ValueError, match="nothing to monitor"):
        IntensityMonitor(LinkModel(0.5, 0.5), (0.4, 0.0), (0.4, 0.0))
    with pytest.raises(ValueError, match="transmittance_a must be in"):
        LinkModel(0.0, 0.5)


def test_the_polarization_learnt_carries_over_to_the_next_rounds():
    """After a rotation on Alice's arm the first check refits the polarization; the next rounds
    under the same rotation pass the first test at the polarization learnt, and a miscalibration
    that follows is still flagged and named."""
    _, link, _, _ = quickstart()
    u = linear_rotation(0.3) @ link.fiber_a.static_unitary
    rng = np.random.default_rng(17)
    monitor = make_monitor()
    first = monitor.check(expected_pairs(), model_counts(rng, unitary_a=u), (0,))
    assert first.polarization_fitted and not first.flagged, first.summary()
    second = monitor.check(expected_pairs(), model_counts(rng, unitary_a=u), (1,))
    assert not second.polarization_fitted and not second.flagged, second.summary()
    third = monitor.check(expected_pairs(), model_counts(rng, factors_b=(1.0, 1.3, 1.0),
                                                        unitary_a=u), (2,))
    assert third.flagged and third.suspect == ("bob", "nu"), third.summary()
    monitor.reset()
    fourth = monitor.check(expected_pairs(), model_counts(rng, unitary_a=u), (3,))
    assert fourth.polarization_fitted and not fourth.flagged, fourth.summary()


def test_the_four_intensity_layout_names_the_decoy_that_departs_from_the_others():
    """Four classes per user (signal s only in Z, decoys μ and ν only in X, vacuum): the signal
    is seen in the (s, s) class alone, jointly with the peer's, so the test has 3 degrees of
    freedom, not 4; a model round is not flagged at false_alarm 10⁻⁶ (≤ ALPHA); Bob's ν at
    0.7 × nominal is flagged and named; Alice's signal at 0.8 × nominal is flagged, named as a
    signal (whose, the counts cannot tell) with its factor."""
    plan = four_intensity_plan()
    _, link, _, _ = quickstart()
    model = LinkModel.from_link(link)
    mu = plan.mean_photon_numbers
    names = [c.name for c in plan.intensities]
    per_class = np.array([[c.probability * c.z_probability,
                           c.probability * (1 - c.z_probability)] for c in plan.intensities])
    n = (3000 << 20) * per_class[:, None, :] * per_class[None, :, :]
    rng = np.random.default_rng(19)
    cases = [((1.0,) * 4, (1.0,) * 4, None, None),
             ((1.0,) * 4, (1.0, 1.0, 0.7, 1.0), {("bob", names[2])}, 0.7),
             ((0.8, 1.0, 1.0, 1.0), (1.0,) * 4, {("alice", names[0]), ("bob", names[0])}, 0.8)]
    for factors_a, factors_b, suspects, factor in cases:
        lam = n * detection_probabilities(model.transmittance_a * mu * np.asarray(factors_a),
                                          model.transmittance_b * mu * np.asarray(factors_b),
                                          model)
        check = IntensityMonitor(model, mu, mu, names, names).check(
            n, rng.poisson(lam).astype(np.float64))
        assert check.degrees_of_freedom == 3
        assert check.flagged == (suspects is not None), check.summary()
        if suspects is not None:
            assert check.suspect in suspects, check.summary()
            assert check.factor_estimate == pytest.approx(factor, rel=0.1)


def test_the_controllers_setting_is_part_of_the_known_polarization():
    """Alice's polarization controller turned by 0.3 rad (before her fiber): told the setting,
    the monitor needs no refit; not told, it refits; a window mixing settings waits."""
    _, link, _, _ = quickstart()
    turn = linear_rotation(0.3)
    counts = model_counts(np.random.default_rng(23),
                          unitary_a=link.fiber_a.static_unitary @ turn)
    told = make_monitor().check(expected_pairs(), counts, (0,), (turn, np.eye(2)))
    assert not told.polarization_fitted and not told.flagged, told.summary()
    blind = make_monitor().check(expected_pairs(), counts, (0,))
    assert blind.polarization_fitted and not blind.flagged, blind.summary()
    obs = DecoyObservations((0.4, 0.1, 0.0), (0.4, 0.1, 0.0), expected_pairs(),
                            np.stack([counts, np.zeros_like(counts)], axis=-1),
                            np.zeros((3, 3, 2, 2)))
    window = make_monitor(window_rounds=2)
    assert window.observe(0, obs, (np.eye(2), np.eye(2))) is None
    assert window.observe(1, obs, (turn, np.eye(2))) is None  # two settings in the window
    assert window.observe(2, obs, (turn, np.eye(2))) is not None
    with pytest.raises(ValueError, match="controls must be two 2x2 unitaries"):
        window.observe(3, obs, (2 * turn, np.eye(2)))


def test_the_nominal_model_keeps_the_coincidences_the_window_keeps_under_configured_jitter():
    """Detectors of 400 ps rms jitter and a 1000 ps window: each pattern's two clicks differ by
    N(0, 2·400²), kept with probability erf(1000 / 800) (docs/physics.md §9: 7.7 % lost)."""
    _, link, _, _ = quickstart()
    jittery = dataclasses.replace(link, relay=RelayOptics(tuple(
        dataclasses.replace(d, jitter_ps=400.0) for d in link.relay.detectors)))
    assert LinkModel.from_link(jittery).coincidence_keep == 1.0  # no window given
    model = LinkModel.from_link(jittery, coincidence_window_ps=1000.0)
    assert model.coincidence_keep == pytest.approx(math.erf(1000 / 800), rel=1e-12)
    assert LinkModel.from_link(link, coincidence_window_ps=1000.0).coincidence_keep == 1.0
    with pytest.raises(ValueError, match="coincidence_window_ps must be > 0"):
        LinkModel.from_link(link, coincidence_window_ps=0.0)
