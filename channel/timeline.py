"""A game day's timeline as plain values, and each fault's window in emulated time and slots.

A scenario's ``method`` (docs/scenario-format.md) reaches the processes that act on it as
``TimelineEntry`` values: nature (``channel.impairments``: the physics faults) and Charles (his own
software's faults, ``nodes.relay_faults``). ``fault_windows`` resolves each fault's window (a
``duration`` or a later ``clear_faults`` ends it) and ``fault_slots`` places it on whole settings
frames, so that every process, and the verdict, put a fault on the same slots. Pure and free of
any device model, so that Charles's software may import it (``tests/test_architecture.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_NEVER = 1 << 62  # a frame no run reaches: the end of a fault that lasts to the end


@dataclass(frozen=True)
class TimelineEntry:
    """One ``method`` entry as plain values: a fault (``is_action`` false) or an action."""

    at_s: float
    name: str
    kind: str
    target: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    is_action: bool = False


@dataclass(frozen=True)
class Fault:
    """A fault and its window ``[start_s, end_s)`` in emulated seconds (``end_s`` may be inf)."""

    name: str
    kind: str
    target: str
    params: Mapping[str, Any]
    start_s: float
    end_s: float


def _clears(action: TimelineEntry, fault: Fault) -> bool:
    """A ``clear_faults`` ends every fault (no target), those on its target, or the one named."""
    return (action.kind == "clear_faults" and action.target in (None, fault.target)
            and action.params.get("fault") in (None, fault.name))


def fault_windows(entries: Sequence[TimelineEntry]) -> tuple[Fault, ...]:
    """Each fault entry with its window: from ``at`` to the first of its ``duration`` and a
    ``clear_faults`` that matches it. Entries apply in time order, file order at equal times
    (a clear at the same time as a fault ends it only if it comes later in the file)."""
    faults: list[Fault] = []
    for entry in sorted(entries, key=lambda e: e.at_s):  # stable: file order at equal times
        if entry.is_action:
            faults = [dataclasses.replace(f, end_s=min(f.end_s, entry.at_s))
                      if _clears(entry, f) and f.end_s > entry.at_s else f for f in faults]
            continue
        end = math.inf if entry.duration_s is None else entry.at_s + entry.duration_s
        faults.append(Fault(entry.name, entry.kind, entry.target or "", dict(entry.params),
                            entry.at_s, end))
    return tuple(faults)


def frame_at(t_s: float, clock_rate_hz: float, frame_bits: int) -> int:
    """The first frame whose start is at or after ``t_s`` (rounded to the nearest slot)."""
    if math.isinf(t_s):
        return _NEVER
    slot = round(t_s * clock_rate_hz)
    return -(-slot >> frame_bits)


def fault_slots(fault: Fault, clock_rate_hz: float, frame_bits: int) -> tuple[int, int]:
    """The slots ``[first, stop)`` the fault acts on: its whole frames (``frame_at`` of its start
    and end), so that the verdict places it where the samplers apply it."""
    return (frame_at(fault.start_s, clock_rate_hz, frame_bits) << frame_bits,
            frame_at(fault.end_s, clock_rate_hz, frame_bits) << frame_bits)


def fault_rounds(fault: Fault, clock_rate_hz: float, frame_bits: int,
                 round_slots: int) -> tuple[int, int]:
    """The key rounds ``[first, stop)`` that share a slot with the fault's frames (``fault_slots``),
    the rounds the verdict judges "during" it: a fault that acts per round (a classical channel's,
    a key store's) acts on those."""
    first, stop = fault_slots(fault, clock_rate_hz, frame_bits)
    if stop <= first:
        return 0, 0
    return first // round_slots, -(-stop // round_slots)
