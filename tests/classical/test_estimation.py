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
from channel.samplers import sample
from channel.settings import SettingsGenerator, three_intensity_plan
from channel.source import Source
from classical.estimation import (
    Abort,
    DecoyObservations,
    Estimate,
    SecurityParameters,
    binary_entropy,
    chernoff_bounds,
    choose_test_positions,
    decoy_bounds,
    estimate,
    predicted_leakage,
    realised_lower,
    realised_upper,
)
from classical.sifting import FAIL, class_errors, sent_pairs, sift
from nodes.relay_software import DEFAULT_COINCIDENCE_WINDOW_PS, bell_states

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
    (merged,) = decoy_bounds(obs, "asymptotic", merge_bell_states=True, decoy_method="analytic")
    assert 0.5 * y11 < merged.y11_z_lower <= y11
    assert 0.2 * y11 < merged.y11_x_lower <= y11
    assert e11 <= merged.e11_x_upper < 0.2
    assert merged.phase_error_upper == pytest.approx(merged.e11_x_upper)
    per_bell = decoy_bounds(obs, "asymptotic", decoy_method="analytic")
    assert sum(b.y11_z_lower for b in per_bell) == pytest.approx(merged.y11_z_lower)


def test_asymptotic_key_length_subtracts_the_leakage():
    obs = _analytic_observations(25.0, 1e11)
    a = estimate(obs, 0.0, "asymptotic", decoy_method="analytic")
    b = estimate(obs, 1000.0, "asymptotic", decoy_method="analytic")
    assert isinstance(a, Estimate) and isinstance(b, Estimate)
    assert a.method == "asymptotic" and a.epsilons == {}
    assert a.secure_length - b.secure_length in (1000, 1001)


# --- finite-key bounds from a sampled round ----------------------------------------------------


def _sampled_observations(link: Link, plan, slots: int, seeds: tuple[int, int, int]
                          ) -> DecoyObservations:
    """One round of the fast sampler, announced, sifted and counted per class (whole frames,
    so the sent pairs are the exact conditional expectation); ``seeds`` = (Alice, Bob, nature)."""
    ga, gb = SettingsGenerator(plan, seeds[0]), SettingsGenerator(plan, seeds[1])
    out = sample(link, ga, gb, 0, slots, seed=seeds[2], sampler="fast")
    bell = bell_states(out.records, DEFAULT_COINCIDENCE_WINDOW_PS)
    ok = bell != FAIL
    slot = out.records.slot[ok]
    sa, sb = ga.settings_at(slot), gb.settings_at(slot)
    k = (len(plan.intensities),) * 2
    a = sift("alice", bell[ok], sa.basis, sa.bit, sa.intensity, sb.basis, sb.intensity, k)
    b = sift("bob", bell[ok], sb.basis, sb.bit, sb.intensity, sa.basis, sa.intensity, k)
    frames = range(slots >> ga.frame_bits)
    pairs = sent_pairs(np.array([ga.frame_counts(f) for f in frames]),
                       np.array([gb.frame_counts(f) for f in frames]), ga.frame_size)
    ints = tuple(float(m) for m in plan.mean_photon_numbers)
    return DecoyObservations(ints, ints, pairs, a.detections, class_errors(a, b.bits))


@pytest.fixture(scope="module")
def sampled_round() -> DecoyObservations:
    plan = three_intensity_plan(*INTENSITIES, PROBABILITIES)
    link = Link(Source(plan, bit_flip_probability=E_D), Source(plan), Fiber(25.0), Fiber(25.0))
    return _sampled_observations(link, plan, 4 * 10**9, (41, 42, 43))


def test_finite_bounds_from_a_sampled_round_contain_the_truth(sampled_round):
    y11, e11 = _truth(25.0)
    (merged,) = decoy_bounds(sampled_round, "finite", merge_bell_states=True,
                             decoy_method="analytic")
    assert 0.2 * y11 < merged.y11_z_lower <= y11  # informative, and below the truth
    assert merged.y11_x_lower <= y11
    assert merged.e11_x_upper >= e11
    assert merged.bounded_counts == 20
    per_bell = decoy_bounds(sampled_round, "finite", decoy_method="analytic")
    assert sum(b.y11_z_lower for b in per_bell) <= y11
    assert sum(b.y11_x_lower for b in per_bell) <= y11
    assert all(b.e11_x_upper >= e11 for b in per_bell)
    # single-photon pairs in the key: below their expected number
    p11 = 0.4 * math.exp(-0.4) * 0.4 * math.exp(-0.4)
    assert merged.s11_z_lower <= sampled_round.pairs[0, 0, 0] * p11 * y11


def test_finite_bounds_are_looser_than_asymptotic(sampled_round):
    for fin, asy in zip(decoy_bounds(sampled_round, "finite", decoy_method="analytic"),
                        decoy_bounds(sampled_round, "asymptotic", decoy_method="analytic"),
                        strict=True):
        assert fin.y11_z_lower <= asy.y11_z_lower
        assert fin.y11_x_lower <= asy.y11_x_lower
        assert fin.e11_x_upper >= asy.e11_x_upper
        assert fin.s11_z_lower <= asy.s11_z_lower


def test_small_round_yields_no_key(sampled_round):
    obs = sampled_round
    n_z = obs.detections[0, 0, 0]
    leakage = [predicted_leakage(int(n), float(e / n)) for n, e in zip(n_z, obs.errors[0, 0, 0],
                                                                        strict=True)]
    result = estimate(obs, leakage, "finite", decoy_method="analytic")
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
    result = estimate(obs, leakage, "finite", decoy_method="analytic")
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
    asymptotic = estimate(obs, leakage, "asymptotic", decoy_method="analytic")
    assert isinstance(asymptotic, Estimate)
    assert 0 < result.secure_length < asymptotic.secure_length
    assert set(result.epsilons) >= {"correctness", "prime", "smoothing", "privacy_amplification",
                                    "parameter_estimation_per_count"}
    assert 0 < result.epsilon_security < 1e-7
    assert result.epsilon_correctness == pytest.approx(2e-15)
    merged = estimate(obs, sum(leakage), "finite", decoy_method="analytic")
    assert isinstance(merged, Estimate) and [b.name for b in merged.per_block] == ["psi+-"]


# --- ε composition (Curty et al. 2014; docs/finite-key.md §4) --------------------------

# Distinct values, so that a wrong multiplicity of any one of them shows.
CURTY_EPS = {"epsilon_correctness": 3e-16, "epsilon_prime": 1e-11, "epsilon_smoothing": 3e-11,
             "epsilon_pa": 7e-12, "epsilon_pe": 1e-13, "epsilon_beta": 5e-12}
# Cells with a non-zero coefficient in Xu13 Eq. 6 (G(ν) and G(μ)): νν ωω νω ων, μμ ωω μω ωμ.
XU13_YIELD_CELLS = {"nu-nu", "omega-omega", "nu-omega", "omega-nu", "mu-mu", "mu-omega", "omega-mu"}
XU13_ERROR_CELLS = 4  # Eq. 7: νν, ωω, νω, ων of the X error gains
REALISED_BOUNDS = 2  # s11^{Z,L} and k^U from their expectations


def _curty_length_cost_bits(eps_cor: float, eps_prime: float, eps_hat: float,
                            eps_pa: float) -> float:
    """log₂(8/ε_cor) + 2 log₂(2/(ε′ε̂)) + 2 log₂(1/(2ε_PA)) (Curty 2014, docs/finite-key.md §3)."""
    return (math.log2(8 / eps_cor) + 2 * math.log2(2 / (eps_prime * eps_hat))
            + 2 * math.log2(1 / (2 * eps_pa)))


def _curty_secrecy(eps_prime: float, eps_e: float, eps_hat: float, eps_beta: float,
                   eps_pa: float) -> float:
    """ε_sec of one Bell-state block: 2(ε′ + 2ε_e + ε̂) + ε_β + ε_PA (Curty et al. 2014, with
    every estimation failure charged as ε_e; docs/finite-key.md §4)."""
    return 2 * (eps_prime + 2 * eps_e + eps_hat) + eps_beta + eps_pa


@pytest.fixture(scope="module")
def scale_round():
    obs = _analytic_observations(25.0, 1e14, (0.4, 0.05, 0.0), (0.4, 0.4, 0.2),
                                 rng=np.random.default_rng(7))
    n_z = obs.detections[0, 0, 0]
    leakage = [predicted_leakage(int(n), float(e / n))
               for n, e in zip(n_z, obs.errors[0, 0, 0], strict=True)]
    return obs, leakage


@pytest.mark.parametrize("decoy_method, counts_per_block", [
    ("analytic", 2 * len(XU13_YIELD_CELLS) + XU13_ERROR_CELLS + REALISED_BOUNDS),  # 20
    ("lp", 3 * 9 + REALISED_BOUNDS),  # every class: Z gains, X gains, X error gains
    ("joint", 3 * 9 + 3 * math.comb(9, 2) + REALISED_BOUNDS),  # and every pair of them, per kind
])
@pytest.mark.parametrize("per_bell", [True, False])
def test_epsilon_security_is_curtys_composition_with_one_eps_pe_per_bounded_count(
        scale_round, decoy_method, counts_per_block, per_bell):
    obs, leakage = scale_round
    leak = leakage if per_bell else sum(leakage)
    result = estimate(obs, leak, "finite", SecurityParameters(**CURTY_EPS), decoy_method)
    assert isinstance(result, Estimate), result
    kept = [b for b in result.per_block if b.kept]
    assert len(kept) == (2 if per_bell else 1)
    eps_e = counts_per_block * CURTY_EPS["epsilon_pe"]  # union bound over the bounded counts
    block_sec = _curty_secrecy(CURTY_EPS["epsilon_prime"], eps_e, CURTY_EPS["epsilon_smoothing"],
                               CURTY_EPS["epsilon_beta"], CURTY_EPS["epsilon_pa"])
    assert result.epsilon_security == pytest.approx(len(kept) * block_sec, rel=1e-12)
    assert result.epsilon_correctness == pytest.approx(
        len(kept) * CURTY_EPS["epsilon_correctness"], rel=1e-12)

    # every ε is named, and the named parts add up to ε_sec with the paper's multiplicities
    named = result.epsilons
    assert named["correctness"] == CURTY_EPS["epsilon_correctness"]
    assert named["prime"] == CURTY_EPS["epsilon_prime"]
    assert named["smoothing"] == CURTY_EPS["epsilon_smoothing"]
    assert named["privacy_amplification"] == CURTY_EPS["epsilon_pa"]
    assert named["parameter_estimation_per_count"] == CURTY_EPS["epsilon_pe"]
    for b in kept:
        assert b.bounds.bounded_counts == counts_per_block
        assert named[f"parameter_estimation_{b.name}"] == pytest.approx(eps_e, rel=1e-12)
        assert named[f"beta_{b.name}"] == CURTY_EPS["epsilon_beta"]  # one ε_β per Bell state
    assert {k for k in named if k.startswith("beta_")} == {f"beta_{b.name}" for b in kept}
    parts = sum(2 * named["prime"] + 4 * named[f"parameter_estimation_{b.name}"]
                + 2 * named["smoothing"] + named[f"beta_{b.name}"]
                + named["privacy_amplification"] for b in kept)
    assert result.epsilon_security == pytest.approx(parts, rel=1e-12)

    # the length's ε terms are the paper's, once per block
    cost = _curty_length_cost_bits(CURTY_EPS["epsilon_correctness"], CURTY_EPS["epsilon_prime"],
                                   CURTY_EPS["epsilon_smoothing"], CURTY_EPS["epsilon_pa"])
    for block, lam in zip(result.per_block, np.atleast_1d(leak), strict=True):
        b = block.bounds
        assert block.length == math.floor(
            b.s11_z_lower * (1 - binary_entropy(b.phase_error_upper)) - lam - cost)
    assert result.secure_length == sum(b.length for b in kept)


def test_the_epsilon_terms_of_the_length_are_curtys():
    for eps in ({}, CURTY_EPS):
        p = SecurityParameters(**eps)
        assert p.finite_key_cost_bits == pytest.approx(_curty_length_cost_bits(
            p.epsilon_correctness, p.epsilon_prime, p.epsilon_smoothing, p.epsilon_pa))
        assert p.block_secrecy(20) == pytest.approx(_curty_secrecy(
            p.epsilon_prime, 20 * p.epsilon_pe, p.epsilon_smoothing, p.epsilon_beta,
            p.epsilon_pa))
    with pytest.raises(ValueError):
        SecurityParameters().block_secrecy(-1)


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


def _tail_quantiles(dist, epsilon: float) -> tuple[int, int]:
    """(k_lo, k_hi) of a discrete distribution: the largest k with P(X < k) ≤ ε/2 and the
    smallest k with P(X > k) ≤ ε/2 (the exact ε/2 quantiles of each tail)."""
    q = epsilon / 2
    k_lo = int(dist.ppf(q))  # smallest k with P(X ≤ k) ≥ q, so P(X < k) < q ≤ P(X < k + 1)
    k_hi = int(dist.isf(q))
    while dist.sf(k_hi - 1) <= q:
        k_hi -= 1
    while dist.sf(k_hi) > q:
        k_hi += 1
    return k_lo, k_hi


@pytest.mark.parametrize("mean", [0.5, 3.0, 40.0, 2000.0, 1e6])
@pytest.mark.parametrize("epsilon", [0.05, 1e-3, 1e-10])
def test_chernoff_interval_covers_the_mean_at_the_exact_tail_quantiles(mean, epsilon):
    """Each end of the interval fails with probability ≤ ε/2 iff, at the count X would exceed
    only with probability ≤ ε/2 (its exact quantile), the lower end still lies below the mean,
    and likewise for the upper end: the ends are monotone in the count. Deterministic, exact for
    a binomial count (the bound's model: a sum of independent Bernoullis)."""
    from scipy import stats

    trials = max(10**7, int(100 * mean))
    dist = stats.binom(trials, mean / trials)
    k_lo, k_hi = _tail_quantiles(dist, epsilon)
    assert dist.cdf(k_lo - 1) <= epsilon / 2 < dist.cdf(k_lo)  # the quantiles are exact
    assert dist.sf(k_hi) <= epsilon / 2 < dist.sf(k_hi - 1)
    lower, _ = chernoff_bounds(float(k_hi), epsilon)
    _, upper = chernoff_bounds(float(k_lo), epsilon)
    assert float(lower) <= mean <= float(upper), (k_lo, k_hi, float(lower), float(upper))


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
    assert p.epsilon_beta == 1e-10  # ε_β enters ε_sec only, not the length
    with pytest.raises(ValueError):
        SecurityParameters(epsilon_pa=0.0)
    with pytest.raises(ValueError, match="epsilon_beta"):
        SecurityParameters(epsilon_beta=0.0)


def test_predicted_leakage_and_test_positions():
    assert predicted_leakage(1000, 0.0) == 0.0
    assert predicted_leakage(1000, 0.5, f=1.2) == pytest.approx(1200.0)
    pos = choose_test_positions(1000, 0.1, np.random.default_rng(0))
    assert pos.size == 100 and np.all(np.diff(pos) > 0) and pos.max() < 1000


# --- four intensities (Zhou, Yu & Wang 2016): signal only in Z, LP bounds ------------------------


def _observations(arm_km: float, pairs_total: float, intensities, z_probabilities,
                  probabilities) -> tuple[float, DecoyObservations]:
    """Expected counts of any layout (all ψ⁺), and η; probabilities per intensity."""
    eta = _eta(arm_km)
    k = len(intensities)
    z = np.array(z_probabilities)
    p = np.array(probabilities)[:, None] * np.stack([z, 1 - z], -1)
    pairs = pairs_total * p[:, None, :] * p[None, :, :]
    det = np.zeros((k, k, 2, 2))
    err = np.zeros((k, k, 2, 2))
    for i, j in itertools.product(range(k), range(k)):
        for basis, law in enumerate((mr_z_basis, mr_x_basis)):
            q, e = (float(v) for v in law(eta, eta, intensities[i], intensities[j], P_DARK, E_D))
            det[i, j, basis, 0] = pairs[i, j, basis] * q
            err[i, j, basis, 0] = det[i, j, basis, 0] * e
    return eta, DecoyObservations(intensities, intensities, pairs, det, err)


FOUR = (0.4, 0.1, 0.05, 0.0)  # s (Z only), μ, ν (X only), o (both bases)
FOUR_Z = (1.0, 0.0, 0.0, 0.5)
FOUR_P = (0.5, 0.2, 0.2, 0.1)


def test_the_analytic_method_refuses_other_than_three_intensities():
    _, obs = _observations(25.0, 1e12, FOUR, FOUR_Z, FOUR_P)
    with pytest.raises(ValueError, match="decoy_method 'analytic'.*4 and 4.*'lp'"):
        estimate(obs, 0.0, "asymptotic", decoy_method="analytic")
    with pytest.raises(ValueError, match="decoy_method 'analytic'"):
        decoy_bounds(obs, "asymptotic", decoy_method="analytic")
    assert isinstance(estimate(obs, 0.0, "asymptotic", decoy_method="lp"), Estimate)


def test_four_intensity_observations_are_validated():
    _, obs = _observations(25.0, 1e12, FOUR, FOUR_Z, FOUR_P)
    assert obs.n_intensities == (4, 4) and obs.key_intensity == (0, 0)
    with pytest.raises(ValueError, match=r"shape \(4, 4, 2\)"):
        DecoyObservations(FOUR, FOUR, obs.pairs[:3, :3], obs.detections, obs.errors)
    with pytest.raises(ValueError, match="distinct"):
        DecoyObservations((0.4, 0.1, 0.1, 0.0), FOUR, obs.pairs, obs.detections, obs.errors)
    with pytest.raises(ValueError, match="at least 3"):
        DecoyObservations((0.4, 0.1), (0.4, 0.1), obs.pairs[:2, :2], obs.detections[:2, :2],
                          obs.errors[:2, :2])
    with pytest.raises(ValueError, match="key_intensity"):
        DecoyObservations(FOUR, FOUR, obs.pairs, obs.detections, obs.errors, (0, 4))
    with pytest.raises(ValueError, match="key intensities must be > 0"):
        DecoyObservations(FOUR, FOUR, obs.pairs, obs.detections, obs.errors, (3, 3))


def test_the_key_class_is_the_one_named():
    """The same counts with the intensities listed in another order give the same bounds when
    ``key_intensity`` follows the signal."""
    _, obs = _observations(25.0, 1e12, FOUR, FOUR_Z, FOUR_P)
    order = [2, 0, 3, 1]  # the signal is now index 1
    moved = DecoyObservations(tuple(FOUR[i] for i in order), tuple(FOUR[i] for i in order),
                              obs.pairs[np.ix_(order, order)],
                              obs.detections[np.ix_(order, order)],
                              obs.errors[np.ix_(order, order)], key_intensity=(1, 1))
    a, b = (estimate(o, 1000.0, "asymptotic", decoy_method="lp") for o in (obs, moved))
    assert isinstance(a, Estimate) and isinstance(b, Estimate)
    assert b.n_z == a.n_z and b.secure_length == pytest.approx(a.secure_length, abs=2)
    assert b.s11_z_lower == pytest.approx(a.s11_z_lower, rel=1e-6)


#: The quick start's relay detectors (efficiency, dark-count probability): with the standard set
#: (0.145, 3·10⁻⁶) a 3·10⁹-slot round leaves the weak X decoys too few counts for Y11^L > 0.
METRO_DETECTORS = (0.8, 1e-7)


@pytest.fixture(scope="module")
def sampled_four_intensity_round() -> DecoyObservations:
    """3·10⁹ slots of the fast sampler, 2×25 km, metro detectors, the default four-intensity
    plan (``channel.settings.four_intensity_plan``) on both sides."""
    from channel.relay import RelayOptics
    from channel.settings import four_intensity_plan

    plan = four_intensity_plan()
    link = Link(Source(plan, bit_flip_probability=E_D), Source(plan), Fiber(25.0), Fiber(25.0),
                relay=RelayOptics.uniform(*METRO_DETECTORS))
    return _sampled_observations(link, plan, 3000 << 20, (51, 52, 53))


def test_lp_bounds_from_a_sampled_four_intensity_round_contain_the_truth(
        sampled_four_intensity_round):
    """Finite mode only: the asymptotic mode takes every observed gain as exact, and with a
    dozen noisy classes (some with a handful of counts) the LP constraints are then
    inconsistent, so Y11^L = 0 — the documented answer to infeasible data, not a failure."""
    obs = sampled_four_intensity_round
    eta = METRO_DETECTORS[0] * float(arm_transmittance(25.0))
    y11 = float(single_photon_yield(eta, eta, METRO_DETECTORS[1]))
    e11 = float(single_photon_phase_error(eta, eta, METRO_DETECTORS[1], E_D))
    assert obs.detections[0, 0, 1].sum() == 0  # the signal never goes in X
    (merged,) = decoy_bounds(obs, "finite", merge_bell_states=True, decoy_method="lp")
    assert 0.5 * y11 < merged.y11_z_lower <= y11
    assert e11 <= merged.e11_x_upper < 0.5
    per_bell = decoy_bounds(obs, "finite", decoy_method="lp")
    assert 0 < sum(b.y11_z_lower for b in per_bell) <= y11
    assert all(e11 <= b.e11_x_upper for b in per_bell)
    s = obs.intensities_a[0]
    assert merged.s11_z_lower <= obs.pairs[0, 0, 0] * (s * math.exp(-s)) ** 2 * y11
    # every class with sent pairs is bounded: detections of both bases, X errors; then s11, k
    assert merged.bounded_counts == int((obs.pairs > 0).sum() + (obs.pairs[..., 1] > 0).sum()) + 2


@pytest.mark.parametrize("distance_km", [0.0, 50.0, 100.0])
def test_four_intensities_beat_three_asymptotically_at_the_same_signal(distance_km):
    """What is compared: the asymptotic rate per key-class pulse pair,
    R = p₁₁ Y11^L [1 − h(e11^U)] − Q_ss f h(E_ss), of two layouts that share the key class
    (signal 0.4 on both sides, Z basis) and so its Q_ss and E_ss: the difference is the decoy
    bounds alone, not basis sifting or the probabilities (which cancel per key pair).

    * three intensities (0.4, 0.1, 0), all in both bases: analytic bound, then LP;
    * four intensities (s = 0.4 in Z; μ = 0.1, ν = 0.05 in X; vacuum in both), LP;
    * infinite decoys (the true Y11, e11).

    Expected R3(analytic) ≤ R3(LP) ≤ R4 ≤ R∞. Why the middle step could fail: the four-intensity
    layout gives up data (the signal's X-basis gains, the decoys' Z-basis gains) in exchange for
    weaker X decoys, whose multi-photon admixture is smaller, so the phase-error bound tightens.
    With X decoys as bright as the three-intensity layout's signal it would lose. The LP also
    bounds the photon numbers above its cut-off as worst cases, which costs bright intensities
    more. The outer steps are guaranteed (the analytic bound is a feasible LP point; any valid
    bound is below the truth) up to the LP solver's tolerance.
    """
    eta = _eta(distance_km / 2)
    q_z, e_z = (float(v) for v in mr_z_basis(eta, eta, 0.4, 0.4, P_DARK, E_D))
    p11 = (0.4 * math.exp(-0.4)) ** 2

    def rate(y11: float, e11: float) -> float:
        return p11 * y11 * (1 - binary_entropy(e11)) - q_z * 1.16 * binary_entropy(e_z)

    rates = {}
    for name, ints, z, method in (("3-analytic", (0.4, 0.1, 0.0), (0.5,) * 3, "analytic"),
                                  ("3-lp", (0.4, 0.1, 0.0), (0.5,) * 3, "lp"),
                                  ("4-lp", FOUR, FOUR_Z, "lp")):
        _, obs = _observations(distance_km / 2, 1e12, ints, z, (1 / len(ints),) * len(ints))
        (b,) = decoy_bounds(obs, "asymptotic", merge_bell_states=True, decoy_method=method)
        rates[name] = rate(b.y11_z_lower, b.e11_x_upper)
    rates["infinite"] = rate(*_truth(distance_km / 2))
    assert 0 < rates["3-analytic"] <= rates["3-lp"] * (1 + 1e-6)
    assert rates["3-lp"] * 1.3 < rates["4-lp"] <= rates["infinite"] * (1 + 1e-6)


# --- joint constraints -------------------------------------------------------------------------


def test_a_joint_interval_covers_the_summed_gains_at_its_confidence():
    """Exact coverage of one joint constraint: two classes with very different numbers of pulse
    pairs (so the N_G/N_c weights matter), the probability of every pair of counts within ±12
    standard deviations (the rest weighs < 1e-30), and each end's failure probability summed
    over them must be ≤ ε_PE/2. Weighting the counts wrongly (e.g. summing the raw counts)
    centres the interval on the wrong value and fails nearly always."""
    from scipy import stats

    from classical.estimation import joint_constraints

    pairs = np.array([[2e5, 5e4]])
    gain = np.array([[3e-3, 8e-3]])
    group = np.ones((1, 2), dtype=bool)
    ks, pmfs = [], []
    for n, p in zip(pairs.ravel().astype(np.int64), gain.ravel(), strict=True):
        sd = math.sqrt(n * p * (1 - p))
        k = np.arange(max(0, int(n * p - 12 * sd)), int(n * p + 12 * sd) + 1)
        ks.append(k)
        pmfs.append(stats.binom.pmf(k, n, p))
    k1, k2 = np.meshgrid(*ks, indexing="ij")
    weight = np.outer(*pmfs)
    assert weight.sum() == pytest.approx(1.0, abs=1e-12)
    counts = np.stack([k1.ravel(), k2.ravel()], axis=1).astype(float)
    for eps in (0.05, 1e-6):
        # joint_constraints bounds one group at a time; its arithmetic is vectorised here
        n_min = pairs.min()
        observed = (n_min / pairs[0] * counts).sum(axis=1)
        lo, hi = (v / n_min for v in chernoff_bounds(observed, eps))
        (c,) = joint_constraints("x", counts[1234].reshape(1, 2), pairs, [group], "finite", eps)
        assert (c.lo, c.hi) == pytest.approx((lo[1234], hi[1234]), rel=1e-12)
        fail_low = weight.ravel()[lo > gain.sum()].sum()
        fail_high = weight.ravel()[hi < gain.sum()].sum()
        assert fail_low <= eps / 2 and fail_high <= eps / 2, (eps, fail_low, fail_high)
    (exact,) = joint_constraints("e", pairs * gain, pairs, [group], "asymptotic", eps)
    assert exact.lo == pytest.approx(gain.sum()) and exact.hi == pytest.approx(gain.sum())


def test_bisection_stops_early_only_at_full_precision(monkeypatch):
    """The early stop returns the outer ends of 1e-15-narrow brackets: within 1e-15 relative of
    the 200-step answer, and never on the optimistic side."""
    import classical.estimation as est

    chi = np.array([0.0, 0.3, 1.0, 7.0, 123.0, 5.5e4, 3.2e7, 1e12])
    lo, hi = chernoff_bounds(chi, 1e-10)
    monkeypatch.setattr(est, "_BISECTION_RTOL", 0.0)  # never stop early: all 200 steps
    lo_full, hi_full = chernoff_bounds(chi, 1e-10)
    assert np.all(lo <= lo_full) and np.all(hi >= hi_full)
    assert np.allclose(lo, lo_full, rtol=1e-15, atol=0) and np.allclose(hi, hi_full, rtol=1e-15)


def test_joint_groups_are_every_pair_of_sent_classes():
    from classical.estimation import joint_groups

    used = np.array([[True, False, True], [False, True, False], [False, False, False]])
    groups = joint_groups(used)
    assert len(groups) == math.comb(3, 2)
    assert all(g.sum() == 2 and not np.any(g & ~used) for g in groups)
    assert len({g.tobytes() for g in groups}) == len(groups)


def test_joint_constraints_add_nothing_asymptotically():
    """Exact gains satisfy every sum of them, so the joint rows are left out: the same LP."""
    for ints, z, p in (((0.4, 0.1, 0.0), (0.5,) * 3, (0.5, 0.25, 0.25)), (FOUR, FOUR_Z, FOUR_P)):
        _, obs = _observations(25.0, 1e12, ints, z, p)
        (lp,) = decoy_bounds(obs, "asymptotic", merge_bell_states=True, decoy_method="lp")
        (joint,) = decoy_bounds(obs, "asymptotic", merge_bell_states=True, decoy_method="joint")
        assert joint.y11_z_lower == lp.y11_z_lower
        assert joint.e11_x_upper == lp.e11_x_upper


def test_joint_bounds_from_a_sampled_four_intensity_round_contain_the_truth_and_beat_the_lp(
        sampled_four_intensity_round):
    """The joint rows cut the LP's feasible set, so Y11^L can only rise and e11^U only fall
    (up to the solver's tolerance); both must still contain the truth. On this round the phase
    error bound falls by more than 5 % (the derivation in docs/finite-key.md §2 predicts
    ~15 % at this size: the pair (ν, o) + (o, ν) is bounded as one count)."""
    obs = sampled_four_intensity_round
    eta = METRO_DETECTORS[0] * float(arm_transmittance(25.0))
    y11 = float(single_photon_yield(eta, eta, METRO_DETECTORS[1]))
    e11 = float(single_photon_phase_error(eta, eta, METRO_DETECTORS[1], E_D))
    (lp,) = decoy_bounds(obs, "finite", merge_bell_states=True, decoy_method="lp")
    (joint,) = decoy_bounds(obs, "finite", merge_bell_states=True, decoy_method="joint")
    assert lp.y11_z_lower * (1 - 1e-6) <= joint.y11_z_lower <= y11
    assert e11 <= joint.e11_x_upper < 0.95 * lp.e11_x_upper
    assert joint.s11_z_lower >= lp.s11_z_lower * (1 - 1e-6)
    x_classes = int((obs.pairs[..., 1] > 0).sum())
    z_classes = int((obs.pairs[..., 0] > 0).sum())
    extra = math.comb(z_classes, 2) + 2 * math.comb(x_classes, 2)
    assert joint.bounded_counts == lp.bounded_counts + extra


def test_binary_entropy_edges_scalars_and_arrays():
    assert binary_entropy(np.array([0.0, 0.5, 1.0])).tolist() == [0.0, 1.0, 0.0]
    assert isinstance(binary_entropy(0.11), float)
    assert binary_entropy(0.11) == pytest.approx(-0.11 * math.log2(0.11) - 0.89 * math.log2(0.89),
                                                 rel=1e-15)
    assert binary_entropy(-0.2) == 0.0 and binary_entropy(1.5) == 0.0
    assert math.isnan(binary_entropy(math.nan))
    assert np.isnan(binary_entropy(np.array([0.1, math.nan]))).tolist() == [False, True]


def test_an_undefined_phase_error_bound_gives_no_key():
    from classical.estimation import SinglePhotonBounds, _block_length

    bounds = SinglePhotonBounds("psi+-", n_z=2e6, z_errors=1e4, qber_z=5e-3, qber_x=0.3,
                                y11_z_lower=1e-3, y11_x_lower=1e-3, e11_x_upper=math.nan,
                                s11_z_lower=1e6, phase_error_upper=math.nan, bounded_counts=0)
    assert _block_length(bounds, 0.0, "asymptotic", SecurityParameters()) == 0
