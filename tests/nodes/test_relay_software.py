"""Charles's Bell-state decision from click patterns and click times."""

from __future__ import annotations

import numpy as np
import pytest

from channel.relay import NO_CLICK_TIME, DetectionRecords
from classical.sifting import FAIL, PSI_MINUS, PSI_PLUS
from nodes.relay_software import CharlesConfig, announce_round, bell_states, bell_successes

N = NO_CLICK_TIME


def _records(patterns: list[int], times: list[list[int]]) -> DetectionRecords:
    return DetectionRecords(np.arange(len(patterns), dtype=np.int64),
                            np.array(patterns, np.uint8), np.array(times, np.int64))


def test_bell_patterns_within_the_window_are_announced_and_others_fail():
    rec = _records(
        [0b0011, 0b1100, 0b1001, 0b0110, 0b0101, 0b1010, 0b0111, 0b1111],
        [[100, 400, N, N], [N, N, 0, 1000], [50, N, N, 60], [N, 7, 9, N], [1, N, 2, N],
         [N, 1, N, 2], [1, 2, 3, N], [1, 1, 1, 1]])
    assert bell_states(rec, 1000).tolist() == [PSI_PLUS, PSI_PLUS, PSI_MINUS, PSI_MINUS, FAIL,
                                               FAIL, FAIL, FAIL]


def test_clicks_spread_beyond_the_window_fail():
    rec = _records([0b0011, 0b0011, 0b1001, 0b1001],
                   [[0, 1000, N, N], [0, 1001, N, N], [-5000, N, N, -4000], [-5000, N, N, 5000]])
    assert bell_states(rec, 1000).tolist() == [PSI_PLUS, FAIL, PSI_MINUS, FAIL]


def test_no_records_no_announcements():
    assert bell_states(DetectionRecords.empty(), 1000).size == 0


def test_the_announcement_lists_successes_under_charles_own_window():
    rec = _records([0b0011, 0b1001, 0b0101], [[0, 600, N, N], [0, N, N, 200], [0, N, 0, N]])
    wide = announce_round(4, 0, 10, rec, CharlesConfig(coincidence_window_ps=1000))
    narrow = announce_round(4, 0, 10, rec, CharlesConfig(coincidence_window_ps=500))
    assert (wide.slots.tolist(), wide.bell.tolist()) == ([0, 1], [PSI_PLUS, PSI_MINUS])
    assert (narrow.slots.tolist(), narrow.bell.tolist()) == ([1], [PSI_MINUS])


def test_a_window_must_be_positive():
    with pytest.raises(ValueError, match="coincidence_window_ps"):
        CharlesConfig(coincidence_window_ps=0)


# --- Mutation testing (docs/mutation-testing.md): each test below turns a surviving mutant red.


def test_the_announcement_carries_its_round_and_slot_range_as_plain_ints():
    rec = _records([0b0011], [[0, 10, N, N]])
    ann = announce_round(np.int64(7), np.int64(1000), np.uint32(2000), rec, CharlesConfig())
    assert (ann.round_id, ann.start_slot, ann.stop_slot) == (7, 1000, 2000)
    assert type(ann.start_slot) is int and type(ann.stop_slot) is int


def test_announced_slots_are_int64_and_states_uint8_whatever_the_records_hold():
    rec = DetectionRecords(np.array([3, 5, 8], np.int32), np.array([0b0011, 0b0101, 0b1001],
                                                                   np.uint8),
                           np.array([[0, 1, N, N], [0, N, 1, N], [0, N, N, 1]], np.int64))
    slots, bell = bell_successes(rec, 1000)
    assert slots.dtype == np.int64 and slots.tolist() == [3, 8]
    assert bell.dtype == np.uint8 and bell.tolist() == [PSI_PLUS, PSI_MINUS]


def test_a_sub_picosecond_window_is_a_valid_window():
    assert CharlesConfig(coincidence_window_ps=0.5).coincidence_window_ps == 0.5
    rec = _records([0b0011, 0b0011], [[0, 0, N, N], [0, 1, N, N]])
    assert bell_states(rec, 0.5).tolist() == [PSI_PLUS, FAIL]


def test_a_lone_record_is_held_to_the_window_too():
    assert bell_states(_records([0b0011], [[0, 1001, N, N]]), 1000).tolist() == [FAIL]
    assert bell_states(_records([0b0011], [[0, 1000, N, N]]), 1000).tolist() == [PSI_PLUS]
