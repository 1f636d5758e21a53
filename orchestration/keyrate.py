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
(ν, ν), the brightest X pairs. Accuracy: the gains are exact to a few ulp, so the LP is as
exact as its solver; the weak decoy's rows differ from the vacuum's by O(ω), which amplifies the
solver's feasibility tolerance. With HiGHS at ``_LP_TOLERANCE`` (1e-10) the bounds stay on the
safe side of the true Y11 and e11 from 0 to 300 km for μ ≤ 1, ν ≤ 0.1 and ω down to 10⁻⁵; at
ω = 10⁻⁶ the solver calls the exact data infeasible beyond about 250 km. ``--omega`` must be at
least ``MIN_FOUR_INTENSITY_OMEGA``, far from that edge.

Numerics: the gains are free of cancellation (``channel.analytic``), so the three-decoy and
infinite-decoy rates match a 50-digit evaluation of the same closed forms to 1e-10 relative or
better for decoys down to ν = 10⁻³ wherever the rate exceeds 1e-4 of its two terms; nearer the
reach, where it is the difference of two nearly equal terms, the error stays below 1e-12 of them.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from channel.analytic import (
    arm_transmittance,
    mr_x_basis,
    mr_z_basis,
    single_photon_phase_error,
    single_photon_yield,
)
from channel.defaults import (
    ATTENUATION_DB_PER_KM,
    DARK_COUNT_PROBABILITY,
    DETECTOR_EFFICIENCY,
    MISALIGNMENT,
)
from classical.decoy import single_photon_error_upper, single_photon_yield_lower
from classical.decoy_lp import lp_bounds
from classical.estimation import DEFAULT_EC_INEFFICIENCY, binary_entropy

Decoys = Literal["infinite", "3", "4"]
#: Relative width given to exact gains in the four-intensity LP (see ``_four_intensity_bounds``).
_EXACT_SLACK = 1e-9
#: HiGHS feasibility tolerance for those exact rows, below the slack so that the solution
#: honours them (at the solver's default, 1e-7, Y11^L can pass the true Y11 by 0.2 %).
_LP_TOLERANCE = 1e-10
#: Weakest X decoy the four-intensity LP accepts, well above the ω (about 1e-6) at which the
#: decoy's rows come within the solver's tolerance of the vacuum's (module docstring).
MIN_FOUR_INTENSITY_OMEGA = 1e-3


@dataclass(frozen=True)
class PhysicalParameters:
    """The standard set of docs/physics.md §1 by default."""

    detector_efficiency: float = DETECTOR_EFFICIENCY
    dark_count_probability: float = DARK_COUNT_PROBABILITY
    misalignment: float = MISALIGNMENT
    ec_efficiency: float = DEFAULT_EC_INEFFICIENCY
    attenuation_db_per_km: float = ATTENUATION_DB_PER_KM


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


@dataclass(frozen=True)
class _Curve:
    """The key rate and its ingredients at many (distance, μ) points, arrays of one shape."""

    rate: np.ndarray
    q_z: np.ndarray
    e_z: np.ndarray
    q_x: np.ndarray
    e_x: np.ndarray
    y11: np.ndarray
    e11: np.ndarray


def _curve(distance_km: np.ndarray | float, mu: np.ndarray | float, nu: float, omega: float,
           decoys: Decoys, p: PhysicalParameters) -> _Curve:
    """LCQ Eq. 1 at every point of ``distance_km`` and ``mu`` broadcast together."""
    d, mu = np.broadcast_arrays(np.asarray(distance_km, dtype=np.float64),
                                np.asarray(mu, dtype=np.float64))
    eta = p.detector_efficiency * arm_transmittance(d / 2, p.attenuation_db_per_km)
    pd, ed = p.dark_count_probability, p.misalignment
    q_z, e_z = mr_z_basis(eta, eta, mu, mu, pd, ed)
    if decoys == "4":
        q_x, e_x = mr_x_basis(eta, eta, nu, nu, pd, ed)
        y11, e11 = np.empty(d.shape), np.empty(d.shape)
        for i in np.ndindex(d.shape):  # one linear programme per point
            y11[i], e11[i] = _four_intensity_bounds(float(eta[i]), float(mu[i]), nu, omega, pd, ed)
    elif decoys == "infinite":
        q_x, e_x = mr_x_basis(eta, eta, mu, mu, pd, ed)
        y11 = single_photon_yield(eta, eta, pd)
        e11 = single_photon_phase_error(eta, eta, pd, ed)
    else:
        q_x, e_x = mr_x_basis(eta, eta, mu, mu, pd, ed)
        ints = (mu, nu, omega)
        grid = np.stack(np.broadcast_arrays(*ints), axis=-1)  # (..., 3): all nine pairs below
        e = eta[..., None, None]
        qz = mr_z_basis(e, e, grid[..., :, None], grid[..., None, :], pd, ed)[0]
        qx, ex = mr_x_basis(e, e, grid[..., :, None], grid[..., None, :], pd, ed)
        y11 = single_photon_yield_lower(ints, ints, qz)
        y11_x = single_photon_yield_lower(ints, ints, qx)
        e11 = single_photon_error_upper(ints, ints, qx * ex, y11_x)
    q11 = mu * mu * np.exp(-2 * mu) * np.maximum(y11, 0.0)
    rate = q11 * (1 - binary_entropy(e11)) - q_z * p.ec_efficiency * binary_entropy(e_z)
    return _Curve(rate, q_z, e_z, q_x, e_x, np.asarray(y11), np.asarray(e11))


def _raw_rate(distance_km: float, mu: float, nu: float, omega: float, decoys: Decoys,
              p: PhysicalParameters) -> KeyRatePoint:
    c = _curve(distance_km, mu, nu, omega, decoys, p)
    return KeyRatePoint(distance_km, mu, nu, omega, float(c.rate), float(c.q_z), float(c.e_z),
                        float(c.q_x), float(c.e_x), float(c.y11), float(c.e11))


def four_intensity_gains(eta: float, mu: float, nu: float, omega: float, pd: float, ed: float
                         ) -> tuple[tuple[float, ...], np.ndarray, np.ndarray, np.ndarray]:
    """The exact gains the four-intensity LP is fed, for both arms' total transmittance ``eta``.

    Returns ``(intensities, gains, error_gains, sent)``: intensities (μ, ν, ω, 0); ``gains``
    (4, 4, 2) per class and basis (0 = Z, 1 = X); ``error_gains`` (4, 4) the X-basis E·Q;
    ``sent`` (4, 4, 2) the classes the layout sends (module docstring), the others' gains 0.
    """
    ints = (mu, nu, omega, 0.0)
    k = len(ints)
    sent = np.zeros((k, k, 2), dtype=bool)
    sent[np.ix_([0, 3], [0, 3])] = [True, False]  # Z: signal and vacuum
    sent[np.ix_([1, 2, 3], [1, 2, 3])] = [False, True]  # X: decoys and vacuum
    sent[3, 3] = True
    a = np.asarray(ints)
    q_z = mr_z_basis(eta, eta, a[:, None], a[None, :], pd, ed)[0]
    q_x, e_x = mr_x_basis(eta, eta, a[:, None], a[None, :], pd, ed)
    return ints, np.stack([q_z, q_x], axis=-1) * sent, q_x * e_x * sent[..., 1], sent


def _four_intensity_bounds(eta: float, mu: float, nu: float, omega: float, pd: float,
                           ed: float) -> tuple[float, float]:
    """(Y11^L, e11^U) of the four-intensity layout from exact gains (module docstring).

    Raises:
        ValueError: ``omega`` below ``MIN_FOUR_INTENSITY_OMEGA`` or not below ``nu``.
    """
    if not MIN_FOUR_INTENSITY_OMEGA <= omega < nu < mu:
        raise ValueError(f"four intensities need mu > nu > omega >= {MIN_FOUR_INTENSITY_OMEGA}, "
                         f"got mu={mu}, nu={nu}, omega={omega}")
    ints, gains, error_gains, sent = four_intensity_gains(eta, mu, nu, omega, pd, ed)
    # exact gains as equality rows can be declared infeasible by the solver (weak ω, long
    # fibers); a relative slack far below any finite-size width keeps them feasible
    lo, hi = 1.0 - _EXACT_SLACK, 1.0 + _EXACT_SLACK
    lp = lp_bounds(ints, ints, gains * lo, gains * hi, sent, error_gains * lo, error_gains * hi,
                   sent[..., 1], feasibility_tolerance=_LP_TOLERANCE)
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


def _mu_grid(nu: float, omega: float, mu_max: float) -> np.ndarray:
    """The signal intensities ``optimal_mu`` starts from: 24 points on (max(ν, ω), mu_max]."""
    return np.linspace(max(nu, omega, 0.0) + 1e-4, mu_max, 24)


def optimal_mu(distance_km: float, nu: float, omega: float, decoys: Decoys,
               p: PhysicalParameters, mu_max: float = 1.0) -> float:
    """Signal intensity maximizing the rate: the best point of ``_mu_grid`` picks the basin, a
    bounded Brent search refines it (and is kept only if it does better than that point)."""
    grid = _mu_grid(nu, omega, mu_max)
    rates = _curve(distance_km, grid, nu, omega, decoys, p).rate
    k = int(np.argmax(rates))
    step = grid[1] - grid[0]

    def negative_rate(mu: float) -> float:
        return -float(_curve(distance_km, mu, nu, omega, decoys, p).rate)

    res = minimize_scalar(negative_rate, bounds=(max(grid[0], grid[k] - step),
                                                 min(mu_max, grid[k] + step)),
                          method="bounded", options={"xatol": 1e-5})
    return float(res.x) if -res.fun >= rates[k] else float(grid[k])


#: Distances evaluated per step of the reach scan when every point costs a linear programme.
_LP_SCAN_CHUNK = 8


def _best_rates(distance_km: np.ndarray, mu: float, nu: float, omega: float, decoys: Decoys,
                p: PhysicalParameters, optimize_mu: bool) -> np.ndarray:
    """The rate at each distance: at ``mu``, or the best over ``_mu_grid`` when optimizing."""
    if not optimize_mu:
        return _curve(distance_km, mu, nu, omega, decoys, p).rate
    grid = _mu_grid(nu, omega, 1.0)
    return _curve(distance_km[:, None], grid[None, :], nu, omega, decoys, p).rate.max(axis=1)


def max_distance(mu: float = 0.4, nu: float = 0.1, omega: float = 0.0,
                 decoys: Decoys = "infinite", params: PhysicalParameters | None = None,
                 optimize_mu: bool = False, upper_km: float = 1000.0,
                 tolerance_km: float = 1e-3, scan_step_km: float = 1.0) -> float | None:
    """Largest total distance in [0, ``upper_km``] with a positive key rate, within
    ``tolerance_km``; ``upper_km`` if the rate is positive there, None if it is nowhere.

    The rate need not fall monotonically with distance, so no bisection from the ends: it is
    evaluated on a grid of step ``scan_step_km`` (at ``mu``, or the best μ of ``optimal_mu``'s
    grid), the last positive grid point and the next one bracket the last sign change, and
    ``scipy.optimize.brentq`` (at ``mu``, or the optimized μ) locates it to ``tolerance_km``.
    A positive stretch narrower than the step beyond that point can be missed.

    Finite-decoy rates are not evaluated beyond the first grid point past the infinite-decoy
    reach: decoy bounds never beat the single-photon quantities they bound, so no key is left
    there; if the bracket's far end is still positive (the LP's solver tolerance, or the
    optimized μ beating the grid), the bracket moves on a step at a time.
    """
    p = params or PhysicalParameters()
    grid = np.append(np.arange(0.0, upper_km, scan_step_km), upper_km)
    ceiling = _best_rates(grid, mu, nu, omega, "infinite", p, optimize_mu)
    if not np.any(ceiling > 0):
        return None
    # the grid up to one point past the infinite-decoy reach, read from the far end in chunks
    # (one chunk unless every point costs a linear programme)
    stop = min(int(np.flatnonzero(ceiling > 0)[-1]) + 2, len(grid))
    chunk = _LP_SCAN_CHUNK if decoys == "4" else stop
    last = None
    while stop > 0 and last is None:
        start = max(0, stop - chunk)
        rates = (ceiling[start:stop] if decoys == "infinite"
                 else _best_rates(grid[start:stop], mu, nu, omega, decoys, p, optimize_mu))
        if np.any(rates > 0):
            last = start + int(np.flatnonzero(rates > 0)[-1])
        stop = start
    if last is None:
        return None

    @functools.cache  # brentq re-evaluates the bracket's ends
    def rate(d: float) -> float:
        m = optimal_mu(d, nu, omega, decoys, p) if optimize_mu else mu
        return _raw_rate(d, m, nu, omega, decoys, p).key_rate_per_pulse

    lo = float(grid[last])
    hi = lo
    while True:
        if hi >= upper_km:
            return float(upper_km)
        lo, hi = hi, min(hi + scan_step_km, upper_km)
        if rate(hi) <= 0:
            break
    if rate(lo) <= 0:  # a scalar evaluation rounding differently from the grid's, at ~0
        return lo
    return float(brentq(rate, lo, hi, xtol=tolerance_km))
