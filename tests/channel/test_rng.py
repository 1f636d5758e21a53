"""Seed derivation: one helper names every stream derived from a seed."""

from __future__ import annotations

from channel.rng import derive_seed


def test_a_derived_seed_is_a_pure_64_bit_function_of_its_arguments():
    assert derive_seed(7, "thinning chunk", 3) == derive_seed(7, "thinning chunk", 3)
    assert all(0 <= derive_seed(s, "x") < 2**64 for s in (0, 1, 2**64 - 1, 2**100))


def test_seeds_labels_and_counters_each_separate_the_streams():
    cases = [(s, label, *c) for s in (0, 1) for label in ("a", "b", "ab", "a 1")
             for c in ((), (0,), (1,), (0, 0), (2**70,))]
    assert len({derive_seed(*case) for case in cases}) == len(cases)
