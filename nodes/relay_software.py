"""Charles's software: from detector click records to the public announcement.

It sees ``DetectionRecords`` only (docs/trust-boundaries.md): the Bell-state decision is a
function of click patterns and click times only. Failed slots are not announced.
"""

from __future__ import annotations

import numpy as np

from channel.relay import FAIL, DetectionRecords, announce
from classical.messages import Announcement


def bell_successes(records: DetectionRecords,
                   coincidence_window_ps: float) -> tuple[np.ndarray, np.ndarray]:
    """(slots, Bell state) of the records Charles announces as ψ⁺ or ψ⁻."""
    bell = announce(records, coincidence_window_ps)
    ok = bell != FAIL
    return (np.ascontiguousarray(records.slot[ok], dtype=np.int64),
            np.ascontiguousarray(bell[ok], dtype=np.uint8))


def announce_round(round_id: int, start_slot: int, stop_slot: int, records: DetectionRecords,
                   coincidence_window_ps: float) -> Announcement:
    slots, bell = bell_successes(records, coincidence_window_ps)
    return Announcement(round_id, int(start_slot), int(stop_slot), slots, bell)
