"""Where nodes run. ``LocalProcessLauncher``: four OS processes on this machine (the default);
``orchestration.ray_launcher.RayLauncher``: four Ray actors (``mdiqkd run --backend ray``).

A launcher starts the node programs for a prepared run directory (nature, the channel emulator;
Charles; Bob; Alice) and reports their state; the run loop (``orchestration.run``) watches them,
fails loudly, naming the node, when one dies, and stops nature once the protocol nodes are done.
"""

from __future__ import annotations

import os
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

    def cause(self, name: str) -> str:
        """The error that ended a failed node, as it reported it ("" if it could not)."""
        ...


class _StatusPipe:
    """The read end of a pipe on which a node writes one line, the error that ended it, if it
    fails. Its log may be on a full disk; this is not, so the run can still name the cause."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._text = b""

    def read(self) -> str:
        if self.read_fd >= 0:
            try:
                while chunk := os.read(self.read_fd, 65536):
                    self._text += chunk
            except (BlockingIOError, OSError):
                pass
        return self._text.decode(errors="replace").strip()

    def close(self) -> None:
        """Keep what was written, and release the descriptor (a process may run many runs)."""
        if self.read_fd >= 0:
            self.read()
            os.close(self.read_fd)
            self.read_fd = -1


@dataclass
class LocalProcessLauncher:
    python: str = sys.executable
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    status: dict[str, _StatusPipe] = field(default_factory=dict)
    #: ``start`` may follow ``stop`` on the same run directory (a link restart,
    #: ``orchestration.supervision``): each node's directory, ledger included, stays where it is
    restartable: bool = True

    def start(self, run_dir: Path) -> None:
        logs = run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in NODE_ORDER:
            log = (logs / f"{name}.log").open("ab")  # a restarted link appends
            status = self.status[name] = _StatusPipe()
            # -P: the working directory does not go on sys.path, so a folder of the same name
            # there cannot shadow the installed package (user-site installs still work); -u:
            # unbuffered logs. --parent: the node stops by itself when this process dies.
            self.processes[name] = subprocess.Popen(
                [self.python, "-P", "-u", "-m", "orchestration.node_main", name, str(run_dir),
                 "--parent", str(os.getpid()), "--status-fd", str(status.write_fd)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                pass_fds=(status.write_fd,))
            os.close(status.write_fd)
            log.close()

    def poll(self) -> dict[str, int | None]:
        return {n: p.poll() for n, p in self.processes.items()}

    def cause(self, name: str) -> str:
        status = self.status.get(name)
        return status.read() if status is not None else ""

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to every node still running (each then stops in order), SIGKILL to any
        still running after ``grace_s``."""
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
        for status in self.status.values():
            status.close()
