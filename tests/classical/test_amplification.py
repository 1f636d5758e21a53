"""Toeplitz privacy amplification: exactness against independent references, and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classical import amplification
from classical.amplification import (
    CLMUL_BACKEND,
    dense_toeplitz_hash,
    seed_bits,
    seed_from_bytes,
    toeplitz_hash,
    toeplitz_seed_bytes,
    toeplitz_seed_length,
)


def _random_problem(seed: int, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 2, n, dtype=np.uint8),
        rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8),
    )


def _convolution_reference(bits: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    """Independent exact reference: integer polynomial product, middle coefficients mod 2."""
    n = bits.size
    full = np.convolve(seed.astype(np.int64), bits.astype(np.int64))
    return (full[n - 1 : n - 1 + m] & 1).astype(np.uint8)


@st.composite
def _sizes(draw: st.DrawFn, max_n: int) -> tuple[int, int, int]:
    n = draw(st.integers(1, max_n))
    m = draw(st.one_of(st.just(1), st.just(n), st.integers(1, n)))
    return n, m, draw(st.integers(0, 2**32 - 1))


def test_dense_reference_follows_the_documented_convention() -> None:
    # T[i, j] = seed[i - j + n - 1]: build T by hand for n = 3, m = 2.
    bits = np.array([1, 0, 1], dtype=np.uint8)
    seed = np.array([1, 1, 0, 1], dtype=np.uint8)
    matrix = np.array([[seed[i - j + 2] for j in range(3)] for i in range(2)])
    assert np.array_equal(dense_toeplitz_hash(bits, seed, 2), matrix @ bits % 2)


@settings(max_examples=120, deadline=None)
@given(_sizes(max_n=700))
def test_toeplitz_hash_equals_dense_gf2_product(case: tuple[int, int, int]) -> None:
    n, m, seed = case
    bits, toeplitz_seed = _random_problem(seed, n, m)
    expected = dense_toeplitz_hash(bits, toeplitz_seed, m)
    result = toeplitz_hash(bits, toeplitz_seed, m)
    assert result.dtype == np.uint8 and result.shape == (m,)
    assert np.array_equal(result, expected)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 127, 128, 129, 511, 512, 513, 4095, 4097])
@pytest.mark.parametrize("m_choice", ["one", "all"])
def test_out_len_edge_cases_match_dense(n: int, m_choice: str) -> None:
    m = 1 if m_choice == "one" else n
    bits, seed = _random_problem(n, n, m)
    assert np.array_equal(toeplitz_hash(bits, seed, m), dense_toeplitz_hash(bits, seed, m))


@pytest.mark.parametrize(("n", "m"), [(3000, 1500), (4096, 4096), (5000, 2)])
def test_a_few_thousand_bits_match_dense(n: int, m: int) -> None:
    bits, seed = _random_problem(7, n, m)
    assert np.array_equal(toeplitz_hash(bits, seed, m), dense_toeplitz_hash(bits, seed, m))


@pytest.mark.parametrize(("n", "m"), [(12_000, 9_000), (20_000, 5_000), (9_000, 9_000)])
def test_multilevel_karatsuba_matches_convolution(n: int, m: int) -> None:
    # Sizes above the leaf size, so the Karatsuba recursion and tiling are exercised.
    bits, seed = _random_problem(n + m, n, m)
    assert np.array_equal(toeplitz_hash(bits, seed, m), _convolution_reference(bits, seed, m))


@pytest.mark.parametrize("words", [96, 128, 320, 1024])
def test_karatsuba_recursion_equals_schoolbook_leaf(words: int) -> None:
    rng = np.random.default_rng(words)
    seed_words = rng.integers(0, 2**64, 2 * words, dtype=np.uint64)
    key_words = rng.integers(0, 2**64, words, dtype=np.uint64)
    buffer = np.zeros(8 * words + 64, dtype=np.uint64)  # seed | key | out | scratch
    buffer[: 2 * words] = seed_words
    buffer[2 * words : 3 * words] = key_words
    out_at = 3 * words
    amplification._middle_product_acc(buffer, 0, 2 * words, out_at, words, 4 * words)
    expected = np.zeros(words, dtype=np.uint64)
    amplification._leaf_software(seed_words, 0, key_words, 0, expected, 0, words)
    assert np.array_equal(buffer[out_at : out_at + words], expected)


@pytest.mark.parametrize("words", [1, 3, 8, 16, 24, 40, 64])
def test_all_leaf_kernels_agree(words: int) -> None:
    # Only the host's kernel runs inside toeplitz_hash; the others are checked here.
    rng = np.random.default_rng(words)
    seed_words = rng.integers(0, 2**64, 2 * words + 3, dtype=np.uint64)
    key_words = rng.integers(0, 2**64, words + 1, dtype=np.uint64)
    leaves = [amplification._leaf_software]
    if CLMUL_BACKEND in ("pclmulqdq", "vpclmulqdq-512"):
        leaves.append(amplification._leaf_pclmul)
    if CLMUL_BACKEND == "vpclmulqdq-512":
        leaves.append(amplification._leaf_vpclmul)
    results = []
    for leaf in leaves:
        out = np.zeros(words + 2, dtype=np.uint64)
        leaf(seed_words, 3, key_words, 1, out, 1, words)
        results.append(out)
    for out in results[1:]:
        assert np.array_equal(out, results[0])


def test_bool_and_wider_integer_inputs_are_accepted() -> None:
    bits, seed = _random_problem(3, 200, 90)
    expected = dense_toeplitz_hash(bits, seed, 90)
    assert np.array_equal(toeplitz_hash(bits.astype(bool), seed.astype(np.int64), 90), expected)


def test_wrong_seed_length_is_rejected() -> None:
    bits, seed = _random_problem(1, 100, 40)
    with pytest.raises(ValueError, match="seed must have"):
        toeplitz_hash(bits, seed[:-1], 40)
    with pytest.raises(ValueError, match="seed must have"):
        toeplitz_hash(bits, np.append(seed, 0), 40)


@pytest.mark.parametrize("bad_value", [2, 255])
def test_non_binary_values_are_rejected(bad_value: int) -> None:
    bits, seed = _random_problem(1, 100, 40)
    bits[5] = bad_value
    with pytest.raises(ValueError, match="only 0 and 1"):
        toeplitz_hash(bits, seed, 40)
    with pytest.raises(ValueError, match="only 0 and 1"):
        toeplitz_hash(seed[:100], np.full(139, bad_value, dtype=np.uint8), 40)


def test_negative_values_and_floats_are_rejected() -> None:
    bits, seed = _random_problem(1, 10, 5)
    with pytest.raises(ValueError):
        toeplitz_hash(bits.astype(np.int8) - 1, seed, 5)
    with pytest.raises(ValueError, match="dtype"):
        toeplitz_hash(bits.astype(np.float64), seed, 5)


@pytest.mark.parametrize("out_len", [0, -1, 101])
def test_out_len_outside_one_to_n_is_rejected(out_len: int) -> None:
    bits = np.ones(100, dtype=np.uint8)
    seed = np.ones(max(1, 100 + out_len - 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="out_len"):
        toeplitz_hash(bits, seed, out_len)


def test_empty_and_two_dimensional_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        toeplitz_hash(np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.uint8), 1)
    with pytest.raises(ValueError, match="1-D"):
        toeplitz_hash(np.zeros((2, 2), dtype=np.uint8), np.zeros(3, dtype=np.uint8), 1)


def test_dense_reference_refuses_large_problems() -> None:
    bits = np.zeros(10_000, dtype=np.uint8)
    with pytest.raises(ValueError, match="limited"):
        dense_toeplitz_hash(bits, np.zeros(19_999, dtype=np.uint8), 10_000)


def test_seed_expansion_is_deterministic_and_sized() -> None:
    first = seed_from_bytes(b"shared seed", 1000, 400)
    assert first.shape == (1399,) and first.dtype == np.uint8
    assert set(np.unique(first)) <= {0, 1}
    assert np.array_equal(first, seed_from_bytes(b"shared seed", 1000, 400))


def test_seed_expansion_depends_on_every_seed_byte() -> None:
    base = seed_from_bytes(b"\x00\x01", 500, 200)
    assert not np.array_equal(base, seed_from_bytes(b"\x01", 500, 200))  # leading zero counts
    assert not np.array_equal(base, seed_from_bytes(b"\x00\x02", 500, 200))


def test_seed_expansion_validates_arguments() -> None:
    with pytest.raises(ValueError):
        seed_from_bytes(b"", 10, 5)
    with pytest.raises(ValueError):
        seed_from_bytes(b"x", 10, 11)


def test_expanded_seed_feeds_the_hash() -> None:
    bits = np.random.default_rng(5).integers(0, 2, 777, dtype=np.uint8)
    seed = seed_from_bytes(b"round 17", 777, 300)
    assert np.array_equal(toeplitz_hash(bits, seed, 300), dense_toeplitz_hash(bits, seed, 300))


# --- Mutation testing (docs/mutation-testing.md): each test below turns a surviving mutant red.


@pytest.mark.parametrize(("n", "m", "expected"), [(1, 1, 1), (8, 1, 1), (8, 2, 2), (5, 4, 1),
                                                  (100, 40, 18), (1000, 1000, 250)])
def test_the_whole_seed_fits_in_the_fewest_bytes(n: int, m: int, expected: int) -> None:
    assert toeplitz_seed_bytes(n, m) == expected == -(-(n + m - 1) // 8)


def test_seed_bits_are_the_sent_bytes_little_endian_without_the_padding() -> None:
    # 12 + 5 - 1 = 16 seed bits need 2 bytes; 10 + 3 - 1 = 12 bits use 12 of 16
    assert seed_bits(b"\x01\x80", 12, 5).tolist() == [1] + [0] * 14 + [1]
    twelve = seed_bits(bytes([0b1010_0101, 0b1111_0110]), 10, 3)
    assert twelve.tolist() == [1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0]
    assert twelve.dtype == np.uint8


def test_seed_bits_take_bytes_bytearrays_and_uint8_arrays_alike() -> None:
    raw = bytes(np.random.default_rng(9).integers(0, 256, toeplitz_seed_bytes(300, 100), np.uint8))
    expected = seed_bits(raw, 300, 100)
    assert expected.size == 399
    assert np.array_equal(seed_bits(bytearray(raw), 300, 100), expected)
    assert np.array_equal(seed_bits(np.frombuffer(raw, np.uint8), 300, 100), expected)


def test_seed_bits_refuse_a_seed_of_another_size_or_kind() -> None:
    raw = bytes(toeplitz_seed_bytes(300, 100))  # 50 bytes
    with pytest.raises(ValueError, match="needs 50"):
        seed_bits(raw[:-1], 300, 100)
    with pytest.raises(ValueError, match="needs 50"):
        seed_bits(raw + b"\x00", 300, 100)
    with pytest.raises(ValueError, match="1-D uint8"):
        seed_bits(np.zeros(50, np.int8), 300, 100)
    with pytest.raises(ValueError, match="1-D uint8"):
        seed_bits(np.zeros((2, 25), np.uint8), 300, 100)
    with pytest.raises(ValueError, match="bytes or a uint8 array"):
        seed_bits(list(raw), 300, 100)  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "m"), [(0, 1), (10, 0), (10, -1), (10, 11)])
def test_seed_bits_refuse_an_impossible_matrix(n: int, m: int) -> None:
    with pytest.raises(ValueError, match="1 <= out_len <= input_bits"):
        seed_bits(bytes(4), n, m)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (10, 10), (10, 1)])
def test_seed_bits_accept_the_extreme_shapes(n: int, m: int) -> None:
    assert seed_bits(bytes(toeplitz_seed_bytes(n, m)), n, m).size == n + m - 1


@pytest.mark.parametrize("out_len", [True, 2.0, 2.5, "2"], ids=repr)
def test_out_len_must_be_an_integer(out_len: object) -> None:
    bits, seed = _random_problem(1, 10, 2)
    with pytest.raises(ValueError, match="out_len must be an integer"):
        toeplitz_hash(bits, seed, out_len)  # type: ignore[arg-type]
    expected = dense_toeplitz_hash(bits, seed, 2).tolist()
    assert toeplitz_hash(bits, seed, np.int64(2)).tolist() == expected


def test_the_dense_reference_returns_bits_like_the_fast_hash() -> None:
    bits, seed = _random_problem(4, 300, 120)
    dense = dense_toeplitz_hash(bits, seed, 120)
    assert dense.dtype == np.uint8 == toeplitz_hash(bits, seed, 120).dtype


def test_seed_expansion_is_the_documented_pcg64_stream() -> None:
    # SeedSequence over 0x01 | seed bytes, PCG64 raw 64-bit outputs, bits little-endian
    length = 1000 + 400 - 1
    generator = np.random.PCG64(np.random.SeedSequence(int.from_bytes(b"\x01\x00ab", "big")))
    words = generator.random_raw(-(-length // 64)).astype("<u8")
    expected = np.unpackbits(words.view(np.uint8), bitorder="little")[:length]
    assert np.array_equal(seed_from_bytes(b"\x00ab", 1000, 400), expected)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (64, 1), (10_000, 10_000), (12_345, 678)])
def test_seed_expansion_gives_exactly_the_seed_length(n: int, m: int) -> None:
    assert seed_from_bytes(b"s", n, m).size == toeplitz_seed_length(n, m)


@pytest.mark.parametrize(("n", "m"), [(0, 1), (-1, 1), (10, 0), (10, -1), (10, 11)])
def test_seed_expansion_refuses_an_impossible_matrix(n: int, m: int) -> None:
    with pytest.raises(ValueError, match="1 <= out_len <= input_bits"):
        seed_from_bytes(b"s", n, m)


@pytest.mark.parametrize(
    ("cpu_name", "cpu_features", "host", "expected"),
    [
        (None, None, {"vpclmulqdq", "avx512f", "pclmul"}, "vpclmulqdq-512"),
        ("host", None, {"vpclmulqdq", "avx512f"}, "vpclmulqdq-512"),
        (None, None, {"vpclmulqdq", "pclmul"}, "pclmulqdq"),
        (None, None, {"avx512f", "pclmul"}, "pclmulqdq"),
        (None, None, {"pclmul"}, "pclmulqdq"),
        (None, None, {"sse2"}, "software"),
        (None, None, set(), "software"),
        ("skylake", None, {"vpclmulqdq", "avx512f", "pclmul"}, "software"),
        (None, "+pclmul", {"pclmul"}, "software"),
    ],
)
def test_the_leaf_kernel_is_one_the_target_cpu_has(monkeypatch, cpu_name, cpu_features, host,
                                                   expected) -> None:
    # an instruction the target lacks would crash (SIGILL) rather than give a wrong key
    monkeypatch.setattr(amplification.numba.config, "CPU_NAME", cpu_name)
    monkeypatch.setattr(amplification.numba.config, "CPU_FEATURES", cpu_features)
    monkeypatch.setattr(amplification, "_host_features", lambda: set(host))
    assert amplification._select_backend() == expected


def test_host_features_are_the_ones_llvm_reports_enabled(monkeypatch) -> None:
    class _Features:
        def flatten(self) -> str:
            return "+pclmul,-avx512f,+sse2,+vpclmulqdq"

    class _Binding:
        def get_host_cpu_features(self) -> _Features:
            return _Features()

    monkeypatch.setattr(amplification, "llvm_binding", _Binding())
    assert amplification._host_features() == {"pclmul", "sse2", "vpclmulqdq"}


def test_without_llvm_host_features_none_are_assumed(monkeypatch) -> None:
    class _Binding:
        def get_host_cpu_features(self):
            raise RuntimeError("unknown host")

    monkeypatch.setattr(amplification, "llvm_binding", _Binding())
    assert amplification._host_features() == set()
