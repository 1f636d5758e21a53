"""Three-intensity decoy-state bounds for MDI-QKD (Xu, Curty, Qi, Lo, NJP 15 113007, Eqs. 6–7).

Pure algebra over gains: the same functions bound the single-photon-pair yield from analytic
gains (key-rate curves) and from observed, finite-size-corrected gains (parameter estimation).

Index convention: ``gains[i, j]`` is the gain of pulse pairs where Alice used her intensity ``i``
and Bob his intensity ``j``, with index 0 = signal μ, 1 = decoy ν, 2 = decoy ω (μ > ν > ω ≥ 0).
``error_gains[i, j]`` is the matching error gain E·Q. Leading axes batch many matrices (a
key-rate curve at once), with intensities that broadcast over them. Formulas: docs/physics.md §7.
"""

from __future__ import annotations

import numpy as np

MU, NU, OMEGA = 0, 1, 2
ArrayLike = np.ndarray | float


def _intensities(name: str, values: tuple[ArrayLike, ArrayLike, ArrayLike]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, nu, omega = (np.asarray(v, dtype=np.float64) for v in values)
    if not np.all((mu > nu) & (nu > omega) & (omega >= 0)):
        raise ValueError(f"{name}: decoy intensities must satisfy mu > nu > omega >= 0, "
                         f"got mu={mu}, nu={nu}, omega={omega}")
    return mu, nu, omega


def _tilde(gains: np.ndarray, ia: tuple[np.ndarray, ...], ib: tuple[np.ndarray, ...]
           ) -> np.ndarray:
    """Q̃_ij = Q_ij e^{i_a + j_b} over the last two axes."""
    a = np.stack(np.broadcast_arrays(*ia), axis=-1)
    b = np.stack(np.broadcast_arrays(*ib), axis=-1)
    return np.asarray(gains, dtype=np.float64) * np.exp(a[..., :, None] + b[..., None, :])


def _scalar_or_array(value: np.ndarray) -> float | np.ndarray:
    return float(value) if np.ndim(value) == 0 else value


def _y11_lower(ia: tuple[np.ndarray, ...], ib: tuple[np.ndarray, ...], q: np.ndarray
               ) -> np.ndarray:
    """Xu13 Eq. 6, valid when (μ_a+ω_a)/(ν_a+ω_a) ≤ (μ_b+ω_b)/(ν_b+ω_b)."""
    mu_a, nu_a, om_a = ia
    mu_b, nu_b, om_b = ib
    qt = _tilde(q, ia, ib)

    def g(s: int) -> np.ndarray:
        return qt[..., s, s] + qt[..., OMEGA, OMEGA] - qt[..., s, OMEGA] - qt[..., OMEGA, s]

    num = ((mu_a**2 - om_a**2) * (mu_b - om_b) * g(NU)
           - (nu_a**2 - om_a**2) * (nu_b - om_b) * g(MU))
    den = (mu_a - om_a) * (mu_b - om_b) * (nu_a - om_a) * (nu_b - om_b) * (mu_a - nu_a)
    return num / den


def single_photon_yield_lower(intensities_a: tuple[ArrayLike, ArrayLike, ArrayLike],
                              intensities_b: tuple[ArrayLike, ArrayLike, ArrayLike],
                              gains: np.ndarray) -> float | np.ndarray:
    """Y11^L from gains (any basis) of shape (..., 3, 3), intensities broadcast over the leading
    axes; a float for one 3×3 matrix."""
    ia = _intensities("intensities_a", intensities_a)
    ib = _intensities("intensities_b", intensities_b)
    q = np.asarray(gains, dtype=np.float64)
    # the formula assumes the first ratio is the smaller one: otherwise swap the roles of a and b
    swap = (ia[MU] + ia[OMEGA]) / (ia[NU] + ia[OMEGA]) > (ib[MU] + ib[OMEGA]) / (ib[NU] + ib[OMEGA])
    if not np.any(swap):
        return _scalar_or_array(_y11_lower(ia, ib, q))
    if np.all(swap):
        return _scalar_or_array(_y11_lower(ib, ia, np.swapaxes(q, -1, -2)))
    return _scalar_or_array(np.where(swap, _y11_lower(ib, ia, np.swapaxes(q, -1, -2)),
                                     _y11_lower(ia, ib, q)))


def single_photon_error_upper(intensities_a: tuple[ArrayLike, ArrayLike, ArrayLike],
                              intensities_b: tuple[ArrayLike, ArrayLike, ArrayLike],
                              error_gains: np.ndarray, y11_lower: ArrayLike) -> float | np.ndarray:
    """e11^U from the error gains (..., 3, 3) of the two weakest intensities, clipped to
    [0, 1/2]; 1/2 where ``y11_lower`` ≤ 0. A float for one 3×3 matrix."""
    ia = _intensities("intensities_a", intensities_a)
    ib = _intensities("intensities_b", intensities_b)
    y11 = np.asarray(y11_lower, dtype=np.float64)
    eqt = _tilde(error_gains, ia, ib)
    num = eqt[..., NU, NU] + eqt[..., OMEGA, OMEGA] - eqt[..., NU, OMEGA] - eqt[..., OMEGA, NU]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = num / ((ia[NU] - ia[OMEGA]) * (ib[NU] - ib[OMEGA]) * y11)
    return _scalar_or_array(np.where(y11 > 0, np.clip(value, 0.0, 0.5), 0.5))
