"""The four-intensity decoy method end to end in memory: channel sampler with a four-intensity
plan on both sides (signal only in Z) → Charles → Alice ⇄ Bob with LP decoy bounds; and the
four-intensity scenario file."""

from __future__ import annotations

import numpy as np
import pytest

from channel.fiber import Fiber
from channel.link import Link
from channel.relay import RelayOptics
from channel.settings import SettingsGenerator, four_intensity_plan
from channel.source import Source
from classical.estimation import DecoyObservations, Estimate, estimate
from classical.pipeline import run_key_round
from classical.rounds import RoundConfig
from classical.sifting import BASIS_X, BASIS_Z, class_errors, sent_pairs, sift
from orchestration.config import (
    build_round_config,
    build_settings,
    load_scenario,
    shipped_scenarios,
)
from orchestration.inmemory import emulate_round, round_config

PLAN = four_intensity_plan()
ROUND_SLOTS = 3000 << 20  # the quick start's round: about 3.1 emulated seconds at 1 GHz


def _link(flip: float = 0.01) -> Link:
    return Link(
        Source(PLAN),
        Source(PLAN, bit_flip_probability=flip),
        Fiber(25),
        Fiber(25),
        relay=RelayOptics.uniform(0.8, 1e-7),
    )


@pytest.fixture(scope="module")
def users():
    return SettingsGenerator(PLAN, 303), SettingsGenerator(PLAN, 404)


@pytest.fixture(scope="module")
def metro_round(users):
    alice, bob = users
    return emulate_round(
        _link(), alice, bob, round_id=3, start_slot=0, stop_slot=ROUND_SLOTS, seed=12
    )


@pytest.mark.parametrize("decoy_method", ["joint", "lp"])
def test_identical_keys_of_the_recomputed_finite_key_length(metro_round, users, decoy_method):
    alice, bob = users
    cfg = round_config(alice, bob, decoy_method=decoy_method)
    assert cfg.n_intensities == (4, 4) and cfg.key_intensity == (0, 0)
    # Cascade's prior as in the scenarios: with 0.02 the pre-check's predicted leakage
    # (f·n·h(0.02)) already exceeds what this round can pay, and it aborts before reconciling
    result = run_key_round(
        metro_round.announcement, metro_round.alice, metro_round.bob, cfg, 5, qber_prior=0.01
    )
    assert result.alice.abort_reason is None and result.bob.abort_reason is None
    assert result.keys_match and result.alice.key_id == result.bob.key_id
    # Recompute from the public data and the leakage actually disclosed.
    ann, va, vb = metro_round.announcement, metro_round.alice, metro_round.bob
    sa = sift("alice", ann.bell, va.basis, va.bit, va.intensity, vb.basis, vb.intensity, (4, 4))
    sb = sift("bob", ann.bell, vb.basis, vb.bit, vb.intensity, va.basis, va.intensity, (4, 4))
    det = sa.detections
    # the layout: the signal pairs only in Z, the decoys only in X
    assert det[0, 0, BASIS_X].sum() == 0 and det[1:3, 1:3, BASIS_Z].sum() == 0
    assert det[0, 0, BASIS_Z].sum() > det[1:, 1:, BASIS_X].sum() > 0
    errors = class_errors(sa, sb.bits, where=sa.basis == BASIS_X)
    key_a, key_b = sa.bits[sa.key_mask()], sb.bits[sb.key_mask()]
    z_err = int((key_a != key_b).sum())
    report = result.bob.report
    assert report["corrected_bits"] == z_err  # Cascade found every error
    errors[0, 0, 0] = np.round(z_err * det[0, 0, 0] / det[0, 0, 0].sum())
    obs = DecoyObservations(
        cfg.intensities_a,
        cfg.intensities_b,
        sent_pairs(va.sent_counts, vb.sent_counts, cfg.frame_slots),
        det,
        errors,
    )
    expected = estimate(obs, report["leakage_bits"], "finite", decoy_method=decoy_method)
    method = f"finite-chernoff-{decoy_method}"
    assert isinstance(expected, Estimate) and expected.method == method
    assert result.alice.key.size == expected.secure_length > 10_000
    assert report["output_bits"] == expected.secure_length
    assert report["method"] == method
    assert np.isfinite(expected.qber_x)  # pooled over the X classes: the signal is never in X
    assert set(expected.epsilons) >= {
        "correctness",
        "prime",
        "smoothing",
        "privacy_amplification",
        "parameter_estimation_psi+-",
    }


def test_the_analytic_method_is_refused_for_four_intensities(users):
    alice, bob = users
    with pytest.raises(ValueError, match="decoy_method 'analytic'"):
        round_config(alice, bob, decoy_method="analytic")
    with pytest.raises(ValueError, match="at least 3"):
        RoundConfig((0.4, 0.1), (0.4, 0.1), 1 << 20, decoy_method="lp")


@pytest.mark.parametrize(("a", "key", "match"), [
    ((0.1, 0.4, 0.0), (0, 0), "mu > nu > omega"),
    ((0.0, 0.5, 0.2, 0.1), (0, 0), "key intensities must be > 0"),
    ((0.5, 0.2, 0.2, 0.0), (0, 0), "distinct"),
])
def test_a_bad_intensity_layout_is_refused_when_the_round_config_is_built(a, key, match):
    """Not every round: DecoyObservations would raise inside the round and crash the node."""
    with pytest.raises(ValueError, match=match):
        RoundConfig(a, (0.5, 0.1, 0.0), 1 << 20, decoy_method="lp", key_intensity=key)


def test_four_intensity_scenario_builds_the_layout():
    scenario = load_scenario(shipped_scenarios()["four_intensity"])
    cfg = build_round_config(scenario)
    assert cfg.decoy_method == "joint" and cfg.n_intensities == (4, 4)
    assert cfg.intensities_a == (0.55, 0.35, 0.08, 0.0)
    plan = build_settings(scenario, "alice").plan
    assert plan == PLAN  # the scenario is the default four-intensity plan
    p = plan.combo_probabilities.reshape(4, 2)
    assert p[0, BASIS_X] == 0 and p[1:3, BASIS_Z].sum() == 0


def test_users_may_have_different_numbers_of_intensities():
    """Four intensities at Alice, three at Bob (LP bounds): the round gets through sifting and
    reaches the finite-key estimate on both sides with the same outcome (50 frames are too few
    for a positive length, which is the estimate's answer, not a protocol error)."""
    from channel.settings import three_intensity_plan

    plan_b = three_intensity_plan(0.5, 0.1, 0.0)
    link = Link(Source(PLAN), Source(plan_b), Fiber(5), Fiber(5),
                relay=RelayOptics.uniform(0.8, 1e-7))
    alice, bob = SettingsGenerator(PLAN, 1), SettingsGenerator(plan_b, 2)
    cfg = round_config(alice, bob, decoy_method="lp")
    assert cfg.n_intensities == (4, 3)
    em = emulate_round(link, alice, bob, round_id=0, start_slot=0, stop_slot=50 << 20, seed=3)
    r = run_key_round(em.announcement, em.alice, em.bob, cfg, 5, qber_prior=0.01)
    assert r.alice.abort_reason == r.bob.abort_reason
    assert r.alice.abort_reason is None or r.alice.abort_reason.startswith("secure length")
    assert r.alice.report["key_bits_raw"] > 0 and r.alice.report["phase"] == "precheck"
