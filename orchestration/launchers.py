"""Where nodes run. ``LocalProcessLauncher``: four OS processes on this machine (the default).

A launcher starts the node programs for a prepared run directory (nature, the channel emulator;
Charles; Bob; Alice) and reports their state; the run loop (``orchestration.run``) watches them,
fails loudly, naming the node, when one dies, and stops nature once the protocol nodes are done.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

NODE_ORDER = ("nature", "charles", "bob", "alice")  # Alice leads, so she starts last
#: The nodes whose end is the run's end; nature serves them and is stopped after them.
PROTOCOL_NODES = ("alice", "bob", "charles")


class Launcher(Protocol):
    def start(self, run_dir: Path) -> None: ...

    def poll(self) -> dict[str, int | None]:
        """Exit code per node (None while running)."""
        ...

    def stop(self, grace_s: float = 5.0) -> None: ...


@dataclass
class LocalProcessLauncher:
    python: str = sys.executable
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, run_dir: Path) -> None:
        logs = run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in NODE_ORDER:
            log = (logs / f"{name}.log").open("wb")
            # -P: the working directory does not go on sys.path, so a folder of the same name
            # there cannot shadow the installed package (user-site installs still work); -u:
            # unbuffered logs.
            self.processes[name] = subprocess.Popen(
                [self.python, "-P", "-u", "-m", "orchestration.node_main", name, str(run_dir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()

    def poll(self) -> dict[str, int | None]:
        return {n: p.poll() for n, p in self.processes.items()}

    def stop(self, grace_s: float = 5.0) -> None:
        for p in self.processes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.processes.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
