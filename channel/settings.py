"""Per-slot source settings: basis, bit and intensity class, from a counter-based generator.

A user's settings are organised in *frames* of ``2**frame_bits`` slots. For each frame the number
of slots of every (intensity class, basis) *combo* is drawn from the multinomial law (a Philox
generator keyed by the user's key and the frame number), and the combos are laid on the frame's
slots through a keyed Feistel permutation: slot ``s`` gets the combo whose cumulative-count range
contains ``perm(s mod frame)``. The bit of each slot is the top bit of a keyed hash of ``s``.

Consequences (docs/physics.md §2):
* the number of pulses sent in every class is known exactly, per frame, without enumerating slots;
* any slot's settings cost O(log combos), so nature can evaluate only the slots that click;
* the joint law equals i.i.d. draws up to the permutation's pseudo-randomness.

Combos are numbered ``combo = 2 * intensity_index + basis`` with basis 0 = Z, 1 = X.

A plan has any number of intensity classes, each with its own Z-basis probability. Two layouts
have helpers: :func:`three_intensity_plan` (μ > ν > ω, every intensity in both bases; Xu et al.,
NJP 15, 113007 (2013)) and :func:`four_intensity_plan` (Zhou, Yu & Wang, PRA 93, 042324 (2016):
signal s only in Z, for the key; decoys μ > ν only in X and a vacuum o, for estimation). In both
the signal is intensity 0, so the key class is (0, 0) (``classical.estimation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numba import njit

from channel.rng import (
    feistel_permute_rk,
    feistel_round_keys,
    hash2,
    splitmix64,
)

BASIS_Z = 0
BASIS_X = 1
BASIS_NAMES = ("Z", "X")
DEFAULT_FRAME_BITS = 20  # 1 048 576 slots, about 1 ms at 1 GHz


@dataclass(frozen=True)
class IntensityClass:
    """One intensity of the source.

    ``mean_photon_number`` is the mean photon number per pulse leaving the source; ``probability``
    the probability that a slot uses this intensity; ``z_probability`` the probability that such a
    slot is prepared in the Z basis (the rest are X).
    """

    name: str
    mean_photon_number: float
    probability: float
    z_probability: float = 0.5

    def __post_init__(self) -> None:
        if not self.mean_photon_number >= 0.0:
            raise ValueError(f"intensity {self.name!r}: mean_photon_number must be >= 0, "
                             f"got {self.mean_photon_number}")
        for attr in ("probability", "z_probability"):
            value = getattr(self, attr)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"intensity {self.name!r}: {attr} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class SettingsPlan:
    """What one user's source is configured to send (the distribution of settings)."""

    intensities: tuple[IntensityClass, ...]

    def __post_init__(self) -> None:
        if not self.intensities:
            raise ValueError("at least one intensity class is required")
        total = sum(c.probability for c in self.intensities)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"intensity probabilities must sum to 1, got {total}")
        names = [c.name for c in self.intensities]
        if len(set(names)) != len(names):
            raise ValueError(f"intensity class names must be unique, got {names}")

    @property
    def n_combos(self) -> int:
        return 2 * len(self.intensities)

    @cached_property
    def combo_probabilities(self) -> np.ndarray:
        """P(combo) for combo = 2*intensity + basis."""
        p = np.empty(self.n_combos)
        for i, c in enumerate(self.intensities):
            p[2 * i] = c.probability * c.z_probability
            p[2 * i + 1] = c.probability * (1.0 - c.z_probability)
        return p

    @cached_property
    def mean_photon_numbers(self) -> np.ndarray:
        return np.array([c.mean_photon_number for c in self.intensities], dtype=np.float64)

    @classmethod
    def fixed(cls, mean_photon_number: float, basis: int) -> SettingsPlan:
        """A source that always sends one intensity in one basis (random bits)."""
        return cls((IntensityClass("fixed", mean_photon_number, 1.0,
                                   1.0 if basis == BASIS_Z else 0.0),))


@dataclass(frozen=True)
class SlotSettings:
    """Settings of a batch of slots (plain arrays)."""

    basis: np.ndarray  # uint8, 0 = Z, 1 = X
    bit: np.ndarray  # uint8
    intensity: np.ndarray  # uint8 index into the plan's intensities


@dataclass(frozen=True)
class FrameTable:
    """Cumulative combo counts of a contiguous run of frames, in the layout the kernels read."""

    first_frame: int
    frame_keys: np.ndarray  # (n_frames,) uint64 Feistel keys
    cum_counts: np.ndarray  # (n_frames, n_combos) int64, cumulative counts per frame


@dataclass
class SettingsGenerator:
    """Counter-based settings of one user (Alice or Bob).

    ``key`` is the user's secret 64-bit key (derive it from a SeedSequence child). Two generators
    with the same plan and key produce the same settings for every slot, in any order.
    """

    plan: SettingsPlan
    key: int
    frame_bits: int = DEFAULT_FRAME_BITS
    _counts_cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.frame_bits % 2 or not 2 <= self.frame_bits <= 40:
            raise ValueError(f"frame_bits must be even and in [2, 40], got {self.frame_bits}")
        self.key = int(self.key) & 0xFFFFFFFFFFFFFFFF

    @property
    def frame_size(self) -> int:
        return 1 << self.frame_bits

    def frame_counts(self, frame: int) -> np.ndarray:
        """Number of slots of each combo in ``frame`` (a multinomial draw keyed by the frame)."""
        counts = self._counts_cache.get(frame)
        if counts is None:
            gen = np.random.Generator(np.random.Philox(key=[self.key, frame]))
            counts = gen.multinomial(self.frame_size, self.plan.combo_probabilities)
            counts = counts.astype(np.int64)
            if len(self._counts_cache) > 4096:
                self._counts_cache.clear()
            self._counts_cache[frame] = counts
        return counts

    def preload(self, first_frame: int, counts: np.ndarray) -> None:
        """Use the given per-frame class counts (e.g. as received with the pulses) for frames
        ``first_frame, first_frame + 1, …`` instead of drawing them."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[1] != self.plan.n_combos:
            raise ValueError(f"counts must have shape (frames, {self.plan.n_combos}), "
                             f"got {counts.shape}")
        if np.any(counts.sum(axis=1) != self.frame_size) or np.any(counts < 0):
            raise ValueError(f"each frame's counts must be >= 0 and sum to {self.frame_size}")
        for i, row in enumerate(counts):
            self._counts_cache[first_frame + i] = row

    def frame_key(self, frame: int) -> np.uint64:
        return hash2(np.uint64(self.key), np.uint64(frame))

    def table(self, first_frame: int, last_frame: int) -> FrameTable:
        """Kernel tables for frames ``first_frame .. last_frame`` inclusive."""
        frames = range(first_frame, last_frame + 1)
        cum = np.array([np.cumsum(self.frame_counts(f)) for f in frames], dtype=np.int64)
        keys = np.array([self.frame_key(f) for f in frames], dtype=np.uint64)
        return FrameTable(first_frame, keys, cum.reshape(len(frames), self.plan.n_combos))

    def table_for_slots(self, start: int, stop: int) -> FrameTable:
        if stop <= start:
            raise ValueError(f"empty slot range [{start}, {stop})")
        return self.table(start >> self.frame_bits, (stop - 1) >> self.frame_bits)

    def settings_at(self, slots: np.ndarray) -> SlotSettings:
        """Settings of arbitrary slots (vectorized)."""
        slots = np.asarray(slots, dtype=np.int64)
        if slots.size == 0:
            empty = np.zeros(0, np.uint8)
            return SlotSettings(empty, empty, empty)
        if slots.min() < 0:
            raise ValueError("slot indices must be non-negative")
        table = self.table(int(slots.min()) >> self.frame_bits, int(slots.max()) >> self.frame_bits)
        combo = np.empty(slots.size, dtype=np.int64)
        bit = np.empty(slots.size, dtype=np.uint8)
        _lookup_many(slots, table.first_frame, feistel_round_keys(table.frame_keys),
                     table.cum_counts, self.frame_bits, bit_hash_key(self.key), combo, bit)
        return SlotSettings((combo & 1).astype(np.uint8), bit, (combo >> 1).astype(np.uint8))

    def sent_counts(self, start: int, stop: int) -> np.ndarray:
        """Exact number of pulses sent per combo in slots ``[start, stop)``.

        Whole frames cost O(1) each; the partial frames at either end are enumerated.
        """
        if stop < start or start < 0:
            raise ValueError(f"invalid slot range [{start}, {stop})")
        counts = np.zeros(self.plan.n_combos, dtype=np.int64)
        if stop == start:
            return counts
        size = self.frame_size
        first_full = -(-start // size)
        last_full = stop // size  # exclusive
        if first_full >= last_full:  # no whole frame inside
            return self._enumerate_counts(start, stop)
        for f in range(first_full, last_full):
            counts += self.frame_counts(f)
        if start < first_full * size:
            counts += self._enumerate_counts(start, first_full * size)
        if last_full * size < stop:
            counts += self._enumerate_counts(last_full * size, stop)
        return counts

    def _enumerate_counts(self, start: int, stop: int) -> np.ndarray:
        counts = np.zeros(self.plan.n_combos, dtype=np.int64)
        chunk = 1 << 22
        for a in range(start, stop, chunk):
            s = self.settings_at(np.arange(a, min(stop, a + chunk), dtype=np.int64))
            combo = 2 * s.intensity.astype(np.int64) + s.basis
            counts += np.bincount(combo, minlength=self.plan.n_combos)
        return counts


_BIT_SALT = np.uint64(0xB17B17B17B17B17B)


def bit_hash_key(key: int) -> np.uint64:
    """The key-only half of the bit hash, computed once per user (see ``lookup_bit_hk``)."""
    return np.uint64(splitmix64(np.uint64(key) ^ _BIT_SALT))


@njit(cache=True, inline="always")
def lookup_bit_hk(slot: np.int64, hash_key: np.uint64) -> np.uint8:
    """The bit a user sends in ``slot``: the top bit of ``hash2(key ^ _BIT_SALT, slot)``, taken
    from ``hash_key = bit_hash_key(key)`` (``hash2``'s first, key-only round done once)."""
    return np.uint8(splitmix64(hash_key ^ np.uint64(slot)) >> np.uint64(63))


@njit(cache=True, inline="always")
def lookup_combo_rk(slot: np.int64, first_frame: np.int64, round_keys: np.ndarray,
                    cum_counts: np.ndarray, frame_bits: int) -> np.int64:
    """Combo of one slot: its frame's Feistel permutation (from the frames' round keys,
    ``rng.feistel_round_keys``) maps the slot to a position, and the frame's cumulative class
    counts say which class that position belongs to (combos are few: a linear scan)."""
    frame = slot >> frame_bits
    local = np.uint64(slot & ((np.int64(1) << frame_bits) - 1))
    pos = np.int64(feistel_permute_rk(round_keys[frame - first_frame], local, frame_bits))
    row = cum_counts[frame - first_frame]
    c = 0
    while pos >= row[c]:
        c += 1
    return c


@njit(cache=True)
def _lookup_many(slots, first_frame, round_keys, cum_counts, frame_bits, bit_key, combo_out,
                 bit_out):
    for i in range(slots.size):
        combo_out[i] = lookup_combo_rk(slots[i], first_frame, round_keys, cum_counts, frame_bits)
        bit_out[i] = lookup_bit_hk(slots[i], bit_key)


def three_intensity_plan(mu: float = 0.4, nu: float = 0.1, omega: float = 0.0,
                         probabilities: tuple[float, float, float] = (0.5, 0.25, 0.25),
                         z_probability: float = 0.5) -> SettingsPlan:
    """The usual signal / decoy / weak-decoy source, every intensity in both bases."""
    if not mu > nu > omega >= 0:
        raise ValueError(f"intensities must satisfy mu > nu > omega >= 0, got {mu}, {nu}, {omega}")
    names = ("mu", "nu", "omega")
    return SettingsPlan(tuple(IntensityClass(n, m, p, z_probability)
                              for n, m, p in zip(names, (mu, nu, omega), probabilities,
                                                 strict=True)))


#: Names of the four-intensity layout's classes, in plan order (intensity index 0..3).
FOUR_INTENSITY_NAMES = ("s", "mu", "nu", "o")


def four_intensity_plan(signal: float = 0.55, mu: float = 0.35, nu: float = 0.08,
                        probabilities: tuple[float, float, float, float] = (0.5, 0.05, 0.3, 0.15),
                        vacuum_z_probability: float = 0.1) -> SettingsPlan:
    """The four-intensity source of Zhou, Yu & Wang (PRA 93, 042324, 2016), in order (s, μ, ν, o).

    The signal ``signal`` is sent only in Z (it makes the key); the decoys μ > ν > 0 only in X; the
    vacuum o (mean photon number 0) in Z with ``vacuum_z_probability``, else X. A vacuum pulse has
    no basis physically, but sifting keeps a pair only when the announced bases match, so the
    vacuum's basis decides whether it pairs with the peer's signal (Z-basis (s, o), (o, s), (o, o)
    classes) or with the decoys (X-basis classes): both kinds constrain the LP decoy bounds. The
    signal may be brighter or dimmer than μ; it must differ from the decoys.

    The defaults suit a metro link (2 × 25 km, detectors of efficiency 0.8 and dark-count
    probability 10⁻⁷) and rounds of about 3·10⁹ slots: a coarse search of the finite-key length
    (LP bounds, Chernoff, ε_PE = 10⁻¹⁰, expected counts) put the weak decoy ν and the vacuum
    ahead of μ, which the bounds barely use at this size. Sending the vacuum only in X
    (``vacuum_z_probability=0``) gives about 7 % more key there; 0.1 keeps the Z-basis vacuum
    classes in the joint constraints.
    """
    if not mu > nu > 0:
        raise ValueError(f"decoys must satisfy mu > nu > 0, got mu={mu}, nu={nu}")
    if not signal > 0 or signal in (mu, nu):
        raise ValueError(f"signal must be > 0 and differ from the decoys, got signal={signal}")
    z_probabilities = (1.0, 0.0, 0.0, vacuum_z_probability)
    return SettingsPlan(tuple(IntensityClass(n, m, p, z) for n, m, p, z in zip(
        FOUR_INTENSITY_NAMES, (signal, mu, nu, 0.0), probabilities, z_probabilities,
        strict=True)))
