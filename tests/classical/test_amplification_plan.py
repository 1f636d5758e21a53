"""The Toeplitz hash's block plan: `_plan` is the cheapest tiling its documented cost model allows.

`_plan(n, m)` picks the block size ``K = leaf * 2**levels`` words (and the Karatsuba depth) that
`toeplitz_hash` tiles the ``m x n`` matrix with. Any K gives the same (exact) hash, so the hash
tests cannot tell a good plan from a bad one; these tests pin the plan to its definition instead,
with a brute force written from the rules, not from `_plan`'s code:

* a leaf is ``_LEAF_STEP`` to ``_LEAF_MAX_WORDS`` words in steps of ``_LEAF_STEP``;
* ``(leaf, levels)`` is a candidate only if `_middle_product_acc`'s recursion (split a block of
  k words while ``k > _LEAF_MAX_WORDS`` and k is even) really takes ``K`` down to that leaf in
  exactly ``levels`` splits, so that the model's cost is the work the kernel does;
* its cost is ``ceil(m / 64K) * ceil(n / 64K) * 3**levels * leaf * (leaf + 1)`` carry-less
  products (tile count, three half-size products per Karatsuba level, ``leaf + 1`` product
  words of ``leaf`` products each in a leaf);
* the cheapest candidate wins, ties to the smaller leaf, then the fewer levels.

The brute force tries every depth up to `_MAX_LEVELS`, with no stopping rule: `_plan` stops a
leaf's doubling at the first K that covers the output, which must therefore lose nothing.
Costs are exact Python integers here (`_plan` uses floats; they are exact below 2**53).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classical import amplification
from classical.amplification import toeplitz_hash, toeplitz_seed_length

# The three leaf kernels' (_LEAF_MAX_WORDS, _LEAF_STEP), as the module sets them per backend.
_BACKEND_LEAVES = {"vpclmulqdq-512": (64, 8), "pclmulqdq": (32, 1), "software": (16, 1)}
_MAX_LEVELS = 24  # K up to 2**24 words (10**9 bits), far beyond any key; costs only grow past m


def _recursion_leaf(block_words: int, leaf_max: int) -> tuple[int, int]:
    """(leaf words, splits) that `_middle_product_acc` reaches from a block of that many words."""
    k, splits = block_words, 0
    while k > leaf_max and k % 2 == 0:
        k //= 2
        splits += 1
    return k, splits


def _brute_force_plan(n: int, m: int, leaf_max: int, leaf_step: int) -> tuple[int, int]:
    candidates = []
    for leaf in range(leaf_step, leaf_max + 1, leaf_step):
        for levels in range(_MAX_LEVELS + 1):
            block = leaf * 2**levels
            if _recursion_leaf(block, leaf_max) != (leaf, levels):
                continue
            bits = 64 * block
            cost = -(-m // bits) * -(-n // bits) * 3**levels * leaf * (leaf + 1)
            candidates.append((cost, leaf, levels))
    _, leaf, levels = min(candidates)  # ties: smaller leaf, then fewer levels
    return leaf * 2**levels, levels


_SIZES = [1, 2, 63, 64, 65, 127, 128, 129, 511, 512, 513, 1000, 2047, 2048, 2049, 4095, 4096, 4097,
          8191, 20_000, 65_535, 65_537, 100_000, 131_072, 262_145, 1_000_000, 1_234_567,
          4_194_304, 8_388_609, 10_000_000]


def _grid() -> list[tuple[int, int]]:
    pairs = set()
    for n in _SIZES:
        for m in (1, 2, 63, 64, 65, 129, 4097, 65_537, n // 3, n // 2, n - 1, n, n - 64):
            if 1 <= m <= n:
                pairs.add((n, m))
    rng = np.random.default_rng(20261204)
    for _ in range(150):
        n = int(rng.integers(1, 10_000_001))
        pairs.add((n, int(rng.integers(1, n + 1))))
    return sorted(pairs)


def _use_backend(monkeypatch: pytest.MonkeyPatch, backend: str) -> tuple[int, int]:
    leaf_max, leaf_step = _BACKEND_LEAVES[backend]
    monkeypatch.setattr(amplification, "_LEAF_MAX_WORDS", leaf_max)
    monkeypatch.setattr(amplification, "_LEAF_STEP", leaf_step)
    return leaf_max, leaf_step


def test_the_module_uses_the_leaf_sizes_of_its_backend() -> None:
    leaf_max, leaf_step = _BACKEND_LEAVES[amplification.CLMUL_BACKEND]
    assert (amplification._LEAF_MAX_WORDS, amplification._LEAF_STEP) == (leaf_max, leaf_step)


@pytest.mark.parametrize("backend", sorted(_BACKEND_LEAVES))
def test_the_plan_is_the_cheapest_tiling_of_the_cost_model(monkeypatch, backend: str) -> None:
    leaf_max, leaf_step = _use_backend(monkeypatch, backend)
    plans = {(n, m): amplification._plan(n, m) for n, m in _grid()}
    wrong = [(n, m, plan, expected) for (n, m), plan in plans.items()
             if plan != (expected := _brute_force_plan(n, m, leaf_max, leaf_step))]
    assert not wrong, wrong[:5]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(_BACKEND_LEAVES)), st.integers(1, 10_000_000), st.data())
def test_the_plan_is_the_cheapest_at_any_size(backend: str, n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, n))
    leaf_max, leaf_step = _BACKEND_LEAVES[backend]
    with pytest.MonkeyPatch.context() as patch:
        _use_backend(patch, backend)
        assert amplification._plan(n, m) == _brute_force_plan(n, m, leaf_max, leaf_step)


@pytest.mark.parametrize("backend", sorted(_BACKEND_LEAVES))
@pytest.mark.parametrize(("n", "m", "expected"), [
    # Worked by hand from the cost model. One 64-bit word: the smallest leaf, one tile.
    (1, 1, {"vpclmulqdq-512": (8, 0), "pclmulqdq": (1, 0), "software": (1, 0)}),
    # 64 x 64 words. vpclmulqdq (leaves 8..64 step 8, only 40..64 split): one 64-word leaf,
    # 64 * 65 = 4160, beats 4 tiles of 32 (4 * 32 * 33 = 4224) and 40 split once (K = 80,
    # 3 * 40 * 41 = 4920). pclmulqdq (leaves 1..32, 17..32 split): 17 split twice, K = 68 (one
    # tile, 4 words of padding), 9 * 17 * 18 = 2754, beats 32 split once (3 * 32 * 33 = 3168)
    # and 18 split twice (9 * 18 * 19 = 3078). software (leaves 1..16, 9..16 split): 9 split
    # three times, K = 72, 27 * 9 * 10 = 2430, beats 16 split twice (9 * 16 * 17 = 2448).
    (4096, 4096, {"vpclmulqdq-512": (64, 0), "pclmulqdq": (68, 2), "software": (72, 3)}),
])
def test_hand_worked_plans(monkeypatch, backend: str, n: int, m: int, expected: dict) -> None:
    _use_backend(monkeypatch, backend)
    assert amplification._plan(n, m) == expected[backend]


@pytest.mark.parametrize("backend", sorted(_BACKEND_LEAVES))
def test_the_plan_is_what_the_recursion_and_the_tiling_can_run(monkeypatch, backend: str) -> None:
    leaf_max, leaf_step = _use_backend(monkeypatch, backend)
    for n, m in _grid():
        block, levels = amplification._plan(n, m)
        assert type(block) is int and type(levels) is int
        leaf, splits = _recursion_leaf(block, leaf_max)
        # the kernel ends on a leaf of the backend's sizes after exactly `levels` splits
        assert splits == levels and leaf % leaf_step == 0 and 1 <= leaf <= leaf_max
        assert levels < 63  # _middle_product_acc's explicit stack holds 64 frames
        # never more than double the output: a larger block is padding
        assert block <= max(leaf_max, 2 * math.ceil(m / 64) - 1)


def _fft_reference(bits: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    """Middle coefficients of seed(x) * bits(x), over the integers by FFT, then mod 2."""
    n = bits.size
    size = 1 << (seed.size + n - 1).bit_length()
    full = np.fft.irfft(np.fft.rfft(seed, size) * np.fft.rfft(bits, size), size)
    middle = full[n - 1 : n - 1 + m]
    rounded = np.rint(middle)
    # exact integers (at most n) once rounded: the float error must be far below 1/2
    assert np.max(np.abs(middle - rounded)) < 0.1
    return (rounded.astype(np.int64) & 1).astype(np.uint8)


def test_the_fft_reference_is_the_toeplitz_product() -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 300, dtype=np.uint8)
    seed = rng.integers(0, 2, toeplitz_seed_length(300, 120), dtype=np.uint8)
    assert np.array_equal(_fft_reference(bits, seed, 120),
                          amplification.dense_toeplitz_hash(bits, seed, 120))


@pytest.mark.parametrize(("n", "m"), [(100_000, 40_000), (150_001, 150_001), (262_145, 65)])
def test_the_planned_hash_is_exact_beyond_twenty_thousand_bits(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
    block, levels = amplification._plan(n, m)
    assert levels >= 1 or -(-n // (64 * block)) > 1  # the recursion or several tiles run
    assert np.array_equal(toeplitz_hash(bits, seed, m), _fft_reference(bits, seed, m))
