"""The relay's detectors and the records they produce (channel/relay.py): every setting is
checked on construction, and the records keep their shape when empty or joined."""

from __future__ import annotations

import math

import numpy as np
import pytest

from channel.defaults import DARK_COUNT_PROBABILITY, DETECTOR_EFFICIENCY
from channel.relay import N_DETECTORS, DetectionRecords, Detector, RelayOptics, RelayOutput


@pytest.mark.parametrize("name", ["efficiency", "dark_count_probability",
                                  "afterpulsing_probability"])
def test_probabilities_from_zero_to_one_inclusive_are_accepted(name: str) -> None:
    assert getattr(Detector(**{name: 0.0}), name) == 0.0
    assert getattr(Detector(**{name: 1.0}), name) == 1.0


@pytest.mark.parametrize("name", ["efficiency", "dark_count_probability",
                                  "afterpulsing_probability"])
@pytest.mark.parametrize("value", [-1e-12, 1.0 + 1e-12, math.nan])
def test_probabilities_outside_zero_to_one_are_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"detector {name} must be in \\[0, 1\\]"):
        Detector(**{name: value})


def test_dead_time_and_jitter_may_be_zero_but_not_negative() -> None:
    assert Detector(dead_time_slots=0, jitter_ps=0.0).dead_time_slots == 0
    with pytest.raises(ValueError, match="dead_time_slots must be >= 0"):
        Detector(dead_time_slots=-1)
    for bad in (-1e-9, math.nan):
        with pytest.raises(ValueError, match="jitter_ps must be >= 0"):
            Detector(jitter_ps=bad)


def test_the_default_detector_is_the_reference_detector() -> None:
    det = Detector()
    assert (det.efficiency, det.dark_count_probability) == (DETECTOR_EFFICIENCY,
                                                            DARK_COUNT_PROBABILITY)
    assert (det.dead_time_slots, det.afterpulsing_probability, det.jitter_ps) == (0, 0.0, 0.0)


@pytest.mark.parametrize("count", [0, 3, 5])
def test_the_relay_needs_exactly_four_detectors(count: int) -> None:
    with pytest.raises(ValueError, match="exactly 4 detectors"):
        RelayOptics((Detector(),) * count)


def test_default_and_uniform_optics_have_four_equal_detectors() -> None:
    assert RelayOptics().detectors == (Detector(),) * N_DETECTORS
    optics = RelayOptics.uniform(0.8, 1e-5)
    assert optics.detectors == (Detector(efficiency=0.8, dark_count_probability=1e-5),) * 4
    assert optics.efficiencies.tolist() == [0.8] * 4
    assert optics.dark_count_probabilities.tolist() == [1e-5] * 4
    assert RelayOptics.uniform().detectors == (Detector(),) * N_DETECTORS
    assert not optics.has_memory


def test_empty_records_have_the_record_dtypes_and_shapes() -> None:
    empty = DetectionRecords.empty()
    assert len(empty) == 0
    assert (empty.slot.dtype, empty.pattern.dtype, empty.time_ps.dtype) == (
        np.int64, np.uint8, np.int64)
    assert empty.slot.shape == (0,) and empty.pattern.shape == (0,)
    assert empty.time_ps.shape == (0, N_DETECTORS)


def test_records_join_in_order_and_count_their_slots() -> None:
    a = DetectionRecords(np.array([1, 4], np.int64), np.array([3, 12], np.uint8),
                         np.array([[1, 2, -1, -1], [-1, -1, 5, 6]], np.int64))
    b = DetectionRecords(np.array([9], np.int64), np.array([9], np.uint8),
                         np.array([[7, -1, -1, 8]], np.int64))
    joined = DetectionRecords.concatenate([a, DetectionRecords.empty(), b])
    assert len(a) == 2 and len(joined) == 3
    assert joined.slot.tolist() == [1, 4, 9]
    assert joined.pattern.tolist() == [3, 12, 9]
    assert joined.time_ps.tolist() == [[1, 2, -1, -1], [-1, -1, 5, 6], [7, -1, -1, 8]]
    nothing = DetectionRecords.concatenate([])
    assert len(nothing) == 0 and nothing.time_ps.shape == (0, N_DETECTORS)


def test_relay_output_counts_its_slots() -> None:
    out = RelayOutput(100, 350, DetectionRecords.empty(), np.zeros(4, np.int64))
    assert out.slots == 250
