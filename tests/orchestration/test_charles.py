"""The relay's split: the channel emulator (nature, its own process) pairs pulse batches;
Charles's software sees no settings."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import numpy as np

from nodes import relay_software
from nodes.charles import CharlesNode
from nodes.nature import ChannelEmulator, ReadyFrames
from nodes.transport import PulseBatch, PulseLayout
from orchestration.config import (
    DEFAULT_SCENARIO,
    build_charles_config,
    build_link,
    build_settings,
    load_scenario,
)


def _batch(user: str, gen, first: int, n: int, last: bool) -> list:
    counts = np.array([gen.frame_counts(f) for f in range(first, first + n)])
    return PulseBatch(user, 0, first, counts, gen.key, last, None).to_parts()


def test_emulator_pairs_batches_and_charles_learns_no_settings():
    scenario = load_scenario(DEFAULT_SCENARIO, {"frame_bits": 12})
    alice, bob = build_settings(scenario, "alice"), build_settings(scenario, "bob")
    layout = PulseLayout(1, 4, 4, 12, {"alice": alice.plan.n_combos, "bob": bob.plan.n_combos})
    nature = ChannelEmulator(build_link(scenario), {"alice": alice.plan, "bob": bob.plan}, 1,
                             layout)
    assert nature.accept(_batch("alice", alice, 0, 4, True)) is None  # waits for Bob
    ready = nature.accept(_batch("bob", bob, 0, 4, True))
    assert isinstance(ready, ReadyFrames) and ready.round_complete
    assert (ready.first_slot, ready.stop_slot) == (0, 4 << 12)
    assert {f.name for f in dataclasses.fields(ReadyFrames)} == {
        "round_id", "first_slot", "stop_slot", "round_complete", "traceparents", "handle"}
    records = nature.measure_ready(ready)
    assert set(dataclasses.asdict(records)) == {"slot", "pattern", "time_ps"}
    assert len(records) > 0 and nature.singles.sum() > 0
    assert set(nature.metrics()) == {f"singles_{d}_total" for d in ("cH", "cV", "dH", "dV")}


def test_charles_decides_with_his_own_config_not_the_emulators_link():
    scenario = load_scenario(DEFAULT_SCENARIO, {"relay": {"coincidence_window_ps": 250.0}})
    assert build_charles_config(scenario).coincidence_window_ps == 250.0
    for part in (CharlesNode, relay_software):
        tree = ast.parse(inspect.getsource(part))
        assert "link" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
