"""An intercept–resend eavesdropper on a fiber (the ``intercept_resend`` fault on ``link/…``).

Eve sits at a user's output, before the fiber. She attacks a share ``fraction`` of the slots,
chosen by a keyed hash of the slot (``attack_word``: attacked when its top 53 bits, as a number in
[0, 1), fall below the fraction); the hash's lowest bit is her basis, so both are fixed per slot
and independent of everything the users chose. She measures the user's phase-randomized coherent
pulse (mean μ, polarization û) in her basis with two ideal threshold detectors (efficiency 1, no
dark counts): the photon numbers in her two modes are independent Poisson variables of means
μ|⟨e₀|û⟩|² and μ|⟨e₁|û⟩|², so each detector clicks with 1 − e^(−μ|⟨e_k|û⟩|²). On one click she
resends a phase-randomized coherent pulse of mean ``resend_mean_photon_number`` in the state she
saw; on both she resends one of the two at random; on none, nothing (vacuum). The resent pulse
then travels the fiber like the user's would. An attacked slot's law is therefore a mixture of
coherent-state inputs (``resend_outcomes``), which every sampler and the exact model handle.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from channel.rng import hash2, next_uniform, to_unit

#: Eve's resent pulse's mean photon number when the fault does not say (a typical signal's).
DEFAULT_RESEND_MEAN_PHOTON_NUMBER = 0.5


@njit(cache=True, inline="always")
def attack_word(key: np.uint64, slot: np.int64) -> np.uint64:
    """Eve's keyed hash of a slot: attacked if ``to_unit`` of it < fraction; basis = low bit."""
    return hash2(key, np.uint64(slot))


@njit(cache=True, inline="always")
def is_attacked(word: np.uint64, fraction: float) -> bool:
    return fraction > 0.0 and to_unit(word) < fraction


@njit(cache=True, inline="always")
def _first_mode_share(basis: np.int64, bit: np.int64, eve_basis: np.int64) -> float:
    """|⟨e₀|û⟩|² for the BB84 state (basis, bit) and Eve's basis: 1 or 0 in the same basis, ½ in
    the other."""
    if basis == eve_basis:
        return 1.0 if bit == 0 else 0.0
    return 0.5


@njit(cache=True)
def resend(mu, basis, bit, eve_basis, resend_mu, rng_state):
    """Eve's measurement and resent state for one attacked pulse: (mean photon number, basis,
    bit) of what she sends on (mean 0: nothing)."""
    share = _first_mode_share(basis, bit, eve_basis)
    click0 = next_uniform(rng_state) <= -math.expm1(-mu * share)
    click1 = next_uniform(rng_state) <= -math.expm1(-mu * (1.0 - share))
    if click0 and click1:
        return resend_mu, eve_basis, np.int64(0 if next_uniform(rng_state) <= 0.5 else 1)
    if click0:
        return resend_mu, eve_basis, np.int64(0)
    if click1:
        return resend_mu, eve_basis, np.int64(1)
    return 0.0, eve_basis, np.int64(0)


@njit(cache=True)
def attack_words(slots: np.ndarray, key: np.uint64) -> np.ndarray:  # pragma: no cover - numba
    out = np.empty(slots.size, np.uint64)
    for i in range(slots.size):
        out[i] = attack_word(key, slots[i])
    return out


def attacked_and_basis(slots: np.ndarray, key: int,
                       fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized: which of ``slots`` Eve attacks (``fraction`` per slot) and her basis in each."""
    words = attack_words(np.ascontiguousarray(slots, dtype=np.int64), np.uint64(key))
    unit = (words >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return (fraction > 0) & (unit < fraction), (words & np.uint64(1)).astype(np.int64)


def resend_vectorized(mu: np.ndarray, basis: np.ndarray, bit: np.ndarray, eve_basis: np.ndarray,
                      resend_mu: np.ndarray, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``resend`` over arrays (the reference sampler's form), with numpy's generator."""
    share = np.where(basis == eve_basis, (bit == 0).astype(np.float64), 0.5)
    u = rng.random((3, mu.size))
    click0 = u[0] < -np.expm1(-mu * share)
    click1 = u[1] < -np.expm1(-mu * (1.0 - share))
    seen = click0 | click1
    eve_bit = np.where(click0 & click1, (u[2] >= 0.5).astype(np.int64),
                       np.where(click1, 1, 0))
    return np.where(seen, resend_mu, 0.0), eve_basis, eve_bit


def resend_outcomes(mu: float, basis: int, bit: int,
                    resend_mu: float) -> list[tuple[float, float, int, int]]:
    """The law of what Eve sends for one attacked pulse, her basis averaged: (probability, mean
    photon number, basis, bit); probabilities sum to 1. Vacuum is listed with basis 0, bit 0."""
    out: list[tuple[float, float, int, int]] = []
    for eve_basis in (0, 1):
        share = 1.0 if basis == eve_basis and bit == 0 else (0.0 if basis == eve_basis else 0.5)
        p0, p1 = -math.expm1(-mu * share), -math.expm1(-mu * (1.0 - share))
        both = p0 * p1
        out.append((0.5 * (p0 * (1 - p1) + both / 2), resend_mu, eve_basis, 0))
        out.append((0.5 * (p1 * (1 - p0) + both / 2), resend_mu, eve_basis, 1))
        out.append((0.5 * (1 - p0) * (1 - p1), 0.0, 0, 0))
    return out
