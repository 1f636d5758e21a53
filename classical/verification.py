"""Key verification: an ε_cor-universal hash of the reconciled key, and the polynomial hash it uses.

After reconciliation Alice and Bob should hold the same key; verification makes
``Pr[K_A != K_B and the protocol does not abort] <= ε_cor``. Bob draws a fresh public hash key
*after* reconciliation (so it is independent of the residual errors), sends it with his tag, and
Alice compares with her own tag. The tag is disclosed, so its bits are added to the leakage ledger
(:attr:`VerificationOutcome.leaked_bits`).

Hash family (shared with :mod:`classical.authentication`)
---------------------------------------------------------
Polynomial evaluation over the prime field GF(p), ``p = 2**61 - 1`` (a Mersenne prime: reduction
is shifts and adds, and every 32-bit block is a field element). A message of ``L`` units (bits
for keys, bytes for messages) is split into ``N`` big-endian 32-bit blocks ``b_0 .. b_{N-1}`` (the
last one zero-padded) and hashed with key ``k`` as::

    h_k(m) = b_0 k^(N+1) + b_1 k^N + ... + b_{N-1} k^2 + L k      (mod p)

The length term makes messages that differ only by padding differ as polynomials, and having no
constant term makes the family ε-almost-Δ-universal (needed for Wegman–Carter): for ``m != m'``
and any ``δ``, ``h_k(m) - h_k(m') - δ`` is a nonzero polynomial of degree ``<= N + 1`` in ``k``,
so over a uniform key ``Pr[h_k(m) - h_k(m') = δ] <= (N + 1) / p``. With ``r`` independent keys the
bound is ``((N + 1) / p) ** r``.

Tag length
----------
One evaluation gives ``log2(p / (N + 1))`` bits of protection, not 61: for a 10^7-bit key
(``N + 1 ≈ 2**18.3``) that is ~42.7 bits. :func:`tag_bits_for` therefore picks the smallest number
``r`` of evaluations with ``((N + 1) / p) ** r <= ε_cor`` and returns ``tag_bits = 61 r``, which is
``ceil(log2(1/ε_cor))`` rounded up to whole field elements (and then some, for long keys). Example:
ε_cor = 1e-15 (≈ 2^-49.8) and a 10^7-bit key need ``r = 2``, i.e. 122 tag bits.

The hot loop runs in numba over 32-bit big-endian blocks of the packed key, four blocks per step
(``h <- (h + b0) k^4 + b1 k^3 + b2 k^2 + b3 k``) so the multiplications are independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from channel.arrays import readonly

__all__ = [
    "ELEMENT_BITS",
    "FIELD_PRIME",
    "VerificationOutcome",
    "collision_bound",
    "draw_hash_key",
    "polynomial_hash",
    "polynomial_hash_blocks",
    "tag_bits_for",
    "verification_tag",
    "verify",
]

FIELD_PRIME: int = (1 << 61) - 1
"""The Mersenne prime 2^61 - 1; hash keys, pads and tag elements live in [0, FIELD_PRIME)."""

ELEMENT_BITS: int = 61
"""Bits disclosed per field element of a tag (leakage accounting)."""

BLOCK_BYTES: int = 4
"""Message bytes per polynomial coefficient (each < 2^32 < p)."""

_P = np.uint64(FIELD_PRIME)
_MASK32 = np.uint64(0xFFFFFFFF)
_S3 = np.uint64(3)
_S29 = np.uint64(29)
_S32 = np.uint64(32)
_S61 = np.uint64(61)


@njit(cache=True)
def _mulmod(a: np.uint64, b: np.uint64) -> np.uint64:
    """a * b mod p for a < 2^61 + 2^33, b < 2^61, without 128-bit integers.

    a b = hi 2^64 + mid 2^32 + lo, and 2^61 = 1 (mod p) turns 2^64 into 8 and mid 2^32 into
    (mid >> 29) + (low 29 bits of mid) 2^32. The five terms sum to < 2^63.
    """
    a_hi = a >> _S32
    a_lo = a & _MASK32
    b_hi = b >> _S32
    b_lo = b & _MASK32
    lo = a_lo * b_lo
    mid = a_hi * b_lo + a_lo * b_hi
    hi = a_hi * b_hi
    r = (lo & _P) + (lo >> _S61) + (hi << _S3) + (mid >> _S29) + ((mid << _S32) & _P)
    r = (r & _P) + (r >> _S61)
    if r >= _P:
        r -= _P
    return r


@njit(cache=True)
def _addmod(a: np.uint64, b: np.uint64) -> np.uint64:
    r = a + b
    if r >= _P:
        r -= _P
    return r


@njit(cache=True)
def _block(data: np.ndarray, i: int) -> np.uint64:
    """Big-endian 32-bit block ``i`` of ``data``, zero-padded past the end."""
    start = 4 * i
    n = data.size
    if start + 4 <= n:
        return (
            (np.uint64(data[start]) << np.uint64(24))
            | (np.uint64(data[start + 1]) << np.uint64(16))
            | (np.uint64(data[start + 2]) << np.uint64(8))
            | np.uint64(data[start + 3])
        )
    value = np.uint64(0)
    for j in range(4):
        value <<= np.uint64(8)
        if start + j < n:
            value |= np.uint64(data[start + j])
    return value


@njit(cache=True)
def _fold4(t0: np.uint64, t1: np.uint64, t2: np.uint64, t3: np.uint64) -> np.uint64:
    s = t0 + t1 + t2 + t3  # each < p, so s < 2^63
    s = (s & _P) + (s >> _S61)
    if s >= _P:
        s -= _P
    return s


@njit(cache=True)
def _poly_hash_kernel(data: np.ndarray, keys: np.ndarray, length: np.uint64) -> np.ndarray:
    """h_k(data) for every k in ``keys`` (see module docstring); data is uint8.

    Keys are processed two at a time in one pass over the data: two independent
    multiplication chains keep the multiplier busy and the data is read once per pair.
    """
    n_blocks = (data.size + 3) // 4
    head = n_blocks % 4
    out = np.empty(keys.size, dtype=np.uint64)
    length_mod = length % _P
    for j in range(0, keys.size, 2):
        # A lone last key is paired with itself; its duplicate result is simply dropped.
        a1 = keys[j]
        b1 = keys[j + 1] if j + 1 < keys.size else a1
        a2 = _mulmod(a1, a1)
        a3 = _mulmod(a2, a1)
        a4 = _mulmod(a3, a1)
        b2 = _mulmod(b1, b1)
        b3 = _mulmod(b2, b1)
        b4 = _mulmod(b3, b1)
        ha = np.uint64(0)
        hb = np.uint64(0)
        for i in range(head):
            x = _block(data, i)
            ha = _mulmod(_addmod(ha, x), a1)
            hb = _mulmod(_addmod(hb, x), b1)
        for i in range(head, n_blocks, 4):
            x0 = _block(data, i)
            x1 = _block(data, i + 1)
            x2 = _block(data, i + 2)
            x3 = _block(data, i + 3)
            ha = _fold4(
                _mulmod(_addmod(ha, x0), a4), _mulmod(x1, a3), _mulmod(x2, a2), _mulmod(x3, a1)
            )
            hb = _fold4(
                _mulmod(_addmod(hb, x0), b4), _mulmod(x1, b3), _mulmod(x2, b2), _mulmod(x3, b1)
            )
        out[j] = _mulmod(_addmod(ha, length_mod), a1)
        if j + 1 < keys.size:
            out[j + 1] = _mulmod(_addmod(hb, length_mod), b1)
    return out


def _as_key_array(keys: np.ndarray | list[int] | tuple[int, ...] | int) -> np.ndarray:
    array = np.atleast_1d(np.asarray(keys))
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
        raise ValueError("hash keys must be a non-empty 1-D array of integers")
    if np.any(array < 0) or np.any(array.astype(np.uint64) >= _P):
        raise ValueError(f"hash keys must lie in [0, {FIELD_PRIME})")
    return np.ascontiguousarray(array, dtype=np.uint64)


def polynomial_hash_blocks(length_bytes: int) -> int:
    """Number ``N`` of 32-bit blocks for a message of ``length_bytes`` bytes."""
    return -(-length_bytes // BLOCK_BYTES)


def polynomial_hash(
    data: bytes | bytearray | memoryview | np.ndarray,
    keys: np.ndarray | list[int] | tuple[int, ...] | int,
    length: int,
) -> np.ndarray:
    """Evaluate ``h_k(data)`` over GF(2^61 - 1) for each key; returns uint64 values < p.

    ``data``: the message bytes (or a uint8 array). ``length``: the message length in the
    caller's unit (bits for keys, bytes for messages), hashed in so that zero padding is
    unambiguous. Per key, distinct messages of at most ``N`` blocks collide with probability
    at most ``(N + 1) / p``.
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError("data array must be 1-D uint8")
        array = np.ascontiguousarray(data)
    else:
        array = np.frombuffer(data, dtype=np.uint8)
    if length < 0:
        raise ValueError("length must be non-negative")
    return _poly_hash_kernel(readonly(array), _as_key_array(keys), np.uint64(length))


# ---------------------------------------------------------------------------------------------
# Key verification


@dataclass(frozen=True)
class VerificationOutcome:
    """Result of comparing verification tags.

    ``matched``: tags equal (keys equal except with probability <= ``collision_bound``).
    ``leaked_bits``: tag bits disclosed on the public channel; add them to the leakage ledger.
    ``collision_bound``: ``((N + 1) / p) ** r`` for this key length and tag.
    """

    matched: bool
    leaked_bits: int
    collision_bound: float


def _blocks_for_bits(n_key_bits: int) -> int:
    return polynomial_hash_blocks(-(-n_key_bits // 8))


def collision_bound(n_key_bits: int, tag_bits: int) -> float:
    """Probability bound that two different ``n_key_bits``-bit keys get equal ``tag_bits`` tags."""
    evaluations = _evaluations(tag_bits)
    return ((_blocks_for_bits(n_key_bits) + 1) / FIELD_PRIME) ** evaluations


def tag_bits_for(n_key_bits: int, epsilon_cor: float) -> int:
    """Tag length (a multiple of 61) whose collision bound is at most ``epsilon_cor``.

    This is ``61 r`` for the smallest ``r`` with ``((N + 1) / p) ** r <= epsilon_cor``, always at
    least ``ceil(log2(1 / epsilon_cor))``.
    """
    if n_key_bits <= 0:
        raise ValueError("n_key_bits must be positive")
    if not 0.0 < epsilon_cor < 1.0:
        raise ValueError("epsilon_cor must be in (0, 1)")
    per_evaluation = math.log2(_blocks_for_bits(n_key_bits) + 1) - math.log2(FIELD_PRIME)
    evaluations = max(1, math.ceil(math.log2(epsilon_cor) / per_evaluation - 1e-12))
    while ((_blocks_for_bits(n_key_bits) + 1) / FIELD_PRIME) ** evaluations > epsilon_cor:
        evaluations += 1
    return ELEMENT_BITS * evaluations


def _evaluations(tag_bits: int) -> int:
    if isinstance(tag_bits, bool) or tag_bits <= 0 or tag_bits % ELEMENT_BITS:
        raise ValueError(f"tag_bits must be a positive multiple of {ELEMENT_BITS}, got {tag_bits}")
    return tag_bits // ELEMENT_BITS


def draw_hash_key(rng: np.random.Generator, tag_bits: int) -> np.ndarray:
    """Draw the ``tag_bits / 61`` uniform field elements of a verification hash key.

    Draw it after reconciliation; it is public and travels with the tag.
    """
    return rng.integers(0, FIELD_PRIME, size=_evaluations(tag_bits), dtype=np.uint64)


def verification_tag(bits: np.ndarray, hash_key: np.ndarray, tag_bits: int) -> np.ndarray:
    """Tag of a 0/1 key: ``tag_bits / 61`` field elements (uint64) of the polynomial hash.

    The key bits are packed 8 per byte (``np.packbits``, big bit order) and hashed with the key
    length in bits, so keys of different lengths never share a packed form.
    """
    key_bits = np.asarray(bits)
    if key_bits.ndim != 1 or key_bits.size == 0:
        raise ValueError("bits must be a non-empty 1-D array")
    if key_bits.dtype != np.bool_ and (
        key_bits.dtype.kind not in "iu" or key_bits.max() > 1 or key_bits.min() < 0
    ):
        raise ValueError("bits must contain only 0 and 1")
    keys = _as_key_array(hash_key)
    if keys.size != _evaluations(tag_bits):
        raise ValueError(
            f"hash_key must hold tag_bits / {ELEMENT_BITS} = {tag_bits // ELEMENT_BITS} elements"
        )
    packed = np.packbits(key_bits.astype(np.uint8, copy=False))
    return _poly_hash_kernel(readonly(packed), keys, np.uint64(key_bits.size))


def verify(
    bits: np.ndarray, hash_key: np.ndarray, tag_bits: int, peer_tag: np.ndarray
) -> VerificationOutcome:
    """Compare our tag of ``bits`` with the peer's; report the match and the leaked tag bits."""
    own = verification_tag(bits, hash_key, tag_bits)
    peer = np.asarray(peer_tag)
    matched = bool(peer.shape == own.shape and np.array_equal(own, peer.astype(np.uint64)))
    return VerificationOutcome(
        matched=matched,
        leaked_bits=int(tag_bits),
        collision_bound=collision_bound(int(np.asarray(bits).size), tag_bits),
    )
