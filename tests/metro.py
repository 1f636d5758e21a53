"""The metro round several in-memory tests share: 2 × 25 km, three intensities, modern detectors,
≈3·10⁹ slots, the smallest round with a positive finite key (about 10⁵ bits after repayment).

Emulating it takes seconds, so the test modules that use it take it from :func:`shared_metro`,
computed once per test process, with its arrays read-only so that no test can change what the
others see (an in-place write raises instead). The same holds for the 2 × 20 km round and its
analytic key round (:func:`shared_metro_20km_round`)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from channel.fiber import Fiber
from channel.link import Link
from channel.relay import RelayOptics
from channel.settings import IntensityClass, SettingsGenerator, SettingsPlan
from channel.source import Source
from classical.pipeline import PipelineResult, RoundInput, RunResult, run_key_round, run_key_rounds
from classical.rounds import RoundConfig
from orchestration.inmemory import EmulatedRound, emulate_round, round_config

PLAN = SettingsPlan(tuple(IntensityClass(n, m, p, z) for n, m, p, z in zip(
    ("mu", "nu", "omega"), (0.4, 0.1, 0.0), (0.3, 0.5, 0.2), (0.95, 0.2, 0.5), strict=True)))
ROUND_SLOTS = 3000 << 20


def metro_users() -> tuple[SettingsGenerator, SettingsGenerator]:
    return SettingsGenerator(PLAN, 101), SettingsGenerator(PLAN, 202)


def metro_round(users: tuple[SettingsGenerator, SettingsGenerator]) -> EmulatedRound:
    """Round 7 over slots [0, ROUND_SLOTS), Bob's encoder flipping 1 % of bits."""
    link = Link(Source(PLAN), Source(PLAN, bit_flip_probability=0.01), Fiber(25), Fiber(25),
                relay=RelayOptics.uniform(0.8, 1e-7))
    return emulate_round(link, *users, round_id=7, start_slot=0, stop_slot=ROUND_SLOTS, seed=11)


def _freeze(obj: object) -> None:
    """Make every array field of a dataclass (and of the dataclasses in it) read-only."""
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            _freeze(value)


@functools.cache
def shared_metro() -> tuple[tuple[SettingsGenerator, SettingsGenerator], EmulatedRound]:
    """The metro users and their round (:func:`metro_round`), once per test process, read-only."""
    users = metro_users()
    emulated = metro_round(users)
    _freeze(emulated)
    return users, emulated


def three_metro_rounds(emulated: EmulatedRound) -> list[RoundInput]:
    """The metro round announced as rounds 0, 1 and 2 (the same slots): three keys in a run."""
    return [(dataclasses.replace(emulated.announcement, round_id=r), emulated.alice, emulated.bob)
            for r in range(3)]


@functools.cache
def shared_undisturbed_run(timeout_s: float) -> RunResult:
    """:func:`three_metro_rounds` run by :func:`classical.pipeline.run_key_rounds` (seed 5) with
    nobody interfering, once per test process and timeout."""
    users, emulated = shared_metro()
    return run_key_rounds(three_metro_rounds(emulated), round_config(*users), 5,
                          timeout_s=timeout_s)


@functools.cache
def shared_metro_20km_round() -> tuple[RoundConfig, PipelineResult]:
    """The metro round on 2 × 20 km (it reaches reconciliation, with a finite key of about
    2·10⁵ bits under the three-intensity analytic bounds) and its key round (seed 3) with the
    analytic decoy method, once per test process, read-only."""
    alice, bob = metro_users()
    link = Link(Source(PLAN), Source(PLAN, bit_flip_probability=0.01), Fiber(20), Fiber(20),
                relay=RelayOptics.uniform(0.8, 1e-7))
    emulated = emulate_round(link, alice, bob, round_id=7, start_slot=0, stop_slot=ROUND_SLOTS,
                             seed=11)
    _freeze(emulated)
    cfg = round_config(alice, bob, decoy_method="analytic")
    return cfg, run_key_round(emulated.announcement, emulated.alice, emulated.bob, cfg, 3)
