"""Post-processing throughput: Cascade, privacy amplification, authentication.

Each part is timed beside a plain baseline in the same run, in Mbit/s of *input* on one core
(best of ``repeats``), and reported with ``ratio`` = part / baseline, the figure to compare across
machines.

* Cascade: :mod:`orchestration.benchmarks.cascade` (a pure-Python textbook Cascade).
* :func:`bench_amplification`: :func:`classical.amplification.toeplitz_hash` against the
  textbook method, a float64 ``numpy.fft.rfft`` cyclic convolution of seed and key of length
  ``next_fast_len(n + m - 1)``, rounded and reduced mod 2 (exact at these sizes: values are at
  most ``n < 2**53`` and the rounding error is far below 0.5; the run checks that both agree).
* :func:`bench_authentication`: tagging one message. Wegman-Carter against a pure-Python
  evaluation of the same polynomial hash (timed on a 64 KiB prefix, Mbit/s scaled); HMAC mode
  against a bare ``hmac.digest(secret, message, "sha256")`` call.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

import numpy as np
import scipy.fft

from classical.amplification import toeplitz_hash
from classical.authentication import HmacAuthenticator, KeyPool, WegmanCarterAuthenticator
from classical.verification import FIELD_PRIME
from orchestration.benchmarks.cascade import bench_cascade
from orchestration.benchmarks.timing import best_seconds

__all__ = ["bench_amplification", "bench_authentication", "bench_postprocess"]


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
        fast = best_seconds(lambda b=bits, s=seed, k=m: toeplitz_hash(b, s, k), repeats)
        reference = best_seconds(lambda b=bits, s=seed, k=m: _fft_toeplitz_hash(b, s, k), repeats)
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

    Returns dicts with ``mode``, ``mbit_per_s``, ``reference_mbit_per_s``, ``ratio`` and
    ``reference`` (name).
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
    fast = best_seconds(lambda: wegman_carter.tag(header, payload, next(seqs)), repeats)
    prefix = payload[: min(message_bytes, 1 << 16)]
    keys = [int(k) for k in rng.integers(0, FIELD_PRIME, evaluations, dtype=np.uint64)]
    slow = best_seconds(lambda: [_python_polynomial_hash(prefix, k) for k in keys], 1)
    results.append(
        {
            "mode": WegmanCarterAuthenticator.mode,
            "mbit_per_s": message_bits / fast / 1e6,
            "reference_mbit_per_s": 8 * len(prefix) / slow / 1e6,
            "ratio": message_bits / fast / (8 * len(prefix) / slow),
            "reference": "pure-Python polynomial hash, same family and evaluations",
        }
    )

    secret = rng.bytes(32)
    hmac_mode = HmacAuthenticator(secret)
    fast = best_seconds(lambda: hmac_mode.tag(header, payload, 0), repeats)
    message = header + payload
    slow = best_seconds(lambda: hmac.digest(secret, message, "sha256"), repeats)
    results.append(
        {
            "mode": HmacAuthenticator.mode,
            "mbit_per_s": message_bits / fast / 1e6,
            "reference_mbit_per_s": message_bits / slow / 1e6,
            "ratio": slow / fast,
            "reference": "hmac.digest(secret, message, 'sha256')",
        }
    )
    return results


def bench_postprocess(cascade_frames: int = 10, quick: bool = False) -> dict:
    """Cascade (``cascade_frames`` frames of 10^5 bits, a fifth as many of 10^6), amplification
    (10^6 and 10^7 bits) and authentication (1 MiB). ``quick`` (a smoke run): 10^5-bit frames
    only, a 5,000-bit Cascade baseline, 10^5 and 10^6 bits, 64 KiB.

    Returns ``{"cascade": [...], "amplification": [...], "authentication": [...]}``, the rows of
    :func:`bench_cascade`, :func:`bench_amplification` and :func:`bench_authentication`.
    """
    rng = np.random.default_rng(2026)
    blocks = (10**5,) if quick else (10**5, 10**6)
    frames = {10**5: cascade_frames, 10**6: max(1, cascade_frames // 5)}
    cascade = bench_cascade(block_bits=blocks, frames=frames, rng=rng,
                            reference_bits=5_000 if quick else 20_000)
    amplification = bench_amplification(rng, (10**5, 10**6) if quick else (10**6, 10**7))
    authentication = bench_authentication(rng, message_bytes=(1 << 16) if quick else (1 << 20))
    return {"cascade": cascade, "amplification": amplification, "authentication": authentication}
