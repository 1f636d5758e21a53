"""The users' calibration loops (nodes.calibration) against the exact model of the link: a
rotated arm or a clock step raises the error rates, the search finds the actuator settings that
undo it, and a healthy link is left alone.

Each round's measured error rates are drawn binomially around the exact rates of the
signal-signal class (channel.analytic) with the sifted counts of a quick-start round (1.1·10⁶
key bits, 5·10⁵ X bits); results reach the loops one round late, as the users' pipelining has
it. The seeds are fixed, so each run is reproducible; the claims are ones a broken search would
fail (the setting found must undo the fault to within the smallest step)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from channel.analytic import exact_frame_statistics
from channel.clock import Clock
from channel.controls import SourceControls
from channel.fiber import Fiber, su2
from channel.link import Link
from channel.settings import three_intensity_plan
from channel.source import Source
from nodes.calibration import Calibrator, LoopSettings, Measurement
from nodes.relay_software import BELL_OF_PATTERN

PLAN = three_intensity_plan()
N_Z, N_X = 1_100_000, 500_000
ALIGNED = Link(Source(PLAN), Source(PLAN), Fiber(25), Fiber(25))


def _rates(link: Link, a: SourceControls, b: SourceControls) -> tuple[float, float]:
    fixed = replace(link, controls_a=a, controls_b=b)
    z, x = (exact_frame_statistics(fixed, PLAN, PLAN, 0, basis, 0, 0,
                                   bell_of_pattern=BELL_OF_PATTERN) for basis in (0, 1))
    return z.error_rate, x.error_rate


def _drive(cal: Calibrator, link_of_round, rounds: int, seed: int = 0):
    """Run ``rounds`` rounds; each result is read after the next round is emitted. Returns the
    events and the exact (QBER_Z, QBER_X) of every round's setting."""
    rng = np.random.default_rng(seed)
    events, exact, waiting = [], [], []
    for r in range(rounds):
        a, b = cal.settings_for(r)
        ez, ex = _rates(link_of_round(r), a, b)
        exact.append((ez, ex))
        waiting.append((r, Measurement(rng.binomial(N_X, ex) / N_X, N_X,
                                       rng.binomial(N_Z, ez) / N_Z, N_Z)))
        if len(waiting) > 1:
            events += cal.observe(*waiting.pop(0))
    return events, exact


def _faulty(link: Link, from_round: int = 2):
    return lambda r: link if r >= from_round else ALIGNED


def test_a_healthy_link_never_starts_a_search():
    # trigger: 6 σ and 0.002 above the reference; with 200 noisy rounds a false start would
    # need a 6 σ excursion (P ≈ 2·10⁻⁹ a round)
    cal = Calibrator(LoopSettings())
    events, exact = _drive(cal, lambda r: ALIGNED, 200, seed=3)
    assert events == []
    a, b = cal.settings_for(10_000)
    assert a.is_identity and b.is_identity


@pytest.mark.parametrize("arm, axis", [("b", (0, 1, 0)), ("a", (0, 0, 1)), ("b", (1, 0, 0))])
def test_a_rotated_arm_is_found_and_undone(arm, axis):
    fault = su2(np.array(axis, float), 0.4)
    link = replace(ALIGNED, **{f"fiber_{arm}": Fiber(25, rotation=fault)})
    cal = Calibrator(LoopSettings(clock=False))
    events, exact = _drive(cal, _faulty(link), 80)
    actions = [e.action for e in events]
    assert actions[0] == "started" and "converged" in actions, events
    # the converged setting undoes the rotation to within the smallest step (0.05 rad): the
    # exact error rates are back within 1.5·10⁻³ of the aligned link's (sin²(0.05/2) ≈ 6·10⁻⁴
    # for the Z basis; 2·10⁻³ would be a residual turn of ~0.09 rad)
    ez0, ex0 = _rates(ALIGNED, SourceControls(), SourceControls())
    ez, ex = _rates(link, *cal.controls(cal.base))
    assert ez - ez0 < 1.5e-3 and ex - ex0 < 1.5e-3
    broken = _rates(link, SourceControls(), SourceControls())
    assert max(broken[0] - ez0, broken[1] - ex0) > 0.01  # the fault was worth correcting
    converged = next(e.round for e in events if e.action == "converged")
    assert converged < 60


def test_a_clock_step_is_found_and_undone_by_bobs_delay():
    link = replace(ALIGNED, clock_b=Clock(offset_ps=150.0))
    cal = Calibrator(LoopSettings(polarization=False))
    events, _ = _drive(cal, _faulty(link), 60)
    assert [e.action for e in events][0] == "started"
    assert any(e.action == "converged" for e in events)
    _, bob = cal.controls(cal.base)
    assert bob.delay_ps == pytest.approx(-150.0, abs=20.0)  # two smallest steps (10 ps)
    assert all(e.loop in ("clock", "search") for e in events)


def test_switched_off_loops_have_no_actuators():
    assert len(Calibrator(LoopSettings()).coords) == 7  # 3 + 3 rotations, Bob's delay
    assert [c.loop for c in Calibrator(LoopSettings(polarization=False)).coords] == ["clock"]
    assert {c.loop for c in Calibrator(LoopSettings(clock=False)).coords} == {"polarization"}
    assert not LoopSettings(polarization=False, clock=False).enabled


def test_each_result_is_judged_against_the_setting_its_round_was_sent_with():
    cal = Calibrator(LoopSettings(polarization=False))
    m = Measurement(0.25, N_X, 0.003, N_Z)
    for r in range(3):
        cal.settings_for(r)
    assert cal.observe(0, m) == []  # the reference
    worse = Measurement(0.35, N_X, 0.003, N_Z)
    assert [e.action for e in cal.observe(1, worse)] == ["started"]
    # round 2 was emitted before the search started: it carries the base, not a trial
    assert cal.planned[2][1] is None
    trial = cal.settings_for(3)[1]
    assert trial.delay_ps == 40.0  # the first direction: + one step of Bob's delay
    assert cal.observe(99, m) == []  # a round never emitted teaches nothing
    assert cal.observe(3, None) == []  # a round without error rates teaches nothing
    assert cal.search_rounds == 0
    cal.settings_for(4)
    moved = cal.observe(4, Measurement(0.30, N_X, 0.003, N_Z))  # -40 ps: better
    assert [e.action for e in moved] == ["moved"] and cal.base[0] == -40.0


def test_a_calibrate_action_starts_a_search_on_a_healthy_link():
    cal = Calibrator(LoopSettings(clock=False))
    m = Measurement(0.25, N_X, 0.003, N_Z)
    for r in range(4):
        cal.settings_for(r)
    assert cal.observe(0, m) == [] and cal.observe(1, m) == []
    cal.force()
    started = cal.observe(2, m)
    assert [(e.action, e.detail) for e in started] == [("started", "a calibrate action")]
    assert cal.settings_for(4) != cal.settings_for(3)  # round 4 tries a direction


def test_a_round_that_was_not_reconciled_has_no_qber_z():
    # a pre-check abort's report holds the prior it assumed as qber_z: never a measurement
    report = {"x_bits": 1000, "qber_x": 0.3, "key_bits_raw": 5000, "qber_z": 0.01}
    m = Measurement.from_report(report)
    assert m is not None and m.qber_z is None
    m = Measurement.from_report({**report, "corrected_bits": 25, "phase": "final"})
    assert m is not None and m.qber_z == pytest.approx(25 / 5000) and m.n_z == 5000
    # Bob's reconciliation stage holds the count, Alice's not: before the final estimate it
    # would set the two users' searches apart, so it does not count (verification failed)
    assert Measurement.from_report({**report, "corrected_bits": 25,
                                    "phase": "precheck"}).qber_z is None
    # counts no round can have (the peer's word) give no QBER_Z, never an error
    assert Measurement.from_report({**report, "corrected_bits": 10**9,
                                    "phase": "final"}).qber_z is None
    assert Measurement.from_report({**report, "qber_x": 7.0}) is None
    assert Measurement.from_report({"x_bits": 0, "qber_x": None}) is None


def test_the_cost_compares_z_only_when_both_rounds_measured_it():
    from nodes.calibration import rise
    a = Measurement(0.30, 1000, 0.05, 1000)
    b = Measurement(0.30, 1000)
    assert rise(a, b)[0] == pytest.approx(0.0)
    assert rise(a, Measurement(0.30, 1000, 0.01, 1000))[0] == pytest.approx(0.04)


@pytest.mark.parametrize("field, value", [("polarization_step_rad", 0.0),
                                          ("delay_min_step_ps", 100.0),
                                          ("max_search_rounds", 0),
                                          ("trigger_min_rise", -1.0)])
def test_settings_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        LoopSettings(**{field: value})


def test_a_rise_of_qber_x_alone_is_searched_at_the_clock_first():
    ref = Measurement(0.25, N_X, 0.003, N_Z)
    for z, first_loop in ((0.003, "clock"), (0.02, "polarization")):
        cal = Calibrator(LoopSettings())
        for r in range(3):
            cal.settings_for(r)
        cal.observe(0, ref)
        assert [e.action for e in cal.observe(1, Measurement(0.35, N_X, z, N_Z))] == ["started"]
        cal.settings_for(3)
        _, tried, _ = cal.planned[3]
        assert cal.coords[tried // 2].loop == first_loop
