"""Three-intensity decoy-state bounds for MDI-QKD (Xu, Curty, Qi, Lo, NJP 15 113007, Eqs. 6–7).

Pure algebra over gains: the same functions bound the single-photon-pair yield from analytic
gains (key-rate curves) and from observed, finite-size-corrected gains (parameter estimation).

Index convention: ``gains[i, j]`` is the gain of pulse pairs where Alice used her intensity ``i``
and Bob his intensity ``j``, with index 0 = signal μ, 1 = decoy ν, 2 = decoy ω (μ > ν > ω ≥ 0).
``error_gains[i, j]`` is the matching error gain E·Q. Formulas: docs/physics.md §7.
"""

from __future__ import annotations

import numpy as np

MU, NU, OMEGA = 0, 1, 2


def _check_intensities(name: str, values: tuple[float, float, float]) -> None:
    mu, nu, omega = values
    if not (mu > nu > omega >= 0):
        raise ValueError(f"{name}: decoy intensities must satisfy mu > nu > omega >= 0, "
                         f"got mu={mu}, nu={nu}, omega={omega}")


def single_photon_yield_lower(intensities_a: tuple[float, float, float],
                              intensities_b: tuple[float, float, float],
                              gains: np.ndarray) -> float:
    """Y11^L from a 3×3 matrix of gains (any basis)."""
    _check_intensities("intensities_a", intensities_a)
    _check_intensities("intensities_b", intensities_b)
    q = np.asarray(gains, dtype=np.float64)
    mu_a, nu_a, om_a = intensities_a
    mu_b, nu_b, om_b = intensities_b
    if (mu_a + om_a) / (nu_a + om_a) > (mu_b + om_b) / (nu_b + om_b):
        # the formula assumes the first ratio is the smaller one: swap the roles of a and b
        return single_photon_yield_lower(intensities_b, intensities_a, q.T)
    ia = np.array(intensities_a)
    ib = np.array(intensities_b)
    qt = q * np.exp(ia[:, None] + ib[None, :])  # Q̃_ij = Q_ij e^{i_a + j_b}

    def g(s: int) -> float:
        return qt[s, s] + qt[OMEGA, OMEGA] - qt[s, OMEGA] - qt[OMEGA, s]

    num = ((mu_a**2 - om_a**2) * (mu_b - om_b) * g(NU)
           - (nu_a**2 - om_a**2) * (nu_b - om_b) * g(MU))
    den = (mu_a - om_a) * (mu_b - om_b) * (nu_a - om_a) * (nu_b - om_b) * (mu_a - nu_a)
    return float(num / den)


def single_photon_error_upper(intensities_a: tuple[float, float, float],
                              intensities_b: tuple[float, float, float],
                              error_gains: np.ndarray, y11_lower: float) -> float:
    """e11^U from the error gains of the two weakest intensities, clipped to [0, 1/2]."""
    _check_intensities("intensities_a", intensities_a)
    _check_intensities("intensities_b", intensities_b)
    if y11_lower <= 0:
        return 0.5
    _, nu_a, om_a = intensities_a
    _, nu_b, om_b = intensities_b
    ia = np.array(intensities_a)
    ib = np.array(intensities_b)
    eqt = np.asarray(error_gains, dtype=np.float64) * np.exp(ia[:, None] + ib[None, :])
    num = eqt[NU, NU] + eqt[OMEGA, OMEGA] - eqt[NU, OMEGA] - eqt[OMEGA, NU]
    value = num / ((nu_a - om_a) * (nu_b - om_b) * y11_lower)
    return float(min(max(value, 0.0), 0.5))
