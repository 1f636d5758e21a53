"""Parameter estimation's decisions at their edges (classical/estimation.py): which abort, with
which reason and method, exactly at each threshold; the ε of a block that bounded no count
(docs/mutation-testing.md)."""

from __future__ import annotations

import numpy as np
import pytest

from classical.estimation import (
    Abort,
    DecoyObservations,
    SecurityParameters,
    decoy_bounds,
    estimate,
)
from tests.classical.test_estimation import (
    FOUR,
    FOUR_P,
    FOUR_Z,
    _analytic_observations,
    _observations,
)

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


def test_the_secure_length_abort_carries_its_method_and_blocks() -> None:
    obs = _analytic_observations(25.0, 1e14, rng=np.random.default_rng(7))
    result = estimate(obs, (1e12, 1e12), "finite")
    assert isinstance(result, Abort) and result.method == "finite-chernoff-joint"
    assert result.reason.startswith("secure length <= 0")
    assert [b.leakage_bits for b in result.per_block] == [1e12, 1e12]
