"""The verdict of a game day: does the steady-state hypothesis hold before, during and after the
faults? (issue 12, item 7; docs/game-days.md gives the rules).

Pure: everything comes in as arguments (the scenario's game-day sections, the rounds records of
``rounds.jsonl``, which rounds' stored keys differ, run totals from the nodes' metrics) and goes
out as plain data, so the same inputs always give the same verdict. ``orchestration.run`` gathers
the inputs and writes ``journal.json``.

Time is emulated time: a round covers [start_slot, stop_slot) / clock_rate_hz.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from orchestration.experiment import MethodEntry, ProbeModel, RollbackModel, SteadyStateModel

Status = Literal["held", "deviated", "no data", "not measured", "not applicable"]

#: Faults that are attacks: key bits stored from a round overlapping one count in
#: ``keys_from_attacked_rounds`` (security demands there be none the estimate did not pay for).
ATTACK_FAULTS = frozenset({"intercept_resend", "malicious_relay"})
#: Metrics measured from each round's record (so over any window).
ROUND_METRICS = frozenset({"qber_z", "qber_x", "secure_key_rate_bps", "bsm_rate_hz",
                           "aborted_rounds", "abort_reason", "key_mismatches",
                           "keys_from_attacked_rounds"})
#: Metrics of which the nodes keep run totals only: measured over a window that holds every
#: round of the run, "not measured" over a part of it.
RUN_TOTAL_METRICS = {"coincidence_rate_hz": "coincidences", "auth_failures": "auth_failures"}
#: Metrics no record or node metric holds yet.
UNMEASURED_METRICS = frozenset({"visibility", "dark_count_rate_hz", "calibration_actions"})
#: The note of a phase the timeline does not have (no fault: no during and no after).
NO_SUCH_PHASE = "the timeline has no such phase"
#: Statuses that make the hypothesis fail.
FAILING: frozenset[str] = frozenset({"deviated", "no data"})


def unmeasured(probe: ProbeModel, has_faults: bool, run_s: float) -> str | None:
    """Why this run cannot measure the probe (its verdict will be "not measured"), or None: a
    metric with no source yet, or a run total asked over a part of the run."""
    if probe.metric in UNMEASURED_METRICS:
        return f"{probe.metric} is not measured by the emulator yet"
    if probe.metric in RUN_TOTAL_METRICS and (
            has_faults or (probe.window is not None and probe.window < run_s)):
        return (f"{probe.metric} is a run total only (the nodes' metrics), measured over a window "
                "that holds the whole run (no fault, no shorter window)")
    return None


# --- the timeline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A method entry as it happened: a fault from ``start_s`` to ``end_s``, an action at
    ``start_s`` (``end_s`` equal). ``reached`` is false for an entry after the run's end."""

    name: str
    kind: Literal["fault", "action"]
    type: str
    target: str | None
    params: dict[str, Any]
    start_s: float
    end_s: float
    ended_by: str
    reached: bool = True


def _ends_fault(action: MethodEntry, fault: MethodEntry) -> bool:
    """Whether ``action`` (a method entry with an action) ends ``fault``'s fault."""
    a, f = action.action, fault.fault
    assert a is not None and f is not None
    if a.type == "clear_faults":
        return a.target in (None, f.target) and a.params.get("fault") in (None, fault.name)
    if a.type == "restart":
        return a.target == f.target
    return a.type == "resume" and f.type == "pause" and a.target == f.target


def timeline(method: Sequence[MethodEntry] | None, run_end_s: float) -> list[Span]:
    """Every method entry with its start and end, clipped to [0, ``run_end_s``], in time order
    (file order at equal times). A fault ends at the first of: its duration, a later action
    that ends it (an action at the same time ends it when it comes later in the file), the
    run's end (where the rollbacks run)."""
    entries = list(method or [])
    spans = []
    for k, e in enumerate(entries):
        reached = e.at < run_end_s
        start = min(e.at, run_end_s)
        if e.action is not None:
            spans.append(Span(e.name, "action", e.action.type, e.action.target,
                              dict(e.action.params), start, start, "", reached))
            continue
        assert e.fault is not None
        end, why = e.end, "duration"
        for j, other in enumerate(entries):
            later = other.at > e.at or (other.at == e.at and j > k)
            if other.action is not None and later and other.at < end and _ends_fault(other, e):
                end, why = other.at, f"action {other.name}"
        if end >= run_end_s:
            end, why = run_end_s, "run end"
        spans.append(Span(e.name, "fault", e.fault.type, e.fault.target, dict(e.fault.params),
                          start, max(start, end), why, reached))
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start_s, i))
    return [spans[i] for i in order]


def faults_of(spans: Iterable[Span]) -> list[Span]:
    """The faults that took effect (started before the run's end)."""
    return [s for s in spans if s.kind == "fault" and s.reached and s.end_s > s.start_s]


# --- rounds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """What the verdict reads of one round's record."""

    index: int
    start_s: float
    stop_s: float
    record: dict[str, Any]
    mismatch: bool | None = None

    @property
    def seconds(self) -> float:
        return self.stop_s - self.start_s


def rounds_of(records: Sequence[dict[str, Any]], clock_rate_hz: float,
              mismatched: dict[int, bool] | None = None) -> list[Round]:
    """The records as rounds in emulated time; ``mismatched`` (round number → whether its
    stored keys differ between the users) when the key stores were read."""
    out = []
    for r in records:
        number = r.get("round", len(out))
        out.append(Round(number, r["start_slot"] / clock_rate_hz, r["stop_slot"] / clock_rate_hz,
                         r, None if mismatched is None else mismatched.get(number, False)))
    return out


def _overlaps(r: Round, start: float, end: float) -> bool:
    return r.start_s < end and r.stop_s > start


# --- phases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A stretch of a phase: ``before`` (one), ``during`` (one per fault, named after it),
    ``after`` (one), with the rounds that belong to it. ``exists`` is false for a phase the
    timeline does not have (no fault: no during and no after)."""

    phase: str
    name: str
    start_s: float
    end_s: float
    rounds: tuple[Round, ...]
    exists: bool = True


def segments(faults: Sequence[Span], rounds: Sequence[Round], run_end_s: float) -> list[Segment]:
    """The phases' segments. Before: rounds that end by the first fault's start. During a
    fault: rounds that overlap its window. After: rounds that start at or after the last
    fault's end. A round between two faults belongs to none."""
    if not faults:
        return [Segment("before", "before", 0.0, run_end_s, tuple(rounds)),
                Segment("during", "during", run_end_s, run_end_s, (), exists=False),
                Segment("after", "after", run_end_s, run_end_s, (), exists=False)]
    first = min(f.start_s for f in faults)
    last = max(f.end_s for f in faults)
    out = [Segment("before", "before", 0.0, first,
                   tuple(r for r in rounds if r.stop_s <= first), exists=first > 0)]
    out += [Segment("during", f.name, f.start_s, f.end_s,
                    tuple(r for r in rounds if _overlaps(r, f.start_s, f.end_s)))
            for f in faults]
    out.append(Segment("after", "after", last, run_end_s,
                       tuple(r for r in rounds if r.start_s >= last), exists=last < run_end_s))
    return out


# --- metrics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the verdict knows beyond the rounds: the attack windows (for
    ``keys_from_attacked_rounds``), run totals from the nodes' metrics, and every round of the
    run (a run total measures a window only when that window holds them all)."""

    attacks: tuple[tuple[float, float], ...] = ()
    totals: dict[str, float] = field(default_factory=dict)
    all_rounds: frozenset[int] = frozenset()


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


def measure(probe: ProbeModel, rounds: Sequence[Round], evidence: Evidence) -> Measured:
    """The probe's metric over ``rounds`` (a window's), or why there is no value."""
    metric = probe.metric
    seconds = sum(r.seconds for r in rounds)
    if not rounds:
        return Measured(None, "no round")
    if metric in UNMEASURED_METRICS:
        return Measured(None, "not measured: no record or node metric holds it yet")
    if metric in RUN_TOTAL_METRICS:
        total = evidence.totals.get(RUN_TOTAL_METRICS[metric])
        if total is None:
            return Measured(None, "not measured: the nodes' metrics do not hold it")
        if {r.index for r in rounds} != evidence.all_rounds:
            return Measured(None, "not measured: the nodes keep a run total only, and this "
                            "window does not hold the whole run")
        return Measured(total / seconds if metric.endswith("_hz") else total)
    if metric == "qber_z":
        # measured after reconciliation only: the pre-check's qber_z is the scenario's prior
        final = [r for r in rounds if r.record.get("phase") == "final"]
        return _pooled(final, "qber_z", "key_bits_raw")
    if metric == "qber_x":
        return _pooled(rounds, "qber_x", "x_bits")
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
    if metric == "keys_from_attacked_rounds":
        return Measured(float(sum(r.record.get("secure_bits") or 0 for r in rounds
                                  if any(_overlaps(r, a, b) for a, b in evidence.attacks))))
    raise ValueError(f"metric {metric!r} has no measurement")  # time_to_recover_s: recovery()


def holds(probe: ProbeModel, value: float) -> tuple[bool, float]:
    """Whether ``value`` is inside the probe's tolerance, and by how much it is outside (0
    inside; positive above the max or below the min)."""
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


@dataclass(frozen=True)
class ProbeResult:
    name: str
    metric: str
    tolerance: dict[str, float | None]
    window_s: float | None
    phases: list[str]
    reason: str | None
    results: list[PhaseResult]


def windows(rounds: Sequence[Round], width: float | None) -> list[tuple[float, float,
                                                                          list[Round]]]:
    """The windows a segment is evaluated over: consecutive stretches of ``width`` seconds from
    its first round's start to its last round's stop (the last one shorter when the span is not
    a whole number of widths), each with the rounds that overlap it; the whole span when
    ``width`` is None."""
    if not rounds:
        return []
    start, stop = min(r.start_s for r in rounds), max(r.stop_s for r in rounds)
    if width is None:
        return [(start, stop, list(rounds))]
    out = []
    n = max(1, math.ceil((stop - start) / width - 1e-9))
    for k in range(n):
        a, b = start + k * width, min(stop, start + (k + 1) * width)
        out.append((a, b, [r for r in rounds if _overlaps(r, a, b)]))
    return out


def _window_result(probe: ProbeModel, a: float, b: float, rounds: Sequence[Round],
                   evidence: Evidence) -> WindowResult:
    m = measure(probe, rounds, evidence)
    ids = [r.index for r in rounds]
    if m.value is None:
        return WindowResult(a, b, ids, None, None, note=m.note)
    ok, by = holds(probe, m.value)
    return WindowResult(a, b, ids, m.value, ok, by)


def _segment_status(results: Sequence[WindowResult]) -> tuple[Status, str]:
    if not results:
        return "no data", "no round belongs to this phase"
    if any(w.holds is False for w in results):
        return "deviated", ""
    missing = [w for w in results if w.holds is None]
    if missing:
        note = missing[0].note
        return ("not measured" if note.startswith("not measured") else "no data"), note
    return "held", ""


def evaluate_probe(probe: ProbeModel, segs: Sequence[Segment], evidence: Evidence,
                   recovery: list[WindowResult] | None = None) -> ProbeResult:
    """The probe in each segment of each phase it lists."""
    results = []
    for s in segs:
        if s.phase not in probe.phases:
            continue
        if not s.exists:
            results.append(PhaseResult(s.phase, s.name, s.start_s, s.end_s, "not applicable",
                                       note=NO_SUCH_PHASE))
            continue
        if probe.metric == "time_to_recover_s":
            results.append(_recovery_result(s, recovery or []))
            continue
        ws = [_window_result(probe, a, b, rs, evidence)
              for a, b, rs in windows(s.rounds, probe.window)]
        status, note = _segment_status(ws)
        results.append(PhaseResult(s.phase, s.name, s.start_s, s.end_s, status, ws, note))
    tolerance = {"min": probe.tolerance.min, "max": probe.tolerance.max}
    return ProbeResult(probe.name, probe.metric, tolerance, probe.window, list(probe.phases),
                       probe.reason, results)


def _recovery_result(s: Segment, recovery: list[WindowResult]) -> PhaseResult:
    if s.phase != "after":
        return PhaseResult(s.phase, s.name, s.start_s, s.end_s, "not applicable",
                           note="time to recover is measured after the faults")
    if not recovery:
        return PhaseResult(s.phase, s.name, s.start_s, s.end_s, "not applicable",
                           note="no fault ended before the run's end")
    status, note = _segment_status(recovery)
    if status == "no data":
        note = "did not recover before the run's end"
    return PhaseResult(s.phase, s.name, s.start_s, s.end_s, status, recovery, note)


def recovery(probe: ProbeModel, faults: Sequence[Span], rounds: Sequence[Round],
             others: Sequence[ProbeModel], evidence: Evidence, run_end_s: float
             ) -> list[WindowResult]:
    """For each fault that ended before the run's end: the emulated seconds from its end to the
    start of the first round, wholly after it, in which every other probe that must hold after
    the faults holds on that round alone (without such probes: the first round not aborted);
    a window from the fault's end to that round's start. ``value`` None: it never did."""
    checks = [p for p in others if "after" in p.phases and p.metric in ROUND_METRICS]
    out = []
    for f in faults:
        if f.end_s >= run_end_s:
            continue
        good = next((r for r in rounds if r.start_s >= f.end_s and _healthy(r, checks, evidence)),
                    None)
        if good is None:
            out.append(WindowResult(f.end_s, run_end_s, [], None, None,
                                    note=f"no healthy round after {f.name} ended"))
            continue
        value = good.start_s - f.end_s
        ok, by = holds(probe, value)
        out.append(WindowResult(f.end_s, good.start_s, [good.index], value, ok, by,
                                note=f"after {f.name}"))
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
    """The deviation of ``r`` (in ``window``, else its worst window), with a message that says
    which probe, where and by how much."""
    if r.status == "no data":
        return Deviation(p.name, p.metric, r.phase, r.segment, r.start_s, r.end_s, None, None,
                         f"probe {p.name} ({p.metric}) {_where(r)}: no data ({r.note})")
    worst = window or max((w for w in r.windows if w.holds is False), key=lambda w: w.by or 0.0)
    assert worst.value is not None
    t = p.tolerance
    above = t["max"] is not None and worst.value > t["max"]
    side, bound = ("above the max", t["max"]) if above else ("below the min", t["min"])
    return Deviation(p.name, p.metric, r.phase, r.segment, worst.start_s, worst.end_s,
                     worst.value, worst.by,
                     f"probe {p.name} ({p.metric}) {_where(r)}: {worst.value:.4g} in "
                     f"[{worst.start_s:.4g}, {worst.end_s:.4g}) s, {worst.by:.4g} {side} "
                     f"{bound:g}")


def settled_deviations(v: Verdict, recorded_s: float) -> list[Deviation]:
    """Deviations of a run still going that no later round can undo (``runtime.fail_fast``):
    a measured value outside its tolerance in a window that has all its rounds (it ends by
    ``recorded_s``, the stop of the last round recorded) and its full width, or that ends its
    phase's segment once the segment is over. "no data" and the time to recover are judged
    when the run ends."""
    out = []
    for p in v.probes:
        for r in p.results:
            if r.status != "deviated" or p.metric == "time_to_recover_s":
                continue  # (a recovery needs every probe of a round, key stores included)
            complete = r.end_s <= recorded_s
            for w in r.windows:
                full = p.window_s is not None and w.end_s - w.start_s >= p.window_s * (1 - 1e-9)
                settled = complete or full
                if w.holds is False and w.end_s <= recorded_s and settled:
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
             clock_rate_hz: float, run_end_s: float, *, reached_end: bool = True,
             mismatched: dict[int, bool] | None = None,
             totals: dict[str, float] | None = None) -> Verdict:
    """The verdict of a run whose rounds are ``records`` and which ended at ``run_end_s``
    emulated seconds (``reached_end`` false when it stopped before its planned end)."""
    spans = timeline(method, run_end_s)
    faults = faults_of(spans)
    rounds = rounds_of(records, clock_rate_hz, mismatched)
    evidence = Evidence(tuple((f.start_s, f.end_s) for f in faults if f.type in ATTACK_FAULTS),
                        dict(totals or {}), frozenset(r.index for r in rounds))
    segs = segments(faults, rounds, run_end_s)
    probes = list(steady_state.probes) if steady_state is not None else []
    results = []
    for p in probes:
        rec = recovery(p, faults, rounds, [o for o in probes if o is not p], evidence,
                       run_end_s) if p.metric == "time_to_recover_s" else None
        results.append(evaluate_probe(p, segs, evidence, rec))
    deviations = [_deviation(p, r) for p in results for r in p.results if r.status in FAILING]
    return Verdict(bool(deviations), steady_state.title if steady_state else None, results,
                   deviations, spans, rollbacks_run(rollbacks, spans, run_end_s, reached_end),
                   run_end_s)
