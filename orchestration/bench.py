"""Benchmarks reported as ratios against a baseline measured in the same run.

`mdiqkd bench sampler`: emulated slots per second on one core of the reference (per-slot numpy)
and the fast (thinning, numba) sampler, random three-intensity settings on both sides.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from channel.fiber import Fiber
from channel.link import Link
from channel.samplers import sample_fast, sample_reference
from channel.settings import SettingsGenerator, three_intensity_plan
from channel.source import Source


def _bench_link(arm_km: float) -> tuple[Link, SettingsGenerator, SettingsGenerator]:
    plan = three_intensity_plan()
    link = Link(Source(plan), Source(plan), Fiber(arm_km), Fiber(arm_km))
    return link, SettingsGenerator(plan, 11), SettingsGenerator(plan, 22)


def _rate(fn: Callable[..., object], slots: int, repeats: int) -> float:
    best = np.inf
    for r in range(repeats):
        t0 = time.perf_counter()
        fn(r * slots, (r + 1) * slots)
        best = min(best, time.perf_counter() - t0)
    return slots / best


def bench_sampler(arm_kms: tuple[float, ...] = (25.0, 50.0), reference_slots: int = 2_000_000,
                  fast_slots: int = 10_000_000_000, repeats: int = 2) -> dict:
    cases = []
    for arm_km in arm_kms:
        link, alice, bob = _bench_link(arm_km)
        # warm up: numba compilation and caches are not part of the measurement
        sample_fast(link, alice, bob, 0, 1 << 20, 0)
        sample_reference(link, alice, bob, 0, 1 << 16, 0)
        ref = _rate(lambda a, b, lk=link, al=alice, bo=bob: sample_reference(lk, al, bo, a, b, 1),
                    reference_slots, repeats)
        fast = _rate(lambda a, b, lk=link, al=alice, bo=bob: sample_fast(lk, al, bo, a, b, 1),
                     fast_slots, repeats)
        cases.append({"arm_km": arm_km, "reference_slots_per_s": ref, "fast_slots_per_s": fast,
                      "ratio": fast / ref})
    return {"cases": cases}
