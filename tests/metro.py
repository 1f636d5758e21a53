"""The metro round several in-memory tests share: 2 × 25 km, three intensities, modern detectors,
≈3·10⁹ slots, the smallest round with a positive finite key (about 10⁵ bits after repayment)."""

from __future__ import annotations

from channel.fiber import Fiber
from channel.link import Link
from channel.relay import RelayOptics
from channel.settings import IntensityClass, SettingsGenerator, SettingsPlan
from channel.source import Source
from orchestration.inmemory import EmulatedRound, emulate_round

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
