"""nodes.relay_timing: the click-time offset and jitter Charles reads from the records, against the
emulator's timing model, written here from the physics (docs/physics.md §5, §9):

a click of slot s is tagged at s·slot + δt/2 + Δ + σ_k·z (δt: Bob's arrival offset behind
Alice's, the relay reads the mid-point; Δ: the relay clock's error; σ_k: detector k's jitter in
quadrature with the relay clock's and half the sources' squared jitters), and the relay labels it
with the slot of its own clock, s + round(Δ / slot). On the relay's grid a click's residual is
therefore N(δt/2 + Δ − round(Δ/slot)·slot, σ_k²), rounded to a whole picosecond (variance
1/12 ps² more). Per detector, the mean residual is tested with its z-score and n·(rms)²/σ² as a
χ² with n − 1 degrees of freedom, each at the false-alarm probability ``tests.stats.ALPHA`` split
over every assertion of the test (``z_bound``, ``scipy.stats.chi2``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from channel.clock import Clock
from channel.fiber import Fiber
from channel.impairments import FaultSchedule
from channel.link import Link
from channel.relay import DETECTOR_NAMES, NO_CLICK_TIME, DetectionRecords, Detector, RelayOptics
from channel.samplers import sample
from channel.source import Source
from nodes.metrics import NodeMetrics, charles_round_observations, parse_exposition
from nodes.relay_timing import TimingAccumulator
from tests.channel.test_impairments import FB, PLAN, fault, users
from tests.stats import ALPHA, z_bound

SLOT_PS = 1000.0  # 1 GHz
JITTER_PS = (20.0, 35.0, 50.0, 80.0)  # per detector, cH cV dH dV
FRAMES = 6


def _link(bob_offset_ps: float, relay_offset_ps: float | None, relay_jitter_ps: float) -> Link:
    entries = []
    if relay_offset_ps is not None:
        entries.append(fault(0, "late", "clock_offset", "relay", {"offset_ps": relay_offset_ps}))
    if relay_jitter_ps:
        entries.append(fault(0, "jit", "jitter", "relay", {"jitter_ps": relay_jitter_ps}))
    detectors = tuple(Detector(efficiency=0.6, dark_count_probability=1e-6, jitter_ps=j)
                      for j in JITTER_PS)
    return Link(Source(PLAN), Source(PLAN), Fiber(5.0), Fiber(5.0),
                relay=RelayOptics(detectors=detectors), clock_b=Clock(offset_ps=bob_offset_ps),
                frame_bits=FB,
                faults=FaultSchedule.from_timeline(entries, 0) if entries else None)


CASES = [  # (Bob's clock offset, relay clock offset, relay jitter), ps
    (0.0, None, 0.0),
    (30.0, 250.0, 0.0),
    (-40.0, 700.0, 40.0),  # the relay's clock past half a slot: it relabels the slots
]


@pytest.mark.parametrize("bob_ps, relay_ps, relay_jitter_ps", CASES)
def test_offset_and_jitter_per_detector_are_what_the_clocks_and_detectors_make(
        bob_ps, relay_ps, relay_jitter_ps):
    link = _link(bob_ps, relay_ps, relay_jitter_ps)
    alice, bob = users(3)
    out = sample(link, alice, bob, 0, FRAMES << FB, 11)
    acc = TimingAccumulator(SLOT_PS)
    half = len(out.records) // 2  # two batches: the sums add up
    for part in (slice(0, half), slice(half, None)):
        acc.add(DetectionRecords(out.records.slot[part], out.records.pattern[part],
                                 out.records.time_ps[part]))
    delta = relay_ps or 0.0
    expected_offset = bob_ps / 2 + delta - round(delta / SLOT_PS) * SLOT_PS
    assertions = 2 * len(DETECTOR_NAMES)
    z_max = z_bound(assertions)
    level = ALPHA / assertions
    for k, t in enumerate(acc.read()):
        assert t.detector == DETECTOR_NAMES[k]
        clicked = int((out.records.time_ps[:, k] != NO_CLICK_TIME).sum())
        assert t.clicks == clicked > 2000
        sigma = math.sqrt(JITTER_PS[k] ** 2 + relay_jitter_ps ** 2 + 1 / 12)
        z = (t.offset_ps - expected_offset) / (sigma / math.sqrt(t.clicks))
        assert abs(z) <= z_max, (t, expected_offset, z)
        chi2 = t.clicks * t.jitter_ps ** 2 / sigma ** 2
        lo, hi = stats.chi2.ppf(level / 2, t.clicks - 1), stats.chi2.isf(level / 2, t.clicks - 1)
        assert lo <= chi2 <= hi, (t, sigma)


def test_a_relay_clock_offset_moves_the_exported_offset_by_that_much():
    """The same clicks tagged 250 ps late: every detector's offset moves by exactly 250 ps and
    the jitter does not change (the residuals move, their spread does not)."""
    link = _link(0.0, None, 0.0)
    alice, bob = users(4)
    recs = sample(link, alice, bob, 0, 2 << FB, 5).records
    late = np.where(recs.time_ps != NO_CLICK_TIME, recs.time_ps + 250, NO_CLICK_TIME)
    before, after = TimingAccumulator(SLOT_PS), TimingAccumulator(SLOT_PS)
    before.add(recs)
    after.add(DetectionRecords(recs.slot, recs.pattern, late))
    for b, a in zip(before.read(), after.read(), strict=True):
        assert a.clicks == b.clicks
        assert a.offset_ps - b.offset_ps == pytest.approx(250.0, abs=1e-9)
        assert a.jitter_ps == pytest.approx(b.jitter_ps, abs=1e-6)


def test_a_fractional_slot_period_and_an_idle_detector():
    slot_ps = 1e12 / 3e8  # 3333.33… ps
    slots = np.array([10**9, 10**9 + 7], np.int64)
    times = np.full((2, 4), NO_CLICK_TIME, np.int64)
    times[:, 0] = np.rint(slots * slot_ps + np.array([100.0, 104.0])).astype(np.int64)
    times[:, 1] = np.rint(slots * slot_ps + 100.0).astype(np.int64)
    acc = TimingAccumulator(slot_ps)
    acc.add(DetectionRecords(slots, np.full(2, 0b0011, np.uint8), times))
    ch, cv, dh, _ = acc.read()
    assert ch.clicks == 2 and ch.offset_ps == pytest.approx(102.0, abs=0.6)
    assert ch.jitter_ps == pytest.approx(2.0, abs=0.6)
    assert cv.jitter_ps == pytest.approx(0.0, abs=0.6)
    assert (dh.clicks, dh.offset_ps, dh.jitter_ps) == (0, None, None)
    with pytest.raises(ValueError, match="slot_ps"):
        TimingAccumulator(0.0)


def test_charles_exports_offset_and_jitter_in_seconds_per_detector():
    acc = TimingAccumulator(SLOT_PS)
    times = np.array([[105, 95, NO_CLICK_TIME, NO_CLICK_TIME]], np.int64)
    acc.add(DetectionRecords(np.array([0], np.int64), np.array([0b0011], np.uint8), times))
    m = NodeMetrics("charles")
    m.apply(charles_round_observations(2, 1, 1, 0, 1000, 1e9, acc.read()))
    series = parse_exposition(m.exposition())
    offsets = {lab["detector"]: v for lab, v in series["mdiqkd_relay_click_offset_seconds"]}
    jitters = {lab["detector"]: v for lab, v in series["mdiqkd_relay_click_jitter_seconds"]}
    assert offsets == {"cH": 105e-12, "cV": 95e-12}  # detectors with no click: no series
    assert jitters == {"cH": 0.0, "cV": 0.0}


def test_charles_exports_the_offset_of_an_honest_round_from_the_records_he_received():
    """The default link: Bob's clock 10 ps late, no jitter: every click sits at δt/2 = 5 ps on
    Charles's grid, and that is what his endpoint says once the round is announced."""
    from tests.nodes.relay_harness import BATCHES_PER_ROUND, Relay

    relay = Relay()
    try:
        link = relay.nature.link
        assert link.clock_b.offset_ps - link.clock_a.offset_ps == 10.0
        assert not link.relay.jitters_ps.any() and link.clock_rate_hz == 1e9
        metrics = NodeMetrics("charles")
        # Charles's own context with live metrics (nature's, shared in the harness, has none)
        relay.charles.ctx = SimpleNamespace(**vars(relay.charles.ctx), metrics=metrics,
                                            observe=metrics.apply)
        relay.charles.clock_rate_hz = link.clock_rate_hz
        for i in range(BATCHES_PER_ROUND):
            relay.on_pulses(relay.parts("alice", 0, i))
            relay.on_pulses(relay.parts("bob", 0, i))
        assert relay.announced() == [0]
        series = parse_exposition(metrics.exposition())
        offsets = {lab["detector"]: v for lab, v in series["mdiqkd_relay_click_offset_seconds"]}
        jitters = {lab["detector"]: v for lab, v in series["mdiqkd_relay_click_jitter_seconds"]}
        assert offsets == dict.fromkeys(DETECTOR_NAMES, 5e-12)
        assert jitters == dict.fromkeys(DETECTOR_NAMES, 0.0)
    finally:
        relay.close()
