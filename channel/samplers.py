"""Samplers: nature's draw of the relay's detector clicks for a range of slots.

Three samplers with the same output law (PHYSICS.md §5, §7):

* ``sample_reference`` — every slot simulated, vectorized numpy over chunks: settings, phases,
  mean photon numbers at the four detectors, independent threshold clicks. Handles detector
  memory (dead time, afterpulsing) with a numba pass over the chunk.
* ``sample_fast`` — exact thinning to coincidences (numba). P(≥2 clicks | φ, settings) ≤
  B (``coincidence_bound``) for every slot, so candidates are drawn at geometric gaps of rate B
  and each is accepted with P(≥2 | φ, settings)/B, its settings read from the counter-based
  generators; the pattern is then drawn from the exact conditional law. Singles
  are drawn per frame from the exact phase- and settings-averaged marginal (Binomial(N, p̄_k), the
  exact law of i.i.d. slots); their joint law with the coincidence records is not reproduced (they
  are a monitoring quantity) and intensity fluctuation is ignored in them.

* ``sample_skip_empty`` — the same thinning kernel accepting every slot with ≥ 1 click (bound
  1 − (1−d)⁴e^{−ηM}): all clicks are drawn, so singles are exact and jointly distributed with
  the coincidences, at the cost of drawing every single click.

All return ``RelayOutput`` with the records of every slot with ≥ 2 clicks.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from channel.link import FramePhysics, Link
from channel.relay import N_DETECTORS, NO_CLICK_TIME, DetectionRecords, RelayOutput
from channel.rng import make_state, next_normal, next_uniform
from channel.settings import SettingsGenerator, lookup_bit, lookup_combo
from channel.source import FLUCTUATION_CLIP_SIGMAS, JONES

SAMPLERS = ("fast", "skip-empty", "reference")
_REFERENCE_CHUNK = 1 << 18
_POPCOUNT16 = np.array([bin(i).count("1") for i in range(16)], dtype=np.int64)
_MULTI_PATTERNS = np.array([c for c in range(16) if _POPCOUNT16[c] >= 2], dtype=np.int64)
_ANY_PATTERNS = np.arange(1, 16, dtype=np.int64)


class UnsupportedPhysicsError(ValueError):
    """The requested sampler cannot emulate this configuration exactly."""


# --- common post-processing ------------------------------------------------------------------


def _records(slots: np.ndarray, patterns: np.ndarray, physics: FramePhysics, link: Link,
             rng: np.random.Generator) -> DetectionRecords:
    """Attach click times: slot time + Alice–Bob mid-point offset + Gaussian jitter, the detector's
    and the two sources' clock jitter added in quadrature."""
    n = slots.size
    frame_idx = (slots >> physics.frame_bits) - physics.first_frame
    base = slots.astype(np.float64) * link.slot_ps + physics.residual_offset_ps[frame_idx] / 2
    clock_var = (link.clock_a.jitter_ps ** 2 + link.clock_b.jitter_ps ** 2) / 2
    jitters = np.sqrt(link.relay.jitters_ps ** 2 + clock_var)
    if jitters.any():
        times = np.rint(base[:, None] + rng.normal(size=(n, N_DETECTORS)) * jitters)
    else:
        times = np.broadcast_to(np.rint(base)[:, None], (n, N_DETECTORS))
    times = times.astype(np.int64)
    clicked = (patterns[:, None].astype(np.int64) >> np.arange(N_DETECTORS)) & 1
    times = np.where(clicked == 1, times, NO_CLICK_TIME)
    return DetectionRecords(slots.astype(np.int64), patterns.astype(np.uint8), times)


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
    physics = link.physics(start, stop)
    rng = np.random.default_rng(seed)
    memory_rng = make_state(seed ^ 0x5EED)
    relay = link.relay
    eff = relay.efficiencies
    pd = relay.dark_count_probabilities
    dead = np.array([d.dead_time_slots for d in relay.detectors], dtype=np.int64)
    ap = np.array([d.afterpulsing_probability for d in relay.detectors])
    blocked = np.full(4, -1, dtype=np.int64)
    ap_at = np.full(4, -1, dtype=np.int64)
    mu_a_values = alice.plan.mean_photon_numbers
    mu_b_values = bob.plan.mean_photon_numbers
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
        u = np.einsum("nij,nj->ni", physics.unitary_a[fi], JONES[sa.basis, bit_a.astype(np.uint8)])
        v = np.einsum("nij,nj->ni", physics.unitary_b[fi], JONES[sb.basis, bit_b.astype(np.uint8)])
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
    return RelayOutput(start, stop, _records(slots, patterns, physics, link, rng), singles)


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


@njit(cache=True, nogil=True, error_model="numpy")
def _fast_kernel(position, stop, bound, rng_state,
                 frame_bits, phys_first_frame, trans_a, trans_b, unit_a, unit_b, gamma, bob_off,
                 a_first, a_keys, a_cum, a_bitkey, a_mu, a_fluct, a_flip,
                 b_first, b_keys, b_cum, b_bitkey, b_mu, b_fluct, b_flip,
                 eff, pd, phase_randomized, jones, multi_patterns, min_clicks, out_slot,
                 out_pattern):
    """Thinning kernel. Returns (next position, number of records written).

    ``min_clicks`` = 2 thins to coincidences; 1 skips only the empty slots (every click is drawn).
    ``multi_patterns`` lists the patterns with at least ``min_clicks`` clicks.

    A candidate slot is accepted with probability P(≥2 | φ, settings)/bound using one uniform u:
    it is rejected early, before the optics, when u·bound exceeds the slot's own bound (which
    needs only the intensities), since P(≥2 | φ) never does.
    """
    log_keep = np.log1p(-bound) if bound < 1.0 else -np.inf
    dark_max = pd.max()
    eff_max = eff.max()
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
        fi = (cur >> frame_bits) - phys_first_frame
        combo = lookup_combo(cur, a_first, a_keys, a_cum, frame_bits)
        mu_a = a_mu[combo >> 1]
        if a_fluct > 0.0:
            mu_a *= 1.0 + a_fluct * min(max(next_normal(rng_state), -5.0), 5.0)
        bs = cur + bob_off[fi]
        mu_b = 0.0
        combo_b = 0
        if bs >= 0:
            combo_b = lookup_combo(bs, b_first, b_keys, b_cum, frame_bits)
            mu_b = b_mu[combo_b >> 1]
            if b_fluct > 0.0:
                mu_b *= 1.0 + b_fluct * min(max(next_normal(rng_state), -5.0), 5.0)
        u = next_uniform(rng_state) * bound
        light = trans_a[fi] * mu_a + trans_b[fi] * mu_b
        if u > _slot_bound(min_clicks, dark_max, eff_max, light):
            continue  # cheap rejection: this slot's intensities cannot reach u
        bit = lookup_bit(cur, a_bitkey)
        if a_flip > 0.0 and next_uniform(rng_state) <= a_flip:
            bit ^= 1
        basis = combo & 1
        ua0 = unit_a[fi, 0, 0] * jones[basis, bit, 0] + unit_a[fi, 0, 1] * jones[basis, bit, 1]
        ua1 = unit_a[fi, 1, 0] * jones[basis, bit, 0] + unit_a[fi, 1, 1] * jones[basis, bit, 1]
        vb0 = 0.0 + 0.0j
        vb1 = 0.0 + 0.0j
        if bs >= 0:
            bit_b = lookup_bit(bs, b_bitkey)
            if b_flip > 0.0 and next_uniform(rng_state) <= b_flip:
                bit_b ^= 1
            basis_b = combo_b & 1
            vb0 = (unit_b[fi, 0, 0] * jones[basis_b, bit_b, 0]
                   + unit_b[fi, 0, 1] * jones[basis_b, bit_b, 1])
            vb1 = (unit_b[fi, 1, 0] * jones[basis_b, bit_b, 0]
                   + unit_b[fi, 1, 1] * jones[basis_b, bit_b, 1])
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
        inc_h = inc * (vb0.real * vb0.real + vb0.imag * vb0.imag)
        inc_v = inc * (vb1.real * vb1.real + vb1.imag * vb1.imag)
        n0 = abs2(xh + yh) + inc_h
        n1 = abs2(xv + yv) + inc_v
        n2 = abs2(xh - yh) + inc_h
        n3 = abs2(xv - yv) + inc_v
        q[0] = (1.0 - pd[0]) * np.exp(-n0 * eff[0])
        q[1] = (1.0 - pd[1]) * np.exp(-n1 * eff[1])
        q[2] = (1.0 - pd[2]) * np.exp(-n2 * eff[2])
        q[3] = (1.0 - pd[3]) * np.exp(-n3 * eff[3])
        p_none = q[0] * q[1] * q[2] * q[3]
        p_one = 0.0
        for k in range(4):
            p[k] = 1.0 - q[k]
            p_one += p[k] * (p_none / q[k]) if q[k] > 0.0 else 0.0
        p_accept = 1.0 - p_none if min_clicks == 1 else 1.0 - p_none - p_one
        if u > p_accept:  # accept with probability P(≥ min_clicks | φ) / bound
            continue
        p_multi = 0.0
        for c in multi_patterns:
            p_multi += _pattern_prob(c, p, q)
        target = next_uniform(rng_state) * p_multi
        acc = 0.0
        chosen = multi_patterns[multi_patterns.size - 1]
        for c in multi_patterns:
            acc += _pattern_prob(c, p, q)
            if target <= acc:
                chosen = c
                break
        out_slot[n_out] = cur
        out_pattern[n_out] = chosen
        n_out += 1
    return s, n_out


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
    B = 6d² + 3dηM + (3/8)η²M², at the brightest settings of the range. With ``min_clicks=1``
    (skip empty slots): P(≥1) ≤ 1 − (1−d)⁴ e^{−ηM}.
    """
    light = (physics.transmittance_a.max() * alice.plan.mean_photon_numbers.max()
             * link.source_a.max_fluctuation_factor
             + physics.transmittance_b.max() * bob.plan.mean_photon_numbers.max()
             * link.source_b.max_fluctuation_factor)
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
    """Skip only the empty slots (PHYSICS.md §7): every click is drawn, so singles and
    coincidences come from one exact joint law. Slower than ``sample_fast`` by the ratio of
    single clicks to coincidences."""
    return _thin(link, alice, bob, start, stop, seed, workers, min_clicks=1)


def _thin(link: Link, alice: SettingsGenerator, bob: SettingsGenerator, start: int, stop: int,
          seed: int, workers: int | None, min_clicks: int) -> RelayOutput:
    _check_range(start, stop)
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
    shared = (physics.frame_bits, physics.first_frame, physics.transmittance_a,
              physics.transmittance_b, physics.unitary_a, physics.unitary_b, physics.gamma,
              physics.bob_slot_offset,
              ta.first_frame, ta.frame_keys, ta.cum_counts, np.uint64(alice.key),
              alice.plan.mean_photon_numbers, link.source_a.intensity_fluctuation_rel,
              link.source_a.bit_flip_probability,
              tb.first_frame, tb.frame_keys, tb.cum_counts, np.uint64(bob.key),
              bob.plan.mean_photon_numbers, link.source_b.intensity_fluctuation_rel,
              link.source_b.bit_flip_probability,
              link.relay.efficiencies, link.relay.dark_count_probabilities,
              link.source_a.phase_randomized or link.source_b.phase_randomized,
              JONES, patterns, min_clicks)

    def run_chunk(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        state = make_state(seed * 1_000_003 + lo // FAST_CHUNK_SLOTS)
        capacity = int(min(1 << 22, bound * (hi - lo) * 1.2 + 1024))
        slots_parts, pattern_parts = [], []
        position = lo
        while position < hi:
            out_slot = np.empty(capacity, dtype=np.int64)
            out_pattern = np.empty(capacity, dtype=np.uint8)
            position, n = _fast_kernel(np.int64(position), np.int64(hi), bound, state, *shared,
                                       out_slot, out_pattern)
            slots_parts.append(out_slot[:n])
            pattern_parts.append(out_pattern[:n])
        return np.concatenate(slots_parts), np.concatenate(pattern_parts)

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
    return RelayOutput(start, stop, _records(slots, found, physics, link, rng), singles)


def singles_probabilities(link: Link, physics: FramePhysics, alice: SettingsGenerator,
                          bob: SettingsGenerator) -> np.ndarray:
    """(n_frames, 4) P(detector k clicks in a slot), averaged over phase and settings, exactly."""
    relay = link.relay
    pa = np.repeat(alice.plan.combo_probabilities, 2) / 2  # (combo, bit) flattened
    pb = np.repeat(bob.plan.combo_probabilities, 2) / 2
    mu_a = np.repeat(alice.plan.mean_photon_numbers, 4)
    mu_b = np.repeat(bob.plan.mean_photon_numbers, 4)
    basis = np.tile(np.repeat([0, 1], 2), alice.plan.n_combos // 2)
    bit = np.tile([0, 1], alice.plan.n_combos)
    basis_b = np.tile(np.repeat([0, 1], 2), bob.plan.n_combos // 2)
    bit_b = np.tile([0, 1], bob.plan.n_combos)
    u = np.einsum("fij,cj->fci", physics.unitary_a, JONES[basis, bit])  # (F, Ca, 2)
    v = np.einsum("fij,cj->fci", physics.unitary_b, JONES[basis_b, bit_b])
    xa = np.sqrt(physics.transmittance_a[:, None, None] * mu_a[None, :, None] / 2) * np.concatenate(
        [u, u], axis=2)  # (F, Ca, 4)
    yb = np.sqrt(physics.transmittance_b[:, None, None] * mu_b[None, :, None] / 2) * np.concatenate(
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
    weights = pa[None, :, None, None] * pb[None, None, :, None]
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
    """Dispatch to a sampler by name (``fast`` is the default)."""
    if sampler == "fast":
        return sample_fast(link, alice, bob, start, stop, seed)
    if sampler == "skip-empty":
        return sample_skip_empty(link, alice, bob, start, stop, seed)
    if sampler == "reference":
        return sample_reference(link, alice, bob, start, stop, seed)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
