"""The analytic model: the general formula (docs/physics.md §5) against the closed forms (§6)."""

from __future__ import annotations

import numpy as np
import pytest

from channel.analytic import (
    arm_transmittance,
    detector_fields,
    exact_class_statistics,
    mr_x_basis,
    mr_z_basis,
    pattern_probabilities,
    single_photon_phase_error,
    single_photon_yield,
)
from channel.fiber import linear_rotation, su2
from channel.source import JONES
from nodes.relay_software import BELL_OF_PATTERN
from tests import mp_closed_forms as mp_ref

ETA_D, PD, ED = 0.145, 3e-6, 0.015


def _lcq(*args, **kwargs):
    """The general formula for a relay that decides Bell states by Charles's (LCQ) rule."""
    return exact_class_statistics(*args, bell_of_pattern=BELL_OF_PATTERN, **kwargs)


@pytest.mark.parametrize("distance_km", [0, 50, 100, 150])
@pytest.mark.parametrize(("mu_a", "mu_b"), [(0.4, 0.4), (0.3, 0.1), (0.1, 0.01), (0.8, 0.05)])
@pytest.mark.parametrize("basis", [0, 1])
def test_general_formula_reproduces_closed_forms(distance_km, mu_a, mu_b, basis):
    t = float(arm_transmittance(distance_km / 2))
    closed = mr_z_basis if basis == 0 else mr_x_basis
    q, e = closed(ETA_D * t, ETA_D * t, mu_a, mu_b, PD, ED)
    s = _lcq(basis, mu_a, mu_b, t, t, efficiencies=ETA_D, dark_count_probabilities=PD,
             flip_misalignment=ED)
    assert s.gain == pytest.approx(float(q), rel=1e-6)
    assert s.error_rate == pytest.approx(float(e), rel=1e-6)


def test_asymmetric_arms_match_closed_forms():
    ta, tb = float(arm_transmittance(10)), float(arm_transmittance(60))
    for basis, closed in ((0, mr_z_basis), (1, mr_x_basis)):
        q, e = closed(ETA_D * ta, ETA_D * tb, 0.5, 0.2, PD, ED)
        s = _lcq(basis, 0.5, 0.2, ta, tb, efficiencies=ETA_D, dark_count_probabilities=PD,
                 flip_misalignment=ED)
        assert s.gain == pytest.approx(float(q), rel=1e-6)
        assert s.error_rate == pytest.approx(float(e), rel=1e-6)


def test_pattern_probabilities_sum_to_one_for_any_unitaries():
    rng = np.random.default_rng(1)
    for _ in range(10):
        ua, ub = su2(rng.normal(size=3), rng.uniform(0, 6)), su2(rng.normal(size=3), 1.0)
        x, y = detector_fields(0.7, 0.3, 0.5, 0.2, ua @ JONES[1, 0], ub @ JONES[0, 1],
                               np.array([0.1, 0.2, 0.3, 0.4]))
        p = pattern_probabilities(x, y, rng.uniform(), np.array([1e-3, 2e-3, 0, 1e-2]))
        assert p.min() >= -1e-15
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_rotation_raises_errors_above_flip_free_value():
    t = float(arm_transmittance(25))
    base = _lcq(0, 0.4, 0.4, t, t)
    rotated = _lcq(0, 0.4, 0.4, t, t, unitary_a=linear_rotation(0.2))
    assert rotated.error_rate > base.error_rate
    # a rotation by π/2 swaps H and V on one arm: Z-basis errors and successes trade places
    swapped = _lcq(0, 0.4, 0.4, t, t, unitary_a=linear_rotation(np.pi / 2))
    assert swapped.error_rate > 0.9


def test_mode_mismatch_drives_x_errors_toward_one_half():
    t = float(arm_transmittance(25))
    e = [_lcq(1, 0.1, 0.1, t, t, gamma=g).error_rate for g in (1, 0.7, 0.3, 0)]
    assert e == sorted(e)
    assert e[-1] == pytest.approx(0.5, abs=1e-9)
    z = [_lcq(0, 0.1, 0.1, t, t, gamma=g).gain for g in (1, 0)]
    assert z[0] == pytest.approx(z[1], rel=1e-2)  # Z basis is almost untouched


def test_single_photon_quantities_limit():
    eta = ETA_D * float(arm_transmittance(25))
    # without dark counts Y11 = η_a η_b / 2 and e11 = e_d (MR App. A)
    assert single_photon_yield(eta, eta, 0.0) == pytest.approx(eta * eta / 2)
    assert single_photon_phase_error(eta, eta, 0.0, ED) == pytest.approx(ED)


# mean photon numbers reaching the relay, m = η·μ: from no light, through the weak decoys of a
# long link, to far brighter than any key-rate setting (the Bessel functions' direct branch)
_ARRIVING = [0.0, 1e-12, 1e-9, 3e-7, 1e-5, 1e-3, 0.05, 0.3, 1.0, 5.0, 16.0, 30.0]


@pytest.mark.parametrize(("dark_count", "misalignment"), [(0.0, 0.0), (3e-6, 0.015), (1e-3, 0.015)])
def test_closed_forms_match_a_50_digit_evaluation(dark_count, misalignment):
    """Every gain and error gain to 1e-13 relative, however weak the light: the float64 forms
    are sums of non-negative terms, so a few ulp is all they lose (the printed forms, evaluated
    in float64, keep no digit at m ~ 1e-8)."""
    for ma in _ARRIVING:
        for mb in _ARRIVING:
            for closed, reference in ((mr_z_basis, mp_ref.z_basis), (mr_x_basis, mp_ref.x_basis)):
                q, e = closed(ma, mb, 1.0, 1.0, dark_count, misalignment)
                q_ref, eq_ref = (float(v) for v in reference(ma, mb, 1.0, 1.0, dark_count,
                                                             misalignment))
                assert float(q) == pytest.approx(q_ref, rel=1e-13, abs=0.0), (closed, ma, mb)
                assert float(q * e) == pytest.approx(eq_ref, rel=1e-13, abs=0.0), (closed, ma, mb)


@pytest.mark.parametrize("distance_km", [0, 100, 200, 300])
def test_single_photon_quantities_match_a_50_digit_evaluation(distance_km):
    eta = ETA_D * float(arm_transmittance(distance_km / 2))
    y11, e11 = (float(v) for v in mp_ref.single_photon(eta, eta, PD, ED))
    assert float(single_photon_yield(eta, eta, PD)) == pytest.approx(y11, rel=1e-14)
    assert float(single_photon_phase_error(eta, eta, PD, ED)) == pytest.approx(e11, rel=1e-14)


def test_closed_forms_broadcast_over_intensities():
    mu = np.array([[0.4], [0.1], [0.0]])
    q, e = mr_x_basis(1e-3, 2e-3, mu, mu.T, PD, ED)
    assert q.shape == e.shape == (3, 3)
    assert q[1, 2] == pytest.approx(float(mr_x_basis(1e-3, 2e-3, 0.1, 0.0, PD, ED)[0]), rel=1e-15)


def test_the_analytic_model_reads_the_bell_codes_the_protocol_defines():
    from channel import analytic
    from classical import sifting

    assert (analytic._FAILURE, analytic._PSI_PLUS, analytic._PSI_MINUS) == (
        sifting.FAIL, sifting.PSI_PLUS, sifting.PSI_MINUS)
