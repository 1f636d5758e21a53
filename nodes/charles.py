"""Charles: the untrusted relay's software, in its own process.

Charles sees what a relay's electronics report and nothing else: ``nodes.records.RecordsBatch``
messages from the channel emulator (``nodes.nature``, another process) on his records socket.
He decides the Bell states of each batch's records as they come (``nodes.relay_software``, with
his own ``CharlesConfig``), keeps the successes, and at the end of a round announces them,
authenticated, to Alice and Bob. On a game day his own software may misbehave
(``nodes.relay_faults``): he is told those faults and their seed in his own secrets. His process
holds no user secret: only the pools of his own links (``orchestration.secrets``). Nothing here
imports the emulator or the settings generator (``tests/test_architecture.py``), so a
malicious relay's software can replace this module wholesale without learning more.
"""

from __future__ import annotations

import contextlib
import queue
from collections import defaultdict

import numpy as np
import zmq
from opentelemetry.trace import SpanKind

from classical.messages import Announcement, EndOfRun
from classical.rounds import PeerAborted, ProtocolError
from classical.sifting import PSI_MINUS, PSI_PLUS
from nodes.base import NodeContext
from nodes.metrics import charles_round_observations
from nodes.records import RecordsBatch, RecordsRejected, RoundLayout
from nodes.relay_faults import RelayMisbehaviour
from nodes.relay_software import CharlesConfig, decide_batch, warm_up_bell_states
from nodes.relay_timing import TimingAccumulator, warm_up_timing
from nodes.tracing import context_from
from nodes.transport import POLL_MS, NodeStopped


class CharlesNode:
    """Charles's software: detection records in, announcements out."""

    def __init__(self, ctx: NodeContext, layout: RoundLayout, config: CharlesConfig,
                 records_endpoint: str | None = None,
                 misbehaviour: RelayMisbehaviour | None = None,
                 clock_rate_hz: float | None = None) -> None:
        """``misbehaviour``: a game day's faults of his own software (``nodes.relay_faults``,
        from his own secrets), None for the honest relay. ``clock_rate_hz``: the public pulse
        clock, for the Bell rate per emulated second and the slot grid his click times are read
        on (``nodes.relay_timing``; without it no timing is exported)."""
        self.ctx, self.layout, self.config = ctx, layout, config
        self.misbehaviour = misbehaviour
        self.clock_rate_hz = clock_rate_hz
        self.records: zmq.Socket | None = None
        if records_endpoint is not None:
            self.records = ctx.zmq.socket(zmq.PULL)
            self.records.setsockopt(zmq.RCVHWM, 16)
            self.records.setsockopt(zmq.MAXMSGSIZE, layout.max_part_bytes())
            self.records.setsockopt(zmq.LINGER, 0)
            self.records.bind(records_endpoint)
        # Charles decides each batch's Bell states as it arrives and keeps only successes
        self.successes: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
        self.coincidences: dict[int, int] = defaultdict(int)
        self.bounds: dict[int, tuple[int, int]] = {}
        self.timing: dict[int, TimingAccumulator] = {}
        self.announced: set[int] = set()

    def run(self) -> None:
        self.ctx.warm_up(_warm_up)  # compiled while nature samples the first frames
        alice_q = self.ctx.mailbox.queues["alice"]
        assert self.records is not None
        while True:
            # Alice's EndOfRun (authenticated like everything else), opened without waiting: a
            # forged frame in her queue must not hold up the records
            with contextlib.suppress(queue.Empty):
                if self._end_of_run(alice_q.get_nowait()):
                    return
            if self.ctx.stop.is_set():
                raise NodeStopped()
            if self.records.poll(POLL_MS, zmq.POLLIN):
                self.on_records(self.records.recv_multipart(copy=True))

    def _end_of_run(self, frame: bytes) -> bool:
        try:
            return self.ctx.peers["alice"].open(frame, (EndOfRun,)) is not None
        except (ProtocolError, PeerAborted) as e:  # counted and dropped
            self.ctx.counters.add("unexpected_messages_from_alice")
            print(f"charles: dropped a message from alice: {e}", flush=True)
            return False

    def on_records(self, parts: list[object]) -> None:
        """One message of the detector channel: counted; a malformed one, or one for a round
        already announced, is dropped; otherwise decided, and a complete round announced."""
        self.ctx.counters.add("records_batches_received_total")
        try:
            batch = RecordsBatch.from_parts(parts, self.layout)
            if batch.round_id in self.announced:
                raise RecordsRejected(f"round {batch.round_id} was announced already")
        except RecordsRejected:
            self.ctx.counters.add("records_batches_dropped_total")
            return
        self.ctx.counters.add("records_batches_accepted_total")
        self._decide(batch)
        if batch.round_complete:
            self._announce(batch.round_id, batch.traceparents[0])

    def _decide(self, batch: RecordsBatch) -> None:
        with self.ctx.tracer.start_as_current_span(
                "decide", context=context_from(batch.measure_traceparent or
                                               batch.traceparents[0]),
                kind=SpanKind.CONSUMER) as span:
            slots, bell = decide_batch(batch.records, batch.first_slot, batch.stop_slot,
                                       self.config, self.misbehaviour)
            self.successes[batch.round_id].append((batch.first_slot, slots, bell))
            self.coincidences[batch.round_id] += len(batch.records)
            if self.clock_rate_hz:  # the records as his electronics tagged them
                self.timing.setdefault(batch.round_id, TimingAccumulator(
                    1e12 / self.clock_rate_hz)).add(batch.records)
            old = self.bounds.get(batch.round_id, (batch.first_slot, batch.stop_slot))
            self.bounds[batch.round_id] = (min(old[0], batch.first_slot),
                                           max(old[1], batch.stop_slot))
            span.set_attribute("mdiqkd.round", batch.round_id)
            span.set_attribute("mdiqkd.first_slot", batch.first_slot)
            span.set_attribute("mdiqkd.coincidences", len(batch.records))
            span.set_attribute("mdiqkd.bell_successes", int(slots.size))

    def _announce(self, round_id: int, traceparent: str | None) -> None:
        parts = sorted(self.successes.pop(round_id), key=lambda p: p[0])  # in slot order
        coincidences = self.coincidences.pop(round_id)
        start, stop = self.bounds.pop(round_id)
        timing = self.timing.pop(round_id, None)
        self.announced.add(round_id)
        with self.ctx.tracer.start_as_current_span(
                "announce", context=context_from(traceparent), kind=SpanKind.PRODUCER) as span:
            ann = Announcement(round_id, start, stop,
                               np.concatenate([p[1] for p in parts]).astype(np.int64),
                               np.concatenate([p[2] for p in parts]).astype(np.uint8))
            span.set_attribute("mdiqkd.round", round_id)
            span.set_attribute("mdiqkd.coincidences", coincidences)
            span.set_attribute("mdiqkd.announced", int(ann.slots.size))
            span.set_attribute("mdiqkd.psi_plus", int((ann.bell == PSI_PLUS).sum()))
            span.set_attribute("mdiqkd.psi_minus", int((ann.bell == PSI_MINUS).sum()))
            for user in ("alice", "bob"):
                self.ctx.peers[user].send(ann)
        self.ctx.counters.add("rounds_announced_total")
        if getattr(self.ctx, "metrics", None) is not None:  # tests may give a bare context
            self.ctx.observe(charles_round_observations(round_id, int(ann.slots.size),
                                                        coincidences,
                                                        start, stop, self.clock_rate_hz,
                                                        () if timing is None else timing.read()))

    def close(self) -> None:
        self.ctx.write_metrics()
        if self.records is not None:
            self.records.close()


def _warm_up() -> None:
    warm_up_bell_states()
    warm_up_timing()
