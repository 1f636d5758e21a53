"""A relay that cheats never buys key: the metro round (tests/metro.py, the smallest round with a
positive finite key) announced by a misbehaving Charles (nodes/relay_faults.py), then distilled
by Alice and Bob over the in-memory pipeline with the real wire format.

Security (docs/physics.md §9): fakes raise the phase error (QBER_X) and the vacuum classes'
gains, so the round aborts with its reason and nothing is stored; a biased post-selection only
throws announcements away, so the key shrinks, and what is kept is identical on both sides and
paid for by the estimate made from what was announced.
"""

from __future__ import annotations

import dataclasses

import pytest

from channel.timeline import TimelineEntry
from classical.pipeline import run_key_round
from nodes.relay_faults import RelayMisbehaviour
from nodes.users import local_view
from orchestration.inmemory import round_config
from tests.metro import shared_metro


def announced_by(kind: str, params: dict):
    (alice, bob), emulated = shared_metro()
    ann = emulated.announcement
    m = RelayMisbehaviour.from_timeline([TimelineEntry(0.0, "cheat", kind, "relay", params)], 9,
                                        1e9, alice.frame_bits)
    assert m is not None
    slots, bell = m.rewrite(ann.slots, ann.bell, ann.start_slot, ann.stop_slot)
    cheat = dataclasses.replace(ann, slots=slots, bell=bell)
    return cheat, run_key_round(cheat, local_view(alice, cheat), local_view(bob, cheat),
                                round_config(alice, bob), 3)


@pytest.fixture(scope="module")
def honest_key_bits():
    (alice, bob), emulated = shared_metro()
    ann = emulated.announcement
    result = run_key_round(ann, emulated.alice, emulated.bob, round_config(alice, bob), 3)
    assert result.keys_match
    return int(result.alice.key.size)


@pytest.mark.parametrize(("kind", "params"), [
    ("malicious_relay", {"mode": "fake_announcements", "fraction": 1.0}),
    ("malicious_relay", {"mode": "fake_announcements", "fraction": 0.5}),
    ("relay_firmware_bug", {"spurious_fraction": 1.0})])
def test_fake_or_spurious_announcements_abort_the_round_and_store_nothing(kind, params):
    cheat, result = announced_by(kind, params)
    honest = shared_metro()[1].announcement.slots.size
    # fakes keep the rate; a firmware bug announcing a spurious slot per success doubles it
    assert cheat.slots.size == (honest if kind == "malicious_relay" else 2 * honest)
    for side in (result.alice, result.bob):
        assert side.aborted and side.abort_reason, side
        assert side.key is None and not side.committed
    assert not result.keys_match


def test_biased_postselection_shrinks_the_key_to_nothing_on_the_smallest_round(honest_key_bits):
    """Announcing ψ⁻ only halves the counts of a round that is the smallest with a positive key
    (``honest_key_bits`` > 0): the finite-key length it pays for is not positive, so the round
    aborts with that reason, nothing stored (the key shrinks, and is never split)."""
    cheat, result = announced_by("malicious_relay", {"mode": "biased_postselection"})
    honest = shared_metro()[1].announcement
    assert 0 < cheat.slots.size < honest.slots.size and honest_key_bits > 0
    for side in (result.alice, result.bob):
        assert side.aborted and side.abort_reason.startswith("secure length <= 0"), side
        assert side.key is None and not side.committed


@pytest.mark.slow  # the metro round's 3·10⁹ slots through the attack's sampler: about 40 s
def test_a_full_intercept_resend_aborts_the_round_and_stores_nothing():
    """Charles's optics measure every pulse (channel/relay_attack.py): the Z basis errs about a
    third of the time, so the round aborts with its reason and neither user keeps a key."""
    from channel.fiber import Fiber
    from channel.impairments import FaultSchedule
    from channel.link import Link
    from channel.relay import RelayOptics
    from channel.source import Source
    from orchestration.inmemory import emulate_round
    from tests.metro import PLAN, ROUND_SLOTS

    (alice, bob), _ = shared_metro()
    eve = TimelineEntry(0.0, "eve", "malicious_relay", "relay", {"mode": "intercept_resend"})
    link = Link(Source(PLAN), Source(PLAN, bit_flip_probability=0.01), Fiber(25), Fiber(25),
                relay=RelayOptics.uniform(0.8, 1e-7),
                faults=FaultSchedule.from_timeline([eve], 4))
    emulated = emulate_round(link, alice, bob, round_id=7, start_slot=0, stop_slot=ROUND_SLOTS,
                             seed=11)
    result = run_key_round(emulated.announcement, emulated.alice, emulated.bob,
                           round_config(alice, bob), 3)
    for side in (result.alice, result.bob):
        assert side.aborted and side.abort_reason, side
        assert side.key is None and not side.committed
    assert not result.keys_match
