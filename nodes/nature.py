"""Nature: the channel emulator, in its own process.

It owns the quantum-event channel: the users push their pulse batches to its socket; it pairs
Alice's and Bob's batches of the same frames, holds the link's live state (``channel.link.Link``),
samples the detectors with the exact sampler (with the scenario's physics faults at their
emulated times, which the link carries: ``channel.impairments``) and pushes to Charles only what
his electronics would report, one ``nodes.records.RecordsBatch`` per pair
(docs/trust-boundaries.md). The pulse descriptions (and the users' settings keys in them) never
leave this process, and nature has no classical link: it can neither read nor send a protocol
message. Its secrets (``orchestration.secrets``) are its sampling and drift seeds; it is stopped by
the orchestrator once the protocol nodes are done, and writes its singles counters then.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
import zmq
from opentelemetry.trace import SpanKind

from channel.impairments import PHYSICS_FAULTS, FaultSchedule, TimelineEntry
from channel.link import Link
from channel.relay import DETECTOR_NAMES, N_DETECTORS, DetectionRecords
from channel.relay_attack import RelayAttack, is_relay_attack
from channel.rng import derive_seed
from channel.samplers import sample
from channel.settings import SettingsGenerator, SettingsPlan
from nodes.base import NodeContext
from nodes.records import RecordsBatch
from nodes.tracing import context_from, current_traceparent, link_to
from nodes.transport import (
    Counters,
    PulseBatch,
    PulseBatchRejected,
    PulseLayout,
    PulseReceiver,
    run_stoppable,
    send_stoppable,
)

#: Rounds the emulator holds pulse batches for: the oldest incomplete round and the next one (the
#: users emit round r + 1 while round r is distilled, ``nodes.users``), and one more for margin.
#: Batches of later rounds are refused, so what waits for a partner is bounded by the layout.
ROUNDS_IN_FLIGHT = 3


@dataclass(frozen=True)
class ReadyFrames:
    """Frames for which both users' pulses have arrived: what Charles's software learns of them.

    Only the round, the slot range and the users' trace contexts (for span links); the pulses
    stay with the emulator, which measures them on ``ChannelEmulator.measure_ready(ready)``.
    There is no basis, bit, intensity or settings key here.
    """

    round_id: int
    first_slot: int
    stop_slot: int
    round_complete: bool
    traceparents: tuple[str | None, str | None]
    handle: int


@dataclass
class ChannelEmulator:
    """Nature at the relay: pulse batches in, detector clicks out.

    Pairs Alice's and Bob's batches of the same frames and samples them together; the pulse
    descriptions never leave it. Only batches ``layout`` allows are taken
    (``PulseBatch.from_parts``), only for the ``ROUNDS_IN_FLIGHT`` rounds from the oldest
    incomplete one, and only once per user and frame position, so ``waiting`` holds at most
    ``ROUNDS_IN_FLIGHT`` rounds of batches per user. A round is complete when every batch position
    of it has been paired.
    """

    link: Link
    plans: dict[str, SettingsPlan]
    seed: int
    layout: PulseLayout
    sampler: str = "fast"
    singles: np.ndarray = field(default_factory=lambda: np.zeros(N_DETECTORS, np.int64))
    waiting: dict[str, dict[int, PulseBatch]] = field(
        default_factory=lambda: {"alice": {}, "bob": {}})
    #: first frames of the batches paired so far, per round not yet behind ``next_round``
    paired: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    #: rounds below this are complete; batches of them are stale
    next_round: int = 0
    _complete: set[int] = field(default_factory=set)
    _ready: dict[int, tuple[PulseBatch, PulseBatch]] = field(default_factory=dict)
    #: the fault timeline nature runs (its secrets' and the live control plane's entries)
    timeline: tuple[TimelineEntry, ...] = ()
    #: frames below this have been sampled: a live fault starts here
    sampled_until_frame: int = 0
    #: what a control request must carry (nature's secrets; empty: no control is taken)
    control_token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if set(self.layout.combos) != set(self.waiting) or any(
                self.layout.combos[u] != self.plans[u].n_combos for u in self.waiting):
            raise ValueError(f"layout classes {dict(self.layout.combos)} do not match the plans")

    def _settings(self, batch: PulseBatch) -> SettingsGenerator:
        gen = SettingsGenerator(self.plans[batch.user], batch.settings_key, self.link.frame_bits)
        gen.preload(batch.first_frame, batch.frame_counts)  # the pulses as sent
        return gen

    def accept(self, parts: list[object]) -> ReadyFrames | None:
        """One wire message; ``ReadyFrames`` once both users' batches of its frames are in.

        Raises ``PulseBatchRejected`` (only) for a batch it refuses; nothing is kept of it.
        """
        batch = PulseBatch.from_parts(parts, self.layout)
        r, first = batch.round_id, batch.first_frame
        if r < self.next_round or r in self._complete or first in self.paired.get(r, ()):
            raise PulseBatchRejected("stale", f"{batch.user}'s batch at frame {first} of round "
                                     f"{r}: those frames were measured already")
        if r >= self.next_round + ROUNDS_IN_FLIGHT:
            raise PulseBatchRejected("ahead", f"{batch.user}'s batch of round {r}: round "
                                     f"{self.next_round} is not complete yet")
        if first in self.waiting[batch.user]:
            raise PulseBatchRejected("duplicate", f"{batch.user}'s batch at frame {first} is "
                                     f"already waiting for its partner")
        other = "bob" if batch.user == "alice" else "alice"
        partner = self.waiting[other].pop(first, None)
        if partner is None:
            self.waiting[batch.user][first] = batch
            return None
        a, b = (batch, partner) if batch.user == "alice" else (partner, batch)
        paired = self.paired[r]
        paired.add(first)
        complete = len(paired) == self.layout.batches_per_round
        if complete:
            self._complete.add(r)
            while self.next_round in self._complete:
                self._complete.remove(self.next_round)
                self.paired.pop(self.next_round, None)
                self.next_round += 1
        self._ready[first] = (a, b)
        size = 1 << self.link.frame_bits
        return ReadyFrames(r, first * size, (first + a.n_frames) * size, complete,
                           (a.traceparent, b.traceparent), first)

    def measure_ready(self, ready: ReadyFrames) -> DetectionRecords:
        return self.measure(*self._ready.pop(ready.handle))

    def measure(self, a: PulseBatch, b: PulseBatch) -> DetectionRecords:
        if (a.first_frame, a.n_frames) != (b.first_frame, b.n_frames):
            raise ValueError(f"pulse batches do not cover the same frames: alice "
                             f"{a.first_frame}+{a.n_frames}, bob {b.first_frame}+{b.n_frames}")
        size = 1 << self.link.frame_bits
        start, stop = a.first_frame * size, (a.first_frame + a.n_frames) * size
        self.sampled_until_frame = max(self.sampled_until_frame, a.first_frame + a.n_frames)
        link = self.link
        if not (a.controls.is_identity and b.controls.is_identity):  # the users' actuators
            link = replace(link, controls_a=a.controls, controls_b=b.controls)
        out = sample(link, self._settings(a), self._settings(b), start, stop,
                     derive_seed(self.seed, "pulse batch", a.first_frame), self.sampler)
        self.singles += out.singles
        return out.records

    def control(self, request: object) -> dict[str, object]:
        """A live control-plane request (``orchestration.control``): ``inject`` a physics fault
        or ``clear`` one (or all) from the first frame not yet sampled; the answer says when, in
        emulated seconds, or why not. Nothing already sampled changes. ``where``: the emulated
        time sampled so far."""
        if not isinstance(request, dict) or not self.control_token or not hmac.compare_digest(
                str(request.get("token", "")), self.control_token):
            return {"ok": False, "error": "not authorised"}
        if request.get("op") not in ("inject", "clear", "where"):
            return {"ok": False, "error": "expected {op: inject|clear|where, ...}"}
        frame_s = (1 << self.link.frame_bits) / self.link.clock_rate_hz
        at_s = self.sampled_until_frame * frame_s
        if request["op"] == "where":  # how far the link has been emulated
            return {"ok": True, "now_s": at_s}
        try:
            if request["op"] == "inject":
                raw = dict(request["entry"])
                if raw.get("kind") not in PHYSICS_FAULTS:
                    return {"ok": False, "error": f"{raw.get('kind')!r} is not a fault of the "
                            "channel emulator"}
                entry = TimelineEntry(at_s, str(raw["name"]), str(raw["kind"]),
                                      str(raw["target"]), dict(raw.get("params") or {}),
                                      None if raw.get("duration_s") is None
                                      else float(raw["duration_s"]))
            else:
                name = request.get("name")
                entry = TimelineEntry(at_s, f"live clear {name or 'all'}", "clear_faults", None,
                                      {} if name is None else {"fault": str(name)},
                                      is_action=True)
            timeline = (*self.timeline, entry)
            link = replace(self.link, faults=FaultSchedule.from_timeline(timeline,
                                                                         self.link.drift_seed))
            size = 1 << link.frame_bits  # a dry run of the next frame: a bad fault fails here
            first = self.sampled_until_frame * size
            for lo, hi, piece in link.device_segments(first, first + size):
                piece.physics(lo, hi)
        except Exception as e:  # noqa: BLE001 - a bad request never ends the emulator
            return {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        self.timeline, self.link = timeline, link
        return {"ok": True, ("start_s" if request["op"] == "inject" else "end_s"): at_s}

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) the sampler before the first pulses arrive (and
        the relay attack's kernel when the timeline has one): one frame of a copy of the link
        with settings keyed 0, the records thrown away."""
        link = replace(self.link, _drift_cache={})
        size = 1 << link.frame_bits
        users = [SettingsGenerator(self.plans[u], 0, link.frame_bits) for u in ("alice", "bob")]
        sample(link, *users, 0, size, 0, self.sampler)
        if link.faults is not None and any(is_relay_attack(f.kind, f.params)
                                           for f in link.faults.faults):
            # and the relay's attack kernel, on a copy attacked from the start
            attacked = replace(link, faults=None, attack=RelayAttack("warm-up", 1.0, 0))
            sample(attacked, *users, 0, size, 0, self.sampler)

    def metrics(self) -> dict[str, int]:
        """Clicks per detector so far, coincidences included."""
        return {f"singles_{name}_total": int(c)
                for name, c in zip(DETECTOR_NAMES, self.singles, strict=True)}


def take_pulse_batch(nature: ChannelEmulator, parts: list[object],
                     counters: Counters) -> ReadyFrames | None:
    """Charles's receive path for one message of the pulse channel: counted as received
    (``pulse_batches_received_total``), then as accepted (``pulse_batches_accepted_total``) or
    dropped (``pulse_batches_dropped_total`` and ``pulse_batches_dropped_<reason>``). A refused
    batch is dropped, never raised: hostile input cannot end the relay."""
    counters.add("pulse_batches_received_total")
    try:
        ready = nature.accept(parts)
    except PulseBatchRejected as e:
        counters.add("pulse_batches_dropped_total")
        counters.add(f"pulse_batches_dropped_{e.reason}")
        return None
    counters.add("pulse_batches_accepted_total")
    return ready


class NatureNode:
    """The emulator's process: pulse batches in, ``RecordsBatch`` out to Charles."""

    def __init__(self, ctx: NodeContext, emulator: ChannelEmulator,
                 records_endpoint: str | None = None, control_endpoint: str | None = None
                 ) -> None:
        """``ctx``: the node's context (ZeroMQ, counters, tracer, stop flag, the pulse endpoint
        it binds); ``records_endpoint``: Charles's records socket (None: nothing is sent, the
        caller takes ``on_pulses``'s result, as tests do)."""
        self.ctx, self.emulator = ctx, emulator
        self._singles_observed = emulator.singles.copy()
        self.counters, self.tracer, self.stop = ctx.counters, ctx.tracer, ctx.stop
        self.pulses = PulseReceiver(ctx.zmq, ctx.endpoints.pulses,
                                    emulator.layout.max_message_bytes())
        self.records: zmq.Socket | None = None
        if records_endpoint is not None:
            self.records = ctx.zmq.socket(zmq.PUSH)
            self.records.setsockopt(zmq.SNDHWM, 16)
            self.records.setsockopt(zmq.LINGER, 2000)
            self.records.connect(records_endpoint)
        self.control: zmq.Socket | None = None  # the orchestrator's live control plane
        if control_endpoint is not None:
            self.control = ctx.zmq.socket(zmq.REP)
            self.control.setsockopt(zmq.LINGER, 0)
            self.control.setsockopt(zmq.MAXMSGSIZE, 1 << 16)
            self.control.bind(control_endpoint)

    def on_pulses(self, parts: list[object]) -> RecordsBatch | None:
        """One message of the pulse channel: counted and dropped if refused; a ready pair is
        measured (span ``measure``) and its records returned."""
        ready = take_pulse_batch(self.emulator, parts, self.counters)
        if ready is None:
            return None
        links = [x for x in map(link_to, ready.traceparents) if x is not None]
        with self.tracer.start_as_current_span(
                "measure", context=context_from(ready.traceparents[0]), kind=SpanKind.CONSUMER,
                links=links) as span:
            # in a worker: a batch's kernel can take seconds, and a stop must not wait for it
            records = (run_stoppable(lambda: self.emulator.measure_ready(ready), self.stop)
                       if self.stop is not None else self.emulator.measure_ready(ready))
            span.set_attribute("mdiqkd.round", ready.round_id)
            span.set_attribute("mdiqkd.first_slot", ready.first_slot)
            span.set_attribute("mdiqkd.slots", ready.stop_slot - ready.first_slot)
            span.set_attribute("mdiqkd.coincidences", len(records))
            measured = current_traceparent()
        self.counters.add("coincidence_records_total", len(records))
        self._observe_singles()
        return RecordsBatch(ready.round_id, ready.first_slot, ready.stop_slot,
                            ready.round_complete, ready.traceparents, records, measured)

    def _observe_singles(self) -> None:
        """Clicks per detector since the last batch, to the live metrics (4 updates a batch)."""
        if getattr(self.ctx, "metrics", None) is None:
            return
        delta = self.emulator.singles - self._singles_observed
        self._singles_observed = self.emulator.singles.copy()
        self.ctx.observe([("mdiqkd_detector_clicks_total", float(n), {"detector": name})
                          for name, n in zip(DETECTOR_NAMES, delta, strict=True)])

    def run(self) -> None:
        self.ctx.warm_up(self.emulator.warm_up)  # compiled while the users start
        while True:
            self._serve_control()
            parts = self.pulses.receive_or_none(self.stop)
            if parts is None:
                continue
            out = self.on_pulses(parts)
            if out is not None:
                self._send(out.to_parts())

    def _serve_control(self) -> None:
        """Answer a waiting control request (between batches: a fault never starts inside one)."""
        if self.control is None or not self.control.poll(0):
            return
        try:
            request = self.control.recv_json()
        except ValueError:
            request = None
        reply = self.emulator.control(request)
        self.counters.add("control_requests_total")
        self.control.send_json(reply)

    def _send(self, parts: list[object]) -> None:
        assert self.records is not None
        send_stoppable(self.records, parts, self.stop)  # a slow Charles holds nature back

    def close(self) -> None:
        if hasattr(self.ctx, "write_metrics"):
            self.ctx.write_metrics(self.emulator.metrics())
        self.pulses.close()
        if self.control is not None:
            self.control.close()
        if self.records is not None:  # records nobody will measure do not hold the exit
            self.records.close(linger=0 if self.stop.is_set() else None)
