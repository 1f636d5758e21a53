"""Sampler throughput: emulated slots per second on one core, fast sampler against reference.

Both samplers draw the same link (two equal arms, random three-intensity settings on both
sides) in the same run; numba compilation is warmed up first and each figure is the best of
``repeats`` repetitions. The figure to compare across machines is ``ratio`` (fast / reference).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from channel.fiber import Fiber
from channel.link import Link
from channel.samplers import sample_fast, sample_reference
from channel.settings import SettingsGenerator, three_intensity_plan
from channel.source import Source
from orchestration.benchmarks.timing import best_seconds


def _bench_link(arm_km: float) -> tuple[Link, SettingsGenerator, SettingsGenerator]:
    plan = three_intensity_plan()
    link = Link(Source(plan), Source(plan), Fiber(arm_km), Fiber(arm_km))
    return link, SettingsGenerator(plan, 11), SettingsGenerator(plan, 22)


def _slots_per_second(sample: Callable[[int, int], object], slots: int, repeats: int) -> float:
    # each repetition samples fresh slots, so no cache of the previous one helps
    starts = itertools.count(0, slots)

    def once() -> None:
        start = next(starts)
        sample(start, start + slots)

    return slots / best_seconds(once, repeats)


def bench_sampler(arm_kms: tuple[float, ...] = (25.0, 50.0), reference_slots: int = 2_000_000,
                  fast_slots: int = 10_000_000_000, repeats: int = 2) -> dict:
    """Slots/s of both samplers per arm length; the fast one runs with one worker thread.

    Returns ``{"cases": [{"arm_km", "reference_slots_per_s", "fast_slots_per_s", "ratio"}]}``.
    """
    cases = []
    for arm_km in arm_kms:
        link, alice, bob = _bench_link(arm_km)
        # warm up: numba compilation and caches are not part of the measurement
        sample_fast(link, alice, bob, 0, 1 << 20, 0, workers=1)
        sample_reference(link, alice, bob, 0, 1 << 16, 0)
        ref = _slots_per_second(
            lambda a, b, lk=link, al=alice, bo=bob: sample_reference(lk, al, bo, a, b, 1),
            reference_slots, repeats)
        fast = _slots_per_second(
            lambda a, b, lk=link, al=alice, bo=bob: sample_fast(lk, al, bo, a, b, 1, workers=1),
            fast_slots, repeats)
        cases.append({"arm_km": arm_km, "reference_slots_per_s": ref, "fast_slots_per_s": fast,
                      "ratio": fast / ref})
    return {"cases": cases}
