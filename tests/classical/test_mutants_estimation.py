"""Parameter estimation's decisions at their edges (classical/estimation.py): which abort, with
which reason and method, exactly at each threshold; the ε of a block that bounded no count
(docs/mutation-testing.md); and, from the run over the rest of the module, the Chernoff and
realised bounds against their tail equations, the analytic bounds against a brute-force worst
case, the joint constraints the LP receives, the phase-error cap, and every input check at its
edge."""

from __future__ import annotations

import math
import re
from itertools import combinations, product

import numpy as np
import pytest
from scipy import stats

import classical.estimation as est
from classical.decoy import OMEGA, single_photon_error_upper, single_photon_yield_lower
from classical.estimation import (
    Abort,
    BlockEstimate,
    DecoyObservations,
    Estimate,
    SecurityParameters,
    _qber_x,
    binary_entropy,
    check_intensity_layout,
    chernoff_bounds,
    choose_test_positions,
    decoy_bounds,
    decoy_method_problem,
    estimate,
    intensity_list_problem,
    predicted_leakage,
    realised_lower,
    realised_upper,
)
from tests.classical.test_estimation import (
    FOUR,
    FOUR_P,
    FOUR_Z,
    _analytic_observations,
    _observations,
)
from tests.stats import ALPHA

MU, NU, Z, X = 0, 1, 0, 1


def _with(obs: DecoyObservations, det: np.ndarray, err: np.ndarray) -> DecoyObservations:
    return DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs, det, err,
                             obs.key_intensity)


def _three() -> DecoyObservations:
    return _analytic_observations(25.0, 1e12)


def _four() -> DecoyObservations:
    return _observations(25.0, 1e12, FOUR, FOUR_Z, FOUR_P)[1]


def test_a_block_that_bounded_no_count_still_pays_its_fixed_epsilons() -> None:
    p = SecurityParameters()
    assert p.block_secrecy(0) == 2 * (p.epsilon_prime + p.epsilon_smoothing) + (
        p.epsilon_beta + p.epsilon_pa)
    with pytest.raises(ValueError, match="bounded_counts must be >= 0"):
        p.block_secrecy(-1)


@pytest.mark.parametrize(("decoy_method", "method"), [("lp", "asymptotic-lp"),
                                                      ("joint", "asymptotic-joint"),
                                                      ("analytic", "asymptotic")])
def test_the_method_names_the_decoy_method_unless_analytic(decoy_method, method) -> None:
    result = estimate(_three(), 0.0, "asymptotic", decoy_method=decoy_method)
    assert result.method == method


def test_too_few_key_detections_abort_naming_the_key_class_of_three_intensities() -> None:
    obs = _three()
    det, err = obs.detections.copy(), obs.errors.copy()
    det[MU, MU, Z], err[MU, MU, Z] = [30.0, 20.0], [0.0, 0.0]
    result = estimate(_with(obs, det, err), 0.0, "finite")
    assert result == Abort("too few counts: 50 detections in the key class (Z, mu, mu), need at "
                           "least 100", "finite-chernoff-joint")


@pytest.mark.parametrize("key", [(0, 0), (1, 1)])
def test_too_few_key_detections_abort_naming_the_key_class_by_index_otherwise(key) -> None:
    four = _four()
    det, err = four.detections.copy(), four.errors.copy()
    det[key[0], key[1], Z], err[key[0], key[1], Z] = [50.0, 0.0], [0.0, 0.0]
    obs = DecoyObservations(FOUR, FOUR, four.pairs, det, err, key)
    result = estimate(obs, 0.0, "asymptotic", decoy_method="lp")
    assert result == Abort(f"too few counts: 50 detections in the key class (Z, {key[0]}, "
                           f"{key[1]}), need at least 100", "asymptotic-lp")


def test_exactly_the_fewest_key_detections_are_enough_to_estimate() -> None:
    obs = _three()
    det, err = obs.detections.copy(), obs.errors.copy()
    det[MU, MU, Z], err[MU, MU, Z] = [60.0, 40.0], [0.0, 0.0]
    result = estimate(_with(obs, det, err), 0.0, "asymptotic")
    assert not (isinstance(result, Abort) and result.reason.startswith("too few counts"))


def test_no_x_detections_in_the_nu_nu_class_abort_with_that_reason() -> None:
    obs = _three()
    det, err = obs.detections.copy(), obs.errors.copy()
    det[NU, NU, X], err[NU, NU, X] = 0.0, 0.0
    result = estimate(_with(obs, det, err), 0.0, "finite")
    assert result == Abort("too few counts: no detections in the X-basis (nu, nu) class",
                           "finite-chernoff-joint")


def test_one_x_detection_in_the_nu_nu_class_is_not_none() -> None:
    obs = _three()
    det, err = obs.detections.copy(), obs.errors.copy()
    det[NU, NU, X], err[NU, NU, X] = [0.5, 0.5], [0.0, 0.0]
    result = estimate(_with(obs, det, err), 0.0, "asymptotic")
    assert not (isinstance(result, Abort) and "(nu, nu)" in result.reason)


def test_no_x_detections_at_all_abort_a_four_intensity_round_with_that_reason() -> None:
    obs = _four()
    det, err = obs.detections.copy(), obs.errors.copy()
    det[:, :, X], err[:, :, X] = 0.0, 0.0
    result = estimate(_with(obs, det, err), 0.0, "asymptotic", decoy_method="lp")
    assert result == Abort("too few counts: no detections in any X-basis class", "asymptotic-lp")


def test_one_x_detection_in_a_four_intensity_round_is_not_none() -> None:
    obs = _four()
    det, err = obs.detections.copy(), obs.errors.copy()
    det[:, :, X], err[:, :, X] = 0.0, 0.0
    det[3, 3, X, 0] = 1.0
    result = estimate(_with(obs, det, err), 0.0, "asymptotic", decoy_method="lp")
    assert not (isinstance(result, Abort) and "any X-basis class" in result.reason)


def test_a_qber_exactly_at_the_threshold_does_not_abort_on_it() -> None:
    obs = _three()
    det, err = obs.detections.copy(), obs.errors.copy()
    det[MU, MU, Z] = [50_000.0, 50_000.0]
    err[MU, MU, Z] = [5_500.0, 5_500.0]
    assert 11_000.0 / 100_000.0 == SecurityParameters().max_qber_z
    result = estimate(_with(obs, det, err), 0.0, "asymptotic")
    assert not (isinstance(result, Abort) and result.reason.startswith("QBER_Z"))


def test_a_qber_above_the_threshold_aborts_under_the_estimates_method() -> None:
    obs = _three()
    err = obs.errors.copy()
    err[MU, MU, Z] = 0.31 * obs.detections[MU, MU, Z]
    result = estimate(_with(obs, obs.detections, err), 0.0, "finite", decoy_method="lp")
    assert result == Abort("QBER_Z 0.31 above threshold 0.11", "finite-chernoff-lp")


def test_classes_the_bounds_need_without_pulse_pairs_abort_as_too_few_counts() -> None:
    obs = _three()
    pairs = obs.pairs.copy()
    pairs[NU, NU, X] = 0.0
    bad = DecoyObservations(obs.intensities_a, obs.intensities_b, pairs, obs.detections,
                            obs.errors)
    result = estimate(bad, 0.0, "asymptotic", decoy_method="analytic")
    assert result == Abort("too few counts: no pulse pairs in a X-basis class the bounds need",
                           "asymptotic")


def test_the_estimate_bounds_each_count_at_the_configured_epsilon_pe() -> None:
    obs = _analytic_observations(25.0, 1e14, rng=np.random.default_rng(7))
    loose = SecurityParameters(epsilon_pe=1e-3)
    default, relaxed = estimate(obs, 0.0, "finite"), estimate(obs, 0.0, "finite", loose)
    (expected,) = decoy_bounds(obs, "finite", 1e-3, merge_bell_states=True)
    assert relaxed.s11_z_lower == expected.s11_z_lower
    assert relaxed.s11_z_lower > default.s11_z_lower


def test_each_block_carries_the_leakage_charged_to_it() -> None:
    obs = _analytic_observations(25.0, 1e14, rng=np.random.default_rng(7))
    result = estimate(obs, (1000.0, 2500.0), "finite")
    assert [b.leakage_bits for b in result.per_block] == [1000.0, 2500.0]
    merged = estimate(obs, 3500.0, "finite")
    assert [b.leakage_bits for b in merged.per_block] == [3500.0]


def test_a_key_estimate_reports_every_quantity_it_decided_with() -> None:
    obs = _analytic_observations(25.0, 1e14, rng=np.random.default_rng(7))
    result = estimate(obs, (1000.0, 2500.0), "finite")
    det, err = obs.detections, obs.errors
    kept = [b for b in result.per_block if b.kept]
    assert kept and result.secure_length == sum(b.length for b in kept)
    assert result.n_z == round(float(det[MU, MU, Z].sum()))
    assert result.qber_z == float(err[MU, MU, Z].sum()) / float(det[MU, MU, Z].sum())
    assert result.qber_x == float(err[MU, MU, X].sum()) / float(det[MU, MU, X].sum())
    assert result.leakage_bits == 3500.0
    s11 = sum(b.bounds.s11_z_lower for b in result.per_block)
    assert result.s11_z_lower == s11
    assert result.e11_x_upper == pytest.approx(
        sum(b.bounds.s11_z_lower * b.bounds.e11_x_upper for b in result.per_block) / s11)
    p = SecurityParameters()
    assert result.epsilon_correctness == len(kept) * p.epsilon_correctness
    assert result.epsilon_security == pytest.approx(
        sum(p.block_secrecy(b.bounds.bounded_counts) for b in kept))


def test_the_yield_abort_carries_its_method_and_blocks() -> None:
    obs = _three()
    det = np.full_like(obs.detections, 1e-4) * obs.pairs[..., None]
    det[1, 1] /= 100
    bad = DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs, det, det * 0.01)
    result = estimate(bad, (0, 0), "asymptotic", decoy_method="lp")
    assert isinstance(result, Abort) and result.method == "asymptotic-lp"
    assert result.reason.startswith("single-photon yield lower bound <= 0")
    assert len(result.per_block) == 2


def _z_yield_not_positive_x_yield_positive() -> DecoyObservations:
    """The Z-basis (ν, ν) class detects a quarter of its expected counts: the analytic Z-basis
    bound Y11_Z^L (coefficient of Q_νν ≈ 163) drops below 0, the X-basis one is untouched."""
    obs = _three()
    det, err = obs.detections.copy(), obs.errors.copy()
    det[NU, NU, Z] /= 4
    err[NU, NU, Z] /= 4
    return _with(obs, det, err)


@pytest.mark.parametrize("leakage", [0.0, (0.0, 0.0)])
def test_a_positive_x_basis_yield_bound_alone_averts_the_yield_abort(leakage) -> None:
    """The yield abort needs Y11^L ≤ 0 in both bases (of every block); with Y11_Z^L ≤ 0 <
    Y11_X^L the key comes from the X-basis bound: S11 = N_μμ p11 Y11_X^L."""
    obs = _z_yield_not_positive_x_yield_positive()
    bounds = decoy_bounds(obs, "asymptotic", merge_bell_states=np.ndim(leakage) == 0,
                          decoy_method="analytic")
    assert len(bounds) == np.size(leakage)
    p11 = (0.4 * math.exp(-0.4)) ** 2
    for b in bounds:
        assert b.y11_z_lower <= 0 < b.y11_x_lower, b
        assert b.s11_z_lower == pytest.approx(obs.pairs[MU, MU, Z] * p11 * b.y11_x_lower)
    result = estimate(obs, leakage, "asymptotic", decoy_method="analytic")
    assert not (isinstance(result, Abort) and result.reason.startswith("single-photon yield"))
    lengths = [math.floor(b.s11_z_lower * (1 - binary_entropy(b.phase_error_upper)))
               for b in bounds]
    assert all(n > 0 for n in lengths)
    s11 = sum(b.s11_z_lower for b in bounds)
    det, err = obs.detections, obs.errors
    assert result == Estimate(
        method="asymptotic", secure_length=sum(lengths), s11_z_lower=s11,
        e11_x_upper=sum(b.s11_z_lower * b.e11_x_upper for b in bounds) / s11,
        qber_z=float(err[MU, MU, Z].sum()) / float(det[MU, MU, Z].sum()),
        qber_x=float(err[MU, MU, X].sum()) / float(det[MU, MU, X].sum()),
        n_z=round(float(det[MU, MU, Z].sum())), leakage_bits=0.0,
        per_block=tuple(BlockEstimate(b, 0.0, n) for b, n in zip(bounds, lengths, strict=True)))


def test_with_a_positive_x_basis_yield_bound_too_much_leakage_aborts_on_the_length() -> None:
    obs = _z_yield_not_positive_x_yield_positive()
    (b,) = decoy_bounds(obs, "asymptotic", merge_bell_states=True, decoy_method="analytic")
    assert b.y11_z_lower <= 0 < b.y11_x_lower, b
    length = math.floor(b.s11_z_lower * (1 - binary_entropy(b.phase_error_upper)) - 1e12)
    result = estimate(obs, 1e12, "asymptotic", decoy_method="analytic")
    assert result == Abort(f"secure length <= 0 (psi+-: {length})", "asymptotic",
                           (BlockEstimate(b, 1e12, length),))


def test_the_secure_length_abort_carries_its_method_and_blocks() -> None:
    obs = _analytic_observations(25.0, 1e14, rng=np.random.default_rng(7))
    result = estimate(obs, (1e12, 1e12), "finite")
    assert isinstance(result, Abort) and result.method == "finite-chernoff-joint"
    assert result.reason.startswith("secure length <= 0")
    assert [b.leakage_bits for b in result.per_block] == [1e12, 1e12]


@pytest.mark.parametrize("epsilon", [0.05, 1e-10])
@pytest.mark.parametrize("mean", [0.3, 7.0, 5e4, 1e9])
def test_realised_bounds_solve_their_chernoff_tail_equations(mean, epsilon):
    """Upper: P(X ≥ (1 + δ)m) ≤ exp(−δ²m/(2 + δ)) set to ε/2; lower: P(X ≤ (1 − δ)m) ≤
    exp(−δ²m/2) set to ε/2. Each end must solve its own equation (not merely lie outside it)."""
    log_tail = math.log(epsilon / 2)
    d_up = realised_upper(mean, epsilon) / mean - 1
    assert -d_up**2 * mean / (2 + d_up) == pytest.approx(log_tail, rel=1e-9)
    lower = realised_lower(mean, epsilon)
    d_lo = 1 - lower / mean
    if lower > 0:
        assert -d_lo**2 * mean / 2 == pytest.approx(log_tail, rel=1e-9)
    else:  # the equation's root is below 0: the count cannot be negative
        assert mean < 2 * -log_tail


@pytest.mark.parametrize("decoy_method", ["lp", "joint"])
def test_a_class_that_sent_a_single_pulse_pair_is_bounded_too(decoy_method):
    """Every class with sent pulse pairs enters the LP and is charged its ε_PE, however few it
    sent (docs/finite-key.md §2): the count of bounded counts follows from the layout alone."""
    _, obs = _observations(25.0, 1e12, FOUR, FOUR_Z, FOUR_P)
    pairs, det, err = obs.pairs.copy(), obs.detections.copy(), obs.errors.copy()
    assert pairs[0, 1, 1] == 0  # the signal is never sent in X
    pairs[0, 1, 1] = 1.0
    det[0, 1, 1] = err[0, 1, 1] = 0.0
    one = DecoyObservations(FOUR, FOUR, pairs, det, err)
    (b,) = decoy_bounds(one, "finite", merge_bell_states=True, decoy_method=decoy_method)
    z, x = int((pairs[..., 0] > 0).sum()), int((pairs[..., 1] > 0).sum())
    per_class = z + 2 * x  # Z gains, X gains, X error gains
    joint = math.comb(z, 2) + 2 * math.comb(x, 2) if decoy_method == "joint" else 0
    assert b.bounded_counts == per_class + joint + 2  # and s11, k from their expectations


def test_the_joint_method_hands_the_lp_every_pair_of_every_kind(monkeypatch):
    """"joint" = the LP plus a Chernoff bound on the summed gains of every pair of sent classes,
    for each kind: Z gains, X gains, X error gains (docs/finite-key.md §2, step 2); each such
    sum is charged an ε_PE, so each must reach the LP. Counts equal to their expectations, so
    every interval must contain the true summed gain."""
    _, obs = _observations(25.0, 1e12, FOUR, FOUR_Z, FOUR_P)
    seen = []
    real = est.lp_bounds

    def recording(*args, joint=(), **kwargs):
        seen.append(list(joint))
        return real(*args, joint=joint, **kwargs)

    monkeypatch.setattr(est, "lp_bounds", recording)
    decoy_bounds(obs, "finite", merge_bell_states=True, decoy_method="joint")
    (joint,) = seen
    det, err, pairs = obs.detections[..., 0], obs.errors[..., 0], obs.pairs
    truth = {"z": det[..., 0] / np.where(pairs[..., 0] > 0, pairs[..., 0], 1),
             "x": det[..., 1] / np.where(pairs[..., 1] > 0, pairs[..., 1], 1),
             "e": err[..., 1] / np.where(pairs[..., 1] > 0, pairs[..., 1], 1)}
    rows = 0
    for kind, basis in (("z", 0), ("x", 1), ("e", 1)):
        cells = list(zip(*np.nonzero(pairs[..., basis] > 0), strict=True))
        expected = {frozenset(pair) for pair in combinations(cells, 2)}
        mine = [c for c in joint if c.kind == kind]
        got = {frozenset(zip(*np.nonzero(c.weights), strict=True)) for c in mine}
        assert got == expected and len(mine) == len(expected), kind
        rows += len(mine)
        for c in mine:
            assert set(np.unique(c.weights)) == {0.0, 1.0}
            total = float((c.weights * truth[kind]).sum())
            assert c.lo <= total <= c.hi, (kind, c)
    assert len(joint) == rows  # no constraint of another kind, which the LP would ignore


# --- input checks at their edges ------------------------------------------------------------------

EPSILON_NAMES = ("epsilon_correctness", "epsilon_prime", "epsilon_smoothing", "epsilon_pa",
                 "epsilon_pe", "epsilon_beta")


@pytest.mark.parametrize("name", EPSILON_NAMES)
def test_every_epsilon_must_lie_strictly_between_0_and_1(name):
    for bad in (0.0, 1.0, -1e-3, 1.5):
        with pytest.raises(ValueError, match=rf"^{name} must be in \(0, 1\), got {bad}$"):
            SecurityParameters(**{name: bad})
    for good in (1e-300, 0.999):
        assert getattr(SecurityParameters(**{name: good}), name) == good


def test_the_qber_threshold_may_be_one_half_but_not_zero_or_above():
    assert SecurityParameters(max_qber_z=0.5).max_qber_z == 0.5
    assert SecurityParameters(max_qber_z=1e-9).max_qber_z == 1e-9
    for bad in (0.0, 0.5000001, -0.1):
        with pytest.raises(ValueError, match=rf"^max_qber_z must be in \(0, 0.5\], got {bad}$"):
            SecurityParameters(max_qber_z=bad)


def test_at_least_one_key_detection_is_required():
    assert SecurityParameters(min_key_detections=1).min_key_detections == 1
    with pytest.raises(ValueError, match=r"^min_key_detections must be >= 1, got 0$"):
        SecurityParameters(min_key_detections=0)


def test_intensity_lists_follow_the_layout_rules_exactly():
    assert intensity_list_problem((0.4, 0.1)) == "need at least 3 intensities, got 2"
    assert intensity_list_problem([]) == "need at least 3 intensities, got 0"
    for good in ((0.4, 0.1, 0.0), (0.4, 0.1, 0.05), (0.1, 0.4, 0.05, 0.0), (0.4, 0.1, 0.05, 0.0),
                 (3, 2, 1), (0.5, 0.4, 0.3, 0.2, 0.1)):
        assert intensity_list_problem(good) is None, good
    order = ("three intensities must be ordered signal > decoy > weak decoy >= 0 "
             "(mu > nu > omega), got ")
    for bad, shown in (((0.1, 0.4, 0.0), "0.1, 0.4, 0.0"), ((0.4, 0.1, 0.1), "0.4, 0.1, 0.1"),
                       ((0.4, 0.4, 0.0), "0.4, 0.4, 0.0"), ((0.4, 0.1, -0.01), "0.4, 0.1, -0.01"),
                       ((0.4, 0.0, 0.1), "0.4, 0.0, 0.1")):
        assert intensity_list_problem(bad) == order + shown, bad
    distinct = "intensities must be distinct and >= 0, got "
    assert intensity_list_problem((0.4, 0.1, 0.1, 0.0)) == distinct + "0.4, 0.1, 0.1, 0.0"
    assert intensity_list_problem((0.4, 0.1, 0.0, -0.1)) == distinct + "0.4, 0.1, 0.0, -0.1"
    assert intensity_list_problem((0.0, 0.4, 0.1, 0.2)) is None  # the order is free beyond three


def test_the_intensity_layout_is_checked_and_normalised():
    four = (0.4, 0.1, 0.05, 0.0)
    a, b, key = check_intensity_layout([0.4, 0.1, 0], np.array(four), np.array([1, 2]))
    assert a == (0.4, 0.1, 0.0) and b == four and key == (1, 2)
    assert all(type(v) is float for v in a + b) and all(type(k) is int for k in key)
    assert check_intensity_layout(four, four, (2, 2))[2] == (2, 2)
    assert check_intensity_layout(four, (0.3, 0.2, 0.1), (2, 2))[2] == (2, 2)
    with pytest.raises(ValueError, match=r"^intensities_a: need at least 3 intensities, got 2$"):
        check_intensity_layout((0.4, 0.1), four, (0, 0))
    with pytest.raises(ValueError, match=r"^intensities_b: intensities must be distinct"):
        check_intensity_layout(four, (0.4, 0.1, 0.1, 0.0), (0, 0))
    for key in ((0,), (0, 0, 0), (-1, 0), (0, -1), (4, 0), (0, 3)):
        with pytest.raises(ValueError, match=r"^key_intensity must be a pair of indices into "
                           r"\(4, 3\) intensities, got " + re.escape(str(key)) + "$"):
            check_intensity_layout(four, (0.3, 0.2, 0.1), key)
    for key in ((3, 0), (0, 2)):
        with pytest.raises(ValueError, match=r"^the key intensities must be > 0, got "
                           r"key_intensity=" + re.escape(str(key)) + "$"):
            check_intensity_layout(four, (0.3, 0.2, 0.0), key)


def test_the_decoy_method_problems_are_named():
    assert decoy_method_problem("lp", (5, 4)) is None
    assert decoy_method_problem("joint", (3, 3)) is None
    assert decoy_method_problem("analytic", (3, 3)) is None
    assert decoy_method_problem("analytic", [3, 3]) is None
    assert decoy_method_problem("exact", (3, 3)) == ("unknown decoy_method 'exact'; choose one of "
                                                     "analytic, lp, joint")
    for layout in ((3, 4), (4, 3), (4, 4)):
        assert decoy_method_problem("analytic", layout) == (
            "'analytic' (Xu13's three-intensity bounds) needs three intensities per user, "
            f"got {layout[0]} and {layout[1]}; use 'joint' or 'lp'")


def _counts(k_a: int = 3, k_b: int = 3):
    pairs = np.full((k_a, k_b, 2), 1e6)
    det = np.full((k_a, k_b, 2, 2), 1e3)
    return pairs, det, det * 0.01


def test_observations_are_copied_read_only_float_arrays():
    pairs, det, err = _counts()
    pairs_in = pairs.astype(np.int64)
    obs = DecoyObservations([0.4, 0.1, 0], [0.5, 0.2, 0], pairs_in, det, err, [0, 0])
    assert obs.intensities_a == (0.4, 0.1, 0.0) and obs.intensities_b == (0.5, 0.2, 0.0)
    assert all(type(v) is float for v in obs.intensities_a + obs.intensities_b)
    assert obs.key_intensity == (0, 0)
    for name, given in (("pairs", pairs_in), ("detections", det), ("errors", err)):
        value = getattr(obs, name)
        assert value.dtype == np.float64 and not value.flags.writeable, name
        assert np.array_equal(value, given) and value is not given, name
    det[0, 0, 0, 0] = 7.0  # the caller's array changes afterwards: the observations do not
    assert obs.detections[0, 0, 0, 0] == 1e3


@pytest.mark.parametrize("name", ["pairs", "detections", "errors"])
def test_observations_refuse_a_wrong_shape_negative_or_non_finite_count(name):
    arrays = dict(zip(("pairs", "detections", "errors"), _counts(), strict=True))
    ints = (0.4, 0.1, 0.0)
    shape = arrays[name].shape
    wrong = dict(arrays, **{name: arrays[name][:2]})
    with pytest.raises(ValueError, match=rf"^{name} must have shape {re.escape(str(shape))}, "
                       rf"got {re.escape(str(wrong[name].shape))}$"):
        DecoyObservations(ints, ints, **wrong)
    for bad in (-1e-9, math.nan, math.inf):
        value = arrays[name].copy()
        value.flat[-1] = bad
        with pytest.raises(ValueError, match=rf"^{name} must be finite and >= 0$"):
            DecoyObservations(ints, ints, **dict(arrays, **{name: value}))
    zero = dict(arrays, **{name: np.zeros(shape)})
    if name != "detections":  # zero counts are valid (no detections: no errors either)
        assert np.all(getattr(DecoyObservations(ints, ints, **zero), name) == 0)


def test_errors_may_equal_the_detections_but_not_exceed_them():
    pairs, det, _ = _counts()
    ints = (0.4, 0.1, 0.0)
    assert np.array_equal(DecoyObservations(ints, ints, pairs, det, det).errors, det)
    err = det.copy()
    err[2, 1, 1, 1] += 1e-6
    with pytest.raises(ValueError, match="^errors cannot exceed detections in any class$"):
        DecoyObservations(ints, ints, pairs, det, err)


def test_merging_sums_the_bell_states_into_the_first_and_keeps_the_layout():
    rng = np.random.default_rng(3)
    four = (0.4, 0.1, 0.05, 0.0)
    pairs = rng.uniform(1e5, 1e6, (4, 3, 2))
    det = rng.uniform(10, 100, (4, 3, 2, 2))
    err = det * rng.uniform(0, 1, det.shape)
    obs = DecoyObservations(four, (0.3, 0.2, 0.1), pairs, det, err, (1, 2))
    merged = obs.merged()
    assert merged.intensities_a == four and merged.intensities_b == (0.3, 0.2, 0.1)
    assert merged.key_intensity == (1, 2)
    assert np.array_equal(merged.pairs, pairs)
    assert np.array_equal(merged.detections[..., 0], det.sum(axis=-1))
    assert np.array_equal(merged.errors[..., 0], err.sum(axis=-1))
    assert not merged.detections[..., 1].any() and not merged.errors[..., 1].any()


def test_the_x_error_rate_is_the_key_class_s_or_all_x_classes_pooled_when_it_sends_none():
    pairs, det, err = _counts()
    det[..., 1, :] = np.arange(18, dtype=float).reshape(3, 3, 2) + 1
    err[..., 1, :] = det[..., 1, :] * 0.25
    err[0, 0, 1] = [1.0, 2.0]  # the key class: 3 errors in 1 + 2 detections
    assert _qber_x(det, err, pairs, (0, 0)) == 1.0
    pairs[0, 0, 1] = 0.0  # the key class is never sent in X: every X class counts
    assert _qber_x(det, err, pairs, (0, 0)) == err[..., 1, :].sum() / det[..., 1, :].sum()
    assert _qber_x(det[..., 0], err[..., 0], pairs, (0, 0)) == (
        err[..., 1, 0].sum() / det[..., 1, 0].sum())
    err[1, 2, 1] = [0.0, 1.0]  # an off-diagonal key class (k_a ≠ k_b) with its own error rate
    own = 1.0 / det[1, 2, 1].sum()
    pairs[1, 2, 1], pairs[2, 2, 1] = 1.0, 0.0  # a single X pulse pair is a class sent in X
    assert _qber_x(det, err, pairs, (1, 2)) == own
    pairs[1, 2, 1], pairs[2, 2, 1] = 0.0, 1e6  # never sent in X: all X classes pooled
    pooled = err[..., 1, :].sum() / det[..., 1, :].sum()
    assert _qber_x(det, err, pairs, (1, 2)) == pooled != own
    det[..., 1, :] = err[..., 1, :] = 0.0
    assert math.isnan(_qber_x(det, err, pairs, (0, 0)))  # no X detections: undefined, not 0
    pairs[0, 0, 1] = 5.0
    assert math.isnan(_qber_x(det, err, pairs, (0, 0)))
    det[0, 0, 1, 1] = err[0, 0, 1, 1] = 1.0  # a single X detection, in error
    assert _qber_x(det, err, pairs, (0, 0)) == 1.0


def test_decoy_bounds_refuse_an_unknown_mode_or_missing_classes():
    _, four = _observations(25.0, 1e12, FOUR, FOUR_Z, FOUR_P)
    with pytest.raises(ValueError, match=r"^unknown mode 'exact'; choose one of asymptotic, "
                       r"finite$"):
        decoy_bounds(four, "exact")
    with pytest.raises(ValueError, match=r"^decoy_method unknown decoy_method 'xu'"):
        decoy_bounds(four, "finite", decoy_method="xu")
    pairs = four.pairs.copy()
    pairs[0, 0, 0] = 0.0
    no_key = DecoyObservations(FOUR, FOUR, pairs, four.detections * (pairs[..., None] > 0),
                               four.errors * (pairs[..., None] > 0))
    with pytest.raises(ValueError, match=r"^no pulse pairs in the Z-basis key class$"):
        decoy_bounds(no_key, "asymptotic", decoy_method="lp")
    pairs[0, 0, 0] = 1.0  # one key pulse pair is enough to try
    one_key = DecoyObservations(FOUR, FOUR, pairs, four.detections * (pairs[..., None] > 0),
                                four.errors * (pairs[..., None] > 0))
    assert len(decoy_bounds(one_key, "asymptotic", decoy_method="lp")) == 2
    pairs = four.pairs.copy()
    pairs[..., 1] = 0.0
    no_x = DecoyObservations(FOUR, FOUR, pairs, four.detections * (pairs[..., None] > 0),
                             four.errors * (pairs[..., None] > 0))
    with pytest.raises(ValueError, match=r"^no pulse pairs in any X-basis class$"):
        decoy_bounds(no_x, "asymptotic", decoy_method="lp")
    pairs[3, 3, 1] = 1.0  # one X pulse pair anywhere is enough to try
    one_x = DecoyObservations(FOUR, FOUR, pairs, four.detections * (pairs[..., None] > 0),
                              four.errors * (pairs[..., None] > 0))
    assert len(decoy_bounds(one_x, "asymptotic", decoy_method="lp")) == 2


@pytest.mark.parametrize("basis", [0, 1])
def test_three_intensity_bounds_refuse_each_needed_class_without_pulse_pairs(basis):
    """Xu13's bounds read the classes with a non-zero coefficient in Eq. 6 (νν ωω νω ων μμ μω ωμ);
    the two they do not read (μν, νμ) may be empty."""
    pairs, det, err = _counts()
    ints = (0.4, 0.1, 0.0)
    for cell in ((NU, NU), (OMEGA, OMEGA), (NU, OMEGA), (OMEGA, NU), (MU, MU), (MU, OMEGA),
                 (OMEGA, MU)):
        p = pairs.copy()
        p[(*cell, basis)] = 0.0
        with pytest.raises(ValueError, match=rf"^no pulse pairs in a {'ZX'[basis]}-basis class "
                           "the bounds need$"):
            decoy_bounds(DecoyObservations(ints, ints, p, det, err), "asymptotic")
    p = pairs.copy()
    p[MU, NU, basis] = p[NU, MU, basis] = 0.0
    assert len(decoy_bounds(DecoyObservations(ints, ints, p, det, err), "asymptotic")) == 2
    p[NU, NU, basis] = 1.0  # a single pulse pair is a class with pulse pairs
    assert len(decoy_bounds(DecoyObservations(ints, ints, p, det, err), "asymptotic")) == 2


def test_chernoff_bounds_refuse_an_epsilon_outside_0_1_and_negative_counts():
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match=rf"^epsilon must be in \(0, 1\), got {bad}$"):
            chernoff_bounds(10.0, bad)
    with pytest.raises(ValueError, match=r"^observed counts must be >= 0$"):
        chernoff_bounds(np.array([3.0, -1e-12]), 1e-10)
    lo, hi = chernoff_bounds(np.array([0.0, 3.0]), 0.999)  # ε just below 1: still an interval
    assert lo[0] == 0.0 and 0.0 < lo[1] < 3.0 < hi[1]


def test_the_predicted_leakage_is_f_n_h_and_refuses_f_below_1_or_negative_n():
    assert predicted_leakage(0, 0.1) == 0.0
    assert predicted_leakage(1000, 0.1, f=1.0) == 1000 * binary_entropy(0.1)
    assert predicted_leakage(1000, 0.1) == 1.16 * 1000 * binary_entropy(0.1)
    for n, f in ((-1, 1.16), (1000, 0.999)):
        with pytest.raises(ValueError, match=rf"^need n >= 0 and f >= 1, got n={n}, f={f}$"):
            predicted_leakage(n, 0.1, f)


def test_test_positions_are_round_fraction_n_distinct_sorted_positions():
    rng = np.random.default_rng(5)
    for n, fraction in ((1000, 0.1), (7, 0.5), (10, 0.25), (10, 0.35), (5, 0.0), (5, 1.0),
                        (0, 0.5)):
        pos = choose_test_positions(n, fraction, rng)
        assert pos.dtype == np.int64 and pos.size == round(fraction * n), (n, fraction)
        assert np.all(np.diff(pos) > 0) and (pos.size == 0 or 0 <= pos.min() <= pos.max() < n)
    assert choose_test_positions(5, 1.0, rng).tolist() == [0, 1, 2, 3, 4]
    for n, fraction in ((-1, 0.5), (10, -0.01), (10, 1.01)):
        with pytest.raises(ValueError, match=rf"^need n >= 0 and 0 <= fraction <= 1, got "
                           rf"n={n}, fraction={fraction}$"):
            choose_test_positions(n, fraction, rng)
    # the positions are a uniform draw: each of 10 positions is tested with probability 3/10
    hits = np.zeros(10)
    trials = 2000
    for _ in range(trials):
        hits[choose_test_positions(10, 0.3, rng)] += 1
    chi2 = float(((hits - 0.3 * trials) ** 2 / (0.3 * trials)).sum())
    # k of N without replacement: the statistic is (1 − k/N)·N/(N − 1) = 7/9 of a χ²(9), so
    # its ALPHA quantile raises a false alarm with probability below ALPHA
    assert chi2 <= stats.chi2.isf(ALPHA, 9)


def test_an_estimate_finds_its_blocks_by_name():
    result = estimate(_three(), (0.0, 0.0), "asymptotic")
    assert [result.block(n).name for n in ("psi+", "psi-")] == ["psi+", "psi-"]
    assert result.block("psi-") is result.per_block[1]
    with pytest.raises(KeyError, match=r"^'psi\+-'$"):  # the name asked for
        result.block("psi+-")


# --- the analytic bounds take the worst case of every interval ------------------------------------


def _corners(lo: np.ndarray, hi: np.ndarray, cells) -> np.ndarray:
    """Every gain matrix with each of ``cells`` at one end of its interval (others 0)."""
    out = []
    for ends in product((0, 1), repeat=len(cells)):
        g = np.zeros((3, 3))
        for cell, end in zip(cells, ends, strict=True):
            g[cell] = (lo, hi)[end][cell]
        out.append(g)
    return np.array(out)


@pytest.mark.parametrize("intensities", [(0.4, 0.1, 0.0), (0.5, 0.05, 0.0), (0.3, 0.1, 0.01)])
def test_the_analytic_finite_bounds_are_the_worst_case_over_every_interval(intensities):
    """Y11^L is linear in the gains (Xu13 Eq. 6) and e11^U linear in the error gains (Eq. 7): over
    the box of Chernoff intervals the worst case is a corner, so the minimum (maximum) over all
    2⁷ (2⁴) corners, computed by brute force, is the bound. With (0.5, 0.05, 0) the μω and ωμ
    coefficients lie in (0, 1), so a sign test against anything but 0 picks the wrong end."""
    eps = 1e-10
    obs = _analytic_observations(25.0, 1e12, intensities, rng=np.random.default_rng(11))
    (b,) = decoy_bounds(obs, "finite", eps, merge_bell_states=True, decoy_method="analytic")
    det = obs.detections.sum(axis=-1)
    err = obs.errors.sum(axis=-1)
    yield_cells = [(NU, NU), (OMEGA, OMEGA), (NU, OMEGA), (OMEGA, NU), (MU, MU), (MU, OMEGA),
                   (OMEGA, MU)]
    y11 = []
    for basis in (0, 1):
        lo, hi = (v / obs.pairs[..., basis] for v in chernoff_bounds(det[..., basis], eps))
        corners = _corners(lo, hi, yield_cells)
        y11.append(float(np.min(single_photon_yield_lower(intensities, intensities, corners))))
    assert (b.y11_z_lower, b.y11_x_lower) == pytest.approx(tuple(y11), rel=1e-9)
    lo, hi = (v / obs.pairs[..., 1] for v in chernoff_bounds(err[..., 1], eps))
    corners = _corners(lo, hi, [(NU, NU), (OMEGA, OMEGA), (NU, OMEGA), (OMEGA, NU)])
    worst = np.max(single_photon_error_upper(intensities, intensities, corners, max(y11)))
    assert b.e11_x_upper == pytest.approx(float(worst), rel=1e-9)


@pytest.mark.parametrize("decoy_method", ["analytic", "lp", "joint"])
def test_the_phase_error_bound_is_capped_at_one_half(decoy_method):
    """h is symmetric about 1/2: a phase-error bound above it would buy key back (h(0.6) < 1, and
    h = 0 beyond 1). X errors at half the detections (the key is public to Eve in X): the ratio
    k^U/s11^L exceeds 1/2, so the bound is 1/2, h = 1 and no block has a key."""
    obs = _analytic_observations(25.0, 1e12, rng=np.random.default_rng(13))
    err = obs.errors.copy()
    err[:, :, 1] = np.floor(obs.detections[:, :, 1] / 2)
    noisy = DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs, obs.detections, err)
    for b in decoy_bounds(noisy, "finite", decoy_method=decoy_method):
        assert b.e11_x_upper >= 0.45 and b.s11_z_lower > 0
        assert b.phase_error_upper == 0.5
    result = estimate(noisy, (0.0, 0.0), "finite", decoy_method=decoy_method)
    assert result.reason.startswith("secure length <= 0"), result


def test_the_asymptotic_phase_error_bound_is_e11_whatever_the_block_size():
    """Asymptotically k/s11 = (e11·Y11)^U / Y11^L = e11^U, also for a block of less than one
    single-photon pair (its length is ⌊< 1⌋ = 0 anyway; the reported bound must still be e11^U)."""
    for pairs_total in (1e12, 1.5e5):
        obs = _analytic_observations(25.0, pairs_total)
        (b,) = decoy_bounds(obs, "asymptotic", merge_bell_states=True, decoy_method="analytic")
        assert b.phase_error_upper == pytest.approx(b.e11_x_upper, rel=1e-12)
    assert 0 < b.s11_z_lower < 1


@pytest.mark.parametrize("mode", ["asymptotic", "finite"])
def test_a_block_with_no_certified_single_photon_pair_reports_the_trivial_phase_bound(mode):
    """Gains that do not fall with the decoy intensity certify Y11^L ≤ 0, so s11 = 0: the only
    phase-error bound is the trivial 1/2 (not a value beyond it, whose h would be < 1)."""
    obs = _three()
    det = np.full_like(obs.detections, 1e-4) * obs.pairs[..., None]
    det[1, 1] /= 100
    blind = DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs, det, det * 0.01)
    for decoy_method in ("analytic", "lp"):
        for b in decoy_bounds(blind, mode, decoy_method=decoy_method):
            assert b.s11_z_lower == 0.0 and b.phase_error_upper == 0.5, (decoy_method, b)


@pytest.mark.parametrize("mode", ["asymptotic", "finite"])
@pytest.mark.parametrize("key", [(0, 0), (1, 1)])
def test_each_block_carries_its_key_class_counts_and_the_s11_of_curtys_formula(mode, key):
    """Per Bell state b, for the key class (k_a, k_b) in Z: n_Z, its errors and QBER_Z are that
    class's own, and s11 = N_key · p11 · Y11^L with p11 = μ_a e^{−μ_a} μ_b e^{−μ_b} (the
    single-photon pairs among the key pulses; docs/finite-key.md §2), taken at its ε_PE/2 lower
    deviation and at most n_Z in the finite mode."""
    four = (0.4, 0.3, 0.05, 0.0)
    _, obs = _observations(25.0, 1e12, four, (1.0, 0.5, 0.0, 0.5), (0.4, 0.3, 0.2, 0.1))
    rng = np.random.default_rng(17)
    det = obs.detections.copy()
    det[..., 1] = det[..., 0] * rng.uniform(0.3, 0.7, det.shape[:-1])  # ψ⁻ too, unequal
    err = obs.errors.copy()
    err[..., 1] = det[..., 1] * 0.02
    obs = DecoyObservations(four, four, obs.pairs, det, err, key)
    eps = 1e-10
    for bell, b in enumerate(decoy_bounds(obs, mode, eps, decoy_method="lp")):
        ka, kb = key
        assert b.n_z == det[ka, kb, 0, bell] and b.z_errors == err[ka, kb, 0, bell]
        assert b.qber_z == err[ka, kb, 0, bell] / det[ka, kb, 0, bell]
        x = (ka, kb) if obs.pairs[ka, kb, 1] > 0 else (slice(None), slice(None))
        assert b.qber_x == pytest.approx(err[(*x, 1, bell)].sum() / det[(*x, 1, bell)].sum(),
                                         rel=1e-12)
        mu_a, mu_b = four[ka], four[kb]
        p11 = mu_a * math.exp(-mu_a) * mu_b * math.exp(-mu_b)
        s_mean = obs.pairs[ka, kb, 0] * p11 * b.y11_z_lower
        expected = (s_mean if mode == "asymptotic"
                    else min(realised_lower(s_mean, eps), b.n_z))
        assert b.s11_z_lower == pytest.approx(expected, rel=1e-12)


def test_a_block_with_no_or_one_key_detection_reports_its_own_qber():
    """n_Z = 0: QBER_Z undefined (NaN, never 0); n_Z = 1: errors / 1."""
    obs = _three()
    for n_minus, e_minus, qber in ((0.0, 0.0, None), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0)):
        det, err = obs.detections.copy(), obs.errors.copy()
        det[0, 0, 0, 1], err[0, 0, 0, 1] = n_minus, e_minus
        one = DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs, det, err)
        plus, minus = decoy_bounds(one, "asymptotic", decoy_method="analytic")
        assert plus.qber_z == err[0, 0, 0, 0] / det[0, 0, 0, 0]
        assert minus.n_z == n_minus
        assert math.isnan(minus.qber_z) if qber is None else minus.qber_z == qber


def test_decoy_bounds_defaults_are_finite_per_bell_state_joint_at_the_default_epsilon():
    obs = _three()
    assert decoy_bounds(obs) == decoy_bounds(obs, "finite", SecurityParameters().epsilon_pe,
                                             False, "joint")
    assert [b.name for b in decoy_bounds(obs)] == ["psi+", "psi-"]


def test_chernoff_bounds_of_an_array_solve_each_element_s_tail_equations():
    """Vectorised over counts that differ by orders of magnitude, including the fractional and
    sub-unit sums the joint constraints bound (X = Σ (N/N_c) n_c): each lower end E^L solves
    E^L − χ + χ ln(χ/E^L) = ln(2/ε) below χ and each upper end the same above it; χ = 0 gives
    (0, ln(2/ε))."""
    chi = np.array([0.0, 0.3, 1.0, 2.5, 7.0, 123.4, 5.5e4, 3.2e7, 1e12])
    for eps in (0.3, 1e-10):
        target = math.log(2 / eps)
        lo, hi = chernoff_bounds(chi, eps)
        alone = np.array([chernoff_bounds(c, eps) for c in chi])  # each count by itself
        assert lo == pytest.approx(alone[:, 0], rel=1e-14) and hi == pytest.approx(alone[:, 1],
                                                                                  rel=1e-14)
        assert lo[0] == 0.0 and hi[0] == pytest.approx(target, rel=1e-12)
        c, lo, hi = chi[1:], lo[1:], hi[1:]
        assert np.all((0 < lo) & (lo < c) & (c < hi))
        for end in (lo, hi):
            divergence = (end - c) + c * np.log1p((c - end) / end)
            assert divergence == pytest.approx(np.full_like(c, target), rel=1e-7)
