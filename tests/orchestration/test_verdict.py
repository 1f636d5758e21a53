"""The game-day verdict (orchestration.verdict) from synthetic rounds records: each rule can
fail. Time: a clock of 1 Hz, frames of one slot and 2-slot rounds, so round k covers
[2k, 2k + 2) s and a fault at t s acts from slot round(t)."""

from __future__ import annotations

import math

import pytest

from orchestration.experiment import MethodEntry, RollbackModel, SteadyStateModel
from orchestration.verdict import evaluate, rounds_of, timeline, windows

SECONDS = 2  # per round


def rec(k: int, **fields):
    """Round ``k``: a healthy final round unless ``fields`` say otherwise."""
    base = {"round": k, "start_slot": SECONDS * k, "stop_slot": SECONDS * (k + 1),
            "emulated_seconds": SECONDS, "phase": "final", "qber_z": 0.01,
            "key_bits_raw": 1000, "qber_x": 0.3, "x_bits": 500, "announced": 4000,
            "secure_bits": 100, "aborted": False, "abort_reason": None}
    return {**base, **fields}


def probes(*items):
    return SteadyStateModel.model_validate({"title": "t", "probes": list(items)})


def fault(at, name="f", duration=None, type_="loss", target="link/bob-charles", params=None):
    entry = {"at": at, "name": name,
             "fault": {"type": type_, "target": target,
                       "params": {"extra_db": 3} if params is None else params}}
    if duration is not None:
        entry["duration"] = duration
    return MethodEntry.model_validate(entry)


def action(at, name, type_="clear_faults", target=None, params=None):
    return MethodEntry.model_validate({"at": at, "name": name, "action": {
        "type": type_, "target": target, "params": params or {}}})


def verdict(steady, records, method=(), rollbacks=(), end=None, **kwargs):
    end = SECONDS * len(records) if end is None else end
    kwargs.setdefault("mismatched", {})
    return evaluate(steady, list(method), list(rollbacks), records, 1.0, end, frame_bits=0,
                    **kwargs)


def result(v, probe, phase, segment=None):
    p = next(p for p in v.probes if p.name == probe)
    return next(r for r in p.results if r.phase == phase
                and (segment is None or r.segment == segment))


QBER = {"name": "qz", "metric": "qber_z", "tolerance": [0, 0.03]}


def test_without_faults_the_whole_run_is_the_baseline_and_the_other_phases_do_not_apply():
    v = verdict(probes(QBER), [rec(k) for k in range(3)])
    before = result(v, "qz", "before")
    assert before.status == "held" and before.windows[0].rounds == [0, 1, 2]
    assert before.windows[0].value == pytest.approx(0.01)
    assert result(v, "qz", "during").status == "not applicable"
    assert result(v, "qz", "after").status == "not applicable"
    assert v.deviated is False and v.deviations == []


def test_a_window_outside_the_tolerance_deviates_saying_by_how_much():
    records = [rec(k) for k in range(5)]
    records[3] = rec(3, qber_z=0.07)
    v = verdict(probes({**QBER, "window": "4s"}), records)
    r = result(v, "qz", "before")
    assert [(w.start_s, w.end_s) for w in r.windows] == [(0, 4), (4, 8), (8, 10)]
    assert [w.holds for w in r.windows] == [True, False, True]
    assert r.status == "deviated" and v.deviated
    (d,) = v.deviations
    assert (d.start_s, d.end_s) == (4, 8)  # rounds 2 and 3, [4, 8)
    assert d.value == pytest.approx(0.04) and d.by == pytest.approx(0.01)
    assert "qz (qber_z) before" in d.message and "above the max 0.03" in d.message


def test_a_window_shorter_than_a_round_measures_the_rounds_it_overlaps():
    got = windows(rounds_of([rec(0), rec(1)], 1.0), 1)
    assert [(a, b, [r.index for r in rs]) for a, b, rs in got] == [
        (0, 1, [0]), (1, 2, [0]), (2, 3, [1]), (3, 4, [1])]


def test_qber_z_is_taken_from_reconciled_rounds_only_and_weighted_by_their_key_bits():
    records = [rec(0, qber_z=0.02, key_bits_raw=3000), rec(1, qber_z=0.06, key_bits_raw=1000),
               rec(2, phase="precheck", qber_z=0.5, aborted=True)]
    r = result(verdict(probes(QBER), records), "qz", "before")
    assert r.windows[0].value == pytest.approx((0.02 * 3000 + 0.06 * 1000) / 4000)
    only_prechecks = [rec(k, phase="precheck", qber_z=None, aborted=True) for k in range(2)]
    v = verdict(probes(QBER), only_prechecks)
    assert result(v, "qz", "before").status == "no data" and v.deviated


def test_phases_before_during_and_after_a_fault_hold_their_rounds():
    records = [rec(k) for k in range(6)]  # [0, 12) s
    v = verdict(probes(QBER), records, [fault(5, duration=2)])  # [5, 7): rounds 2 and 3
    assert result(v, "qz", "before").windows[0].rounds == [0, 1]
    assert result(v, "qz", "during", "f").windows[0].rounds == [2, 3]
    assert result(v, "qz", "after").windows[0].rounds == [4, 5]


def test_a_deviation_during_a_fault_counts_only_for_probes_that_must_hold_during_it():
    records = [rec(0), rec(1, qber_z=0.2), rec(2)]
    method = [fault(2, duration=2)]
    strict = verdict(probes(QBER), records, method)
    assert result(strict, "qz", "during").status == "deviated" and strict.deviated
    assert strict.deviations[0].segment == "f" and "during f" in strict.deviations[0].message
    lenient = verdict(probes({**QBER, "phases": ["before", "after"]}), records, method)
    assert not lenient.deviated
    assert {r.phase for r in lenient.probes[0].results} == {"before", "after"}


def test_a_phase_without_a_round_is_no_data_and_deviates_only_where_the_probe_must_hold():
    records = [rec(k) for k in range(3)]
    v = verdict(probes(QBER), records, [fault(1, duration=2)])  # no round ends by 1 s
    assert result(v, "qz", "before").status == "no data" and v.deviated
    assert "before: no data" in v.deviations[0].message
    v = verdict(probes({**QBER, "phases": ["during", "after"]}), records, [fault(1, duration=2)])
    assert not v.deviated
    at_zero = verdict(probes(QBER), records, [fault(0, duration=2)])
    assert result(at_zero, "qz", "before").status == "not applicable" and not at_zero.deviated


def test_a_fault_until_the_end_leaves_no_after_phase_and_a_clear_faults_ends_it():
    records = [rec(k) for k in range(4)]
    v = verdict(probes(QBER), records, [fault(2)])
    assert result(v, "qz", "after").status == "not applicable"
    (span,) = v.timeline
    assert (span.start_s, span.end_s, span.ended_by) == (2, 8, "run end")
    v = verdict(probes(QBER), records, [fault(2), action(4, "clear")])
    f, a = v.timeline
    assert (f.end_s, f.ended_by) == (4, "action clear") and (a.kind, a.start_s) == ("action", 4)
    assert result(v, "qz", "after").windows[0].rounds == [2, 3]


def test_the_timeline_is_in_time_order_clipped_to_the_run_and_marks_what_it_never_reached():
    spans = timeline([fault(3, "late", duration=100), fault(1, "early", duration=1,
                                                           target="link/alice-charles"),
                      fault(50, "never", target="link/alice-charles")], 1.0, 0, 10)
    assert [(s.name, s.start_s, s.end_s, s.reached) for s in spans] == [
        ("early", 1, 2, True), ("late", 3, 10, True), ("never", 10, 10, False)]


def test_an_action_at_the_same_time_ends_a_fault_only_when_it_comes_later_in_the_file():
    before = timeline([action(2, "clear"), fault(2, "f")], 1.0, 0, 10)
    after = timeline([fault(2, "f"), action(2, "clear")], 1.0, 0, 10)
    assert next(s for s in before if s.name == "f").end_s == 10
    assert next(s for s in after if s.name == "f").end_s == 2


def test_rates_and_counts_from_the_records():
    records = [rec(0, secure_bits=300, announced=10), rec(1, secure_bits=0, announced=30,
                                                           aborted=True,
                                                           abort_reason="too few counts: 5"),
               rec(2, aborted=True, abort_reason="QBER_Z 0.2 above threshold 0.11",
                   secure_bits=0, announced=0)]
    v = verdict(probes({"name": "skr", "metric": "secure_key_rate_bps", "tolerance": {"min": 60}},
                       {"name": "bsm", "metric": "bsm_rate_hz", "tolerance": {"min": 7}},
                       {"name": "ab", "metric": "aborted_rounds", "tolerance": {"max": 1}},
                       {"name": "few", "metric": "abort_reason", "reason": "Too few counts",
                        "tolerance": 1}), records)
    got = {p.name: (p.results[0].windows[0].value, p.results[0].status) for p in v.probes}
    assert got == {"skr": (50.0, "deviated"), "bsm": (pytest.approx(40 / 6), "deviated"),
                   "ab": (2.0, "deviated"), "few": (1.0, "held")}


def test_key_mismatches_count_rounds_whose_stored_keys_differ():
    probe = probes({"name": "km", "metric": "key_mismatches", "tolerance": 0})
    records = [rec(k) for k in range(3)]
    assert not verdict(probe, records, mismatched={0: False}).deviated
    v = verdict(probe, records, mismatched={1: True})
    assert v.probes[0].results[0].windows[0].value == 1 and v.deviated
    unread = verdict(probe, records, mismatched=None)
    assert unread.probes[0].results[0].status == "no data" and unread.deviated


def test_keys_from_attacked_rounds_count_key_bits_of_rounds_overlapping_an_attack():
    probe = probes({"name": "atk", "metric": "keys_from_attacked_rounds", "tolerance": 0})
    records = [rec(k, secure_bits=10 * (k + 1)) for k in range(4)]
    attack = fault(3, "eve", duration=2, type_="intercept_resend", params={"fraction": 0.5})
    v = verdict(probe, records, [attack])
    during = result(v, "atk", "during", "eve")
    assert during.windows[0].value == 20 + 30 and during.status == "deviated"
    assert result(v, "atk", "before").windows[0].value == 0  # a loss is no attack
    relay = fault(3, "charles", duration=2, type_="malicious_relay", target="relay",
                  params={"mode": "fake_announcements"})
    assert result(verdict(probe, records, [relay]), "atk", "during").windows[0].value == 50
    assert not verdict(probe, records, [fault(3, duration=2)]).deviated


def test_time_to_recover_is_the_time_from_a_faults_end_to_the_first_healthy_round():
    ttr = {"name": "ttr", "metric": "time_to_recover_s", "tolerance": {"max": 1}}
    records = [rec(0), rec(1, qber_z=0.2), rec(2, qber_z=0.2), rec(3, qber_z=0.2), rec(4)]
    v = verdict(probes(ttr, {**QBER, "phases": ["before", "after"]}), records,
                [fault(2, duration=3)])  # ends at 5 s; [6, 8) is bad, [8, 10) healthy
    r = result(v, "ttr", "after")
    (w,) = r.windows
    assert (w.value, w.start_s, w.end_s, w.rounds) == (3.0, 5.0, 8.0, [4])
    assert r.status == "deviated" and w.by == pytest.approx(2.0)
    assert result(v, "ttr", "before").status == "not applicable"
    never = verdict(probes(ttr, QBER), records[:4], [fault(2, duration=3)])
    assert result(never, "ttr", "after").status == "no data" and never.deviated
    assert "did not recover" in result(never, "ttr", "after").note
    # without other probes that must hold after: the first round not aborted
    alone = verdict(probes({**ttr, "tolerance": {"max": 0}}),
                    [rec(0), rec(1), rec(2, aborted=True), rec(3)], [fault(1, duration=3)])
    assert result(alone, "ttr", "after").windows[0].value == 2.0  # ends 4 s; round 3 at 6 s


def test_run_totals_measure_only_a_window_that_holds_the_whole_run():
    records = [rec(k) for k in range(3)]
    whole = probes({"name": "cr", "metric": "coincidence_rate_hz", "tolerance": {"min": 1}},
                   {"name": "auth", "metric": "auth_failures", "tolerance": 0})
    v = verdict(whole, records, totals={"coincidences": 600.0, "auth_failures": 2.0})
    assert [(p.results[0].windows[0].value, p.results[0].status) for p in v.probes] == [
        (100.0, "held"), (2.0, "deviated")]
    part = probes({"name": "cr", "metric": "coincidence_rate_hz", "tolerance": {"min": 1},
                   "window": "2s"})
    r = verdict(part, records, totals={"coincidences": 600.0}).probes[0].results[0]
    assert r.status == "not measured" and "run total" in r.windows[0].note


def test_calibration_actions_count_what_the_loops_did_in_the_window():
    records = [rec(0), rec(1, calibration_actions=["started"]),
               rec(2, calibration_actions=["moved", "converged"]), rec(3)]
    v = verdict(probes({"name": "cal", "metric": "calibration_actions",
                        "tolerance": {"max": 1}, "window": "4s"}), records)  # two rounds
    assert [(w.value, w.holds) for w in v.probes[0].results[0].windows] == [
        (1.0, True), (2.0, False)]
    none = verdict(probes({"name": "cal", "metric": "calibration_actions",
                           "tolerance": {"min": 1}}), [rec(0), rec(1)])  # no loop ran
    assert none.probes[0].results[0].windows[0].value == 0.0 and none.deviated


def test_visibility_is_the_lower_bound_of_the_pooled_phase_error_bound():
    """1 − 2·e11_x_upper pooled over the window's rounds, weighted by their single-photon
    pairs (``nodes.link_estimates.visibility_lower``); a round without a bound does not count."""
    records = [rec(0, e11_x_upper=0.05, s11_z_lower=300.0),
               rec(1, e11_x_upper=0.15, s11_z_lower=100.0), rec(2, aborted=True)]
    v = verdict(probes({"name": "vis", "metric": "visibility", "tolerance": {"min": 0.85}}),
                records)
    r = v.probes[0].results[0]
    assert r.windows[0].value == pytest.approx(1 - 2 * (0.05 * 300 + 0.15 * 100) / 400)
    assert r.status == "held"
    none = verdict(probes({"name": "vis", "metric": "visibility", "tolerance": {"min": 0.85}}),
                   [rec(0)])
    assert none.probes[0].results[0].status == "no data"


def test_the_dark_count_rate_pools_the_vacuum_class_of_the_window():
    """All four detectors' background clicks per emulated second: p̂ from the pooled
    vacuum–vacuum detections and pairs (Y00 = 4p²(1−p)²), times 4 and the clock rate (the
    records' slots per emulated second: 1 Hz here)."""
    p = 1e-3
    y00 = 4 * p * p * (1 - p) ** 2
    # unequal per-round yields: the pool is 4·Y00·10⁹ detections in 4·10⁹ pairs
    records = [rec(0, vacuum_pairs=1e9, vacuum_detections=2 * y00 * 1e9),
               rec(1, vacuum_pairs=3e9, vacuum_detections=2 * y00 * 1e9), rec(2)]
    v = verdict(probes({"name": "dc", "metric": "dark_count_rate_hz",
                        "tolerance": {"max": 0.01}}), records)
    r = v.probes[0].results[0]
    assert r.windows[0].value == pytest.approx(4 * p * 1.0, rel=1e-9)
    assert r.status == "held"
    none = verdict(probes({"name": "dc", "metric": "dark_count_rate_hz",
                           "tolerance": {"max": 0.01}}), [rec(0)])
    assert none.probes[0].results[0].status == "no data"


def test_rollbacks_run_at_the_end_and_end_the_faults_still_active():
    clear = RollbackModel.model_validate({"name": "clear", "action": {"type": "clear_faults"}})
    records = [rec(k) for k in range(4)]
    v = verdict(None, records, [fault(1, "a", duration=1), fault(2, "b",
                                                               target="link/alice-charles")],
                [clear])
    assert v.rollbacks == [{"name": "clear", "type": "clear_faults", "target": None,
                            "params": {}, "at_s": 8, "executed": True, "ended": ["b"]}]
    stopped = verdict(None, records, [fault(2, "b")], [clear], stopped_at_slot=6)
    assert stopped.rollbacks[0]["executed"] is False and stopped.rollbacks[0]["ended"] == []


def test_no_hypothesis_no_deviation_and_the_verdict_is_plain_json():
    import json

    v = verdict(None, [rec(0)], [fault(0.5, duration=1)])
    assert v.deviated is False and v.probes == []
    data = v.to_json()
    assert json.loads(json.dumps(data)) == data
    # [0.5, 1.5) s rounds to slots [0, 2) (to the nearest slot, half to even, as the emulator)
    assert (data["timeline"][0]["at_s"], data["timeline"][0]["end_s"]) == (0.5, 2.0)
    assert not math.isinf(data["run_end_s"])


def test_while_a_run_goes_only_deviations_no_later_round_can_undo_are_settled():
    from orchestration.verdict import settled_deviations

    bad = [rec(0), rec(1, qber_z=0.2)]
    windowed = verdict(probes({**QBER, "window": "2s"}), bad, end=20)
    assert [d.start_s for d in settled_deviations(windowed, 4)] == [2.0]  # a full window
    whole = verdict(probes(QBER), bad, end=20)  # the whole phase: open until the run's end
    assert whole.deviated and settled_deviations(whole, 4) == []
    assert len(settled_deviations(verdict(probes(QBER), bad), 4)) == 1  # the run ended
    partial = verdict(probes({**QBER, "window": "3s"}), bad, end=20)  # [3, 4) is not full yet
    assert [d.start_s for d in settled_deviations(partial, 4)] == [0.0]
    missing = verdict(probes(QBER), [rec(0, phase="precheck", aborted=True)], end=20)
    assert missing.deviated and settled_deviations(missing, 2) == []  # judged at the end


def test_what_a_run_cannot_measure_is_said_before_it_starts():
    from orchestration.verdict import unmeasured

    (cal, cr, cr_short, qz) = probes(
        {"name": "cal", "metric": "calibration_actions", "tolerance": {"max": 3}},
        {"name": "cr", "metric": "coincidence_rate_hz", "tolerance": {"min": 1}},
        {"name": "crs", "metric": "coincidence_rate_hz", "tolerance": {"min": 1}, "window": 1},
        QBER).probes
    assert unmeasured(cal, True, 10.0) is None  # every metric but the run totals has a source
    assert unmeasured(cr, False, 10.0) is None and unmeasured(qz, True, 10.0) is None
    assert "run total only" in unmeasured(cr, True, 10.0)
    assert "run total only" in unmeasured(cr_short, False, 10.0)


# --- faults where the emulator applies them: whole settings frames, in slots ------------------

GHZ, FRAME_BITS, ROUND_SLOTS = 1e9, 20, 3000 << 20  # the quick-start link: 3.145728 s rounds


def slot_rec(k: int, **fields):
    """Round ``k`` of the quick-start link (``ROUND_SLOTS`` slots at 1 GHz), healthy."""
    return rec(k, start_slot=k * ROUND_SLOTS, stop_slot=(k + 1) * ROUND_SLOTS,
               emulated_seconds=ROUND_SLOTS / GHZ, **fields)


def ghz_verdict(steady, records, method, **kwargs):
    kwargs.setdefault("mismatched", {})
    return evaluate(steady, method, [], records, GHZ, len(records) * ROUND_SLOTS,
                    frame_bits=FRAME_BITS, **kwargs)


def test_a_fault_inside_one_frame_covers_no_frame_and_has_no_during_phase():
    """A 0.2 ms cut at 3.2 s lies between two frame starts: the emulator cuts no frame
    (``frames_of`` gives an empty range), so the verdict has no phase for it."""
    blip = fault("3.2s", "blip", duration="0.2ms", type_="fiber_cut", params={})
    v = ghz_verdict(probes(QBER), [slot_rec(k) for k in range(3)], [blip])
    assert {r.segment for r in v.probes[0].results if r.status != "not applicable"} == {
        "before"}
    assert result(v, "qz", "before").windows[0].rounds == [0, 1, 2]
    (span,) = v.timeline
    assert span.start_slot == span.stop_slot == 3052 << FRAME_BITS


def test_a_fault_one_ulp_below_a_round_boundary_starts_with_the_next_round():
    """'47185.92ms' parses to 47.185919999999996 s, one ulp below the start of round 15: the
    emulator rounds it to the nearest slot, so the fault starts with round 15's first frame."""
    late = fault("47185.92ms", "late", duration="2s")
    assert late.at < 15 * ROUND_SLOTS / GHZ
    v = ghz_verdict(probes(QBER), [slot_rec(k) for k in range(20)], [late])
    assert result(v, "qz", "before").windows[0].rounds == list(range(15))
    assert result(v, "qz", "during", "late").windows[0].rounds == [15]
    assert result(v, "qz", "after").windows[0].rounds == list(range(16, 20))
    assert not v.deviated
    assert v.timeline[0].start_slot == 15 * ROUND_SLOTS


@pytest.mark.parametrize(("at", "duration"), [
    ("3.2s", "0.2ms"), ("47185.92ms", "2s"), ("1.0000005s", "1.0000015s"), ("0s", "1ms"),
    ("2.5s", None), ("6.291456s", "3.145728s")])
def test_the_verdict_places_each_fault_on_the_frames_the_emulator_applies_it_to(at, duration):
    from orchestration.config import DEFAULT_SCENARIO, build_fault_schedule, load_scenario

    entry = {"at": at, "name": "f", "fault": {"type": "loss", "target": "link/bob-charles",
                                              "params": {"extra_db": 3}}}
    if duration is not None:
        entry["duration"] = duration
    sc = load_scenario(DEFAULT_SCENARIO, {"runtime": {"rounds": 20}})
    method = [MethodEntry.model_validate(entry)]
    (emulated,) = build_fault_schedule(sc.model_copy(update={"method": method}), 0).faults
    first, stop = build_fault_schedule(sc.model_copy(update={"method": method}), 0).frames_of(
        emulated, sc.clock_rate_hz, sc.frame_bits)
    end = sc.run_rounds * sc.round_slots
    (span,) = timeline(method, sc.clock_rate_hz, sc.frame_bits, end)
    assert (span.start_slot, span.stop_slot) == (first << sc.frame_bits,
                                                 min(stop << sc.frame_bits, end))


def test_a_value_that_is_not_a_number_never_holds():
    v = verdict(probes({"name": "qx", "metric": "qber_x", "tolerance": [0.25, 0.35]}),
                [rec(0, qber_x=math.nan), rec(1)], mismatched={})
    r = result(v, "qx", "before")
    assert r.status == "deviated" and v.deviated
    assert r.windows[0].value is None and "not a finite number" in v.deviations[0].message
    window = verdict(probes({"name": "qx", "metric": "qber_x", "tolerance": [0.25, 0.35],
                             "window": "2s"}), [rec(0, qber_x=math.nan), rec(1)])
    assert [w.holds for w in result(window, "qx", "before").windows] == [False, True]


def test_a_missing_run_total_is_no_data_and_fails_where_the_probe_must_hold():
    records = [rec(k) for k in range(3)]
    cr = probes({"name": "cr", "metric": "coincidence_rate_hz", "tolerance": {"min": 1}},
                {"name": "auth", "metric": "auth_failures", "tolerance": 0})
    v = verdict(cr, records, totals={})
    assert [p.results[0].status for p in v.probes] == ["no data", "no data"] and v.deviated
    assert "nature/metrics.json" in v.probes[0].results[0].note
    stopped = verdict(cr, records, totals={}, totals_note="the run stopped before its end")
    assert stopped.probes[0].results[0].note == "the run stopped before its end"


def test_a_stopped_run_s_timeline_ends_where_it_stopped():
    records = [rec(k) for k in range(2)]  # stopped at 4 s of a run planned to 20 s
    v = verdict(probes(QBER), records, [fault(2, "early", duration=5),
                                        fault(8, "late", target="link/alice-charles")],
                end=20, stopped_at_slot=4)
    early, late = v.timeline
    assert (early.start_s, early.end_s, early.ended_by, early.reached) == (
        2, 4, "run stopped", True)
    assert (late.start_s, late.end_s, late.ended_by, late.reached) == (4, 4, "run stopped",
                                                                       False)
    assert v.run_end_s == 4
    # the phases are the planned ones: a phase the run never reached has no data
    late_phase = result(v, "qz", "during", "late")
    assert late_phase.status == "no data" and "stopped before" in late_phase.note


def test_windows_on_a_large_run_are_found_by_bisection_and_match_a_scan():
    """20 000 rounds and 1000 faults (the size that took seconds per evaluation when every
    window scanned every round); the rounds of each window are those a scan finds."""
    from orchestration.verdict import overlapping

    n = 20_000
    records = [rec(k, qber_z=0.2 if k % 997 == 0 else 0.01) for k in range(n)]
    method = [fault(40 * j + 1, f"f{j}", duration=3) for j in range(1000)]
    v = verdict(probes({**QBER, "window": "4s"}), list(reversed(records)), method)
    during = [r for r in v.probes[0].results if r.phase == "during"]
    assert len(during) == 1000
    assert [w.rounds for w in during[0].windows] == [[0, 1]]
    assert during[5].windows[0].rounds == [100, 101]
    assert [w.rounds for w in during[999].windows] == [[19_980, 19_981]]  # [39961, 39964)
    assert [d.segment for d in v.deviations] == ["before"] + [  # no round ends by 1 s
        f"f{j}" for j in range(1000) if any(k % 997 == 0 for k in range(20 * j, 20 * j + 2))]
    after = result(v, "qz", "after")  # from 39964 s: 4 s windows
    assert [w.rounds for w in after.windows] == [[19_982, 19_983], [19_984, 19_985],
                                                 [19_986, 19_987], [19_988, 19_989],
                                                 [19_990, 19_991], [19_992, 19_993],
                                                 [19_994, 19_995], [19_996, 19_997],
                                                 [19_998, 19_999]]
    rounds = rounds_of(records, 1.0)
    for a, b in [(0, 1), (1, 3), (3, 4), (39_999, 40_000), (7, 7), (40_000, 50_000)]:
        scan = [r.index for r in rounds if r.start_slot < b and r.stop_slot > a]
        assert [r.index for r in overlapping(rounds, a, b)] == scan


def test_time_to_recover_during_a_fault_is_how_long_the_link_took_to_heal_inside_it():
    # the calibration loops' measure: a fault from 2 s to the run's end (rounds of 2 s); rounds
    # 1 and 2 are bad, 3 and 4 healthy again: recovered 4 s after the fault's start (round 3)
    ttr = {"name": "ttr", "metric": "time_to_recover_s", "tolerance": {"max": 3},
           "phases": ["during"]}
    qz = {**QBER, "phases": ["before", "after"]}  # "after" defines a healthy round
    records = [rec(0), rec(1, qber_z=0.2), rec(2, qber_z=0.2), rec(3), rec(4)]
    v = verdict(probes(ttr, qz), records, [fault(2)])
    r = result(v, "ttr", "during")
    (w,) = r.windows
    assert (w.value, w.rounds, w.start_s, w.end_s) == (4.0, [3], 2.0, 6.0)
    assert r.status == "deviated" and w.by == pytest.approx(1.0)
    # a relapse counts: healthy, bad, healthy is recovered only from the last healthy stretch
    relapse = [rec(0), rec(1), rec(2, qber_z=0.2), rec(3), rec(4)]
    w = result(verdict(probes(ttr, qz), relapse, [fault(2)]), "ttr", "during").windows[0]
    assert (w.value, w.rounds) == (4.0, [3])
    # never healthy again before the fault ends: no data, which fails the hypothesis
    never = verdict(probes(ttr, qz), records[:3], [fault(2)])
    assert result(never, "ttr", "during").status == "no data" and never.deviated
    # a probe that does not list "during" keeps the old meaning there: not applicable
    default = verdict(probes({**ttr, "phases": ["before", "during", "after"]}, qz), records,
                      [fault(2)])
    assert result(default, "ttr", "during").status != "not applicable"
    implicit = {k: v for k, v in ttr.items() if k != "phases"}
    assert result(verdict(probes(implicit, qz), records, [fault(2)]), "ttr",
                  "during").status == "not applicable"


def test_recovery_during_a_fault_stops_where_the_next_fault_starts():
    # rotation from 2 s; a second fault from 8 s makes rounds 4.. bad again: the first fault's
    # recovery is judged on its rounds before 8 s only (round 2 at 4 s: 2 s after its start)
    ttr = {"name": "ttr", "metric": "time_to_recover_s", "tolerance": {"max": 3},
           "phases": ["during"]}
    qz = {**QBER, "phases": ["before", "after"]}
    records = [rec(0), rec(1, qber_z=0.2), rec(2), rec(3), rec(4, qber_z=0.2), rec(5)]
    v = verdict(probes(ttr, qz), records, [fault(2, "first"), fault(8, "second")])
    firsts = [r for p in v.probes if p.name == "ttr" for r in p.results
              if r.segment == "first"]
    (w,) = firsts[0].windows
    assert (w.value, w.rounds) == (2.0, [2])


def test_qber_z_of_a_final_round_is_the_corrected_count_not_the_prior():
    # a final estimate that aborted keeps the pre-check's qber_z (the prior) in its record
    records = [rec(0, qber_z=0.01, corrected_bits=50, key_bits_raw=1000)]
    v = verdict(probes({**QBER, "tolerance": [0, 0.03]}), records)
    assert v.probes[0].results[0].windows[0].value == pytest.approx(0.05)
