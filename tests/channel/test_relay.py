"""Charles's Bell-state decision from click patterns and click times."""

from __future__ import annotations

import numpy as np

from channel.relay import FAIL, NO_CLICK_TIME, PSI_MINUS, PSI_PLUS, DetectionRecords, announce

N = NO_CLICK_TIME


def _records(patterns: list[int], times: list[list[int]]) -> DetectionRecords:
    return DetectionRecords(np.arange(len(patterns), dtype=np.int64),
                            np.array(patterns, np.uint8), np.array(times, np.int64))


def test_bell_patterns_within_the_window_are_announced_and_others_fail():
    rec = _records(
        [0b0011, 0b1100, 0b1001, 0b0110, 0b0101, 0b1010, 0b0111, 0b1111],
        [[100, 400, N, N], [N, N, 0, 1000], [50, N, N, 60], [N, 7, 9, N], [1, N, 2, N],
         [N, 1, N, 2], [1, 2, 3, N], [1, 1, 1, 1]])
    assert announce(rec, 1000).tolist() == [PSI_PLUS, PSI_PLUS, PSI_MINUS, PSI_MINUS, FAIL, FAIL,
                                            FAIL, FAIL]


def test_clicks_spread_beyond_the_window_fail():
    rec = _records([0b0011, 0b0011, 0b1001, 0b1001],
                   [[0, 1000, N, N], [0, 1001, N, N], [-5000, N, N, -4000], [-5000, N, N, 5000]])
    assert announce(rec, 1000).tolist() == [PSI_PLUS, FAIL, PSI_MINUS, FAIL]


def test_no_records_no_announcements():
    assert announce(DetectionRecords.empty(), 1000).size == 0
