"""Benchmarks reported as ratios against a baseline measured in the same run.

* `mdiqkd bench sampler`: emulated slots per second on one core of the reference (per-slot numpy)
  and the fast (thinning, numba) sampler, random three-intensity settings on both sides.
* `mdiqkd bench postprocess`: Cascade, Toeplitz privacy amplification and authentication, each
  beside a plain reference measured in the same run (``classical.bench_*``).
* `mdiqkd bench e2e`: the quick-start scenario with three processes, tracing on and off.
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
    """One core each: the fast sampler runs with one worker thread here."""
    cases = []
    for arm_km in arm_kms:
        link, alice, bob = _bench_link(arm_km)
        # warm up: numba compilation and caches are not part of the measurement
        sample_fast(link, alice, bob, 0, 1 << 20, 0, workers=1)
        sample_reference(link, alice, bob, 0, 1 << 16, 0)
        ref = _rate(lambda a, b, lk=link, al=alice, bo=bob: sample_reference(lk, al, bo, a, b, 1),
                    reference_slots, repeats)
        fast = _rate(lambda a, b, lk=link, al=alice, bo=bob: sample_fast(lk, al, bo, a, b, 1,
                                                                          workers=1),
                     fast_slots, repeats)
        cases.append({"arm_km": arm_km, "reference_slots_per_s": ref, "fast_slots_per_s": fast,
                      "ratio": fast / ref})
    return {"cases": cases}


def bench_postprocess(cascade_frames: int = 10, quick: bool = False) -> dict:
    from classical.bench_cascade import bench_cascade
    from classical.bench_postprocess_parts import bench_amplification, bench_authentication

    rng = np.random.default_rng(2026)
    blocks = (10**5,) if quick else (10**5, 10**6)
    frames = {10**5: cascade_frames, 10**6: max(1, cascade_frames // 5)}
    cascade = bench_cascade(block_bits=blocks, frames=frames, rng=rng,
                            reference_bits=5_000 if quick else 20_000)
    keep = ("qber", "block_bits", "efficiency", "frame_error_rate", "round_trips", "mbit_per_s",
            "round_trips_max", "efficiency_max", "reference_mbit_per_s")
    amp = bench_amplification(rng, (10**5, 10**6) if quick else (10**6, 10**7))
    auth = bench_authentication(rng, message_bytes=(1 << 16) if quick else (1 << 20))
    return {"cascade": [{k: row[k] for k in keep if k in row} for row in cascade],
            "amplification": amp, "authentication": auth}


def bench_e2e(rounds: int = 4, round_frames: int | None = None, repeats: int = 2) -> dict:
    """Three processes on the quick-start link: real-time factor (tracing on) and the wall-time
    ratio tracing-on / tracing-off. Wall time runs from the first round's emission to the last
    round's stored key (process start-up excluded; rounds overlap, see ``nodes.users``), so the
    figure includes filling and draining the pipeline: more rounds approach the steady state.
    Runs alternate off/on ``repeats`` times in ABBA order and the fastest of each is kept, so that
    machine noise, drift and warm-up do not land on one side."""
    import json
    import tempfile
    from pathlib import Path

    from orchestration.config import DEFAULT_SCENARIO, load_scenario
    from orchestration.run import execute, prepare_run_dir, rounds_wall_seconds

    best: dict[bool, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mdiqkd-bench-") as tmp:
        for i in range(repeats):
            # ABBA order (off, on, on, off, ...): a machine that drifts slower or faster during
            # the benchmark does not favour either side
            for tracing in ((False, True) if i % 2 == 0 else (True, False)):
                overrides: dict[str, object] = {"rounds": rounds, "tracing": tracing}
                if round_frames:
                    overrides["round_frames"] = round_frames
                scenario = load_scenario(DEFAULT_SCENARIO, overrides)
                run_dir = prepare_run_dir(scenario, Path(tmp) / f"{i}-tracing-{tracing}")
                execute(scenario, run_dir)
                rows = [json.loads(x) for x in (run_dir / "alice" / "rounds.jsonl").read_text()
                        .splitlines()]
                wall = rounds_wall_seconds(rows)
                if wall is None:
                    raise RuntimeError(f"{run_dir}: rounds.jsonl lacks emission/finish times")
                result = (sum(r["emulated_seconds"] for r in rows), wall)
                if tracing not in best or result[1] < best[tracing][1]:
                    best[tracing] = result
    emulated, wall_on = best[True]
    _, wall_off = best[False]
    return {"realtime_factor": emulated / wall_on, "tracing_overhead_ratio": wall_on / wall_off,
            "clock_rate_hz": scenario.clock_rate_hz, "arm_km": scenario.alice.arm.length_km,
            "rounds": rounds, "repeats": repeats, "emulated_seconds": emulated,
            "wall_seconds_tracing_on": wall_on, "wall_seconds_tracing_off": wall_off}
