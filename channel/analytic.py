"""The analytic model: what the detection statistics must be (docs/physics.md §5–§6).

* Ma–Razavi closed forms for the Z and X bases (flip-model misalignment e_d), and the
  single-photon-pair yield and phase error ("infinite decoys").
* The general exact formula (§5) for arbitrary polarization unitaries, per-detector efficiency and
  dark counts, and mode overlap γ: the ground truth the samplers are checked against.

Conventions: ``eta_a``/``eta_b`` are *total* transmittances including detector efficiency when
used with the closed forms (η_a = η_d·10^(−αL_a/10)); the general formula takes fiber
transmittances and per-detector efficiencies separately. Gains are per pulse pair of the given
basis and intensities, averaged over the four bit combinations, ψ⁺ and ψ⁻ both counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from channel.relay import N_DETECTORS
from channel.settings import BASIS_X, BASIS_Z
from channel.source import JONES

ArrayLike = np.ndarray | float


def binary_entropy(p: ArrayLike) -> np.ndarray:
    """h(p) in bits, with h(0) = h(1) = 0, vectorized; values outside [0, 1] are clipped."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    out = np.zeros_like(p)
    inside = (p > 0) & (p < 1)
    q = p[inside]
    out[inside] = -q * np.log2(q) - (1 - q) * np.log2(1 - q)
    return out


def arm_transmittance(length_km: ArrayLike, attenuation_db_per_km: float = 0.2,
                      extra_loss_db: float = 0.0) -> np.ndarray:
    return 10.0 ** (-(np.asarray(length_km) * attenuation_db_per_km + extra_loss_db) / 10.0)


# --- Ma & Razavi closed forms (App. B) ------------------------------------------------------


def mr_z_basis(eta_a: ArrayLike, eta_b: ArrayLike, mu_a: ArrayLike, mu_b: ArrayLike,
               dark_count_probability: float, misalignment: float) -> tuple[np.ndarray, np.ndarray]:
    """(Q_Z, E_Z) for Z-basis pulse pairs (§6)."""
    pd = dark_count_probability
    ma, mb = np.asarray(eta_a) * mu_a, np.asarray(eta_b) * mu_b
    mu_p = ma + mb
    x = np.sqrt(ma * mb) / 2
    q_c = 2 * (1 - pd) ** 2 * np.exp(-mu_p / 2) * (1 - (1 - pd) * np.exp(-ma / 2)) * (
        1 - (1 - pd) * np.exp(-mb / 2))
    q_e = 2 * pd * (1 - pd) ** 2 * np.exp(-mu_p / 2) * (np.i0(2 * x) - (1 - pd) * np.exp(-mu_p / 2))
    q = q_c + q_e
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(q > 0, (misalignment * q_c + (1 - misalignment) * q_e) / q, 0.0)
    return q, e


def mr_x_basis(eta_a: ArrayLike, eta_b: ArrayLike, mu_a: ArrayLike, mu_b: ArrayLike,
               dark_count_probability: float, misalignment: float) -> tuple[np.ndarray, np.ndarray]:
    """(Q_X, E_X) for X-basis pulse pairs (§6)."""
    pd = dark_count_probability
    ma, mb = np.asarray(eta_a) * mu_a, np.asarray(eta_b) * mu_b
    mu_p = ma + mb
    x = np.sqrt(ma * mb) / 2
    y = (1 - pd) * np.exp(-mu_p / 4)
    q = 2 * y**2 * (1 + 2 * y**2 - 4 * y * np.i0(x) + np.i0(2 * x))
    eq = q / 2 - 2 * (0.5 - misalignment) * y**2 * (np.i0(2 * x) - 1)
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
    """e11^X (§6)."""
    y11 = single_photon_yield(eta_a, eta_b, dark_count_probability)
    ea, eb = np.asarray(eta_a), np.asarray(eta_b)
    return (y11 / 2 - (0.5 - misalignment) * (1 - dark_count_probability) ** 2 * ea * eb / 2) / y11


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


def exact_class_statistics(basis: int, mu_a: float, mu_b: float, transmittance_a: float,
                           transmittance_b: float, unitary_a: np.ndarray | None = None,
                           unitary_b: np.ndarray | None = None,
                           efficiencies: np.ndarray | float = 0.145,
                           dark_count_probabilities: np.ndarray | float = 3e-6,
                           gamma: float = 1.0, flip_misalignment: float = 0.0, *,
                           bell_of_pattern: np.ndarray) -> ClassStatistics:
    """Gain and error rate by the general formula (§5), averaged over the four bit pairs.

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
    bell = bell_of_pattern
    gain = {1: 0.0, 2: 0.0}
    errors = 0.0
    for bit_a in (0, 1):
        for bit_b in (0, 1):
            x, y = detector_fields(mu_a, mu_b, transmittance_a, transmittance_b,
                                   ua @ JONES[basis, bit_a], ub @ JONES[basis, bit_b], eff)
            probs = pattern_probabilities(x, y, gamma, pd) / 4.0
            for c in range(16):
                if bell[c] == 0:
                    continue
                gain[int(bell[c])] += probs[c]
                flip = 0 if (basis == BASIS_X and bell[c] == 1) else 1
                if bit_a != (bit_b ^ flip):
                    errors += probs[c]
    total = gain[1] + gain[2]
    errors = errors + flip_misalignment * (total - 2 * errors)
    return ClassStatistics(total, errors / total if total > 0 else 0.0, gain[1], gain[2])


__all__ = [
    "BASIS_X", "BASIS_Z", "ClassStatistics", "arm_transmittance", "binary_entropy",
    "detector_fields", "exact_class_statistics", "mr_x_basis", "mr_z_basis",
    "pattern_probabilities", "single_photon_phase_error", "single_photon_yield",
]
