"""Protocol randomness from the operating system: the ``entropy: os`` mode.

The key round draws three public random values: Cascade's shuffle seed
(``classical.cascade.plan_cascade``: ``rng.integers``), the verification hash key
(``classical.verification.draw_hash_key``: ``rng.integers``) and the privacy-amplification seed
(``classical.rounds``: ``rng.bytes``). In the default seeded mode ``rng`` is a NumPy generator
seeded from the user's protocol seed, so a run can be replayed. :class:`OsRandom` offers the same
two methods with every bit from the operating system's generator (``secrets``/``os.urandom``): a
uniform privacy-amplification seed and hash key, as the proofs assume, at the price of
reproducibility.
"""

from __future__ import annotations

import os
import secrets

import numpy as np


class OsRandom:
    """The subset of ``numpy.random.Generator`` the key round uses, from ``os.urandom``."""

    def bytes(self, length: int) -> bytes:
        return os.urandom(length)

    def integers(self, low: int, high: int, size: int | None = None,
                 dtype: type = np.int64) -> np.ndarray | int:
        """Uniform integers in [low, high) (exact: ``secrets.randbelow`` rejects, no modulo)."""
        if high <= low:
            raise ValueError(f"need low < high, got [{low}, {high})")
        if size is None:
            return dtype(low + secrets.randbelow(high - low))
        values = [low + secrets.randbelow(high - low) for _ in range(int(size))]
        return np.array(values, dtype=dtype)
