"""A Chaos Toolkit extension for mdiqkd (the ``chaos`` extra: ``pip install 'mdiqkd[chaos]'``).

Actions and probes that drive a running emulation through its live control plane
(``orchestration.control``; the game day's ``RUN_DIR/orchestrator/control.json``), for Chaos
Toolkit experiments' ``python`` providers::

    {"type": "python", "module": "orchestration.chaos", "func": "inject_fault",
     "arguments": {"run_dir": "${run_dir}", "target": "link/bob-charles", "fault_type": "loss",
                   "params": {"extra_db": 3}, "duration_s": 2}}

Actions: ``inject_fault``, ``clear_faults``. Probes: ``metric`` (one of ``METRICS``, from the
run's current indicators) and ``active_faults``. ``wait_for_rounds`` holds an experiment until
the emulation has produced rounds to judge. ``scenarios/chaos/loss_experiment.json`` is an
example; docs/game-days.md says how to run it. Nothing here imports Chaos Toolkit: the functions
are plain, and the toolkit calls them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestration.control import ControlClient

__all__ = ["METRICS", "active_faults", "clear_faults", "inject_fault", "metric",
           "wait_for_rounds"]

#: What ``metric`` reads from the run's status (``GET /status``): the last round's QBERs, and
#: totals over the rounds done so far (the key rate per emulated second).
METRICS = ("qber_z", "qber_x", "secure_bits", "secure_key_rate_bps", "aborted_rounds",
           "rounds_done", "emulated_seconds")


def _client(run_dir: str | Path) -> ControlClient:
    return ControlClient(Path(run_dir))


def inject_fault(run_dir: str, target: str, fault_type: str,
                 params: dict[str, Any] | None = None, duration_s: float | None = None,
                 name: str | None = None) -> dict[str, Any]:
    """Inject a fault into the running emulation; returns its record (``start_s``: the emulated
    time it took effect)."""
    return _client(run_dir).call("POST", "/faults", {
        "target": target, "type": fault_type, "params": params or {},
        "duration_s": duration_s, "name": name})


def clear_faults(run_dir: str, name: str | None = None) -> list[dict[str, Any]]:
    """End the named fault, or every active one; returns what was ended and when."""
    return _client(run_dir).call("POST", "/faults/clear", {"name": name})["ended"]


def metric(run_dir: str, name: str) -> float | int:
    """The run's current value of ``name`` (one of ``METRICS``): for ``qber_z`` and ``qber_x``
    the most recent round that measured it (a round that aborted before its estimate measures
    neither). Raises ``ValueError`` while nothing has measured it (no round yet): Chaos Toolkit
    then records the probe as failed, which a tolerance cannot be checked against."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r} (one of {', '.join(METRICS)})")
    status = _client(run_dir).call("GET", "/status")
    if name in ("qber_z", "qber_x"):
        measured = (status.get("last_measured") or {}).get(name)
        value = None if measured is None else measured["value"]
    else:
        value = status[name]
    if value is None:
        raise ValueError(f"no round has measured {name} yet")
    return value


def active_faults(run_dir: str) -> list[str]:
    """The names of the faults active at the emulated time the rounds have reached."""
    return [f["name"] for f in _client(run_dir).call("GET", "/faults")["faults"] if f["active"]]


def wait_for_rounds(run_dir: str, rounds: int, timeout_s: float = 300.0) -> int:
    """Wait until the emulation has recorded ``rounds`` rounds (ValueError after
    ``timeout_s``); returns how many it has."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = int(_client(run_dir).call("GET", "/status")["rounds_done"])
        if done >= rounds:
            return done
        if time.monotonic() > deadline:
            raise ValueError(f"{done} rounds after {timeout_s:g} s, waited for {rounds}")
        time.sleep(0.2)
