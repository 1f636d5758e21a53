"""Charles: the untrusted relay. Hosts the channel emulator (nature) beside his own software.

Two parts, kept apart on purpose (docs/trust-boundaries.md):

* ``ChannelEmulator`` — nature. Takes the users' pulse batches from the quantum-event channel,
  pairs them, holds the link's live state (``channel.link.Link``) and samples the detectors with
  the exact sampler. Charles's software learns only ``ReadyFrames`` (round, slot range, trace
  contexts) and the resulting ``DetectionRecords``; singles stay with the emulator's metrics.
* ``CharlesNode`` — Charles's software. Decides the Bell states of each batch's records as they
  come (``nodes.relay_software``, with his own ``CharlesConfig``), keeps the successes, and at the
  end of a round announces them, authenticated, to Alice and Bob.
"""

from __future__ import annotations

import contextlib
import queue
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.trace import SpanKind

from channel.link import Link
from channel.relay import DETECTOR_NAMES, N_DETECTORS, DetectionRecords
from channel.rng import derive_seed
from channel.samplers import sample
from channel.settings import SettingsGenerator, SettingsPlan
from classical.messages import Announcement, EndOfRun
from classical.rounds import PeerAborted, ProtocolError
from classical.sifting import PSI_MINUS, PSI_PLUS
from nodes.base import NodeContext
from nodes.relay_software import CharlesConfig, bell_successes
from nodes.tracing import context_from, link_to
from nodes.transport import Counters, PulseBatch, PulseBatchRejected, PulseLayout, PulseReceiver

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
        out = sample(self.link, self._settings(a), self._settings(b), start, stop,
                     derive_seed(self.seed, "pulse batch", a.first_frame), self.sampler)
        self.singles += out.singles
        return out.records

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


class CharlesNode:
    """Charles's software: sees ``ReadyFrames`` and detection records, and announces."""

    def __init__(self, ctx: NodeContext, nature: ChannelEmulator, config: CharlesConfig) -> None:
        self.ctx, self.nature, self.config = ctx, nature, config
        self.pulses = PulseReceiver(ctx.zmq, ctx.endpoints.pulses,
                                    nature.layout.max_message_bytes())
        # Charles decides each batch's Bell states as it is measured and keeps only successes
        self.successes: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.coincidences: dict[int, int] = defaultdict(int)
        self.bounds: dict[int, tuple[int, int]] = {}

    def run(self) -> None:
        alice_q = self.ctx.mailbox.queues["alice"]
        while True:
            # Alice's EndOfRun (authenticated like everything else), opened without waiting: a
            # forged frame in her queue must not hold up the pulses
            with contextlib.suppress(queue.Empty):
                if self._end_of_run(alice_q.get_nowait()):
                    return
            parts = self.pulses.receive_or_none(self.ctx.stop)
            if parts is not None:
                self.on_pulses(parts)

    def _end_of_run(self, frame: bytes) -> bool:
        try:
            return self.ctx.peers["alice"].open(frame, (EndOfRun,)) is not None
        except (ProtocolError, PeerAborted) as e:  # counted and dropped
            self.ctx.counters.add("unexpected_messages_from_alice")
            print(f"charles: dropped a message from alice: {e}", flush=True)
            return False

    def on_pulses(self, parts: list[object]) -> None:
        """One message of the pulse channel: a refused batch is counted and dropped; a ready pair
        is measured, and a complete round announced."""
        ready = take_pulse_batch(self.nature, parts, self.ctx.counters)
        if ready is not None:
            self._measure(ready)
            if ready.round_complete:
                self._announce(ready.round_id, ready.traceparents[0])

    def _measure(self, ready: ReadyFrames) -> None:
        links = [x for x in map(link_to, ready.traceparents) if x is not None]
        with self.ctx.tracer.start_as_current_span(
                "measure", context=context_from(ready.traceparents[0]), kind=SpanKind.CONSUMER,
                links=links) as span:
            records = self.nature.measure_ready(ready)
            slots, bell = bell_successes(records, self.config.coincidence_window_ps)
            self.successes[ready.round_id].append((slots, bell))
            self.coincidences[ready.round_id] += len(records)
            old = self.bounds.get(ready.round_id, (ready.first_slot, ready.stop_slot))
            self.bounds[ready.round_id] = (min(old[0], ready.first_slot),
                                           max(old[1], ready.stop_slot))
            span.set_attribute("mdiqkd.round", ready.round_id)
            span.set_attribute("mdiqkd.first_slot", ready.first_slot)
            span.set_attribute("mdiqkd.slots", ready.stop_slot - ready.first_slot)
            span.set_attribute("mdiqkd.coincidences", len(records))
            span.set_attribute("mdiqkd.bell_successes", int(slots.size))
        self.ctx.counters.add("coincidence_records_total", len(records))

    def _announce(self, round_id: int, traceparent: str | None) -> None:
        parts = self.successes.pop(round_id)
        coincidences = self.coincidences.pop(round_id)
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
        self.ctx.write_metrics(self.nature.metrics())
        self.pulses.close()
