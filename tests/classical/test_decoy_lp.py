"""Linear-programming decoy bounds: contain the truth, never looser than the analytic bounds."""

from __future__ import annotations

import numpy as np
import pytest

from channel.analytic import (
    arm_transmittance,
    mr_x_basis,
    mr_z_basis,
    single_photon_phase_error,
    single_photon_yield,
)
from classical.decoy import single_photon_error_upper, single_photon_yield_lower
from classical.decoy_lp import lp_bounds
from classical.estimation import chernoff_bounds

PD, ED = 3e-6, 0.015


def _gains(intensities, distance_km):
    eta = 0.145 * float(arm_transmittance(distance_km / 2))
    qz = np.array([[mr_z_basis(eta, eta, a, b, PD, ED)[0] for b in intensities]
                   for a in intensities])
    qx = np.array([[mr_x_basis(eta, eta, a, b, PD, ED) for b in intensities]
                   for a in intensities])
    return eta, qz, qx[..., 0], qx[..., 0] * qx[..., 1]


@pytest.mark.parametrize("distance_km", [0, 50, 100, 150])
@pytest.mark.parametrize("intensities", [(0.4, 0.1, 0.0), (0.5, 0.2, 0.02), (0.3, 0.05, 0.01)])
def test_lp_contains_the_truth_and_is_never_looser_than_the_analytic_bounds(distance_km,
                                                                         intensities):
    eta, qz, qx, eqx = _gains(intensities, distance_km)
    g = np.stack([qz, qx], -1)
    used = np.ones((3, 3, 2), bool)
    lp = lp_bounds(intensities, intensities, g, g, used, eqx, eqx, np.ones((3, 3), bool))
    y11, e11 = single_photon_yield(eta, eta, PD), single_photon_phase_error(eta, eta, PD, ED)
    y_analytic = max(single_photon_yield_lower(intensities, intensities, qz),
                     single_photon_yield_lower(intensities, intensities, qx))
    e_analytic = single_photon_error_upper(intensities, intensities, eqx, y_analytic)
    assert y_analytic * (1 - 1e-6) <= lp.y11_lower <= y11 * (1 + 1e-6)
    assert e11 * (1 - 1e-6) <= lp.e11_upper <= e_analytic * (1 + 1e-6)


def test_four_intensities_signal_only_in_z():
    """Zhou–Yu–Wang layout: signal z in Z only; vacuum and two decoys in X only."""
    ints = (0.5, 0.2, 0.05, 0.0)
    eta, _, _, _ = _gains((0.4, 0.1, 0.0), 50)
    qz = np.array([[mr_z_basis(eta, eta, a, b, PD, ED)[0] for b in ints] for a in ints])
    qx = np.array([[mr_x_basis(eta, eta, a, b, PD, ED) for b in ints] for a in ints])
    used = np.zeros((4, 4, 2), bool)
    used[0, 0, 0] = True  # Z: signal pairs only
    used[1:, 1:, 1] = True  # X: the three weak intensities
    g = np.stack([qz, qx[..., 0]], -1)
    lp = lp_bounds(ints, ints, g, g, used, qx[..., 0] * qx[..., 1], qx[..., 0] * qx[..., 1],
                   used[..., 1])
    assert lp.y11_lower <= single_photon_yield(eta, eta, PD) * (1 + 1e-6)
    assert lp.y11_lower > 0.8 * single_photon_yield(eta, eta, PD)
    assert lp.e11_upper >= single_photon_phase_error(eta, eta, PD, ED) * (1 - 1e-6)


def test_finite_size_intervals_still_contain_the_truth():
    ints = (0.4, 0.1, 0.0)
    eta, qz, qx, eqx = _gains(ints, 50)
    rng = np.random.default_rng(7)
    pairs = 2e9 / 9
    lo, hi, elo, ehi = {}, {}, None, None
    for b, q in ((0, qz), (1, qx)):
        counts = rng.poisson(q * pairs)
        lo[b], hi[b] = (x / pairs for x in chernoff_bounds(counts, 1e-10))
    ecounts = rng.poisson(eqx * pairs)
    elo, ehi = (x / pairs for x in chernoff_bounds(ecounts, 1e-10))
    lp = lp_bounds(ints, ints, np.stack([lo[0], lo[1]], -1), np.stack([hi[0], hi[1]], -1),
                   np.ones((3, 3, 2), bool), elo, ehi, np.ones((3, 3), bool))
    assert 0 < lp.y11_lower <= single_photon_yield(eta, eta, PD)
    assert lp.e11_upper >= single_photon_phase_error(eta, eta, PD, ED)


def test_inconsistent_data_gives_no_yield():
    ints = (0.4, 0.1, 0.0)
    g = np.zeros((3, 3, 2))
    g[0, 0] = 0.5  # a bright signal gain with dark vacuum and decoys: no yields fit
    lo = g.copy()
    lp = lp_bounds(ints, ints, lo, g, np.ones((3, 3, 2), bool), np.zeros((3, 3)),
                   np.zeros((3, 3)), np.ones((3, 3), bool))
    assert lp.y11_lower == 0.0 and lp.e11_upper == 0.5


def test_estimate_with_lp_gives_at_least_the_analytic_length_asymptotically():
    from classical.estimation import DecoyObservations, estimate

    ints = (0.4, 0.1, 0.0)
    eta, qz, qx, eqx = _gains(ints, 50)
    pairs = np.full((3, 3, 2), 1e10)
    det = np.zeros((3, 3, 2, 2))
    err = np.zeros((3, 3, 2, 2))
    det[..., 0, 0], det[..., 1, 0] = qz * 1e10, qx * 1e10
    err[..., 1, 0] = eqx * 1e10
    err[0, 0, 0, 0] = 0.015 * det[0, 0, 0, 0]
    obs = DecoyObservations(ints, ints, pairs, det, err)
    leak = 1.16 * det[0, 0, 0, 0] * 0.112  # f·n·h(1.5 %)
    analytic = estimate(obs, leak, "asymptotic", decoy_method="analytic")
    lp = estimate(obs, leak, "asymptotic", decoy_method="lp")
    assert lp.method == "asymptotic-lp"
    assert lp.secure_length >= analytic.secure_length > 0


@pytest.mark.parametrize("distance_km", [0, 150, 300])
@pytest.mark.parametrize("omega", [1e-2, 1e-3, 1e-5])
def test_a_tight_solver_tolerance_keeps_weak_decoy_bounds_safe(distance_km, omega):
    """Four-intensity layout with exact gains and a weak decoy ω, whose rows differ from the
    vacuum's by O(ω): at a 1e-10 feasibility tolerance the LP still solves and both bounds stay
    on the safe side of the truth (relative slack 1e-9 on the gains, as the key-rate curves).
    At HiGHS's default, 1e-7, Y11^L passes the truth at 300 km for ω = 1e-2 and 1e-3."""
    ints = np.array([0.4, 0.1, omega, 0.0])
    eta = 0.145 * float(arm_transmittance(distance_km / 2))
    qz = mr_z_basis(eta, eta, ints[:, None], ints[None, :], PD, ED)[0]
    qx, ex = mr_x_basis(eta, eta, ints[:, None], ints[None, :], PD, ED)
    used = np.zeros((4, 4, 2), bool)
    used[np.ix_([0, 3], [0, 3], [0])] = True  # Z: signal and vacuum
    used[np.ix_([1, 2, 3], [1, 2, 3], [1])] = True  # X: decoys and vacuum
    g = np.stack([qz, qx], -1) * used
    eg = qx * ex * used[..., 1]
    lo, hi = 1 - 1e-9, 1 + 1e-9
    lp = lp_bounds(tuple(ints), tuple(ints), g * lo, g * hi, used, eg * lo, eg * hi, used[..., 1],
                   feasibility_tolerance=1e-10)
    assert 0 < lp.y11_lower <= single_photon_yield(eta, eta, PD)
    assert lp.e11_upper >= single_photon_phase_error(eta, eta, PD, ED)
