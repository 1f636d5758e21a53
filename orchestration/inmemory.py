"""Key rounds entirely in one process: nature's sampler, Charles's announcement, and Alice and
Bob's post-processing over the in-memory pipeline. The reference for the distributed run and the
workload of `mdiqkd bench postprocess`'s end-to-end figures."""

from __future__ import annotations

from dataclasses import dataclass

from channel.link import Link
from channel.samplers import sample
from channel.settings import SettingsGenerator
from classical.messages import Announcement
from classical.rounds import LocalView, RoundConfig
from nodes.relay_software import CharlesConfig, announce_round
from nodes.users import local_view


@dataclass(frozen=True)
class EmulatedRound:
    announcement: Announcement
    alice: LocalView
    bob: LocalView


def emulate_round(link: Link, alice: SettingsGenerator, bob: SettingsGenerator, round_id: int,
                  start_slot: int, stop_slot: int, seed: int, sampler: str = "fast",
                  charles: CharlesConfig | None = None) -> EmulatedRound:
    out = sample(link, alice, bob, start_slot, stop_slot, seed, sampler)
    ann = announce_round(round_id, start_slot, stop_slot, out.records, charles or CharlesConfig())
    return EmulatedRound(ann, local_view(alice, ann), local_view(bob, ann))


def round_config(alice: SettingsGenerator, bob: SettingsGenerator, **kwargs: object) -> RoundConfig:
    ia = tuple(float(m) for m in alice.plan.mean_photon_numbers)
    ib = tuple(float(m) for m in bob.plan.mean_photon_numbers)
    return RoundConfig(ia, ib, alice.frame_size, **kwargs)  # type: ignore[arg-type]

