"""Asymptotic key rate of decoy-state MDI-QKD versus distance (LCQ Eq. 1, docs/physics.md §7).

Gains come from the Ma–Razavi closed forms (``channel.analytic``); with three decoys the
single-photon quantities are bounded by ``classical.decoy`` exactly as parameter estimation
bounds them from data. The relay sits in the middle: each arm is half the total distance.

Reported ``Q_X``/``E_X`` are those of signal pulse pairs (μ, μ); with three decoys the phase error
bound uses the X-basis gains of all nine intensity pairs.

Four intensities (``decoys="4"``, the layout of Zhou, Yu & Wang, PRA 93, 042324 (2016), as in
``channel.settings.four_intensity_plan``): the signal μ is sent only in Z, for the key; ν > ω > 0
are the X-basis decoys, with a vacuum in both bases. Y11^L and e11^U are the linear programme of
``classical.decoy_lp`` over the classes that layout sends (Z: μ and vacuum; X: ν, ω and vacuum),
fed the exact gains; asymptotically the joint constraints add nothing (the exact gains satisfy
every sum of them), so this is also the ``joint`` method's rate. ``Q_X``/``E_X`` are then those of
(ν, ν), the brightest X pairs. Accuracy: the LP is only as exact as its solver, and the weak
decoy's rows differ from the vacuum's by O(ω), which amplifies HiGHS's 1e-7 feasibility
tolerance: with ν = 0.1, Y11^L is within 0.3 % of a valid bound up to 200 km for ω ≥ 10⁻³ (it
exceeded the true Y11 by 0.2 % at ω = 10⁻³, 200 km) and within 1 % to 300 km; below ω = 10⁻³ the
solver may call the exact data infeasible, so ``--omega`` must be at least that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.optimize import minimize_scalar

from channel.analytic import (
    arm_transmittance,
    binary_entropy,
    mr_x_basis,
    mr_z_basis,
    single_photon_phase_error,
    single_photon_yield,
)
from classical.decoy import single_photon_error_upper, single_photon_yield_lower
from classical.decoy_lp import lp_bounds

Decoys = Literal["infinite", "3", "4"]
#: Relative width given to exact gains in the four-intensity LP (see ``_four_intensity_bounds``).
_EXACT_SLACK = 1e-9
#: Weakest X decoy the four-intensity LP accepts: below it the decoy's rows differ from the
#: vacuum's by less than the solver's tolerance and HiGHS may declare the exact data infeasible
#: (seen at ω = 1e-6 and 1e-4); from 1e-3 it solves from 0 to 300 km.
MIN_FOUR_INTENSITY_OMEGA = 1e-3


@dataclass(frozen=True)
class PhysicalParameters:
    """The standard set of docs/physics.md §1 by default."""

    detector_efficiency: float = 0.145
    dark_count_probability: float = 3e-6
    misalignment: float = 0.015
    ec_efficiency: float = 1.16
    attenuation_db_per_km: float = 0.2


@dataclass(frozen=True)
class KeyRatePoint:
    distance_km: float
    mu: float
    nu: float
    omega: float
    key_rate_per_pulse: float
    Q_Z: float
    E_Z: float
    Q_X: float
    E_X: float
    Y11_L: float
    e11_U: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _raw_rate(distance_km: float, mu: float, nu: float, omega: float, decoys: Decoys,
              p: PhysicalParameters) -> KeyRatePoint:
    eta = p.detector_efficiency * float(arm_transmittance(distance_km / 2, p.attenuation_db_per_km))
    pd, ed = p.dark_count_probability, p.misalignment
    q_z, e_z = (float(v) for v in mr_z_basis(eta, eta, mu, mu, pd, ed))
    q_x, e_x = (float(v) for v in mr_x_basis(eta, eta, mu, mu, pd, ed))
    if decoys == "4":
        q_x, e_x = (float(v) for v in mr_x_basis(eta, eta, nu, nu, pd, ed))
        y11, e11 = _four_intensity_bounds(eta, mu, nu, omega, pd, ed)
    elif decoys == "infinite":
        y11 = float(single_photon_yield(eta, eta, pd))
        e11 = float(single_photon_phase_error(eta, eta, pd, ed))
    else:
        ints = (mu, nu, omega)
        qz = np.array([[mr_z_basis(eta, eta, a, b, pd, ed)[0] for b in ints] for a in ints])
        qx = np.array([[mr_x_basis(eta, eta, a, b, pd, ed) for b in ints] for a in ints])
        y11 = single_photon_yield_lower(ints, ints, qz)
        y11_x = single_photon_yield_lower(ints, ints, qx[:, :, 0])
        e11 = single_photon_error_upper(ints, ints, qx[:, :, 0] * qx[:, :, 1], y11_x)
    q11 = mu * mu * np.exp(-2 * mu) * max(y11, 0.0)
    rate = q11 * (1 - float(binary_entropy(e11))) - q_z * p.ec_efficiency * float(
        binary_entropy(e_z))
    return KeyRatePoint(distance_km, mu, nu, omega, float(rate), q_z, e_z, q_x, e_x, y11, e11)


def _four_intensity_bounds(eta: float, mu: float, nu: float, omega: float, pd: float,
                           ed: float) -> tuple[float, float]:
    """(Y11^L, e11^U) of the four-intensity layout from exact gains (module docstring).

    Raises:
        ValueError: ``omega`` below ``MIN_FOUR_INTENSITY_OMEGA`` or not below ``nu``.
    """
    if not MIN_FOUR_INTENSITY_OMEGA <= omega < nu < mu:
        raise ValueError(f"four intensities need mu > nu > omega >= {MIN_FOUR_INTENSITY_OMEGA}, "
                         f"got mu={mu}, nu={nu}, omega={omega}")
    ints = (mu, nu, omega, 0.0)
    k = len(ints)
    sent = np.zeros((k, k, 2), dtype=bool)
    sent[np.ix_([0, 3], [0, 3])] = [True, False]  # Z: signal and vacuum
    sent[np.ix_([1, 2, 3], [1, 2, 3])] = [False, True]  # X: decoys and vacuum
    sent[3, 3] = True
    gains = np.zeros((k, k, 2))
    error_gains = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            gains[i, j, 0] = float(mr_z_basis(eta, eta, ints[i], ints[j], pd, ed)[0])
            q, e = (float(v) for v in mr_x_basis(eta, eta, ints[i], ints[j], pd, ed))
            gains[i, j, 1], error_gains[i, j] = q, q * e
    gains *= sent
    error_gains *= sent[..., 1]
    # exact gains as equality rows can be declared infeasible by the solver (weak ω, long
    # fibers); a relative slack far below any finite-size width keeps them feasible
    lo, hi = 1.0 - _EXACT_SLACK, 1.0 + _EXACT_SLACK
    lp = lp_bounds(ints, ints, gains * lo, gains * hi, sent, error_gains * lo, error_gains * hi,
                   sent[..., 1])
    return lp.y11_lower, lp.e11_upper


def key_rate(distance_km: float, mu: float = 0.4, nu: float = 0.1, omega: float = 0.0,
             decoys: Decoys = "infinite", params: PhysicalParameters | None = None,
             optimize_mu: bool = False) -> KeyRatePoint:
    """Key rate per pulse pair (negative rates reported as 0) at one total distance."""
    p = params or PhysicalParameters()
    if optimize_mu:
        mu = optimal_mu(distance_km, nu, omega, decoys, p)
    point = _raw_rate(distance_km, mu, nu, omega, decoys, p)
    if point.key_rate_per_pulse < 0:
        point = KeyRatePoint(**{**point.as_dict(), "key_rate_per_pulse": 0.0})
    return point


def optimal_mu(distance_km: float, nu: float, omega: float, decoys: Decoys,
               p: PhysicalParameters, mu_max: float = 1.0) -> float:
    """Signal intensity maximizing the rate (bounded scalar search on (max(ν, 0), mu_max])."""
    lo = max(nu, omega, 0.0) + 1e-4

    def negative_rate(mu: float) -> float:
        return -_raw_rate(distance_km, mu, nu, omega, decoys, p).key_rate_per_pulse

    # a coarse scan picks the basin, then a bounded Brent search refines it
    grid = np.linspace(lo, mu_max, 24)
    best = grid[int(np.argmin([negative_rate(m) for m in grid]))]
    step = grid[1] - grid[0]
    res = minimize_scalar(negative_rate, bounds=(max(lo, best - step), min(mu_max, best + step)),
                          method="bounded", options={"xatol": 1e-5})
    return float(res.x)


def max_distance(mu: float = 0.4, nu: float = 0.1, omega: float = 0.0,
                 decoys: Decoys = "infinite", params: PhysicalParameters | None = None,
                 optimize_mu: bool = False, upper_km: float = 1000.0,
                 tolerance_km: float = 0.05) -> float | None:
    """Largest total distance with a positive key rate (bisection), or None if there is none."""
    p = params or PhysicalParameters()

    def positive(d: float) -> bool:
        m = optimal_mu(d, nu, omega, decoys, p) if optimize_mu else mu
        return _raw_rate(d, m, nu, omega, decoys, p).key_rate_per_pulse > 0

    if not positive(0.0):
        return None
    lo, hi = 0.0, upper_km
    if positive(hi):
        return hi
    while hi - lo > tolerance_km:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if positive(mid) else (lo, mid)
    return lo
