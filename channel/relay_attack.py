"""The relay's intercept–resend attack (``malicious_relay``, ``mode: intercept_resend``), in nature.

Charles's optics, not his software, attack: for each attacked slot he picks one basis B, Z or X
with probability ½ each, turns each user's pulse with a wave plate and measures it with two of his
own detectors (Alice's on cH for the first state of B, cV for the second; Bob's on dH, dV), each
detector clicking independently with 1 − (1 − p_d) e^{−η n}, n the pulse's mean photon number
reaching it. A user's result is the state whose detector clicked (a double click gives a random
one); no click, no result. When both users gave a result, his electronics fake the click pattern of
the Bell state that is consistent with the results:

* B = Z: results different → ψ⁺ or ψ⁻ with probability ½ each; results equal → nothing (no Bell
  state has equal Z outcomes);
* B = X: results equal → ψ⁺, different → ψ⁻.

ψ⁺ is faked as a coincidence of cH and cV, ψ⁻ of cH and dV, at the slot's time, so Charles's
unchanged software decodes them. For a user's sifted pair in the basis Charles guessed the
announcement is right; in the other basis his results are random, so the users' bits disagree
half the time: QBER_Z and QBER_X near 1/3 and 1/6 for weak pulses (docs/physics.md §9).

``fraction`` is the share of slots attacked, selected by a keyed hash of the slot
(``channel.rng.keyed_uniforms``), the same whatever batch a slot comes in; the other slots go
through the honest optics (``channel.samplers``), whose records of attacked slots are dropped,
which is exact since slots are independent. Sampling is exact thinning in a numba kernel
(``attack_kernel``, driven by ``channel.samplers``): P(both users get a result | settings, B)
≤ P_a P_b, the largest such probabilities over the range (``attack_bound``), so candidates come
at geometric gaps of rate P_a P_b and each is kept with its true probability over that bound;
nothing is evaluated for the slots skipped.
``attack_class_statistics`` is the exact model the sampler is tested against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from channel.relay import RelayOptics
from channel.rng import hash2, keyed_uniforms, next_normal, next_uniform, to_unit
from channel.settings import lookup_bit_hk, lookup_combo_rk
from channel.source import FLUCTUATION_CLIP_SIGMAS, JONES

if TYPE_CHECKING:
    from channel.link import FramePhysics, Link
    from channel.settings import SettingsGenerator

ATTACK_MODE = "intercept_resend"
#: The click patterns Charles's electronics fake: ψ⁺ = cH & cV, ψ⁻ = cH & dV.
PATTERN_PSI_PLUS, PATTERN_PSI_MINUS = 0b0011, 0b1001
#: Detectors Charles measures each user's pulse with: (first state of B, second state of B).
ALICE_DETECTORS, BOB_DETECTORS = (0, 1), (2, 3)


def is_relay_attack(kind: str, params: Mapping[str, Any]) -> bool:
    """Whether a fault is the relay's optical intercept–resend (nature's to emulate)."""
    return kind == "malicious_relay" and params.get("mode") == ATTACK_MODE


@dataclass(frozen=True)
class RelayAttack:
    """An active attack: the share of slots attacked and the key of the hash that picks them."""

    name: str
    fraction: float
    key: int

    def attacked(self, slots: np.ndarray) -> np.ndarray:
        """Which of ``slots`` (int64) are attacked."""
        if self.fraction >= 1.0:
            return np.ones(slots.size, bool)
        return keyed_uniforms(np.uint64(self.key), np.ascontiguousarray(slots, np.int64)) \
            < self.fraction


def _result_probabilities(m: np.ndarray, overlap0: np.ndarray, eff: np.ndarray,
                          dark: np.ndarray, dets: tuple[int, int]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(only the first detector clicks), P(only the second), P(both), for a pulse of mean photon
    number ``m`` whose share ``overlap0`` goes to the first detector (the rest to the second)."""
    k0, k1 = dets
    q0 = (1.0 - dark[k0]) * np.exp(-eff[k0] * m * overlap0)
    q1 = (1.0 - dark[k1]) * np.exp(-eff[k1] * m * (1.0 - overlap0))
    return (1.0 - q0) * q1, q0 * (1.0 - q1), (1.0 - q0) * (1.0 - q1)


def _overlap0(state: np.ndarray, eve_basis: np.ndarray) -> np.ndarray:
    """|⟨first state of B | state⟩|² for Jones vectors ``state`` (n, 2) and bases B (n,)."""
    first = JONES[eve_basis, 0]  # (n, 2), real
    return np.abs((np.conj(first) * state).sum(axis=-1)) ** 2


def result_bound(relay: RelayOptics, light: float) -> float:
    """The largest P(a user gets a result) for total mean photon number ``light`` at Charles:
    1 − (1 − d)² e^{−η·light}, d and η the largest dark probability and efficiency."""
    d = float(relay.dark_count_probabilities.max())
    eta = float(relay.efficiencies.max())
    return float(1.0 - (1.0 - d) ** 2 * np.exp(-eta * light))


def attack_bound(link: Link, physics: FramePhysics, alice: SettingsGenerator,
                 bob: SettingsGenerator) -> float:
    """P_a P_b: a bound on P(both users get a result) for every slot, setting and basis of the
    range (brightest intensity, fluctuation and transmittance of each arm)."""
    light_a = float(physics.transmittance_a.max()
                    * link.source_a.emitted_mean_photon_numbers(alice.plan).max()
                    * link.source_a.max_fluctuation_factor)
    light_b = float(physics.transmittance_b.max()
                    * link.source_b.emitted_mean_photon_numbers(bob.plan).max()
                    * link.source_b.max_fluctuation_factor)
    return result_bound(link.relay, light_a) * result_bound(link.relay, light_b)


@njit(cache=True, inline="always")
def _user_state(slot, user, frame_bits, rng_state):  # pragma: no cover - numba
    """A user's sent (basis, prepared bit, mean photon number) at ``slot``: the settings from
    the counter-based generator, the encoder's flip and the intensity's fluctuation drawn."""
    combo = lookup_combo_rk(slot, user.first_frame, user.round_keys, user.cum_counts,
                            frame_bits)
    bit = lookup_bit_hk(slot, user.bit_key)
    if user.flip_probability > 0.0 and next_uniform(rng_state) <= user.flip_probability:
        bit ^= 1
    mu = user.mean_photon_numbers[combo >> 1]
    if user.fluctuation_rel > 0.0:
        mu *= 1.0 + user.fluctuation_rel * min(max(next_normal(rng_state),
                                                   -FLUCTUATION_CLIP_SIGMAS),
                                               FLUCTUATION_CLIP_SIGMAS)
    return combo & 1, bit, mu


@njit(cache=True, inline="always")
def _no_clicks(unit, fi, jones, basis, bit, eve, m, eff, dark, k0, k1):  # pragma: no cover
    """P(detector k0 stays dark), P(k1 stays dark) for a pulse of mean photon number ``m`` in
    state ``jones[basis, bit]`` after the unitary of frame ``fi``, measured in basis ``eve``."""
    h = unit[fi, 0, 0] * jones[basis, bit, 0] + unit[fi, 0, 1] * jones[basis, bit, 1]
    v = unit[fi, 1, 0] * jones[basis, bit, 0] + unit[fi, 1, 1] * jones[basis, bit, 1]
    amp = np.conj(jones[eve, 0, 0]) * h + np.conj(jones[eve, 0, 1]) * v
    c = amp.real * amp.real + amp.imag * amp.imag
    return ((1.0 - dark[k0]) * np.exp(-eff[k0] * m * c),
            (1.0 - dark[k1]) * np.exp(-eff[k1] * m * (1.0 - c)))


@njit(cache=True, inline="always")
def _result(q0, q1, rng_state):  # pragma: no cover - numba
    """A result given at least one click: only the first detector → 0, only the second → 1,
    both → a fair coin."""
    v = next_uniform(rng_state) * (1.0 - q0 * q1)
    only0 = (1.0 - q0) * q1
    if v <= only0:
        return 0
    if v <= only0 + q0 * (1.0 - q1):
        return 1
    return 1 if next_uniform(rng_state) <= 0.5 else 0


@njit(cache=True)
def attack_kernel(position, stop, bound, rng_state, frames, alice, bob, eff, dark, jones,
                  select_key, fraction, out_slot, out_pattern):  # pragma: no cover - numba
    """Thinning over ``[position, stop)``: candidates at geometric gaps of rate ``bound``, those
    the attack does not select skipped (the keyed hash of ``RelayAttack.attacked``), each kept
    with P(both users get a result)/``bound``, then the results drawn and the rule applied.
    ``frames``, ``alice``, ``bob``: the fast sampler's ``FrameArrays`` and ``UserArrays``.
    Returns (next position, records written)."""
    log_keep = np.log1p(-bound) if bound < 1.0 else -np.inf
    n_out = 0
    s = position
    bob_off = frames.bob_slot_offset
    while n_out < out_slot.size:
        if bound < 1.0:
            s += np.int64(np.log(next_uniform(rng_state)) / log_keep)
        if s >= stop:
            return stop, n_out
        cur = s
        s += 1
        if fraction < 1.0 and to_unit(hash2(select_key, np.uint64(cur))) >= fraction:
            continue
        fi = (cur >> frames.frame_bits) - frames.first_frame
        eve = 1 if next_uniform(rng_state) <= 0.5 else 0
        basis_a, bit_a, mu_a = _user_state(cur, alice, frames.frame_bits, rng_state)
        qa0, qa1 = _no_clicks(frames.unitary_a, fi, jones, basis_a, bit_a, eve,
                              frames.transmittance_a[fi] * mu_a, eff, dark, 0, 1)
        bs = cur + bob_off[fi]
        qb0, qb1 = 1.0 - dark[2], 1.0 - dark[3]  # no pulse from Bob before his first slot
        if bs >= 0:
            basis_b, bit_b, mu_b = _user_state(bs, bob, frames.frame_bits, rng_state)
            qb0, qb1 = _no_clicks(frames.unitary_b, fi, jones, basis_b, bit_b, eve,
                                  frames.transmittance_b[fi] * mu_b, eff, dark, 2, 3)
        if next_uniform(rng_state) * bound > (1.0 - qa0 * qa1) * (1.0 - qb0 * qb1):
            continue
        ra = _result(qa0, qa1, rng_state)
        rb = _result(qb0, qb1, rng_state)
        if eve == 1:
            plus = ra == rb
        elif ra == rb:
            continue
        else:
            plus = next_uniform(rng_state) <= 0.5
        out_slot[n_out] = cur
        out_pattern[n_out] = PATTERN_PSI_PLUS if plus else PATTERN_PSI_MINUS
        n_out += 1
    return s, n_out


def attack_class_statistics(basis_a: int, basis_b: int, mu_a: float, mu_b: float,
                            transmittance_a: float, transmittance_b: float,
                            unitary_a: np.ndarray, unitary_b: np.ndarray, relay: RelayOptics,
                            flip_a: float = 0.0, flip_b: float = 0.0
                            ) -> tuple[float, float, float, float]:
    """Exactly, per attacked slot whose users sent these bases and intensities (bits uniform,
    each user's encoder flipping its prepared state with ``flip_*``): P(announced), P(announced
    and the users' bits disagree after Bob's flip, in a matched basis; 0 when the bases differ),
    P(ψ⁺), P(ψ⁻). Sums over the users' bits, the encoder flips, Charles's basis and the
    users' results of the sampler's law."""
    eff, dark = relay.efficiencies, relay.dark_count_probabilities
    gain = error = plus = minus = 0.0
    for bit_a in (0, 1):
        for bit_b in (0, 1):
            for sent_a, wa in ((bit_a, 1 - flip_a), (1 - bit_a, flip_a)):
                for sent_b, wb in ((bit_b, 1 - flip_b), (1 - bit_b, flip_b)):
                    u = unitary_a @ JONES[basis_a, sent_a]
                    v = unitary_b @ JONES[basis_b, sent_b]
                    for eve in (0, 1):
                        w = 0.25 * wa * wb * 0.5
                        ra = _results(transmittance_a * mu_a, u, eve, eff, dark, ALICE_DETECTORS)
                        rb = _results(transmittance_b * mu_b, v, eve, eff, dark, BOB_DETECTORS)
                        for oa in (0, 1):
                            for ob in (0, 1):
                                p = w * ra[oa] * rb[ob]
                                if eve == 1:
                                    states = ((1.0, oa == ob),)
                                elif oa != ob:
                                    states = ((0.5, True), (0.5, False))
                                else:
                                    continue
                                for share, is_plus in states:
                                    q = p * share
                                    gain += q
                                    plus += q if is_plus else 0.0
                                    minus += 0.0 if is_plus else q
                                    flip = not (basis_a == 1 and is_plus)
                                    if basis_a == basis_b and bit_a != (bit_b ^ flip):
                                        error += q
    return gain, error, plus, minus


def _results(m: float, state: np.ndarray, eve: int, eff: np.ndarray, dark: np.ndarray,
             dets: tuple[int, int]) -> tuple[float, float]:
    """P(result 0), P(result 1) of one user's pulse measured in basis ``eve``."""
    o0 = float(_overlap0(state[None], np.array([eve]))[0])
    p0, p1, p2 = (float(x[0]) for x in _result_probabilities(np.array([m]), np.array([o0]),
                                                             eff, dark, dets))
    return p0 + p2 / 2, p1 + p2 / 2
