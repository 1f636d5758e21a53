"""End to end: the quick-start scenario with three processes, tracing off (baseline) and on.

Wall time runs from the first round's emission to the last round's stored key (process start-up
excluded; rounds overlap, see ``nodes.users``), so it includes filling and draining the pipeline:
more rounds approach the steady state. Runs alternate off/on ``repeats`` times in ABBA order and
the fastest of each is kept, so that machine noise, drift and warm-up do not land on one side.
Reported: the real-time factor (emulated seconds per wall second) of each, and the wall-time
ratio on / off (the tracing overhead). ``bench_e2e_metrics`` compares the same way the nodes'
metrics endpoints on (scraped every second, as ``mdiqkd observe`` has Prometheus do) and off
(``run.metrics`` empty: no instruments, no endpoint).
"""

from __future__ import annotations

import json
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.run import execute, prepare_run_dir, rounds_wall_seconds


def bench_e2e(rounds: int = 4, round_frames: int | None = None, repeats: int = 2) -> dict:
    """Returns ``realtime_factor`` (tracing on), ``realtime_factor_tracing_off``,
    ``tracing_overhead_ratio`` (wall on / off), the link (``clock_rate_hz``, ``arm_km``), the
    sizes and the raw ``emulated_seconds`` and ``wall_seconds_tracing_on`` / ``_off``."""
    def setup(tracing: bool, run_dir: Path, scenario: Any) -> Callable[[], Any]:
        prepare_run_dir(scenario, run_dir)
        return lambda: nullcontext([0])

    with tempfile.TemporaryDirectory(prefix="mdiqkd-bench-") as tmp:
        best = _abba("tracing", rounds, round_frames, repeats, tmp, setup,
                     lambda tracing: {"tracing": tracing})
    scenario = load_scenario(DEFAULT_SCENARIO)
    emulated, wall_on, _ = best[True]
    emulated_off, wall_off, _ = best[False]
    return {"realtime_factor": emulated / wall_on,
            "realtime_factor_tracing_off": emulated_off / wall_off,
            "tracing_overhead_ratio": wall_on / wall_off,
            "clock_rate_hz": scenario.clock_rate_hz, "arm_km": scenario.alice.arm.length_km,
            "rounds": rounds, "repeats": repeats, "emulated_seconds": emulated,
            "wall_seconds_tracing_on": wall_on, "wall_seconds_tracing_off": wall_off}


@contextmanager
def _scraping(run_dir: Path, interval_s: float) -> Iterator[list[int]]:
    """GET every node's ``/metrics`` every ``interval_s`` while the block runs; yields the list
    whose one element counts the successful scrapes."""
    targets = json.loads((run_dir / "config.json").read_text())["run"]["metrics"].values()
    done, count = threading.Event(), [0]

    def scrape() -> None:
        while not done.wait(interval_s):
            for address in targets:
                try:
                    with urllib.request.urlopen(f"http://{address}/metrics", timeout=1) as r:
                        r.read()
                    count[0] += 1
                except OSError:  # not up yet, or gone
                    pass

    thread = threading.Thread(target=scrape, name="bench-scraper", daemon=True)
    thread.start()
    try:
        yield count
    finally:
        done.set()
        thread.join()


def _abba(name: str, rounds: int, round_frames: int | None, repeats: int, tmp: str,
          setup: Callable[[bool, Path, Any], Callable[[], Any]],
          overrides_on: Callable[[bool], dict[str, object]] = lambda on: {}
          ) -> dict[bool, tuple[float, float, int]]:
    """Run the quick-start scenario off and on ``repeats`` times in ABBA order and keep the
    fastest of each: (emulated seconds, wall seconds, the count ``setup``'s context reports).
    ``setup(on, run_dir, scenario)`` prepares the run directory and returns a factory of the
    context manager around the run, which yields a one-element list (the count);
    ``overrides_on(on)``: scenario fields that differ between the two sides."""
    best: dict[bool, tuple[float, float, int]] = {}
    for i in range(repeats):
        for on in ((False, True) if i % 2 == 0 else (True, False)):
            overrides: dict[str, object] = {"rounds": rounds, **overrides_on(on)}
            if round_frames:
                overrides["round_frames"] = round_frames
            scenario = load_scenario(DEFAULT_SCENARIO, overrides)
            run_dir = Path(tmp) / f"{i}-{name}-{on}"
            around = setup(on, run_dir, scenario)
            with around() as count:
                execute(scenario, run_dir)
            rows = [json.loads(x) for x in (run_dir / "alice" / "rounds.jsonl").read_text()
                    .splitlines()]
            wall = rounds_wall_seconds(rows)
            if wall is None:
                raise RuntimeError(f"{run_dir}: rounds.jsonl lacks emission/finish times")
            result = (sum(r["emulated_seconds"] for r in rows), wall, count[0])
            if on not in best or result[1] < best[on][1]:
                best[on] = result
    return best


def bench_e2e_metrics(rounds: int = 4, round_frames: int | None = None, repeats: int = 2,
                      scrape_interval_s: float = 1.0) -> dict:
    """The metrics' cost: ``realtime_factor`` (metrics on and scraped),
    ``realtime_factor_metrics_off``, ``metrics_overhead_ratio`` (wall on / off), ``scrapes``
    (successful scrapes of the fastest on run), the sizes and raw wall times. Tracing stays as
    the scenario has it (on)."""
    def setup(metrics: bool, run_dir: Path, scenario: Any) -> Callable[[], Any]:
        prepare_run_dir(scenario, run_dir)
        if not metrics:
            path = run_dir / "config.json"
            config = json.loads(path.read_text())
            config["run"]["metrics"] = {}
            path.write_text(json.dumps(config, indent=2))
        return lambda: _scraping(run_dir, scrape_interval_s if metrics else 3600.0)

    with tempfile.TemporaryDirectory(prefix="mdiqkd-bench-") as tmp:
        best = _abba("metrics", rounds, round_frames, repeats, tmp, setup)
    emulated, wall_on, scrapes_on = best[True]
    emulated_off, wall_off, _ = best[False]
    return {"realtime_factor": emulated / wall_on,
            "realtime_factor_metrics_off": emulated_off / wall_off,
            "metrics_overhead_ratio": wall_on / wall_off, "scrapes": scrapes_on,
            "scrape_interval_s": scrape_interval_s, "rounds": rounds, "repeats": repeats,
            "emulated_seconds": emulated, "wall_seconds_metrics_on": wall_on,
            "wall_seconds_metrics_off": wall_off}


@contextmanager
def _polling(run_dir: Path, interval_s: float, on: bool) -> Iterator[list[int]]:
    """GET the control plane's ``/status`` every ``interval_s`` while the block runs (when
    ``on``); yields the list whose one element counts the answered requests."""
    from orchestration.control import ControlClient, ControlError

    done, count = threading.Event(), [0]

    def poll() -> None:
        while not done.wait(interval_s):
            try:
                ControlClient(run_dir, timeout_s=2).call("GET", "/status")
                count[0] += 1
            except ControlError:  # not up yet, or gone
                pass

    thread = threading.Thread(target=poll, name="bench-poller", daemon=True)
    if on:
        thread.start()
    try:
        yield count
    finally:
        done.set()
        if on:
            thread.join()


def bench_e2e_control(rounds: int = 4, round_frames: int | None = None, repeats: int = 2,
                      poll_interval_s: float = 1.0) -> dict:
    """The live control plane's cost (docs/game-days.md): the same scenario with it on (the
    proxies in front of every mailbox, nature's control socket, the HTTP API polled for
    ``/status`` every ``poll_interval_s`` as an operator's terminal would) and off.
    ``control_overhead_ratio`` is wall on / off; ``polls`` the answered status requests of the
    fastest "on" run."""
    def setup(control: bool, run_dir: Path, scenario: Any) -> Callable[[], Any]:
        prepare_run_dir(scenario, run_dir, control=control)
        return lambda: _polling(run_dir, poll_interval_s, control)

    with tempfile.TemporaryDirectory(prefix="mdiqkd-bench-") as tmp:
        best = _abba("control", rounds, round_frames, repeats, tmp, setup)
    emulated, wall_on, polls_on = best[True]
    emulated_off, wall_off, _ = best[False]
    return {"realtime_factor": emulated / wall_on,
            "realtime_factor_control_off": emulated_off / wall_off,
            "control_overhead_ratio": wall_on / wall_off, "polls": polls_on,
            "poll_interval_s": poll_interval_s, "rounds": rounds, "repeats": repeats,
            "emulated_seconds": emulated, "wall_seconds_control_on": wall_on,
            "wall_seconds_control_off": wall_off}


@contextmanager
def _calibration_events(run_dir: Path) -> Iterator[list[int]]:
    """Yields [n]: the calibration events Bob logged, counted once the run is over."""
    count = [0]
    yield count
    path = run_dir / "bob" / "calibration.jsonl"
    count[0] = len(path.read_text().splitlines()) if path.exists() else 0


def bench_e2e_calibration(rounds: int = 4, round_frames: int | None = None,
                          repeats: int = 2) -> dict:
    """The calibration loops' cost on a healthy link (docs/calibration.md): the quick-start
    scenario with a ``calibration`` section (both loops on: each round's error rates read, the
    actuators carried in every pulse batch) and without. ``calibration_overhead_ratio`` is wall
    on / off; ``calibration_events`` what the loops did in the fastest "on" run (0 on a healthy
    link: a search costs key, which is the loops' job, not overhead)."""
    def setup(on: bool, run_dir: Path, scenario: Any) -> Callable[[], Any]:
        prepare_run_dir(scenario, run_dir)
        return lambda: _calibration_events(run_dir)

    def overrides(on: bool) -> dict[str, object]:
        return {"calibration": {"polarization": True, "clock": True}} if on else {}

    with tempfile.TemporaryDirectory(prefix="mdiqkd-bench-") as tmp:
        best = _abba("calibration", rounds, round_frames, repeats, tmp, setup, overrides)
    emulated, wall_on, events_on = best[True]
    emulated_off, wall_off, _ = best[False]
    return {"realtime_factor": emulated / wall_on,
            "realtime_factor_calibration_off": emulated_off / wall_off,
            "calibration_overhead_ratio": wall_on / wall_off,
            "calibration_events": events_on, "rounds": rounds, "repeats": repeats,
            "emulated_seconds": emulated, "wall_seconds_calibration_on": wall_on,
            "wall_seconds_calibration_off": wall_off}
