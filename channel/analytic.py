"""The analytic model: what the detection statistics must be (docs/physics.md §5–§6).

* Ma–Razavi closed forms for the Z and X bases (flip-model misalignment e_d), and the
  single-photon-pair yield and phase error ("infinite decoys").
* The general exact formula (§5) for arbitrary polarization unitaries, per-detector efficiency and
  dark counts, and mode overlap γ: the ground truth the samplers are checked against; and the
  same for one frame of a link under a game day's faults (``exact_frame_statistics``, §9).

Conventions: ``eta_a``/``eta_b`` are *total* transmittances including detector efficiency when
used with the closed forms (η_a = η_d·10^(−αL_a/10)); the general formula takes fiber
transmittances and per-detector efficiencies separately. Gains are per pulse pair of the given
basis and intensities, averaged over the four bit combinations, ψ⁺ and ψ⁻ both counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from channel.defaults import ATTENUATION_DB_PER_KM, DARK_COUNT_PROBABILITY, DETECTOR_EFFICIENCY
from channel.eavesdropper import DEFAULT_RESEND_MEAN_PHOTON_NUMBER, resend_outcomes
from channel.link import Link
from channel.relay import N_DETECTORS
from channel.settings import BASIS_X, BASIS_Z, SettingsPlan
from channel.source import FLUCTUATION_CLIP_SIGMAS, JONES

ArrayLike = np.ndarray | float


def arm_transmittance(length_km: ArrayLike, attenuation_db_per_km: float = ATTENUATION_DB_PER_KM,
                      extra_loss_db: float = 0.0) -> np.ndarray:
    return 10.0 ** (-(np.asarray(length_km) * attenuation_db_per_km + extra_loss_db) / 10.0)


# --- Ma & Razavi closed forms (App. B) ------------------------------------------------------
#
# Weak light makes the printed forms subtract numbers close to 1 (I₀(2x) − 1, 1 − e^(−m/2),
# 1 + 2y² − 4y·I₀(x) + I₀(2x) ~ m²), and the decoy bounds divide the gains' differences by
# (ν − ω)², so the gains are evaluated as sums of non-negative terms: series for the Bessel
# excesses, expm1 for the exponentials. Each gain is then good to a few ulp at any intensity.

#: Series are summed for (argument/2)² up to this value and Bessel functions called directly
#: above it, where I₀ − 1 and I₀(2x) − 4I₀(x) + 3 lose at most two bits.
_SERIES_MAX = 4.0
_SERIES_TERMS = 18  # first omitted term of either series below 1e-22 relative at _SERIES_MAX
#: (1 − 4^(1−k)) / (k!)², k = 2.._SERIES_TERMS, highest first (Horner order)
_DIP_COEFFS = [(1 - 4.0 ** (1 - k)) / math.factorial(k) ** 2
               for k in range(_SERIES_TERMS, 1, -1)]


def _i0_minus_one(z: np.ndarray) -> np.ndarray:
    """I₀(z) − 1 = Σ_{k≥1} t^k/(k!)², t = (z/2)², without forming I₀(z) for small z."""
    t = (np.asarray(z, dtype=np.float64) / 2) ** 2
    ts = np.minimum(t, _SERIES_MAX)
    acc = np.ones_like(ts)
    for k in range(_SERIES_TERMS, 1, -1):  # t (1 + t/2² (1 + t/3² (1 + …)))
        acc = 1 + ts / k**2 * acc
    large = t > _SERIES_MAX
    if not large.any():
        return ts * acc
    with np.errstate(over="ignore"):
        return np.where(large, np.i0(np.where(large, z, 0.0)) - 1, ts * acc)


def _i0_dip(x: np.ndarray) -> np.ndarray:
    """I₀(2x) − 4 I₀(x) + 3 = Σ_{k≥2} x^{2k} (1 − 4^(1−k))/(k!)² ≥ 0 (orders 0 and 1 cancel)."""
    s = np.asarray(x, dtype=np.float64) ** 2
    ss = np.minimum(s, _SERIES_MAX)
    acc = np.zeros_like(ss)
    for c in _DIP_COEFFS:
        acc = acc * ss + c
    large = s > _SERIES_MAX
    if not large.any():
        return ss * ss * acc
    xl = np.where(large, x, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(large, np.i0(2 * xl) - 4 * np.i0(xl) + 3, ss * ss * acc)


def _click(s: np.ndarray, pd: float) -> np.ndarray:
    """1 − (1 − p_d) e^(−s): a detector fires on a coherent state of mean s (s ≥ 0)."""
    return -np.expm1(-s) + pd * np.exp(-s)


def mr_z_basis(eta_a: ArrayLike, eta_b: ArrayLike, mu_a: ArrayLike, mu_b: ArrayLike,
               dark_count_probability: float, misalignment: float) -> tuple[np.ndarray, np.ndarray]:
    """(Q_Z, E_Z) for Z-basis pulse pairs (§6), broadcast over the arguments.

    Written as Q_C ∝ [1 − (1−p_d)e^(−m_a/2)][1 − (1−p_d)e^(−m_b/2)] and
    Q_E ∝ [I₀(2x) − 1] + [1 − (1−p_d)e^(−μ'/2)], every bracket free of cancellation.
    """
    pd = dark_count_probability
    ma, mb = np.asarray(eta_a) * mu_a, np.asarray(eta_b) * mu_b
    mu_p = ma + mb
    x = np.sqrt(ma * mb) / 2
    pair = 2 * (1 - pd) ** 2 * np.exp(-mu_p / 2)
    q_c = pair * _click(ma / 2, pd) * _click(mb / 2, pd)
    q_e = pd * pair * (_i0_minus_one(2 * x) + _click(mu_p / 2, pd))
    q = q_c + q_e
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(q > 0, (misalignment * q_c + (1 - misalignment) * q_e) / q, 0.0)
    return q, e


def mr_x_basis(eta_a: ArrayLike, eta_b: ArrayLike, mu_a: ArrayLike, mu_b: ArrayLike,
               dark_count_probability: float, misalignment: float) -> tuple[np.ndarray, np.ndarray]:
    """(Q_X, E_X) for X-basis pulse pairs (§6), broadcast over the arguments.

    With g = 1 − y the bracket 1 + 2y² − 4y·I₀(x) + I₀(2x) is regrouped exactly as
    2g² + 4g[I₀(x) − 1] + [I₀(2x) − 4I₀(x) + 3], three non-negative terms, and the error gain
    Q_X/2 − (1 − 2e_d)y²[I₀(2x) − 1] as y²{2g² − 4y[I₀(x) − 1] + 2e_d[I₀(2x) − 1]}, whose
    subtracted term is at most half the first for any intensities.
    """
    pd = dark_count_probability
    ma, mb = np.asarray(eta_a) * mu_a, np.asarray(eta_b) * mu_b
    mu_p = ma + mb
    x = np.sqrt(ma * mb) / 2
    y = (1 - pd) * np.exp(-mu_p / 4)
    g = _click(mu_p / 4, pd)
    excess = _i0_minus_one(x)
    q = 2 * y**2 * (2 * g**2 + 4 * g * excess + _i0_dip(x))
    eq = y**2 * (2 * g**2 - 4 * y * excess + 2 * misalignment * _i0_minus_one(2 * x))
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(q > 0, eq / q, 0.0)
    return q, e


def single_photon_yield(eta_a: ArrayLike, eta_b: ArrayLike,
                        dark_count_probability: float) -> np.ndarray:
    """Y11 (§6), the same in both bases."""
    pd = dark_count_probability
    ea, eb = np.asarray(eta_a), np.asarray(eta_b)
    return (1 - pd) ** 2 * (ea * eb / 2 + (2 * ea + 2 * eb - 3 * ea * eb) * pd
                            + 4 * (1 - ea) * (1 - eb) * pd**2)


def single_photon_phase_error(eta_a: ArrayLike, eta_b: ArrayLike, dark_count_probability: float,
                              misalignment: float) -> np.ndarray:
    """e11^X (§6), e_d on the term η_aη_b/2 of Y11 and 1/2 on its dark-count terms.

    Y11/2 − (1/2 − e_d)(1−p_d)²η_aη_b/2 regrouped so that nothing cancels.
    """
    pd = dark_count_probability
    ea, eb = np.asarray(eta_a), np.asarray(eta_b)
    signal = ea * eb / 2
    noise = (2 * ea + 2 * eb - 3 * ea * eb) * pd + 4 * (1 - ea) * (1 - eb) * pd**2
    return (misalignment * signal + noise / 2) / (signal + noise)


# --- The general exact formula (§5) ---------------------------------------------------------

_POPCOUNT = np.array([bin(i).count("1") for i in range(16)])
_SUBSET_BITS = np.array([[(t >> k) & 1 for k in range(N_DETECTORS)] for t in range(16)], dtype=bool)


def detector_fields(mu_a: float, mu_b: float, transmittance_a: float, transmittance_b: float,
                    state_a: np.ndarray, state_b: np.ndarray,
                    efficiencies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes (x_k, y_k) of Alice's and Bob's light at detectors cH, cV, dH, dV.

    ``state_a``/``state_b`` are the Jones vectors after the fibers (u = U_a û, v = U_b v̂). The field
    at detector k is x_k + y_k e^{iφ} (φ = φ_b − φ_a); efficiencies scale the intensities.
    """
    sa = np.sqrt(transmittance_a * mu_a / 2)
    sb = np.sqrt(transmittance_b * mu_b / 2)
    x = sa * np.array([state_a[0], state_a[1], state_a[0], state_a[1]])
    y = sb * np.array([state_b[0], state_b[1], -state_b[0], -state_b[1]])
    scale = np.sqrt(np.asarray(efficiencies, dtype=np.float64))
    return x * scale, y * scale


def pattern_probabilities(x: np.ndarray, y: np.ndarray, gamma: float,
                          dark_count_probabilities: np.ndarray) -> np.ndarray:
    """P(exactly the detectors in pattern C click), C = 0..15, phase-averaged, exactly.

    F(T) = E_φ[exp(−Σ_{k∈T} n_k)] = exp(−Σ_T(|x_k|²+|y_k|²)) I₀(2γ|Σ_T x_k* y_k|), then
    inclusion–exclusion over the clicking set.
    """
    power = np.abs(x) ** 2 + np.abs(y) ** 2
    cross = np.conj(x) * y
    f = np.array([np.exp(-power[m].sum()) * np.i0(2 * gamma * abs(cross[m].sum()))
                  for m in _SUBSET_BITS])
    q = 1.0 - np.asarray(dark_count_probabilities, dtype=np.float64)
    q_prod = np.array([np.prod(q[m]) for m in _SUBSET_BITS])
    probs = np.empty(16)
    for c in range(16):
        complement = 15 & ~c
        total = 0.0
        s = c
        while True:  # every subset S of C
            u = s | complement
            total += (-1) ** _POPCOUNT[s] * q_prod[u] * f[u]
            if s == 0:
                break
            s = (s - 1) & c
        probs[c] = total
    return probs


@dataclass(frozen=True)
class ClassStatistics:
    """Exact statistics of one (basis, μ_a, μ_b) class: gain and sifted error rate."""

    gain: float
    error_rate: float
    gain_psi_plus: float
    gain_psi_minus: float


#: The Bell-state codes of a ``bell_of_pattern`` table (Charles's software decides; nature's
#: model only reads the table it is given).
_FAILURE, _PSI_PLUS, _PSI_MINUS = 0, 1, 2


def exact_class_statistics(basis: int, mu_a: float, mu_b: float, transmittance_a: float,
                           transmittance_b: float, unitary_a: np.ndarray | None = None,
                           unitary_b: np.ndarray | None = None,
                           efficiencies: np.ndarray | float = DETECTOR_EFFICIENCY,
                           dark_count_probabilities: np.ndarray | float = DARK_COUNT_PROBABILITY,
                           gamma: float = 1.0, flip_misalignment: float = 0.0, *,
                           bell_of_pattern: np.ndarray, attack_a: float = 0.0,
                           attack_b: float = 0.0,
                           resend_mu_a: float = DEFAULT_RESEND_MEAN_PHOTON_NUMBER,
                           resend_mu_b: float = DEFAULT_RESEND_MEAN_PHOTON_NUMBER
                           ) -> ClassStatistics:
    """Gain and error rate by the general formula (§5), averaged over the four bit pairs.

    ``attack_a``/``attack_b``: the share of that user's pulses an intercept–resend eavesdropper
    on the fiber replaces by what she resends (``resend_mu_*``; ``channel.eavesdropper``): the
    pattern law is then the mixture over her outcomes (``resend_outcomes``), each a pair of
    coherent states as §5 takes them.

    ``bell_of_pattern[c]`` is the relay's announcement for click pattern ``c`` in the codes of
    ``Announcement.bell`` (0 fail, 1 ψ⁺, 2 ψ⁻): the decision is the relay software's, so the
    model takes it as given. Sifted error: Alice's bit differs from Bob's after his flip (every
    success except X-basis ψ⁺). ``flip_misalignment`` applies the papers' e_d on top:
    E' = E + e_d(1 − 2E).
    """
    ua = np.eye(2) if unitary_a is None else np.asarray(unitary_a)
    ub = np.eye(2) if unitary_b is None else np.asarray(unitary_b)
    eff = np.broadcast_to(np.asarray(efficiencies, dtype=np.float64), (N_DETECTORS,))
    pd = np.broadcast_to(np.asarray(dark_count_probabilities, dtype=np.float64), (N_DETECTORS,))
    bell = bell_of_pattern  # Charles's codes: 0 failure, 1 ψ⁺, 2 ψ⁻ (classical.sifting's)
    gain = {_PSI_PLUS: 0.0, _PSI_MINUS: 0.0}
    errors = 0.0
    for bit_a in (0, 1):
        for bit_b in (0, 1):
            probs = np.zeros(16)
            for wa, ma, sa in _inputs(mu_a, basis, bit_a, attack_a, resend_mu_a):
                for wb, mb, sb in _inputs(mu_b, basis, bit_b, attack_b, resend_mu_b):
                    x, y = detector_fields(ma, mb, transmittance_a, transmittance_b, ua @ sa,
                                           ub @ sb, eff)
                    probs += wa * wb * pattern_probabilities(x, y, gamma, pd) / 4.0
            for c in range(16):
                if bell[c] == _FAILURE:
                    continue
                gain[int(bell[c])] += probs[c]
                flip = 0 if (basis == BASIS_X and bell[c] == _PSI_PLUS) else 1
                if bit_a != (bit_b ^ flip):
                    errors += probs[c]
    total = gain[_PSI_PLUS] + gain[_PSI_MINUS]
    errors = errors + flip_misalignment * (total - 2 * errors)
    return ClassStatistics(total, errors / total if total > 0 else 0.0, gain[_PSI_PLUS],
                           gain[_PSI_MINUS])


def _inputs(mu: float, basis: int, bit: int, attack: float,
            resend_mu: float) -> list[tuple[float, float, np.ndarray]]:
    """(weight, mean photon number, Jones vector) of a user's pulse at the fiber's input: the
    sent state, or with probability ``attack`` what an eavesdropper resends."""
    sent = [(1.0 - attack, mu, JONES[basis, bit])]
    if attack <= 0.0:
        return sent
    return sent + [(attack * p, m, JONES[b, x])
                   for p, m, b, x in resend_outcomes(mu, basis, bit, resend_mu) if p > 0.0]


def clipped_normal_rule(points: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[g(z)], z standard normal clipped at ±``FLUCTUATION_CLIP_SIGMAS``
    as the samplers clip it: Gauss–Legendre on the interval with the normal density, and the two
    clipped tails as atoms at its ends (16 points: weights sum to 1 within 10⁻⁶)."""
    c = FLUCTUATION_CLIP_SIGMAS
    x, w = np.polynomial.legendre.leggauss(points)
    x, w = c * x, c * w * np.exp(-(c * x) ** 2 / 2) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(c / math.sqrt(2))
    return np.append(x, [-c, c]), np.append(w, [tail, tail])


def exact_frame_statistics(link: Link, plan_a: SettingsPlan, plan_b: SettingsPlan, frame: int,
                           basis: int, intensity_a: int, intensity_b: int, *,
                           bell_of_pattern: np.ndarray) -> ClassStatistics:
    """The exact statistics of a class of pulse pairs that meet in settings frame ``frame`` of
    ``link``, faults included (docs/physics.md §9): that frame's transmittances, unitaries,
    overlap and eavesdropper (``Link.physics``), the relay and sources of the piece the frame
    lies in (``Link.device_segments``): emitted, not nominal, intensities, and the gains
    averaged over a source's intensity fluctuation (``clipped_normal_rule``). Both encoders'
    flips combine into one flip of the sifted bit, e_a + e_b − 2 e_a e_b."""
    size = 1 << link.frame_bits
    ph = link.physics(frame * size, (frame + 1) * size)
    (_, _, piece), = link.device_segments(frame * size, (frame + 1) * size)
    if piece.attack is not None:
        raise ValueError(f"the relay attacks frame {frame} ({piece.attack.name}): its statistics "
                         "are channel.relay_attack.attack_class_statistics, not the honest optics'")
    ea, eb = piece.source_a.bit_flip_probability, piece.source_b.bit_flip_probability
    mu_a = float(piece.source_a.emitted_mean_photon_numbers(plan_a)[intensity_a])
    mu_b = float(piece.source_b.emitted_mean_photon_numbers(plan_b)[intensity_b])
    nodes, weights = clipped_normal_rule()
    one = (np.zeros(1), np.ones(1))
    za, wa = (nodes, weights) if piece.source_a.intensity_fluctuation_rel > 0 else one
    zb, wb = (nodes, weights) if piece.source_b.intensity_fluctuation_rel > 0 else one
    gain = plus = minus = errors = 0.0
    for x, u in zip(za, wa, strict=True):
        for y, v in zip(zb, wb, strict=True):
            st = exact_class_statistics(
                basis, mu_a * (1 + piece.source_a.intensity_fluctuation_rel * x),
                mu_b * (1 + piece.source_b.intensity_fluctuation_rel * y),
                float(ph.transmittance_a[0]), float(ph.transmittance_b[0]), ph.unitary_a[0],
                ph.unitary_b[0], piece.relay.efficiencies, piece.relay.dark_count_probabilities,
                float(ph.gamma[0]), ea + eb - 2 * ea * eb, bell_of_pattern=bell_of_pattern,
                attack_a=float(ph.attack_a[0]), attack_b=float(ph.attack_b[0]),
                resend_mu_a=float(ph.resend_mu_a[0]), resend_mu_b=float(ph.resend_mu_b[0]))
            gain += u * v * st.gain
            plus += u * v * st.gain_psi_plus
            minus += u * v * st.gain_psi_minus
            errors += u * v * st.gain * st.error_rate
    return ClassStatistics(gain, errors / gain if gain > 0 else 0.0, plus, minus)


__all__ = [
    "BASIS_X", "BASIS_Z", "ClassStatistics", "arm_transmittance", "clipped_normal_rule",
    "detector_fields", "exact_class_statistics", "exact_frame_statistics", "mr_x_basis",
    "mr_z_basis", "pattern_probabilities", "single_photon_phase_error", "single_photon_yield",
]
