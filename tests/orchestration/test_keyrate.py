"""Asymptotic key-rate curves behave as LCQ / Xu13 report for the standard parameter set."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from channel.analytic import arm_transmittance, single_photon_phase_error, single_photon_yield
from orchestration import keyrate
from orchestration.keyrate import (
    PhysicalParameters,
    four_intensity_gains,
    key_rate,
    max_distance,
)
from tests import mp_closed_forms as mp_ref


def test_infinite_decoy_reach_exceeds_200_km():
    assert max_distance(decoys="infinite", optimize_mu=True) > 200


def test_three_decoys_with_small_nu_close_behind_infinite():
    infinite = max_distance(decoys="infinite", optimize_mu=True)
    three = max_distance(nu=0.01, omega=0.0, decoys="3", optimize_mu=True)
    assert 0.9 * infinite <= three <= infinite


def test_three_decoy_rate_never_exceeds_infinite_decoys():
    for d in (0, 50, 100, 150):
        inf = key_rate(d, decoys="infinite", optimize_mu=True).key_rate_per_pulse
        three = key_rate(d, nu=0.05, decoys="3", optimize_mu=True).key_rate_per_pulse
        assert three <= inf * (1 + 1e-9)


@pytest.mark.parametrize("distance_km", [0, 60, 120, 180])
def test_decoy_bounds_bracket_the_true_single_photon_quantities(distance_km):
    p = key_rate(distance_km, mu=0.4, nu=0.05, omega=0.0, decoys="3")
    eta = 0.145 * float(arm_transmittance(distance_km / 2))
    assert p.Y11_L <= single_photon_yield(eta, eta, 3e-6) * (1 + 1e-9)
    assert p.e11_U >= single_photon_phase_error(eta, eta, 3e-6, 0.015) * (1 - 1e-9)


def test_rate_falls_with_loss_like_eta_squared_at_long_distance():
    """Single-photon-pair term ∝ η_a η_b: 20 km more total fiber costs about 4 dB of rate."""
    r1 = key_rate(100, decoys="infinite").key_rate_per_pulse
    r2 = key_rate(120, decoys="infinite").key_rate_per_pulse
    assert r2 / r1 == pytest.approx(10 ** (-0.4), rel=0.15)


def test_worse_detectors_shorten_the_reach():
    base = max_distance()
    noisy = max_distance(params=PhysicalParameters(dark_count_probability=1e-5))
    assert noisy < base
    assert np.isfinite(base)


@pytest.mark.parametrize("distance_km", [0, 60, 120, 180])
def test_four_intensities_sit_between_three_and_infinite_decoys(distance_km):
    """Same signal μ = 0.4 and key class, so the rates differ only by the decoy bounds:
    R3 ≤ R4 ≤ R∞ (four intensities: weak decoys ν = 0.1, ω = 0.05 in X, vacuum; the three-
    intensity layout's decoy is also 0.1), and the four-intensity bounds bracket the truth.
    Tolerance 1e-6 relative: the LP solver's."""
    four = key_rate(distance_km, mu=0.4, nu=0.1, omega=0.05, decoys="4")
    three = key_rate(distance_km, mu=0.4, nu=0.1, omega=0.0, decoys="3")
    inf = key_rate(distance_km, mu=0.4, decoys="infinite")
    assert 0 <= three.key_rate_per_pulse <= four.key_rate_per_pulse * (1 + 1e-6)
    assert four.key_rate_per_pulse > 0  # at 180 km three intensities with ν = 0.1 give none
    assert four.key_rate_per_pulse <= inf.key_rate_per_pulse * (1 + 1e-6)
    eta = 0.145 * float(arm_transmittance(distance_km / 2))
    assert four.Y11_L <= single_photon_yield(eta, eta, 3e-6) * (1 + 1e-6)
    assert four.e11_U >= single_photon_phase_error(eta, eta, 3e-6, 0.015) * (1 - 1e-6)


@pytest.mark.parametrize("distance_km", [0, 100, 200, 300])
def test_the_weakest_accepted_four_intensity_decoy_still_gives_bounds(distance_km):
    """ω at its floor: the LP must solve (Y11^L > 0) and stay on the safe side of the truth:
    exact gains, and a solver tolerance (1e-10) far below what the decoy's O(ω) difference from
    the vacuum amplifies into the bounds (keyrate's module docstring)."""
    from orchestration.keyrate import MIN_FOUR_INTENSITY_OMEGA

    p = key_rate(distance_km, mu=0.4, nu=0.1, omega=MIN_FOUR_INTENSITY_OMEGA, decoys="4")
    eta = 0.145 * float(arm_transmittance(distance_km / 2))
    assert 0 < p.Y11_L <= single_photon_yield(eta, eta, 3e-6) * (1 + 1e-9)
    assert p.e11_U >= single_photon_phase_error(eta, eta, 3e-6, 0.015) * (1 - 1e-9)
    with pytest.raises(ValueError, match="omega"):
        key_rate(distance_km, mu=0.4, nu=0.1, omega=MIN_FOUR_INTENSITY_OMEGA / 2, decoys="4")


# --- Against a 50-digit evaluation of the same closed forms ----------------------------------

WEAK_DECOYS = [0.001, 0.002, 0.005, 0.01, 0.05, 0.1]
DISTANCES_KM = np.arange(0.0, 201.0, 10.0)
#: Floor of the key-rate tolerance, relative to the size of the rate's two terms (below).
RATE_FLOOR = 1e-10


def _decoy_layouts() -> list:
    return [*(pytest.param("3", nu, omega, id=f"3-nu{nu:g}-omega{omega:g}")
              for nu in WEAK_DECOYS for omega in (0.0, nu / 10)),
            pytest.param("infinite", 0.1, 0.0, id="infinite")]


@pytest.mark.parametrize(("decoys", "nu", "omega"), _decoy_layouts())
def test_key_rate_matches_a_50_digit_evaluation(decoys, nu, omega):
    """1e-6 relative wherever the rate is not tiny against its own two terms.

    R = Q11[1 − h(e11)] − f Q_Z h(E_Z) crosses zero at the reach, where it is the difference of
    two nearly equal terms: any rounding of those terms (here ~1e-13 of them: ulp-exact gains,
    amplified by the decoy bounds' second differences) is then unbounded relative to R. So the
    tolerance is 1e-6 |R| + RATE_FLOOR · (size of the terms): a pure 1e-6 relative test wherever
    |R| > 1e-4 of its terms, i.e. everywhere but within a few metres of the reach, and still
    seven decades tighter there than the printed forms in float64 (6e-3 at ν = 0.001).
    The reported rate is clipped at zero, so it is compared with the clipped exact rate.
    """
    for d in DISTANCES_KM:
        exact, terms = (float(v) for v in mp_ref.key_rate_terms(d, 0.4, nu, omega, decoys))
        p = key_rate(float(d), mu=0.4, nu=nu, omega=omega, decoys=decoys)
        tolerance = 1e-6 * abs(exact) + RATE_FLOOR * terms
        assert abs(p.key_rate_per_pulse - max(exact, 0.0)) <= tolerance, (d, exact)


@pytest.mark.parametrize(("decoys", "nu", "omega"), _decoy_layouts())
def test_decoy_bounds_match_a_50_digit_evaluation(decoys, nu, omega):
    """Y11^L and e11^U (and Q_Z, E_Z) to 1e-9 relative: no difference of two terms here."""
    for d in DISTANCES_KM[::4]:
        eta = mp_ref.transmittance(d)
        q_z, eq_z = mp_ref.z_basis(eta, eta, 0.4, 0.4, 3e-6, 0.015)
        if decoys == "infinite":
            y11, e11 = mp_ref.single_photon(eta, eta, 3e-6, 0.015)
        else:
            ints = (0.4, nu, omega)
            qz = [[mp_ref.z_basis(eta, eta, a, b, 3e-6, 0.015)[0] for b in ints] for a in ints]
            qx = [[mp_ref.x_basis(eta, eta, a, b, 3e-6, 0.015) for b in ints] for a in ints]
            y11 = mp_ref.y11_lower(ints, qz)
            e11 = mp_ref.e11_upper(ints, [[v[1] for v in row] for row in qx],
                                   mp_ref.y11_lower(ints, [[v[0] for v in row] for row in qx]))
        p = key_rate(float(d), mu=0.4, nu=nu, omega=omega, decoys=decoys)
        assert p.Y11_L == pytest.approx(float(y11), rel=1e-9)
        assert p.e11_U == pytest.approx(float(e11), rel=1e-9)
        assert p.Q_Z == pytest.approx(float(q_z), rel=1e-9)
        assert p.E_Z == pytest.approx(float(eq_z / q_z), rel=1e-9)


@pytest.mark.parametrize(("decoys", "nu", "omega"), _decoy_layouts())
def test_reach_matches_a_50_digit_evaluation(decoys, nu, omega):
    """The exact rate changes sign within 2e-3 km of the reach: the search's 1e-3 km tolerance,
    plus the float rate's zero lying ~1e-12 km from the exact one."""
    reach = max_distance(mu=0.4, nu=nu, omega=omega, decoys=decoys)
    before, _ = mp_ref.key_rate_terms(reach - 2e-3, 0.4, nu, omega, decoys)
    after, _ = mp_ref.key_rate_terms(reach + 2e-3, 0.4, nu, omega, decoys)
    assert before > 0 > after


@pytest.mark.parametrize("distance_km", [0, 100, 200, 300])
@pytest.mark.parametrize(("nu", "omega"), [(0.1, 0.05), (0.1, 1e-3), (0.005, 1e-3)])
def test_four_intensity_lp_inputs_match_a_50_digit_evaluation(distance_km, nu, omega):
    """The gains the LP is fed, to 1e-12 relative; the LP's own accuracy is the solver's."""
    eta = 0.145 * float(arm_transmittance(distance_km / 2))
    ints, gains, error_gains, sent = four_intensity_gains(eta, 0.4, nu, omega, 3e-6, 0.015)
    assert ints == (0.4, nu, omega, 0.0)
    eta_mp = mp_ref.transmittance(distance_km)
    for i, a in enumerate(ints):
        for j, b in enumerate(ints):
            q_x, eq_x = mp_ref.x_basis(eta_mp, eta_mp, a, b, 3e-6, 0.015)
            expected = [mp_ref.z_basis(eta_mp, eta_mp, a, b, 3e-6, 0.015)[0], q_x]
            for basis in (0, 1):
                want = float(expected[basis]) if sent[i, j, basis] else 0.0
                assert gains[i, j, basis] == pytest.approx(want, rel=1e-12, abs=0.0)
            want = float(eq_x) if sent[i, j, 1] else 0.0
            assert error_gains[i, j] == pytest.approx(want, rel=1e-12, abs=0.0)


# --- The reach search on rates that are not monotone -----------------------------------------


def _fake_curve(rate_of_distance):
    """A stand-in for ``keyrate._curve`` whose rate is a given function of distance."""

    def curve(distance_km, mu, nu, omega, decoys, p):
        d, _ = np.broadcast_arrays(np.asarray(distance_km, float), np.asarray(mu, float))
        rate = np.asarray(rate_of_distance(d), float)
        zero = np.zeros_like(rate)
        return keyrate._Curve(rate, zero, zero, zero, zero, zero, zero)

    return curve


@pytest.mark.parametrize(("rate", "reach"), [
    # dips below zero where a bisection of [0, 1000] km lands: at 250 km, then at 125 km
    (lambda d: np.where((d > 240) & (d < 260), -1.0, 400.7 - d), 400.7),
    (lambda d: np.where((d > 240) & (d < 260) | (d > 124.8) & (d < 125.3), -1.0, 400.7 - d),
     400.7),
    # a positive stretch beyond a long gap, wider than the scan step
    (lambda d: np.where(d < 100, 100.0 - d, 1.0 - np.abs(d - 300.4)), 301.4),
    # a ripple: the sign changes thrice between 47 and 53 km, islands wider than the step
    (lambda d: 50.0 - d + 4 * np.sin(d), brentq(lambda d: 50.0 - d + 4 * np.sin(d), 52, 53)),
])
def test_reach_is_the_last_sign_change_of_the_rate(monkeypatch, rate, reach):
    monkeypatch.setattr(keyrate, "_curve", _fake_curve(rate))
    found = max_distance(decoys="infinite", tolerance_km=1e-4)
    assert float(rate(np.array(found - 1e-4))) > 0 >= float(rate(np.array(found + 1e-4)))
    grid = np.linspace(found + 1e-4, 1000.0, 100_001)
    assert np.all(rate(grid) <= 0), "a positive rate beyond the reach"
    assert found == pytest.approx(reach, abs=1e-4)


def test_reach_at_the_ends_of_the_search(monkeypatch):
    monkeypatch.setattr(keyrate, "_curve", _fake_curve(lambda d: np.full_like(d, -1.0)))
    assert max_distance(decoys="infinite") is None
    monkeypatch.setattr(keyrate, "_curve", _fake_curve(lambda d: 1.0 - d / 2000))
    assert max_distance(decoys="infinite", upper_km=500.0) == 500.0
