"""Samplers: nature's draw of the relay's detector clicks for a range of slots.

Three samplers with the same output law (docs/physics.md §5, §8):

* ``sample_reference`` — every slot simulated, vectorized numpy over chunks: settings, phases,
  mean photon numbers at the four detectors, independent threshold clicks. Handles detector
  memory (dead time, afterpulsing) with a numba pass over the chunk.
* ``sample_fast`` — exact thinning to coincidences (numba). Whole frames (``_table_kernel``):
  the relative phase φ of a slot's two pulses is uniform and never revealed, so each pair of
  sent states has an exact phase-averaged click-pattern law, tabulated once per frame
  (``_frame_table``, trapezoid rule exact to rounding); candidates are drawn among Alice's
  slots of each intensity (the inverse of her Feistel layout) at that class's largest
  coincidence probability and kept with the exact one, so nothing optical is computed per
  slot. Partial frames and fluctuating intensities (``_fast_kernel``): P(≥2 clicks | φ,
  settings) ≤ B (``coincidence_bound``) for every slot, so candidates are drawn at geometric
  gaps of rate B and each is accepted with P(≥2 | φ, settings)/B, its settings read from the
  counter-based generators; the pattern is then drawn from the exact conditional law. Singles
  are drawn per frame from the exact phase- and settings-averaged marginal (Binomial(N, p̄_k), the
  exact law of i.i.d. slots); their joint law with the coincidence records is not reproduced (they
  are a monitoring quantity) and intensity fluctuation is ignored in them.

* ``sample_skip_empty`` — the same thinning kernel accepting every slot with ≥ 1 click (bound
  1 − (1−d)⁴e^{−ηM}): all clicks are drawn, so singles are exact and jointly distributed with
  the coincidences, at the cost of drawing every single click.

All return ``RelayOutput`` with the records of every slot with ≥ 2 clicks.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

import numpy as np
from numba import njit

from channel.arrays import readonly
from channel.clock import slot_alignment
from channel.eavesdropper import (
    attack_word,
    attacked_and_basis,
    is_attacked,
    resend,
    resend_outcomes,
    resend_vectorized,
)
from channel.link import FramePhysics, Link
from channel.relay import N_DETECTORS, NO_CLICK_TIME, DetectionRecords, RelayOutput
from channel.relay_attack import attack_bound, attack_kernel
from channel.rng import (
    derive_seed,
    feistel_invert_rk,
    feistel_round_keys,
    make_state,
    next_normal,
    next_uniform,
)
from channel.settings import (
    FrameTable,
    SettingsGenerator,
    bit_hash_key,
    lookup_bit_hk,
    lookup_combo_rk,
)
from channel.source import FLUCTUATION_CLIP_SIGMAS, JONES, Source

SAMPLERS = ("fast", "skip-empty", "reference")
_REFERENCE_CHUNK = 1 << 18
_POPCOUNT16 = np.array([bin(i).count("1") for i in range(16)], dtype=np.int64)
_MULTI_PATTERNS = np.array([c for c in range(16) if _POPCOUNT16[c] >= 2], dtype=np.int64)
_ANY_PATTERNS = np.arange(1, 16, dtype=np.int64)


class UnsupportedPhysicsError(ValueError):
    """The requested sampler cannot emulate this configuration exactly."""


# --- the thinning kernels' arguments, grouped (numba passes named tuples as plain structs) ---


class FrameArrays(NamedTuple):
    """``FramePhysics`` as the kernels read it: frame ``first_frame + i`` at index ``i``."""

    frame_bits: int
    first_frame: int
    transmittance_a: np.ndarray  # (n,)
    transmittance_b: np.ndarray
    unitary_a: np.ndarray  # (n, 2, 2) complex
    unitary_b: np.ndarray
    gamma: np.ndarray  # (n,) mode overlap
    bob_slot_offset: np.ndarray  # (n,) int64
    attack_a: np.ndarray  # (n,) share of Alice's pulses an eavesdropper attacks
    attack_b: np.ndarray
    resend_mu_a: np.ndarray  # (n,) the mean photon number she resends
    resend_mu_b: np.ndarray
    attack_key_a: np.uint64  # her keys for choosing the slots (``channel.eavesdropper``)
    attack_key_b: np.uint64


def _frame_arrays(physics: FramePhysics) -> FrameArrays:
    return FrameArrays(physics.frame_bits, physics.first_frame, physics.transmittance_a,
                       physics.transmittance_b, physics.unitary_a, physics.unitary_b,
                       physics.gamma, physics.bob_slot_offset, physics.attack_a,
                       physics.attack_b, physics.resend_mu_a, physics.resend_mu_b,
                       np.uint64(physics.attack_key_a), np.uint64(physics.attack_key_b))


class UserArrays(NamedTuple):
    """One user's settings (a ``FrameTable`` in kernel form) and source imperfections."""

    first_frame: int  # of the tables
    round_keys: np.ndarray  # (n, FEISTEL_ROUNDS) uint64, ``feistel_round_keys`` of the frames
    cum_counts: np.ndarray  # (n, n_combos) int64
    bit_key: np.uint64  # ``bit_hash_key`` of the user's key
    mean_photon_numbers: np.ndarray
    fluctuation_rel: float
    flip_probability: float


def _user_arrays(table: FrameTable, gen: SettingsGenerator, source: Source) -> UserArrays:
    return UserArrays(table.first_frame, feistel_round_keys(table.frame_keys), table.cum_counts,
                      bit_hash_key(gen.key), source.emitted_mean_photon_numbers(gen.plan),
                      float(source.intensity_fluctuation_rel), float(source.bit_flip_probability))


class DetectorArrays(NamedTuple):
    """The detectors, and which click patterns make a record."""

    efficiencies: np.ndarray  # (4,)
    dark_count_probabilities: np.ndarray  # (4,)
    patterns: np.ndarray  # int64 patterns with at least ``min_clicks`` clicks, ascending
    min_clicks: int


_G = TypeVar("_G", bound=tuple)


def _read_only(group: _G) -> _G:
    """``group`` with its arrays as read-only views: the kernels only read them, and one array
    type per field keeps numba to one compiled version (``channel.arrays``)."""
    return type(group)(*(readonly(v) if isinstance(v, np.ndarray) else v for v in group))


# --- common post-processing ------------------------------------------------------------------


def _records(slots: np.ndarray, patterns: np.ndarray, physics: FramePhysics, link: Link,
             rng: np.random.Generator, start: int, stop: int) -> DetectionRecords:
    """Attach click times as the relay's electronics report them: slot time + Alice–Bob
    mid-point offset + the relay clock's error + Gaussian jitter (per frame and detector,
    ``FramePhysics.click_jitter_ps``: the detector's, the relay clock's and the two sources'
    clock jitter in quadrature). One normal per click, none for the detectors that stayed dark
    (their time is ``NO_CLICK_TIME``). Then the slot label of the relay's own clock
    (``relay_labels``)."""
    slots = slots.astype(np.int64)
    patterns = patterns.astype(np.uint8)
    jitters = physics.click_jitter_ps
    n_clicks = int(_POPCOUNT16[patterns].sum()) if jitters.any() else 0
    offsets = physics.residual_offset_ps / 2 + physics.relay_error_ps
    times = _click_times(slots, patterns, physics.frame_bits, physics.first_frame,
                         float(link.slot_ps), offsets, jitters, rng.normal(size=n_clicks))
    if not physics.relay_error_ps.any():
        return DetectionRecords(slots, patterns, times)
    return relay_labels(DetectionRecords(slots, patterns, times), physics, link.slot_ps, start,
                        stop)


def relay_labels(records: DetectionRecords, physics: FramePhysics, slot_ps: float, start: int,
                 stop: int) -> DetectionRecords:
    """The records labelled with the slots of the relay's clock: a relay clock late by Δ
    labels the events of slot s as slot s + round(Δ / slot) (``channel.clock.slot_alignment``).
    A label outside ``[start, stop)`` belongs to a neighbouring batch and is not reported here;
    where two events get one label (the error fell by a slot between frames) only the first is
    reported, one record per slot as the electronics give."""
    frame = (records.slot >> physics.frame_bits) - physics.first_frame
    shift, _ = slot_alignment(physics.relay_error_ps, slot_ps)
    label = records.slot + shift[frame]
    order = np.argsort(label, kind="stable")
    label = label[order]
    keep = (label >= start) & (label < stop)
    keep[1:] &= label[1:] != label[:-1]
    return DetectionRecords(np.ascontiguousarray(label[keep]), records.pattern[order][keep],
                            records.time_ps[order][keep])


@njit(cache=True)
def _click_times(slots, patterns, frame_bits, first_frame, slot_ps, offsets_ps, jitters,
                 normals):  # pragma: no cover - numba
    times = np.empty((slots.size, N_DETECTORS), np.int64)
    use_normals = normals.size > 0
    j = 0
    for i in range(slots.size):
        fi = (slots[i] >> frame_bits) - first_frame
        base = slots[i] * slot_ps + offsets_ps[fi]
        for k in range(N_DETECTORS):
            if (patterns[i] >> k) & 1:
                t = base
                if use_normals:
                    t += normals[j] * jitters[fi, k]
                    j += 1
                times[i, k] = np.int64(np.rint(t))
            else:
                times[i, k] = NO_CLICK_TIME
    return times


def _check_devices(link: Link) -> None:
    """A sampler takes the link's devices as they are: device faults, which change them within a
    range, are applied by ``sample`` (never silently left out)."""
    if link.faults is not None and link.faults.has_device_faults:
        raise ValueError("this link has device faults (relay, sources): sample it with "
                         "channel.samplers.sample, which cuts the range where they change")


def _check_range(start: int, stop: int) -> None:
    if start < 0 or stop <= start:
        raise ValueError(f"slots must be a non-empty range of non-negative indices, "
                         f"got [{start}, {stop})")


def _bob_slot_bounds(physics: FramePhysics, start: int, stop: int) -> tuple[int, int]:
    lo = max(0, start + int(physics.bob_slot_offset.min()))
    hi = max(lo + 1, stop + int(physics.bob_slot_offset.max()))
    return lo, hi


# --- reference sampler ------------------------------------------------------------------------


@njit(cache=True)
def _apply_detector_memory(clicks, slots, dead_slots, afterpulse_p, blocked_until, afterpulse_at,
                           rng_state):
    """Dead time and afterpulsing, in slot order (numba; carries state across chunks)."""
    n = clicks.shape[0]
    for i in range(n):
        s = slots[i]
        for k in range(4):
            c = clicks[i, k] or afterpulse_at[k] == s
            if c and s <= blocked_until[k]:
                c = False
            if c:
                blocked_until[k] = s + dead_slots[k]
                if afterpulse_p[k] > 0 and next_uniform(rng_state) <= afterpulse_p[k]:
                    afterpulse_at[k] = s + dead_slots[k] + 1
            clicks[i, k] = c


def sample_reference(link: Link, alice: SettingsGenerator, bob: SettingsGenerator,
                     start: int, stop: int, seed: int) -> RelayOutput:
    """Simulate every slot in ``[start, stop)`` (the reference sampler)."""
    _check_range(start, stop)
    _check_devices(link)
    physics = link.physics(start, stop)
    rng = np.random.default_rng(seed)
    memory_rng = make_state(derive_seed(seed, "detector memory"))
    relay = link.relay
    eff = relay.efficiencies
    pd = relay.dark_count_probabilities
    dead = np.array([d.dead_time_slots for d in relay.detectors], dtype=np.int64)
    ap = np.array([d.afterpulsing_probability for d in relay.detectors])
    blocked = np.full(4, -1, dtype=np.int64)
    ap_at = np.full(4, -1, dtype=np.int64)
    mu_a_values = link.source_a.emitted_mean_photon_numbers(alice.plan)
    mu_b_values = link.source_b.emitted_mean_photon_numbers(bob.plan)
    singles = np.zeros(N_DETECTORS, dtype=np.int64)
    found_slots, found_patterns = [], []
    for a in range(start, stop, _REFERENCE_CHUNK):
        slots = np.arange(a, min(stop, a + _REFERENCE_CHUNK), dtype=np.int64)
        fi = (slots >> physics.frame_bits) - physics.first_frame
        sa = alice.settings_at(slots)
        bob_slots = slots + physics.bob_slot_offset[fi]
        bob_present = bob_slots >= 0
        sb = bob.settings_at(np.where(bob_present, bob_slots, 0))
        fluct_a = _fluctuation(rng, link.source_a.intensity_fluctuation_rel, slots.size)
        mu_a = mu_a_values[sa.intensity] * fluct_a
        mu_b = (mu_b_values[sb.intensity] * bob_present
                * _fluctuation(rng, link.source_b.intensity_fluctuation_rel, slots.size))
        bit_a = sa.bit ^ (rng.random(slots.size) < link.source_a.bit_flip_probability)
        bit_b = sb.bit ^ (rng.random(slots.size) < link.source_b.bit_flip_probability)
        basis_a, basis_b = sa.basis, sb.basis
        if physics.attacked:  # an eavesdropper's resent pulses replace the users' in her slots
            mu_a, basis_a, bit_a = _intercepted(slots, physics.attack_a[fi],
                                                physics.resend_mu_a[fi], physics.attack_key_a,
                                                mu_a, basis_a, bit_a, rng)
            mu_b, basis_b, bit_b = _intercepted(bob_slots, physics.attack_b[fi] * bob_present,
                                                physics.resend_mu_b[fi], physics.attack_key_b,
                                                mu_b, basis_b, bit_b, rng)
        u = np.einsum("nij,nj->ni", physics.unitary_a[fi], JONES[basis_a, bit_a.astype(np.uint8)])
        v = np.einsum("nij,nj->ni", physics.unitary_b[fi], JONES[basis_b, bit_b.astype(np.uint8)])
        amp_a = np.sqrt(physics.transmittance_a[fi] * mu_a / 2)[:, None]
        amp_b = np.sqrt(physics.transmittance_b[fi] * mu_b / 2)[:, None]
        x = amp_a * np.concatenate([u, u], axis=1)
        y = amp_b * np.concatenate([v, -v], axis=1)
        if link.source_a.phase_randomized or link.source_b.phase_randomized:
            phase = np.exp(2j * np.pi * rng.random(slots.size))[:, None]
        else:
            phase = np.ones((slots.size, 1))
        g = physics.gamma[fi][:, None]
        n_k = (np.abs(x + g * y * phase) ** 2 + (1 - g**2) * np.abs(y) ** 2) * eff
        p_click = 1.0 - (1.0 - pd) * np.exp(-n_k)
        clicks = rng.random((slots.size, N_DETECTORS)) < p_click
        if relay.has_memory:
            _apply_detector_memory(clicks, slots, dead, ap, blocked, ap_at, memory_rng)
        singles += clicks.sum(axis=0)
        multi = clicks.sum(axis=1) >= 2
        found_slots.append(slots[multi])
        found_patterns.append((clicks[multi] * (1 << np.arange(N_DETECTORS))).sum(axis=1))
    slots = np.concatenate(found_slots)
    patterns = np.concatenate(found_patterns).astype(np.uint8)
    return RelayOutput(start, stop, _records(slots, patterns, physics, link, rng, start, stop),
                       singles)


def _intercepted(slots: np.ndarray, fraction: np.ndarray, resend_mu: np.ndarray, key: int,
                 mu: np.ndarray, basis: np.ndarray, bit: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A user's pulses after an eavesdropper (``channel.eavesdropper``): in the slots she
    attacks, the state she resends."""
    hit, eve_basis = attacked_and_basis(slots, key, fraction)
    if not hit.any():
        return mu, basis, bit
    mu, basis, bit = (np.array(mu, dtype=np.float64), basis.astype(np.int64),
                      bit.astype(np.int64))
    new_mu, new_basis, new_bit = resend_vectorized(mu[hit], basis[hit], bit[hit],
                                                   eve_basis[hit], resend_mu[hit], rng)
    mu[hit], basis[hit], bit[hit] = new_mu, new_basis, new_bit
    return mu, basis, bit


def _fluctuation(rng: np.random.Generator, rel: float, n: int) -> np.ndarray | float:
    if rel == 0.0:
        return 1.0
    z = np.clip(rng.normal(size=n), -FLUCTUATION_CLIP_SIGMAS, FLUCTUATION_CLIP_SIGMAS)
    return 1.0 + rel * z


# --- fast sampler -----------------------------------------------------------------------------


@njit(cache=True, inline="always")
def abs2(z):
    return z.real * z.real + z.imag * z.imag


@njit(cache=True, inline="always")
def _slot_bound(min_clicks, dark_max, eff_max, light):
    """max over phases of P(≥ min_clicks clicks) for total light M at the detectors."""
    if min_clicks == 1:  # 1 − Π(1−d_k)e^{−η_k n_k} ≤ 1 − (1−d)^4 e^{−ηM}
        return 1.0 - (1.0 - dark_max) ** 4 * np.exp(-eff_max * light)
    return _multi_click_bound(dark_max, eff_max, light)


@njit(cache=True, inline="always")
def _multi_click_bound(dark_max, eff_max, light):
    """max P(≥2 clicks) over phases for total light M at the detectors (see coincidence_bound)."""
    em = eff_max * light
    return 6.0 * dark_max * dark_max + 3.0 * dark_max * em + 0.375 * em * em


@njit(cache=True, inline="always")
def _launched(unit, fi, jones, basis, bit):
    """A sent state's (H, V) amplitudes after its fiber's unitary in frame ``fi``."""
    return (unit[fi, 0, 0] * jones[basis, bit, 0] + unit[fi, 0, 1] * jones[basis, bit, 1],
            unit[fi, 1, 0] * jones[basis, bit, 0] + unit[fi, 1, 1] * jones[basis, bit, 1])


@njit(cache=True, inline="always")
def _dark_probabilities(xh, xv, yh, yv, inc_h, inc_v, eff, pd, q):
    """``q[k]`` = P(detector k stays dark): fields x ± y at cH, cV, dH, dV (the beam splitter's
    two outputs, each split by polarization) plus the incoherent part of Bob's light."""
    q[0] = (1.0 - pd[0]) * np.exp(-(abs2(xh + yh) + inc_h) * eff[0])
    q[1] = (1.0 - pd[1]) * np.exp(-(abs2(xv + yv) + inc_v) * eff[1])
    q[2] = (1.0 - pd[2]) * np.exp(-(abs2(xh - yh) + inc_h) * eff[2])
    q[3] = (1.0 - pd[3]) * np.exp(-(abs2(xv - yv) + inc_v) * eff[3])


@njit(cache=True, inline="always")
def _fluctuate(mu, rel, rng_state):
    if rel > 0.0:
        mu *= 1.0 + rel * min(max(next_normal(rng_state), -FLUCTUATION_CLIP_SIGMAS),
                              FLUCTUATION_CLIP_SIGMAS)
    return mu


@njit(cache=True, inline="always")
def _candidate(u, cur, fi, combo, mu_a, bs, frames, alice, bob, det, dark_max, eff_max,
               phase_randomized, jones, rng_state, p, q):
    """Accept or reject one candidate slot; its click pattern, or -1 if rejected.

    ``u`` is uniform on (0, bound]: the slot is kept with probability P(≥ min_clicks | φ)/bound.
    It is rejected early, before the optics, when ``u`` exceeds the slot's own bound (which needs
    only the intensities), since P(≥ min_clicks | φ) never does. Alice's intensity is already
    drawn (with its fluctuation); Bob's is read here.
    """
    # Fields are read here, before any branch, so that numba can prune the reference counting of
    # their arrays; read inside the branches below, it cannot, and this path slows markedly.
    trans_a, trans_b, gamma = frames.transmittance_a, frames.transmittance_b, frames.gamma
    unit_a, unit_b, frame_bits = frames.unitary_a, frames.unitary_b, frames.frame_bits
    a_bitkey, a_flip = alice.bit_key, alice.flip_probability
    b_first, b_rk, b_cum = bob.first_frame, bob.round_keys, bob.cum_counts
    b_mu, b_fluct = bob.mean_photon_numbers, bob.fluctuation_rel
    b_bitkey, b_flip = bob.bit_key, bob.flip_probability
    eff, pd = det.efficiencies, det.dark_count_probabilities
    multi_patterns, min_clicks = det.patterns, det.min_clicks
    mu_b = 0.0
    combo_b = 0
    if bs >= 0:
        combo_b = lookup_combo_rk(bs, b_first, b_rk, b_cum, frame_bits)
        mu_b = _fluctuate(b_mu[combo_b >> 1], b_fluct, rng_state)
    light = trans_a[fi] * mu_a + trans_b[fi] * mu_b
    if u > _slot_bound(min_clicks, dark_max, eff_max, light):
        return np.int64(-1)  # cheap rejection: this slot's intensities cannot reach u
    bit = lookup_bit_hk(cur, a_bitkey)
    if a_flip > 0.0 and next_uniform(rng_state) <= a_flip:
        bit ^= 1
    ua0, ua1 = _launched(unit_a, fi, jones, combo & 1, bit)
    vb0 = 0.0 + 0.0j
    vb1 = 0.0 + 0.0j
    if bs >= 0:
        bit_b = lookup_bit_hk(bs, b_bitkey)
        if b_flip > 0.0 and next_uniform(rng_state) <= b_flip:
            bit_b ^= 1
        vb0, vb1 = _launched(unit_b, fi, jones, combo_b & 1, bit_b)
    amp_a = np.sqrt(trans_a[fi] * mu_a * 0.5)
    amp_b = np.sqrt(trans_b[fi] * mu_b * 0.5)
    if phase_randomized:
        phi = 2.0 * np.pi * next_uniform(rng_state)
        ph = np.cos(phi) + 1j * np.sin(phi)
    else:
        ph = 1.0 + 0.0j
    g = gamma[fi]
    # fields at cH, cV, dH, dV: x ± γ y e^{iφ}, plus the incoherent part (1−γ²)|y|²
    xh, xv = amp_a * ua0, amp_a * ua1
    yh, yv = (g * amp_b) * vb0 * ph, (g * amp_b) * vb1 * ph
    inc = (1.0 - g * g) * amp_b * amp_b
    _dark_probabilities(xh, xv, yh, yv, inc * abs2(vb0), inc * abs2(vb1), eff, pd, q)
    p_none = q[0] * q[1] * q[2] * q[3]
    p_one = 0.0
    for k in range(4):
        p[k] = 1.0 - q[k]
        p_one += p[k] * (p_none / q[k]) if q[k] > 0.0 else 0.0
    p_accept = 1.0 - p_none if min_clicks == 1 else 1.0 - p_none - p_one
    chosen = -1
    if u <= p_accept:  # accept with probability P(≥ min_clicks | φ) / bound
        chosen = _draw_pattern(multi_patterns, p, q, next_uniform(rng_state))
    return chosen


@njit(cache=True, inline="always")
def _candidate_under_attack(u, cur, fi, combo, mu_a, bs, frames, alice, bob, det, dark_max,
                            eff_max, phase_randomized, jones, rng_state, p, q):
    """``_candidate`` on a range where an eavesdropper attacks (``channel.eavesdropper``): in
    her slots the pulse she resends replaces the user's before the optics, so the cheap
    rejection waits until the slot's light is known. A kernel of its own (``_fast_kernel``'s
    ``candidate``), so that the healthy path stays as lean."""
    mu_b = 0.0
    combo_b = 0
    if bs >= 0:
        combo_b = lookup_combo_rk(bs, bob.first_frame, bob.round_keys, bob.cum_counts,
                                  frames.frame_bits)
        mu_b = _fluctuate(bob.mean_photon_numbers[combo_b >> 1], bob.fluctuation_rel, rng_state)
    word_a = attack_word(frames.attack_key_a, cur)
    hit_a = is_attacked(word_a, frames.attack_a[fi])
    word_b = attack_word(frames.attack_key_b, bs)
    hit_b = bs >= 0 and is_attacked(word_b, frames.attack_b[fi])
    trans_a, trans_b, g = frames.transmittance_a[fi], frames.transmittance_b[fi], frames.gamma[fi]
    if not (hit_a or hit_b) and u > _slot_bound(det.min_clicks, dark_max, eff_max,
                                                trans_a * mu_a + trans_b * mu_b):
        return np.int64(-1)
    bit = np.int64(lookup_bit_hk(cur, alice.bit_key))
    if alice.flip_probability > 0.0 and next_uniform(rng_state) <= alice.flip_probability:
        bit ^= 1
    basis_a = np.int64(combo & 1)
    if hit_a:
        mu_a, basis_a, bit = resend(mu_a, basis_a, bit, np.int64(word_a & np.uint64(1)),
                                    frames.resend_mu_a[fi], rng_state)
    basis_b = np.int64(combo_b & 1)
    bit_b = np.int64(0)
    if bs >= 0:
        bit_b = np.int64(lookup_bit_hk(bs, bob.bit_key))
        if bob.flip_probability > 0.0 and next_uniform(rng_state) <= bob.flip_probability:
            bit_b ^= 1
        if hit_b:
            mu_b, basis_b, bit_b = resend(mu_b, basis_b, bit_b, np.int64(word_b & np.uint64(1)),
                                          frames.resend_mu_b[fi], rng_state)
    if (hit_a or hit_b) and u > _slot_bound(det.min_clicks, dark_max, eff_max,
                                            trans_a * mu_a + trans_b * mu_b):
        return np.int64(-1)
    ua0, ua1 = _launched(frames.unitary_a, fi, jones, basis_a, bit)
    vb0 = 0.0 + 0.0j
    vb1 = 0.0 + 0.0j
    if bs >= 0:
        vb0, vb1 = _launched(frames.unitary_b, fi, jones, basis_b, bit_b)
    return _accept(u, trans_a, trans_b, g, mu_a, mu_b, ua0, ua1, vb0, vb1, phase_randomized,
                   det, rng_state, p, q)


@njit(cache=True, inline="always")
def _accept(u, trans_a, trans_b, g, mu_a, mu_b, ua0, ua1, vb0, vb1, phase_randomized, det,
            rng_state, p, q):
    """The optics of one candidate with its states known: accepted with probability
    P(≥ min_clicks | φ)/bound (``u`` uniform on (0, bound]); its pattern, or -1."""
    amp_a = np.sqrt(trans_a * mu_a * 0.5)
    amp_b = np.sqrt(trans_b * mu_b * 0.5)
    if phase_randomized:
        phi = 2.0 * np.pi * next_uniform(rng_state)
        ph = np.cos(phi) + 1j * np.sin(phi)
    else:
        ph = 1.0 + 0.0j
    xh, xv = amp_a * ua0, amp_a * ua1
    yh, yv = (g * amp_b) * vb0 * ph, (g * amp_b) * vb1 * ph
    inc = (1.0 - g * g) * amp_b * amp_b
    _dark_probabilities(xh, xv, yh, yv, inc * abs2(vb0), inc * abs2(vb1),
                        det.efficiencies, det.dark_count_probabilities, q)
    p_none = q[0] * q[1] * q[2] * q[3]
    p_one = 0.0
    for k in range(4):
        p[k] = 1.0 - q[k]
        p_one += p[k] * (p_none / q[k]) if q[k] > 0.0 else 0.0
    p_accept = 1.0 - p_none if det.min_clicks == 1 else 1.0 - p_none - p_one
    chosen = -1
    if u <= p_accept:
        chosen = _draw_pattern(det.patterns, p, q, next_uniform(rng_state))
    return chosen


@njit(cache=True, inline="always")
def _draw_pattern(multi_patterns, p, q, uniform):
    """A click pattern from the exact law of the allowed patterns given the click odds."""
    p_multi = 0.0
    for c in multi_patterns:
        p_multi += _pattern_prob(c, p, q)
    target = uniform * p_multi
    acc = 0.0
    chosen = multi_patterns[multi_patterns.size - 1]
    for c in multi_patterns:
        acc += _pattern_prob(c, p, q)
        if target <= acc:
            chosen = c
            break
    return chosen


@njit(cache=True, nogil=True, error_model="numpy")
def _fast_kernel(position, stop, bound, rng_state, frames, alice, bob, det, phase_randomized,
                 jones, out_slot, out_pattern):
    """Thinning kernel over any slot range (one global bound). Returns (next position, records).

    ``det.min_clicks`` = 2 thins to coincidences; 1 skips only the empty slots (every click is
    drawn). Used for partial frames and for fluctuating intensities; whole frames go through
    ``_table_kernel``. ``frames``, ``alice``, ``bob``, ``det``: ``FrameArrays``, ``UserArrays``
    (twice), ``DetectorArrays``.
    """
    if bound <= 0.0:  # nothing can click (dead detectors, no light and no dark counts)
        return stop, 0
    log_keep = np.log1p(-bound) if bound < 1.0 else -np.inf
    dark_max = det.dark_count_probabilities.max()
    eff_max = det.efficiencies.max()
    frame_bits, first_frame, bob_off = frames.frame_bits, frames.first_frame, frames.bob_slot_offset
    a_first, a_rk, a_cum = alice.first_frame, alice.round_keys, alice.cum_counts
    a_mu, a_fluct = alice.mean_photon_numbers, alice.fluctuation_rel
    n_out = 0
    capacity = out_slot.size
    s = position
    p = np.empty(4)
    q = np.empty(4)
    while n_out < capacity:
        if bound < 1.0:
            s += np.int64(np.log(next_uniform(rng_state)) / log_keep)
        if s >= stop:
            return stop, n_out
        cur = s
        s += 1
        fi = (cur >> frame_bits) - first_frame
        combo = lookup_combo_rk(cur, a_first, a_rk, a_cum, frame_bits)
        mu_a = _fluctuate(a_mu[combo >> 1], a_fluct, rng_state)
        bs = cur + bob_off[fi]
        u = next_uniform(rng_state) * bound
        c = _candidate(u, cur, fi, combo, mu_a, bs, frames, alice, bob, det, dark_max, eff_max,
                       phase_randomized, jones, rng_state, p, q)
        if c < 0:
            continue
        out_slot[n_out] = cur
        out_pattern[n_out] = c
        n_out += 1
    return s, n_out


@njit(cache=True, nogil=True, error_model="numpy")
def _fast_kernel_under_attack(position, stop, bound, rng_state, frames, alice, bob, det,
                              phase_randomized, jones, out_slot, out_pattern):
    """``_fast_kernel`` with ``_candidate_under_attack``: the same loop, for a range where an
    eavesdropper attacks. Two kernels rather than one taking the candidate function as an
    argument: numba calls an argument function indirectly, which costs the healthy path its
    inlining."""
    if bound <= 0.0:  # nothing can click (dead detectors, no light and no dark counts)
        return stop, 0
    log_keep = np.log1p(-bound) if bound < 1.0 else -np.inf
    dark_max = det.dark_count_probabilities.max()
    eff_max = det.efficiencies.max()
    frame_bits, first_frame, bob_off = frames.frame_bits, frames.first_frame, frames.bob_slot_offset
    a_first, a_rk, a_cum = alice.first_frame, alice.round_keys, alice.cum_counts
    a_mu, a_fluct = alice.mean_photon_numbers, alice.fluctuation_rel
    n_out = 0
    capacity = out_slot.size
    s = position
    p = np.empty(4)
    q = np.empty(4)
    while n_out < capacity:
        if bound < 1.0:
            s += np.int64(np.log(next_uniform(rng_state)) / log_keep)
        if s >= stop:
            return stop, n_out
        cur = s
        s += 1
        fi = (cur >> frame_bits) - first_frame
        combo = lookup_combo_rk(cur, a_first, a_rk, a_cum, frame_bits)
        mu_a = _fluctuate(a_mu[combo >> 1], a_fluct, rng_state)
        bs = cur + bob_off[fi]
        u = next_uniform(rng_state) * bound
        c = _candidate_under_attack(u, cur, fi, combo, mu_a, bs, frames, alice, bob, det,
                                    dark_max, eff_max, phase_randomized, jones, rng_state, p, q)
        if c < 0:
            continue
        out_slot[n_out] = cur
        out_pattern[n_out] = c
        n_out += 1
    return s, n_out


@njit(cache=True)
def _frame_table(fi, n_phases, trans_a, trans_b, unit_a, unit_b, gamma, a_mu, b_mu, a_flip,
                 b_flip, eff, pd, jones, patterns, table):
    """Phase-averaged click-pattern law of frame ``fi`` for every pair of sent states.

    ``table[sa, sb, j]`` = P(pattern ``patterns[0..j]`` | Alice sent state ``sa``, Bob ``sb``),
    cumulative in ``j``, where a state is ``2 * combo + bit`` (``combo = 2 * intensity + basis``)
    and ``sb = 2 * n_combos_b`` means no pulse from Bob (his slot lies before his first). The
    encoders' bit flips (flip-model e_d) are mixed in exactly. The relative phase φ of the two
    pulses is uniform and never revealed, so a slot's pattern law is E_φ[P(pattern | φ)]; it is
    computed with the ``n_phases``-point trapezoid rule, which is exact for trigonometric
    polynomials of degree < ``n_phases`` and converges geometrically for this entire periodic
    integrand (see ``phase_points``). Without phase randomization, φ = 0.
    """
    n_int_a, n_int_b = a_mu.size, b_mu.size
    n_sa, n_sb = 4 * n_int_a, 4 * n_int_b
    n_pat = patterns.size
    raw = np.zeros((n_sa, n_sb + 1, n_pat))
    p = np.empty(4)
    q = np.empty(4)
    ph = np.empty(n_phases, np.complex128)
    for j in range(n_phases):
        phi = 2.0 * np.pi * j / n_phases
        ph[j] = np.cos(phi) + 1j * np.sin(phi)
    g = gamma[fi]
    for sa in range(n_sa):
        ia, basis, bit = sa >> 2, (sa >> 1) & 1, sa & 1
        amp_a = np.sqrt(trans_a[fi] * a_mu[ia] * 0.5)
        ua0, ua1 = _launched(unit_a, fi, jones, basis, bit)
        xh, xv = amp_a * ua0, amp_a * ua1
        for sb in range(n_sb + 1):
            vb0 = 0.0 + 0.0j
            vb1 = 0.0 + 0.0j
            amp_b = 0.0
            if sb < n_sb:
                amp_b = np.sqrt(trans_b[fi] * b_mu[sb >> 2] * 0.5)
                vb0, vb1 = _launched(unit_b, fi, jones, (sb >> 1) & 1, sb & 1)
            inc = (1.0 - g * g) * amp_b * amp_b
            inc_h = inc * abs2(vb0)
            inc_v = inc * abs2(vb1)
            for j in range(n_phases):
                yh = (g * amp_b) * vb0 * ph[j]
                yv = (g * amp_b) * vb1 * ph[j]
                _dark_probabilities(xh, xv, yh, yv, inc_h, inc_v, eff, pd, q)
                for d in range(4):
                    p[d] = 1.0 - q[d]
                for k in range(n_pat):
                    raw[sa, sb, k] += _pattern_prob(patterns[k], p, q) / n_phases
    for sa in range(n_sa):
        for sb in range(n_sb + 1):
            fa = a_flip
            fb = b_flip if sb < n_sb else 0.0
            sa2, sb2 = sa ^ 1, (sb ^ 1) if sb < n_sb else sb
            acc = 0.0
            for k in range(n_pat):
                acc += ((1.0 - fa) * ((1.0 - fb) * raw[sa, sb, k] + fb * raw[sa, sb2, k])
                        + fa * ((1.0 - fb) * raw[sa2, sb, k] + fb * raw[sa2, sb2, k]))
                table[sa, sb, k] = acc


@njit(cache=True, inline="always")
def _same_frame_physics(frames, f1, f2):
    trans_a, trans_b, gamma = frames.transmittance_a, frames.transmittance_b, frames.gamma
    unit_a, unit_b = frames.unitary_a, frames.unitary_b
    if trans_a[f1] != trans_a[f2] or trans_b[f1] != trans_b[f2] or gamma[f1] != gamma[f2]:
        return False
    for r in range(2):
        for c in range(2):
            if unit_a[f1, r, c] != unit_a[f2, r, c] or unit_b[f1, r, c] != unit_b[f2, r, c]:
                return False
    return True


_BATCH = 1024  # candidates per batch in ``_table_kernel`` (its buffers stay in L1/L2)


@njit(cache=True, nogil=True, error_model="numpy")
def _table_kernel(frame_lo, frame_hi, rng_state, n_phases, frames, alice, bob, det, jones,
                  capacity):
    """Exact thinning over whole frames ``[frame_lo, frame_hi)`` from per-frame pattern tables.

    Per frame, ``_frame_table`` gives each pair of sent states its exact (phase-averaged)
    probability ``P_acc`` of an allowed click pattern. Alice's slots of intensity ``i`` are the
    Feistel pre-images of one contiguous run of positions (her classes are laid out by position),
    so candidates are drawn among those positions at geometric gaps of rate
    ``B_i = max P_acc`` over her states of intensity ``i`` and all of Bob's, mapped back to slots
    with the inverse permutation, and kept when ``u <= P_acc`` for ``u`` uniform on ``(0, B_i]``:
    each slot is kept with probability exactly ``P_acc``. Given that, ``u`` is uniform on
    ``(0, P_acc]`` and picks the pattern from the cumulative row. No phase, exponential or
    trigonometric function is evaluated per candidate, and the two bits are hashed only when
    ``u`` is below the largest ``P_acc`` over them (given both users' intensity and basis).
    Records of a frame are sorted by slot (radix sort). Returns (slots, patterns). ``frames``,
    ``alice``, ``bob``, ``det``: ``FrameArrays``, ``UserArrays`` (twice), ``DetectorArrays``.
    """
    frame_bits = frames.frame_bits
    a_first, a_rk, a_cum, a_bitkey = (alice.first_frame, alice.round_keys, alice.cum_counts,
                                      alice.bit_key)
    b_first, b_rk, b_cum, b_bitkey = bob.first_frame, bob.round_keys, bob.cum_counts, bob.bit_key
    n_int = alice.mean_photon_numbers.size
    n_sb = 4 * bob.mean_photon_numbers.size
    patterns = det.patterns
    n_pat = patterns.size
    table = np.zeros((4 * n_int, n_sb + 1, n_pat))
    class_bound = np.zeros(n_int)
    bits_bound = np.zeros((2 * n_int, n_sb // 2 + 1))  # max over both users' bits
    out_slot = np.empty(capacity, np.int64)
    out_pattern = np.empty(capacity, np.uint8)
    n_out = 0
    prev = -1
    keys = np.empty(0, np.int64)
    scratch = np.empty(0, np.int64)
    b_pos = np.empty(_BATCH, np.int64)
    b_local = np.empty(_BATCH, np.int64)
    b_combo = np.empty(_BATCH, np.int64)
    b_u = np.empty(_BATCH)
    counts = np.empty(1 << _RADIX_MAX_BITS, np.int64)
    for f in range(frame_lo, frame_hi):
        fi = f - frames.first_frame
        if prev < 0 or not _same_frame_physics(frames, fi, prev):
            _frame_table(fi, n_phases, frames.transmittance_a, frames.transmittance_b,
                         frames.unitary_a, frames.unitary_b, frames.gamma,
                         alice.mean_photon_numbers, bob.mean_photon_numbers,
                         alice.flip_probability, bob.flip_probability, det.efficiencies,
                         det.dark_count_probabilities, jones, patterns, table)
            for i in range(n_int):
                class_bound[i] = table[4 * i:4 * i + 4, :, n_pat - 1].max()
            for ca in range(2 * n_int):
                for cb in range(n_sb // 2 + 1):
                    sbs = slice(2 * cb, 2 * cb + 2) if cb < n_sb // 2 else slice(n_sb, n_sb + 1)
                    bits_bound[ca, cb] = table[2 * ca:2 * ca + 2, sbs, n_pat - 1].max()
            prev = fi
        row = a_cum[f - a_first]
        rk = a_rk[f - a_first]
        frame_base = np.int64(f) << frame_bits
        off = frames.bob_slot_offset[fi]
        frame_start = n_out
        for i in range(n_int):
            lo = row[2 * i - 1] if i > 0 else np.int64(0)
            hi = row[2 * i + 1]
            bound = class_bound[i]
            if hi <= lo or bound <= 0.0:
                continue
            log_keep = np.log1p(-bound) if bound < 1.0 else -np.inf
            split = row[2 * i]  # positions below are basis Z, from here basis X
            pos = lo
            more = True
            while more:
                # A batch of candidates, then each step over the whole batch in its own loop:
                # the hashes of independent candidates overlap in the pipeline (and vectorize)
                # instead of waiting behind the accept/reject branches of the previous one.
                nb = 0
                while nb < _BATCH:
                    if bound < 1.0:
                        pos += np.int64(np.log(next_uniform(rng_state)) / log_keep)
                    if pos >= hi:
                        more = False
                        break
                    b_pos[nb] = pos
                    nb += 1
                    pos += 1
                for j in range(nb):
                    b_local[j] = np.int64(feistel_invert_rk(rk, np.uint64(b_pos[j]), frame_bits))
                for j in range(nb):
                    bs = (frame_base | b_local[j]) + off
                    b_combo[j] = n_sb // 2  # no pulse from Bob
                    if bs >= 0:
                        b_combo[j] = lookup_combo_rk(bs, b_first, b_rk, b_cum, frame_bits)
                for j in range(nb):
                    b_u[j] = next_uniform(rng_state) * bound
                for j in range(nb):
                    basis = 0 if b_pos[j] < split else 1
                    combo_b = b_combo[j]
                    u = b_u[j]
                    if u > bits_bound[2 * i + basis, combo_b]:
                        continue  # no choice of the two bits reaches u: they are not needed
                    local = b_local[j]
                    cur = frame_base | local
                    sa = 4 * i + 2 * basis + np.int64(lookup_bit_hk(cur, a_bitkey))
                    sb = n_sb
                    if combo_b < n_sb // 2:
                        sb = 2 * combo_b + np.int64(lookup_bit_hk(cur + off, b_bitkey))
                    cum = table[sa, sb]
                    if u > cum[n_pat - 1]:
                        continue
                    k = 0
                    while u > cum[k]:
                        k += 1
                    if n_out == out_slot.size:
                        # element copies: a slice copy compiles numba's shape-error text
                        grown = np.empty(2 * out_slot.size + 1024, np.int64)
                        grown_p = np.empty(2 * out_pattern.size + 1024, np.uint8)
                        for j in range(n_out):
                            grown[j] = out_slot[j]
                            grown_p[j] = out_pattern[j]
                        out_slot = grown
                        out_pattern = grown_p
                    out_slot[n_out] = local
                    out_pattern[n_out] = patterns[k]
                    n_out += 1
        m = n_out - frame_start
        if m > 1:  # sort the frame's records by slot (pattern in the low bits)
            if keys.size < m:
                keys = np.empty(2 * m, np.int64)
                scratch = np.empty(2 * m, np.int64)
            for j in range(m):
                keys[j] = (out_slot[frame_start + j] << 4) | np.int64(out_pattern[frame_start + j])
            _radix_sort(keys[:m], scratch[:m], frame_bits + 4, counts)
            for j in range(m):
                out_slot[frame_start + j] = keys[j] >> 4
                out_pattern[frame_start + j] = np.uint8(keys[j] & 15)
        for j in range(frame_start, n_out):
            out_slot[j] += frame_base
    return out_slot[:n_out], out_pattern[:n_out]


_RADIX_MAX_BITS = 12


@njit(cache=True, inline="always")
def _radix_sort(keys, scratch, key_bits, counts):
    """Sort non-negative ``keys`` below ``2**key_bits`` in place: LSD radix in as few passes of
    at most 12 bits as cover ``key_bits`` (two for 2^20-slot frames), so a frame's few thousand
    records cost a few passes over a histogram of at most 4096 entries."""
    m = keys.size
    passes = (key_bits + _RADIX_MAX_BITS - 1) // _RADIX_MAX_BITS
    bits = (key_bits + passes - 1) // passes
    mask = (1 << bits) - 1
    src, dst = keys, scratch
    shift = 0
    for _ in range(passes):
        counts[:mask + 1] = 0
        for j in range(m):
            counts[(src[j] >> shift) & mask] += 1
        total = 0
        for b in range(mask + 1):
            c = counts[b]
            counts[b] = total
            total += c
        for j in range(m):
            b = (src[j] >> shift) & mask
            dst[counts[b]] = src[j]
            counts[b] += 1
        src, dst = dst, src
        shift += bits
    if passes % 2:
        for j in range(m):
            keys[j] = scratch[j]


def phase_points(link: Link, alice: SettingsGenerator, bob: SettingsGenerator) -> int:
    """Trapezoid points for the phase average in ``_frame_table`` (1 without randomization).

    Every term of P(pattern | φ) is ``exp(-A - z cos(φ + θ))`` with ``|z| <= η M`` (η the largest
    efficiency, M the largest total mean photon number at the detectors, since
    ``2|x||y| <= |x|² + |y|²``). The N-point rule's error on it is ``2 Σ_m I_{mN}(z) / I_0(z)``
    relative, below ``4 (z/2)^N / N!``; N is the smallest multiple of 8 (at least 16) that
    puts this under 1e-17, i.e. below double-precision rounding.
    """
    if not (link.source_a.phase_randomized or link.source_b.phase_randomized):
        return 1
    z = float(link.relay.efficiencies.max()) * (
        float(link.source_a.emitted_mean_photon_numbers(alice.plan).max())
        + float(link.source_b.emitted_mean_photon_numbers(bob.plan).max()))
    n = 16
    while 4.0 * math.exp(n * math.log(max(z, 1e-300) / 2.0) - math.lgamma(n + 1)) > 1e-17:
        n += 8
    return n


@njit(cache=True, inline="always")
def _pattern_prob(c, p, q):
    r = 1.0
    for k in range(4):
        r *= p[k] if (c >> k) & 1 else q[k]
    return r


def coincidence_bound(link: Link, physics: FramePhysics, alice: SettingsGenerator,
                      bob: SettingsGenerator, min_clicks: int = 2) -> float:
    """B: an upper bound on P(≥2 clicks) for every slot, phase and setting of the range.

    Detector k clicks with p_k = 1 − (1−d_k)e^{−η_k n_k} ≤ d + η n_k (d, η the largest dark
    probability and efficiency), P(≥2) ≤ Σ_{i<j} p_i p_j (union bound over pairs), and
    Σ_k n_k = M = T_a μ_a + T_b μ_b for every phase, state and overlap (the cross terms of the
    beam splitter cancel), so Σ_{i<j} n_i n_j = (M² − Σ n_k²)/2 ≤ 3M²/8. Hence
    B = 6d² + 3dηM + (3/8)η²M², at the brightest settings of the range (an eavesdropper's resent
    pulse included). With ``min_clicks=1``
    (skip empty slots): P(≥1) ≤ 1 − (1−d)⁴ e^{−ηM}.
    """
    light = (physics.transmittance_a.max()
             * max(link.source_a.emitted_mean_photon_numbers(alice.plan).max()
                   * link.source_a.max_fluctuation_factor, physics.resend_mu_a.max())
             + physics.transmittance_b.max()
             * max(link.source_b.emitted_mean_photon_numbers(bob.plan).max()
                   * link.source_b.max_fluctuation_factor, physics.resend_mu_b.max()))
    bound = _slot_bound(min_clicks, float(link.relay.dark_count_probabilities.max()),
                        float(link.relay.efficiencies.max()), float(light))
    return min(1.0, bound)


#: The fast sampler splits a range at multiples of this many slots; each chunk has its own random
#: stream keyed by (seed, chunk start), so results do not depend on how many threads run them nor
#: on how a caller splits a range along chunk boundaries.
FAST_CHUNK_SLOTS = 1 << 26


def sample_fast(link: Link, alice: SettingsGenerator, bob: SettingsGenerator,
                start: int, stop: int, seed: int, workers: int | None = None) -> RelayOutput:
    """Exact thinning to coincidences (the default sampler); chunks run on ``workers`` threads
    (numba releases the GIL), by default one per core. Singles per frame from the marginal."""
    return _thin(link, alice, bob, start, stop, seed, workers, min_clicks=2)


def sample_skip_empty(link: Link, alice: SettingsGenerator, bob: SettingsGenerator,
                      start: int, stop: int, seed: int, workers: int | None = None) -> RelayOutput:
    """Skip only the empty slots (docs/physics.md §8): every click is drawn, so singles and
    coincidences come from one exact joint law. Slower than ``sample_fast`` by the ratio of
    single clicks to coincidences."""
    return _thin(link, alice, bob, start, stop, seed, workers, min_clicks=1)


def _thin(link: Link, alice: SettingsGenerator, bob: SettingsGenerator, start: int, stop: int,
          seed: int, workers: int | None, min_clicks: int) -> RelayOutput:
    _check_range(start, stop)
    _check_devices(link)
    if link.relay.has_memory:
        raise UnsupportedPhysicsError("the fast sampler does not emulate detector dead time or "
                                      "afterpulsing; use the reference sampler "
                                      "(--sampler reference)")
    if alice.frame_bits != link.frame_bits or bob.frame_bits != link.frame_bits:
        raise ValueError("settings generators and link must use the same frame_bits")
    physics = link.physics(start, stop)
    rng = np.random.default_rng(seed)
    ta = alice.table_for_slots(start, stop)
    tb = bob.table_for_slots(*_bob_slot_bounds(physics, start, stop))
    bound = coincidence_bound(link, physics, alice, bob, min_clicks)
    patterns = _MULTI_PATTERNS if min_clicks == 2 else _ANY_PATTERNS
    edges = [start, *range((start // FAST_CHUNK_SLOTS + 1) * FAST_CHUNK_SLOTS, stop,
                           FAST_CHUNK_SLOTS), stop]
    frame_bits = physics.frame_bits
    src_a, src_b = link.source_a, link.source_b
    frames = _frame_arrays(physics)
    det = DetectorArrays(link.relay.efficiencies, link.relay.dark_count_probabilities, patterns,
                         min_clicks)
    shared = tuple(map(_read_only, (frames, _user_arrays(ta, alice, src_a),
                                    _user_arrays(tb, bob, src_b), det)))
    phase_randomized = src_a.phase_randomized or src_b.phase_randomized
    # the pattern tables need every slot's intensities to be one of the plan's values, and every
    # slot's states the users' (an eavesdropper's slots go through the per-candidate optics)
    tables = (src_a.intensity_fluctuation_rel == 0.0 and src_b.intensity_fluctuation_rel == 0.0
              and not physics.attacked)
    n_phases = phase_points(link, alice, bob)
    kernel = _fast_kernel_under_attack if physics.attacked else _fast_kernel

    def run_range(lo: int, hi: int, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        capacity = int(min(1 << 22, bound * (hi - lo) * 1.2 + 1024))
        slots_parts, pattern_parts = [], []
        position = lo
        while position < hi:
            out_slot = np.empty(capacity, dtype=np.int64)
            out_pattern = np.empty(capacity, dtype=np.uint8)
            position, n = kernel(np.int64(position), np.int64(hi), bound, state, *shared,
                                 phase_randomized, JONES, out_slot, out_pattern)
            slots_parts.append(out_slot[:n])
            pattern_parts.append(out_pattern[:n])
        return np.concatenate(slots_parts), np.concatenate(pattern_parts)

    def run_chunk(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Whole frames from the pattern tables; partial frames (and fluctuating intensities)
        with the global bound and the optics per candidate."""
        state = make_state(derive_seed(seed, "thinning chunk", lo // FAST_CHUNK_SLOTS))
        first_whole = -(-lo >> frame_bits)
        last_whole = hi >> frame_bits  # exclusive
        if not tables or last_whole <= first_whole:
            return run_range(lo, hi, state)
        parts = []
        if lo < first_whole << frame_bits:
            parts.append(run_range(lo, first_whole << frame_bits, state))
        capacity = int(bound * ((last_whole - first_whole) << frame_bits) * 0.5 + 1024)
        parts.append(_table_kernel(np.int64(first_whole), np.int64(last_whole), state, n_phases,
                                   *shared, JONES, capacity))
        if last_whole << frame_bits < hi:
            parts.append(run_range(last_whole << frame_bits, hi, state))
        return (np.concatenate([x[0] for x in parts]), np.concatenate([x[1] for x in parts]))

    n_workers = min(len(edges) - 1, workers or os.cpu_count() or 1)
    if n_workers <= 1:
        parts = [run_chunk(lo, hi) for lo, hi in itertools.pairwise(edges)]
    else:
        with ThreadPoolExecutor(n_workers) as pool:
            parts = list(pool.map(lambda e: run_chunk(*e), itertools.pairwise(edges)))
    slots = np.concatenate([p[0] for p in parts])
    found = np.concatenate([p[1] for p in parts])
    if min_clicks == 1:  # every click is here: singles are exact counts, records the multiples
        clicks = (found[:, None].astype(np.int64) >> np.arange(N_DETECTORS)) & 1
        singles = clicks.sum(axis=0).astype(np.int64)
        multi = _POPCOUNT16[found] >= 2
        slots, found = slots[multi], found[multi]
    else:
        singles = _sample_singles(link, physics, alice, bob, start, stop, rng)
    return RelayOutput(start, stop, _records(slots, found, physics, link, rng, start, stop),
                       singles)


def singles_probabilities(link: Link, physics: FramePhysics, alice: SettingsGenerator,
                          bob: SettingsGenerator) -> np.ndarray:
    """(n_frames, 4) P(detector k clicks in a slot), averaged over phase and settings, exactly.

    Computed once per distinct frame physics (static links have one), then spread to the frames.
    """
    key = np.concatenate([physics.transmittance_a[:, None], physics.transmittance_b[:, None],
                          physics.gamma[:, None], physics.attack_a[:, None],
                          physics.attack_b[:, None], physics.resend_mu_a[:, None],
                          physics.resend_mu_b[:, None],
                          physics.unitary_a.reshape(physics.n_frames, -1).view(np.float64),
                          physics.unitary_b.reshape(physics.n_frames, -1).view(np.float64)],
                         axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    distinct = dataclasses.replace(physics, **{
        name: getattr(physics, name)[first]
        for name in ("transmittance_a", "transmittance_b", "unitary_a", "unitary_b", "gamma",
                     "bob_slot_offset", "residual_offset_ps", "relay_error_ps",
                     "click_jitter_ps", "attack_a", "attack_b", "resend_mu_a", "resend_mu_b")})
    return _singles_probabilities(link, distinct, alice, bob)[inverse.reshape(-1)]


def _sent_states(gen: SettingsGenerator, source: Source, fraction: np.ndarray,
                 resend_mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A user's pulse states at the fiber's input per frame, as (weights (F, C), mean photon
    numbers (F, C), basis (C,), bit (C,)): the sent (combo, bit) states, weighted (1 − f), then
    an eavesdropper's five resend states (two bases × two bits at her mean, and vacuum) weighted
    f × their probability over the sent states (``channel.eavesdropper.resend_outcomes``)."""
    plan = gen.plan
    p = np.repeat(plan.combo_probabilities, 2) / 2  # (combo, bit) flattened
    mu = np.repeat(source.emitted_mean_photon_numbers(plan), 4)
    basis = np.tile(np.repeat([0, 1], 2), plan.n_combos // 2)
    bit = np.tile([0, 1], plan.n_combos)
    n_frames = fraction.size
    if not fraction.any():
        return (np.broadcast_to(p, (n_frames, p.size)), np.broadcast_to(mu, (n_frames, mu.size)),
                basis, bit)
    eve = np.zeros(5)  # (basis 0 bit 0, 0 1, 1 0, 1 1, vacuum)
    for weight, m, b, x in zip(p, mu, basis, bit, strict=True):
        for prob, m_e, b_e, x_e in resend_outcomes(float(m), int(b), int(x), 1.0):
            eve[4 if m_e == 0.0 else 2 * b_e + x_e] += weight * prob
    weights = np.concatenate([(1 - fraction)[:, None] * p, fraction[:, None] * eve], axis=1)
    mus = np.concatenate([np.broadcast_to(mu, (n_frames, mu.size)),
                          np.repeat(resend_mu[:, None], 4, axis=1), np.zeros((n_frames, 1))],
                         axis=1)
    return weights, mus, np.concatenate([basis, [0, 0, 1, 1, 0]]), np.concatenate(
        [bit, [0, 1, 0, 1, 0]])


def _singles_probabilities(link: Link, physics: FramePhysics, alice: SettingsGenerator,
                           bob: SettingsGenerator) -> np.ndarray:
    relay = link.relay
    pa, mu_a, basis, bit = _sent_states(alice, link.source_a, physics.attack_a,
                                        physics.resend_mu_a)
    pb, mu_b, basis_b, bit_b = _sent_states(bob, link.source_b, physics.attack_b,
                                            physics.resend_mu_b)
    u = np.einsum("fij,cj->fci", physics.unitary_a, JONES[basis, bit])  # (F, Ca, 2)
    v = np.einsum("fij,cj->fci", physics.unitary_b, JONES[basis_b, bit_b])
    xa = np.sqrt(physics.transmittance_a[:, None, None] * mu_a[:, :, None] / 2) * np.concatenate(
        [u, u], axis=2)  # (F, Ca, 4)
    yb = np.sqrt(physics.transmittance_b[:, None, None] * mu_b[:, :, None] / 2) * np.concatenate(
        [v, -v], axis=2)
    eff = relay.efficiencies
    xa = xa * np.sqrt(eff)
    yb = yb * np.sqrt(eff)
    power = np.abs(xa)[:, :, None, :] ** 2 + np.abs(yb)[:, None, :, :] ** 2  # (F, Ca, Cb, 4)
    g = physics.gamma[:, None, None, None]
    if link.source_a.phase_randomized or link.source_b.phase_randomized:
        cross = np.abs(xa)[:, :, None, :] * np.abs(yb)[:, None, :, :]
        no_click = np.exp(-power) * np.i0(2 * g * cross)
    else:
        field = xa[:, :, None, :] + g * yb[:, None, :, :]
        n = np.abs(field) ** 2 + (1 - g**2) * np.abs(yb[:, None, :, :]) ** 2
        no_click = np.exp(-n)
    no_click = no_click * (1 - relay.dark_count_probabilities)
    weights = pa[:, :, None, None] * pb[:, None, :, None]
    return 1.0 - (weights * no_click).sum(axis=(1, 2))


def _sample_singles(link: Link, physics: FramePhysics, alice: SettingsGenerator,
                    bob: SettingsGenerator, start: int, stop: int,
                    rng: np.random.Generator) -> np.ndarray:
    frames = np.arange(physics.n_frames) + physics.first_frame
    size = 1 << physics.frame_bits
    lo = np.maximum(frames * size, start)
    hi = np.minimum((frames + 1) * size, stop)
    probs = singles_probabilities(link, physics, alice, bob)
    return rng.binomial((hi - lo)[:, None], probs).sum(axis=0).astype(np.int64)


def sample(link: Link, alice: SettingsGenerator, bob: SettingsGenerator, start: int, stop: int,
           seed: int, sampler: str = "fast") -> RelayOutput:
    """Dispatch to a sampler by name (``fast`` is the default). Where device faults
    (``channel.impairments``) change inside the range, each piece is sampled with its own
    devices and its own stream (``seed`` and the piece's first slot); a range without them is
    sampled whole with ``seed``, as on a link without faults."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    pieces = link.device_segments(start, stop)
    if len(pieces) == 1:
        return _sample_one(pieces[0][2], alice, bob, start, stop, seed, sampler)
    outs = [_sample_one(piece, alice, bob, lo, hi, derive_seed(seed, "fault segment", lo),
                        sampler) for lo, hi, piece in pieces]
    return RelayOutput(start, stop, DetectionRecords.concatenate([o.records for o in outs]),
                       np.sum([o.singles for o in outs], axis=0).astype(np.int64))


def _sample_one(link: Link, alice: SettingsGenerator, bob: SettingsGenerator, start: int,
                stop: int, seed: int, sampler: str) -> RelayOutput:
    out = _sample_honest(link, alice, bob, start, stop, seed, sampler)
    return out if link.attack is None else _under_attack(link, alice, bob, out, seed)


def _under_attack(link: Link, alice: SettingsGenerator, bob: SettingsGenerator,
                  honest: RelayOutput, seed: int) -> RelayOutput:
    """The honest optics' records of the slots the relay does not attack, and the records its
    intercept–resend fakes on those it does (``channel.relay_attack``), in slot order. Exact:
    slots are independent, and the attacked ones are a fixed set (a keyed hash of the slot).
    The singles reported stay the honest optics': a cheating relay reports what it likes, and
    the protocol never reads them."""
    assert link.attack is not None
    start, stop = honest.start, honest.stop
    physics = link.physics(start, stop)
    records = honest.records
    spared = ~link.attack.attacked(records.slot)
    slots, patterns = _attack_records(link, physics, alice, bob, start, stop,
                                      derive_seed(seed, "relay attack"))
    rng = np.random.default_rng(derive_seed(seed, "relay attack times"))
    faked = _records(slots, patterns, physics, link, rng, start, stop)
    merged = DetectionRecords.concatenate([
        DetectionRecords(records.slot[spared], records.pattern[spared], records.time_ps[spared]),
        faked])
    order = np.argsort(merged.slot, kind="stable")
    return RelayOutput(start, stop, DetectionRecords(merged.slot[order], merged.pattern[order],
                                                     merged.time_ps[order]), honest.singles)


def _attack_records(link: Link, physics: FramePhysics, alice: SettingsGenerator,
                    bob: SettingsGenerator, start: int, stop: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The slots and click patterns the relay's intercept–resend fakes in ``[start, stop)``
    (``channel.relay_attack.attack_kernel``, one random stream keyed by ``seed``)."""
    assert link.attack is not None
    bound = attack_bound(link, physics, alice, bob)
    if bound <= 0.0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    if np.any(physics.attack_a > 0) or np.any(physics.attack_b > 0):
        raise UnsupportedPhysicsError("the relay's intercept-resend and an eavesdropper on a "
                                      "fiber in the same frames are not emulated together")
    frames = _frame_arrays(physics)
    ta = alice.table_for_slots(start, stop)
    tb = bob.table_for_slots(*_bob_slot_bounds(physics, start, stop))
    args = tuple(map(_read_only, (frames, _user_arrays(ta, alice, link.source_a),
                                  _user_arrays(tb, bob, link.source_b))))
    state = make_state(seed)
    capacity = int(min(1 << 22, bound * (stop - start) * 1.2 + 1024))
    slot_parts, pattern_parts = [], []
    position = start
    while position < stop:
        out_slot = np.empty(capacity, dtype=np.int64)
        out_pattern = np.empty(capacity, dtype=np.uint8)
        position, n = attack_kernel(np.int64(position), np.int64(stop), bound, state, *args,
                                    readonly(link.relay.efficiencies),
                                    readonly(link.relay.dark_count_probabilities), JONES,
                                    np.uint64(link.attack.key), float(link.attack.fraction),
                                    out_slot, out_pattern)
        slot_parts.append(out_slot[:n])
        pattern_parts.append(out_pattern[:n])
    return np.concatenate(slot_parts), np.concatenate(pattern_parts)


def _sample_honest(link: Link, alice: SettingsGenerator, bob: SettingsGenerator, start: int,
                   stop: int, seed: int, sampler: str) -> RelayOutput:
    if sampler == "fast":
        return sample_fast(link, alice, bob, start, stop, seed)
    if sampler == "skip-empty":
        return sample_skip_empty(link, alice, bob, start, stop, seed)
    if sampler == "reference":
        return sample_reference(link, alice, bob, start, stop, seed)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
