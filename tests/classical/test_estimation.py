"""Parameter estimation: decoy bounds against the true single-photon quantities, and the aborts.

Truth: Y11 and e11 from ``channel.analytic`` (Ma–Razavi App. A, η including the detector efficiency
0.145, flip-model misalignment e_d applied by Alice's encoder). Three sources of observations:

* analytic expected counts (asymptotic mode: the decoy bounds must contain the truth);
* one round of the fast sampler, 4×10⁹ slots of a 2×25 km link with random three-intensity
  settings (finite mode: the bounds must contain the truth; at this size they are loose and the
  finite-key length is negative, which is itself the "no key" outcome);
* binomial counts drawn from the analytic law at 10¹⁴ pulse pairs, where the finite-key bounds are
  tight enough to give a key.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channel.analytic import (
    arm_transmittance,
    mr_x_basis,
    mr_z_basis,
    single_photon_phase_error,
    single_photon_yield,
)
from channel.fiber import Fiber
from channel.link import Link
from channel.relay import announce
from channel.samplers import sample
from channel.settings import SettingsGenerator, three_intensity_plan
from channel.source import Source
from classical.estimation import (
    Abort,
    DecoyObservations,
    Estimate,
    SecurityParameters,
    chernoff_bounds,
    choose_test_positions,
    decoy_bounds,
    estimate,
    predicted_leakage,
    realised_lower,
    realised_upper,
)
from classical.sifting import FAIL, class_errors, sent_pairs, sift

ETA_D, P_DARK, E_D = 0.145, 3e-6, 0.015
INTENSITIES = (0.4, 0.1, 0.0)
PROBABILITIES = (0.5, 0.25, 0.25)


def _eta(arm_km: float) -> float:
    return ETA_D * float(arm_transmittance(arm_km))


def _truth(arm_km: float) -> tuple[float, float]:
    eta = _eta(arm_km)
    return (float(single_photon_yield(eta, eta, P_DARK)),
            float(single_photon_phase_error(eta, eta, P_DARK, E_D)))


def _analytic_observations(arm_km: float, pairs_total: float, intensities=INTENSITIES,
                           probabilities=PROBABILITIES,
                           rng: np.random.Generator | None = None) -> DecoyObservations:
    """Expected counts (rng None) or binomial draws, split evenly between ψ⁺ and ψ⁻."""
    eta = _eta(arm_km)
    p = np.array(probabilities)[:, None] * np.array([0.5, 0.5])  # (intensity, basis)
    pairs = pairs_total * p[:, None, :] * p[None, :, :]
    det = np.zeros((3, 3, 2, 2))
    err = np.zeros((3, 3, 2, 2))
    for i, j in itertools.product(range(3), range(3)):
        for basis, law in enumerate((mr_z_basis, mr_x_basis)):
            q, e = (float(v) for v in law(eta, eta, intensities[i], intensities[j], P_DARK, E_D))
            if rng is None:
                det[i, j, basis] = pairs[i, j, basis] * q / 2
                err[i, j, basis] = det[i, j, basis] * e
            else:
                d = rng.binomial(int(pairs[i, j, basis]), q)
                det[i, j, basis] = [d // 2, d - d // 2]
                err[i, j, basis] = rng.binomial(det[i, j, basis].astype(np.int64), e)
    return DecoyObservations(intensities, intensities, pairs, det, err)


# --- asymptotic bounds from the analytic gains -------------------------------------------------


@pytest.mark.parametrize("arm_km", [0.0, 10.0, 25.0, 50.0, 75.0])
@pytest.mark.parametrize("intensities", [(0.4, 0.1, 0.0), (0.5, 0.05, 0.0), (0.3, 0.1, 0.01)])
def test_asymptotic_bounds_from_analytic_gains_contain_the_truth(arm_km, intensities):
    y11, e11 = _truth(arm_km)
    obs = _analytic_observations(arm_km, 1e12, intensities)
    (merged,) = decoy_bounds(obs, "asymptotic", merge_bell_states=True)
    assert 0.5 * y11 < merged.y11_z_lower <= y11
    assert 0.2 * y11 < merged.y11_x_lower <= y11
    assert e11 <= merged.e11_x_upper < 0.2
    assert merged.phase_error_upper == pytest.approx(merged.e11_x_upper)
    per_bell = decoy_bounds(obs, "asymptotic")
    assert sum(b.y11_z_lower for b in per_bell) == pytest.approx(merged.y11_z_lower)


def test_asymptotic_key_length_subtracts_the_leakage():
    obs = _analytic_observations(25.0, 1e11)
    a = estimate(obs, 0.0, "asymptotic")
    b = estimate(obs, 1000.0, "asymptotic")
    assert isinstance(a, Estimate) and isinstance(b, Estimate)
    assert a.method == "asymptotic" and a.epsilons == {}
    assert a.secure_length - b.secure_length in (1000, 1001)


# --- finite-key bounds from a sampled round ----------------------------------------------------


@pytest.fixture(scope="module")
def sampled_round() -> DecoyObservations:
    slots = 4 * 10**9
    plan = three_intensity_plan(*INTENSITIES, PROBABILITIES)
    link = Link(Source(plan, bit_flip_probability=E_D), Source(plan), Fiber(25.0), Fiber(25.0))
    ga, gb = SettingsGenerator(plan, 41), SettingsGenerator(plan, 42)
    out = sample(link, ga, gb, 0, slots, seed=43, sampler="fast")
    bell = announce(out.records, link.relay.coincidence_window_ps)
    ok = bell != FAIL
    slot = out.records.slot[ok]
    sa, sb = ga.settings_at(slot), gb.settings_at(slot)
    a = sift("alice", bell[ok], sa.basis, sa.bit, sa.intensity, sb.basis, sb.intensity)
    b = sift("bob", bell[ok], sb.basis, sb.bit, sb.intensity, sa.basis, sa.intensity)
    frames = range(slots >> ga.frame_bits)  # whole frames: the exact conditional expectation
    pairs = sent_pairs(np.array([ga.frame_counts(f) for f in frames]),
                       np.array([gb.frame_counts(f) for f in frames]), ga.frame_size)
    return DecoyObservations(INTENSITIES, INTENSITIES, pairs, a.detections, class_errors(a, b.bits))


def test_finite_bounds_from_a_sampled_round_contain_the_truth(sampled_round):
    y11, e11 = _truth(25.0)
    (merged,) = decoy_bounds(sampled_round, "finite", merge_bell_states=True)
    assert 0.2 * y11 < merged.y11_z_lower <= y11  # informative, and below the truth
    assert merged.y11_x_lower <= y11
    assert merged.e11_x_upper >= e11
    assert merged.bounded_counts == 20
    per_bell = decoy_bounds(sampled_round, "finite")
    assert sum(b.y11_z_lower for b in per_bell) <= y11
    assert sum(b.y11_x_lower for b in per_bell) <= y11
    assert all(b.e11_x_upper >= e11 for b in per_bell)
    # single-photon pairs in the key: below their expected number
    p11 = 0.4 * math.exp(-0.4) * 0.4 * math.exp(-0.4)
    assert merged.s11_z_lower <= sampled_round.pairs[0, 0, 0] * p11 * y11


def test_finite_bounds_are_looser_than_asymptotic(sampled_round):
    for fin, asy in zip(decoy_bounds(sampled_round, "finite"),
                        decoy_bounds(sampled_round, "asymptotic"), strict=True):
        assert fin.y11_z_lower <= asy.y11_z_lower
        assert fin.y11_x_lower <= asy.y11_x_lower
        assert fin.e11_x_upper >= asy.e11_x_upper
        assert fin.s11_z_lower <= asy.s11_z_lower


def test_small_round_yields_no_key(sampled_round):
    obs = sampled_round
    n_z = obs.detections[0, 0, 0]
    leakage = [predicted_leakage(int(n), float(e / n)) for n, e in zip(n_z, obs.errors[0, 0, 0],
                                                                        strict=True)]
    result = estimate(obs, leakage, "finite")
    assert isinstance(result, Abort)
    assert result.reason.startswith("secure length <= 0")
    assert len(result.per_block) == 2 and not any(b.kept for b in result.per_block)


# --- finite-key at scale (binomial counts from the analytic law) ------------------------------


def test_finite_key_at_scale_contains_the_truth_and_gives_a_key():
    rng = np.random.default_rng(2024)
    y11, e11 = _truth(25.0)
    obs = _analytic_observations(25.0, 1e14, (0.4, 0.05, 0.0), (0.4, 0.4, 0.2), rng=rng)
    n_z = obs.detections[0, 0, 0]
    leakage = [predicted_leakage(int(n), float(e / n)) for n, e in zip(n_z, obs.errors[0, 0, 0],
                                                                        strict=True)]
    result = estimate(obs, leakage, "finite")
    assert isinstance(result, Estimate), result
    assert result.method == "finite-chernoff"
    for block in result.per_block:
        b = block.bounds
        assert 0.8 * y11 / 2 < b.y11_z_lower <= y11 / 2 * (1 + 1e-3)  # ψ± share Y11 equally
        assert e11 <= b.e11_x_upper < 0.1
        assert b.phase_error_upper >= b.e11_x_upper * 0.99
        assert block.kept
    assert result.secure_length == sum(b.length for b in result.per_block)
    assert result.qber_z == pytest.approx(obs.errors[0, 0, 0].sum() / n_z.sum())
    asymptotic = estimate(obs, leakage, "asymptotic")
    assert isinstance(asymptotic, Estimate)
    assert 0 < result.secure_length < asymptotic.secure_length
    assert set(result.epsilons) >= {"correctness", "prime", "smoothing", "privacy_amplification",
                                    "parameter_estimation_per_count"}
    assert 0 < result.epsilon_security < 1e-7
    assert result.epsilon_correctness == pytest.approx(2e-15)
    merged = estimate(obs, sum(leakage), "finite")
    assert isinstance(merged, Estimate) and [b.name for b in merged.per_block] == ["psi+-"]


# --- aborts ------------------------------------------------------------------------------------


def test_high_qber_aborts_with_its_reason():
    obs = _analytic_observations(25.0, 1e12)
    err = obs.errors.copy()
    err[0, 0, 0] = 0.31 * obs.detections[0, 0, 0]
    bad = DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs, obs.detections, err)
    result = estimate(bad, 0.0, "finite")
    assert isinstance(result, Abort)
    assert result.reason == "QBER_Z 0.31 above threshold 0.11"


def test_too_few_counts_aborts():
    obs = _analytic_observations(25.0, 1e5, rng=np.random.default_rng(1))
    result = estimate(obs, (0, 0), "finite")
    assert isinstance(result, Abort) and result.reason.startswith("too few counts")


def test_intensity_blind_announcements_abort_on_the_yield_bound():
    # Gains that do not fall with the decoy intensity: no single-photon pairs can be certified.
    obs = _analytic_observations(25.0, 1e12)
    det = np.full_like(obs.detections, 1e-4) * obs.pairs[..., None]
    det[1, 1] /= 100
    bad = DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs, det, det * 0.01)
    result = estimate(bad, (0, 0), "asymptotic")
    assert isinstance(result, Abort)
    assert result.reason.startswith("single-photon yield lower bound <= 0")


def test_bad_inputs_are_rejected():
    obs = _analytic_observations(25.0, 1e12)
    with pytest.raises(ValueError, match="leakage"):
        estimate(obs, (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="mode"):
        estimate(obs, 0.0, "exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        DecoyObservations(INTENSITIES, INTENSITIES, obs.pairs[0], obs.detections, obs.errors)
    with pytest.raises(ValueError, match="exceed"):
        DecoyObservations(INTENSITIES, INTENSITIES, obs.pairs, obs.detections,
                          obs.detections + 1)
    with pytest.raises(ValueError, match="mu > nu"):
        DecoyObservations((0.1, 0.4, 0.0), INTENSITIES, obs.pairs, obs.detections, obs.errors)


# --- the Chernoff bounds -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(chi=st.integers(0, 10**8), log_eps=st.floats(-30, -1))
def test_chernoff_bounds_solve_the_tail_equations(chi, log_eps):
    eps = 10.0**log_eps
    lo, hi = (float(v) for v in chernoff_bounds(chi, eps))
    assert 0 <= lo <= chi <= hi
    target = math.log(eps / 2)
    if chi > 0:
        d1 = chi / lo - 1  # Zhang et al. 2017: [e^δ₁/(1+δ₁)^(1+δ₁)]^(χ/(1+δ₁)) = ε/2
        assert chi / (1 + d1) * (d1 - (1 + d1) * math.log1p(d1)) == pytest.approx(target, rel=1e-6)
        d2 = 1 - chi / hi  # [e^−δ₂/(1−δ₂)^(1−δ₂)]^(χ/(1−δ₂)) = ε/2
        assert chi / (1 - d2) * (-d2 - (1 - d2) * math.log1p(-d2)) == pytest.approx(target,
                                                                                   rel=1e-6)
    else:
        assert lo == 0 and hi == pytest.approx(-target)


def test_chernoff_interval_covers_the_mean():
    rng = np.random.default_rng(5)
    eps = 0.05
    for mean in (3.0, 40.0, 2000.0):
        draws = rng.binomial(10**7, mean / 1e7, size=4000)
        lo, hi = chernoff_bounds(draws, eps)
        miss = np.mean((mean < lo) | (mean > hi))
        assert miss <= eps, (mean, miss)


def test_realised_bounds_bracket_the_expectation():
    assert realised_lower(0.0, 1e-10) == 0.0
    assert realised_lower(1e6, 1e-10) == pytest.approx(1e6 - math.sqrt(2e6 * math.log(2e10)))
    assert realised_upper(0.0, 1e-10) == pytest.approx(math.log(2e10))
    assert realised_lower(5e4, 1e-10) < 5e4 < realised_upper(5e4, 1e-10)


# --- small helpers -----------------------------------------------------------------------------


def test_security_parameter_defaults_and_cost():
    p = SecurityParameters()
    cost = (math.log2(8 / 1e-15) + 2 * math.log2(2 / 1e-20) + 2 * math.log2(1 / 2e-10))
    assert p.finite_key_cost_bits == pytest.approx(cost)
    with pytest.raises(ValueError):
        SecurityParameters(epsilon_pa=0.0)


def test_predicted_leakage_and_test_positions():
    assert predicted_leakage(1000, 0.0) == 0.0
    assert predicted_leakage(1000, 0.5, f=1.2) == pytest.approx(1200.0)
    pos = choose_test_positions(1000, 0.1, np.random.default_rng(0))
    assert pos.size == 100 and np.all(np.diff(pos) > 0) and pos.max() < 1000
