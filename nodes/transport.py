"""ZeroMQ at the edge: mailboxes for classical frames, pulse-frame sockets, and the Peer adapter.

* Classical: every node binds one PULL *mailbox*; peers connect PUSH sockets to it and send
  two-part messages ``[sender name, authenticated frame]``. A receiver thread sorts frames into one
  queue per known sender; frames from unknown senders are counted and dropped.
* Quantum-event channel: users PUSH ``PulseBatch`` messages (a small versioned JSON header plus the
  frame-count buffer, sent zero-copy) to the channel emulator's PULL socket. A low high-water mark
  makes a slow relay block the emitters: backpressure, never a silent drop.
* ``ZmqPeer`` is the protocol's ``Peer`` over one mailbox queue and one outbox, with authentication
  (``classical.secure``) and the W3C trace context carried in the message envelope.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from classical.peer import FramePeer
from classical.rounds import ProtocolError
from classical.secure import SecureLink

PULSE_WIRE_VERSION = 1
POLL_MS = 100


class NodeStopped(Exception):
    """The node was asked to stop (signal) while waiting."""


@dataclass
class Counters:
    """Plain counters a node reports in its metrics file."""

    values: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0) + n


class Mailbox:
    """A bound PULL socket drained by a thread into one queue per sender."""

    def __init__(self, context: zmq.Context, endpoint: str, senders: list[str],
                 counters: Counters, stop: threading.Event) -> None:
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        self.queues: dict[str, queue.Queue[bytes]] = {s: queue.Queue() for s in senders}
        self.counters, self.stop = counters, stop
        self.thread = threading.Thread(target=self._drain, name="mailbox", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            parts = self.socket.recv_multipart(copy=True)
            sender = parts[0].decode(errors="replace") if parts else ""
            if len(parts) != 2 or sender not in self.queues:
                self.counters.add("classical_frames_dropped_malformed")
                continue
            self.queues[sender].put(parts[1])

    def get(self, sender: str, timeout_s: float, stop: threading.Event) -> bytes:
        deadline = timeout_s
        while deadline > 0:
            if stop.is_set():
                raise NodeStopped()
            try:
                return self.queues[sender].get(timeout=min(0.2, deadline))
            except queue.Empty:
                deadline -= 0.2
        raise TimeoutError(f"no message from {sender} within {timeout_s:.0f} s")

    def close(self) -> None:
        self.thread.join(timeout=1.0)
        self.socket.close(linger=0)


class Outbox:
    def __init__(self, context: zmq.Context, endpoint: str, me: str) -> None:
        self.socket = context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.connect(endpoint)
        self.me = me.encode()

    def send(self, frame: bytes) -> None:
        self.socket.send_multipart([self.me, frame])

    def close(self) -> None:
        self.socket.close()


TraceInjector = Callable[[], str | None]


class ZmqPeer(FramePeer):
    """The round protocol's ``Peer`` for one remote node: frames from its mailbox queue, to its
    outbox, opened on the shared path of ``classical.peer.FramePeer`` (counted in ``counters``),
    with the W3C trace context in the envelope."""

    def __init__(self, name: str, link: SecureLink, mailbox: Mailbox, outbox: Outbox,
                 counters: Counters, stop: threading.Event, timeout_s: float,
                 traceparent: TraceInjector | None = None) -> None:
        super().__init__(name, link, counters.add)
        self.mailbox, self.outbox, self.stop, self.timeout_s = mailbox, outbox, stop, timeout_s
        self.traceparent = traceparent or (lambda: None)

    def _traceparent(self) -> str | None:
        return self.traceparent()

    def _put(self, frame: bytes) -> None:
        self.outbox.send(frame)

    def _get(self) -> bytes:
        try:
            return self.mailbox.get(self.name, self.timeout_s, self.stop)
        except TimeoutError as e:
            raise ProtocolError(str(e)) from None


# --- quantum-event channel --------------------------------------------------------------------


@dataclass(frozen=True)
class PulseBatch:
    """A batch of emitted frames: which user, which frames, and the pulses in them.

    The pulses are described exactly and compactly by the user's counter-based settings: the
    key of the generator and the per-frame class counts (the buffer). This is nature's view of
    what was sent; it terminates in the channel emulator and never reaches Charles's software.
    """

    user: str
    round_id: int
    first_frame: int
    frame_counts: np.ndarray  # (n_frames, combos) int64
    settings_key: int
    last_in_round: bool
    traceparent: str | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frame_counts.shape[0])

    def to_parts(self) -> list[Any]:
        header = {"v": PULSE_WIRE_VERSION, "user": self.user, "round": self.round_id,
                  "first_frame": self.first_frame, "shape": list(self.frame_counts.shape),
                  "key": str(self.settings_key), "last": self.last_in_round,
                  "traceparent": self.traceparent}
        return [json.dumps(header).encode(), np.ascontiguousarray(self.frame_counts, np.int64)]

    @classmethod
    def from_parts(cls, parts: list[Any]) -> PulseBatch:
        if len(parts) != 2:
            raise ValueError(f"pulse batch has {len(parts)} parts, expected 2")
        h = json.loads(bytes(parts[0]))
        if h.get("v") != PULSE_WIRE_VERSION:
            raise ValueError(f"unsupported pulse wire version {h.get('v')}")
        shape = tuple(int(x) for x in h["shape"])
        counts = np.frombuffer(parts[1], dtype=np.int64)
        if len(shape) != 2 or counts.size != shape[0] * shape[1]:
            raise ValueError(f"pulse batch buffer of {counts.size} counts, header says {shape}")
        return cls(str(h["user"]), int(h["round"]), int(h["first_frame"]),
                   counts.reshape(shape), int(h["key"]), bool(h["last"]), h.get("traceparent"))


class PulseSender:
    def __init__(self, context: zmq.Context, endpoint: str, high_water_mark: int = 4) -> None:
        self.socket = context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, high_water_mark)
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.connect(endpoint)

    def send(self, batch: PulseBatch, stop: threading.Event) -> None:
        parts = batch.to_parts()
        while True:  # blocks while the relay is behind (backpressure), but stays stoppable
            if stop.is_set():
                raise NodeStopped()
            try:
                self.socket.send_multipart(parts, copy=False, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                self.socket.poll(POLL_MS, zmq.POLLOUT)

    def close(self) -> None:
        self.socket.close()


class PulseReceiver:
    def __init__(self, context: zmq.Context, endpoint: str, high_water_mark: int = 4) -> None:
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.RCVHWM, high_water_mark)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)

    def receive_or_none(self, stop: threading.Event) -> list[Any] | None:
        """One multipart message, or None after a poll interval without one (check other work)."""
        if stop.is_set():
            raise NodeStopped()
        if self.socket.poll(POLL_MS, zmq.POLLIN):
            return self.socket.recv_multipart(copy=False)
        return None

    def close(self) -> None:
        self.socket.close(linger=0)
