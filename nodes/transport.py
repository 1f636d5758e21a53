"""ZeroMQ at the edge: mailboxes for classical frames, pulse-frame sockets, and the Peer adapter.

* Classical: every node binds one PULL *mailbox*; peers connect PUSH sockets to it and send
  two-part messages ``[sender name, authenticated frame]``. A receiver thread sorts frames into one
  queue per known sender; frames from unknown senders are counted and dropped.
* Quantum-event channel: users PUSH ``PulseBatch`` messages (a small versioned JSON header plus the
  frame-count buffer, sent zero-copy) to the channel emulator's PULL socket. A low high-water mark
  makes a slow relay block the emitters: backpressure, never a silent drop.
* ``ZmqPeer`` is the protocol's ``Peer`` over one mailbox queue and one outbox, with authentication
  (``classical.secure``) and the W3C trace context carried in the message envelope.

Anyone who can reach a port can send anything, so every receiving socket has a ZeroMQ
``MAXMSGSIZE`` derived from the round configuration (a larger message disconnects its sender
before it is read into memory), a mailbox holds at most ``MAILBOX_QUEUE_FRAMES`` unread frames per
sender, and a pulse batch is checked against ``PulseLayout`` before anything is built from it.
Every message received is counted, and so is every message dropped.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import zmq

from channel.controls import IDENTITY, SourceControls
from classical.authentication import FRAME_HEADER_BYTES
from classical.codec import max_message_bytes
from classical.peer import FramePeer
from classical.rounds import ProtocolError
from classical.secure import SecureLink

PULSE_WIRE_VERSION = 2
POLL_MS = 100
#: Unread frames a mailbox keeps per sender. The protocol has a handful in flight at a time (a
#: round's opening messages, the next round's start, the announcements of two pipelined rounds);
#: beyond this a sender is flooding, and its further frames are counted and dropped.
MAILBOX_QUEUE_FRAMES = 64
#: Room for a frame's tag, which follows the authenticated message (HMAC-SHA256: 32 bytes;
#: Wegman–Carter: 8 per evaluation).
_TAG_ROOM = 64
#: A classical frame can never exceed its format: a u32 payload length, the header and the tag.
MAX_CLASSICAL_MESSAGE_BYTES = (1 << 32) - 1 + FRAME_HEADER_BYTES + _TAG_ROOM
#: A pulse-batch header is a few short fields (JSON); anything longer is refused unparsed.
MAX_PULSE_HEADER_BYTES = 1024
_MAX_TRACEPARENT = 256

T = TypeVar("T")


def classical_max_message_bytes(round_slots: int) -> int:
    """``MAXMSGSIZE`` of a mailbox: the longest message a round of ``round_slots`` slots can
    produce (``classical.codec.max_message_bytes``) and its tag, capped by the frame format."""
    return min(max_message_bytes(round_slots) + _TAG_ROOM, MAX_CLASSICAL_MESSAGE_BYTES)


class NodeStopped(Exception):
    """The node was asked to stop (signal) while waiting."""


@dataclass
class Counters:
    """Plain counters a node reports in its metrics file."""

    values: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: also told of every increment: the node's live metrics (``nodes.metrics.NodeMetrics.count``)
    sink: Callable[[str, int], None] | None = field(default=None, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0) + n
            if self.sink is not None:  # under the lock: attach_sink's replay misses nothing
                self.sink(name, n)

    def attach_sink(self, sink: Callable[[str, int], None]) -> None:
        """Mirror every counter into ``sink``: what was counted so far, then each increment."""
        with self.lock:
            for name, n in self.values.items():
                sink(name, n)
            self.sink = sink


class Mailbox:
    """A bound PULL socket drained by a thread into one bounded queue per sender.

    Every message is counted (``classical_frames_received_total``) and either queued or dropped:
    ``classical_frames_dropped_malformed`` (not two parts, or an unknown sender) or
    ``classical_frames_dropped_queue_full`` (its sender already has ``max_queued`` unread frames).
    Messages above ``max_message_bytes`` never get this far: ZeroMQ disconnects their sender.
    """

    def __init__(self, context: zmq.Context, endpoint: str, senders: list[str],
                 counters: Counters, stop: threading.Event,
                 max_message_bytes: int = MAX_CLASSICAL_MESSAGE_BYTES,
                 max_queued: int = MAILBOX_QUEUE_FRAMES) -> None:
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.socket.bind(endpoint)
        self.queues: dict[str, queue.Queue[bytes]] = {s: queue.Queue(max_queued) for s in senders}
        self.counters, self.stop = counters, stop
        # the socket is drained until close(), not until ``stop``: a stopping node still hears
        # its peer's last word (``EndOfRun``, which settles a pending key)
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._drain, name="mailbox", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._closed.is_set():
            if not poller.poll(POLL_MS):
                continue
            self.sort(self.socket.recv_multipart(copy=True))

    def sort(self, parts: list[bytes]) -> bool:
        """Queue one received message by its sender; False if it was dropped (counted)."""
        self.counters.add("classical_frames_received_total")
        sender = parts[0].decode(errors="replace") if len(parts) == 2 else ""
        if sender not in self.queues:
            self.counters.add("classical_frames_dropped_malformed")
            return False
        try:
            self.queues[sender].put_nowait(parts[1])
        except queue.Full:
            self.counters.add("classical_frames_dropped_queue_full")
            return False
        return True

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
        self._closed.set()
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

    def limit_send_wait(self, ms: int) -> None:
        """From now on a send waits at most ``ms`` for a receiver (then ``zmq.Again``): for a
        stopping node's last words, whose receiver may already be gone (a PUSH socket without a
        peer would wait for ever)."""
        self.socket.setsockopt(zmq.SNDTIMEO, ms)

    def close(self, linger_ms: int | None = None) -> None:
        """``linger_ms``: how long unsent frames may hold the node's exit (the socket's own
        2 s when None)."""
        self.socket.close(linger=linger_ms)


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


class PulseBatchRejected(ValueError):
    """A pulse batch the channel emulator refuses; ``reason`` names the counter it goes to
    (``pulse_batches_dropped_<reason>``): ``malformed`` (not a well-formed batch), ``unknown_user``,
    ``outside_round`` (frames, shape or flags the round configuration does not allow),
    ``bad_counts`` (class counts that are negative or do not add up to the frame), and, from the
    emulator's pairing, ``stale``, ``ahead`` and ``duplicate``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PulseLayout:
    """What the round configuration allows on the quantum-event channel.

    Round ``r`` covers frames ``[r * round_frames, (r + 1) * round_frames)`` of ``2**frame_bits``
    slots, sent in batches of ``batch_frames`` frames from the round's first frame (the last batch
    may be shorter, and is the one flagged ``last``); ``combos`` is each user's number of
    (intensity, basis) classes. A batch is valid only if it is exactly one of these.
    """

    rounds: int
    round_frames: int
    batch_frames: int
    frame_bits: int
    combos: Mapping[str, int]

    @property
    def batches_per_round(self) -> int:
        return math.ceil(self.round_frames / self.batch_frames)

    def max_message_bytes(self) -> int:
        """``MAXMSGSIZE`` of the pulse socket: the larger of a header and a full batch's counts
        (ZeroMQ applies it to each part of a multipart message)."""
        return max(MAX_PULSE_HEADER_BYTES, 8 * self.batch_frames * max(self.combos.values()))

    def check(self, batch: PulseBatch) -> None:
        """``PulseBatchRejected`` unless ``batch`` is one the configuration allows."""
        combos = self.combos.get(batch.user)
        if combos is None:
            raise PulseBatchRejected("unknown_user", f"unknown user {batch.user[:32]!r}")
        if not 0 <= batch.round_id < self.rounds:
            raise PulseBatchRejected("outside_round", f"round {batch.round_id} outside "
                                     f"[0, {self.rounds})")
        start = batch.round_id * self.round_frames
        stop = start + self.round_frames
        offset = batch.first_frame - start
        if not start <= batch.first_frame < stop or offset % self.batch_frames:
            raise PulseBatchRejected("outside_round", f"first frame {batch.first_frame} is not a "
                                     f"batch start of round {batch.round_id} (frames [{start}, "
                                     f"{stop}) in batches of {self.batch_frames})")
        n = min(self.batch_frames, stop - batch.first_frame)
        if batch.frame_counts.shape != (n, combos):
            raise PulseBatchRejected("outside_round", f"counts of shape "
                                     f"{batch.frame_counts.shape}, the batch at frame "
                                     f"{batch.first_frame} has shape {(n, combos)}")
        if batch.last_in_round != (batch.first_frame + n == stop):
            raise PulseBatchRejected("outside_round", f"batch at frame {batch.first_frame} "
                                     f"flagged last={batch.last_in_round}")
        counts, size = batch.frame_counts, 1 << self.frame_bits
        # bounded first, so the row sums cannot overflow
        if counts.size and (counts.min() < 0 or counts.max() > size
                            or np.any(counts.sum(axis=1) != size)):
            raise PulseBatchRejected("bad_counts", f"each frame's class counts must be >= 0 and "
                                     f"sum to {size}")


_PULSE_FIELDS = {"v": int, "user": str, "round": int, "first_frame": int, "shape": list,
                 "key": str, "last": bool, "traceparent": (str, type(None)),
                 "controls": (dict, type(None))}


def _rejected(message: str) -> PulseBatchRejected:
    return PulseBatchRejected("malformed", message)


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
    #: the user's actuators while these frames were sent (its calibration loops' settings)
    controls: SourceControls = IDENTITY

    @property
    def n_frames(self) -> int:
        return int(self.frame_counts.shape[0])

    def to_parts(self) -> list[Any]:
        header = {"v": PULSE_WIRE_VERSION, "user": self.user, "round": self.round_id,
                  "first_frame": self.first_frame, "shape": list(self.frame_counts.shape),
                  "key": str(self.settings_key), "last": self.last_in_round,
                  "traceparent": self.traceparent,
                  "controls": None if self.controls.is_identity else {
                      "rotation_rad": list(self.controls.rotation_rad),
                      "delay_ps": self.controls.delay_ps}}
        return [json.dumps(header).encode(), np.ascontiguousarray(self.frame_counts, np.int64)]

    @classmethod
    def from_parts(cls, parts: list[Any], layout: PulseLayout) -> PulseBatch:
        """The batch in a two-part wire message, checked against ``layout``.

        Raises ``PulseBatchRejected`` (and nothing else) for anything else: wrong number of parts,
        a header that is not a JSON object of exactly the known fields with their types, a
        buffer that does not hold the header's shape, or a batch the layout does not allow.
        """
        if len(parts) != 2:
            raise _rejected(f"pulse batch has {len(parts)} parts, expected 2")
        try:
            header, buffer = (memoryview(p).cast("B") for p in parts)
        except TypeError:  # not a contiguous buffer
            raise _rejected("pulse batch parts must be byte buffers") from None
        if len(header) > MAX_PULSE_HEADER_BYTES:
            raise _rejected(f"pulse header of {len(header)} bytes exceeds "
                            f"{MAX_PULSE_HEADER_BYTES}")
        try:
            h = json.loads(bytes(header))
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, too many digits, nesting
            raise _rejected(f"pulse header is not JSON ({type(e).__name__})") from None
        if not isinstance(h, dict) or h.keys() != _PULSE_FIELDS.keys():
            raise _rejected(f"pulse header must be an object with fields {sorted(_PULSE_FIELDS)}")
        for name, kind in _PULSE_FIELDS.items():
            # bool is an int in Python: only "last" may be one
            if not isinstance(h[name], kind) or (kind is int and isinstance(h[name], bool)):
                raise _rejected(f"pulse header field {name!r} has the wrong type")
        if h["v"] != PULSE_WIRE_VERSION:
            raise _rejected(f"unsupported pulse wire version {h['v']}")
        shape, key, tp = h["shape"], h["key"], h["traceparent"]
        if not (len(shape) == 2 and all(type(x) is int and 0 <= x < 1 << 31 for x in shape)):
            raise _rejected("pulse header shape must be two non-negative integers")
        if not (key.isascii() and key.isdecimal() and len(key) <= 20 and int(key) < 1 << 64):
            raise _rejected("settings key must be a decimal 64-bit integer")
        if tp is not None and len(tp) > _MAX_TRACEPARENT:
            raise _rejected(f"traceparent longer than {_MAX_TRACEPARENT} characters")
        if len(buffer) != 8 * shape[0] * shape[1]:
            raise _rejected(f"pulse batch buffer of {len(buffer)} bytes, header says {shape} "
                            f"int64")
        batch = cls(h["user"], h["round"], h["first_frame"],
                    np.frombuffer(buffer, dtype=np.int64).reshape(shape), int(key), h["last"], tp,
                    _controls(h["controls"]))
        layout.check(batch)
        return batch


def _controls(value: dict[str, Any] | None) -> SourceControls:
    """A header's ``controls``: null, or exactly ``rotation_rad`` (three numbers) and
    ``delay_ps`` (a number), within the actuators' ranges (``channel.controls``)."""
    if value is None:
        return IDENTITY
    if value.keys() != {"rotation_rad", "delay_ps"}:
        raise _rejected("pulse header controls must have exactly rotation_rad and delay_ps")
    rot, delay = value["rotation_rad"], value["delay_ps"]
    numbers = (int, float)
    if not (isinstance(rot, list) and len(rot) == 3
            and all(isinstance(x, numbers) and not isinstance(x, bool) for x in rot)
            and isinstance(delay, numbers) and not isinstance(delay, bool)):
        raise _rejected("pulse header controls: rotation_rad must be three numbers, delay_ps a "
                        "number")
    try:
        return SourceControls(tuple(float(x) for x in rot), float(delay))
    except (ValueError, OverflowError) as e:
        raise _rejected(f"pulse header controls: {e}") from None


def run_stoppable(work: Callable[[], T], stop: threading.Event, poll_s: float = 0.05) -> T:
    """``work()`` in a worker thread, waited for with ``stop`` checked every ``poll_s``: a long
    kernel (sampling a whole pulse batch) does not hold a stopping node, which raises
    ``NodeStopped`` and leaves the abandoned work to end with the process. Only for work whose
    result is all that matters (nothing it touches must be left consistent)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = e

    worker = threading.Thread(target=target, name="stoppable-work", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(poll_s)
        if stop.is_set() and worker.is_alive():
            raise NodeStopped()
    if "error" in box:
        raise box["error"]
    return box["value"]


def send_stoppable(socket: zmq.Socket, parts: list[Any], stop: threading.Event) -> None:
    """Send a multipart message, blocking while the receiver is behind (backpressure, never a
    silent drop) but ending with ``NodeStopped`` as soon as ``stop`` is set."""
    while True:
        if stop.is_set():
            raise NodeStopped()
        try:
            socket.send_multipart(parts, copy=False, flags=zmq.NOBLOCK)
            return
        except zmq.Again:
            socket.poll(POLL_MS, zmq.POLLOUT)


class PulseSender:
    def __init__(self, context: zmq.Context, endpoint: str, high_water_mark: int = 4) -> None:
        self.socket = context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, high_water_mark)
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.connect(endpoint)

    def send(self, batch: PulseBatch, stop: threading.Event) -> None:
        send_stoppable(self.socket, batch.to_parts(), stop)

    def close(self, linger_ms: int | None = None) -> None:
        """``linger_ms=0`` when the node stops: pulses of a round nobody finishes are dropped
        instead of holding the exit for the socket's 2 s linger."""
        self.socket.close(linger=linger_ms)


class PulseReceiver:
    def __init__(self, context: zmq.Context, endpoint: str, max_message_bytes: int,
                 high_water_mark: int = 4) -> None:
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.RCVHWM, high_water_mark)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # PulseLayout.max_message_bytes
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
