"""Nature runs the physics faults of the scenario it is given (channel/impairments.py), at their
emulated times, the same on every run; Charles still receives detection records only.

The sizes of the effects are held to the exact model in tests/channel/test_impairments.py; here
the path from a scenario file's ``method`` to the records nature sends is checked, with exact
assertions only (a dead detector's clicks, identical records, the windows).
"""

from __future__ import annotations

import numpy as np
import pytest

from channel.impairments import PHYSICS_FAULTS
from channel.relay import DetectionRecords
from nodes.nature import ChannelEmulator
from nodes.transport import PulseBatch, PulseLayout
from orchestration.config import (
    DEFAULT_SCENARIO,
    build_link,
    build_settings,
    load_scenario,
)
from orchestration.experiment import FAULT_TYPES, IMPLEMENTED_FAULTS

FB = 16
FRAME_S = (1 << FB) / 1e9
ROUND_FRAMES, BATCH_FRAMES, ROUNDS = 8, 4, 3


def scenario(method: list[dict]):
    return load_scenario(DEFAULT_SCENARIO, {"frame_bits": FB, "round_frames": ROUND_FRAMES,
                                            "batch_frames": BATCH_FRAMES, "rounds": ROUNDS,
                                            "method": method})


def run_nature(s, seed: int = 7) -> list[DetectionRecords]:
    """Every batch of every round through a fresh emulator, as the users push them; the records
    nature would send Charles, per pair of batches."""
    users = {u: build_settings(s, u) for u in ("alice", "bob")}
    layout = PulseLayout(ROUNDS, ROUND_FRAMES, BATCH_FRAMES, FB,
                         {u: g.plan.n_combos for u, g in users.items()})
    nature = ChannelEmulator(build_link(s), {u: g.plan for u, g in users.items()}, seed, layout)
    out = []
    for r in range(ROUNDS):
        for first in range(r * ROUND_FRAMES, (r + 1) * ROUND_FRAMES, BATCH_FRAMES):
            for u, gen in users.items():
                counts = np.array([gen.frame_counts(f) for f in range(first, first + BATCH_FRAMES)])
                last = first + BATCH_FRAMES == (r + 1) * ROUND_FRAMES
                header, body = PulseBatch(u, r, first, counts, gen.key, last).to_parts()
                ready = nature.accept([header, body.tobytes()])
            assert ready is not None
            out.append(nature.measure_ready(ready))
    return out


def at(frames: int) -> float:
    return frames * FRAME_S


def test_a_dead_detector_is_dead_in_its_window_only():
    s = scenario([
        {"at": at(6), "name": "dead", "duration": at(7),
         "fault": {"type": "detector_dead", "target": "relay", "params": {"detector": "cH"}}}])
    records = DetectionRecords.concatenate(run_nature(s))
    frame = records.slot >> FB
    inside = (frame >= 6) & (frame < 13)
    ch = (records.pattern & 1) == 1
    assert ch[inside].sum() == 0
    assert ch[~inside].sum() > 100 and (~ch[inside]).sum() > 100


def test_a_clear_faults_action_ends_a_fault_without_duration():
    s = scenario([
        {"at": at(2), "name": "cut-a", "fault": {"type": "fiber_cut",
                                                  "target": "link/alice-charles"}},
        {"at": at(2), "name": "cut-b", "fault": {"type": "fiber_cut",
                                                  "target": "link/bob-charles"}},
        {"at": at(10), "name": "clear", "action": {"type": "clear_faults"}}])
    ph = build_link(s).physics(0, 24 << FB)
    cut = np.isin(np.arange(24), np.arange(2, 10))
    assert np.all(ph.transmittance_a[cut] == 0) and np.all(ph.transmittance_b[cut] == 0)
    assert np.all(ph.transmittance_a[~cut] > 0) and np.all(ph.transmittance_b[~cut] > 0)
    records = DetectionRecords.concatenate(run_nature(s))
    frame = records.slot >> FB
    # both fibers cut: only dark counts (1e-7 per slot and detector) could coincide
    assert ((frame >= 2) & (frame < 10)).sum() == 0
    assert (frame >= 10).sum() > 100


def test_the_same_scenario_and_seed_give_the_same_records():
    method = [
        {"at": at(4), "name": "drift", "duration": at(9),
         "fault": {"type": "polarization_drift", "target": "link/bob-charles",
                   "params": {"rate_rad_per_sqrt_s": 10, "ramp_rad_per_s": 5}}},
        {"at": at(5), "name": "loss", "fault": {"type": "loss", "target": "link/alice-charles",
                                                 "params": {"extra_db": 3, "ramp_s": at(4)}}},
        {"at": at(5), "name": "mis", "duration": at(6),
         "fault": {"type": "intensity_miscalibration", "target": "source/alice",
                   "params": {"intensity": "nu", "mean_photon_number_factor": 2}}},
        {"at": at(7), "name": "eff", "duration": at(3),
         "fault": {"type": "detector_efficiency", "target": "relay",
                   "params": {"efficiency_factor": 0.5, "detector": "dV"}}},
        {"at": at(15), "name": "clear", "action": {"type": "clear_faults",
                                                   "target": "link/alice-charles"}}]
    first, second = run_nature(scenario(method)), run_nature(scenario(method))
    assert len(first) == ROUNDS * ROUND_FRAMES // BATCH_FRAMES
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.slot, b.slot) and np.array_equal(a.pattern, b.pattern)
        assert np.array_equal(a.time_ps, b.time_ps)
    healthy = run_nature(scenario([]))
    assert np.array_equal(first[0].slot, healthy[0].slot)  # frames 0 … 3: before every fault
    assert not np.array_equal(first[1].slot, healthy[1].slot)


def test_a_scenario_without_faults_builds_the_link_as_before():
    assert build_link(load_scenario(DEFAULT_SCENARIO)).faults is None
    assert build_link(scenario([])).faults is None


def test_nature_keeps_the_physics_faults_and_leaves_the_others():
    s = scenario([
        {"at": at(1), "name": "lag", "fault": {"type": "latency", "target": "classical/alice-bob",
                                                "params": {"latency_ms": 5}}},
        {"at": at(1), "name": "kill", "duration": at(1),
         "fault": {"type": "kill", "target": "node/bob"}},
        {"at": at(1), "name": "turn", "fault": {"type": "polarization_rotation",
                                                 "target": "link/bob-charles",
                                                 "params": {"angle_rad": 0.5}}}])
    faults = build_link(s).faults
    assert faults is not None and [f.name for f in faults.faults] == ["turn"]


def test_implemented_faults_are_the_physics_edge_store_and_relay_faults():
    from orchestration.edge import CLASSICAL_FAULTS

    assert frozenset(PHYSICS_FAULTS) == {
        "loss", "fiber_cut", "polarization_rotation", "polarization_drift", "dark_count_surge",
        "detector_efficiency", "detector_dead", "intensity_miscalibration",
        "intensity_fluctuation", "clock_offset", "clock_skew", "jitter", "intercept_resend"}
    assert set(CLASSICAL_FAULTS) == {"latency", "bandwidth_limit", "outage", "tamper", "replay",
                                     "reorder"}
    assert IMPLEMENTED_FAULTS == frozenset(PHYSICS_FAULTS) | frozenset(CLASSICAL_FAULTS) | {
        "full", "malicious_relay", "relay_firmware_bug", "pause", "kill"}
    assert IMPLEMENTED_FAULTS <= set(FAULT_TYPES)


# the smallest valid parameters of each type, defaults left out (the engine fills them in)
MINIMAL = {
    "loss": ("link/alice-charles", {"extra_db": 1}),
    "fiber_cut": ("link/bob-charles", {}),
    "polarization_rotation": ("link/alice-charles", {"angle_rad": -1}),
    "polarization_drift": ("link/bob-charles", {"ramp_rad_per_s": 1}),
    "dark_count_surge": ("relay", {"dark_count_probability": 1e-5}),
    "detector_efficiency": ("relay", {"efficiency_factor": 0.3}),
    "detector_dead": ("relay", {"detector": "all"}),
    "intensity_miscalibration": ("source/bob", {"intensity": "nu",
                                                "mean_photon_number_factor": 3}),
    "intensity_fluctuation": ("source/alice", {"fluctuation_rel": 0.2}),
    "clock_offset": ("source/bob", {"offset_ps": 100}),
    "clock_skew": ("relay", {"skew_ppm": 0.001}),
    "jitter": ("relay", {"jitter_ps": 300}),
    "intercept_resend": ("link/alice-charles", {"fraction": 0.5}),
}


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_each_implemented_fault_runs_from_a_scenario_file(kind):
    target, params = MINIMAL[kind]
    s = scenario([{"at": at(4), "name": "f", "duration": at(8),
                   "fault": {"type": kind, "target": target, "params": params}}])
    records = run_nature(s)
    assert sum(len(r) for r in records) > 0
    if kind == "detector_dead":  # all four: nothing inside the window
        slots = DetectionRecords.concatenate(records).slot >> FB
        assert ((slots >= 4) & (slots < 12)).sum() == 0


def test_the_records_nature_sends_carry_no_fault_and_no_settings():
    from nodes.records import RecordsBatch

    assert set(DetectionRecords.__dataclass_fields__) == {"slot", "pattern", "time_ps"}
    assert not {"fault", "faults", "link"} & set(RecordsBatch.__dataclass_fields__)


def test_the_warm_up_also_runs_the_relay_attack_when_the_timeline_has_one(monkeypatch):
    import nodes.nature

    real, attacks = nodes.nature.sample, []

    def recording(link, *args):
        attacks.append(link.attack)
        return real(link, *args)

    monkeypatch.setattr(nodes.nature, "sample", recording)
    for method, expected in (([], [False]), ([{"at": at(4), "name": "eve", "fault": {
            "type": "malicious_relay", "target": "relay",
            "params": {"mode": "intercept_resend"}}}], [False, True])):
        attacks.clear()
        s = scenario(method)
        users = {u: build_settings(s, u) for u in ("alice", "bob")}
        layout = PulseLayout(ROUNDS, ROUND_FRAMES, BATCH_FRAMES, FB,
                             {u: g.plan.n_combos for u, g in users.items()})
        ChannelEmulator(build_link(s), {u: g.plan for u, g in users.items()}, 7,
                        layout).warm_up()
        assert [a is not None for a in attacks] == expected


def _emulator(s, token: str = "t0k3n") -> ChannelEmulator:
    users = {u: build_settings(s, u) for u in ("alice", "bob")}
    layout = PulseLayout(ROUNDS, ROUND_FRAMES, BATCH_FRAMES, FB,
                         {u: g.plan.n_combos for u, g in users.items()})
    return ChannelEmulator(build_link(s), {u: g.plan for u, g in users.items()}, 7, layout,
                           control_token=token)


def test_live_control_takes_only_requests_with_its_token_and_survives_bad_ones():
    nature = _emulator(scenario([]))
    loss = {"name": "x", "kind": "loss", "target": "link/bob-charles",
            "params": {"extra_db": 3.0}}
    assert nature.control({"op": "where"}) == {"ok": False, "error": "not authorised"}
    assert nature.control({"op": "where", "token": "wrong"})["ok"] is False
    assert nature.control({"op": "inject", "entry": loss})["ok"] is False
    assert nature.link.faults is None  # nothing changed without the token
    assert _emulator(scenario([]), token="").control({"op": "where", "token": ""})["ok"] is False
    for bad in ({**loss, "params": {"extra_db": 10**400}}, {**loss, "kind": "no_such"},
                {**loss, "params": {}}, {"kind": "loss"}):
        reply = nature.control({"op": "inject", "entry": bad, "token": "t0k3n"})
        assert reply["ok"] is False and reply["error"], bad  # refused, with a reason; no raise
    reply = nature.control({"op": "inject", "entry": loss, "token": "t0k3n"})
    assert reply == {"ok": True, "start_s": 0.0}  # nothing sampled yet: from frame 0
    assert [f.name for f in nature.link.faults.faults] == ["x"]
