"""Statistical acceptance helpers shared by the physics tests.

Every assertion built from these has a stated false-alarm probability (``ALPHA`` per assertion):
a correct sampler fails a test with probability at most ALPHA, an incorrect one shows up as
large |z| or χ²/dof.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

ALPHA = 1e-4


def binomial_z(observed: float, trials: float, p: float) -> float:
    var = trials * p * (1 - p)
    return (observed - trials * p) / math.sqrt(var)


def assert_z_scores_consistent(z: list[float] | np.ndarray, label: str = "") -> None:
    """χ²/dof and max |z| of independent standard-normal z-scores, each at level ALPHA."""
    z = np.asarray(z, dtype=np.float64)
    dof = z.size
    chi2 = float((z**2).sum())
    chi2_limit = stats.chi2.isf(ALPHA, dof)
    z_limit = stats.norm.isf(ALPHA / (2 * dof))  # Bonferroni over the set
    detail = f"{label}: chi2/dof = {chi2 / dof:.2f} (limit {chi2_limit / dof:.2f}), " \
             f"max|z| = {np.abs(z).max():.2f} (limit {z_limit:.2f}), z = {np.round(z, 2).tolist()}"
    assert chi2 <= chi2_limit, detail
    assert np.abs(z).max() <= z_limit, detail


def assert_normal_sample_consistent(x: np.ndarray, sigma: float, label: str = "",
                                    assertions: int = 1) -> None:
    """Independent draws ``x`` of N(0, σ²): the mean's z-score and Σx²/σ² (χ² with x.size
    degrees of freedom, two-sided) each at level ALPHA / (2 · ``assertions``), so that
    ``assertions`` calls together fail a correct sampler with probability at most ALPHA."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    level = ALPHA / (2 * assertions)
    z = float(x.mean() / (sigma / math.sqrt(n)))
    z_limit = stats.norm.isf(level / 2)
    chi2 = float((x**2).sum() / sigma**2)
    lo, hi = stats.chi2.ppf(level / 2, n), stats.chi2.isf(level / 2, n)
    detail = (f"{label}: z(mean) = {z:.2f} (limit {z_limit:.2f}), rms/σ = "
              f"{math.sqrt(chi2 / n):.3f} (limits {math.sqrt(lo / n):.3f}, "
              f"{math.sqrt(hi / n):.3f})")
    assert abs(z) <= z_limit, detail
    assert lo <= chi2 <= hi, detail


def z_bound(assertions: int = 1) -> float:
    """The |z| a standard-normal score exceeds with probability ALPHA / ``assertions`` (two-sided):
    a one-sided test "this model is rejected: z beyond the bound" then wrongly passes, and a
    two-sided "consistent: |z| within it" wrongly fails, with at most that probability."""
    return float(stats.norm.isf(ALPHA / (2 * assertions)))
