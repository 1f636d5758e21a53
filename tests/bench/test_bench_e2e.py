"""End-to-end benchmarks: each runs the quick-start scenario off and on and reports both runs'
figures and their ratio. Not timed assertions: the checks are that both runs really happened
and covered the emulated time asked for, that the wall times are seconds of this very call (a
figure in milliseconds, in CPU time, or of a run that did not happen breaks them), and that the
switched feature was on in the "on" run and idle where it must be."""

from __future__ import annotations

import time

import pytest

from orchestration.benchmarks.e2e import (
    bench_e2e,
    bench_e2e_calibration,
    bench_e2e_control,
    bench_e2e_metrics,
)
from orchestration.config import DEFAULT_SCENARIO, load_scenario

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]


def _emulated_seconds(rounds: int) -> float:
    """The quick start's emulated time for ``rounds`` rounds, from its scenario file."""
    s = load_scenario(DEFAULT_SCENARIO)
    return rounds * s.round_frames * 2**s.frame_bits / s.clock_rate_hz


def _timed(bench, **kwargs) -> tuple[dict, float]:
    started = time.monotonic()
    data = bench(**kwargs)
    return data, time.monotonic() - started


def _check_runs(data: dict, elapsed: float, name: str, rounds: int) -> None:
    off, on = data[f"wall_seconds_{name}_off"], data[f"wall_seconds_{name}_on"]
    assert data["emulated_seconds"] == pytest.approx(_emulated_seconds(rounds), rel=1e-12)
    # each run's rounds are a part of this call (start-up and the other run excluded)
    assert 0 < off and 0 < on and off + on < elapsed
    assert data[f"{name}_overhead_ratio"] == pytest.approx(on / off)


def test_bench_e2e_reports_realtime_factor_and_tracing_overhead():
    data, elapsed = _timed(bench_e2e, rounds=1, repeats=1)
    _check_runs(data, elapsed, "tracing", 1)
    assert data["realtime_factor"] == pytest.approx(
        data["emulated_seconds"] / data["wall_seconds_tracing_on"])
    print(data)


def test_bench_e2e_metrics_reports_the_metrics_overhead():
    data, elapsed = _timed(bench_e2e_metrics, rounds=1, repeats=1)
    _check_runs(data, elapsed, "metrics", 1)
    assert data["scrapes"] > 0  # the endpoints were up and scraped during the "on" run
    print(data)


def test_bench_e2e_control_reports_the_control_planes_overhead():
    data, elapsed = _timed(bench_e2e_control, rounds=1, repeats=1, poll_interval_s=0.5)
    _check_runs(data, elapsed, "control", 1)
    assert data["polls"] > 0  # the control plane was up and answered during the "on" run
    print(data)


def test_bench_e2e_calibration_runs_the_loops_idle_on_a_healthy_link():
    data, elapsed = _timed(bench_e2e_calibration, rounds=2, repeats=1)
    _check_runs(data, elapsed, "calibration", 2)
    # on a healthy link the loops take no action (a search would dither the settings and cost
    # key: that is not overhead)
    assert data["calibration_events"] == 0
    print(data)
