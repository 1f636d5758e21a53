"""Sifting: from Charles's Bell-state announcements to each user's sifted bits and class counts.

For every announced slot a user knows its own basis, bit and intensity class, and learns from the
public discussion Charles's announcement and the peer's basis and intensity class. A slot is *kept*
when Charles announced a success (ψ⁺ or ψ⁻) and the two bases match. Alice keeps her bit; Bob
applies the flip rule of LCQ Table I (Lo, Curty, Qi, PRL 108, 130503): he flips every success
except (X basis, ψ⁺), so that his bit equals Alice's when the Bell measurement was right.

Wire convention (no ``channel/`` import, docs/architecture.md §6): announcements are ``uint8`` with
``FAIL = 0``, ``PSI_PLUS = 1``, ``PSI_MINUS = 2`` (defined here; the relay's software announces
with them); bases are ``0 = Z``, ``1 = X``; a *combo* is ``2 * intensity + basis``.

Class counts. ``SiftedData.detections[i_a, i_b, basis, bell - 1]`` counts kept slots per class,
so ``bell - 1`` is 0 for ψ⁺ and 1 for ψ⁻; the first two axes have one entry per intensity of each
user (``n_intensities``: 3 in the three-intensity layout, 4 in the four-intensity one, any K ≥ 1
here). The key is the Z basis of one (Alice intensity, Bob intensity) class, the signal of each
user: index ``SIGNAL`` = 0 in both standard layouts, ``key_mask(key_intensity=…)`` otherwise.

The decoy bounds need, beside these, the number of
*sent pulse pairs* of each class, ``N(i_a, i_b, basis)`` with matching bases. Alice and Bob know
only their own per-slot settings, and enumerating both at every slot (10⁹ per emulated second) is
not done. :func:`sent_pairs` computes instead, from each user's per-block combo counts,

    N(i_a, i_b, b) = Σ_blocks  n_a,blk(i_a, b) · n_b,blk(i_b, b) / slots_blk,

the expected joint count given both users' marginal counts. With one block this is the plain
N · P_a · P_b estimate with P the observed marginal frequencies. With the settings generator's
frames as blocks (each user's classes are a uniformly random arrangement of known per-frame
counts, independently of the other user's) it is the *exact conditional expectation* of the joint
count. Blocks must cover the same slots for both users: frames align when Bob's slots meet
Alice's with no slot offset; after a clock slip, pass one block.

The joint count itself fluctuates around this expectation with relative spread ≈ 1/√N(class), a
factor √Q (≈ 10⁻²…10⁻³) below the relative Poisson spread of the class's detection count.
``classical.estimation`` does not correct for it separately: its Chernoff bounds are on detection
counts whose mean is N(class)·Q(class), and the class indicators of distinct slots, drawn without
replacement from fixed marginals, are negatively associated, for which the same Chernoff tails
hold (Dubhashi & Ranjan 1998). So the pair count is used as an expectation, not as an estimate
needing its own error bar.

Everything is vectorized over slots; the only Python loops are over a handful of classes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np

from classical.messages import Announcement

#: Bell-state announcement codes (wire convention of ``Announcement.bell``).
FAIL, PSI_PLUS, PSI_MINUS = 0, 1, 2
BASIS_Z, BASIS_X = 0, 1
BASIS_NAMES = ("Z", "X")
#: Intensity index of the signal state in the standard layouts (the key class is
#: (signal, signal, Z)): μ of (μ, ν, ω), s of (s, μ, ν, o).
SIGNAL = 0

Role = Literal["alice", "bob"]


def check_announcement(ann: Announcement, round_id: int, start_slot: int, stop_slot: int) -> None:
    """Refuse an announcement the round does not allow (``ValueError`` naming what is wrong).

    The relay is not trusted: the announcement must be for this round and exactly its slot range
    (so slots of another round cannot be announced again), ``slots`` one-dimensional integers,
    strictly increasing and inside the range (so no slot counts twice), ``bell`` the same length
    with only ψ⁺ (1) or ψ⁻ (2). Vectorized: O(n) over the announced slots.
    """
    if ann.round_id != round_id:
        raise ValueError(f"announcement is for round {ann.round_id}, the round is {round_id}")
    if (ann.start_slot, ann.stop_slot) != (start_slot, stop_slot):
        raise ValueError(f"announcement covers slots [{ann.start_slot}, {ann.stop_slot}), the "
                         f"round is [{start_slot}, {stop_slot})")
    slots, bell = ann.slots, ann.bell
    if not isinstance(slots, np.ndarray) or slots.ndim != 1 or slots.dtype.kind not in "iu":
        raise ValueError("announced slots must be a one-dimensional integer array")
    if not isinstance(bell, np.ndarray) or bell.shape != slots.shape or bell.dtype != np.uint8:
        raise ValueError(f"announced Bell states must be uint8 of the slots' shape {slots.shape}")
    if slots.size > stop_slot - start_slot:
        raise ValueError(f"{slots.size} slots announced in a round of {stop_slot - start_slot}")
    if slots.size:
        s64 = slots.astype(np.int64, copy=False)
        if s64[0] < start_slot or s64[-1] >= stop_slot:
            raise ValueError(f"announced slots run from {s64[0]} to {s64[-1]}, outside the "
                             f"round [{start_slot}, {stop_slot})")
        if np.any(s64[1:] <= s64[:-1]):
            raise ValueError("announced slots are not strictly increasing (a slot is listed "
                             "twice or out of order)")
        if not np.all((bell == PSI_PLUS) | (bell == PSI_MINUS)):
            raise ValueError("announced Bell states other than ψ⁺ (1) and ψ⁻ (2)")


def announcement_digest(ann: Announcement) -> bytes:
    """SHA-256 of an announcement (round, range, slots, Bell states): both users exchange it
    while sifting, so a relay that told them different things is caught before any key."""
    h = hashlib.sha256(struct.pack(">qqqq", ann.round_id, ann.start_slot, ann.stop_slot,
                                   int(ann.slots.size)))
    h.update(np.ascontiguousarray(ann.slots, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(ann.bell, dtype=np.uint8).tobytes())
    return h.digest()


def bob_flip(basis: np.ndarray, bell: np.ndarray) -> np.ndarray:
    """Bob's bit flip per slot (uint8 0/1): 1 for every success except (X basis, ψ⁺).

    Failed announcements get 0 (they are discarded anyway).
    """
    basis = np.asarray(basis)
    bell = np.asarray(bell)
    success = (bell == PSI_PLUS) | (bell == PSI_MINUS)
    keep_as_is = (basis == BASIS_X) & (bell == PSI_PLUS)
    return (success & ~keep_as_is).astype(np.uint8)


def sifted_errors(bits_a: np.ndarray, bits_b: np.ndarray) -> np.ndarray:
    """Boolean mask of positions where two sifted bit strings differ."""
    bits_a = np.asarray(bits_a)
    bits_b = np.asarray(bits_b)
    if bits_a.shape != bits_b.shape:
        raise ValueError(f"sifted bit strings differ in shape: {bits_a.shape} vs {bits_b.shape}")
    return bits_a != bits_b


@dataclass(frozen=True)
class SiftedData:
    """One user's view of the kept slots of a round.

    Per kept slot (arrays of equal length, in announcement order): ``index`` into the announced
    arrays, ``slot`` (the caller's slot numbers, or ``index`` when none were given), ``basis``,
    ``bell`` (PSI_PLUS or PSI_MINUS), ``intensity_a``, ``intensity_b`` and ``bits`` — this user's
    sifted bit (Bob's already flipped). ``detections[i_a, i_b, basis, bell - 1]`` (int64) counts the
    kept slots per class. ``announced`` is the number of announcements, ``successes`` those that
    were ψ⁺ or ψ⁻ (matching bases or not).
    """

    role: Role
    index: np.ndarray
    slot: np.ndarray
    basis: np.ndarray
    bell: np.ndarray
    intensity_a: np.ndarray
    intensity_b: np.ndarray
    bits: np.ndarray
    detections: np.ndarray
    announced: int
    successes: int

    def __len__(self) -> int:
        return int(self.index.size)

    def mask(self, basis: int | None = None, intensity_a: int | None = None,
             intensity_b: int | None = None, bell: int | None = None) -> np.ndarray:
        """Boolean mask over kept slots selecting one class (``None`` = any)."""
        m = np.ones(len(self), dtype=bool)
        for values, wanted in ((self.basis, basis), (self.intensity_a, intensity_a),
                               (self.intensity_b, intensity_b), (self.bell, bell)):
            if wanted is not None:
                m &= values == wanted
        return m

    def key_mask(self, bell: int | None = None,
                 key_intensity: tuple[int, int] = (SIGNAL, SIGNAL)) -> np.ndarray:
        """The key class: Z basis, the key (signal) intensity ``key_intensity`` = (Alice's,
        Bob's index) on both sides (optionally one Bell state)."""
        return self.mask(BASIS_Z, key_intensity[0], key_intensity[1], bell)


def sift(role: Role, bell: np.ndarray, own_basis: np.ndarray, own_bit: np.ndarray,
         own_intensity: np.ndarray, peer_basis: np.ndarray, peer_intensity: np.ndarray,
         n_intensities: tuple[int, int] = (3, 3),
         slots: np.ndarray | None = None) -> SiftedData:
    """Keep the successful, basis-matched slots and count them per class.

    All arrays have one entry per announced slot. ``n_intensities`` is (Alice's, Bob's) number of
    intensity classes, the shape of ``detections``' first two axes (pass (4, 4) for the
    four-intensity layout; an index beyond it raises ``ValueError``).
    """
    if role not in ("alice", "bob"):
        raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
    bell = np.asarray(bell, dtype=np.uint8)
    arrays = [np.asarray(a) for a in (own_basis, own_bit, own_intensity, peer_basis,
                                      peer_intensity)]
    n = bell.size
    if any(a.shape != (n,) for a in arrays) or bell.shape != (n,):
        raise ValueError("sift needs one-dimensional arrays of equal length, got shapes "
                         f"{[bell.shape] + [a.shape for a in arrays]}")
    own_basis, own_bit, own_intensity, peer_basis, peer_intensity = arrays
    if slots is not None:
        slots = np.asarray(slots, dtype=np.int64)
        if slots.shape != (n,):
            raise ValueError(f"slots must have shape ({n},), got {slots.shape}")
    if role == "alice":
        ia, ib = own_intensity, peer_intensity
    else:
        ia, ib = peer_intensity, own_intensity
    n_a, n_b = n_intensities
    if n and (ia.max() >= n_a or ib.max() >= n_b or ia.min() < 0 or ib.min() < 0):
        raise ValueError(f"intensity index out of range for n_intensities={n_intensities}")

    success = (bell == PSI_PLUS) | (bell == PSI_MINUS)
    keep = success & (own_basis == peer_basis)
    index = np.flatnonzero(keep)
    basis = own_basis[index].astype(np.uint8)
    kept_bell = bell[index]
    bits = own_bit[index].astype(np.uint8)
    if role == "bob":
        bits ^= bob_flip(basis, kept_bell)
    kept_ia = ia[index].astype(np.uint8)
    kept_ib = ib[index].astype(np.uint8)
    flat = _class_index(kept_ia, kept_ib, basis, kept_bell, n_b)
    detections = np.bincount(flat, minlength=n_a * n_b * 4).reshape(n_a, n_b, 2, 2)
    return SiftedData(
        role=role, index=index, slot=index if slots is None else slots[index], basis=basis,
        bell=kept_bell, intensity_a=kept_ia, intensity_b=kept_ib, bits=bits,
        detections=detections.astype(np.int64), announced=int(n), successes=int(success.sum()))


def class_errors(sifted: SiftedData, peer_bits: np.ndarray,
                 where: np.ndarray | None = None) -> np.ndarray:
    """Error counts per class, the shape of ``sifted.detections``.

    ``peer_bits`` are the other user's sifted bits at the same kept slots (as disclosed: all of
    them in tests, the X-basis ones in the protocol); ``where`` optionally restricts the count to
    a subset of kept slots (e.g. the X basis). Classes outside ``where`` count 0.
    """
    peer_bits = np.asarray(peer_bits)
    wrong = sifted_errors(sifted.bits, peer_bits)
    if where is not None:
        wrong &= np.asarray(where, dtype=bool)
    n_a, n_b = sifted.detections.shape[:2]
    flat = _class_index(sifted.intensity_a, sifted.intensity_b, sifted.basis, sifted.bell, n_b)
    counts = np.bincount(flat[wrong], minlength=n_a * n_b * 4)
    return counts.reshape(n_a, n_b, 2, 2).astype(np.int64)


def sent_pairs(sent_a: np.ndarray, sent_b: np.ndarray,
               block_slots: int | np.ndarray) -> np.ndarray:
    """Expected number of sent pulse pairs per (i_a, i_b, basis) with matching bases.

    ``sent_a``/``sent_b``: pulses sent per combo (``2 * intensity + basis``), shape (n_combos,)
    for one block or (n_blocks, n_combos); ``block_slots``: slots per block (int or
    (n_blocks,)). Returns float64 of shape (n_int_a, n_int_b, 2):
    Σ_blocks n_a(i_a, b) n_b(i_b, b) / slots (see the module docstring for why and how exact).
    """
    a = np.atleast_2d(np.asarray(sent_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(sent_b, dtype=np.float64))
    if a.shape[0] != b.shape[0] or a.shape[1] % 2 or b.shape[1] % 2:
        raise ValueError(f"sent counts must be (n_blocks, 2 * n_intensities) with the same number "
                         f"of blocks, got {a.shape} and {b.shape}")
    slots = np.broadcast_to(np.asarray(block_slots, dtype=np.float64), (a.shape[0],))
    if np.any(slots <= 0):
        raise ValueError("block_slots must be positive")
    if not (np.allclose(a.sum(axis=1), slots) and np.allclose(b.sum(axis=1), slots)):
        raise ValueError("each block's sent counts must sum to its number of slots")
    a3 = a.reshape(a.shape[0], -1, 2)  # (blocks, i_a, basis)
    b3 = b.reshape(b.shape[0], -1, 2)
    return np.einsum("kib,kjb,k->ijb", a3, b3, 1.0 / slots)


def _class_index(ia: np.ndarray, ib: np.ndarray, basis: np.ndarray, bell: np.ndarray,
                 n_b: int) -> np.ndarray:
    """Flat index of (i_a, i_b, basis, bell - 1) in a C-ordered (n_a, n_b, 2, 2) array."""
    return ((ia.astype(np.int64) * n_b + ib) * 2 + basis) * 2 + (bell.astype(np.int64) - 1)


__all__ = [
    "BASIS_NAMES", "BASIS_X", "BASIS_Z", "FAIL", "PSI_MINUS", "PSI_PLUS", "SIGNAL", "Role",
    "SiftedData", "announcement_digest", "bob_flip", "check_announcement", "class_errors",
    "sent_pairs", "sift", "sifted_errors",
]
