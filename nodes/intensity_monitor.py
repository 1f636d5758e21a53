"""Decoy-intensity monitor: do a round's per-class detection counts fit the nominal intensities?

A user's decoy bounds are computed for the intensities the settings plan names; a miscalibrated
source (a class emitting a factor × its nominal mean photon number) silently breaks them. The
data the users share after sifting (``classical.estimation.DecoyObservations``: pulse pairs and
kept Bell detections per Alice class × Bob class × basis) shows it: every class's detection
probability is a known function of the light each user's class brings to the relay,
m = T·μ (T the arm's fiber transmittance, μ the class's emitted mean photon number), and the
exact model (docs/physics.md §5) gives it. An arm's transmittance is not trusted (a splice, a bend,
a cut change it), so it is fitted; what a transmittance cannot explain is a change in the *shape*
of a user's classes, m_i ∝ μ_i. The monitor tests exactly that (docs/calibration.md):

* null: m_a,i = T_a μ_a,i and m_b,j = T_b μ_b,j with T_a, T_b free;
* alternative: every class with light has its own free m;
* statistic: the likelihood ratio Λ = 2 (ℓ_alt − ℓ_null) of Poisson counts (detections,
  ψ⁺ and ψ⁻ summed, per class and basis; pairs of two vacua and Z-basis pairs with a vacuum
  left out), χ² with (K_a⁺ − 1) + (K_b⁺ − 1) degrees of freedom under the null (Wilks;
  K⁺ = a user's classes with light); flagged when its p-value is below ``false_alarm``.

Polarization moves the multi-photon coincidences, differently per class, so the test is first
made at the polarization the monitor knows (the configured one until it learns another); when it
rejects, both models are refitted with each arm's polarization free (an SU(2) rotation after
the known one) and that test decides, its polarization becoming the one known.

The fits are Fisher scoring in log-parameters, each iteration one batched evaluation of the
model (vectorized over parameter sets, classes, bases, bits and detector sets). Every result is
a deterministic function of the public observations, the public nominal link and the rounds
checked before, so Alice and Bob, checking the same rounds, reach the same decision.

Which class is off: the counts fix each class's m, never T and μ apart. The suspect is the class
that, alone off its nominal light (one more parameter on the null), explains the counts best; its
factor is relative to the user's other classes. Where two such models explain the counts equally
(a three-intensity user's μ × f and ν × 1/f are the same model), the one implying the
transmittance nearer the nominal is named. docs/calibration.md states these limits.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from channel.analytic import _i0_minus_one, clipped_normal_rule
from channel.clock import mode_overlap, slot_alignment
from channel.fiber import linear_rotation, su2_many
from channel.link import Link
from channel.relay import N_DETECTORS
from channel.source import JONES
from classical.estimation import DecoyObservations

#: Default probability that a healthy round is flagged.
DEFAULT_FALSE_ALARM = 1e-6
USERS = ("alice", "bob")

# Click patterns (bitmask over detectors 0 = cH, 1 = cV, 2 = dH, 3 = dV) Charles announces:
# ψ⁺ = {cH, cV} or {dH, dV}; ψ⁻ = {cH, dV} or {cV, dH} (docs/physics.md §4).
_BELL_PATTERNS = (0b0011, 0b1100, 0b1001, 0b0110)
_SUBSETS = np.array([[(t >> k) & 1 for k in range(N_DETECTORS)] for t in range(16)],
                    dtype=np.float64)  # (16 sets T, 4 detectors)
_SIGN_Y = np.array([1.0, 1.0, -1.0, -1.0])
_PORT = np.array([0, 1, 0, 1])  # polarization component each detector sees
#: Fisher-scoring iterations of a fit at most.
_MAX_ITERATIONS = 60
#: The fits stop once a Fisher-scoring step promises, or makes, less than this gain in
#: log-likelihood (Λ is twice a difference of two: it is then known to about 10⁻², far finer
#: than any threshold).
_LL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class LinkModel:
    """What the users know of their link, nominally: the public configuration.

    ``transmittance_a``/``_b``: fiber transmittance of each arm (detectors excluded), only the
    starting point of the fit; ``efficiencies``/``dark_count_probabilities``: per detector
    (cH, cV, dH, dV); ``rotation_a_rad``/``_b``: each arm's static linear polarization rotation
    (docs/physics.md §3); ``gamma``: the two pulses' mode overlap |γ|;
    ``fluctuation_a``/``_b``: each source's relative intensity fluctuation; ``coincidence_keep``:
    the share of Bell coincidences Charles's window keeps (1 without timing jitter).
    """

    transmittance_a: float
    transmittance_b: float
    efficiencies: tuple[float, ...] = (0.145,) * N_DETECTORS
    dark_count_probabilities: tuple[float, ...] = (3e-6,) * N_DETECTORS
    rotation_a_rad: float = 0.0
    rotation_b_rad: float = 0.0
    gamma: float = 1.0
    fluctuation_a: float = 0.0
    fluctuation_b: float = 0.0
    coincidence_keep: float = 1.0

    def __post_init__(self) -> None:
        for name in ("transmittance_a", "transmittance_b"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        for name in ("efficiencies", "dark_count_probabilities"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != N_DETECTORS or not all(0.0 <= v <= 1.0 for v in value):
                raise ValueError(f"{name} must be {N_DETECTORS} values in [0, 1], got {value}")
            object.__setattr__(self, name, value)
        for name in ("gamma", "coincidence_keep"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("fluctuation_a", "fluctuation_b"):
            value = getattr(self, name)
            if not 0.0 <= value <= 0.2:
                raise ValueError(f"{name} must be in [0, 0.2], got {value}")
        for name in ("rotation_a_rad", "rotation_b_rad"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")

    @property
    def unitary_a(self) -> np.ndarray:
        return linear_rotation(self.rotation_a_rad)

    @property
    def unitary_b(self) -> np.ndarray:
        return linear_rotation(self.rotation_b_rad)

    @classmethod
    def from_link(cls, link: Link, coincidence_window_ps: float | None = None) -> LinkModel:
        """The nominal model of ``link``'s configured devices (its faults and drift left out:
        the users do not know them). A fiber's static rotation must be linear (as a scenario's
        ``rotation_rad`` is). With Charles's ``coincidence_window_ps``, the share of Bell
        coincidences it keeps under the configured timing jitter (docs/physics.md §3, §9): the
        two clicks of pattern {k, l} differ by N(0, σ_k² + σ_l²), kept with probability
        erf(W / √(2(σ_k² + σ_l²))), averaged over the four announced patterns."""
        rotations = []
        for fiber in (link.fiber_a, link.fiber_b):
            u = fiber.static_unitary
            theta = math.atan2(float(u[1, 0].real), float(u[0, 0].real))
            if not np.allclose(u, linear_rotation(theta), atol=1e-12):
                raise ValueError("the monitor models linear static rotations only")
            rotations.append(theta)
        delta_t = float(link.clock_b.error_ps(0.0)) - float(link.clock_a.error_ps(0.0))
        _, residual = slot_alignment(np.array([delta_t]), link.slot_ps)
        gamma = (link.gamma_override if link.gamma_override is not None else
                 float(np.asarray(mode_overlap(residual, link.pulse_rms_ps,
                                               link.detuning_rad_per_ps))[0]))
        keep = 1.0
        if coincidence_window_ps is not None:
            if not coincidence_window_ps > 0:
                raise ValueError(f"coincidence_window_ps must be > 0, got {coincidence_window_ps}")
            var = link.relay.jitters_ps ** 2 + (link.clock_a.jitter_ps ** 2
                                                + link.clock_b.jitter_ps ** 2) / 2
            shares = [math.erf(coincidence_window_ps / math.sqrt(2 * (var[k] + var[m])))
                      if var[k] + var[m] > 0 else 1.0
                      for k, m in ((0, 1), (2, 3), (0, 3), (1, 2))]
            keep = float(np.mean(shares))
        return cls(link.fiber_a.transmittance, link.fiber_b.transmittance,
                   tuple(link.relay.efficiencies), tuple(link.relay.dark_count_probabilities),
                   rotations[0], rotations[1], gamma,
                   link.source_a.intensity_fluctuation_rel,
                   link.source_b.intensity_fluctuation_rel, keep)


@functools.lru_cache(maxsize=16)
def _bell_coefficients(dark_count_probabilities: tuple[float, ...]) -> np.ndarray:
    """c[T] with Σ_T c[T] F(T) = P(an announced pattern clicks): the inclusion–exclusion of
    docs/physics.md §5, P(exactly C) = Σ_{T ⊇ Cᶜ} (−1)^{|T ∩ C|} Π_{k∈T}(1 − p_k) F(T), summed
    over the four announced patterns C."""
    q = 1.0 - np.asarray(dark_count_probabilities, dtype=np.float64)
    coef = np.zeros(16)
    for c in _BELL_PATTERNS:
        complement = 15 & ~c
        for t in range(16):
            if t & complement == complement:
                coef[t] += (-1) ** bin(t & c).count("1") * np.prod(q[_SUBSETS[t] > 0])
    return coef


@functools.lru_cache(maxsize=1)
def _fluctuation_rule() -> tuple[np.ndarray, np.ndarray]:
    return clipped_normal_rule()


def _rule(fluctuation: float) -> tuple[np.ndarray, np.ndarray]:
    return _fluctuation_rule() if fluctuation > 0 else (np.zeros(1), np.ones(1))


def batched_detection_probabilities(m_a: np.ndarray, m_b: np.ndarray, unitary_a: np.ndarray,
                                    unitary_b: np.ndarray, model: LinkModel) -> np.ndarray:
    """:func:`detection_probabilities` for B parameter sets at once: ``m_a`` (B, K_a),
    ``m_b`` (B, K_b), ``unitary_*`` (B, 2, 2); returns (B, K_a, K_b, basis)."""
    za, wa = _rule(model.fluctuation_a)
    zb, wb = _rule(model.fluctuation_b)
    ma = np.asarray(m_a, dtype=np.float64)[..., None] * (1 + model.fluctuation_a * za)
    mb = np.asarray(m_b, dtype=np.float64)[..., None] * (1 + model.fluctuation_b * zb)
    ma, mb = ma.reshape(len(ma), -1), mb.reshape(len(mb), -1)  # (B, Ka·na), (B, Kb·nb)
    eff = np.sqrt(np.asarray(model.efficiencies))
    # unit-light amplitudes at the detectors: x_k = √(m_a/2)·s_k, y_k = √(m_b/2)·t_k
    sa = np.einsum("zij,bkj->zbki", unitary_a, JONES)[..., _PORT] * eff  # (B, basis, bit, 4)
    sb = np.einsum("zij,bkj->zbki", unitary_b, JONES)[..., _PORT] * (eff * _SIGN_Y)
    # per set T of detectors: Σ_T |s|², Σ_T |t|² and |Σ_T s* t|, then scaled by the light
    pa = (np.abs(sa) ** 2) @ _SUBSETS.T  # (B, basis, bit_a, 16)
    pb = (np.abs(sb) ** 2) @ _SUBSETS.T
    cross = np.abs((np.conj(sa)[:, :, :, None, :] * sb[:, :, None, :, :]) @ _SUBSETS.T)
    half_a = (ma / 2)[:, :, None, None, None, None, None]  # (B, Ka, 1, 1, 1, 1, 1)
    half_b = (mb / 2)[:, None, :, None, None, None, None]  # (B, 1, Kb, 1, 1, 1, 1)
    power_t = (half_a * pa[:, None, None, :, :, None, :]
               + half_b * pb[:, None, None, :, None, :, :])  # (B, Ka, Kb, basis, a, b, 16)
    cross_t = np.sqrt(half_a * half_b) * cross[:, None, None]
    # I₀ by its series for the weak light of a round (channel.analytic's), directly above
    f = np.exp(-power_t) * (1.0 + _i0_minus_one(2 * model.gamma * cross_t))
    per_state = f @ _bell_coefficients(model.dark_count_probabilities)
    gains = per_state.mean(axis=(-1, -2))  # (B, Ka·na, Kb·nb, basis)
    gains = gains.reshape(len(gains), -1, za.size, gains.shape[2] // zb.size, zb.size, 2)
    probs = np.einsum("zanbmk,n,m->zabk", gains, wa, wb)
    return model.coincidence_keep * np.maximum(probs, 0.0)


def detection_probabilities(m_a: np.ndarray, m_b: np.ndarray, model: LinkModel,
                            unitary_a: np.ndarray | None = None,
                            unitary_b: np.ndarray | None = None) -> np.ndarray:
    """P(kept Bell detection) per pulse pair, (K_a, K_b, basis): the exact general formula of
    docs/physics.md §5, averaged over the four bit pairs and each source's intensity
    fluctuation, for light m_a = T_a μ_a and m_b = T_b μ_b per class (mean photon numbers at the
    relay's input, detector efficiency excluded). Unitaries default to the model's rotations."""
    ua = model.unitary_a if unitary_a is None else np.asarray(unitary_a, dtype=np.complex128)
    ub = model.unitary_b if unitary_b is None else np.asarray(unitary_b, dtype=np.complex128)
    return batched_detection_probabilities(np.asarray(m_a)[None], np.asarray(m_b)[None],
                                           ua[None], ub[None], model)[0]


# --- maximum likelihood -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    m_a: np.ndarray  # (K_a,) fitted light per class (0 for a vacuum class)
    m_b: np.ndarray
    log_likelihood: float
    iterations: int
    rotations: np.ndarray  # (6,) each arm's rotation vector after its base unitary
    unitaries: tuple[np.ndarray, np.ndarray]  # each arm's unitary: the rotation after the base
    #: how many of the light parameters the counts identify at the starting point: the rank of
    #: the Fisher information restricted to them
    identified: int


def _log_likelihood(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Poisson log-likelihood up to the data's constant, Σ k ln λ − λ (0 ln 0 = 0), over the
    last axis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(k > 0, k * np.log(np.maximum(lam, 1e-300)), 0.0) - lam
    total = terms.sum(axis=-1)
    return np.where(np.isfinite(total), total, -np.inf)


def _fit(k: np.ndarray, n: np.ndarray, mu_a: np.ndarray, mu_b: np.ndarray, model: LinkModel,
         free: tuple[bool | int, bool | int], polarization: bool, start: _Fit | None = None,
         start_rotations: np.ndarray | None = None,
         base: tuple[np.ndarray, np.ndarray] | None = None,
         max_iterations: int = _MAX_ITERATIONS) -> _Fit:
    """Maximum-likelihood light per class by Fisher scoring from the nominal point.

    Parameters: log factors on the nominal m = T_nominal μ: per user, one (``free[user]``
    False: the user's classes share a transmittance), one per class with light (True), or the
    shared one and one more for class ``free[user]`` (an int: that class alone is off); with
    ``polarization``, a rotation vector per arm (SU(2), applied after the arm's ``base``
    unitary, by default the nominal rotation).
    """
    base_a, base_b = base if base is not None else (model.unitary_a, model.unitary_b)
    on_a, on_b = mu_a > 0, mu_b > 0
    des_a, des_b = _design(free[0], on_a), _design(free[1], on_b)
    pa, pb = des_a.shape[1], des_b.shape[1]
    n_par = pa + pb + (6 if polarization else 0)
    nom_a, nom_b = model.transmittance_a * mu_a, model.transmittance_b * mu_b
    use = (n > 0).ravel()
    k_used = k.ravel()[use]

    # light at the relay kept within [e^−60, 50] × nominal, and at most 50 photons: absurd
    # counts (a hostile peer's) then end in a poor fit, not in an overflow
    upper_a = np.log(np.minimum(50.0, 50.0 / max(float(nom_a.max()), 1e-300)))
    upper_b = np.log(np.minimum(50.0, 50.0 / max(float(nom_b.max()), 1e-300)))

    def clip(thetas: np.ndarray) -> np.ndarray:
        out = np.array(thetas, dtype=np.float64)
        out[..., :pa] = np.clip(out[..., :pa], -60.0, upper_a)
        out[..., pa:pa + pb] = np.clip(out[..., pa:pa + pb], -60.0, upper_b)
        return out

    def evaluate(thetas: np.ndarray) -> np.ndarray:
        """Expected counts (B, used classes) of B parameter vectors."""
        m_a = nom_a * np.exp(thetas[:, :pa] @ des_a.T)
        m_b = nom_b * np.exp(thetas[:, pa:pa + pb] @ des_b.T)
        ua = np.broadcast_to(base_a, (len(thetas), 2, 2))
        ub = np.broadcast_to(base_b, (len(thetas), 2, 2))
        if polarization:
            ua = su2_many(thetas[:, pa + pb:pa + pb + 3]) @ ua
            ub = su2_many(thetas[:, pa + pb + 3:]) @ ub
        probs = batched_detection_probabilities(m_a, m_b, ua, ub, model)
        return (n * probs).reshape(len(thetas), -1)[:, use]

    theta = np.zeros(n_par)
    if start is not None:  # a fit of a nested model: its light, and its rotations
        theta[:pa] = np.linalg.lstsq(des_a[on_a], np.log(start.m_a[on_a] / nom_a[on_a]),
                                     rcond=None)[0]
        theta[pa:pa + pb] = np.linalg.lstsq(des_b[on_b], np.log(start.m_b[on_b] / nom_b[on_b]),
                                            rcond=None)[0]
        start_rotations = start.rotations
    if polarization and start_rotations is not None:
        theta[pa + pb:] = start_rotations
    h = 1e-6
    probes = np.vstack([np.zeros(n_par), h * np.eye(n_par)])
    lam = evaluate(theta[None])[0]
    ll = float(_log_likelihood(k_used, lam))
    identified = 0
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        lams = evaluate(theta + probes)
        lam = lams[0]
        jac = ((lams[1:] - lam) / h).T  # (classes, params)
        w = 1.0 / np.maximum(lam, 1e-300)
        if iterations == 1 and jac.size:
            light = jac[:, :pa + pb] * np.sqrt(w)[:, None]
            identified = int(np.linalg.matrix_rank(light, tol=1e-7 * np.abs(light).max()))
        score = jac.T @ ((k_used - lam) * w)
        fisher = jac.T @ (jac * w[:, None])
        moved = False
        # undamped first (flat directions, a rotation the counts do not see, get no step),
        # then Levenberg–Marquardt damped where the quadratic model misleads
        for damping in (0.0, 1e-2, 1.0, 1e2):
            step = np.linalg.lstsq(fisher + damping * np.diag(np.diag(fisher)), score,
                                   rcond=1e-9)[0]
            if float(score @ step) < _LL_TOLERANCE:  # predicted gain in ℓ: nothing to gain
                break
            # the step and its halvings at once; the first that does not lower ℓ wins
            trials = clip(theta + step * (0.5 ** np.arange(8))[:, None])
            lls = _log_likelihood(k_used, evaluate(trials))
            ok = np.flatnonzero(lls > ll)
            if ok.size:
                gain = float(lls[ok[0]]) - ll
                theta, ll, moved = trials[ok[0]], float(lls[ok[0]]), gain >= _LL_TOLERANCE
                break
        if not moved:
            break
    m_a = nom_a * np.exp(des_a @ theta[:pa])
    m_b = nom_b * np.exp(des_b @ theta[pa:pa + pb])
    rotations = theta[pa + pb:] if polarization else np.zeros(6)
    turns = su2_many(rotations.reshape(2, 3))
    unitaries = (turns[0] @ base_a, turns[1] @ base_b)
    return _Fit(m_a, m_b, ll, iterations, rotations, unitaries, identified)


def _design(free: bool | int, on: np.ndarray) -> np.ndarray:
    """A user's design matrix: log m − log(T_nominal μ) = design @ parameters (rows: classes)."""
    count = int(on.sum())
    if free is True:
        return _embed(np.eye(count), on)
    if free is False:
        return _embed(np.ones((count, 1)), on)
    one = np.zeros((on.size, 1))
    one[free] = 1.0
    return np.hstack([_embed(np.ones((count, 1)), on), one])


def _embed(design: np.ndarray, on: np.ndarray) -> np.ndarray:
    """The design's rows placed at the non-vacuum classes, zeros at the vacuum ones."""
    out = np.zeros((on.size, design.shape[1]))
    out[on] = design
    return out


# --- the monitor ------------------------------------------------------------------------------

#: Starting rotations (rotation vectors, rad, Alice's then Bob's) of the polarization fit, after
#: the polarization last learnt: none first, then, if that does not explain the counts (at an
#: aligned point the counts' gradient in a rotation vanishes), a turn of 0.3 rad about each axis
#: of each arm, from which Fisher scoring finds the rotation the counts prefer.
_POLARIZATION_STARTS = np.vstack([np.zeros(6), 0.3 * np.eye(6)])
#: Fisher-scoring iterations from each further start before the best is taken to the end.
_PROBE_ITERATIONS = 8


@dataclass(frozen=True)
class IntensityCheck:
    """One decision of the monitor over the rounds ``round_ids`` (its window).

    ``statistic``: the likelihood ratio Λ of the test that decided (χ² with
    ``degrees_of_freedom`` under the null); ``threshold``: the χ² quantile of ``false_alarm``;
    ``p_value``: P(χ² ≥ Λ). ``polarization_fitted``: the first test, at the polarization the
    monitor has learnt (the nominal one until a polarization fit), rejected, and the decision
    is that of the test with each arm's polarization free; ``nominal_statistic`` is the first
    test's Λ either way. ``suspect``:
    (user, class name) of the class that looks off, and ``factor_estimate`` its emitted mean
    photon number over the nominal one, relative to the user's other classes (both None unless
    flagged). ``transmittance_a``/``_b``: each arm's fiber transmittance fitted under the null;
    ``class_factors_a``/``_b``: every class's fitted light over T_nominal·μ (NaN for a vacuum
    class), under the alternative.
    """

    round_ids: tuple[int, ...]
    flagged: bool
    statistic: float
    threshold: float
    p_value: float
    degrees_of_freedom: int
    false_alarm: float
    suspect: tuple[str, str] | None
    factor_estimate: float | None
    transmittance_a: float
    transmittance_b: float
    class_factors_a: tuple[float, ...]
    class_factors_b: tuple[float, ...]
    polarization_fitted: bool
    nominal_statistic: float
    detections: int

    def summary(self) -> str:
        """One line for a log."""
        rounds = ("the counts given" if not self.round_ids else
                  f"round {self.round_ids[0]}" if len(self.round_ids) == 1 else
                  f"rounds {self.round_ids[0]}-{self.round_ids[-1]}")
        head = (f"intensity monitor, {rounds}: Λ = {self.statistic:.1f} (threshold "
                f"{self.threshold:.1f}, p = {self.p_value:.2g}, {self.detections} detections)")
        if not self.flagged:
            return head + ": consistent with the nominal intensities"
        user, name = self.suspect or ("?", "?")
        return (head + f": MISCALIBRATION suspected, {user}'s class {name!r} at about "
                f"{self.factor_estimate:.3g} × nominal")


def _controls(controls: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """The two controllers' unitaries as a (2, 2, 2) array, checked; identities for None."""
    if controls is None:
        return np.stack([np.eye(2, dtype=np.complex128)] * 2)
    try:
        ctrl = np.array([np.asarray(c, dtype=np.complex128) for c in controls])
    except (TypeError, ValueError):
        raise ValueError("controls must be two 2x2 unitaries (Alice's, Bob's)") from None
    if ctrl.shape != (2, 2, 2) or not np.all(np.isfinite(ctrl)) or not np.allclose(
            ctrl @ ctrl.conj().transpose(0, 2, 1), np.eye(2), rtol=0.0, atol=1e-9):
        raise ValueError("controls must be two 2x2 unitaries (Alice's, Bob's)")
    return ctrl


def _intensities(values: Sequence[float], user: str) -> np.ndarray:
    mu = np.asarray(values, dtype=np.float64)
    if mu.ndim != 1 or mu.size == 0 or not np.all(np.isfinite(mu)) or np.any(mu < 0):
        raise ValueError(f"{user}'s intensities must be finite mean photon numbers >= 0, "
                         f"got {list(values)}")
    if not np.any(mu > 0):
        raise ValueError(f"{user} needs a class with a positive mean photon number")
    return mu


class IntensityMonitor:
    """Checks each round's (or window of rounds') public counts against the nominal intensities.

    ``link``: the nominal link (``LinkModel.from_link`` of the configured devices);
    ``intensities_a``/``_b``: each user's nominal mean photon numbers, in the settings plan's
    class order (``SettingsPlan.mean_photon_numbers``); ``names_a``/``_b``: their class names
    (for the suspect); ``false_alarm``: the probability that a round consistent with the nominal
    model is flagged; ``window_rounds``: how many of the latest rounds' counts are pooled (a
    check is made once the window is full, then every round); ``fit_polarization``: when the
    nominal-polarization test rejects, refit with each arm's polarization free and let that test
    decide (a polarization fault then is not taken for a miscalibration).
    """

    def __init__(self, link: LinkModel, intensities_a: Sequence[float],
                 intensities_b: Sequence[float], names_a: Sequence[str] | None = None,
                 names_b: Sequence[str] | None = None, *,
                 false_alarm: float = DEFAULT_FALSE_ALARM, window_rounds: int = 1,
                 fit_polarization: bool = True) -> None:
        if not isinstance(link, LinkModel):
            raise TypeError(f"link must be a LinkModel, got {type(link).__name__}")
        self.link = link
        self.mu_a = _intensities(intensities_a, "alice")
        self.mu_b = _intensities(intensities_b, "bob")
        self.names_a = self._names(names_a, self.mu_a, "alice")
        self.names_b = self._names(names_b, self.mu_b, "bob")
        if not (isinstance(false_alarm, float | int) and 0.0 < false_alarm < 1.0):
            raise ValueError(f"false_alarm must be in (0, 1), got {false_alarm!r}")
        if isinstance(window_rounds, bool) or not isinstance(window_rounds, int) \
                or window_rounds < 1:
            raise ValueError(f"window_rounds must be an integer >= 1, got {window_rounds!r}")
        self.false_alarm = float(false_alarm)
        self.window_rounds = window_rounds
        self.fit_polarization = bool(fit_polarization)
        #: the most degrees of freedom a check can have (all classes seen)
        self.degrees_of_freedom = (max(int((self.mu_a > 0).sum()) - 1, 0)
                                   + max(int((self.mu_b > 0).sum()) - 1, 0))
        if self.degrees_of_freedom == 0:
            raise ValueError("nothing to monitor: neither user has two classes with light")
        self._window: deque[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = deque(
            maxlen=window_rounds)
        #: each arm's polarization as last learnt (the nominal one until a polarization fit)
        self._base = (self.link.unitary_a, self.link.unitary_b)
        # classes that say nothing about the light: both vacuum, or a Z-basis pair with a
        # vacuum, whose coincidences are the other user's light on a dark count (they would
        # take a dark-count surge for a change of intensity)
        vac_a, vac_b = self.mu_a == 0, self.mu_b == 0
        either = vac_a[:, None] | vac_b[None, :]
        self._ignored = np.stack([either, vac_a[:, None] & vac_b[None, :]], axis=-1)

    @staticmethod
    def _names(names: Sequence[str] | None, mu: np.ndarray, user: str) -> tuple[str, ...]:
        if names is None:
            return tuple(f"class {i}" for i in range(mu.size))
        out = tuple(str(n) for n in names)
        if len(out) != mu.size:
            raise ValueError(f"{user}: {len(out)} class names for {mu.size} intensities")
        return out

    def reset(self) -> None:
        """Forget the window and the polarization learnt (after a recalibration, say)."""
        self._window.clear()
        self._base = (self.link.unitary_a, self.link.unitary_b)

    def expected_detections(self, pairs: np.ndarray, transmittance_a: float,
                            transmittance_b: float) -> np.ndarray:
        """Expected kept detections (K_a, K_b, 2) of ``pairs`` under the nominal intensities
        and polarization with these fiber transmittances."""
        probs = detection_probabilities(transmittance_a * self.mu_a, transmittance_b * self.mu_b,
                                        self.link)
        return np.asarray(pairs, dtype=np.float64) * probs

    @property
    def ignored_classes(self) -> np.ndarray:
        """(K_a, K_b, 2) True where a class is left out of the test: both users' vacuum, or a
        Z-basis pair with a vacuum (dark counts, not light, make its coincidences)."""
        return self._ignored.copy()

    def observe(self, round_id: int, observations: DecoyObservations,
                controls: tuple[np.ndarray, np.ndarray] | None = None) -> IntensityCheck | None:
        """Add a round's observations to the window and check it; None until the window is
        full, while the window mixes rounds sent with different ``controls``, or when it holds
        no detection at all (nothing to judge). ``controls``: the 2×2 unitaries of Alice's and
        Bob's polarization controllers for that round (they act before the fiber); None: none."""
        pairs, detections = self._validated(round_id, observations)
        ctrl = _controls(controls)
        self._window.append((round_id, pairs, detections, ctrl))
        if len(self._window) < self.window_rounds:
            return None
        if not all(np.allclose(c, ctrl, rtol=0.0, atol=1e-12) for *_, c in self._window):
            return None
        ids = tuple(r for r, *_ in self._window)
        n = np.sum([p for _, p, _, _ in self._window], axis=0)
        k = np.sum([d for _, _, d, _ in self._window], axis=0)
        return self.check(n, k, ids, (ctrl[0], ctrl[1]))

    def _validated(self, round_id: int,
                   observations: DecoyObservations) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(round_id, bool) or not isinstance(round_id, int | np.integer) \
                or round_id < 0:
            raise ValueError(f"round_id must be an integer >= 0, got {round_id!r}")
        if self._window and round_id <= self._window[-1][0]:
            raise ValueError(f"round {round_id} observed after round {self._window[-1][0]}: "
                             "rounds must come in increasing order, each once")
        if not isinstance(observations, DecoyObservations):
            raise TypeError("observations must be classical.estimation.DecoyObservations, got "
                            f"{type(observations).__name__}")
        for user, got, want in (("alice", observations.intensities_a, self.mu_a),
                                ("bob", observations.intensities_b, self.mu_b)):
            if len(got) != want.size or not np.allclose(got, want, rtol=1e-12, atol=0.0):
                raise ValueError(f"round {round_id}: {user}'s intensities {list(got)} are not "
                                 f"the monitor's nominal ones {want.tolist()}")
        pairs = np.asarray(observations.pairs, dtype=np.float64)
        detections = np.asarray(observations.detections, dtype=np.float64).sum(axis=-1)
        return pairs, detections

    def check(self, pairs: np.ndarray, detections: np.ndarray, round_ids: tuple[int, ...] = (),
              controls: tuple[np.ndarray, np.ndarray] | None = None) -> IntensityCheck | None:
        """The decision for pooled counts: ``pairs`` (K_a, K_b, 2) pulse pairs with matching
        bases and ``detections`` (K_a, K_b, 2) kept Bell detections (ψ⁺ and ψ⁻ summed); None
        without any detection. ``controls``: as for :meth:`observe`. A polarization fit updates
        the polarization the monitor has learnt (each fiber's, the controllers' taken out),
        from which the next check starts: both users must check the same rounds."""
        ctrl = _controls(controls)
        shape = (self.mu_a.size, self.mu_b.size, 2)
        n = np.asarray(pairs, dtype=np.float64)
        k = np.asarray(detections, dtype=np.float64)
        for name, value in (("pairs", n), ("detections", k)):
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)) or np.any(value < 0):
                raise ValueError(f"{name} must be finite and >= 0")
        if np.any(k > n):
            raise ValueError("detections cannot exceed pulse pairs in any class")
        n = np.where(self._ignored, 0.0, n)
        k = np.where(self._ignored, 0.0, k)
        total = int(round(float(k.sum())))
        if total == 0:
            return None
        fit = functools.partial(_fit, k, n, self.mu_a, self.mu_b, self.link,
                                base=(self._base[0] @ ctrl[0], self._base[1] @ ctrl[1]))
        null = fit(free=(False, False), polarization=False)
        alt = fit(free=(True, True), polarization=False, start=null)
        nominal = max(2.0 * (alt.log_likelihood - null.log_likelihood), 0.0)
        # the light parameters the counts identify: a round may lack a class's pairs, and in
        # the four-intensity layout the signal (Z only) is seen in the (s, s) class alone
        dof = alt.identified - null.identified
        # scipy.stats here, not with the module: every user node imports this module, only a
        # running monitor needs the χ² quantiles, and scipy.stats costs ~0.4 s of a start-up
        from scipy import stats

        threshold = float(stats.chi2.isf(self.false_alarm, dof)) if dof > 0 else math.inf
        statistic, polarized = nominal, False
        if nominal > threshold and self.fit_polarization:
            null, alt, statistic = self._polarization_test(fit, threshold)
            polarized = True
            learnt = (null if statistic <= threshold else alt).unitaries
            self._base = (learnt[0] @ ctrl[0].conj().T, learnt[1] @ ctrl[1].conj().T)
        flagged = statistic > threshold
        suspect, factor = (self._suspect(fit, null, polarized) if flagged
                           else (None, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            fa = np.where(self.mu_a > 0, alt.m_a / (self.link.transmittance_a * self.mu_a), np.nan)
            fb = np.where(self.mu_b > 0, alt.m_b / (self.link.transmittance_b * self.mu_b), np.nan)
        on_a, on_b = self.mu_a > 0, self.mu_b > 0
        return IntensityCheck(
            round_ids=tuple(int(r) for r in round_ids), flagged=bool(flagged),
            statistic=float(statistic), threshold=threshold,
            p_value=float(stats.chi2.sf(statistic, dof)) if dof > 0 else 1.0,
            degrees_of_freedom=dof, false_alarm=self.false_alarm,
            suspect=suspect, factor_estimate=factor,
            transmittance_a=float(null.m_a[on_a][0] / self.mu_a[on_a][0]),
            transmittance_b=float(null.m_b[on_b][0] / self.mu_b[on_b][0]),
            class_factors_a=tuple(float(v) for v in fa),
            class_factors_b=tuple(float(v) for v in fb),
            polarization_fitted=polarized, nominal_statistic=float(nominal), detections=total)

    def _polarization_test(self, fit: functools.partial[_Fit],
                           threshold: float) -> tuple[_Fit, _Fit, float]:
        """Null and alternative with each arm's polarization free, and their Λ."""
        null = fit(free=(False, False), polarization=True, start_rotations=_POLARIZATION_STARTS[0])
        alt = fit(free=(True, True), polarization=True, start=null)
        statistic = max(2.0 * (alt.log_likelihood - null.log_likelihood), 0.0)
        if statistic > threshold:
            # look further: a few steps from each other start, the best of them to the end
            probes = [fit(free=(False, False), polarization=True, start_rotations=start,
                          max_iterations=_PROBE_ITERATIONS) for start in _POLARIZATION_STARTS[1:]]
            probe = max(probes, key=lambda f: f.log_likelihood)  # first of equals
            if probe.log_likelihood > null.log_likelihood:
                probe = fit(free=(False, False), polarization=True, start=probe)
                other = fit(free=(True, True), polarization=True, start=probe)
                # each fit is a point of its model (the alternative nests the null): Λ
                # compares the best of each
                null = max((null, probe), key=lambda f: f.log_likelihood)
                alt = max((alt, other), key=lambda f: f.log_likelihood)
                statistic = max(2.0 * (alt.log_likelihood - null.log_likelihood), 0.0)
        return null, alt, statistic

    def _suspect(self, fit: functools.partial[_Fit], null: _Fit,
                 polarized: bool) -> tuple[tuple[str, str] | None, float | None]:
        """The class that, alone off its nominal light, explains the counts best: the null with
        one more parameter, that class's factor, fitted for each class with light in turn.
        Models that explain the counts equally well (within 1/2 in log-likelihood: a
        three-intensity user's μ × f and ν × 1/f are the same model) are told apart by the
        transmittance they imply, the one nearer the nominal winning (docs/calibration.md)."""
        candidates = []  # (log-likelihood, −|log(T/T_nominal)|, user, class, factor)
        for user, mu, t_nom in ((0, self.mu_a, self.link.transmittance_a),
                                (1, self.mu_b, self.link.transmittance_b)):
            on = np.flatnonzero(mu > 0)
            if on.size < 2:
                continue
            for i in on:
                free: tuple[bool | int, bool | int] = (int(i), False) if user == 0 \
                    else (False, int(i))
                part = fit(free=free, polarization=polarized, start=null)
                m = part.m_a if user == 0 else part.m_b
                other = on[on != i][0]
                t_shared = m[other] / mu[other]
                factor = float(m[i] / (mu[i] * t_shared))
                candidates.append((part.log_likelihood, -abs(math.log(t_shared / t_nom)), user,
                                   int(i), factor))
        if not candidates:
            return None, None
        best_ll = max(c[0] for c in candidates)
        tied = [c for c in candidates if c[0] >= best_ll - 0.5]
        _, _, user, i, factor = max(tied, key=lambda c: c[1])  # first of equals
        names = self.names_a if user == 0 else self.names_b
        return (USERS[user], names[i]), factor


__all__ = ["DEFAULT_FALSE_ALARM", "IntensityCheck", "IntensityMonitor", "LinkModel",
           "batched_detection_probabilities", "detection_probabilities"]


def warm_up_monitor() -> None:
    """Import what a check needs (scipy.stats: ~0.4 s), so that the first round's check does not
    wait for it (a user node calls this in its warm-up thread)."""
    from scipy import stats  # noqa: F401
