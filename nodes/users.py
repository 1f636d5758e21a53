"""Alice and Bob: emit pulses, receive the relay's announcement, run the key round, store keys.

Alice leads: she starts each round (``RoundStart`` to Bob, which also carries the round's trace
context), and ends the run (``EndOfRun``). Everything else is the same for both users and lives in
``UserNode``; the protocol itself is ``classical.rounds``.

Pipelining: like a real source, the users do not stop emitting while they post-process. Round
``r + 1`` is started (``RoundStart``, pulses) before round ``r``'s key is distilled, so the relay
measures round ``r + 1`` while Alice and Bob sift, reconcile and amplify round ``r``. On the
Alice → Bob channel the order is therefore ``RoundStart(0), RoundStart(1), <round 0>,
RoundStart(2), <round 1>, …, <last round>, EndOfRun``; Bob knows the number of rounds from the
shared scenario and reads them in that order. The pulse sender's high-water mark leaves room for
one round in flight, and the next round is still held back (backpressure) beyond that.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import zmq
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from channel.controls import IDENTITY, SourceControls
from channel.settings import SettingsGenerator
from classical.custody import KeyCustody, Settled
from classical.entropy import OsRandom
from classical.estimation import DecoyObservations
from classical.messages import Announcement, EndOfRun, RoundAbort, RoundStart
from classical.peer import HELD
from classical.rounds import (
    LocalView,
    PeerAborted,
    ProtocolError,
    RoundConfig,
    RoundOutcome,
    run_alice_round,
    run_bob_round,
)
from classical.sifting import check_announcement
from classical.warmup import warm_up_hashing, warm_up_reconciliation
from nodes.base import STOPPING_LINGER_MS, NodeContext
from nodes.calibration import (
    CalibrationEvent,
    Calibrator,
    LoopSettings,
    Measurement,
    measured_qber_z,
)
from nodes.intensity_monitor import IntensityMonitor
from nodes.keystore import KeyStore
from nodes.link_estimates import round_link_estimates
from nodes.metrics import class_count_observations, user_round_observations
from nodes.pacing import Pacer
from nodes.session import custody_from_ledger
from nodes.tracing import SpanObserver, context_from, current_traceparent
from nodes.transport import PulseBatch, PulseSender


def frame_sent_counts(settings: SettingsGenerator, start_slot: int, stop_slot: int) -> np.ndarray:
    """(frames, combos) pulses sent per class in each frame of a frame-aligned round."""
    size = settings.frame_size
    if start_slot % size or stop_slot % size or stop_slot <= start_slot:
        raise ValueError(f"a round must cover whole frames of {size} slots, got "
                         f"[{start_slot}, {stop_slot})")
    return np.array([settings.frame_counts(f) for f in range(start_slot // size,
                                                             stop_slot // size)], dtype=np.int64)


def local_view(settings: SettingsGenerator, ann: Announcement) -> LocalView:
    s = settings.settings_at(ann.slots)
    return LocalView(s.basis, s.bit, s.intensity,
                     frame_sent_counts(settings, ann.start_slot, ann.stop_slot))


#: How long a stopping Bob waits for Alice's ``EndOfRun`` to settle a pending key (the launcher
#: gives every node 5 s to stop before it kills it).
STOP_GRACE_S = 2.0
#: How long Alice's ``EndOfRun`` may wait for a receiver when she is not stopping.
LAST_WORD_WAIT_MS = 5000


def _end_spans(spans: dict[int, Span]) -> None:
    for span in spans.values():
        span.set_attribute("mdiqkd.abort_reason", "node stopped before the round finished")
        span.end()
    spans.clear()


#: How many rounds ahead of the round in progress an announcement can be: the users emit one
#: round ahead, and the emulator holds at most ``nodes.nature.ROUNDS_IN_FLIGHT`` rounds.
ANNOUNCED_AHEAD = 2


@dataclass(frozen=True)
class UserPlan:
    """Plain values a user node runs on."""

    role: Literal["alice", "bob"]
    settings: SettingsGenerator
    round_config: RoundConfig
    rounds: int
    round_frames: int
    batch_frames: int
    protocol_seed: int
    qber_prior: float
    clock_rate_hz: float
    os_entropy: bool = False  # protocol randomness from the OS (entropy: os), not the seed
    realtime: bool = False  # runtime.pacing: realtime (emission paced to the wall clock)
    #: rounds [first, stop) whose key the store has no room for (a game day's ``full`` fault)
    store_full_rounds: tuple[tuple[int, int], ...] = ()
    #: the calibration loops (the scenario's ``calibration``; None: none run)
    calibration: LoopSettings | None = None
    #: rounds after whose result the loops search whatever the cost (``calibrate`` actions)
    calibrate_rounds: tuple[int, ...] = ()
    #: (Alice's, Bob's) intensity-class names, in plan order (public: labels of the decoy counts)
    class_names: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    #: the intensity monitor (the scenario's ``calibration.intensity``; None: none runs)
    intensity_monitor: IntensityMonitor | None = None
    #: the first round of this session: 0, or where a restarted link resumes
    #: (``orchestration.runconfig.Resume``; rounds before it were emitted in an earlier session)
    first_round: int = 0


#: The largest QBER prior a round passes on (Cascade's blocks shrink with it, so that more
#: round trips are spent, each costing authentication key).
MAX_QBER_PRIOR = 0.2


def next_qber_prior(report: dict[str, object], configured: float, current: float) -> float:
    """The QBER_Z estimate the next round starts from (its pre-check and Cascade's blocks),
    from this round's report: the last *measured* QBER_Z (the final estimate's, or the key bits
    a round without key disclosed: figures both users hold, so both reach the same next
    pre-check), floored by the scenario's ``qber_prior`` and capped at ``MAX_QBER_PRIOR``. A
    round the pre-check stopped without a measurement stopped on the prior itself, so the next
    round starts again from the configured one: a prior raised by a bad spell must not stop
    every later round, when the link has healed, before anything is measured."""
    measured = measured_qber_z(report)
    if measured is not None:
        return float(min(max(measured[0], configured), MAX_QBER_PRIOR))
    if report.get("phase") == "precheck" and "reconciler" not in report:
        return configured  # stopped by the pre-check, on the prior
    return current


class UserNode:
    def __init__(self, ctx: NodeContext, plan: UserPlan) -> None:
        self.ctx, self.plan = ctx, plan
        self.peer_name = "bob" if plan.role == "alice" else "alice"
        batches_per_round = math.ceil(plan.round_frames / plan.batch_frames)
        self.pulses = PulseSender(ctx.zmq, ctx.endpoints.pulses,
                                  high_water_mark=batches_per_round + 4)
        self.store = KeyStore(ctx.node_dir / "keys.sqlite")
        self.rounds_log = (ctx.node_dir / "rounds.jsonl").open("a")
        self.qber_prior = plan.qber_prior
        self._round_started: dict[int, tuple[float, float]] = {}  # perf_counter, unix time
        self._emitted_unix: dict[int, float] = {}  # until the round's key is stored or lost
        self._pending_records: dict[int, dict[str, object]] = {}  # logged while key pending
        # the two-phase commit (classical.custody): keys reach the store only once committed
        # a link that restarts (it records its progress) keeps its custody in the key store
        restartable = getattr(ctx, "progress", None) is not None
        self.custody = KeyCustody(plan.role, ctx.links[self.peer_name], self._deliver,
                                  self._on_settled, self._no_room,
                                  ledger=self.store if restartable else None)
        if restartable:
            self._restore_custody()
        self._ended = False  # Alice: EndOfRun sent; Bob: EndOfRun received
        self.pacer = Pacer(plan.realtime, plan.clock_rate_hz, ctx.stop)
        # the calibration loops: both users run the same search on the same public error rates
        # and each applies its own actuators (nodes.calibration)
        self.calibrator = Calibrator(plan.calibration) if plan.calibration else None
        self.monitor = plan.intensity_monitor
        self.calibration_log = ((ctx.node_dir / "calibration.jsonl").open("a")
                                if self.calibrator or self.monitor else None)
        self._round_controls: dict[int, tuple[SourceControls, SourceControls]] = {}

    def _restore_custody(self) -> None:
        """Where the key custody stood when this node last ran (its ledger, the key store): the
        last key committed and, for Bob, the key he had confirmed and not yet settled, which
        Alice's next word settles as for any key pending (``classical.custody``)."""
        pending, last_committed = custody_from_ledger(self.store)
        if pending is not None:  # its round's record says pending: the settlement supersedes it
            record = {"round": pending.round_id, "key_id": pending.key_id}
            for row in self._own_records():
                if row.get("round") == pending.round_id:
                    record = row
            self._pending_records[pending.round_id] = {**record, "held_across_restart": True}
        self.custody.restore(pending, last_committed)

    def _own_records(self) -> list[dict[str, object]]:
        """This user's round records so far (a restarted node's, from its earlier sessions)."""
        rows = []
        with contextlib.suppress(OSError):
            for line in (self.ctx.node_dir / "rounds.jsonl").read_text().splitlines():
                with contextlib.suppress(ValueError):
                    row = json.loads(line)
                    if isinstance(row, dict):
                        rows.append(row)
        return rows

    def _log_lost_rounds(self) -> None:
        """A restarted session: the rounds between the last this user recorded and the one the
        link resumes at were emitted (or not) before the restart and give no key; each gets a
        record that says so, so that every round of the run is accounted for."""
        first = self.plan.first_round
        done = max((int(r["round"]) for r in self._own_records()
                    if isinstance(r.get("round"), int)), default=-1)
        for r in range(done + 1, first):
            start, stop = self._round_range(r)
            self._write({"round": r, "start_slot": start, "stop_slot": stop,
                         "emulated_seconds": (stop - start) / self.plan.clock_rate_hz,
                         "announced": 0, "aborted": True,
                         "abort_reason": "lost to a restart of the link (a node died)",
                         "key_id": None, "secure_bits": 0, "net_secure_bits": 0,
                         "restart": True})

    def _no_room(self, round_id: int) -> str | None:
        """Why the key store cannot take this round's key (a game day's ``full`` fault)."""
        if any(a <= round_id < b for a, b in self.plan.store_full_rounds):
            self.ctx.counters.add("keys_refused_store_full_total")
            return "is full"
        return None

    # --- one round --------------------------------------------------------------------------

    def _round_range(self, round_id: int) -> tuple[int, int]:
        slots = self.plan.round_frames * self.plan.settings.frame_size
        return round_id * slots, (round_id + 1) * slots

    def emit(self, round_id: int) -> None:
        gen, plan = self.plan.settings, self.plan
        first = round_id * plan.round_frames
        self.pacer.wait_for(first * gen.frame_size)  # realtime: not before the round's time
        progress = getattr(self.ctx, "progress", None)
        if progress is not None:  # durably, before any pulse of the round leaves
            progress.emitted(round_id)
        self._round_started[round_id] = (time.perf_counter(), time.time())
        self._emitted_unix[round_id] = self._round_started[round_id][1]
        with self.ctx.tracer.start_as_current_span("emit", kind=SpanKind.PRODUCER) as span:
            span.set_attribute("mdiqkd.round", round_id)
            span.set_attribute("mdiqkd.frames", plan.round_frames)
            span.set_attribute("mdiqkd.slots", plan.round_frames * gen.frame_size)
            tp = current_traceparent()
            controls = IDENTITY
            if self.calibrator is not None:
                controls = self.calibrator.settings_for(round_id)[plan.role == "bob"]
            for f in range(first, first + plan.round_frames, plan.batch_frames):
                self.pacer.wait_for(f * gen.frame_size)
                n = min(plan.batch_frames, first + plan.round_frames - f)
                counts = np.array([gen.frame_counts(i) for i in range(f, f + n)], np.int64)
                last = f + n == first + plan.round_frames
                self.pulses.send(PulseBatch(plan.role, round_id, f, counts, gen.key, last, tp,
                                            controls), self.ctx.stop)
                self.ctx.counters.add("pulses_emitted_total", n * gen.frame_size)

    def key_round(self, round_id: int) -> RoundOutcome:
        charles = self.ctx.peers["charles"]
        charles.round_id = round_id
        peer = self.ctx.peers[self.peer_name]
        peer.round_id = round_id
        start, stop = self._round_range(round_id)
        try:
            ann = charles.receive(Announcement)
            if round_id < ann.round_id <= min(round_id + ANNOUNCED_AHEAD,
                                              self.plan.rounds - 1):
                # Charles announces rounds in order on one ordered channel: this round's
                # announcement was lost on the way; keep the later one for its round (no
                # further ahead than the relay can measure: a far-future one is refused below)
                charles.hold(ann)
                raise ProtocolError(f"its announcement was lost: the next one is for round "
                                    f"{ann.round_id}")
            check_announcement(ann, round_id, start, stop)  # the relay is not trusted
        except (ProtocolError, PeerAborted, ValueError) as e:
            reason = (f"announcement refused ({e})" if isinstance(e, ValueError)
                      else f"no announcement from charles ({e})")
            self.ctx.counters.add("announcements_refused_total" if isinstance(e, ValueError)
                                  else "announcements_missing_total")
            peer.send(RoundAbort(round_id, reason))  # the other user stops waiting at once
            empty = Announcement(round_id, start, stop, np.zeros(0, np.int64),
                                 np.zeros(0, np.uint8))
            outcome = RoundOutcome(round_id, None, None, reason, {})
            self.ctx.counters.add("rounds_aborted_total")
            self.ctx.counters.add("rounds_total")
            self._log(round_id, empty, outcome, self._calibrate(round_id, outcome))
            return outcome
        observer = SpanObserver(self.ctx.tracer, round_id)
        run = run_alice_round if self.plan.role == "alice" else run_bob_round
        rng = (OsRandom() if self.plan.os_entropy
               else np.random.default_rng([self.plan.protocol_seed, round_id]))
        outcome = run(ann, local_view(self.plan.settings, ann), self.plan.round_config, peer, rng,
                      observer, self.qber_prior, self.custody)
        with self.ctx.tracer.start_as_current_span("store") as span:
            span.set_attribute("mdiqkd.round", round_id)
            if outcome.key is not None and outcome.key_id is not None:
                span.set_attribute("mdiqkd.key_status",
                                   "pending" if outcome.pending else "committed")
                span.set_attribute("mdiqkd.auth_key_bits_replenished",
                                   int(outcome.report.get("auth_key_bits_replenished", 0)))
                span.set_attribute("mdiqkd.stored_bits",
                                   int(outcome.report.get("net_secure_bits", 0)))
            else:
                self.ctx.counters.add("rounds_aborted_total")
                span.set_attribute("mdiqkd.abort_reason", outcome.abort_reason or "")
        # next round's pre-check and Cascade: from this round's public figures, the same on
        # both sides (both must reach the same pre-check decision)
        self.qber_prior = next_qber_prior(outcome.report, self.plan.qber_prior, self.qber_prior)
        self.ctx.counters.add("rounds_total")
        self._log(round_id, ann, outcome, self._calibrate(round_id, outcome))
        return outcome

    def _calibrate(self, round_id: int, outcome: RoundOutcome) -> list[dict[str, object]]:
        """What the calibration loops did on reading this round's result, logged to
        ``calibration.jsonl`` with the emulated time it took effect (the next round emitted)."""
        events: list[CalibrationEvent] = []
        if self.calibrator is not None:
            if round_id in self.plan.calibrate_rounds:
                self.calibrator.force()
            planned = self.calibrator.planned.get(round_id)
            if planned is not None:  # the actuators this round was sent with, for its record
                self._round_controls[round_id] = self.calibrator.controls(planned[0])
            try:
                events += self.calibrator.observe(round_id,
                                                  Measurement.from_report(outcome.report))
            except (ValueError, TypeError, ArithmeticError) as e:  # the report holds the peer's
                self.ctx.counters.add("calibration_errors_total")  # figures: never the node
                print(f"{self.plan.role}: calibration skipped round {round_id}: {e}", flush=True)
        if self.monitor is not None and outcome.observations is not None:
            events += self._check_intensities(round_id, outcome.observations)
        records = []
        for e in events:
            self.ctx.counters.add("calibration_actions_total")
            self.ctx.observe([("mdiqkd_calibration_actions_total", 1.0,
                               {"loop": e.loop, "action": e.action})])
            record = {**e.as_record(), "emulated_s": (round_id + 1) * self.plan.round_frames
                      * self.plan.settings.frame_size / self.plan.clock_rate_hz,
                      "at_unix": time.time()}
            assert self.calibration_log is not None
            self.calibration_log.write(json.dumps(record) + "\n")
            records.append(record)
        if self.calibration_log is not None:
            self.calibration_log.flush()
        return records

    def _check_intensities(self, round_id: int,
                           observations: DecoyObservations) -> list[CalibrationEvent]:
        """The intensity monitor on this round's public counts: an event when it flags them. A
        check that fails on odd counts (the peer's sent counts are its word) is counted and
        skipped, never the end of the node."""
        assert self.monitor is not None
        a, b = self._round_controls.get(round_id, (IDENTITY, IDENTITY))
        try:
            check = self.monitor.observe(round_id, observations, (a.unitary, b.unitary))
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as e:
            self.ctx.counters.add("intensity_checks_failed_total")
            print(f"{self.plan.role}: intensity monitor skipped round {round_id}: {e}",
                  flush=True)
            return []
        if check is None:
            return []
        self.ctx.counters.add("intensity_checks_total")
        if not check.flagged:
            return []
        return [CalibrationEvent(round_id, "intensity", "flagged", check.summary(),
                                 float(check.statistic))]

    def _log(self, round_id: int, ann: Announcement, outcome: RoundOutcome,
             calibration: list[dict[str, object]] | None = None) -> None:
        start, stop = self._round_range(round_id)
        started, started_unix = self._round_started.pop(round_id, (time.perf_counter(),
                                                                   time.time()))
        record = {"round": round_id, "start_slot": start, "stop_slot": stop,
                  "emulated_seconds": (stop - start) / self.plan.clock_rate_hz,
                  "round_wall_seconds": time.perf_counter() - started,
                  "emitted_at_unix": started_unix, "finished_at_unix": time.time(),
                  "announced": int(ann.slots.size), "aborted": outcome.aborted,
                  "abort_reason": outcome.abort_reason, "key_id": outcome.key_id,
                  "secure_bits": int(outcome.report.get("net_secure_bits", 0)),
                  **{k: v for k, v in outcome.report.items() if k != "key_id"},
                  **round_link_estimates(outcome.observations)}
        if self.calibrator is not None:  # the actuators this round was sent with
            a, b = self._round_controls.pop(round_id, (IDENTITY, IDENTITY))
            record["controls"] = {"alice_rotation_rad": list(a.rotation_rad),
                                  "bob_rotation_rad": list(b.rotation_rad),
                                  "bob_delay_ps": b.delay_ps}
        if self.calibration_log is not None:
            record["calibration_actions"] = [e["action"] for e in calibration or ()]
        if outcome.pending:
            self._pending_records[round_id] = record
        elif outcome.aborted:
            self._emitted_unix.pop(round_id, None)
        self._write(record)
        self.ctx.observe(user_round_observations(record))
        try:
            self.ctx.observe(class_count_observations(outcome.observations,
                                                      *self.plan.class_names))
        except (ValueError, TypeError, IndexError) as e:  # counts partly the peer's word
            print(f"{self.plan.role}: decoy counts of round {round_id} not exported: {e}",
                  flush=True)

    def _write(self, record: dict[str, object]) -> None:
        self.rounds_log.write(json.dumps(record, default=float) + "\n")
        self.rounds_log.flush()

    # --- custody: what reaches the key store --------------------------------------------------

    def _deliver(self, key_id: str, round_id: int, bits: np.ndarray) -> None:
        self.store.put(key_id, round_id, bits)

    def _on_settled(self, settled: Settled) -> None:
        emitted = self._emitted_unix.pop(settled.round_id, None)
        if settled.committed and self.ctx.metrics is not None:
            self.ctx.observe([("mdiqkd_key_store_bits", float(self.store.total_bits()), {})])
            if emitted is not None:
                self.ctx.observe([("mdiqkd_key_provisioning_latency_seconds",
                                   time.time() - emitted, {})])
        if settled.committed:
            self.ctx.counters.add("secure_bits_total", settled.net_bits)
            self.ctx.counters.add("auth_key_bits_replenished_total", settled.replenished_bits)
            self.ctx.counters.add("keys_committed_total")
        else:
            self.ctx.counters.add("keys_discarded_total")
            print(f"{self.plan.role}: key {settled.key_id} discarded: {settled.reason}",
                  flush=True)
        record = self._pending_records.pop(settled.round_id, None)
        if record is not None:  # logged as pending: this line supersedes it (same round)
            late = {**record, "key_status": "committed" if settled.committed
                         else "discarded", "settled_late": True,
                         "secure_bits": settled.net_bits, "net_secure_bits": settled.net_bits,
                         "auth_key_bits_replenished": settled.replenished_bits,
                         "aborted": not settled.committed,
                         "abort_reason": settled.reason if not settled.committed else None}
            self._write(late)
            self.ctx.observe(user_round_observations(late))

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        # A first run compiles the post-processing kernels, split between the users so that they
        # compile in parallel while the relay measures the first round (classical.warmup).
        if self.plan.first_round:
            self._log_lost_rounds()
        if self.plan.role == "alice":
            self.ctx.warm_up(self._warm_up_alice)
            self._run_alice()
        else:
            self.ctx.warm_up(self._warm_up_bob)
            self._run_bob()

    def _warm_up_alice(self) -> None:
        warm_up_hashing()
        self._warm_up_monitor()

    def _warm_up_bob(self) -> None:
        self.plan.settings.settings_at(np.arange(4, dtype=np.int64))
        warm_up_reconciliation(self.plan.round_config.reconciler)
        self._warm_up_monitor()

    def _warm_up_monitor(self) -> None:
        """The intensity monitor's χ² quantiles come from scipy.stats, whose import takes
        ~0.4 s: done here, beside the first round, not in the first round's result."""
        if self.monitor is not None:
            from nodes.intensity_monitor import warm_up_monitor

            warm_up_monitor()

    def _finish_round(self, round_id: int, span: Span) -> None:
        with trace.use_span(span, end_on_exit=True):
            outcome = self.key_round(round_id)
            span.set_attribute("mdiqkd.secure_bits",
                               int(outcome.report.get("net_secure_bits", 0)))

    def _run_alice(self) -> None:
        bob = self.ctx.peers["bob"]
        started: dict[int, Span] = {}

        def start(r: int) -> None:
            span = self.ctx.tracer.start_span("round")
            span.set_attribute("mdiqkd.round", r)
            with trace.use_span(span):
                start_slot, stop_slot = self._round_range(r)
                bob.send(RoundStart(r, start_slot, stop_slot))
                self.emit(r)
            started[r] = span

        first = self.plan.first_round
        try:
            for r in range(first, self.plan.rounds):
                if r == first:
                    start(first)
                if r + 1 < self.plan.rounds:
                    start(r + 1)  # the source keeps sending while round r is distilled
                self._finish_round(r, started.pop(r))
        finally:
            _end_spans(started)  # rounds begun but not finished (the node is failing)
        self._end_run("all rounds done")

    def _end_run(self, reason: str) -> None:
        """Alice's last word: no more rounds, and the last key she committed (which settles a
        key Bob still holds pending). Its round ID is the run's number of rounds, so that it is
        never stale, whatever round Bob is in."""
        self._ended = True
        for name in ("bob", "charles"):
            # the receiver may be gone (stopped, or the reason Alice fails): a PUSH socket
            # without a peer would wait for ever
            self.ctx.outboxes[name].limit_send_wait(
                STOPPING_LINGER_MS if self.ctx.stop.is_set() else LAST_WORD_WAIT_MS)
            # a channel gone (no pad left, no receiver): Bob then discards his pending key
            with contextlib.suppress(ProtocolError, zmq.Again):
                self.ctx.peers[name].send(EndOfRun(self.plan.rounds, reason,
                                                   self.custody.last_committed))

    def _run_bob(self) -> None:
        alice = self.ctx.peers["alice"]
        started: dict[int, Span] = {}
        next_round = self.plan.first_round  # the first round Bob has not started

        def start(round_id: int, msg: RoundStart | None) -> None:
            expected = self._round_range(round_id)
            if msg is not None and (msg.start_slot, msg.stop_slot) != expected:
                raise RuntimeError(f"Alice's round {msg.round_id} covers [{msg.start_slot}, "
                                   f"{msg.stop_slot}), Bob expects {expected}")
            span = self.ctx.tracer.start_span("round", context=context_from(
                alice.last_traceparent if msg is not None else None))
            span.set_attribute("mdiqkd.round", round_id)
            if msg is None:
                span.set_attribute("mdiqkd.round_start", "inferred")
            with trace.use_span(span):
                self.emit(round_id)
            started[round_id] = span

        def start_through(last: int, msg: RoundStart | None) -> None:
            """Start every round up to ``last``: Alice's ``RoundStart`` messages come in round
            order on one ordered channel, so those before ``msg`` (or before the round-``last - 1``
            message that came instead of ``RoundStart(last)``) were lost on the way. Their slot
            ranges are the plan's, so Bob starts them himself and the pulses stay paired."""
            nonlocal next_round
            while next_round <= min(last, self.plan.rounds - 1):
                given = msg if msg is not None and msg.round_id == next_round else None
                if given is None:
                    self.ctx.counters.add("round_starts_inferred_total")
                    print(f"bob: Alice's start of round {next_round} did not arrive; starting it "
                          "from the plan", flush=True)
                start(next_round, given)
                next_round += 1

        def next_message(*expected: type, hold_current: bool = False) -> object:
            while True:
                try:
                    return alice.receive(*expected, hold_current=hold_current)
                except (ProtocolError, PeerAborted) as e:  # counted by the peer; keep waiting
                    self.ctx.counters.add("unexpected_messages_between_rounds")
                    print(f"bob: between rounds: {e}", flush=True)

        def await_start(current: int) -> EndOfRun | None:
            """Until round ``current + 1`` is started (or Alice ends the run: her word)."""
            alice.round_id = current
            while next_round <= current + 1:
                msg = next_message(RoundStart, EndOfRun, hold_current=True)
                if isinstance(msg, EndOfRun):
                    return msg
                if msg is HELD:  # a message of round `current`: Alice is past RoundStart(+1)
                    start_through(current + 1, None)
                elif isinstance(msg, RoundStart) and msg.round_id >= next_round:
                    start_through(msg.round_id, msg)
            return None

        end: EndOfRun | None = None
        alice.round_id = self.plan.first_round
        first = next_message(RoundStart, EndOfRun, hold_current=True)
        if isinstance(first, EndOfRun):
            self._ended = True
            self.custody.resolve(first.committed)
            return
        start_through(self.plan.first_round + 1 if first is HELD else first.round_id,
                      first if isinstance(first, RoundStart) else None)
        try:
            while started:
                r = min(started)
                if next_round == r + 1 and r + 1 < self.plan.rounds and end is None:
                    end = await_start(r)
                    if end is not None:  # Alice ended the run before starting round r + 1:
                        break  # she stopped, and distils no round she has started
                if isinstance(alice.held, EndOfRun):  # she stopped during the last round
                    end = next_message(EndOfRun)
                    break
                self._finish_round(r, started.pop(r))
        finally:
            _end_spans(started)
        if end is None:
            end = next_message(EndOfRun)
        self._ended = True
        self.custody.resolve(end.committed)  # a key still pending: Alice says what she kept
        if end.reason != "all rounds done":
            print(f"bob: Alice ended the run early: {end.reason}", flush=True)

    def _settle_after_stop(self, grace_s: float) -> None:
        """Bob stops while he holds a key Alice may have committed: wait up to ``grace_s`` for
        her ``EndOfRun`` (she sends it when she stops too) and settle the key as she did. Only
        if she is silent is the key discarded, and the stores may then differ by that key."""
        alice = self.ctx.peers["alice"]
        alice.stop = threading.Event()  # the node is stopping; this one wait goes on
        deadline = time.monotonic() + grace_s
        while self.custody.pending is not None and time.monotonic() < deadline:
            alice.timeout_s = max(0.2, deadline - time.monotonic())
            try:
                end = alice.receive(EndOfRun)
            except (ProtocolError, PeerAborted):  # the rest of the stopped round, or silence
                continue
            self._ended = True
            self.custody.resolve(end.committed)

    def close(self) -> None:
        """End in order, also when stopped mid-round: Alice discards a key Bob has not confirmed
        and tells him the last key she committed; Bob waits briefly for that word and settles
        his pending key by it. So both key stores hold the same keys after any stop."""
        if self.plan.role == "alice":
            if self.custody.pending is not None:  # Bob never confirmed it
                self.custody.discard(self.custody.pending.key_id,
                                     "node stopped before Bob confirmed the key")
            if not self._ended:
                self._end_run("Alice stopped before the last round")
        elif self.custody.pending is not None and not self._ended:
            self._settle_after_stop(STOP_GRACE_S)
        if self.custody.pending is not None:  # never learnt whether Alice committed it
            if self.custody.stop_holding():  # a restart's next session settles it
                print(f"bob: key {self.custody.pending_at_stop} stays pending in the ledger "
                      "for the link's next session (Alice has not said whether she committed "
                      "it)", flush=True)
            else:
                self.custody.discard(self.custody.pending.key_id,
                                     "node stopped before Alice said whether she committed it")
        self.ctx.write_metrics({"secure_bits_stored": self.store.total_bits()})
        self.rounds_log.close()
        if self.calibration_log is not None:
            self.calibration_log.close()
        self.store.close()
        self.pulses.close(0 if self.ctx.stop.is_set() else None)
