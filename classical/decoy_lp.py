"""Decoy-state bounds by linear programming: every observed gain constrains the yields jointly.

The analytic three-intensity formulas (``classical.decoy``) combine a few gains in a fixed way.
Here every class (i_a, i_b) of a basis gives the constraint

    Q_ij^L − T_ij ≤ Σ_{n,m ≤ C} P_n(a_i) P_m(b_j) Y_nm ≤ Q_ij^U,     0 ≤ Y_nm ≤ 1,

with P_n(μ) = e^{−μ} μⁿ/n! (phase-randomized coherent states are Poisson mixtures of photon
numbers) and T_ij = 1 − Σ_{n,m ≤ C} P_n(a_i) P_m(b_j), the probability of the photon numbers
beyond the cut-off C, whose yields can be anything in [0, 1]. Y11^L is the LP minimum of Y_11
over the Z- and X-basis yields together (Y_11 is the same in both bases: the single-photon
states of either basis average to the same density matrix), and (e11·Y11)^U the LP maximum of
the X-basis error yield E_11 subject to 0 ≤ E_nm ≤ Y^X_nm and the error-gain constraints. The
result is rigorous for any C (the tails are bounded, not dropped) and never looser than the
analytic bound on the same intervals, since the analytic bound is one feasible combination of
the same constraints. Works for any number of intensities per user, so the four-intensity layout
(signal only in Z, vacuum and two decoys in X) is the same code.

Joint constraints (``joint``): intervals on weighted *sums* of one kind of gain,
lo ≤ Σ_ij w_ij G_ij ≤ hi with w ≥ 0, added as rows of the same form (the tails enter the lower
side only, Σ w_ij T_ij). They come from one Chernoff bound on the classes' summed counts
(docs/finite-key.md §2, step 2), whose relative fluctuation is smaller than that of its
parts, so they cut the feasible set further where the bounds subtract nearly equal gains. They
are added to, never replace, the per-class rows: the LP can only get tighter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

DEFAULT_CUTOFF = 6


@dataclass(frozen=True)
class LpBounds:
    y11_lower: float
    error_yield11_upper: float  # (e11 · Y11)^U in the X basis

    @property
    def e11_upper(self) -> float:
        if self.y11_lower <= 0:
            return 0.5
        return min(max(self.error_yield11_upper / self.y11_lower, 0.0), 0.5)


@dataclass(frozen=True)
class GainConstraint:
    """lo ≤ Σ_ij weights[i, j] · G_ij ≤ hi for one kind of gain: ``"z"`` (Z-basis gains), ``"x"``
    (X-basis gains) or ``"e"`` (X-basis error gains); ``weights`` (n_a, n_b), ≥ 0."""

    kind: Literal["z", "x", "e"]
    weights: np.ndarray
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if self.kind not in ("z", "x", "e"):
            raise ValueError(f"kind must be 'z', 'x' or 'e', got {self.kind!r}")
        if np.any(np.asarray(self.weights) < 0):
            raise ValueError("weights must be >= 0")
        if not self.lo <= self.hi:
            raise ValueError(f"need lo <= hi, got {self.lo} > {self.hi}")


def _poisson(mu: float, cutoff: int) -> np.ndarray:
    return np.array([math.exp(-mu) * mu**n / math.factorial(n) for n in range(cutoff + 1)])


def _rows(ia: np.ndarray, ib: np.ndarray, lo: np.ndarray, hi: np.ndarray, used: np.ndarray,
          cutoff: int) -> tuple[list[np.ndarray], list[float]]:
    """Inequality rows A y ≤ b for one basis's gains (two per used class)."""
    rows, rhs = [], []
    for i, a in enumerate(ia):
        pa = _poisson(a, cutoff)
        for j, b in enumerate(ib):
            if not used[i, j]:
                continue
            coeff = np.outer(pa, _poisson(b, cutoff)).ravel()
            tail = max(0.0, 1.0 - coeff.sum())
            scale = 1.0 / hi[i, j] if hi[i, j] > 0 else 1.0  # rows of order one help the solver
            rows.append(coeff * scale)
            rhs.append(hi[i, j] * scale)
            rows.append(-coeff * scale)
            rhs.append(-(lo[i, j] - tail) * scale)
    return rows, rhs


def _joint_rows(ia: np.ndarray, ib: np.ndarray, constraints: Sequence[GainConstraint], kind: str,
                cutoff: int) -> tuple[list[np.ndarray], list[float]]:
    """Rows A y ≤ b of the joint constraints of one kind (two per constraint)."""
    pa = [_poisson(a, cutoff) for a in ia]
    pb = [_poisson(b, cutoff) for b in ib]
    rows, rhs = [], []
    for c in constraints:
        if c.kind != kind:
            continue
        coeff = np.zeros((cutoff + 1) ** 2)
        tail = 0.0
        for i, j in zip(*np.nonzero(c.weights), strict=True):
            cell = np.outer(pa[i], pb[j]).ravel()
            coeff += c.weights[i, j] * cell
            tail += c.weights[i, j] * max(0.0, 1.0 - cell.sum())
        scale = 1.0 / c.hi if c.hi > 0 else 1.0
        rows += [coeff * scale, -coeff * scale]
        rhs += [c.hi * scale, -(c.lo - tail) * scale]
    return rows, rhs


def _solve(c: np.ndarray, a_ub: np.ndarray, b_ub: np.ndarray,
           bounds: list[tuple[float, float]], a_eq: np.ndarray | None = None,
           b_eq: np.ndarray | None = None, tolerance: float | None = None) -> float | None:
    options = ({} if tolerance is None else
               {"primal_feasibility_tolerance": tolerance, "dual_feasibility_tolerance": tolerance})
    # scipy is imported here, not with the module: every node imports this module, few rounds
    # use the LP, and scipy.optimize is a third of a node's start-up time
    from scipy.optimize import linprog

    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs",
                  options=options)
    return float(res.fun) if res.status == 0 else None


def lp_bounds(intensities_a: tuple[float, ...], intensities_b: tuple[float, ...],
              gain_lo: np.ndarray, gain_hi: np.ndarray, used: np.ndarray,
              x_error_lo: np.ndarray, x_error_hi: np.ndarray, x_error_used: np.ndarray,
              cutoff: int = DEFAULT_CUTOFF,
              joint: Sequence[GainConstraint] = (),
              feasibility_tolerance: float | None = None) -> LpBounds:
    """Y11^L and (e11·Y11)^U from interval bounds on gains.

    ``gain_lo``/``gain_hi``/``used``: shape (n_a, n_b, 2) — per class and basis (0 = Z, 1 = X),
    the bounds on the expected gain and whether the class is constrained. ``x_error_*``: shape
    (n_a, n_b) — bounds on the X-basis error gains. ``joint``: further constraints on weighted
    sums of gains (module docstring). Infeasible constraints (inconsistent data)
    give Y11^L = 0, i.e. no key. ``feasibility_tolerance``: HiGHS's primal and dual feasibility
    tolerances (its default, 1e-7, when None); each row is scaled to order one, and the
    bounds can move past the truth by that much times the decoy algebra's amplification.
    """
    ia, ib = np.asarray(intensities_a, float), np.asarray(intensities_b, float)
    k = (cutoff + 1) ** 2
    idx11 = (cutoff + 1) + 1
    # variables: [Y^Z (k) | Y^X (k)]; Y^Z_11 = Y^X_11 by an equality row
    rows_z, rhs_z = _rows(ia, ib, gain_lo[..., 0], gain_hi[..., 0], used[..., 0], cutoff)
    rows_x, rhs_x = _rows(ia, ib, gain_lo[..., 1], gain_hi[..., 1], used[..., 1], cutoff)
    for rows, rhs, kind in ((rows_z, rhs_z, "z"), (rows_x, rhs_x, "x")):
        more, more_rhs = _joint_rows(ia, ib, joint, kind, cutoff)
        rows += more
        rhs += more_rhs
    a_ub = np.array([np.concatenate([r, np.zeros(k)]) for r in rows_z]
                    + [np.concatenate([np.zeros(k), r]) for r in rows_x]).reshape(-1, 2 * k)
    b_ub = np.array(rhs_z + rhs_x)
    tie = np.zeros((1, 2 * k))
    tie[0, idx11], tie[0, k + idx11] = 1.0, -1.0
    c = np.zeros(2 * k)
    c[idx11] = 1.0
    y11 = _solve(c, a_ub, b_ub, [(0.0, 1.0)] * (2 * k), tie, np.zeros(1), feasibility_tolerance)
    if y11 is None:
        return LpBounds(0.0, 0.0)
    # error yields: variables [Y^X (k) | E^X (k)], E ≤ Y, maximise E_11
    rows_e, rhs_e = _rows(ia, ib, x_error_lo, x_error_hi, x_error_used, cutoff)
    more, more_rhs = _joint_rows(ia, ib, joint, "e", cutoff)
    rows_e += more
    rhs_e += more_rhs
    a2 = [np.concatenate([r, np.zeros(k)]) for r in rows_x]
    a2 += [np.concatenate([np.zeros(k), r]) for r in rows_e]
    link = np.concatenate([-np.eye(k), np.eye(k)], axis=1)  # E − Y ≤ 0
    a2_ub = np.vstack([np.array(a2).reshape(-1, 2 * k), link])
    b2_ub = np.concatenate([np.array(rhs_x + rhs_e), np.zeros(k)])
    c2 = np.zeros(2 * k)
    c2[k + idx11] = -1.0
    e11 = _solve(c2, a2_ub, b2_ub, [(0.0, 1.0)] * (2 * k), tolerance=feasibility_tolerance)
    if e11 is None:
        return LpBounds(0.0, 0.0)
    return LpBounds(max(y11, 0.0), -e11)
