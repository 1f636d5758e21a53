"""Realtime pacing: a batch is sent no earlier than its first slot's time on the wall clock."""

from __future__ import annotations

import threading

import pytest

from nodes.pacing import Pacer


class FakeClock:
    """A wall clock that moves only when waited on (the pacer's ``stop.wait``)."""

    def __init__(self) -> None:
        self.t = 100.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def wait(self, delay: float) -> bool:
        self.waits.append(delay)
        self.t += delay
        return False


def _pacer(realtime: bool, clock: FakeClock, rate: float = 1e6) -> Pacer:
    stop = threading.Event()
    stop.wait = clock.wait  # type: ignore[method-assign]
    return Pacer(realtime, rate, stop, clock.now)


def test_realtime_waits_until_each_batch_is_due_and_never_sends_early():
    clock = FakeClock()
    pacer = _pacer(True, clock)
    sent = []
    for slot in (0, 250_000, 500_000, 1_750_000):  # 0, 0.25, 0.5, 1.75 s at 1 MHz
        pacer.wait_for(slot)
        sent.append(clock.t - 100.0)
    assert sent == pytest.approx([0.0, 0.25, 0.5, 1.75])
    assert pacer.waited_s == pytest.approx(1.75)


def test_a_slow_machine_is_not_slowed_further():
    clock = FakeClock()
    pacer = _pacer(True, clock)
    pacer.wait_for(0)
    clock.t += 3.0  # the work between batches took longer than the emulated time
    pacer.wait_for(1_000_000)  # due at 1 s: already late
    assert clock.waits == [] and pacer.waited_s == 0.0
    pacer.wait_for(4_500_000)  # due at 4.5 s, now 3 s: waits 1.5 s
    assert clock.waits == [pytest.approx(1.5)]


def test_the_clock_starts_at_the_first_emission_whatever_its_slot():
    clock = FakeClock()
    pacer = _pacer(True, clock)
    pacer.wait_for(5_000_000)  # Bob may start at a later round: no wait for the first
    pacer.wait_for(5_500_000)
    assert clock.waits == [pytest.approx(0.5)]


def test_fast_pacing_never_waits():
    clock = FakeClock()
    pacer = _pacer(False, clock)
    for slot in (0, 10**9, 10**12):
        pacer.wait_for(slot)
    assert clock.waits == [] and pacer.t0 is None


def test_a_stop_ends_the_wait():
    stop = threading.Event()
    stop.set()
    pacer = Pacer(True, 1.0, stop)
    pacer.wait_for(0)
    pacer.wait_for(3600)  # an hour away: returns at once, stopped
