"""Privacy amplification by Toeplitz hashing: exact, and fast enough for 10^7-bit blocks.

Privacy amplification compresses the reconciled key ``x`` (``n`` bits, partly known to Eve)
into ``m`` bits about which Eve knows almost nothing (leftover hash lemma). The hash is a
random Toeplitz matrix over GF(2), a 2-universal family.

Convention
----------
With ``n = len(bits)``, ``m = out_len`` and a seed of ``n + m - 1`` bits::

    T[i, j] = seed[i - j + n - 1]          (0 <= i < m, 0 <= j < n)
    output  = T @ bits  (mod 2)

so ``seed[n - 1]`` is the diagonal, ``seed[0]`` the top-right corner and ``seed[n + m - 2]`` the
bottom-left corner. Reading the bit vectors as GF(2) polynomials (``bits[j]`` is the coefficient
of ``x**j``), ``output[i]`` is the coefficient of ``x**(n - 1 + i)`` in ``seed(x) * bits(x)``:
a *middle product*. :func:`dense_toeplitz_hash` builds ``T`` explicitly with the same formula.

Why carry-less multiplication and not a floating-point FFT
----------------------------------------------------------
The textbook route computes the integer convolution ``seed * bits`` with a float64 FFT and
reduces mod 2. It is exact only while the convolution values (up to ``n``) and the rounding
error stay bounded, it holds one key bit per float64, and on the reference machine numpy's
pocketfft needs ~0.45 s per real transform of 2^24 points: three transforms cap it near
10 Mbit/s at 10^7 bits. Instead we compute the middle product directly in GF(2)[x]:

* bits are packed 64 per ``uint64`` word (``np.packbits(..., bitorder="little")``);
* a Toeplitz-matrix-vector product of ``K`` words is split Karatsuba-style into three of
  ``K/2`` words (``T = [[B, A], [C, B]]``: ``out_low = B(v0+v1) + (A+B)v1``,
  ``out_high = B(v0+v1) + (C+B)v0``; all additions are XOR);
* the leaves (8 to 64 words) are schoolbook carry-less products, computed by the CPU's
  carry-less multiply instruction (``VPCLMULQDQ`` on 512-bit vectors when present, else
  ``PCLMULQDQ``, else a portable shift-and-XOR loop, all emitted through numba).

GF(2) arithmetic has no carries and no rounding, so the result is exact for every size; there is
no block length to justify. Large problems are tiled into square ``k x k`` Toeplitz blocks
(``k = 64 K`` bits, ``K = leaf * 2**levels``), ``K`` chosen by a small cost model so that padding
stays small; blocks on the same diagonal share a seed slice.

Why a seed travels instead of the matrix
----------------------------------------
The matrix is fixed by its first row and column (``n + m - 1`` bits, ~1.9 MB for 10^7 bits);
the full matrix would be ``m * n`` bits. Alice may send those bits, or, as
:func:`seed_from_bytes` allows, a short random seed that both ends expand identically with
PCG64 seeded through a ``SeedSequence``. The seed is public: it must only be drawn after the
key is fixed and be independent of it. Expanding it with a non-cryptographic generator makes
the hash choice pseudo-random rather than uniform, which the leftover hash lemma does not cover;
the key rounds therefore send all ``n + m - 1`` seed bits (:func:`seed_bits`, a few hundred
kilobytes per round), and :func:`seed_from_bytes` is kept for benchmarks and warm-up only.
"""

from __future__ import annotations

import math

import llvmlite.binding as llvm_binding
import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "CLMUL_BACKEND",
    "dense_toeplitz_hash",
    "seed_bits",
    "seed_from_bytes",
    "toeplitz_hash",
    "toeplitz_seed_bytes",
    "toeplitz_seed_length",
]

_DENSE_MAX_ENTRIES = 50_000_000
"""Largest ``m * n`` the dense reference accepts (it materialises the matrix)."""

_U64_ZERO = np.uint64(0)


# ---------------------------------------------------------------------------------------------
# Input validation and the public API


def _as_bit_array(name: str, values: np.ndarray) -> np.ndarray:
    """Return ``values`` as a contiguous 1-D uint8 array of 0/1, or raise ValueError."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of bits, got shape {array.shape}")
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array, dtype=np.uint8)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer 0/1 values, got dtype {array.dtype}")
    if array.size and (array.max() > 1 or array.min() < 0):
        raise ValueError(f"{name} must contain only 0 and 1")
    return np.ascontiguousarray(array, dtype=np.uint8)


def toeplitz_seed_length(input_bits: int, out_len: int) -> int:
    """Number of seed bits that define an ``out_len x input_bits`` Toeplitz matrix."""
    return input_bits + out_len - 1


def _validated(
    bits: np.ndarray, seed: np.ndarray, out_len: int
) -> tuple[np.ndarray, np.ndarray, int]:
    key = _as_bit_array("bits", bits)
    n = key.size
    if n == 0:
        raise ValueError("bits must not be empty")
    if isinstance(out_len, bool) or not isinstance(out_len, int | np.integer):
        raise ValueError(f"out_len must be an integer, got {out_len!r}")
    m = int(out_len)
    if m <= 0 or m > n:
        raise ValueError(f"out_len must be in [1, len(bits)={n}], got {m}")
    seed_bits = _as_bit_array("seed", seed)
    expected = toeplitz_seed_length(n, m)
    if seed_bits.size != expected:
        raise ValueError(
            f"seed must have len(bits) + out_len - 1 = {expected} bits, got {seed_bits.size}"
        )
    return key, seed_bits, m


def dense_toeplitz_hash(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    """Reference Toeplitz hash: build ``T[i, j] = seed[i - j + n - 1]`` and return ``T @ bits % 2``.

    Plain numpy, quadratic time; for tests and baselines only (``out_len * len(bits)`` at most
    5 * 10^7). Rows are materialised in chunks; the float64 products are exact (sums <= n).
    """
    key, seed_bits, m = _validated(bits, seed, out_len)
    n = key.size
    if m * n > _DENSE_MAX_ENTRIES:
        raise ValueError(f"dense reference limited to {_DENSE_MAX_ENTRIES} matrix entries")
    key_float = key.astype(np.float64)
    cols = np.arange(n)[None, :]
    rows_per_chunk = max(1, 2_000_000 // n)
    out = np.empty(m, dtype=np.uint8)
    for first in range(0, m, rows_per_chunk):
        rows = np.arange(first, min(m, first + rows_per_chunk))[:, None]
        matrix = seed_bits[rows - cols + n - 1].astype(np.float64)
        out[first : first + rows.shape[0]] = (matrix @ key_float).astype(np.int64) & 1
    return out


def toeplitz_seed_bytes(input_bits: int, out_len: int) -> int:
    """Bytes that carry the whole seed of an ``out_len x input_bits`` Toeplitz matrix."""
    return (toeplitz_seed_length(input_bits, out_len) + 7) // 8


def seed_bits(seed: bytes | np.ndarray, input_bits: int, out_len: int) -> np.ndarray:
    """The ``input_bits + out_len - 1`` seed bits carried whole in ``seed`` (little-endian bit
    order within each byte, trailing pad bits ignored): the uniform seed privacy amplification's
    proof assumes, no expansion. Raises ValueError unless ``seed`` has exactly
    :func:`toeplitz_seed_bytes` bytes (``bytes`` or a 1-D uint8 array)."""
    if isinstance(seed, np.ndarray):
        if seed.ndim != 1 or seed.dtype != np.uint8:
            raise ValueError(f"seed array must be 1-D uint8, got {seed.ndim}-D {seed.dtype}")
        seed = seed.tobytes()
    if not isinstance(seed, bytes | bytearray):
        raise ValueError("seed must be bytes or a uint8 array")
    if input_bits <= 0 or out_len <= 0 or out_len > input_bits:
        raise ValueError(
            f"need 1 <= out_len <= input_bits, got input_bits={input_bits}, out_len={out_len}"
        )
    want = toeplitz_seed_bytes(input_bits, out_len)
    if len(seed) != want:
        raise ValueError(f"Toeplitz seed of {len(seed)} bytes, a {out_len} x {input_bits} matrix "
                         f"needs {want}")
    bits = np.unpackbits(np.frombuffer(bytes(seed), np.uint8), bitorder="little")
    return bits[:toeplitz_seed_length(input_bits, out_len)]


def seed_from_bytes(shared_seed: bytes, input_bits: int, out_len: int) -> np.ndarray:
    """Expand a short shared seed into the ``input_bits + out_len - 1`` Toeplitz seed bits.

    Deterministic: ``SeedSequence`` over the seed bytes (prefixed with a 0x01 byte so that
    leading zero bytes matter) drives a PCG64 generator whose raw 64-bit outputs are unpacked
    little-endian into bits. Both ends obtain the same matrix from a few bytes on the wire; see
    the module docstring for why this is acceptable and when to send the full seed instead.
    """
    if not isinstance(shared_seed, bytes | bytearray) or len(shared_seed) == 0:
        raise ValueError("shared_seed must be non-empty bytes")
    if input_bits <= 0 or out_len <= 0 or out_len > input_bits:
        raise ValueError(
            f"need 1 <= out_len <= input_bits, got input_bits={input_bits}, out_len={out_len}"
        )
    length = toeplitz_seed_length(input_bits, out_len)
    entropy = int.from_bytes(b"\x01" + bytes(shared_seed), "big")
    generator = np.random.PCG64(np.random.SeedSequence(entropy))
    words = generator.random_raw((length + 63) // 64).astype("<u8", copy=False)
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:length]


def toeplitz_hash(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    """Exact Toeplitz hash ``T @ bits mod 2`` with ``T[i, j] = seed[i - j + n - 1]``.

    ``bits``: the ``n`` key bits (0/1, any integer or bool dtype). ``seed``: ``n + out_len - 1``
    bits. Returns ``out_len`` bits as uint8 0/1. Raises ValueError on a wrong seed length,
    values other than 0/1, or ``out_len`` outside ``[1, n]``. Same result as
    :func:`dense_toeplitz_hash`, computed by Karatsuba over carry-less products.
    """
    key, seed_bits, m = _validated(bits, seed, out_len)
    n = key.size
    block_words, levels = _plan(n, m)
    block_bits = 64 * block_words
    row_blocks = -(-m // block_bits)
    col_blocks = -(-n // block_bits)

    padded_key = np.zeros(col_blocks * block_bits, dtype=np.uint8)
    padded_key[:n] = key
    key_words = _pack_words(padded_key)

    # Block (I, J) is the k x k Toeplitz matrix of seed bits (I - J) k + n - k + [0, 2k - 1).
    # Its middle product reads a 2k-bit slice starting one bit earlier (that first bit is never
    # used). Shifting the seed right by C k + 1 - n puts every slice start on word
    # (C - 1 + I - J) K; bits outside the real seed only meet padded rows or columns.
    shift = col_blocks * block_bits + 1 - n
    padded_seed = np.zeros((col_blocks + row_blocks) * block_bits, dtype=np.uint8)
    padded_seed[shift : shift + seed_bits.size] = seed_bits
    seed_words = _pack_words(padded_seed)

    # One buffer [seed | key | out | scratch] so the kernel works on offsets only.
    out_at = seed_words.size + key_words.size
    work_at = out_at + row_blocks * block_words
    buffer = np.zeros(work_at + 4 * block_words + 64, dtype=np.uint64)
    buffer[: seed_words.size] = seed_words
    buffer[seed_words.size : out_at] = key_words
    _tiled_middle_product(
        buffer, 0, seed_words.size, out_at, work_at, block_words, row_blocks, col_blocks
    )
    out_words = buffer[out_at:work_at]
    out = np.unpackbits(out_words.astype("<u8", copy=False).view(np.uint8), bitorder="little")
    return out[:m]


def _pack_words(bit_array: np.ndarray) -> np.ndarray:
    """Pack 0/1 bits (length a multiple of 64): bit ``j`` -> bit ``j % 64`` of word ``j // 64``."""
    packed = np.packbits(bit_array, bitorder="little")
    return np.frombuffer(packed.tobytes(), dtype="<u8").astype(np.uint64)


# ---------------------------------------------------------------------------------------------
# Carry-less multiplication primitives (numba intrinsics with a portable fallback)


def _host_features() -> set[str]:
    try:
        text = llvm_binding.get_host_cpu_features().flatten()
    except RuntimeError:
        return set()
    return {item[1:] for item in text.split(",") if item.startswith("+")}


def _select_backend() -> str:
    # Numba targets the host CPU unless told otherwise; x86 intrinsics need that target.
    if numba.config.CPU_NAME not in (None, "host") or numba.config.CPU_FEATURES is not None:
        return "software"
    features = _host_features()
    if {"vpclmulqdq", "avx512f"} <= features:
        return "vpclmulqdq-512"
    if "pclmul" in features:
        return "pclmulqdq"
    return "software"


CLMUL_BACKEND: str = _select_backend()
"""Which leaf kernel :func:`toeplitz_hash` uses on this host (informational)."""

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_I8 = ir.IntType(8)


@intrinsic
def _clmul_pclmul(typingctx, a, b):
    """128-bit carry-less product of two uint64 as (low word, high word), via PCLMULQDQ."""
    signature = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, sig, args):
        vec2 = ir.VectorType(_I64, 2)
        fn_type = ir.FunctionType(vec2, [vec2, vec2, _I8])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.x86.pclmulqdq")
        undef = ir.Constant(vec2, ir.Undefined)
        lane0 = ir.Constant(_I32, 0)
        va = builder.insert_element(undef, args[0], lane0)
        vb = builder.insert_element(undef, args[1], lane0)
        product = builder.call(fn, [va, vb, ir.Constant(_I8, 0)])
        lo = builder.extract_element(product, lane0)
        hi = builder.extract_element(product, ir.Constant(_I32, 1))
        return context.make_tuple(builder, sig.return_type, [lo, hi])

    return signature, codegen


@intrinsic
def _vpclmul_columns(typingctx, seed, seed_start, vec, vec_start, count):
    """Sum over b < count of clmul(seed[seed_start - b + q], vec[vec_start + b]), q = 0..7.

    One VPCLMULQDQ (512-bit) pair per b: lanes hold seed words (q even -> imm 0x00,
    q odd -> imm 0x01). Returns 16 words: (lo, hi) for q = 0, 2, 4, 6, then for q = 1, 3, 5, 7.
    """
    signature = types.UniTuple(types.uint64, 16)(seed, seed_start, vec, vec_start, count)

    def codegen(context, builder, sig, args):
        seed_arg, seed_start_arg, vec_arg, vec_start_arg, count_arg = args
        vec8 = ir.VectorType(_I64, 8)
        fn_type = ir.FunctionType(vec8, [vec8, vec8, _I8])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.x86.pclmulqdq.512")
        seed_ptr = context.make_array(sig.args[0])(context, builder, seed_arg).data
        vec_ptr = context.make_array(sig.args[2])(context, builder, vec_arg).data
        zero = ir.Constant(vec8, [0] * 8)
        acc_even = cgutils.alloca_once_value(builder, zero)
        acc_odd = cgutils.alloca_once_value(builder, zero)
        with cgutils.for_range(builder, count_arg) as loop:
            b = loop.index
            word_ptr = builder.gep(seed_ptr, [builder.sub(seed_start_arg, b)])
            seeds = builder.load(builder.bitcast(word_ptr, vec8.as_pointer()), align=8)
            v = builder.load(builder.gep(vec_ptr, [builder.add(vec_start_arg, b)]))
            splat = builder.insert_element(ir.Constant(vec8, ir.Undefined), v, ir.Constant(_I32, 0))
            splat = builder.shuffle_vector(
                splat, ir.Constant(vec8, ir.Undefined), ir.Constant(ir.VectorType(_I32, 8), [0] * 8)
            )
            even = builder.call(fn, [seeds, splat, ir.Constant(_I8, 0x00)])
            odd = builder.call(fn, [seeds, splat, ir.Constant(_I8, 0x01)])
            builder.store(builder.xor(builder.load(acc_even), even), acc_even)
            builder.store(builder.xor(builder.load(acc_odd), odd), acc_odd)
        even_total = builder.load(acc_even)
        odd_total = builder.load(acc_odd)
        words = [builder.extract_element(even_total, ir.Constant(_I32, i)) for i in range(8)]
        words += [builder.extract_element(odd_total, ir.Constant(_I32, i)) for i in range(8)]
        return context.make_tuple(builder, sig.return_type, words)

    return signature, codegen


@njit(cache=True)
def _clmul_software(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Portable 128-bit carry-less product (shift-and-XOR), used when no CLMUL instruction."""
    lo = np.uint64(0)
    hi = np.uint64(0)
    one = np.uint64(1)
    if b & one:
        lo ^= a
    for i in range(1, 64):
        s = np.uint64(i)
        if (b >> s) & one:
            lo ^= a << s
            hi ^= a >> np.uint64(64 - i)
    return lo, hi


# ---------------------------------------------------------------------------------------------
# Leaves: out[o0 : o0 + K] ^= middle product of S[s0 : s0 + 2K] and V[v0 : v0 + K].
# Word t of the full product S * V receives lo(S[a] V[b]) for a + b = t and hi(...) for
# a + b = t - 1; the middle product is words K .. 2K - 1.
# _leaf_pclmul and _leaf_software differ only in the carry-less multiply they inline: numba
# cannot take the intrinsic as an argument without an indirect call per word, so each backend
# gets its own copy of this short loop (cached compilation also rules out a closure factory).


@njit(cache=True)
def _leaf_pclmul(S, s0, V, v0, O, o0, K):
    carry = _U64_ZERO
    for t in range(K - 1, 2 * K):
        lo_acc = _U64_ZERO
        hi_acc = _U64_ZERO
        base = s0 + t
        for b in range(K):
            lo, hi = _clmul_pclmul(S[base - b], V[v0 + b])
            lo_acc ^= lo
            hi_acc ^= hi
        if t >= K:
            O[o0 + t - K] ^= lo_acc ^ carry
        carry = hi_acc


@njit(cache=True)
def _leaf_software(S, s0, V, v0, O, o0, K):
    carry = _U64_ZERO
    for t in range(K - 1, 2 * K):
        lo_acc = _U64_ZERO
        hi_acc = _U64_ZERO
        base = s0 + t
        for b in range(K):
            lo, hi = _clmul_software(S[base - b], V[v0 + b])
            lo_acc ^= lo
            hi_acc ^= hi
        if t >= K:
            O[o0 + t - K] ^= lo_acc ^ carry
        carry = hi_acc


@njit(cache=True)
def _leaf_vpclmul(S, s0, V, v0, O, o0, K):
    # Works on 8 output words at a time. Product word K - 1 only contributes its high half.
    if K % 8 != 0:
        _leaf_pclmul(S, s0, V, v0, O, o0, K)
        return
    carry = _U64_ZERO
    for b in range(K):
        _, hi = _clmul_pclmul(S[s0 + K - 1 - b], V[v0 + b])
        carry ^= hi
    for c in range(K, 2 * K, 8):
        r = _vpclmul_columns(S, s0 + c, V, v0, K)
        # r[2l], r[2l+1]: product word c + 2l (lo, hi); r[8+2l], r[9+2l]: word c + 2l + 1.
        o = o0 + c - K
        O[o + 0] ^= r[0] ^ carry
        O[o + 1] ^= r[8] ^ r[1]
        O[o + 2] ^= r[2] ^ r[9]
        O[o + 3] ^= r[10] ^ r[3]
        O[o + 4] ^= r[4] ^ r[11]
        O[o + 5] ^= r[12] ^ r[5]
        O[o + 6] ^= r[6] ^ r[13]
        O[o + 7] ^= r[14] ^ r[7]
        carry = r[15]


if CLMUL_BACKEND == "vpclmulqdq-512":
    _leaf = _leaf_vpclmul
    _LEAF_MAX_WORDS = 64
    _LEAF_STEP = 8
elif CLMUL_BACKEND == "pclmulqdq":
    _leaf = _leaf_pclmul
    _LEAF_MAX_WORDS = 32
    _LEAF_STEP = 1
else:
    _leaf = _leaf_software
    _LEAF_MAX_WORDS = 16
    _LEAF_STEP = 1


# ---------------------------------------------------------------------------------------------
# Karatsuba recursion and tiling


@njit(cache=True)
def _middle_product_acc(M, s0, v0, o0, K, w0):
    """M[o0:o0+K] ^= middle product of M[s0:s0+2K] and M[v0:v0+K] (a K-word Toeplitz block).

    Splitting S = M[s0:s0+2K] into A, B, C (words [0,2h), [h,3h), [2h,4h)) and V into v0, v1:
    low  = B v0 + A v1 = B (v0 + v1) + (A + B) v1
    high = C v0 + B v1 = B (v0 + v1) + (C + B) v0
    Each level uses 4h scratch words at M[w0:]; at most 4K in total down the recursion. The
    recursion runs on an explicit stack over offsets into the single buffer ``M`` (numba's
    cache cannot hold self-recursive functions); frame stage says which child comes next.
    """
    stack = np.empty((64, 6), dtype=np.int64)
    stack[0, 0] = s0
    stack[0, 1] = v0
    stack[0, 2] = o0
    stack[0, 3] = K
    stack[0, 4] = w0
    stack[0, 5] = 0
    top = 0
    while top >= 0:
        s = stack[top, 0]
        v = stack[top, 1]
        o = stack[top, 2]
        k = stack[top, 3]
        w = stack[top, 4]
        stage = stack[top, 5]
        if k <= _LEAF_MAX_WORDS or k % 2 == 1:
            _leaf(M, s, M, v, M, o, k)
            top -= 1
            continue
        h = k // 2
        x = w
        vs = w + 2 * h
        p = w + 3 * h
        # Loops run over slice views: non-negative indices let LLVM vectorise them.
        if stage == 0:
            v_lo = M[v : v + h]
            v_hi = M[v + h : v + k]
            v_sum = M[vs : vs + h]
            shared = M[p : p + h]
            for i in range(h):
                v_sum[i] = v_lo[i] ^ v_hi[i]
                shared[i] = _U64_ZERO
            child_s, child_v, child_o = s + h, vs, p  # P = B (v0 + v1)
        elif stage == 1:
            shared = M[p : p + h]
            out_lo = M[o : o + h]
            out_hi = M[o + h : o + k]
            for i in range(h):
                out_lo[i] ^= shared[i]
                out_hi[i] ^= shared[i]
            seed_a = M[s : s + k]
            seed_b = M[s + h : s + h + k]
            combined = M[x : x + k]
            for i in range(k):
                combined[i] = seed_a[i] ^ seed_b[i]
            child_s, child_v, child_o = x, v + h, o  # low ^= (A + B) v1
        elif stage == 2:
            seed_b = M[s + h : s + h + k]
            seed_c = M[s + k : s + 2 * k]
            combined = M[x : x + k]
            for i in range(k):
                combined[i] = seed_c[i] ^ seed_b[i]
            child_s, child_v, child_o = x, v, o + h  # high ^= (C + B) v0
        else:
            top -= 1
            continue
        stack[top, 5] = stage + 1
        top += 1
        stack[top, 0] = child_s
        stack[top, 1] = child_v
        stack[top, 2] = child_o
        stack[top, 3] = h
        stack[top, 4] = w + 4 * h
        stack[top, 5] = 0


@njit(cache=True)
def _tiled_middle_product(M, seed_at, key_at, out_at, work_at, K, row_blocks, col_blocks):
    """Sum the Toeplitz blocks: out block I ^= T[I - J] key block J (all offsets into M)."""
    for i in range(row_blocks):
        for j in range(col_blocks):
            s0 = seed_at + (col_blocks - 1 + i - j) * K
            _middle_product_acc(M, s0, key_at + j * K, out_at + i * K, K, work_at)


def _plan(n: int, m: int) -> tuple[int, int]:
    """Choose the block size ``K = leaf * 2**levels`` words minimising estimated leaf work.

    Cost model: ``row_blocks * col_blocks * 3**levels * leaf * (leaf + 1)`` carry-less products
    (a leaf of ``L`` words computes ``L + 1`` product words of ``L`` products each), which
    penalises padding (too large K) and the linear-in-blocks overhead of small K alike.
    Candidates: leaves of ``_LEAF_STEP`` to ``_LEAF_MAX_WORDS`` words in steps of ``_LEAF_STEP``,
    doubled ``levels`` times only where :func:`_middle_product_acc` splits ``K`` back down to
    that leaf (``levels == 0`` or ``2 * leaf > _LEAF_MAX_WORDS``), and no further than the first
    ``K`` that covers the ``m`` output bits (beyond it a doubling costs at least 1.5 times more).
    Returns ``(K, levels)`` of the cheapest; ties go to the smaller leaf, then the fewer levels.
    """
    leaves = [w for w in range(_LEAF_STEP, _LEAF_MAX_WORDS + 1, _LEAF_STEP)]
    need_words = max(1, -(-m // 64))
    best: tuple[float, int, int] | None = None
    for leaf in leaves:
        levels = 0
        while True:
            K = leaf << levels
            if levels > 0 and 2 * leaf <= _LEAF_MAX_WORDS:
                break  # this leaf would be split further; covered by a smaller leaf
            bits = 64 * K
            cost = math.ceil(m / bits) * math.ceil(n / bits) * (3.0**levels) * leaf * (leaf + 1)
            if best is None or cost < best[0]:
                best = (cost, K, levels)
            if need_words <= K:
                break
            levels += 1
    assert best is not None
    return best[1], best[2]
