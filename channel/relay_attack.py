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
which is exact since slots are independent. Sampling is exact thinning, vectorized over
candidates: P(both users get a result | settings, B) ≤ P_a P_b, the largest such probabilities
over the range, so candidates come at geometric gaps of rate P_a P_b and each is kept with its
true probability over that bound; no per-slot Python loop and no optics for the slots skipped.
``attack_class_statistics`` is the exact model the sampler is tested against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from channel.relay import RelayOptics
from channel.rng import keyed_uniforms
from channel.source import FLUCTUATION_CLIP_SIGMAS, JONES

if TYPE_CHECKING:
    from channel.link import FramePhysics, Link
    from channel.settings import SettingsGenerator

ATTACK_MODE = "intercept_resend"
#: The click patterns Charles's electronics fake: ψ⁺ = cH & cV, ψ⁻ = cH & dV.
PATTERN_PSI_PLUS, PATTERN_PSI_MINUS = 0b0011, 0b1001
#: Detectors Charles measures each user's pulse with: (first state of B, second state of B).
ALICE_DETECTORS, BOB_DETECTORS = (0, 1), (2, 3)
#: Candidates handled per vectorized pass (bounds the memory of a pass).
CHUNK = 1 << 21


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


def sample_attack(link: Link, physics: FramePhysics, alice: SettingsGenerator,
                  bob: SettingsGenerator, start: int, stop: int, attack: RelayAttack,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(slots, click patterns) Charles fakes in ``[start, stop)`` under ``attack``."""
    relay, src_a, src_b = link.relay, link.source_a, link.source_b
    mu_a = src_a.emitted_mean_photon_numbers(alice.plan)
    mu_b = src_b.emitted_mean_photon_numbers(bob.plan)
    bound = (result_bound(relay, float(physics.transmittance_a.max() * mu_a.max()
                                       * src_a.max_fluctuation_factor))
             * result_bound(relay, float(physics.transmittance_b.max() * mu_b.max()
                                         * src_b.max_fluctuation_factor)))
    out_slots, out_patterns = [], []
    if bound <= 0.0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    eff, dark = relay.efficiencies, relay.dark_count_probabilities
    position = start - 1
    while True:
        gaps = rng.geometric(bound, size=CHUNK)
        slots = position + np.cumsum(gaps, dtype=np.int64)
        position = int(slots[-1])
        slots = slots[slots < stop]
        slots = slots[attack.attacked(slots)]
        if slots.size:
            kept, patterns = _candidates(slots, physics, alice, bob, mu_a, mu_b, link, eff, dark,
                                         bound, rng)
            out_slots.append(kept)
            out_patterns.append(patterns)
        if position >= stop:
            break
    if not out_slots:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return np.concatenate(out_slots), np.concatenate(out_patterns).astype(np.uint8)


def _fluctuation(rng: np.random.Generator, rel: float, n: int) -> np.ndarray | float:
    if rel == 0.0:
        return 1.0
    return 1.0 + rel * np.clip(rng.normal(size=n), -FLUCTUATION_CLIP_SIGMAS,
                               FLUCTUATION_CLIP_SIGMAS)


def _candidates(slots, physics, alice, bob, mu_a, mu_b, link, eff, dark, bound,
                rng):  # type: ignore[no-untyped-def]
    """Keep each candidate with P(both users get a result)/bound, then draw the results and
    apply the announcement rule; the kept slots and their faked patterns."""
    n = slots.size
    fi = (slots >> physics.frame_bits) - physics.first_frame
    sa = alice.settings_at(slots)
    bob_slots = slots + physics.bob_slot_offset[fi]
    present = bob_slots >= 0
    sb = bob.settings_at(np.where(present, bob_slots, 0))
    m_a = (physics.transmittance_a[fi] * mu_a[sa.intensity]
           * _fluctuation(rng, link.source_a.intensity_fluctuation_rel, n))
    m_b = (physics.transmittance_b[fi] * mu_b[sb.intensity] * present
           * _fluctuation(rng, link.source_b.intensity_fluctuation_rel, n))
    bit_a = sa.bit ^ (rng.random(n) < link.source_a.bit_flip_probability)
    bit_b = sb.bit ^ (rng.random(n) < link.source_b.bit_flip_probability)
    u = np.einsum("nij,nj->ni", physics.unitary_a[fi], JONES[sa.basis, bit_a.astype(np.uint8)])
    v = np.einsum("nij,nj->ni", physics.unitary_b[fi], JONES[sb.basis, bit_b.astype(np.uint8)])
    eve = rng.integers(0, 2, size=n)
    a0, a1, a2 = _result_probabilities(m_a, _overlap0(u, eve), eff, dark, ALICE_DETECTORS)
    b0, b1, b2 = _result_probabilities(m_b, _overlap0(v, eve), eff, dark, BOB_DETECTORS)
    pa, pb = a0 + a1 + a2, b0 + b1 + b2
    keep = rng.random(n) * bound < pa * pb
    ra = _draw_result(rng, a0[keep], a1[keep], a2[keep])
    rb = _draw_result(rng, b0[keep], b1[keep], b2[keep])
    eve, slots = eve[keep], slots[keep]
    label_plus = np.where(eve == 1, ra == rb, rng.random(ra.size) < 0.5)
    announced = (eve == 1) | (ra != rb)
    patterns = np.where(label_plus, PATTERN_PSI_PLUS, PATTERN_PSI_MINUS)
    return slots[announced], patterns[announced]


def _draw_result(rng: np.random.Generator, p0: np.ndarray, p1: np.ndarray,
                 p2: np.ndarray) -> np.ndarray:
    """A user's result (0 or 1) given that at least one of the two detectors clicked: only the
    first → 0, only the second → 1, both → a fair coin."""
    u = rng.random(p0.size) * (p0 + p1 + p2)
    coin = rng.random(p0.size) < 0.5
    return np.where(u < p0, 0, np.where(u < p0 + p1, 1, coin.astype(np.int64)))


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
