"""Counter-based randomness for the emulator's kernels.

Everything here is a pure function of (key, counter): any slot's random value can be computed on
demand, in any order, by any process, and always gives the same answer. That is what lets nature
evaluate only the slots that matter while Alice and Bob can still enumerate what they sent.

* ``splitmix64`` is the finaliser of Steele et al.'s SplitMix64 (a bijection on 64-bit words with
  good avalanche); ``hash2`` combines a key and a counter through it; ``splitmix64_at(key, t)`` is
  output ``t`` of the SplitMix64 stream started at ``key`` (the Cascade shuffles in
  ``classical.reconciliation_channel`` expand their public seeds with it).
* ``feistel_permute`` is a keyed pseudo-random permutation of ``[0, 2**bits)`` (balanced Feistel
  network, 4 rounds, ``bits`` even), used to place a frame's classes on its slots.
* ``next_u64`` / ``next_uniform`` / ``next_normal`` draw from a sequential SplitMix64 stream for
  numba kernels; its state is a one-element uint64 array (``make_state``), so that it can be passed
  in and out of ``@njit`` functions.
* ``derive_seed(seed, label, *counters)`` is the one way a seed becomes the seed of a named
  stream (a chunk's, a node's, a pre-shared secret's): distinct labels or counters give unrelated
  seeds, and no salt constant is written anywhere else.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 1.0 / 9007199254740992.0
FEISTEL_ROUNDS = 4


@njit(cache=True, inline="always")
def _mix(z: np.uint64) -> np.uint64:
    """SplitMix64's output function (Vigna's constants): a bijection on 64-bit words."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64 finaliser: a bijective 64-bit mixer."""
    return _mix(x + _GOLDEN)


@njit(cache=True, inline="always")
def splitmix64_at(key: np.uint64, t: np.uint64) -> np.uint64:
    """Output number ``t`` (from 1) of the SplitMix64 stream started at state ``key``.

    ``_mix(key + t * 0x9E3779B97F4A7C15)`` mod 2**64: a pure function of ``(key, t)``, so a
    kernel can read a stream at any counter with no generator state.
    """
    return _mix(key + t * _GOLDEN)


@njit(cache=True, inline="always")
def hash2(key: np.uint64, counter: np.uint64) -> np.uint64:
    """A keyed hash of a counter (two SplitMix64 rounds)."""
    return splitmix64(splitmix64(key) ^ counter)


@njit(cache=True, inline="always")
def to_unit(x: np.uint64) -> float:
    """Map a 64-bit word to a double in [0, 1) using its top 53 bits."""
    return float(x >> np.uint64(11)) * _TWO_POW_M53


@njit(cache=True)
def feistel_permute(key: np.uint64, x: np.uint64, bits: int) -> np.uint64:
    """Keyed bijection of [0, 2**bits) (bits even). Four balanced Feistel rounds.

    Round ``r`` uses ``F_r(R) = hash2(key ^ (r + 1), R)``; ``feistel_round_keys`` hoists the
    key-only half of that hash so kernels that permute many values of one frame pay half.
    """
    half = bits // 2
    mask = (np.uint64(1) << np.uint64(half)) - np.uint64(1)
    left = (x >> np.uint64(half)) & mask
    right = x & mask
    for r in range(FEISTEL_ROUNDS):
        f = hash2(key ^ np.uint64(r + 1), right) & mask
        left, right = right, left ^ f
    return (left << np.uint64(half)) | right


@njit(cache=True)
def feistel_round_keys(keys: np.ndarray) -> np.ndarray:
    """(n, FEISTEL_ROUNDS) round keys ``splitmix64(key ^ (r + 1))`` of each Feistel key."""
    out = np.empty((keys.size, FEISTEL_ROUNDS), dtype=np.uint64)
    for i in range(keys.size):
        for r in range(FEISTEL_ROUNDS):
            out[i, r] = splitmix64(keys[i] ^ np.uint64(r + 1))
    return out


@njit(cache=True, inline="always")
def feistel_permute_rk(round_keys: np.ndarray, x: np.uint64, bits: int) -> np.uint64:
    """``feistel_permute`` from precomputed round keys (one row of ``feistel_round_keys``)."""
    half = bits // 2
    mask = (np.uint64(1) << np.uint64(half)) - np.uint64(1)
    left = (x >> np.uint64(half)) & mask
    right = x & mask
    for r in range(FEISTEL_ROUNDS):
        f = splitmix64(round_keys[r] ^ right) & mask
        left, right = right, left ^ f
    return (left << np.uint64(half)) | right


@njit(cache=True, inline="always")
def feistel_invert_rk(round_keys: np.ndarray, y: np.uint64, bits: int) -> np.uint64:
    """Inverse of ``feistel_permute_rk``: the ``x`` with ``feistel_permute(key, x) == y``.

    A round maps ``(L, R)`` to ``(R, L ^ F_r(R))``, so undoing it maps ``(L', R')`` to
    ``(R' ^ F_r(L'), L')``; the rounds are undone last to first.
    """
    half = bits // 2
    mask = (np.uint64(1) << np.uint64(half)) - np.uint64(1)
    left = (y >> np.uint64(half)) & mask
    right = y & mask
    for r in range(FEISTEL_ROUNDS - 1, -1, -1):
        left, right = right ^ (splitmix64(round_keys[r] ^ left) & mask), left
    return (left << np.uint64(half)) | right


@njit(cache=True, inline="always")
def next_u64(state: np.ndarray) -> np.uint64:
    """Advance a SplitMix64 stream held in ``state[0]`` and return the next word."""
    state[0] = state[0] + _GOLDEN
    return _mix(state[0])


@njit(cache=True, inline="always")
def next_uniform(state: np.ndarray) -> float:
    """Uniform double in (0, 1] (never 0, so log() is always defined)."""
    return 1.0 - to_unit(next_u64(state))


@njit(cache=True, inline="always")
def next_normal(state: np.ndarray) -> float:
    """Standard normal by Box–Muller (one of the pair; simplicity over speed, used rarely)."""
    u1 = next_uniform(state)
    u2 = next_uniform(state)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def derive_seed(seed: int, label: str, *counters: int) -> int:
    """The 64-bit seed of the stream named ``label`` (and ``counters``) under ``seed``.

    BLAKE2b over an unambiguous encoding (each integer as 16 signed little-endian bytes, the label
    as UTF-8 after its length): a pure function of its arguments, the same in every process.
    """
    data = label.encode()
    h = hashlib.blake2b(digest_size=8, person=b"mdiqkd.seed")
    h.update(len(data).to_bytes(4, "little") + data)
    for n in (seed, *counters):
        h.update(int(n).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def make_state(seed: int) -> np.ndarray:
    """A kernel RNG state from an integer seed (mixed, so nearby seeds give unrelated streams)."""
    s = np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)
    return np.array([s[0]], dtype=np.uint64)


@njit(cache=True)
def keyed_uniforms(key: np.uint64, counters: np.ndarray) -> np.ndarray:
    """``to_unit(hash2(key, c))`` for each counter ``c`` (int64): a uniform in [0, 1) that is a
    pure function of the key and the counter (a slot, say), so that "is this slot selected" has
    the same answer in every process and whatever batch the slot arrives in."""
    out = np.empty(counters.size, dtype=np.float64)
    for i in range(counters.size):
        out[i] = to_unit(hash2(key, np.uint64(counters[i])))
    return out
