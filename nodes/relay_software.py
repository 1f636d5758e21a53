"""Charles's software: from detector click records to the public announcement.

It sees ``DetectionRecords`` only (docs/trust-boundaries.md): the Bell-state decision is a
function of click patterns and click times only, made with Charles's own settings
(``CharlesConfig``), never with the emulator's link. Failed slots are not announced.

Detector indices and pattern bits are those of the records (``channel.relay``): 0 = cH, 1 = cV,
2 = dH, 3 = dV, pattern = Σ 2**k over the detectors k that clicked. The Bell codes are the wire
convention of ``Announcement.bell`` (``classical.sifting``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from channel.arrays import readonly
from channel.relay import N_DETECTORS, NO_CLICK_TIME, DetectionRecords
from classical.messages import Announcement
from classical.sifting import FAIL, PSI_MINUS, PSI_PLUS
from nodes.relay_faults import RelayMisbehaviour

DEFAULT_COINCIDENCE_WINDOW_PS = 1000.0

#: BELL_OF_PATTERN[pattern] -> FAIL / PSI_PLUS / PSI_MINUS (LCQ: ψ⁺ = cH&cV or dH&dV,
#: ψ⁻ = cH&dV or cV&dH; every other pattern fails).
BELL_OF_PATTERN = np.zeros(1 << N_DETECTORS, dtype=np.uint8)
BELL_OF_PATTERN[0b0011] = PSI_PLUS
BELL_OF_PATTERN[0b1100] = PSI_PLUS
BELL_OF_PATTERN[0b1001] = PSI_MINUS
BELL_OF_PATTERN[0b0110] = PSI_MINUS


@dataclass(frozen=True)
class CharlesConfig:
    """Charles's own settings. ``coincidence_window_ps``: the largest spread (latest − earliest
    click time, ps) of a Bell pattern's clicks that still counts as one coincidence."""

    coincidence_window_ps: float = DEFAULT_COINCIDENCE_WINDOW_PS

    def __post_init__(self) -> None:
        if not self.coincidence_window_ps > 0:
            raise ValueError(f"coincidence_window_ps must be > 0, got {self.coincidence_window_ps}")


def bell_states(records: DetectionRecords, coincidence_window_ps: float) -> np.ndarray:
    """Charles's Bell-state decision per record: FAIL, PSI_PLUS or PSI_MINUS.

    A Bell pattern counts only when its clicks fall within the coincidence window.
    """
    bell = BELL_OF_PATTERN[records.pattern]
    if len(records) == 0:
        return bell
    times = readonly(np.ascontiguousarray(records.time_ps, dtype=np.int64))
    return _within_window(bell, times, float(coincidence_window_ps))


def warm_up_bell_states() -> None:
    """Compile (or load from numba's cache) the Bell-state decision before the first records
    arrive; one synthetic two-click record, the result thrown away."""
    times = np.full((1, N_DETECTORS), NO_CLICK_TIME, np.int64)
    times[0, :2] = 0
    bell_states(DetectionRecords(np.zeros(1, np.int64), np.full(1, 0b0011, np.uint8), times),
                DEFAULT_COINCIDENCE_WINDOW_PS)


@njit(cache=True)
def _within_window(bell: np.ndarray, times: np.ndarray,
                   window_ps: float) -> np.ndarray:  # pragma: no cover - numba
    """``bell`` where the clicks' spread (latest − earliest click) is within the window, else
    FAIL; one pass over the records."""
    out = np.empty(bell.size, np.uint8)
    for i in range(bell.size):
        lo = np.iinfo(np.int64).max
        hi = np.iinfo(np.int64).min
        for k in range(times.shape[1]):
            t = times[i, k]
            if t != NO_CLICK_TIME:
                lo = min(lo, t)
                hi = max(hi, t)
        out[i] = bell[i] if hi - lo <= window_ps else FAIL
    return out


def bell_successes(records: DetectionRecords,
                   coincidence_window_ps: float) -> tuple[np.ndarray, np.ndarray]:
    """(slots, Bell state) of the records Charles announces as ψ⁺ or ψ⁻."""
    bell = bell_states(records, coincidence_window_ps)
    ok = bell != FAIL
    return (np.ascontiguousarray(records.slot[ok], dtype=np.int64),
            np.ascontiguousarray(bell[ok], dtype=np.uint8))


def decide_batch(records: DetectionRecords, start_slot: int, stop_slot: int,
                 config: CharlesConfig, misbehaviour: RelayMisbehaviour | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(slots, Bell state) Charles announces for the records of slots ``[start_slot,
    stop_slot)``: the honest decision, or, on a game day, his software's faults applied to it
    (``nodes.relay_faults``)."""
    if misbehaviour is None:
        return bell_successes(records, config.coincidence_window_ps)
    records = misbehaviour.noisy_records(records, start_slot, stop_slot)
    slots, bell = bell_successes(records, config.coincidence_window_ps)
    return misbehaviour.rewrite(slots, bell, start_slot, stop_slot)


def announce_round(round_id: int, start_slot: int, stop_slot: int, records: DetectionRecords,
                   config: CharlesConfig,
                   misbehaviour: RelayMisbehaviour | None = None) -> Announcement:
    slots, bell = decide_batch(records, start_slot, stop_slot, config, misbehaviour)
    return Announcement(round_id, int(start_slot), int(stop_slot), slots, bell)
