"""The verdict of a game day: does the steady-state hypothesis hold before, during and after the
faults? (issue 12, item 7; docs/game-days.md gives the rules).

Pure: everything comes in as arguments (the scenario's game-day sections, the rounds records of
``rounds.jsonl``, which rounds' stored keys differ, run totals from the nodes' metrics) and goes
out as plain data, so the same inputs always give the same verdict. ``orchestration.run`` gathers
the inputs and writes ``journal.json``.

Time is counted in slots of the emulated clock: a round covers [start_slot, stop_slot), and a
fault the whole settings frames the channel emulator applies it on (``channel.impairments``:
``fault_windows``, ``fault_slots``), so a round's phase is decided exactly, in integers; seconds
(slot / clock_rate_hz) are for the reader. Rounds are kept sorted by slot and every window finds
its rounds by bisection.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from channel.impairments import Fault, TimelineEntry, fault_slots, fault_windows, frame_at
from channel.relay import N_DETECTORS
from nodes.link_estimates import dark_count_probability, visibility_lower
from orchestration.experiment import (
    MethodEntry,
    ProbeModel,
    RollbackModel,
    SteadyStateModel,
    timeline_entries,
)

Status = Literal["held", "deviated", "no data", "not measured", "not applicable"]

#: Faults that are attacks: key bits stored from a round overlapping one count in
#: ``keys_from_attacked_rounds`` (security demands there be none the estimate did not pay for).
ATTACK_FAULTS = frozenset({"intercept_resend", "malicious_relay"})
#: Metrics measured from each round's record (so over any window).
ROUND_METRICS = frozenset({"qber_z", "qber_x", "secure_key_rate_bps", "bsm_rate_hz",
                           "aborted_rounds", "abort_reason", "key_mismatches",
                           "keys_from_attacked_rounds", "calibration_actions"})
#: Metrics of which the nodes keep run totals only: measured over a window that holds every
#: round of a run that completed, "not measured" over a part of it, "no data" when the total is
#: missing or the run stopped early (its counters then include rounds it did not record).
RUN_TOTAL_METRICS = {"coincidence_rate_hz": "coincidences", "auth_failures": "auth_failures"}
#: The note of a phase the timeline does not have (no fault: no during and no after).
NO_SUCH_PHASE = "the timeline has no such phase"
#: Statuses that make the hypothesis fail.
FAILING: frozenset[str] = frozenset({"deviated", "no data"})


def unmeasured(probe: ProbeModel, has_faults: bool, run_s: float) -> str | None:
    """Why this run cannot measure the probe (its verdict will be "not measured"), or None: a
    run total asked over a part of the run (every other metric has a source)."""
    if probe.metric in RUN_TOTAL_METRICS and (
            has_faults or (probe.window is not None and probe.window < run_s)):
        return (f"{probe.metric} is a run total only (the nodes' metrics), measured over a window "
                "that holds the whole run (no fault, no shorter window)")
    return None


# --- the timeline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A method entry as it happened: a fault on slots ``[start_slot, stop_slot)``, an action at
    ``start_slot`` (``stop_slot`` equal); ``start_s`` and ``end_s`` are those slots in emulated
    seconds, ``at_s`` the entry's ``at`` as written. ``reached`` is false for an entry at or
    after the run's end."""

    name: str
    kind: Literal["fault", "action"]
    type: str
    target: str | None
    params: dict[str, Any]
    at_s: float
    start_slot: int
    stop_slot: int
    start_s: float
    end_s: float
    ended_by: str
    reached: bool = True


def _ended_by(fault: Fault, entry: TimelineEntry, entries: Sequence[TimelineEntry]) -> str:
    """What ended ``fault`` before the run's end: its duration, or the ``clear_faults`` action at
    its end that matches it (the rule of ``channel.impairments.fault_windows``)."""
    if entry.duration_s is not None and fault.end_s == entry.at_s + entry.duration_s:
        return "duration"
    clear = next((a for a in entries if a.is_action and a.kind == "clear_faults"
                  and a.at_s == fault.end_s and a.target in (None, fault.target)
                  and a.params.get("fault") in (None, fault.name)), None)
    return "duration" if clear is None else f"action {clear.name}"


def timeline(method: Sequence[MethodEntry] | None, clock_rate_hz: float, frame_bits: int,
             run_end_slot: int, stopped_at_slot: int | None = None) -> list[Span]:
    """Every method entry where the channel emulator applies it, in time order (file order at
    equal times): a fault on the whole frames of its window (``channel.impairments.fault_slots``
    of ``fault_windows``), an action at the first frame at or after its ``at``. Clipped to the
    run's end, or to ``stopped_at_slot`` for a run that stopped before it: a fault still active
    there ends by ``"run stopped"``, and entries after it are not reached."""
    entries = timeline_entries(method)
    windows = {f.name: f for f in fault_windows(entries)}
    end = run_end_slot if stopped_at_slot is None else min(stopped_at_slot, run_end_slot)
    cut = "run end" if stopped_at_slot is None else "run stopped"
    spans = []
    for e in entries:
        if e.is_action:
            first = stop = frame_at(e.at_s, clock_rate_hz, frame_bits) << frame_bits
            why = ""
        else:
            f = windows[e.name]
            first, stop = fault_slots(f, clock_rate_hz, frame_bits)
            why = _ended_by(f, e, entries)
            if stop >= end:
                why = cut
        reached = first < end
        if not reached and stopped_at_slot is not None:
            why = cut
        first, stop = min(first, end), min(max(first, stop), end)
        spans.append(Span(e.name, "action" if e.is_action else "fault", e.kind, e.target,
                          dict(e.params), e.at_s, first, stop, first / clock_rate_hz,
                          stop / clock_rate_hz, why, reached))
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start_slot, i))
    return [spans[i] for i in order]


def faults_of(spans: Iterable[Span]) -> list[Span]:
    """The faults that took effect: started before the run's end and covering a frame."""
    return [s for s in spans if s.kind == "fault" and s.reached and s.stop_slot > s.start_slot]


# --- rounds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """What the verdict reads of one round's record: its slots ``[start_slot, stop_slot)``."""

    index: int
    start_slot: int
    stop_slot: int
    clock_rate_hz: float
    record: dict[str, Any]
    mismatch: bool | None = None

    @property
    def start_s(self) -> float:
        return self.start_slot / self.clock_rate_hz

    @property
    def stop_s(self) -> float:
        return self.stop_slot / self.clock_rate_hz

    @property
    def seconds(self) -> float:
        return (self.stop_slot - self.start_slot) / self.clock_rate_hz


def rounds_of(records: Sequence[dict[str, Any]], clock_rate_hz: float,
              mismatched: dict[int, bool] | None = None) -> tuple[Round, ...]:
    """The records as rounds sorted by slot (each round has its own slots, so their stops are
    sorted too and a window's rounds are found by bisection); ``mismatched`` (round number →
    whether its stored keys differ between the users) when the key stores were read."""
    out = []
    for r in records:
        number = r.get("round", len(out))
        out.append(Round(number, int(r["start_slot"]), int(r["stop_slot"]), clock_rate_hz, r,
                         None if mismatched is None else mismatched.get(number, False)))
    out.sort(key=lambda r: (r.start_slot, r.stop_slot))
    for a, b in zip(out, out[1:], strict=False):
        if b.start_slot < a.stop_slot:
            raise ValueError(f"rounds {a.index} and {b.index} overlap: slots "
                             f"[{a.start_slot}, {a.stop_slot}) and [{b.start_slot}, "
                             f"{b.stop_slot})")
    return tuple(out)


def overlapping(rounds: Sequence[Round], start: int, stop: int) -> Sequence[Round]:
    """The rounds of ``rounds`` (from ``rounds_of``) that share a slot with ``[start, stop)``."""
    lo = bisect_right(rounds, start, key=lambda r: r.stop_slot)
    hi = bisect_left(rounds, stop, key=lambda r: r.start_slot)
    return rounds[lo:max(lo, hi)]


def ending_by(rounds: Sequence[Round], slot: int) -> Sequence[Round]:
    """The rounds that end by ``slot``."""
    return rounds[:bisect_right(rounds, slot, key=lambda r: r.stop_slot)]


def starting_from(rounds: Sequence[Round], slot: int) -> Sequence[Round]:
    """The rounds that start at or after ``slot``."""
    return rounds[bisect_left(rounds, slot, key=lambda r: r.start_slot):]


# --- phases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A stretch of a phase: ``before`` (one), ``during`` (one per fault, named after it),
    ``after`` (one), on slots ``[start_slot, end_slot)``, with the rounds that belong to it.
    ``exists`` is false for a phase the timeline does not have (no fault: no during and no
    after); ``note`` says why a phase that exists has no round."""

    phase: str
    name: str
    start_slot: int
    end_slot: int
    rounds: Sequence[Round]
    exists: bool = True
    note: str = "no round belongs to this phase"


def segments(faults: Sequence[Span], rounds: Sequence[Round], run_end_slot: int,
             stopped_at_slot: int | None = None) -> list[Segment]:
    """The phases' segments, decided in slots. Before: rounds that end by the first fault's
    first slot. During a fault: rounds that share a slot with it. After: rounds that start at
    or after the last fault's stop. A round between two faults belongs to none. A segment that
    starts at or after ``stopped_at_slot`` was never reached by the run."""
    def seg(phase: str, name: str, a: int, b: int, rs: Sequence[Round],
            exists: bool = True) -> Segment:
        if stopped_at_slot is not None and a >= stopped_at_slot:
            return Segment(phase, name, a, b, rs, exists, "the run stopped before this phase")
        return Segment(phase, name, a, b, rs, exists)

    if not faults:
        return [seg("before", "before", 0, run_end_slot, rounds),
                Segment("during", "during", run_end_slot, run_end_slot, (), exists=False),
                Segment("after", "after", run_end_slot, run_end_slot, (), exists=False)]
    first = min(f.start_slot for f in faults)
    last = max(f.stop_slot for f in faults)
    out = [seg("before", "before", 0, first, ending_by(rounds, first), exists=first > 0)]
    out += [seg("during", f.name, f.start_slot, f.stop_slot,
                overlapping(rounds, f.start_slot, f.stop_slot)) for f in faults]
    out.append(seg("after", "after", last, run_end_slot, starting_from(rounds, last),
                   exists=last < run_end_slot))
    return out


# --- metrics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the verdict knows beyond the rounds: the rounds that overlap an attack (for
    ``keys_from_attacked_rounds``), run totals from the nodes' metrics (``totals_note`` says why
    there are none), and how many rounds the run has (a run total measures a window only when
    that window holds them all)."""

    attacked: frozenset[int] = frozenset()
    totals: dict[str, float] = field(default_factory=dict)
    n_rounds: int = 0
    totals_note: str = ""


#: Where each run total comes from (what a "no data" note names when it is missing).
TOTAL_SOURCES = {"coincidences": "nature/metrics.json (coincidence_records_total)",
                 "auth_failures": "the metrics.json of alice, bob and charles"}


def attacked_rounds(faults: Sequence[Span], rounds: Sequence[Round]) -> frozenset[int]:
    """The rounds that share a slot with an attack (``ATTACK_FAULTS``)."""
    return frozenset(r.index for f in faults if f.type in ATTACK_FAULTS
                     for r in overlapping(rounds, f.start_slot, f.stop_slot))


@dataclass(frozen=True)
class Measured:
    value: float | None
    note: str = ""


def _pooled(rounds: Sequence[Round], value: str, weight: str) -> Measured:
    pairs = [(r.record[value], r.record.get(weight) or 0) for r in rounds
             if r.record.get(value) is not None]
    total = sum(w for _, w in pairs)
    if total > 0:
        return Measured(sum(v * w for v, w in pairs) / total)
    return Measured(None, "no round of the window measured it")


def _run_total(metric: str, rounds: Sequence[Round], seconds: float,
               evidence: Evidence) -> Measured:
    """A run total: "not measured" over a part of the run (no source for it), "no data" when
    the total is missing (its metrics file, or a run that stopped early: ``totals_note``)."""
    if len(rounds) != evidence.n_rounds:
        return Measured(None, "not measured: the nodes keep a run total only, and this window "
                        "does not hold the whole run")
    key = RUN_TOTAL_METRICS[metric]
    total = evidence.totals.get(key)
    if total is None:
        return Measured(None, evidence.totals_note or f"{TOTAL_SOURCES[key]} is missing")
    return Measured(total / seconds if metric.endswith("_hz") else total)


def _dark_count_rate(rounds: Sequence[Round]) -> Measured:
    """Background clicks per emulated second, all four detectors, from the window's pooled
    vacuum-vacuum detections and pulse pairs (``nodes.link_estimates``)."""
    counted = [r for r in rounds if r.record.get("vacuum_pairs") is not None]
    p = dark_count_probability(sum(float(r.record.get("vacuum_detections") or 0)
                                   for r in counted),
                               sum(float(r.record["vacuum_pairs"]) for r in counted))
    if p is None:
        return Measured(None, "no round of the window counted vacuum-vacuum pulse pairs")
    return Measured(N_DETECTORS * p * counted[0].clock_rate_hz)


def measure(probe: ProbeModel, rounds: Sequence[Round], evidence: Evidence) -> Measured:
    """The probe's metric over ``rounds`` (a window's), or why there is no value."""
    metric = probe.metric
    seconds = sum(r.seconds for r in rounds)
    if not rounds:
        return Measured(None, "no round")
    if metric in RUN_TOTAL_METRICS:
        return _run_total(metric, rounds, seconds, evidence)
    if metric == "qber_z":
        # measured after reconciliation only: the pre-check's qber_z is the scenario's prior
        # and from the bits reconciliation corrected where the record has them: a final
        # estimate that aborted keeps the pre-check's qber_z, the prior, in its record
        final = [r for r in rounds if r.record.get("phase") == "final"]
        pairs = [(r.record["corrected_bits"], r.record.get("key_bits_raw") or 0)
                 if r.record.get("corrected_bits") is not None
                 else ((r.record.get("qber_z") or 0.0) * (r.record.get("key_bits_raw") or 0),
                       r.record.get("key_bits_raw") or 0)
                 for r in final if r.record.get("qber_z") is not None
                 or r.record.get("corrected_bits") is not None]
        bits = sum(n for _, n in pairs)
        if bits > 0:
            return Measured(sum(e for e, _ in pairs) / bits)
        return Measured(None, "no round of the window measured it")
    if metric == "qber_x":
        return _pooled(rounds, "qber_x", "x_bits")
    if metric == "visibility":  # a lower bound (nodes.link_estimates)
        pooled = _pooled(rounds, "e11_x_upper", "s11_z_lower")
        return pooled if pooled.value is None else Measured(visibility_lower(pooled.value))
    if metric == "dark_count_rate_hz":
        return _dark_count_rate(rounds)
    if metric == "secure_key_rate_bps":
        return Measured(sum(r.record.get("secure_bits") or 0 for r in rounds) / seconds)
    if metric == "bsm_rate_hz":
        if any(r.record.get("announced") is None for r in rounds):
            return Measured(None, "a round of the window has no announcement")
        return Measured(sum(r.record["announced"] for r in rounds) / seconds)
    if metric == "aborted_rounds":
        return Measured(float(sum(1 for r in rounds if r.record.get("aborted"))))
    if metric == "abort_reason":
        reason = (probe.reason or "").lower()
        return Measured(float(sum(1 for r in rounds if r.record.get("aborted")
                                  and reason in str(r.record.get("abort_reason") or "").lower())))
    if metric == "key_mismatches":
        if any(r.mismatch is None for r in rounds):
            return Measured(None, "the key stores were not read")
        return Measured(float(sum(1 for r in rounds if r.mismatch)))
    if metric == "calibration_actions":
        # what the loops did on reading the window's rounds (none without a calibration section)
        return Measured(float(sum(len(r.record.get("calibration_actions") or ()) for r in rounds)))
    if metric == "keys_from_attacked_rounds":
        return Measured(float(sum(r.record.get("secure_bits") or 0 for r in rounds
                                  if r.index in evidence.attacked)))
    raise ValueError(f"metric {metric!r} has no measurement")  # time_to_recover_s: recovery()


def holds(probe: ProbeModel, value: float) -> tuple[bool, float | None]:
    """Whether ``value`` is inside the probe's tolerance, and by how much it is outside (0
    inside; positive above the max or below the min). A value that is not a finite number
    (NaN from a record, say) is no measurement, so it never holds (by: None)."""
    if not math.isfinite(value):
        return False, None
    t = probe.tolerance
    if t.max is not None and value > t.max:
        return False, value - t.max
    if t.min is not None and value < t.min:
        return False, t.min - value
    return True, 0.0


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowResult:
    start_s: float
    end_s: float
    rounds: list[int]
    value: float | None
    holds: bool | None
    by: float | None = None
    note: str = ""
    start_slot: int = 0
    end_slot: int = 0


@dataclass(frozen=True)
class PhaseResult:
    """One probe in one segment of one of its phases."""

    phase: str
    segment: str
    start_s: float
    end_s: float
    status: Status
    windows: list[WindowResult] = field(default_factory=list)
    note: str = ""
    start_slot: int = 0
    end_slot: int = 0


@dataclass(frozen=True)
class ProbeResult:
    name: str
    metric: str
    tolerance: dict[str, float | None]
    window_s: float | None
    phases: list[str]
    reason: str | None
    results: list[PhaseResult]
    window_slots: int | None = None


def window_slots(window_s: float | None, clock_rate_hz: float) -> int | None:
    """A probe's window in whole slots (at least one); None: the whole segment."""
    return None if window_s is None else max(1, round(window_s * clock_rate_hz))


def windows(rounds: Sequence[Round], width: int | None) -> list[tuple[int, int,
                                                                        Sequence[Round]]]:
    """The windows a segment is evaluated over, in slots: consecutive stretches of ``width``
    slots from its first round's start to its last round's stop (the last one shorter when the
    span is not a whole number of widths), each with the rounds that overlap it (found by
    bisection: ``rounds`` sorted as ``rounds_of`` gives them); the whole span when ``width`` is
    None."""
    if not rounds:
        return []
    start, stop = rounds[0].start_slot, rounds[-1].stop_slot
    if width is None:
        return [(start, stop, rounds)]
    out = []
    for a in range(start, stop, width):
        b = min(stop, a + width)
        out.append((a, b, overlapping(rounds, a, b)))
    return out


def _window_result(probe: ProbeModel, a: int, b: int, rounds: Sequence[Round],
                   evidence: Evidence, clock_rate_hz: float) -> WindowResult:
    m = measure(probe, rounds, evidence)
    ids = [r.index for r in rounds]
    at = {"start_slot": a, "end_slot": b}
    a_s, b_s = a / clock_rate_hz, b / clock_rate_hz
    if m.value is None:
        return WindowResult(a_s, b_s, ids, None, None, note=m.note, **at)
    ok, by = holds(probe, m.value)
    if by is None:
        return WindowResult(a_s, b_s, ids, None, False, None,
                            f"measured {m.value!r}, not a finite number", **at)
    return WindowResult(a_s, b_s, ids, m.value, ok, by, **at)


def _segment_status(results: Sequence[WindowResult], empty: str) -> tuple[Status, str]:
    if not results:
        return "no data", empty
    if any(w.holds is False for w in results):
        return "deviated", ""
    missing = [w for w in results if w.holds is None]
    if missing:
        note = missing[0].note
        return ("not measured" if note.startswith("not measured") else "no data"), note
    return "held", ""


def evaluate_probe(probe: ProbeModel, segs: Sequence[Segment], evidence: Evidence,
                   clock_rate_hz: float, recovery: list[WindowResult] | None = None,
                   during: dict[str, WindowResult] | None = None) -> ProbeResult:
    """The probe in each segment of each phase it lists."""
    results = []
    width = window_slots(probe.window, clock_rate_hz)
    for s in segs:
        a_s, b_s = s.start_slot / clock_rate_hz, s.end_slot / clock_rate_hz
        at = {"start_slot": s.start_slot, "end_slot": s.end_slot}
        if s.phase not in probe.phases:
            continue
        if not s.exists:
            results.append(PhaseResult(s.phase, s.name, a_s, b_s, "not applicable",
                                       note=NO_SUCH_PHASE, **at))
            continue
        if probe.metric == "time_to_recover_s":
            results.append(_recovery_result(s, a_s, b_s, recovery or [], during))
            continue
        ws = [_window_result(probe, a, b, rs, evidence, clock_rate_hz)
              for a, b, rs in windows(s.rounds, width)]
        status, note = _segment_status(ws, s.note)
        results.append(PhaseResult(s.phase, s.name, a_s, b_s, status, ws, note, **at))
    tolerance = {"min": probe.tolerance.min, "max": probe.tolerance.max}
    return ProbeResult(probe.name, probe.metric, tolerance, probe.window, list(probe.phases),
                       probe.reason, results, width)


def _recovery_result(s: Segment, a_s: float, b_s: float, recovery: list[WindowResult],
                     during: dict[str, WindowResult] | None = None) -> PhaseResult:
    at = {"start_slot": s.start_slot, "end_slot": s.end_slot}
    if s.phase == "during" and during is not None and s.name in during:
        w = during[s.name]
        if not s.rounds:
            return PhaseResult(s.phase, s.name, a_s, b_s, "no data", note=s.note, **at)
        status, note = _segment_status([w], s.note)
        if status == "no data":
            note = f"did not recover before {s.name} ended"
        return PhaseResult(s.phase, s.name, a_s, b_s, status, [w], note, **at)
    if s.phase != "after":
        return PhaseResult(s.phase, s.name, a_s, b_s, "not applicable",
                           note="time to recover is measured after the faults", **at)
    if not recovery:
        return PhaseResult(s.phase, s.name, a_s, b_s, "not applicable",
                           note="no fault ended before the run's end", **at)
    status, note = _segment_status(recovery, s.note)
    if status == "no data":
        note = "did not recover before the run's end"
    return PhaseResult(s.phase, s.name, a_s, b_s, status, recovery, note, **at)


def recovery(probe: ProbeModel, faults: Sequence[Span], rounds: Sequence[Round],
             others: Sequence[ProbeModel], evidence: Evidence, run_end_slot: int,
             clock_rate_hz: float) -> list[WindowResult]:
    """For each fault that ended before the run's end: the emulated seconds from its end to the
    start of the first round, wholly after it, in which every other probe that must hold after
    the faults holds on that round alone (without such probes: the first round not aborted);
    a window from the fault's end to that round's start. ``value`` None: it never did. Each
    round is judged once, and each fault finds its round by bisection."""
    checks = [p for p in others if "after" in p.phases and p.metric in ROUND_METRICS]
    ended = [f for f in faults if f.stop_slot < run_end_slot]
    if not ended:
        return []
    healthy_from = _next_healthy(rounds, checks, evidence)
    out = []
    for f in ended:
        k = healthy_from[bisect_left(rounds, f.stop_slot, key=lambda r: r.start_slot)]
        if k is None:
            out.append(WindowResult(f.end_s, run_end_slot / clock_rate_hz, [], None, None,
                                    note=f"no healthy round after {f.name} ended",
                                    start_slot=f.stop_slot, end_slot=run_end_slot))
            continue
        good = rounds[k]
        value = (good.start_slot - f.stop_slot) / clock_rate_hz
        ok, by = holds(probe, value)
        out.append(WindowResult(f.end_s, good.start_s, [good.index], value, ok, by,
                                note=f"after {f.name}", start_slot=f.stop_slot,
                                end_slot=good.start_slot))
    return out


def recovery_during(probe: ProbeModel, segs: Sequence[Segment], others: Sequence[ProbeModel],
                    evidence: Evidence, clock_rate_hz: float) -> dict[str, WindowResult]:
    """For each fault's ``during`` segment: the emulated seconds from the fault's start to the
    start of the first of its rounds from which every round of the segment, up to where another
    fault starts, is healthy (every
    other probe that must hold ``after``, the recovered state, holds on that round alone;
    without such probes: not aborted), i.e. how long the link took to recover while the fault
    lasted, as the
    calibration loops make it (docs/calibration.md). ``value`` None: the segment's last round is
    not healthy (it never recovered). Only for a probe that lists ``during`` explicitly."""
    if "phases" not in probe.model_fields_set or "during" not in probe.phases:
        return {}
    checks = [p for p in others if "after" in p.phases and p.metric in ROUND_METRICS]
    out = {}
    for s in segs:
        if s.phase != "during" or not s.exists:
            continue
        a_s, b_s = s.start_slot / clock_rate_hz, s.end_slot / clock_rate_hz
        # rounds from where another fault starts say nothing of this one's recovery
        cut = min((o.start_slot for o in segs if o.phase == "during" and o.exists
                   and o.start_slot > s.start_slot), default=s.end_slot)
        mine = [r for r in s.rounds if r.start_slot < cut]
        k = len(mine)
        while k > 0 and _healthy(mine[k - 1], checks, evidence):
            k -= 1
        if k == len(mine):
            out[s.name] = WindowResult(a_s, b_s, [], None, None,
                                       note=f"not recovered before {s.name} ended",
                                       start_slot=s.start_slot, end_slot=s.end_slot)
            continue
        good = mine[k]
        value = max(0, good.start_slot - s.start_slot) / clock_rate_hz
        ok, by = holds(probe, value)
        out[s.name] = WindowResult(a_s, a_s + value, [good.index], value, ok, by,
                                   note=f"during {s.name}", start_slot=s.start_slot,
                                   end_slot=s.start_slot + max(0, good.start_slot - s.start_slot))
    return out


def _next_healthy(rounds: Sequence[Round], checks: Sequence[ProbeModel], evidence: Evidence
                  ) -> list[int | None]:
    """For each position k in ``rounds`` (and one past the end): the first healthy round at or
    after k, or None."""
    out: list[int | None] = [None] * (len(rounds) + 1)
    for k in range(len(rounds) - 1, -1, -1):
        out[k] = k if _healthy(rounds[k], checks, evidence) else out[k + 1]
    return out


def _healthy(r: Round, checks: Sequence[ProbeModel], evidence: Evidence) -> bool:
    if not checks:
        return not r.record.get("aborted")
    for p in checks:
        m = measure(p, [r], evidence)
        if m.value is None or not holds(p, m.value)[0]:
            return False
    return True


# --- the verdict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deviation:
    probe: str
    metric: str
    phase: str
    segment: str
    start_s: float
    end_s: float
    value: float | None
    by: float | None
    message: str


@dataclass(frozen=True)
class Verdict:
    deviated: bool
    title: str | None
    probes: list[ProbeResult]
    deviations: list[Deviation]
    timeline: list[Span]
    rollbacks: list[dict[str, Any]]
    run_end_s: float

    def to_json(self) -> dict[str, Any]:
        return {"deviated": self.deviated,
                "hypothesis": {"title": self.title, "probes": [asdict(p) for p in self.probes]},
                "deviations": [asdict(d) for d in self.deviations],
                "timeline": [asdict(s) for s in self.timeline],
                "rollbacks": self.rollbacks, "run_end_s": self.run_end_s}


def _where(r: PhaseResult) -> str:
    return f"during {r.segment}" if r.phase == "during" else r.phase


def _deviation(p: ProbeResult, r: PhaseResult, window: WindowResult | None = None
               ) -> Deviation:
    """The deviation of ``r`` (in ``window``, else its worst window: a value that is not a
    number first), with a message that says which probe, where and by how much."""
    if r.status == "no data":
        return Deviation(p.name, p.metric, r.phase, r.segment, r.start_s, r.end_s, None, None,
                         f"probe {p.name} ({p.metric}) {_where(r)}: no data ({r.note})")
    worst = window or max((w for w in r.windows if w.holds is False),
                          key=lambda w: math.inf if w.by is None else w.by)
    span = f"[{worst.start_s:.4g}, {worst.end_s:.4g}) s"
    if worst.value is None:
        return Deviation(p.name, p.metric, r.phase, r.segment, worst.start_s, worst.end_s,
                         None, None, f"probe {p.name} ({p.metric}) {_where(r)}: {worst.note} "
                         f"in {span}")
    assert worst.by is not None
    t = p.tolerance
    above = t["max"] is not None and worst.value > t["max"]
    side, bound = ("above the max", t["max"]) if above else ("below the min", t["min"])
    return Deviation(p.name, p.metric, r.phase, r.segment, worst.start_s, worst.end_s,
                     worst.value, worst.by,
                     f"probe {p.name} ({p.metric}) {_where(r)}: {worst.value:.4g} in "
                     f"{span}, {worst.by:.4g} {side} {bound:g}")


def settled_deviations(v: Verdict, recorded_slot: int) -> list[Deviation]:
    """Deviations of a run still going that no later round can undo (``runtime.fail_fast``):
    a window outside its tolerance that has all its rounds (it ends by ``recorded_slot``, the
    stop of the last round recorded) and either its full width or the end of its phase's
    segment, once the segment is over. "no data" and the time to recover are judged when the
    run ends."""
    out = []
    for p in v.probes:
        for r in p.results:
            if r.status != "deviated" or p.metric == "time_to_recover_s":
                continue  # (a recovery needs every probe of a round, key stores included)
            complete = r.end_slot <= recorded_slot
            for w in r.windows:
                full = p.window_slots is not None and w.end_slot - w.start_slot >= p.window_slots
                if w.holds is False and w.end_slot <= recorded_slot and (complete or full):
                    out.append(_deviation(p, r, w))
                    break
    return out


def rollbacks_run(rollbacks: Sequence[RollbackModel] | None, spans: Sequence[Span],
                  run_end_s: float, reached_end: bool) -> list[dict[str, Any]]:
    """The rollbacks, run at the run's end when it got there, with the faults each ended."""
    active = [s for s in faults_of(spans) if s.ended_by == "run end"]
    out = []
    for r in rollbacks or []:
        a = r.action
        ended = []
        if a.type == "clear_faults" and reached_end:
            ended = [s.name for s in active if a.target in (None, s.target)
                     and a.params.get("fault") in (None, s.name) and s.name not in
                     {n for o in out for n in o["ended"]}]
        out.append({"name": r.name, "type": a.type, "target": a.target,
                    "params": dict(a.params), "at_s": run_end_s, "executed": reached_end,
                    "ended": ended})
    return out


def evaluate(steady_state: SteadyStateModel | None, method: Sequence[MethodEntry] | None,
             rollbacks: Sequence[RollbackModel] | None, records: Sequence[dict[str, Any]],
             clock_rate_hz: float, run_end_slot: int, *, frame_bits: int,
             stopped_at_slot: int | None = None, mismatched: dict[int, bool] | None = None,
             totals: dict[str, float] | None = None, totals_note: str = "") -> Verdict:
    """The verdict of a run whose rounds are ``records``, planned to end at ``run_end_slot``,
    with settings frames of 2^``frame_bits`` slots (the faults act on whole frames);
    ``stopped_at_slot`` when it stopped before that end (its timeline ends there, the rollbacks
    did not run, and phases it never reached are no data)."""
    planned = timeline(method, clock_rate_hz, frame_bits, run_end_slot)
    faults = faults_of(planned)
    spans = planned if stopped_at_slot is None else timeline(
        method, clock_rate_hz, frame_bits, run_end_slot, stopped_at_slot)
    rounds = rounds_of(records, clock_rate_hz, mismatched)
    evidence = Evidence(attacked_rounds(faults, rounds), dict(totals or {}), len(rounds),
                        totals_note)
    segs = segments(faults, rounds, run_end_slot, stopped_at_slot)
    probes = list(steady_state.probes) if steady_state is not None else []
    results = []
    for p in probes:
        others = [o for o in probes if o is not p]
        ttr = p.metric == "time_to_recover_s"
        rec = recovery(p, faults, rounds, others, evidence, run_end_slot,
                       clock_rate_hz) if ttr else None
        dur = recovery_during(p, segs, others, evidence, clock_rate_hz) if ttr else None
        results.append(evaluate_probe(p, segs, evidence, clock_rate_hz, rec, dur))
    deviations = [_deviation(p, r) for p in results for r in p.results if r.status in FAILING]
    end_slot = run_end_slot if stopped_at_slot is None else min(stopped_at_slot, run_end_slot)
    end_s = end_slot / clock_rate_hz
    return Verdict(bool(deviations), steady_state.title if steady_state else None, results,
                   deviations, spans,
                   rollbacks_run(rollbacks, spans, end_s, stopped_at_slot is None), end_s)
