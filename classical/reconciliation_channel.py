"""The Cascade dialogue as data: the public plan, the shuffles, parity queries and Alice's answers.

Cascade (see :mod:`classical.cascade`) is driven by Bob; Alice only ever answers one kind of
question: *"what is the parity of your key over these positions of pass ``i``'s shuffled order?"*.
This module holds everything both sides must agree on, and Alice's half of the protocol, with no
transport in it:

* :class:`CascadePlan` -- the public parameters Bob announces: key length, the shuffle seed, the
  top-level block size of each permutation pass and the number of random-bipartition passes.
* the shuffles (:func:`pass_order`), each a pure function of ``(plan.seed, pass index)``;
* :class:`ParityQueries` -- one batch of questions, three compact arrays (pass index, start, end),
  never one message per bit;
* :func:`answer_parity_queries` -- Alice's side as a pure function of her key, the plan and a batch;
  :class:`AliceParityOracle` is the same computation with its per-pass tables memoised, which is
  what a long-lived transport endpoint should hold for one frame;
* :class:`ParityChannel` -- the transport interface (one ``ask_parities`` call = one round trip),
  and :class:`InMemoryParityChannel`, which answers from Alice's key in-process.

Why a seed travels instead of the permutation
---------------------------------------------
A pass's shuffle is a permutation of ``n`` positions: sending it would cost ``n log2 n`` bits per
pass (about 200 kB per pass of a 10^5-bit frame, 17 times the key itself), all of it to be
serialised, hashed and authenticated. Both sides can instead expand the same 64-bit seed into the
same permutation, so the announcement is a few bytes and the expansion costs less than receiving
the indices would. The shuffle does not need to be secret (Cascade's
leakage is the disclosed parities, counted one bit each whatever the shuffle is) and it only needs
to look random with respect to the error pattern, which a seed chosen by Bob after the quantum phase
guarantees.

How a seed expands (both sides must derive the identical permutation)
---------------------------------------------------------------------
Each pass has its own 64-bit *stream key*, ``BLAKE2b-64(tag || seed || stream index)``
(:func:`pass_key`), and its randomness is the SplitMix64 sequence started at that key: output
``t`` (from 1) is the SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014; Vigna's constants)
applied to ``key + t * 0x9E3779B97F4A7C15`` mod 2**64 (:func:`channel.rng.splitmix64_at`, the one
SplitMix64 of the project). The generator is *counter-based* (output
``t`` is a pure function of ``(key, t)``), so it runs inside the numba kernels that consume it, with
no generator object, no ``SeedSequence`` set-up (~20 us each) and no buffer of raw words. The
keyed hash separates streams: distinct passes or seeds give unrelated keys, and a SplitMix64 stream
is only ever read from its start. It gives the same distribution of shuffles as a
``PCG64(SeedSequence(seed, spawn_key))`` per pass feeding Fisher--Yates from a raw buffer, at
about half the cost.

Two kinds of pass
-----------------
* *Permutation passes* (small blocks): a random permutation by Fisher--Yates driven by the pass's
  stream, two 32-bit draws per 64-bit output (:func:`shuffle_into`, which both sides call). The
  same kernel produces what each side needs next: the inverse permutation (Bob's position
  lookup) and the suffix XOR of a key in the new order (Alice's parity table, Bob's top-level
  parities), so no permutation is ever built twice or handed between kernels. The *first* pass
  is a random stride instead (:func:`stride_into`): ``order[p] = (a p + b) mod n`` with ``a``
  drawn in ``[n/4, 3n/4)`` and moved up to the next value coprime to ``n``, ``a`` and ``b`` from
  the pass's stream. Its blocks only
  have to be disjoint and to spread bursts of errors (consecutive key positions land at least
  ``n/4`` apart, in different blocks); their independence from the later passes' blocks comes
  from those passes' full shuffles. For i.i.d. errors any first-pass order is equivalent; what the
  stride saves is the Fisher--Yates sweep and the random-access inverse on each side (~0.3 ms of a
  10^5-bit frame per side, measured).
* *Bipartition passes* (the late passes of the optimised Cascade, whose two top-level blocks are
  "half of the key"): the pass is a uniformly random subset ``S`` of the positions, drawn as one
  random bit per position (consecutive bytes of the one stream shared by all bipartition passes).
  Its order lists ``S`` in increasing index, then the complement in increasing index, so the
  top-level blocks are ``S`` and its complement. This is the BICONF construction (random subset,
  complement corrected too) and costs ``n/8`` bytes of randomness instead of a full permutation;
  the order inside a half only affects how bisection walks it, not which error patterns the pass
  detects.

Queries and parity positions
----------------------------
A query ``(pass i, start, end)`` asks for ``XOR of key[order_i[start:end]]``. Alice answers from a
suffix-XOR table of her key in pass ``i``'s order (``table[p]`` = XOR of the key over positions
``p..n-1``, the answer is ``table[start] ^ table[end]``), so a batch costs ``O(len(batch))`` after
the table is built once per pass, in the same kernel as the shuffle (:func:`permute_into`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numba import njit
from numpy.typing import NDArray

from channel.arrays import readonly
from channel.rng import splitmix64_at
from classical.reconciliation import MAX_SEED

__all__ = [
    "AliceParityOracle",
    "CascadePlan",
    "InMemoryParityChannel",
    "ParityChannel",
    "ParityQueries",
    "answer_parity_queries",
    "as_key_bits",
    "bipartition_into",
    "bipartition_masks",
    "bipartition_sizes",
    "pass_key",
    "pass_order",
    "permute_into",
    "shuffle_into",
    "stride_into",
]

_MAX_BITS = 2**31 - 1


@dataclass(frozen=True)
class CascadePlan:
    """The public parameters of one Cascade run, announced by Bob before the first query.

    Attributes:
        n_bits: key length (bits), ``1 <= n_bits < 2**31``.
        seed: non-negative integer (< 2**128) from which every pass's shuffle is expanded.
        block_sizes: top-level block size (bits) of each permutation pass, in pass order; each in
            ``[1, n_bits]``. Pass ``i < len(block_sizes)`` is a permutation pass.
        bipartition_passes: number of random-bipartition passes that follow (two top-level blocks:
            a random subset of the key and its complement).
    """

    n_bits: int
    seed: int
    block_sizes: tuple[int, ...]
    bipartition_passes: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_bits <= _MAX_BITS:
            raise ValueError(f"n_bits must be in [1, 2**31), got {self.n_bits}")
        if not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**128), got {self.seed}")
        if not self.block_sizes:
            raise ValueError("block_sizes must name at least one permutation pass")
        for k in self.block_sizes:
            if not 1 <= k <= self.n_bits:
                raise ValueError(f"block_sizes entries must be in [1, n_bits], got {k}")
        if self.bipartition_passes < 0:
            raise ValueError(f"bipartition_passes must be >= 0, got {self.bipartition_passes}")
        if self.n_passes > np.iinfo(np.int16).max:
            raise ValueError(f"at most 32767 passes (int16 pass index), got {self.n_passes}")

    @property
    def n_passes(self) -> int:
        """Total number of passes (permutation passes, then bipartition passes)."""
        return len(self.block_sizes) + self.bipartition_passes

    def is_bipartition(self, pass_index: int) -> bool:
        """Whether pass ``pass_index`` is a random-bipartition pass."""
        return pass_index >= len(self.block_sizes)


@dataclass(frozen=True)
class ParityQueries:
    """One batch of parity questions (one round trip).

    Row ``j`` asks for the parity of Alice's key over positions ``start[j]:end[j]`` (half-open) of
    pass ``pass_index[j]``'s shuffled order. Arrays are 1-D, equal length, int16/int32/int32.
    """

    pass_index: NDArray[np.int16]
    start: NDArray[np.int32]
    end: NDArray[np.int32]

    def __post_init__(self) -> None:
        for name, dtype in (("pass_index", np.int16), ("start", np.int32), ("end", np.int32)):
            object.__setattr__(self, name, _as_index_array(getattr(self, name), dtype, name))
        if not (self.pass_index.ndim == self.start.ndim == self.end.ndim == 1):
            raise ValueError("ParityQueries arrays must be one-dimensional")
        if not (self.pass_index.size == self.start.size == self.end.size):
            raise ValueError("ParityQueries arrays must have equal lengths")

    @classmethod
    def _trusted(
        cls, pass_index: NDArray[np.int16], start: NDArray[np.int32], end: NDArray[np.int32]
    ) -> ParityQueries:
        """Wrap arrays already of the right dtypes and shapes (Bob's own kernels), unchecked."""
        queries = object.__new__(cls)
        # Filling __dict__ directly skips the frozen dataclass's per-field setattr (a few us
        # per round trip on Bob's side).
        queries.__dict__.update(pass_index=pass_index, start=start, end=end)
        return queries

    def __len__(self) -> int:
        return int(self.pass_index.size)

    def validate(self, plan: CascadePlan) -> None:
        """Raise ``ValueError`` unless every row is a non-empty range of an existing pass."""
        if len(self) == 0:
            return
        if self.pass_index.min() < 0 or self.pass_index.max() >= plan.n_passes:
            raise ValueError("queries.pass_index out of range for the plan")
        if self.start.min() < 0 or self.end.max() > plan.n_bits or np.any(self.end <= self.start):
            raise ValueError("queries.start/end must satisfy 0 <= start < end <= n_bits")


def _as_index_array(values: object, dtype: type[np.integer], name: str) -> NDArray[np.integer]:
    """Contiguous ``dtype`` copy of ``values``; refuses values that the cast would wrap."""
    arr = np.asarray(values)
    if arr.dtype != dtype:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"queries.{name} must hold integers, got dtype {arr.dtype}")
        info = np.iinfo(dtype)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise ValueError(f"queries.{name} out of range for {np.dtype(dtype).name}")
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


@runtime_checkable
class ParityChannel(Protocol):
    """Bob's view of Alice: one call is one round trip, whatever the batch size.

    Implementations carry ``plan`` to Alice (a network transport may send it once per frame and
    refer to it afterwards) and return her parities, one ``uint8`` (0/1) per query row, in order.
    """

    def ask_parities(self, plan: CascadePlan, queries: ParityQueries) -> NDArray[np.uint8]:
        """Return Alice's parity for each row of ``queries``."""
        ...


# --------------------------------------------------------------------------------------------
# Shuffles
# --------------------------------------------------------------------------------------------


_STREAM_TAG = b"mdiqkd/cascade/v2"
_NO_BITS = np.empty(0, np.uint8)
_NO_INPUT = readonly(np.empty(0, np.uint8))  # kernels read their input bits as read-only
_NO_INDEX = np.empty(0, np.int32)


def pass_key(plan: CascadePlan, pass_index: int) -> int:
    """The 64-bit key of the SplitMix64 stream that expands into pass ``pass_index``'s shuffle.

    ``key = BLAKE2b-64(tag || seed || stream)`` read little-endian, where ``tag`` is
    ``b"mdiqkd/cascade/v2"``, ``seed`` is ``plan.seed`` as 16 little-endian bytes and ``stream`` is
    4 little-endian bytes: ``i`` for permutation pass ``i`` and ``0xFFFFFFFF`` for the one stream
    shared by all bipartition passes (cut into one mask per pass, in pass order). A keyed hash
    makes the streams of distinct passes and seeds unrelated; it is computed once per pass.
    """
    if not 0 <= pass_index < plan.n_passes:
        raise ValueError(f"pass_index must be in [0, {plan.n_passes}), got {pass_index}")
    stream = 0xFFFFFFFF if plan.is_bipartition(pass_index) else pass_index
    message = _STREAM_TAG + plan.seed.to_bytes(16, "little") + stream.to_bytes(4, "little")
    return int.from_bytes(hashlib.blake2b(message, digest_size=8).digest(), "little")


@njit(cache=True)
def shuffle_into(  # pragma: no cover - numba
    key: np.uint64,
    order: NDArray[np.int32],
    bits: NDArray[np.uint8],
    suffix: NDArray[np.uint8],
    inverse: NDArray[np.int32],
) -> None:
    """Fisher--Yates of ``range(len(order))`` into ``order``, driven by the SplitMix64 stream.

    Step ``m = 0, 1, ...`` swaps position ``i = n - 1 - m`` with ``j = (u32 * (i + 1)) >> 32``
    (Lemire's multiply-shift, ``j in [0, i]``), where ``u32`` is the high half of SplitMix64
    output ``m // 2 + 1`` for even ``m`` and its low half for odd ``m``. The permutation is a
    function of ``key`` and ``n`` alone; the rest is what each side needs next, when asked for
    (pass empty arrays otherwise): ``suffix[p] = XOR of bits[order[p:]]`` (``len(suffix) ==
    n + 1``, ``suffix[n] = 0``; the parity of positions ``[s, e)`` is ``suffix[s] ^ suffix[e]``)
    and ``inverse[order[p]] = p`` (``len(inverse) == n``). Each is its own sequential sweep after
    the shuffle, not fused into it: the shuffle's random swaps overlap better in the pipeline
    without a dependent gather in the same iteration.
    """
    n = order.size
    for p in range(n):
        order[p] = p
    word = np.uint64(0)
    t = np.uint64(0)
    for m in range(n - 1):
        i = n - 1 - m
        if (m & 1) == 0:
            t += np.uint64(1)
            word = splitmix64_at(key, t)
            u = word >> np.uint64(32)
        else:
            u = word & np.uint64(0xFFFFFFFF)
        j = (u * np.uint64(i + 1)) >> np.uint64(32)
        x = order[j]
        order[j] = order[i]
        order[i] = x
    if suffix.size > 0:
        _suffix_xor_into(bits, order, suffix)
    if inverse.size > 0:
        for p in range(n):
            inverse[order[p]] = p


@njit(cache=True)
def stride_into(  # pragma: no cover - numba
    key: np.uint64,
    order: NDArray[np.int32],
    bits: NDArray[np.uint8],
    suffix: NDArray[np.uint8],
    inverse: NDArray[np.int32],
) -> None:
    """``order[p] = (a p + b) mod n``, with the extras of :func:`shuffle_into` (same contract).

    ``a`` = ``n // 4`` + (high 32 bits of SplitMix64 output 1) mod ``max(1, n // 2)``, then the
    next value coprime to ``n`` (wrapping past ``n - 1`` to 1): consecutive key indices land at
    least ``n / 4`` positions apart, so for ``n >= 4 k`` a burst of errors shorter than ``n / 4``
    never puts two of them in one block of ``k``. ``b`` = (low 32 bits) mod n. The order and the
    inverse (stepping ``p`` by ``a⁻¹`` mod ``n``) are written sequentially; the suffix sweep reads
    the key at stride ``a``.
    """
    n = order.size
    if n == 0:
        return
    word = splitmix64_at(key, np.uint64(1))
    # Every quantity below is cast to int64: numba types ``int(uint64)`` as uint64 and
    # ``int64 + uint64`` as float64, which would make the sweeps below float loops.
    a = np.int64(1)
    if n > 2:
        draw = np.int64((word >> np.uint64(32)) % np.uint64(max(1, n // 2)))
        a = np.int64(max(1, n // 4 + draw))
        while math.gcd(a, n) != 1:
            a = a + 1 if a + 1 < n else np.int64(1)
    b = np.int64((word & np.uint64(0xFFFFFFFF)) % np.uint64(n))
    x = b
    for p in range(n):
        order[p] = x
        x += a
        if x >= n:
            x -= n
    if suffix.size > 0:
        _suffix_xor_into(bits, order, suffix)
    if inverse.size > 0:
        a_inv = _inverse_mod(a, n)
        p = (n - b) * a_inv % n  # the position holding key index 0
        for y in range(n):
            inverse[y] = p
            p += a_inv
            if p >= n:
                p -= n


@njit(cache=True)
def _inverse_mod(a: int, n: int) -> int:  # pragma: no cover - numba
    """``a⁻¹ mod n`` for ``a`` coprime to ``n`` (extended Euclid); 0 when ``n == 1``."""
    if n == 1:
        return 0
    r0, r1, s0, s1 = n, a % n, 0, 1
    while r1:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        s0, s1 = s1, s0 - q * s1
    return s0 % n


@njit(cache=True)
def permute_into(  # pragma: no cover - numba
    pass_index: int,
    key: np.uint64,
    order: NDArray[np.int32],
    bits: NDArray[np.uint8],
    suffix: NDArray[np.uint8],
    inverse: NDArray[np.int32],
) -> None:
    """Permutation pass ``pass_index``'s order: a random stride for pass 0, else Fisher--Yates."""
    if pass_index == 0:
        stride_into(key, order, bits, suffix, inverse)
    else:
        shuffle_into(key, order, bits, suffix, inverse)


@njit(cache=True)
def _stream_words(key: np.uint64, count: int) -> NDArray[np.uint64]:  # pragma: no cover - numba
    """Outputs ``1 .. count`` of the SplitMix64 stream started at ``key``."""
    out = np.empty(count, np.uint64)
    for t in range(count):
        out[t] = splitmix64_at(key, np.uint64(t + 1))
    return out


@njit(cache=True)
def bipartition_into(  # pragma: no cover - numba
    mask: NDArray[np.uint8], split: int, order: NDArray[np.int32], inverse: NDArray[np.int32]
) -> None:
    """A bipartition pass's order: the subset in increasing key index, then the complement.

    ``mask``: the pass's row of :func:`bipartition_masks`; ``split``: its number of members (the
    subset fills positions ``[0, split)``); ``len(order) == n``. ``inverse[order[p]] = p`` is
    written too unless ``inverse`` is empty (as in :func:`shuffle_into`).
    """
    a = 0
    b = split
    with_inverse = inverse.size > 0
    # branch-free placement: a branch on a random subset would mispredict half the time
    for x in range(order.size):
        bit = (mask[x >> 3] >> (x & 7)) & 1
        p = b + bit * (a - b)
        order[p] = x
        if with_inverse:
            inverse[x] = p
        a += bit
        b += 1 - bit


@njit(cache=True)
def _bipartition_order(mask: NDArray[np.uint8], n: int) -> NDArray[np.int32]:  # pragma: no cover
    members = 0
    for x in range(n):
        members += (mask[x >> 3] >> (x & 7)) & 1
    order = np.empty(n, dtype=np.int32)
    bipartition_into(mask, members, order, np.empty(0, np.int32))
    return order


def bipartition_masks(plan: CascadePlan) -> NDArray[np.uint8]:
    """Subsets of all bipartition passes, bit-packed: row ``j`` is pass ``len(block_sizes) + j``.

    Bit ``x`` of the key is in the subset iff ``(row[x >> 3] >> (x & 7)) & 1`` (little-endian bit
    order, as ``np.packbits(..., bitorder="little")``); padding bits past ``n_bits`` are zero.
    The rows are consecutive bytes of the bipartition stream (its 64-bit outputs, each written as
    8 little-endian bytes), ``ceil(n_bits / 8)`` bytes per row.
    """
    n_bytes = (plan.n_bits + 7) // 8
    rows = plan.bipartition_passes
    if rows == 0:
        return np.zeros((0, n_bytes), np.uint8)
    key = np.uint64(pass_key(plan, len(plan.block_sizes)))
    words = _stream_words(key, (rows * n_bytes + 7) // 8).astype("<u8", copy=False)
    masks = words.view(np.uint8)[: rows * n_bytes].reshape(rows, n_bytes).copy()
    tail = plan.n_bits & 7
    if tail:
        masks[:, -1] &= np.uint8((1 << tail) - 1)
    return masks


def bipartition_sizes(masks: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Subset size of each row of :func:`bipartition_masks` (its number of set bits).

    Counts 64-bit words of a zero-padded copy: ``np.bitwise_count(masks).sum(axis=1)`` casts
    every byte's count to 64 bits first and took ~0.1 ms per side of a 10^5-bit frame.
    """
    rows, width = masks.shape
    padded = np.zeros((rows, -(-width // 8) * 8), np.uint8)
    padded[:, :width] = masks
    return np.bitwise_count(padded.view(np.uint64)).sum(axis=1, dtype=np.int64)


def pass_order(plan: CascadePlan, pass_index: int) -> NDArray[np.int32]:
    """Pass ``pass_index``'s shuffled order: ``order[position] = key index`` (int32, length n).

    Permutation passes: Fisher--Yates driven by the SplitMix64 stream keyed by
    :func:`pass_key` (two 32-bit draws per 64-bit output; see ``shuffle_into``), except the
    first pass, a random stride (``stride_into``; module docstring). The
    multiply-shift map's non-uniformity is below ``n / 2**32`` relative per draw (2e-5 at 10^5
    bits), immaterial for a public shuffle. Bipartition passes: subset in increasing key index,
    then the complement likewise.
    """
    if plan.is_bipartition(pass_index) and pass_index < plan.n_passes:
        mask = bipartition_masks(plan)[pass_index - len(plan.block_sizes)]
        return _bipartition_order(mask, plan.n_bits)
    order = np.empty(plan.n_bits, np.int32)
    key = np.uint64(pass_key(plan, pass_index))
    permute_into(pass_index, key, order, _NO_INPUT, _NO_BITS, _NO_INDEX)
    return order


# --------------------------------------------------------------------------------------------
# Alice
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def _suffix_xor_into(  # pragma: no cover - numba
    key: NDArray[np.uint8], order: NDArray[np.int32], out: NDArray[np.uint8]
) -> None:
    """``out[p] = XOR of key[order[p:]]``, ``out[n] = 0``, for any order (every kind of pass)."""
    acc = np.uint8(0)
    out[order.size] = acc
    for p in range(order.size - 1, -1, -1):
        acc ^= key[order[p]]
        out[p] = acc


@njit(cache=True)
def _answer(  # pragma: no cover - numba
    pass_index: NDArray[np.int16],
    start: NDArray[np.int32],
    end: NDArray[np.int32],
    n: int,
    table_row: NDArray[np.int64],
    split: NDArray[np.int64],
    top_parity: NDArray[np.uint8],
    table: NDArray[np.uint8],
    out: NDArray[np.uint8],
) -> int:
    """Fill ``out``; return -2 on an invalid row, the pass that lacks a table, or -1 when done.

    ``table_row[i] >= 0``: row of ``table`` holding pass ``i``'s suffix XOR. Otherwise pass ``i``
    is a bipartition answered from ``split[i]`` (subset size) and ``top_parity[i]`` (subset parity,
    total parity) when the query is one of its two halves.
    """
    n_pass = table_row.size
    for j in range(pass_index.size):
        i = pass_index[j]
        s = start[j]
        e = end[j]
        if i < 0 or i >= n_pass or s < 0 or e > n or e <= s:
            return -2
        r = table_row[i]
        if r >= 0:
            out[j] = table[r, s] ^ table[r, e]
        elif split[i] >= 0 and s == 0 and e == split[i]:
            out[j] = top_parity[i, 0]
        elif split[i] >= 0 and s == split[i] and e == n:
            out[j] = top_parity[i, 0] ^ top_parity[i, 1]
        else:
            return i
    return -1


def _packed_parity(packed: NDArray[np.uint8]) -> int:
    return int(np.bitwise_xor.reduce(packed, initial=np.uint8(0)).item()).bit_count() & 1


def as_key_bits(key: NDArray[np.generic], name: str) -> NDArray[np.uint8]:
    """``key`` as a contiguous 1-D uint8 array of 0/1; ``ValueError`` naming ``name`` otherwise."""
    arr = np.asarray(key)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of bits")
    if arr.dtype != np.uint8:
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name} must hold integers 0/1, got dtype {arr.dtype}")
        if arr.dtype != np.bool_ and arr.min() < 0:
            raise ValueError(f"{name} must contain only 0 and 1")
        if arr.max() > 1:
            raise ValueError(f"{name} must contain only 0 and 1")
        arr = arr.astype(np.uint8)
    elif arr.max() > 1:
        raise ValueError(f"{name} must contain only 0 and 1")
    return np.ascontiguousarray(arr)


class AliceParityOracle:
    """Alice's side for one frame: ``answer_parity_queries`` with per-pass tables memoised.

    Tables are built on first use: a suffix XOR of the key in the pass's order for permutation
    passes; for bipartition passes just the subset size and the two top-level parities, until a
    query inside a half forces the suffix table too. Holds a private read-only copy of the key;
    answers are a pure function of (key, plan, queries).
    """

    def __init__(self, alice_key: NDArray[np.generic], plan: CascadePlan) -> None:
        key = as_key_bits(alice_key, "alice_key").copy()
        if key.size != plan.n_bits:
            raise ValueError(f"alice_key has {key.size} bits but plan.n_bits is {plan.n_bits}")
        key.setflags(write=False)
        self._key = key
        self.plan = plan
        n_pass = plan.n_passes
        self._table_row = np.full(n_pass, -1, np.int64)
        self._split = np.full(n_pass, -1, np.int64)
        self._top_parity = np.zeros((n_pass, 2), np.uint8)
        self._table = np.zeros((0, plan.n_bits + 1), np.uint8)
        self._rows_used = 0
        self._scratch: NDArray[np.int32] | None = None  # one order buffer for every pass
        self._bipartition_masks: NDArray[np.uint8] | None = None

    def _masks(self) -> NDArray[np.uint8]:
        if self._bipartition_masks is None:
            self._bipartition_masks = bipartition_masks(self.plan)
        return self._bipartition_masks

    def answer(self, queries: ParityQueries) -> NDArray[np.uint8]:
        """Parities (uint8 0/1) of Alice's key for each row of ``queries``.

        Raises:
            ValueError: if a row is not a non-empty range ``0 <= start < end <= n_bits`` of an
                existing pass.
        """
        out = np.empty(len(queries), dtype=np.uint8)
        while True:
            status = _answer(
                queries.pass_index,
                queries.start,
                queries.end,
                self.plan.n_bits,
                self._table_row,
                self._split,
                self._top_parity,
                self._table,
                out,
            )
            if status == -1:
                return out
            if status == -2:
                queries.validate(self.plan)  # raises with a precise message
                raise ValueError("invalid parity query")  # pragma: no cover - validate raised
            self._build(int(status))

    def _build(self, pass_index: int) -> None:
        plan = self.plan
        if plan.is_bipartition(pass_index) and self._split[pass_index] < 0:
            # All half-key passes at once, from packed bits: n/8 byte operations per pass.
            masks = self._masks()
            packed = np.packbits(self._key, bitorder="little")
            rows = slice(len(plan.block_sizes), plan.n_passes)
            self._split[rows] = bipartition_sizes(masks)
            subset = np.bitwise_xor.reduce(packed & masks, axis=1)
            self._top_parity[rows, 0] = np.bitwise_count(subset) & 1
            self._top_parity[rows, 1] = _packed_parity(packed)
            return
        if self._rows_used == self._table.shape[0]:
            grow = max(2, len(plan.block_sizes) + 1 - self._rows_used)
            extra = np.zeros((grow, plan.n_bits + 1), np.uint8)
            self._table = extra if self._rows_used == 0 else np.concatenate([self._table, extra])
        row = self._rows_used
        if plan.is_bipartition(pass_index):
            mask = self._masks()[pass_index - len(plan.block_sizes)]
            order = _bipartition_order(mask, plan.n_bits)
            _suffix_xor_into(readonly(self._key), order, self._table[row])
        else:
            if self._scratch is None:
                self._scratch = np.empty(plan.n_bits, np.int32)
            key = np.uint64(pass_key(plan, pass_index))
            permute_into(pass_index, key, self._scratch, readonly(self._key), self._table[row],
                         _NO_INDEX)
        self._rows_used += 1
        self._table_row[pass_index] = row


def answer_parity_queries(
    alice_key: NDArray[np.generic], plan: CascadePlan, queries: ParityQueries
) -> NDArray[np.uint8]:
    """Alice's answer to one batch: the parity of her key over each queried range.

    A pure function: no state survives the call and the inputs are not modified. It rebuilds the
    tables of the passes it touches (``O(n)`` each); an endpoint serving a whole dialogue should
    keep an :class:`AliceParityOracle` per frame instead, which computes the same thing.

    Raises:
        ValueError: if the key is not a 1-D 0/1 array of ``plan.n_bits`` bits, or a query row is
            not a non-empty range of an existing pass.
    """
    return AliceParityOracle(alice_key, plan).answer(queries)


class InMemoryParityChannel:
    """A :class:`ParityChannel` that answers from Alice's key in the same process.

    Keeps one :class:`AliceParityOracle` per plan (a new plan -- a new frame or seed -- starts a
    fresh one). It counts nothing: the leakage ledger belongs to the caller.
    """

    def __init__(self, alice_key: NDArray[np.generic]) -> None:
        self._key = as_key_bits(alice_key, "alice_key").copy()
        self._oracle: AliceParityOracle | None = None

    def ask_parities(self, plan: CascadePlan, queries: ParityQueries) -> NDArray[np.uint8]:
        """Return Alice's parities for ``queries`` under ``plan`` (one round trip)."""
        if self._oracle is None or (self._oracle.plan is not plan and self._oracle.plan != plan):
            self._oracle = AliceParityOracle(self._key, plan)
        return self._oracle.answer(queries)
