"""Post-processing and end-to-end benchmarks: they run and report coherent figures.

Not timed assertions: the goals are read from `mdiqkd bench postprocess` / `mdiqkd bench e2e`.
"""

from __future__ import annotations

import pytest

from orchestration.bench import bench_e2e, bench_postprocess


@pytest.mark.benchmark
def test_bench_postprocess_reports_each_part_beside_its_reference():
    data = bench_postprocess(cascade_frames=2, quick=True)
    assert {r["qber"] for r in data["cascade"]} == {0.01, 0.02, 0.05}
    for row in data["cascade"]:
        assert row["frame_error_rate"] <= 1.0 and row["efficiency"] >= 1.0
        assert row["mbit_per_s"] > 0 and row["reference_mbit_per_s"] > 0
    assert all(r["mbit_per_s"] > 0 for r in data["amplification"] + data["authentication"])
    print(data)


@pytest.mark.benchmark
@pytest.mark.slow
def test_bench_e2e_reports_realtime_factor_and_tracing_overhead():
    data = bench_e2e(rounds=1, repeats=1)
    assert data["realtime_factor"] == pytest.approx(
        data["emulated_seconds"] / data["wall_seconds_tracing_on"])
    assert data["tracing_overhead_ratio"] == pytest.approx(
        data["wall_seconds_tracing_on"] / data["wall_seconds_tracing_off"])
    print(data)
