"""Emission paced to the wall clock (``runtime.pacing: realtime``), so a game day can be watched
live: a user sends the pulse batch that starts at slot s no earlier than ``t0 + s / clock_rate``
of wall-clock time, t0 being its first emission. Pacing only ever slows emission down: a machine
that cannot keep up with the emulated clock runs as fast as it can (the run is then slower than
real time, as a ``fast`` run would be)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Pacer:
    """``wait_for(slot)`` returns once the wall clock has reached that slot's emission time (or
    at once when ``realtime`` is off, or when ``stop`` is set). ``now`` and ``stop`` are
    injectable for tests."""

    realtime: bool
    clock_rate_hz: float
    stop: threading.Event = field(default_factory=threading.Event)
    now: Callable[[], float] = time.monotonic
    t0: float | None = None
    #: wall-clock seconds spent waiting so far
    waited_s: float = 0.0

    def wait_for(self, slot: int) -> None:
        if not self.realtime:
            return
        if self.t0 is None:
            self.t0 = self.now() - slot / self.clock_rate_hz
        delay = self.t0 + slot / self.clock_rate_hz - self.now()
        if delay > 0:
            self.waited_s += delay
            self.stop.wait(delay)
