"""Parameter estimation: decoy-state bounds on single-photon pairs, and the secure key length.

Input: :class:`DecoyObservations`, the detections, sifted errors and sent pulse pairs of every
(Alice intensity, Bob intensity, basis, Bell state) class; output: a frozen :class:`Estimate`, or
an :class:`Abort` with a reason a person can read. Modes ``"asymptotic"`` and ``"finite"``
(Chernoff bounds, the key length of Curty et al., Nat. Commun. 5, 3732 (2014)); decoy methods
``"analytic"``, ``"lp"`` and ``"joint"``. Class axes: intensity (0 = the signal), basis (0 = Z,
1 = X), Bell state (0 = ψ⁺, 1 = ψ⁻). The steps, the key-length formula, every ε and how they
compose, and the assumptions are in docs/finite-key.md (steps are numbered as in its §2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from classical.decoy import MU, NU, OMEGA, single_photon_error_upper, single_photon_yield_lower
from classical.decoy_lp import GainConstraint, lp_bounds

Mode = Literal["asymptotic", "finite"]
MODES: tuple[str, ...] = ("asymptotic", "finite")
METHOD_NAMES = {"asymptotic": "asymptotic", "finite": "finite-chernoff"}
DecoyMethod = Literal["analytic", "lp", "joint"]
DECOY_METHODS: tuple[str, ...] = ("analytic", "lp", "joint")
#: The decoy method of every default, the library's and the scenarios' alike.
DEFAULT_DECOY_METHOD: DecoyMethod = "joint"
BASIS_Z, BASIS_X = 0, 1
BELL_BLOCK_NAMES = ("psi+", "psi-")
MERGED_BLOCK_NAME = "psi+-"
#: Default error-correction inefficiency f (docs/physics.md §1), for predictions only.
DEFAULT_EC_INEFFICIENCY = 1.16
_BISECTION_STEPS = 200
#: Bisection stops once every bracket is this narrow relative to its end (or after the steps).
_BISECTION_RTOL = 1e-15

Intensities = tuple[float, ...]
#: Fewest intensities per user the decoy bounds accept.
MIN_INTENSITIES = 3


def binary_entropy(p: ArrayLike) -> Any:
    """h(p) in bits, h(0) = h(1) = 0, p clipped to [0, 1]: a float for a scalar, elementwise
    for an array. NaN stays NaN, so an undefined error rate can never pass for a zero one."""
    q = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    inside = (q > 0.0) & (q < 1.0)
    r = np.where(inside, q, 0.5)
    h = np.where(inside, -r * np.log2(r) - (1.0 - r) * np.log2(1.0 - r), 0.0)
    h = np.where(np.isnan(q), np.nan, h)
    return float(h) if h.ndim == 0 else h


def predicted_leakage(n: int, qber: float, f: float = DEFAULT_EC_INEFFICIENCY) -> float:
    """f · n · h(E): the leakage to expect when reconciling ``n`` bits at error rate ``qber``."""
    if n < 0 or f < 1.0:
        raise ValueError(f"need n >= 0 and f >= 1, got n={n}, f={f}")
    return f * n * binary_entropy(qber)


def choose_test_positions(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted distinct positions of ``round(fraction · n)`` bits drawn without replacement."""
    if n < 0 or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"need n >= 0 and 0 <= fraction <= 1, got n={n}, fraction={fraction}")
    k = int(round(fraction * n))
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


# --- Chernoff bounds ---------------------------------------------------------------------------


def _poisson_divergence(m: np.ndarray, chi: np.ndarray) -> np.ndarray:
    """m − χ + χ ln(χ/m) ≥ 0, zero at m = χ (with 0 ln 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(chi > 0, chi * np.log1p((chi - m) / m), 0.0)
    return m - chi + log_term


def chernoff_bounds(observed: np.ndarray | float,
                    epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """(E^L, E^U): bounds on the expectation of each observed count, failing with prob. ≤ ε.

    Multiplicative Chernoff bound, each tail at ε/2 (Zhang et al. 2017); solved by bisection on
    the equivalent divergence equation (docs/finite-key.md §2, step 1). Vectorized.
    """
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    chi = np.asarray(observed, dtype=np.float64)
    if np.any(chi < 0):
        raise ValueError("observed counts must be >= 0")
    target = math.log(2.0 / epsilon)
    # lower root in (0, χ]: the divergence decreases from +∞ to 0
    lo, hi = np.zeros_like(chi), chi.copy()
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        above = _poisson_divergence(np.maximum(mid, 1e-300), chi) > target
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
        if np.all((hi - lo <= _BISECTION_RTOL * hi) | (chi == 0)):  # χ = 0: E^L = 0 below
            break
    lower = np.where(chi > 0, lo, 0.0)
    # upper root in [χ, ∞): the divergence increases from 0
    a = chi.copy()
    b = chi + target + 2.0 * np.sqrt(2.0 * chi * target) + 1.0
    while np.any(short := _poisson_divergence(b, chi) < target):
        b = np.where(short, chi + 2.0 * (b - chi), b)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (a + b)
        below = _poisson_divergence(mid, chi) < target
        a = np.where(below, mid, a)
        b = np.where(below, b, mid)
        if np.all(b - a <= _BISECTION_RTOL * b):
            break
    return lower, b


def realised_lower(expected: float, epsilon: float) -> float:
    """Lower bound on a sum of independent Bernoullis from its expectation (fails ≤ ε/2)."""
    L = math.log(2.0 / epsilon)
    if expected <= 0:
        return 0.0
    return max(0.0, expected - math.sqrt(2.0 * expected * L))


def realised_upper(expected: float, epsilon: float) -> float:
    """Upper bound on a sum of independent Bernoullis from its expectation (fails ≤ ε/2)."""
    L = math.log(2.0 / epsilon)
    m = max(expected, 0.0)
    return m + 0.5 * (L + math.sqrt(L * L + 8.0 * L * m))


# --- inputs and outputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class SecurityParameters:
    """Security parameters (ε) and abort thresholds of parameter estimation.

    ``epsilon_pe`` is the failure probability of each Chernoff-bounded count (both tails);
    ``epsilon_beta`` the ε_β that Curty et al.'s composition adds once per Bell-state block (weight
    1, docs/finite-key.md §4); ``max_qber_z`` the Z-basis QBER above which a round aborts;
    ``min_key_detections`` the fewest key-class detections (both Bell states) worth estimating from.
    """

    epsilon_correctness: float = 1e-15
    epsilon_prime: float = 1e-10
    epsilon_smoothing: float = 1e-10
    epsilon_pa: float = 1e-10
    epsilon_pe: float = 1e-10
    epsilon_beta: float = 1e-10
    max_qber_z: float = 0.11
    min_key_detections: int = 100

    def __post_init__(self) -> None:
        for name in ("epsilon_correctness", "epsilon_prime", "epsilon_smoothing", "epsilon_pa",
                     "epsilon_pe", "epsilon_beta"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if not 0.0 < self.max_qber_z <= 0.5:
            raise ValueError(f"max_qber_z must be in (0, 0.5], got {self.max_qber_z}")
        if self.min_key_detections < 1:
            raise ValueError(f"min_key_detections must be >= 1, got {self.min_key_detections}")

    def block_secrecy(self, bounded_counts: int) -> float:
        """ε_sec of one block that bounded ``bounded_counts`` counts:
        2(ε′ + 2ε_e + ε̂) + ε_β + ε_PA with ε_e = bounded_counts · ε_PE (docs/finite-key.md §4)."""
        if bounded_counts < 0:
            raise ValueError(f"bounded_counts must be >= 0, got {bounded_counts}")
        eps_e = bounded_counts * self.epsilon_pe
        return (2.0 * (self.epsilon_prime + 2.0 * eps_e + self.epsilon_smoothing)
                + self.epsilon_beta + self.epsilon_pa)

    @property
    def finite_key_cost_bits(self) -> float:
        """log₂(8/ε_cor) + 2 log₂(2/(ε′ε̂)) + 2 log₂(1/(2ε_PA)): the ε terms of one block."""
        return (math.log2(8.0 / self.epsilon_correctness)
                + 2.0 * math.log2(2.0 / (self.epsilon_prime * self.epsilon_smoothing))
                + 2.0 * math.log2(1.0 / (2.0 * self.epsilon_pa)))


def intensity_list_problem(means: Sequence[float]) -> str | None:
    """What is wrong with one user's mean photon numbers (first = the signal), or None.

    At least ``MIN_INTENSITIES`` distinct values >= 0; three must be ordered mu > nu > omega.
    The one statement of the layout rules: the scenario models and ``RoundConfig`` call it too.
    """
    values = tuple(float(v) for v in means)
    if len(values) < MIN_INTENSITIES:
        return f"need at least {MIN_INTENSITIES} intensities, got {len(values)}"
    if len(values) == 3 and not values[0] > values[1] > values[2] >= 0:
        return ("three intensities must be ordered signal > decoy > weak decoy >= 0 "
                f"(mu > nu > omega), got {', '.join(map(str, values))}")
    if len(set(values)) != len(values) or min(values) < 0:
        return f"intensities must be distinct and >= 0, got {', '.join(map(str, values))}"
    return None


def decoy_method_problem(decoy_method: str, n_intensities: tuple[int, int]) -> str | None:
    """Why ``decoy_method`` cannot bound a layout of (K_a, K_b) intensities, or None."""
    if decoy_method not in DECOY_METHODS:
        return f"unknown decoy_method {decoy_method!r}; choose one of {', '.join(DECOY_METHODS)}"
    if decoy_method == "analytic" and tuple(n_intensities) != (3, 3):
        k_a, k_b = n_intensities
        return ("'analytic' (Xu13's three-intensity bounds) needs three intensities per user, "
                f"got {k_a} and {k_b}; use 'joint' or 'lp'")
    return None


def check_intensity_layout(
    intensities_a: Sequence[float], intensities_b: Sequence[float], key_intensity: Sequence[int]
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, int]]:
    """Validate both users' intensity lists and the key class; return them normalised.

    At least ``MIN_INTENSITIES`` distinct values ≥ 0 per user (three must be ordered
    μ > ν > ω), and ``key_intensity`` a pair of indices of intensities > 0.

    Raises:
        ValueError: naming the list or index at fault.
    """
    lists = []
    for name, given in (("intensities_a", intensities_a), ("intensities_b", intensities_b)):
        values = tuple(float(v) for v in given)
        problem = intensity_list_problem(values)
        if problem:
            raise ValueError(f"{name}: {problem}")
        lists.append(values)
    a, b = lists
    key = tuple(int(k) for k in key_intensity)
    if len(key) != 2 or not (0 <= key[0] < len(a) and 0 <= key[1] < len(b)):
        raise ValueError(f"key_intensity must be a pair of indices into ({len(a)}, {len(b)}) "
                         f"intensities, got {tuple(key_intensity)}")
    if a[key[0]] <= 0 or b[key[1]] <= 0:
        raise ValueError(f"the key intensities must be > 0, got key_intensity={key}")
    return a, b, (key[0], key[1])


@dataclass(frozen=True)
class DecoyObservations:
    """What one round observed, per (i_a, i_b, basis, Bell state) class; arrays are copied.

    With K_a and K_b intensities (K ≥ 3 each): ``pairs`` (K_a, K_b, 2): sent pulse pairs with
    matching bases (``sifting.sent_pairs``; may be fractional). ``detections`` (K_a, K_b, 2, 2):
    kept detections. ``errors`` (K_a, K_b, 2, 2): sifted errors; the X-basis entries come from the
    disclosed X bits, the key-class Z entries ``errors[k_a, k_b, 0, :]`` from the bits
    reconciliation corrected; other Z entries are unused. Counts may be non-integer (expected
    counts from an analytic model, asymptotic mode).

    ``key_intensity`` = (k_a, k_b): the intensity indices whose Z-basis pairs form the key (the
    signal of each user; (0, 0) in both standard layouts). Intensities: three must be ordered
    (μ, ν, ω) with μ > ν > ω ≥ 0 (``classical.decoy``'s convention); more must be distinct and
    ≥ 0, with a positive key intensity.
    """

    intensities_a: Intensities
    intensities_b: Intensities
    pairs: np.ndarray
    detections: np.ndarray
    errors: np.ndarray
    key_intensity: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        a, b, key = check_intensity_layout(self.intensities_a, self.intensities_b,
                                           self.key_intensity)
        object.__setattr__(self, "intensities_a", a)
        object.__setattr__(self, "intensities_b", b)
        object.__setattr__(self, "key_intensity", key)
        k_a, k_b = len(a), len(b)
        shapes = {"pairs": (k_a, k_b, 2), "detections": (k_a, k_b, 2, 2),
                  "errors": (k_a, k_b, 2, 2)}
        for name, shape in shapes.items():
            value = np.array(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
            if np.any(value < 0) or not np.all(np.isfinite(value)):
                raise ValueError(f"{name} must be finite and >= 0")
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        if np.any(self.errors > self.detections):
            raise ValueError("errors cannot exceed detections in any class")

    @property
    def n_intensities(self) -> tuple[int, int]:
        """(K_a, K_b)."""
        return len(self.intensities_a), len(self.intensities_b)

    def merged(self) -> DecoyObservations:
        """The same observations with ψ⁺ and ψ⁻ merged (kept as the first Bell index)."""
        det = np.zeros_like(self.detections)
        err = np.zeros_like(self.errors)
        det[..., 0] = self.detections.sum(axis=-1)
        err[..., 0] = self.errors.sum(axis=-1)
        return DecoyObservations(self.intensities_a, self.intensities_b, self.pairs, det, err,
                                 self.key_intensity)


@dataclass(frozen=True)
class SinglePhotonBounds:
    """Decoy-state bounds of one block (one Bell state, or both merged).

    ``y11_*_lower`` are per-pulse-pair yields of this block's announcements; ``e11_x_upper`` is
    the decoy bound on the single-photon error rate; ``s11_z_lower`` and ``phase_error_upper``
    concern the key class's realised single-photon-pair detections (their expectations in the
    asymptotic mode). ``bounded_counts`` is the number of Chernoff-bounded counts (0 asymptotic).
    """

    name: str
    n_z: float
    z_errors: float
    qber_z: float
    qber_x: float
    y11_z_lower: float
    y11_x_lower: float
    e11_x_upper: float
    s11_z_lower: float
    phase_error_upper: float
    bounded_counts: int


@dataclass(frozen=True)
class BlockEstimate:
    """A block's bounds, its leakage and its length ⌊…⌋ (may be ≤ 0: the block yields no key)."""

    bounds: SinglePhotonBounds
    leakage_bits: float
    length: int

    @property
    def name(self) -> str:
        return self.bounds.name

    @property
    def kept(self) -> bool:
        return self.length > 0


@dataclass(frozen=True)
class Estimate:
    """The outcome of parameter estimation when a key can be extracted.

    ``secure_length`` = Σ over kept blocks of their lengths; ``per_block`` has one entry per Bell
    state (or one merged entry). ``e11_x_upper`` is the s11-weighted mean of the blocks' bounds
    (for display; lengths use each block's own). ``epsilons`` names every ε (empty asymptotically):
    ``correctness`` (ε_cor), ``prime`` (ε′), ``smoothing`` (ε̂), ``privacy_amplification`` (ε_PA),
    ``parameter_estimation_per_count`` (ε_PE), and per kept block ``parameter_estimation_<block>``
    (its ε_e) and ``beta_<block>`` (its ε_β). ``epsilon_security`` = Σ over kept blocks of
    2(ε′ + 2ε_e + ε̂) + ε_β + ε_PA and ``epsilon_correctness`` = (kept blocks) · ε_cor
    (docs/finite-key.md §4).
    """

    method: str
    secure_length: int
    s11_z_lower: float
    e11_x_upper: float
    qber_z: float
    qber_x: float
    n_z: int
    leakage_bits: float
    per_block: tuple[BlockEstimate, ...]
    epsilons: dict[str, float] = field(default_factory=dict)
    epsilon_security: float = 0.0
    epsilon_correctness: float = 0.0

    def block(self, name: str) -> BlockEstimate:
        for b in self.per_block:
            if b.name == name:
                return b
        raise KeyError(name)


@dataclass(frozen=True)
class Abort:
    """Parameter estimation refuses the round: ``reason`` says why; ``per_block`` carries what was
    computed before the decision (possibly nothing), for traces and metrics."""

    reason: str
    method: str
    per_block: tuple[BlockEstimate, ...] = ()


# --- the bounds --------------------------------------------------------------------------------


def _qber_x(det: np.ndarray, err: np.ndarray, pairs: np.ndarray, key: tuple[int, int]) -> float:
    """X-basis error rate of the key class, or of all X classes pooled when the key intensities
    are never sent in X (four-intensity layout); ``det``/``err`` of shape (K_a, K_b, 2, …)."""
    x_det, x_err = det[key[0], key[1], BASIS_X], err[key[0], key[1], BASIS_X]
    if pairs[key[0], key[1], BASIS_X] <= 0:
        x_det, x_err = det[:, :, BASIS_X], err[:, :, BASIS_X]
    total = float(np.sum(x_det))
    return float(np.sum(x_err)) / total if total > 0 else math.nan


def _check_decoy_method(observations: DecoyObservations, decoy_method: str) -> None:
    problem = decoy_method_problem(decoy_method, observations.n_intensities)
    if problem:
        raise ValueError(f"decoy_method {problem}")


def _unit(i: int, j: int) -> np.ndarray:
    e = np.zeros((3, 3))
    e[i, j] = 1.0
    return e


def _yield_coefficients(ia: Intensities, ib: Intensities) -> np.ndarray:
    """c[i, j] with Y11^L = Σ c_ij Q_ij (the decoy bound is linear in the gains)."""
    return np.array([[single_photon_yield_lower(ia, ib, _unit(i, j)) for j in range(3)]
                     for i in range(3)])


#: Signs of the X error gains in the numerator of e11 (Xu13 Eq. 7): +νν +ωω −νω −ων.
_ERROR_SIGNS = {(NU, NU): 1, (OMEGA, OMEGA): 1, (NU, OMEGA): -1, (OMEGA, NU): -1}


def joint_groups(used: np.ndarray) -> list[np.ndarray]:
    """The groups of classes whose summed counts are bounded jointly: every pair of used classes.

    Fixed before the data are seen (they depend only on which classes were sent), as the
    Chernoff bound on each sum requires. Pairs hold the sums the decoy bounds subtract, e.g. the
    X error gains (ν, o) + (o, ν) of the phase-error bound, whose fluctuations add in quadrature
    rather than linearly when bounded as one count.
    """
    cells = list(zip(*np.nonzero(used), strict=True))
    groups = []
    for x in range(len(cells)):
        for y in range(x + 1, len(cells)):
            g = np.zeros(used.shape, dtype=bool)
            g[cells[x]] = g[cells[y]] = True
            groups.append(g)
    return groups


def joint_constraints(kind: str, counts: np.ndarray, pairs: np.ndarray,
                      groups: Sequence[np.ndarray], mode: str,
                      epsilon_pe: float) -> list[GainConstraint]:
    """One constraint lo ≤ Σ_{c∈G} G_c ≤ hi on the summed gains of each group G.

    With N = min_{c∈G} N_c, X = Σ_c (N / N_c) n_c is a sum of independent variables in [0, 1]
    (each pulse pair of class c adds N/N_c ≤ 1 if it is detected), so the multiplicative
    Chernoff bound holds for it as for a plain count (it needs only E e^{tX_i} ≤ 1 + p_i(e^t − 1),
    true of any X_i in [0, 1]); E[X] = N Σ_c G_c. Asymptotically X itself is taken as exact.
    """
    if not groups:
        return []
    n_min = np.array([pairs[g].min() for g in groups])
    observed = np.array([(m / pairs[g] * counts[g]).sum() for m, g in zip(n_min, groups,
                                                                           strict=True)])
    lo, hi = ((observed, observed) if mode == "asymptotic"
              else chernoff_bounds(observed, epsilon_pe))
    return [GainConstraint(kind, g.astype(np.float64), float(lo[i] / n_min[i]),  # type: ignore[arg-type]
                           float(hi[i] / n_min[i]))
            for i, g in enumerate(groups)]


def _block_bounds(name: str, obs: DecoyObservations, bell: int, mode: str, epsilon_pe: float,
                  decoy_method: str = DEFAULT_DECOY_METHOD) -> SinglePhotonBounds:
    ia, ib = obs.intensities_a, obs.intensities_b
    det = obs.detections[..., bell]
    err = obs.errors[..., bell]
    pairs = obs.pairs
    bounded = 0

    def interval(counts: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal bounded
        if mode == "asymptotic":
            return counts, counts
        lo, hi = chernoff_bounds(counts, epsilon_pe)
        bounded += int(mask.sum())
        return lo, hi

    def gains(counts: np.ndarray, basis: int,
              mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = interval(counts, mask)
        n_pairs = np.where(mask, pairs[..., basis], 1.0)
        return np.where(mask, lo / n_pairs, 0.0), np.where(mask, hi / n_pairs, 0.0)

    if decoy_method in ("lp", "joint"):
        # every class of both bases and every X error gain constrains the yields jointly
        mask = {b: pairs[..., b] > 0 for b in (BASIS_Z, BASIS_X)}
        z_lo, z_hi = gains(det[..., BASIS_Z], BASIS_Z, mask[BASIS_Z])
        x_lo, x_hi = gains(det[..., BASIS_X], BASIS_X, mask[BASIS_X])
        e_lo, e_hi = gains(err[..., BASIS_X], BASIS_X, mask[BASIS_X])
        joint: list[GainConstraint] = []
        if decoy_method == "joint" and mode == "finite":  # exact gains: the sums add nothing
            for kind, counts, basis in (("z", det[..., BASIS_Z], BASIS_Z),
                                        ("x", det[..., BASIS_X], BASIS_X),
                                        ("e", err[..., BASIS_X], BASIS_X)):
                groups = joint_groups(mask[basis])
                joint += joint_constraints(kind, counts, pairs[..., basis], groups, mode,
                                           epsilon_pe)
                bounded += len(groups)
        lp = lp_bounds(ia, ib, np.stack([z_lo, x_lo], -1), np.stack([z_hi, x_hi], -1),
                       np.stack([mask[BASIS_Z], mask[BASIS_X]], -1), e_lo, e_hi, mask[BASIS_X],
                       joint=joint)
        y11 = {BASIS_Z: lp.y11_lower, BASIS_X: lp.y11_lower}
        y11_lower = lp.y11_lower
        error_gain_upper = lp.error_yield11_upper
        e11_upper = lp.e11_upper
    else:
        coef = _yield_coefficients(ia, ib)
        used = coef != 0.0
        y11 = {}
        for basis in (BASIS_Z, BASIS_X):
            q_lo, q_hi = gains(det[..., basis], basis, used)
            y11[basis] = float((coef * np.where(coef > 0, q_lo, q_hi)).sum())
        y11_lower = max(y11[BASIS_Z], y11[BASIS_X])

        err_used = np.zeros((3, 3), dtype=bool)
        for i, j in _ERROR_SIGNS:
            err_used[i, j] = True
        eq_lo, eq_hi = gains(err[..., BASIS_X], BASIS_X, err_used)
        eq = eq_hi.copy()
        for (i, j), sign in _ERROR_SIGNS.items():
            if sign < 0:
                eq[i, j] = eq_lo[i, j]
        error_gain_upper = single_photon_error_upper(ia, ib, eq, 1.0)  # (e11·Y11)^U, ≥ 0
        e11_upper = single_photon_error_upper(ia, ib, eq, y11_lower)

    ka, kb = obs.key_intensity
    p11 = ia[ka] * math.exp(-ia[ka]) * ib[kb] * math.exp(-ib[kb])
    key_pairs = float(pairs[ka, kb, BASIS_Z])
    n_z = float(det[ka, kb, BASIS_Z])
    s_mean = key_pairs * p11 * max(y11_lower, 0.0)
    k_mean = key_pairs * p11 * error_gain_upper
    if mode == "asymptotic":
        s11, k = s_mean, k_mean
    else:
        s11 = min(realised_lower(s_mean, epsilon_pe), n_z)
        k = realised_upper(k_mean, epsilon_pe)
        bounded += 2
    phase = min(k / s11, 0.5) if s11 > 0 else 0.5
    return SinglePhotonBounds(
        name=name, n_z=n_z, z_errors=float(err[ka, kb, BASIS_Z]),
        qber_z=float(err[ka, kb, BASIS_Z]) / n_z if n_z > 0 else math.nan,
        qber_x=_qber_x(det, err, pairs, obs.key_intensity),
        y11_z_lower=y11[BASIS_Z], y11_x_lower=y11[BASIS_X], e11_x_upper=e11_upper,
        s11_z_lower=s11, phase_error_upper=phase, bounded_counts=bounded)


def decoy_bounds(observations: DecoyObservations, mode: Mode = "finite",
                 epsilon_pe: float = SecurityParameters.epsilon_pe,
                 merge_bell_states: bool = False,
                 decoy_method: DecoyMethod = DEFAULT_DECOY_METHOD,
                 ) -> tuple[SinglePhotonBounds, ...]:
    """Single-photon bounds per Bell state (ψ⁺, ψ⁻), or for the merged block.

    ``decoy_method``: ``"analytic"`` (Xu13's closed-form three-intensity bounds, worst case of
    each interval; three intensities per user only, else ``ValueError``) or ``"lp"``
    (``classical.decoy_lp``: all classes of both bases as joint linear constraints on the
    photon-number yields; any number of intensities; never looser, more counts bounded) or
    ``"joint"`` (the LP plus joint Chernoff bounds on every pair of classes' summed counts,
    docs/finite-key.md §2, step 2; never looser than ``"lp"``, more counts bounded).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    _check_decoy_method(observations, decoy_method)
    pairs = observations.pairs
    if observations.n_intensities == (3, 3):
        needed = _yield_coefficients(observations.intensities_a, observations.intensities_b) != 0
        for basis in (BASIS_Z, BASIS_X):
            if np.any(pairs[..., basis][needed] <= 0):
                raise ValueError(f"no pulse pairs in a {'ZX'[basis]}-basis class the bounds need")
    else:  # the LP takes whatever classes there are; it needs the key class and some X pairs
        if pairs[(*observations.key_intensity, BASIS_Z)] <= 0:
            raise ValueError("no pulse pairs in the Z-basis key class")
        if not np.any(pairs[..., BASIS_X] > 0):
            raise ValueError("no pulse pairs in any X-basis class")
    if merge_bell_states:
        return (_block_bounds(MERGED_BLOCK_NAME, observations.merged(), 0, mode, epsilon_pe,
                              decoy_method),)
    return tuple(_block_bounds(name, observations, bell, mode, epsilon_pe, decoy_method)
                 for bell, name in enumerate(BELL_BLOCK_NAMES))


# --- the decision ------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _block_length(bounds: SinglePhotonBounds, leakage: float, mode: str,
                  params: SecurityParameters) -> int:
    value = bounds.s11_z_lower * (1.0 - binary_entropy(bounds.phase_error_upper)) - leakage
    if mode == "finite":
        value -= params.finite_key_cost_bits
    if not math.isfinite(value):  # an undefined bound proves nothing: no key (fail closed)
        return 0
    return math.floor(value)


def estimate(observations: DecoyObservations, leakage_bits: float | Sequence[float],
             mode: Mode = "finite",
             parameters: SecurityParameters | None = None,
             decoy_method: DecoyMethod = DEFAULT_DECOY_METHOD) -> Estimate | Abort:
    """Bound the single-photon pairs and decide the secure length, or abort with a reason.

    ``leakage_bits``: bits disclosed by reconciliation and verification (the leakage ledger),
    either per Bell state ``(λ_ψ⁺, λ_ψ⁻)`` — one key per Bell state, lengths summed — or one number
    for a key reconciled as one block (counts merged over the Bell states). Checks, in order: too
    few key-class detections, or no X detections in (ν, ν) (three intensities) or in any class
    (more); QBER_Z above ``max_qber_z``; Y11^L ≤ 0 in every block; secure length ≤ 0.

    Raises ``ValueError`` for a call that cannot be right whatever was observed: unknown mode or
    decoy method, ``decoy_method="analytic"`` with other than three intensities, bad leakage.
    """
    params = parameters or SecurityParameters()
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    _check_decoy_method(observations, decoy_method)
    method = METHOD_NAMES[mode] + ("" if decoy_method == "analytic" else f"-{decoy_method}")
    per_bell = np.ndim(leakage_bits) > 0
    leak = [float(x) for x in np.atleast_1d(np.asarray(leakage_bits, dtype=np.float64))]
    if len(leak) != (2 if per_bell else 1) or any(x < 0 for x in leak):
        raise ValueError("leakage_bits must be one number >= 0 or a pair (psi+, psi-) of them, "
                         f"got {leakage_bits!r}")

    det, err = observations.detections, observations.errors
    ka, kb = observations.key_intensity
    three = observations.n_intensities == (3, 3)
    n_z = float(det[ka, kb, BASIS_Z].sum())
    if n_z < params.min_key_detections:
        key_name = "(Z, mu, mu)" if three and (ka, kb) == (MU, MU) else f"(Z, {ka}, {kb})"
        return Abort(f"too few counts: {_fmt(n_z)} detections in the key class {key_name}, "
                     f"need at least {params.min_key_detections}", method)
    if three and det[NU, NU, BASIS_X].sum() <= 0:
        return Abort("too few counts: no detections in the X-basis (nu, nu) class", method)
    if not three and det[:, :, BASIS_X].sum() <= 0:
        return Abort("too few counts: no detections in any X-basis class", method)
    z_errors = float(err[ka, kb, BASIS_Z].sum())
    qber_z = z_errors / n_z
    if qber_z > params.max_qber_z:
        return Abort(f"QBER_Z {_fmt(qber_z)} above threshold {_fmt(params.max_qber_z)}", method)

    try:
        bounds = decoy_bounds(observations, mode, params.epsilon_pe,
                              merge_bell_states=not per_bell, decoy_method=decoy_method)
    except ValueError as exc:
        return Abort(f"too few counts: {exc}", method)
    blocks = tuple(BlockEstimate(b, lam, _block_length(b, lam, mode, params))
                   for b, lam in zip(bounds, leak, strict=True))
    if all(b.y11_z_lower <= 0 and b.y11_x_lower <= 0 for b in bounds):
        detail = ", ".join(f"{b.name}: {_fmt(max(b.y11_z_lower, b.y11_x_lower))}" for b in bounds)
        return Abort(f"single-photon yield lower bound <= 0 ({detail})", method, blocks)
    kept = [b for b in blocks if b.kept]
    if not kept:
        detail = ", ".join(f"{b.name}: {b.length}" for b in blocks)
        return Abort(f"secure length <= 0 ({detail})", method, blocks)

    s11 = sum(b.bounds.s11_z_lower for b in blocks)
    e11 = (sum(b.bounds.s11_z_lower * b.bounds.e11_x_upper for b in blocks) / s11
           if s11 > 0 else 0.5)
    qber_x = _qber_x(det, err, observations.pairs, (ka, kb))
    epsilons: dict[str, float] = {}
    eps_sec = eps_cor = 0.0
    if mode == "finite":
        epsilons = {"correctness": params.epsilon_correctness, "prime": params.epsilon_prime,
                    "smoothing": params.epsilon_smoothing,
                    "privacy_amplification": params.epsilon_pa,
                    "parameter_estimation_per_count": params.epsilon_pe}
        for b in kept:
            epsilons[f"parameter_estimation_{b.name}"] = (b.bounds.bounded_counts
                                                          * params.epsilon_pe)
            epsilons[f"beta_{b.name}"] = params.epsilon_beta
            eps_sec += params.block_secrecy(b.bounds.bounded_counts)
            eps_cor += params.epsilon_correctness
    return Estimate(
        method=method, secure_length=sum(b.length for b in kept), s11_z_lower=s11,
        e11_x_upper=e11, qber_z=qber_z, qber_x=qber_x, n_z=int(round(n_z)),
        leakage_bits=sum(leak), per_block=blocks, epsilons=epsilons, epsilon_security=eps_sec,
        epsilon_correctness=eps_cor)


__all__ = [
    "DECOY_METHODS", "DEFAULT_DECOY_METHOD", "MIN_INTENSITIES", "MODES", "Abort", "BlockEstimate",
    "DecoyObservations", "Estimate", "SecurityParameters", "SinglePhotonBounds", "binary_entropy",
    "check_intensity_layout", "decoy_method_problem", "intensity_list_problem", "chernoff_bounds",
    "choose_test_positions", "decoy_bounds", "estimate", "predicted_leakage", "realised_lower",
    "realised_upper"
]
