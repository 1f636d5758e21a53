"""End-to-end benchmark: real-time factor and tracing overhead, as ratios of one run's figures."""

from __future__ import annotations

import pytest

from orchestration.benchmarks.e2e import bench_e2e, bench_e2e_metrics


@pytest.mark.benchmark
@pytest.mark.slow
def test_bench_e2e_reports_realtime_factor_and_tracing_overhead():
    data = bench_e2e(rounds=1, repeats=1)
    assert data["realtime_factor"] == pytest.approx(
        data["emulated_seconds"] / data["wall_seconds_tracing_on"])
    assert data["tracing_overhead_ratio"] == pytest.approx(
        data["wall_seconds_tracing_on"] / data["wall_seconds_tracing_off"])
    print(data)


@pytest.mark.benchmark
@pytest.mark.slow
def test_bench_e2e_metrics_reports_the_metrics_overhead():
    data = bench_e2e_metrics(rounds=1, repeats=1)
    assert data["metrics_overhead_ratio"] == pytest.approx(
        data["wall_seconds_metrics_on"] / data["wall_seconds_metrics_off"])
    assert data["scrapes"] > 0  # the endpoints were up and scraped during the "on" run
    print(data)


@pytest.mark.benchmark
@pytest.mark.slow
def test_bench_e2e_control_reports_the_control_planes_overhead():
    from orchestration.benchmarks.e2e import bench_e2e_control

    data = bench_e2e_control(rounds=1, repeats=1, poll_interval_s=0.5)
    assert data["control_overhead_ratio"] == pytest.approx(
        data["wall_seconds_control_on"] / data["wall_seconds_control_off"])
    assert data["polls"] > 0  # the control plane was up and answered during the "on" run
    print(data)


@pytest.mark.benchmark
@pytest.mark.slow
def test_bench_e2e_calibration_runs_the_loops_idle_on_a_healthy_link():
    from orchestration.benchmarks.e2e import bench_e2e_calibration

    data = bench_e2e_calibration(rounds=2, repeats=1)
    # both runs covered the same emulated time; on a healthy link the loops take no action
    # (a search would dither the settings and cost key: that is not overhead)
    assert data["emulated_seconds"] == pytest.approx(2 * 3000 * 2**20 / 1e9)
    assert data["calibration_events"] == 0
    print(data)
