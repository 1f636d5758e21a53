"""Classical-channel faults of a game day, injected at the edge (docs/game-days.md).

The classical channels are ZeroMQ connections between the nodes' mailboxes; a fault on one is
made by a man in the middle, never by a flag inside the protocol: for each node whose incoming
messages a fault touches, the orchestrator binds an ``EdgeProxy`` where that node's peers connect
(``RunConfig.connect``) and forwards to the node's real mailbox. The protocol sees only what a
hostile or broken network would show it: frames that never arrive, arrive late, twice, out of
order, or altered (and then fail their tag).

When a fault acts is decided in emulated time, as for nature's faults: classical messages belong
to a key round (the ``round_id`` every message carries in clear, next to its tag-protected body),
and a fault acts on the messages of the rounds whose slots share a slot with the fault's window
(``channel.impairments.fault_slots``), the rounds the verdict judges as "during" it. Which
messages a ``fraction`` picks, and the jitter of a latency, are a pure function of the run's edge
seed, the fault's name, the direction, the round, the message kind and its occurrence in that
round: the same scenario and seed pick the same messages, whatever the interleaving of rounds.
Wall-clock effects (latency, bandwidth, the hold of a reordered message) are wall-clock by nature.

* ``latency`` delays each message by ``latency_ms`` plus a Gaussian ``jitter_ms`` (cut at 0),
  keeping the order (a FIFO link);
* ``bandwidth_limit`` serialises messages at ``bandwidth_bps``;
* ``outage`` drops every message;
* ``tamper`` flips one bit in the body of a ``fraction`` of the messages (the receiver's tag check
  fails: the message is counted and dropped);
* ``replay`` sends a ``fraction`` of the messages a second time (the receiver refuses the old
  sequence number);
* ``reorder`` holds a ``fraction`` of the messages until ``window_messages - 1`` later messages of
  the same direction have passed them or ``REORDER_HOLD_S`` has elapsed.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import math
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from channel.impairments import TimelineEntry, fault_rounds, fault_windows
from channel.rng import derive_seed

#: Fault types this module injects.
CLASSICAL_FAULTS = ("latency", "bandwidth_limit", "outage", "tamper", "replay", "reorder")
#: The directions (sender, receiver) of each classical target.
DIRECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "classical/alice-bob": (("alice", "bob"), ("bob", "alice")),
    "classical/charles-alice": (("charles", "alice"), ("alice", "charles")),
    "classical/charles-bob": (("charles", "bob"), ("bob", "charles")),
}
#: The longest a reordered message is held when fewer later messages come to overtake it: the
#: protocol is a dialogue, so a message held for the next one of its direction may wait for an
#: answer that needs it; after this it goes on, late.
REORDER_HOLD_S = 0.05
_FRAME_HEAD = struct.Struct(">BQI")  # classical.authentication's frame header
_CODEC_HEAD = struct.Struct(">BBI")  # classical.codec's message head
_MAX_META = 1 << 16


@dataclass(frozen=True)
class EdgeFault:
    """A classical fault and the rounds ``[first_round, stop_round)`` whose messages it acts on."""

    name: str
    kind: str
    target: str
    params: Mapping[str, Any]
    first_round: int
    stop_round: int

    def acts_on(self, sender: str, receiver: str, round_id: int) -> bool:
        return ((sender, receiver) in DIRECTIONS[self.target]
                and self.first_round <= round_id < self.stop_round)


def edge_faults(entries: Sequence[TimelineEntry], clock_rate_hz: float, frame_bits: int,
                round_slots: int) -> tuple[EdgeFault, ...]:
    """The classical faults of a timeline with the rounds each acts on (``fault_rounds``); a
    fault that covers no slot acts on none."""
    out = []
    for fault in fault_windows(entries):
        if fault.kind not in CLASSICAL_FAULTS:
            continue
        first, stop = fault_rounds(fault, clock_rate_hz, frame_bits, round_slots)
        if stop > first:
            out.append(EdgeFault(fault.name, fault.kind, fault.target, dict(fault.params),
                                 first, stop))
    return tuple(out)


def receivers(faults: Sequence[EdgeFault]) -> list[str]:
    """The nodes whose incoming messages some fault touches (each gets a proxy)."""
    return sorted({r for f in faults for _, r in DIRECTIONS[f.target]})


def frame_label(frame: bytes) -> tuple[int, int] | None:
    """(round_id, message kind) of an authenticated classical frame, read from its clear
    envelope; None for anything that does not parse as one (such a frame is forwarded as is:
    judging it is the receiver's job)."""
    body = _FRAME_HEAD.size
    if len(frame) < body + _CODEC_HEAD.size:
        return None
    _, kind, meta_len = _CODEC_HEAD.unpack_from(frame, body)
    start = body + _CODEC_HEAD.size
    if meta_len > _MAX_META or start + meta_len > len(frame):
        return None
    try:
        meta = json.loads(frame[start:start + meta_len])
    except ValueError:
        return None
    round_id = meta.get("round_id") if isinstance(meta, dict) else None
    if not isinstance(round_id, int) or isinstance(round_id, bool):
        return None
    return round_id, kind


def _uniform(seed: int, *key: Any) -> float:
    """A uniform number in [0, 1) keyed by ``key`` (text and integers) under ``seed``."""
    label = "edge " + " ".join(str(k) for k in key)
    return (derive_seed(seed, label) >> 11) / float(1 << 53)


@dataclass
class EdgeCounts:
    """What the proxies did, per fault name and effect (``orchestrator/edge.json``)."""

    by_fault: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(
        lambda: defaultdict(int)))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, fault: str, effect: str) -> None:
        with self.lock:
            self.by_fault[fault][effect] += 1

    def to_json(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {f: dict(sorted(e.items())) for f, e in sorted(self.by_fault.items())}


@dataclass(frozen=True)
class Release:
    """A frame of ``sender`` to hand on at ``at`` (monotonic seconds)."""

    at: float
    sender: str
    frame: bytes


@dataclass
class EdgeBook:
    """The classical faults of a run, shared by its proxies: the scenario's, and those a live
    control plane adds or ends while the run goes (``orchestration.control``), with the latest
    round any proxy has seen a message of."""

    faults: list[EdgeFault] = field(default_factory=list)
    counts: EdgeCounts = field(default_factory=EdgeCounts)
    latest_round: int = -1
    #: rounds at or above this are not the run's (``EndOfRun`` carries the number of rounds)
    rounds: int = 1 << 62
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, fault: EdgeFault) -> None:
        with self.lock:
            self.faults = [*self.faults, fault]

    def end(self, name: str, stop_round: int) -> bool:
        """End fault ``name`` before ``stop_round`` (if it lasts longer); whether it was active."""
        with self.lock:
            hit = [f for f in self.faults if f.name == name and f.stop_round > stop_round
                   and f.first_round <= stop_round]  # a clear ends only what has begun
            self.faults = [dataclasses.replace(f, stop_round=max(f.first_round, stop_round))
                           if f in hit else f for f in self.faults]
            return bool(hit)

    def seen(self, sender: str, round_id: int) -> None:
        """A message of ``round_id`` from ``sender`` passed. Only the users' messages count
        (Charles, untrusted, may label his own authentic messages with any round), and only the
        run's rounds."""
        if sender in ("alice", "bob") and round_id < self.rounds:
            with self.lock:
                self.latest_round = max(self.latest_round, round_id)


class EdgePolicy:
    """What the faults do to one receiver's incoming frames: ``route`` maps a frame arriving at
    wall time ``now`` to the frames to forward and when. Pure apart from its per-direction state
    (occurrence counters, the FIFO's last release, held messages)."""

    def __init__(self, receiver: str, faults: Sequence[EdgeFault] | EdgeBook, seed: int,
                 counts: EdgeCounts | None = None) -> None:
        self.receiver = receiver
        self.book = faults if isinstance(faults, EdgeBook) else EdgeBook(
            list(faults), counts or EdgeCounts())
        self.seed = seed
        self.counts = self.book.counts
        self._seen: dict[tuple[str, int, int], int] = defaultdict(int)
        self._last_release: dict[str, float] = defaultdict(lambda: -math.inf)
        self._previous: dict[str, bytes] = {}
        #: per sender: [frame, release deadline, later messages still allowed to overtake]
        self._held: dict[str, list[list[Any]]] = defaultdict(list)

    def route(self, sender: str, frame: bytes, now: float) -> list[Release]:
        label = frame_label(frame)
        out: list[Release] = []
        if label is not None:
            self.book.seen(sender, label[0])
        active = [] if label is None else [
            f for f in self.book.faults if f.acts_on(sender, self.receiver, label[0])]
        if not active:
            out.append(self._fifo(sender, frame, now))
            self._previous[sender] = frame
            return out + self._overtaken(sender, now)  # held ones this one has now passed
        assert label is not None
        round_id, kind = label
        occurrence = self._seen[(sender, round_id, kind)]
        self._seen[(sender, round_id, kind)] += 1

        def picked(f: EdgeFault) -> bool:
            fraction = float(f.params.get("fraction", 1.0))
            return _uniform(self.seed, f.name, sender, self.receiver, round_id, kind,
                            occurrence) < fraction

        delay, transmit, hold, replay = 0.0, 0.0, False, False
        for f in active:
            if f.kind == "outage":
                self.counts.add(f.name, "dropped")
                return out
            if f.kind == "tamper" and picked(f):
                frame = _flip_bit(frame, _uniform(self.seed, f.name, "bit", sender, round_id,
                                                  kind, occurrence))
                self.counts.add(f.name, "tampered")
            elif f.kind == "latency":
                jitter = float(f.params.get("jitter_ms", 0.0)) * _normal(
                    self.seed, f.name, sender, self.receiver, round_id, kind, occurrence)
                delay += max(0.0, float(f.params["latency_ms"]) + jitter) / 1e3
                self.counts.add(f.name, "delayed")
            elif f.kind == "bandwidth_limit":
                transmit += 8.0 * len(frame) / float(f.params["bandwidth_bps"])
                self.counts.add(f.name, "serialised")
            elif f.kind == "replay" and picked(f):
                replay = True
                self.counts.add(f.name, "replayed")
            elif f.kind == "reorder" and picked(f):
                hold = True
                window = int(f.params.get("window_messages", 2))
                self.counts.add(f.name, "held")
        if hold:
            self._held[sender].append([frame, now + REORDER_HOLD_S, window - 1])
        else:
            out.append(self._fifo(sender, frame, now, delay, transmit))
        if replay:  # the previous message of this direction again (or this one, if none)
            again = self._previous.get(sender, frame)
            out.append(self._fifo(sender, again, now, delay, transmit))
        self._previous[sender] = frame
        return out + self._overtaken(sender, now, passing=frame if hold else None)

    def due(self, now: float) -> list[Release]:
        """Held messages whose hold has run out."""
        out = []
        for sender, held in self._held.items():
            for h in [h for h in held if h[1] <= now]:
                held.remove(h)
                out.append(self._fifo(sender, h[0], now))
        return out

    def next_deadline(self) -> float:
        return min((h[1] for held in self._held.values() for h in held), default=math.inf)

    def _overtaken(self, sender: str, now: float, passing: bytes | None = None
                   ) -> list[Release]:
        """A message of ``sender`` (queued just before) is passing the held ones: each may be
        overtaken once less, and goes on right after it when it may not be overtaken again.
        ``passing``: a message that was itself just held, which passes none of the others."""
        out = []
        for h in list(self._held[sender]):
            if passing is not None and h[0] is passing:
                continue
            h[2] -= 1
            if h[2] <= 0:
                self._held[sender].remove(h)
                at = max(self._last_release[sender], now) + 1e-6  # after the one passing it,
                self._last_release[sender] = at  # and never ahead of frames queued before
                out.append(Release(at, sender, h[0]))
        return out

    def _fifo(self, sender: str, frame: bytes, now: float, delay: float = 0.0,
              transmit: float = 0.0) -> Release:
        """Hand ``frame`` on after ``delay``, and after the frames before it have passed (a FIFO
        link), ``transmit`` seconds after the link is free (a limited bandwidth)."""
        at = max(self._last_release[sender], now + delay) + transmit
        self._last_release[sender] = at
        return Release(at, sender, frame)


def _normal(seed: int, *key: Any) -> float:
    """A standard normal number keyed like ``_uniform`` (Box–Muller)."""
    u1 = 1.0 - _uniform(seed, "n1", *key)
    u2 = _uniform(seed, "n2", *key)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _flip_bit(frame: bytes, u: float) -> bytes:
    """``frame`` with one bit of its body (after the 13-byte header) flipped, at ``u``'s place."""
    body = _FRAME_HEAD.size
    if len(frame) <= body:
        return frame
    position = body + min(int(u * (len(frame) - body)), len(frame) - body - 1)
    out = bytearray(frame)
    out[position] ^= 1 << int(u * 8 * (len(frame) - body)) % 8
    return bytes(out)


class EdgeProxy:
    """A man in the middle in front of one node's mailbox: binds ``listen`` (where the node's
    peers connect), forwards two-part messages ``[sender, frame]`` to ``forward_to`` as
    ``policy`` says, in a thread of the orchestrator."""

    def __init__(self, listen: str, forward_to: str, policy: EdgePolicy) -> None:
        self._ctx = zmq.Context()
        self._in = self._ctx.socket(zmq.PULL)
        self._in.setsockopt(zmq.LINGER, 0)
        self._in.bind(listen)
        self._out = self._ctx.socket(zmq.PUSH)
        self._out.setsockopt(zmq.LINGER, 1000)
        self._out.connect(forward_to)
        self.policy = policy
        self._queue: list[tuple[float, int, bytes, bytes]] = []
        self._order = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"edge-{policy.receiver}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            wake = min(self._queue[0][0] if self._queue else math.inf,
                       self.policy.next_deadline(), now + 0.1)
            if self._in.poll(max(0, int((wake - now) * 1000))):
                parts = self._in.recv_multipart()
                if len(parts) == 2:
                    sender = parts[0].decode(errors="replace")
                    for r in self.policy.route(sender, parts[1], time.monotonic()):
                        self._push(r)
                else:  # not a classical message: the receiver counts and drops it
                    self._out.send_multipart(parts)
            for r in self.policy.due(time.monotonic()):
                self._push(r)
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, sender_raw, frame = heapq.heappop(self._queue)
                self._out.send_multipart([sender_raw, frame])

    def _push(self, release: Release) -> None:
        heapq.heappush(self._queue, (release.at, next(self._order), release.sender.encode(),
                                     release.frame))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for _, _, sender_raw, frame in sorted(self._queue):  # nothing in flight is lost
            self._out.send_multipart([sender_raw, frame])
        self._in.close()
        self._out.close()
        self._ctx.term()


def start_proxies(book: EdgeBook, connect: Mapping[str, str], mailboxes: Mapping[str, str],
                  seed: int) -> list[EdgeProxy]:
    """One proxy per node in ``connect`` (its peers send there), forwarding to its mailbox."""
    return [EdgeProxy(connect[node], mailboxes[node], EdgePolicy(node, book, seed))
            for node in sorted(connect)]
