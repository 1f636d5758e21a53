"""What every node process has: ZeroMQ context, a mailbox, outboxes to its peers, authenticated
links, counters, a stop flag and a tracer. Built by ``orchestration.node_main``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from opentelemetry import trace

from classical.secure import SecureLink
from nodes.tracing import current_traceparent
from nodes.transport import MAX_CLASSICAL_MESSAGE_BYTES, Counters, Mailbox, Outbox, ZmqPeer

NODE_NAMES = ("alice", "bob", "charles", "nature")
#: How long a stopping node's unsent classical frames may delay its exit.
STOPPING_LINGER_MS = 500


@dataclass(frozen=True)
class Endpoints:
    """``tcp://host:port`` of each node's classical mailbox (where it binds), of the emulator's
    pulse input and of Charles's records input; ``connect`` optionally routes a node's peers
    elsewhere (a proxy at the edge)."""

    mailbox: dict[str, str]
    pulses: str
    records: str = ""
    connect: dict[str, str] = field(default_factory=dict)

    def peer_address(self, name: str) -> str:
        return self.connect.get(name, self.mailbox[name])


@dataclass
class NodeContext:
    name: str
    endpoints: Endpoints
    links: dict[str, SecureLink]  # peer name → authenticated link with it
    tracer: trace.Tracer
    run_dir: Path
    timeout_s: float = 300.0
    #: the mailbox's ZeroMQ MAXMSGSIZE (``nodes.transport.classical_max_message_bytes``)
    max_message_bytes: int = MAX_CLASSICAL_MESSAGE_BYTES
    stop: threading.Event = field(default_factory=threading.Event)
    counters: Counters = field(default_factory=Counters)
    #: live metrics (``nodes.metrics.NodeMetrics``), once ``attach_metrics`` is called
    metrics: Any = None
    #: the durable session progress (``nodes.session.Progress``) when the link can restart
    progress: Any = None

    def __post_init__(self) -> None:
        self.zmq = zmq.Context()
        # nature has no classical link and so no mailbox: it cannot hear a protocol message
        self.mailbox = (Mailbox(self.zmq, self.endpoints.mailbox[self.name], list(self.links),
                                self.counters, self.stop, self.max_message_bytes)
                        if self.links else None)
        self.outboxes = {p: Outbox(self.zmq, self.endpoints.peer_address(p), self.name)
                         for p in self.links}
        self.peers = {p: ZmqPeer(p, link, self.mailbox, self.outboxes[p], self.counters,
                                 self.stop, self.timeout_s, current_traceparent)
                      for p, link in self.links.items()}
        self.node_dir = self.run_dir / self.name
        self.node_dir.mkdir(parents=True, exist_ok=True)

    def warm_up(self, compile_kernels: Callable[[], None]) -> threading.Thread:
        """Run ``compile_kernels`` in a background thread: on a first run it compiles this node's
        numba kernels (and caches them on disk) while the node waits for its first input; later
        runs load them from the cache. Its wall time is the ``warm_up_ms`` metric; a failure costs
        time, never the run (the kernels then compile when first used)."""

        def run() -> None:
            started = time.perf_counter()
            try:
                compile_kernels()
            except Exception as e:
                print(f"{self.name}: kernel warm-up failed ({type(e).__name__}: {e})", flush=True)
                return
            self.counters.add("warm_up_ms", round(1e3 * (time.perf_counter() - started)))

        thread = threading.Thread(target=run, name="warm-up", daemon=True)
        thread.start()
        return thread

    def attach_metrics(self, metrics: Any) -> None:
        """Export this node's counters and links through ``metrics`` (``NodeMetrics``)."""
        self.metrics = metrics
        metrics.initialise()
        self.counters.attach_sink(metrics.count)
        metrics.observe_links(self.links)

    def observe(self, updates: Any) -> None:
        """Apply ``nodes.metrics`` updates (no-op without live metrics)."""
        if self.metrics is not None:
            self.metrics.apply(updates)

    def write_metrics(self, extra: dict[str, object] | None = None) -> None:
        data: dict[str, object] = dict(sorted(self.counters.values.items()))
        for peer, link in self.links.items():
            for kind, n in link.rejected.items():
                data[f"rejected_from_{peer}_{kind}"] = n
            data[f"frames_skipped_from_{peer}"] = link.opener.skipped
        data.update(extra or {})
        (self.node_dir / "metrics.json").write_text(json.dumps(data, indent=2, default=float))

    def close(self) -> None:
        # stopped early: a peer may be gone, so its unsent frames hold the exit briefly only
        # (long enough for a last word such as EndOfRun to reach a live peer on 127.0.0.1)
        linger_ms = STOPPING_LINGER_MS if self.stop.is_set() else None
        self.stop.set()
        for o in self.outboxes.values():
            o.close(linger_ms)
        if self.mailbox is not None:
            self.mailbox.close()
        if self.progress is not None:
            self.progress.close()
        self.zmq.term()
