"""Throughput of the post-processing parts, each against a plain baseline timed in the same run.

Figures are wall-clock best-of-``repeats`` on one core, in Mbit/s of *input*. They are reported,
not asserted (machines differ); the ratio to a baseline measured in the same process is the
number to compare across machines.

* :func:`bench_amplification`: :func:`classical.amplification.toeplitz_hash` against the
  textbook method, a float64 ``numpy.fft.rfft`` cyclic convolution of seed and key of length
  ``next_fast_len(n + m - 1)``, rounded and reduced mod 2 (exact at these sizes: values are at
  most ``n < 2**53`` and the rounding error is far below 0.5; the run checks that both agree).
* :func:`bench_authentication`: tagging a ~1 MB message. Wegman–Carter is compared with a
  pure-Python evaluation of the same polynomial hash (timed on a 64 KiB prefix, scaled);
  HMAC mode with a bare ``hmac.digest(secret, message, "sha256")`` call.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.fft

from classical.amplification import toeplitz_hash
from classical.authentication import HmacAuthenticator, KeyPool, WegmanCarterAuthenticator
from classical.verification import FIELD_PRIME

__all__ = ["bench_amplification", "bench_authentication"]


def _best_seconds(action: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def _fft_toeplitz_hash(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    """Baseline: float64 FFT cyclic convolution; output i is coefficient n - 1 + i (mod 2)."""
    n = bits.size
    size = scipy.fft.next_fast_len(n + out_len - 1, real=True)
    seed_spectrum = np.fft.rfft(seed.astype(np.float64), size)
    spectrum = seed_spectrum * np.fft.rfft(bits.astype(np.float64), size)
    convolution = np.fft.irfft(spectrum, size)[n - 1 : n - 1 + out_len]
    return (np.rint(convolution).astype(np.int64) & 1).astype(np.uint8)


def bench_amplification(
    rng: np.random.Generator,
    input_bits_list: Sequence[int] = (10**6, 10**7),
    *,
    compression: float = 0.5,
    repeats: int = 3,
) -> list[dict[str, float | int | str]]:
    """Toeplitz hashing throughput for each input size (output ``compression * n`` bits).

    Returns one dict per size: ``input_bits``, ``output_bits``, ``mbit_per_s`` (input bits),
    ``reference_mbit_per_s`` (the float64 FFT baseline), ``ratio`` and ``reference`` (name).
    Raises RuntimeError if the two methods disagree.
    """
    warm = rng.integers(0, 2, 256, dtype=np.uint8)
    toeplitz_hash(warm, rng.integers(0, 2, 256 + 128 - 1, dtype=np.uint8), 128)  # JIT warm-up
    results: list[dict[str, float | int | str]] = []
    for n in input_bits_list:
        m = max(1, int(n * compression))
        bits = rng.integers(0, 2, n, dtype=np.uint8)
        seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
        fast = _best_seconds(lambda b=bits, s=seed, k=m: toeplitz_hash(b, s, k), repeats)
        reference = _best_seconds(lambda b=bits, s=seed, k=m: _fft_toeplitz_hash(b, s, k), repeats)
        if not np.array_equal(toeplitz_hash(bits, seed, m), _fft_toeplitz_hash(bits, seed, m)):
            raise RuntimeError(f"toeplitz_hash and the FFT baseline disagree at n={n}")
        results.append(
            {
                "input_bits": n,
                "output_bits": m,
                "mbit_per_s": n / fast / 1e6,
                "reference_mbit_per_s": n / reference / 1e6,
                "ratio": reference / fast,
                "reference": "numpy float64 rfft convolution, same size",
            }
        )
    return results


def _python_polynomial_hash(message: bytes, key: int) -> int:
    """The verification polynomial hash in pure Python (reference implementation)."""
    padded = message + b"\x00" * (-len(message) % 4)
    h = 0
    for i in range(0, len(padded), 4):
        h = (h + int.from_bytes(padded[i : i + 4], "big")) * key % FIELD_PRIME
    return (h + len(message)) * key % FIELD_PRIME


def bench_authentication(
    rng: np.random.Generator,
    *,
    message_bytes: int = 1 << 20,
    repeats: int = 5,
) -> list[dict[str, float | str]]:
    """Tagging throughput of both authentication modes on one ``message_bytes`` payload.

    Returns dicts with ``mode``, ``mbit_per_s``, ``reference_mbit_per_s`` and ``reference``.
    """
    payload = rng.bytes(message_bytes)
    header = b"\x01" + bytes(12)
    message_bits = 8 * message_bytes
    results: list[dict[str, float | str]] = []

    evaluations = 2
    pool = KeyPool(rng.bytes(8 * evaluations * (repeats + 4)))
    wegman_carter = WegmanCarterAuthenticator(pool, evaluations=evaluations)
    wegman_carter.tag(header, payload[:64], 0)  # JIT warm-up
    seqs = iter(range(1, repeats + 2))
    fast = _best_seconds(lambda: wegman_carter.tag(header, payload, next(seqs)), repeats)
    prefix = payload[: min(message_bytes, 1 << 16)]
    keys = [int(k) for k in rng.integers(0, FIELD_PRIME, evaluations, dtype=np.uint64)]
    slow = _best_seconds(lambda: [_python_polynomial_hash(prefix, k) for k in keys], 1)
    results.append(
        {
            "mode": WegmanCarterAuthenticator.mode,
            "mbit_per_s": message_bits / fast / 1e6,
            "reference_mbit_per_s": 8 * len(prefix) / slow / 1e6,
            "reference": "pure-Python polynomial hash, same family and evaluations",
        }
    )

    secret = rng.bytes(32)
    hmac_mode = HmacAuthenticator(secret)
    fast = _best_seconds(lambda: hmac_mode.tag(header, payload, 0), repeats)
    message = header + payload
    slow = _best_seconds(lambda: hmac.digest(secret, message, "sha256"), repeats)
    results.append(
        {
            "mode": HmacAuthenticator.mode,
            "mbit_per_s": message_bits / fast / 1e6,
            "reference_mbit_per_s": message_bits / slow / 1e6,
            "reference": "hmac.digest(secret, message, 'sha256')",
        }
    )
    return results
