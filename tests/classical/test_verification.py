"""Key verification: the polynomial hash is the documented one, tags catch differing keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classical.verification import (
    ELEMENT_BITS,
    FIELD_PRIME,
    collision_bound,
    draw_hash_key,
    polynomial_hash,
    tag_bits_for,
    verification_tag,
    verify,
)


def _python_hash(data: bytes, key: int, length: int) -> int:
    """h_k(m) = sum b_i k^(N+1-i) + L k (mod p), written out with Python integers."""
    padded = data + b"\x00" * (-len(data) % 4)
    blocks = [int.from_bytes(padded[i : i + 4], "big") for i in range(0, len(padded), 4)]
    n = len(blocks)
    total = sum(b * pow(key, n + 1 - i, FIELD_PRIME) for i, b in enumerate(blocks))
    return (total + length * key) % FIELD_PRIME


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=80),
    keys=st.lists(st.integers(0, FIELD_PRIME - 1), min_size=1, max_size=3),
)
def test_polynomial_hash_matches_its_definition(data: bytes, keys: list[int]) -> None:
    got = polynomial_hash(data, keys, len(data))
    assert [int(v) for v in got] == [_python_hash(data, k, len(data)) for k in keys]


def test_padding_ambiguity_gives_no_constant_difference() -> None:
    # b"\x01" and b"\x01\x00" have the same padded blocks; the length term must make their hash
    # difference depend on the key (a constant difference would allow Wegman-Carter forgeries).
    keys = [3, 5, 123456789]
    short = polynomial_hash(b"\x01", keys, 1).astype(object)
    long = polynomial_hash(b"\x01\x00", keys, 2).astype(object)
    differences = {(a - b) % FIELD_PRIME for a, b in zip(short, long, strict=True)}
    assert len(differences) == len(keys)


def test_equal_keys_match_and_report_tag_bits_as_leakage() -> None:
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, 10_000, dtype=np.uint8)
    tag_bits = tag_bits_for(bits.size, 1e-12)
    hash_key = draw_hash_key(rng, tag_bits)
    outcome = verify(bits.copy(), hash_key, tag_bits, verification_tag(bits, hash_key, tag_bits))
    assert outcome.matched
    assert outcome.leaked_bits == tag_bits
    assert outcome.collision_bound <= 1e-12


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), position=st.integers(0, 10**9), seed=st.integers(0, 2**32 - 1))
def test_a_single_flipped_bit_is_detected(n: int, position: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    bob = alice.copy()
    bob[position % n] ^= 1
    tag_bits = tag_bits_for(n, 1e-15)
    hash_key = draw_hash_key(rng, tag_bits)
    outcome = verify(bob, hash_key, tag_bits, verification_tag(alice, hash_key, tag_bits))
    assert not outcome.matched
    assert outcome.leaked_bits == tag_bits


def test_keys_of_different_length_with_same_packing_differ() -> None:
    hash_key = np.array([987654321], dtype=np.uint64)
    three = verification_tag(np.zeros(3, dtype=np.uint8), hash_key, ELEMENT_BITS)
    four = verification_tag(np.zeros(4, dtype=np.uint8), hash_key, ELEMENT_BITS)
    assert not np.array_equal(three, four)


@pytest.mark.parametrize("n_key_bits", [1, 1000, 10**5, 10**7, 10**9])
@pytest.mark.parametrize("epsilon_cor", [1e-6, 1e-10, 1e-15, 1e-30])
def test_tag_length_meets_epsilon_cor_and_is_minimal(n_key_bits: int, epsilon_cor: float) -> None:
    tag_bits = tag_bits_for(n_key_bits, epsilon_cor)
    assert tag_bits % ELEMENT_BITS == 0
    assert tag_bits >= math.ceil(math.log2(1 / epsilon_cor))
    assert collision_bound(n_key_bits, tag_bits) <= epsilon_cor
    if tag_bits > ELEMENT_BITS:
        assert collision_bound(n_key_bits, tag_bits - ELEMENT_BITS) > epsilon_cor


def test_long_keys_need_more_than_log2_one_over_epsilon() -> None:
    # One evaluation protects log2(p / (N + 1)) bits, not 61: 10^7 bits at 1e-15 need two.
    assert tag_bits_for(10**7, 1e-15) == 2 * ELEMENT_BITS
    assert collision_bound(10**7, ELEMENT_BITS) == pytest.approx((312_500 + 1) / FIELD_PRIME)


def test_hash_key_is_drawn_from_the_field() -> None:
    key = draw_hash_key(np.random.default_rng(0), 3 * ELEMENT_BITS)
    assert key.shape == (3,) and key.dtype == np.uint64
    assert np.all(key < np.uint64(FIELD_PRIME))


def test_invalid_arguments_are_rejected() -> None:
    bits = np.ones(10, dtype=np.uint8)
    key = np.array([5], dtype=np.uint64)
    with pytest.raises(ValueError, match="multiple"):
        verification_tag(bits, key, 60)
    with pytest.raises(ValueError, match="elements"):
        verification_tag(bits, key, 2 * ELEMENT_BITS)
    with pytest.raises(ValueError, match="0 and 1"):
        verification_tag(np.array([0, 2], dtype=np.uint8), key, ELEMENT_BITS)
    with pytest.raises(ValueError, match="lie in"):
        verification_tag(bits, np.array([FIELD_PRIME], dtype=np.uint64), ELEMENT_BITS)
    with pytest.raises(ValueError):
        tag_bits_for(0, 1e-10)
    with pytest.raises(ValueError):
        tag_bits_for(100, 1.5)


def test_mismatched_tag_shape_does_not_match() -> None:
    bits = np.ones(64, dtype=np.uint8)
    key = np.array([7, 11], dtype=np.uint64)
    tag = verification_tag(bits, key, 2 * ELEMENT_BITS)
    assert not verify(bits, key, 2 * ELEMENT_BITS, tag[:1]).matched


# --- Mutation testing (docs/mutation-testing.md): each test below turns a surviving mutant red.


@pytest.mark.parametrize("n_key_bits", [1, 32, 33, 1000, 10**7])
@pytest.mark.parametrize("evaluations", [1, 2, 3])
def test_an_epsilon_cor_exactly_on_a_bound_is_met_by_that_tag(n_key_bits, evaluations) -> None:
    # ε_cor equal to the bound of r evaluations is met by r (<=), one ulp less needs r + 1:
    # the search neither overshoots at the boundary nor stops short just below it.
    bound = collision_bound(n_key_bits, evaluations * ELEMENT_BITS)
    assert tag_bits_for(n_key_bits, bound) == evaluations * ELEMENT_BITS
    below = float(np.nextafter(bound, 0.0))
    tag_bits = tag_bits_for(n_key_bits, below)
    assert tag_bits == (evaluations + 1) * ELEMENT_BITS
    assert collision_bound(n_key_bits, tag_bits) <= below


@pytest.mark.parametrize(
    ("n_key_bits", "blocks"), [(1, 1), (32, 1), (33, 2), (64, 2), (65, 3), (10**7, 312_500)]
)
def test_collision_bound_counts_whole_32_bit_blocks(n_key_bits, blocks) -> None:
    p = FIELD_PRIME
    assert collision_bound(n_key_bits, ELEMENT_BITS) == (blocks + 1) / p
    assert collision_bound(n_key_bits, 2 * ELEMENT_BITS) == ((blocks + 1) / p) ** 2


def test_message_blocks_are_whole_blocks() -> None:
    from classical.verification import polynomial_hash_blocks

    got = [polynomial_hash_blocks(n) for n in range(10)]
    assert got == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert all(type(n) is int for n in got)


def test_epsilon_cor_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="epsilon_cor"):
        tag_bits_for(100, 1.0)


def test_a_zero_tag_length_is_refused_everywhere() -> None:
    with pytest.raises(ValueError, match="multiple"):
        collision_bound(100, 0)
    with pytest.raises(ValueError, match="multiple"):
        draw_hash_key(np.random.default_rng(0), 0)


def test_a_uint8_array_hashes_like_the_same_bytes() -> None:
    data = bytes(range(1, 23))
    keys = [3, 987654321]
    from_array = polynomial_hash(np.frombuffer(data, dtype=np.uint8), keys, len(data))
    assert from_array.tolist() == polynomial_hash(data, keys, len(data)).tolist()
    # a non-contiguous view hashes its own elements
    strided = np.repeat(np.frombuffer(data, dtype=np.uint8), 2)[::2]
    assert polynomial_hash(strided, keys, 22).tolist() == polynomial_hash(data, keys, 22).tolist()


def test_data_arrays_other_than_1d_uint8_are_refused() -> None:
    with pytest.raises(ValueError, match="1-D uint8"):
        polynomial_hash(np.array([1, 2], dtype=np.int64), [5], 2)
    with pytest.raises(ValueError, match="1-D uint8"):
        polynomial_hash(np.zeros((2, 2), dtype=np.uint8), [5], 4)


@pytest.mark.parametrize(
    "keys", [[], np.zeros((1, 2), dtype=np.uint64), [5.0], np.array([1.5])], ids=str
)
def test_hash_keys_must_be_a_non_empty_1d_integer_array(keys) -> None:
    with pytest.raises(ValueError, match="hash keys"):
        polynomial_hash(b"abc", keys, 3)


def test_the_largest_field_element_is_a_valid_hash_key() -> None:
    top = FIELD_PRIME - 1  # = -1 mod p
    got = polynomial_hash(b"\x00\x00\x00\x07", np.array([top], dtype=np.int64), 4)
    assert [int(v) for v in got] == [_python_hash(b"\x00\x00\x00\x07", top, 4)]


@pytest.mark.parametrize(
    "bits", [np.zeros(0, dtype=np.bool_), np.zeros(0, dtype=np.uint8), np.ones((2, 8), np.uint8)],
    ids=["empty-bool", "empty-uint8", "2-D"],
)
def test_a_key_to_tag_must_be_a_non_empty_1d_array(bits) -> None:
    with pytest.raises(ValueError, match="non-empty 1-D"):
        verification_tag(bits, np.array([5], dtype=np.uint64), ELEMENT_BITS)


def test_a_peer_tag_off_by_one_in_its_lowest_bit_does_not_match() -> None:
    # tag elements are up to 61 bits: compared as floats they would round to equal
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, 4096, dtype=np.uint8)
    tag_bits = 2 * ELEMENT_BITS
    key = draw_hash_key(rng, tag_bits)
    tag = verification_tag(bits, key, tag_bits)
    for i in range(tag.size):
        for delta in (1, -1):
            forged = tag.copy()
            forged[i] = np.uint64((int(tag[i]) + delta) % FIELD_PRIME)
            assert not verify(bits, key, tag_bits, forged).matched
    assert verify(bits, key, tag_bits, tag).matched


def test_the_reported_collision_bound_is_for_the_verified_key_length() -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 100_000, dtype=np.uint8)
    key = draw_hash_key(rng, ELEMENT_BITS)
    outcome = verify(bits, key, ELEMENT_BITS, verification_tag(bits, key, ELEMENT_BITS))
    assert outcome.collision_bound == collision_bound(100_000, ELEMENT_BITS) == 3126 / FIELD_PRIME
