"""The detector channel: detection records from the channel emulator (nature) to Charles.

Nature measures each pair of pulse batches and pushes one ``RecordsBatch`` per pair to Charles's
records socket: what the relay's electronics would report (the slots with at least two clicks,
their click pattern and click times) and where they belong (round, slot range, whether the round
is now complete, the users' trace contexts). Nothing of the pulses travels: no basis, bit,
intensity or settings key (docs/trust-boundaries.md).

Wire (ZeroMQ multipart, every part bounded by the socket's ``MAXMSGSIZE``)::

    part 0  header, UTF-8 JSON: {"v": 1, "round", "first_slot", "stop_slot", "complete",
            "traceparents": [alice's, bob's], "measure": nature's measure span}
    part 1  slot     int64 little-endian, n values, strictly increasing, inside the range
    part 2  pattern  uint8, n bitmasks of at least two of the four detectors
    part 3  time_ps  int64 little-endian, n × 4 click times

``RecordsBatch.from_parts`` checks every field against the round layout and raises
``RecordsRejected`` (only) for anything else; Charles counts and drops it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from channel.relay import N_DETECTORS, DetectionRecords

RECORDS_WIRE_VERSION = 1
MAX_RECORDS_HEADER_BYTES = 2048
#: Bytes per record on the wire: slot (8), pattern (1), four click times (32).
RECORD_BYTES = 8 + 1 + 8 * N_DETECTORS
_CLICKS = np.array([bin(p).count("1") for p in range(1 << 8)], np.uint8)  # detectors per pattern


class RecordsRejected(ValueError):
    """A records message that is not one the round layout allows."""


@dataclass(frozen=True)
class RoundLayout:
    """The public shape of the rounds (from the scenario): which slot ranges a batch may cover."""

    rounds: int
    round_frames: int
    batch_frames: int
    frame_bits: int

    @property
    def batch_slots(self) -> int:
        return self.batch_frames << self.frame_bits

    def max_part_bytes(self) -> int:
        """``MAXMSGSIZE`` of the records socket: a full batch's click times (every slot a
        coincidence), or the header, whichever is larger."""
        return max(MAX_RECORDS_HEADER_BYTES, 8 * N_DETECTORS * self.batch_slots)

    def check_range(self, round_id: int, first_slot: int, stop_slot: int) -> None:
        if not 0 <= round_id < self.rounds:
            raise RecordsRejected(f"round {round_id} outside [0, {self.rounds})")
        size = 1 << self.frame_bits
        start = round_id * self.round_frames * size
        stop = start + self.round_frames * size
        if (first_slot % size or not start <= first_slot < stop
                or (first_slot // size - round_id * self.round_frames) % self.batch_frames):
            raise RecordsRejected(f"slot {first_slot} is not a batch start of round {round_id}")
        if stop_slot != min(first_slot + self.batch_slots, stop):
            raise RecordsRejected(f"batch [{first_slot}, {stop_slot}) does not end where a "
                                  f"batch of round {round_id} ends")


@dataclass(frozen=True)
class RecordsBatch:
    round_id: int
    first_slot: int
    stop_slot: int
    round_complete: bool
    traceparents: tuple[str | None, str | None]
    records: DetectionRecords
    measure_traceparent: str | None = None

    def to_parts(self) -> list[Any]:
        header = {"v": RECORDS_WIRE_VERSION, "round": self.round_id,
                  "first_slot": self.first_slot, "stop_slot": self.stop_slot,
                  "complete": self.round_complete, "traceparents": list(self.traceparents),
                  "measure": self.measure_traceparent}
        r = self.records
        return [json.dumps(header).encode(), np.ascontiguousarray(r.slot, "<i8"),
                np.ascontiguousarray(r.pattern, np.uint8), np.ascontiguousarray(r.time_ps, "<i8")]

    @classmethod
    def from_parts(cls, parts: list[Any], layout: RoundLayout) -> RecordsBatch:
        if len(parts) != 4:
            raise RecordsRejected(f"records message of {len(parts)} parts, expected 4")
        raw = [bytes(p) for p in parts]
        if len(raw[0]) > MAX_RECORDS_HEADER_BYTES:
            raise RecordsRejected("records header too long")
        try:
            h = json.loads(raw[0])
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RecordsRejected("records header is not JSON") from None
        if not isinstance(h, dict) or h.get("v") != RECORDS_WIRE_VERSION:
            raise RecordsRejected("records header is not a version-1 object")
        ints = [h.get(k) for k in ("round", "first_slot", "stop_slot")]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in ints):
            raise RecordsRejected("records header: round and slots must be integers")
        tps = h.get("traceparents")
        measure = h.get("measure")
        if (not isinstance(h.get("complete"), bool) or not isinstance(tps, list) or len(tps) != 2
                or not all(t is None or (isinstance(t, str) and len(t) <= 256)
                           for t in (*tps, measure))):
            raise RecordsRejected("records header: complete or trace contexts malformed")
        round_id, first, stop = ints
        layout.check_range(round_id, first, stop)
        n, rem = divmod(len(raw[1]), 8)
        if rem or len(raw[2]) != n or len(raw[3]) != 8 * N_DETECTORS * n or n > stop - first:
            raise RecordsRejected(f"records parts of {len(raw[1])}, {len(raw[2])} and "
                                  f"{len(raw[3])} bytes do not describe one set of records")
        slot = np.frombuffer(raw[1], "<i8").astype(np.int64)
        pattern = np.frombuffer(raw[2], np.uint8)
        time_ps = np.frombuffer(raw[3], "<i8").astype(np.int64).reshape(n, N_DETECTORS)
        if n and (slot[0] < first or slot[-1] >= stop or np.any(slot[1:] <= slot[:-1])):
            raise RecordsRejected("record slots not strictly increasing inside the batch")
        if n and (pattern.max() >= 1 << N_DETECTORS or np.any(_CLICKS[pattern] < 2)):
            raise RecordsRejected("record patterns must name at least two of the four detectors")
        return cls(round_id, first, stop, h["complete"], (tps[0], tps[1]),
                   DetectionRecords(slot, pattern, time_ps), measure)
