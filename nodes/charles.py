"""Charles: the untrusted relay. Hosts the channel emulator (nature) beside his own software.

Two parts, kept apart on purpose (ARCHITECTURE.md §3):

* ``ChannelEmulator`` — nature. Receives the users' pulse batches on the quantum-event channel,
  holds the link's live state (``channel.link.Link``) and samples the detectors with the exact
  sampler. It returns ``DetectionRecords`` and singles counts, nothing else.
* ``CharlesNode`` — Charles's software. Decides the Bell states of each batch's records as they
  come (``nodes.relay_software``), keeps the successes, and at the end of a round announces them,
  authenticated, to Alice and Bob.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.trace import SpanKind

from channel.link import Link
from channel.relay import PSI_MINUS, PSI_PLUS, DetectionRecords
from channel.samplers import sample
from channel.settings import SettingsGenerator, SettingsPlan
from classical.messages import Announcement, EndOfRun
from classical.rounds import PeerAborted, ProtocolError
from nodes.base import NodeContext
from nodes.relay_software import bell_successes
from nodes.tracing import context_from, link_to
from nodes.transport import PulseBatch, PulseReceiver


@dataclass
class ChannelEmulator:
    """Nature at the relay: pulses in, detector clicks out."""

    link: Link
    plans: dict[str, SettingsPlan]
    seed: int
    sampler: str = "fast"
    singles: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))

    def _settings(self, batch: PulseBatch) -> SettingsGenerator:
        gen = SettingsGenerator(self.plans[batch.user], batch.settings_key, self.link.frame_bits)
        for i in range(batch.n_frames):  # the pulses as sent: the batch's class counts
            gen._counts_cache[batch.first_frame + i] = batch.frame_counts[i]
        return gen

    def measure(self, a: PulseBatch, b: PulseBatch) -> DetectionRecords:
        if (a.first_frame, a.n_frames) != (b.first_frame, b.n_frames):
            raise ValueError(f"pulse batches do not cover the same frames: alice "
                             f"{a.first_frame}+{a.n_frames}, bob {b.first_frame}+{b.n_frames}")
        size = 1 << self.link.frame_bits
        start, stop = a.first_frame * size, (a.first_frame + a.n_frames) * size
        out = sample(self.link, self._settings(a), self._settings(b), start, stop,
                     self.seed * 1_000_003 + a.first_frame, self.sampler)
        self.singles += out.singles
        return out.records


class CharlesNode:
    def __init__(self, ctx: NodeContext, nature: ChannelEmulator) -> None:
        self.ctx, self.nature = ctx, nature
        self.pulses = PulseReceiver(ctx.zmq, ctx.endpoints.pulses)
        self.waiting: dict[str, dict[int, PulseBatch]] = {"alice": {}, "bob": {}}
        # Charles decides each batch's Bell states as it is measured and keeps only successes
        self.successes: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.coincidences: dict[int, int] = defaultdict(int)
        self.done: dict[int, set[str]] = defaultdict(set)
        self.bounds: dict[int, tuple[int, int]] = {}

    def run(self) -> None:
        alice_q = self.ctx.mailbox.queues["alice"]
        while True:
            if not alice_q.empty():  # Alice's EndOfRun (authenticated like everything else)
                try:
                    self.ctx.peers["alice"].receive(EndOfRun)
                    return
                except (ProtocolError, PeerAborted) as e:  # counted and dropped
                    self.ctx.counters.add("unexpected_messages_from_alice")
                    print(f"charles: dropped a message from alice: {e}", flush=True)
            parts = self.pulses.receive_or_none(self.ctx.stop)
            if parts is None:
                continue
            try:
                batch = PulseBatch.from_parts(parts)
                if batch.user not in self.waiting:
                    raise ValueError(f"unknown user {batch.user!r}")
            except (ValueError, KeyError, TypeError) as e:
                self.ctx.counters.add("pulse_batches_dropped_malformed")
                self.ctx.counters.add(f"pulse_batch_error_{type(e).__name__}")
                continue
            self._accept(batch)

    def _accept(self, batch: PulseBatch) -> None:
        other = "bob" if batch.user == "alice" else "alice"
        self.ctx.counters.add(f"pulse_frames_received_from_{batch.user}", batch.n_frames)
        partner = self.waiting[other].pop(batch.first_frame, None)
        if partner is None:
            self.waiting[batch.user][batch.first_frame] = batch
            return
        a, b = (batch, partner) if batch.user == "alice" else (partner, batch)
        self._measure(a, b)
        if a.last_in_round:
            self.done[a.round_id].add("alice")
        if b.last_in_round:
            self.done[b.round_id].add("bob")
        if self.done[a.round_id] == {"alice", "bob"}:
            self._announce(a.round_id, a.traceparent)

    def _measure(self, a: PulseBatch, b: PulseBatch) -> None:
        links = [x for x in (link_to(a.traceparent), link_to(b.traceparent)) if x is not None]
        with self.ctx.tracer.start_as_current_span(
                "measure", context=context_from(a.traceparent), kind=SpanKind.CONSUMER,
                links=links) as span:
            records = self.nature.measure(a, b)
            slots, bell = bell_successes(records, self.nature.link.relay.coincidence_window_ps)
            self.successes[a.round_id].append((slots, bell))
            self.coincidences[a.round_id] += len(records)
            size = 1 << self.nature.link.frame_bits
            lo, hi = a.first_frame * size, (a.first_frame + a.n_frames) * size
            old = self.bounds.get(a.round_id, (lo, hi))
            self.bounds[a.round_id] = (min(old[0], lo), max(old[1], hi))
            span.set_attribute("mdiqkd.round", a.round_id)
            span.set_attribute("mdiqkd.first_frame", a.first_frame)
            span.set_attribute("mdiqkd.frames", a.n_frames)
            span.set_attribute("mdiqkd.coincidences", len(records))
            span.set_attribute("mdiqkd.bell_successes", int(slots.size))
        self.ctx.counters.add("coincidence_records_total", len(records))

    def _announce(self, round_id: int, traceparent: str | None) -> None:
        parts = self.successes.pop(round_id)
        coincidences = self.coincidences.pop(round_id)
        self.done.pop(round_id, None)
        start, stop = self.bounds.pop(round_id)
        with self.ctx.tracer.start_as_current_span(
                "announce", context=context_from(traceparent), kind=SpanKind.PRODUCER) as span:
            ann = Announcement(round_id, start, stop,
                               np.concatenate([p[0] for p in parts]).astype(np.int64),
                               np.concatenate([p[1] for p in parts]).astype(np.uint8))
            span.set_attribute("mdiqkd.round", round_id)
            span.set_attribute("mdiqkd.coincidences", coincidences)
            span.set_attribute("mdiqkd.announced", int(ann.slots.size))
            span.set_attribute("mdiqkd.psi_plus", int((ann.bell == PSI_PLUS).sum()))
            span.set_attribute("mdiqkd.psi_minus", int((ann.bell == PSI_MINUS).sum()))
            for user in ("alice", "bob"):
                self.ctx.peers[user].send(ann)
        self.ctx.counters.add("rounds_announced_total")

    def close(self) -> None:
        self.ctx.write_metrics({f"singles_{n}_total": int(c) for n, c in
                                zip(("cH", "cV", "dH", "dV"), self.nature.singles, strict=True)})
        self.pulses.close()
