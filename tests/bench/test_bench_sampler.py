"""Sampler benchmark: figures reported as ratios against the reference in the same run.

Not a timed assertion: it checks the benchmark runs and reports coherent numbers; the goals
(fast ≥ 1e9 slots/s, ≥ 100× the reference) are read from its output (`mdiqkd bench sampler`).
"""

from __future__ import annotations

import pytest

from orchestration.benchmarks.sampler import bench_sampler


@pytest.mark.benchmark
def test_bench_sampler_reports_ratios():
    data = bench_sampler(arm_kms=(25.0,), reference_slots=200_000, fast_slots=10**9, repeats=1)
    (case,) = data["cases"]
    assert case["ratio"] == pytest.approx(case["fast_slots_per_s"] / case["reference_slots_per_s"])
    print(data)
