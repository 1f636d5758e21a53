"""A game day's faults on the node processes (``pause``, ``kill`` on ``node/alice|bob|charles``),
carried out by the orchestrator on the processes it launched (docs/game-days.md).

A node fault acts when the emulated link reaches its start: the orchestrator asks the channel
emulator how far it has sampled (its control socket, ``orchestration.control``) and then

* ``pause`` stops the process (SIGSTOP) for the fault's ``duration`` of **wall-clock** time, then
  continues it (SIGCONT): a paused node does not emulate time, so its pause can only be measured
  on the wall clock. Its peers wait for it; past ``runtime.message_timeout`` they abort the round.
* ``kill`` ends the process (SIGKILL); the run then fails, naming the node, as any node's death
  does, unless the scenario sets ``runtime.restart: true``: the link then restarts
  (``orchestration.supervision``), after the fault's ``duration`` (wall-clock seconds) when it
  has one. A ``kill`` with a ``duration`` and without ``runtime.restart`` is refused.

Processes are always continued when the run ends, so the launcher's orderly stop reaches them.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from channel.timeline import Fault

NODE_FAULTS = ("pause", "kill")
#: How often the link's position is asked while a fault waits for its start.
POLL_S = 0.05


@dataclass
class NodeFaultWatcher:
    """Carries out ``faults`` (node faults, in time order) on the ``processes`` launched,
    reading the link's emulated time from ``now_s``; ``done`` records what was done (name,
    action, wall time), and what could not be (a process already gone)."""

    faults: Sequence[Fault]
    processes: Mapping[str, Any]  # node name → its ``subprocess.Popen`` (or a pid, in tests)
    now_s: Callable[[], float]
    done: list[dict[str, object]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _paused: set[int] = field(default_factory=set)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-faults", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for fault in sorted(self.faults, key=lambda f: f.start_s):
            while not self._stop.is_set():
                try:
                    if self.now_s() >= fault.start_s:
                        break
                except Exception:  # noqa: BLE001 - the emulator is gone: the run is ending
                    return
                self._stop.wait(POLL_S)
            if self._stop.is_set():
                return
            process = self.processes.get(fault.target.removeprefix("node/"))
            pid = process if isinstance(process, int) or process is None else (
                None if process.poll() is not None else process.pid)  # never a reaped pid
            if pid is None:
                self.done.append({"name": fault.name, "target": fault.target,
                                  "action": "not done: the process is gone", "unix": time.time()})
                continue
            if fault.kind == "kill":
                self._signal(pid, signal.SIGKILL, fault, "killed")
                continue
            self._signal(pid, signal.SIGSTOP, fault, "paused")
            self._paused.add(pid)
            wall = fault.end_s - fault.start_s
            self._stop.wait(wall if math.isfinite(wall) else None)
            self._resume(pid, fault)

    def _signal(self, pid: int, sig: signal.Signals, fault: Fault, what: str) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # the node has ended already
            return
        self.done.append({"name": fault.name, "target": fault.target, "action": what,
                          "unix": time.time()})

    def _resume(self, pid: int, fault: Fault) -> None:
        if pid in self._paused:
            self._paused.discard(pid)
            self._signal(pid, signal.SIGCONT, fault, "continued")

    def stop(self) -> None:
        """End the watch and continue every paused process."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for pid in list(self._paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._paused.clear()
