"""Charles's software: from detector click records to the public announcement.

It sees ``DetectionRecords`` and nothing else (ARCHITECTURE.md §3): the Bell-state decision is a
function of click patterns and click times only. Failed slots are not announced.
"""

from __future__ import annotations

import numpy as np

from channel.relay import FAIL, DetectionRecords, announce
from classical.messages import Announcement


def announce_round(round_id: int, start_slot: int, stop_slot: int, records: DetectionRecords,
                   coincidence_window_ps: float) -> Announcement:
    bell = announce(records, coincidence_window_ps)
    success = bell != FAIL
    return Announcement(round_id, int(start_slot), int(stop_slot),
                        np.ascontiguousarray(records.slot[success], dtype=np.int64),
                        np.ascontiguousarray(bell[success], dtype=np.uint8))
