"""Bob's checks of Alice's ``Amplify`` and the key-class errors of the final estimate
(classical/rounds.py), each on its own: the round tests reach them only through honest peers,
which never send a wrong length, seed or key ID (docs/mutation-testing.md)."""

from __future__ import annotations

import numpy as np
import pytest

from classical.amplification import toeplitz_seed_bytes
from classical.custody import KeyCustody
from classical.estimation import DecoyObservations
from classical.messages import Amplify
from classical.rounds import _Abort, _checked_amplify, _with_z_errors
from classical.secure import Repayment

KEY_BITS, LENGTH, ROUND = 1000, 300, 7


def _amplify(**changes) -> Amplify:
    fields = dict(round_id=ROUND, seed=np.zeros(toeplitz_seed_bytes(KEY_BITS, LENGTH), np.uint8),
                  output_bits=LENGTH, key_id=f"r{ROUND}-0a0b0c0d0e0f", a_to_b_seq=-1,
                  b_to_a_seq=-1, a_to_b_bytes=0, b_to_a_bytes=0, committed="")
    fields.update(changes)
    return Amplify(**fields)


def _check(msg: Amplify) -> Repayment:
    return _checked_amplify(msg, LENGTH, KEY_BITS, KeyCustody("bob"))


def _refused(msg: Amplify, reason: str) -> None:
    with pytest.raises(_Abort, match=reason) as caught:
        _check(msg)
    assert caught.value.notify_peer  # Bob tells Alice why he will not confirm


def test_a_well_formed_amplify_is_accepted_with_its_repayment() -> None:
    assert _check(_amplify()) == Repayment(-1, -1, 0, 0)


@pytest.mark.parametrize("output_bits", [LENGTH - 1, LENGTH + 1])
def test_an_amplify_to_another_length_than_bobs_estimate_is_refused(output_bits: int) -> None:
    seed = np.zeros(toeplitz_seed_bytes(KEY_BITS, output_bits), np.uint8)
    _refused(_amplify(output_bits=output_bits, seed=seed),
             f"Alice amplifies to {output_bits} bits, Bob's estimate allows {LENGTH}")


@pytest.mark.parametrize("seed", [np.zeros(toeplitz_seed_bytes(KEY_BITS, LENGTH) - 1, np.uint8),
                                  np.zeros(toeplitz_seed_bytes(KEY_BITS, LENGTH) + 1, np.uint8),
                                  np.zeros(toeplitz_seed_bytes(KEY_BITS, LENGTH), np.int8),
                                  np.zeros((1, toeplitz_seed_bytes(KEY_BITS, LENGTH)), np.uint8)],
                         ids=["short", "long", "int8", "2-D"])
def test_a_seed_that_is_not_the_whole_toeplitz_seed_is_refused(seed: np.ndarray) -> None:
    _refused(_amplify(seed=seed), "Toeplitz seed of shape")


@pytest.mark.parametrize("key_id", [f"r{ROUND + 1}-0a0b", f"r{ROUND}0a0b", f"x{ROUND}-0a0b",
                                    f"r{ROUND}-" + "f" * 62])
def test_a_key_id_of_another_round_or_too_long_is_refused(key_id: str) -> None:
    _refused(_amplify(key_id=key_id), "malformed key ID")


def test_a_key_id_of_64_characters_is_accepted() -> None:
    key_id = f"r{ROUND}-" + "f" * 61
    assert len(key_id) == 64
    assert _check(_amplify(key_id=key_id)) == Repayment()


@pytest.mark.parametrize("field", ["a_to_b_seq", "b_to_a_seq", "a_to_b_bytes", "b_to_a_bytes"])
def test_a_repayment_bob_does_not_compute_himself_is_refused(field: str) -> None:
    _refused(_amplify(**{field: 3}), "authentication pools are out of step")


def _observations(key_det: tuple[float, float], key_err: tuple[float, float]) -> DecoyObservations:
    ints = (0.5, 0.1, 0.0)
    pairs = np.full((3, 3, 2), 1e6)
    det = np.full((3, 3, 2, 2), 100.0)
    err = np.full((3, 3, 2, 2), 5.0)
    det[0, 0, 0] = key_det
    err[0, 0, 0] = key_err
    return DecoyObservations(ints, ints, pairs, det, err)


def test_the_corrected_errors_are_shared_between_the_bell_states_by_their_detections() -> None:
    obs = _observations((300.0, 100.0), (0.0, 0.0))
    out = _with_z_errors(obs, 40.0)
    assert out.errors[0, 0, 0].tolist() == [30.0, 10.0]
    # every other class, and the rest of the observations, are untouched
    rest = np.ones(out.errors.shape, bool)
    rest[0, 0, 0] = False
    assert np.array_equal(out.errors[rest], obs.errors[rest])
    assert np.array_equal(out.detections, obs.detections)
    assert np.array_equal(out.pairs, obs.pairs)
    assert (out.intensities_a, out.intensities_b, out.key_intensity) == (
        obs.intensities_a, obs.intensities_b, obs.key_intensity)


def test_the_corrected_errors_replace_the_previous_key_class_errors() -> None:
    out = _with_z_errors(_observations((200.0, 200.0), (50.0, 50.0)), 10.0)
    assert out.errors[0, 0, 0].tolist() == [5.0, 5.0]


def test_errors_beyond_a_bell_states_detections_are_capped_at_them() -> None:
    out = _with_z_errors(_observations((300.0, 100.0), (0.0, 0.0)), 1000.0)
    assert out.errors[0, 0, 0].tolist() == [300.0, 100.0]


def test_without_key_class_detections_no_errors_are_placed() -> None:
    out = _with_z_errors(_observations((0.0, 0.0), (0.0, 0.0)), 0.0)
    assert out.errors[0, 0, 0].tolist() == [0.0, 0.0]


def test_expected_counts_below_one_detection_are_shared_in_proportion_too() -> None:
    # the asymptotic mode estimates from expected (fractional) counts
    out = _with_z_errors(_observations((0.4, 0.1), (0.0, 0.0)), 0.2)
    assert out.errors[0, 0, 0] == pytest.approx([0.16, 0.04])


def test_the_errors_go_to_the_key_class_of_a_four_intensity_layout() -> None:
    ints = (0.5, 0.3, 0.1, 0.0)
    det = np.full((4, 4, 2, 2), 100.0)
    err = np.full((4, 4, 2, 2), 5.0)
    obs = DecoyObservations(ints, ints, np.full((4, 4, 2), 1e6), det, err, key_intensity=(1, 1))
    out = _with_z_errors(obs, 60.0)
    assert out.key_intensity == (1, 1)
    assert out.errors[1, 1, 0].tolist() == [30.0, 30.0]
    assert out.errors[0, 0, 0].tolist() == [5.0, 5.0]
