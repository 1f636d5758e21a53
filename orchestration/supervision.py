"""Link restarts: what the run does when a node program dies and the scenario says
``runtime.restart: true``.

The strategy is *one for all*: the four node programs of a link restart together. The quantum
channel pairs Alice's and Bob's pulses frame by frame and Charles announces rounds in order, so
a node cannot rejoin a session the others have moved on in; the link instead starts a new
session at a round that no user has emitted yet. In order:

1. the surviving nodes are asked to stop, as on any stop: the users settle the two-phase key
   commit (a key is stored by both or by neither, ``classical.custody``); the dead node's part
   of it is in its ledger (``nodes.keystore``: Bob's confirmed, unsettled key survives him);
2. a ``kill`` fault with a ``duration`` keeps the node down for that long (wall-clock seconds,
   as a ``pause``: a dead node emulates no time);
3. each node's durable progress (``nodes.session``: sequence numbers and round numbers, nothing
   secret) gives the round to resume at (past every round either user emitted: no pulse is
   sent twice) and, per direction, the sequence number to resume from (no one-time pad is used
   twice); these go into ``config.json``'s ``run.resume``;
4. the four node programs start again; the users restore their key custody from their ledgers
   and their pools from the refills recorded there, and record the rounds the restart cost as
   aborted ("lost to a restart of the link").

Every restart is recorded in ``restarts.json`` (which node died, its exit code and cause, when,
the round resumed at) and in ``summary.json``. Past ``runtime.max_restarts`` the run fails,
naming the node, as without restarts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.session import NodeProgress, read_progress, resume_round, resume_seqs
from orchestration.launchers import Launcher
from orchestration.runconfig import Resume

#: Each node's peers on the classical channels (the names of its links).
PEERS = {"alice": ["bob", "charles"], "bob": ["alice", "charles"],
         "charles": ["alice", "bob"]}
RESTARTS_FILE = "restarts.json"


@dataclass
class LinkRestarter:
    """Restarts the link of ``run_dir`` through ``launcher`` up to ``max_restarts`` times.
    ``downtime_s(node)``: how much longer the dead node stays down (what is left of a ``kill``
    fault's duration; 0 for a crash). ``progress(node)``: the node's progress file (default:
    read from its directory in the run directory)."""

    run_dir: Path
    launcher: Launcher
    max_restarts: int
    downtime_s: Callable[[str], float] = lambda _node: 0.0
    progress: Callable[[str], NodeProgress | None] | None = None
    restarts: list[dict[str, Any]] = field(default_factory=list)

    def can_restart(self) -> bool:
        return len(self.restarts) < self.max_restarts

    def _progress(self, node: str) -> NodeProgress | None:
        if self.progress is not None:
            return self.progress(node)
        return read_progress(self.run_dir / node, PEERS[node])

    def restart(self, node: str, code: int, cause: str) -> Resume:
        """Stop the rest of the link in order, wait out the node's downtime, and start the link
        again where it resumes; returns where."""
        died_unix = time.time()
        getattr(self.launcher, "halt", self.launcher.stop)()
        down = self.downtime_s(node)  # what is left of it: it counts from the kill
        if down > 0:
            time.sleep(down)
        progress = {n: self._progress(n) for n in PEERS}
        resume = Resume(round=resume_round(progress), seqs=resume_seqs(progress),
                        restart=len(self.restarts) + 1,
                        reason=f"node {node} exited with code {code}")
        config_path = self.run_dir / "config.json"
        data = json.loads(config_path.read_text())
        data["run"]["resume"] = resume.model_dump()
        config_path.write_text(json.dumps(data, indent=2))
        self.restarts.append({"node": node, "exit_code": code, "cause": cause,
                              "died_at_unix": died_unix, "restarted_at_unix": time.time(),
                              "resume_round": resume.round})
        (self.run_dir / RESTARTS_FILE).write_text(json.dumps(self.restarts, indent=2))
        getattr(self.launcher, "resume", self.launcher.start)(self.run_dir)
        return resume
