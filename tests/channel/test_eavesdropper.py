"""An intercept–resend eavesdropper on a fiber (channel/eavesdropper.py, the ``intercept_resend``
fault; docs/physics.md §9).

The prediction is written here from the physics, independently of the fault code: in an attacked
slot Eve measures the user's phase-randomized coherent pulse (mean μ, BB84 state û) in a random
basis with two ideal threshold detectors, whose photon numbers are independent Poisson of means
μ|⟨e_k|û⟩|²; she resends a coherent pulse of mean μ_E in the state she saw (one of the two at
random on a double click), or nothing. The pattern law of an attacked slot is the mixture of the
general formula (docs/physics.md §5) over her outcomes, weighted by their probabilities, and a
share ``fraction`` of the slots is attacked. Statistics as in tests/channel/test_impairments.py:
binomial z-scores, χ²/dof and max|z| at the false-alarm probability ``tests.stats.ALPHA`` = 10⁻⁴
per assertion.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from channel.analytic import (
    ClassStatistics,
    detector_fields,
    exact_class_statistics,
    exact_frame_statistics,
    pattern_probabilities,
)
from channel.eavesdropper import attacked_and_basis
from channel.samplers import sample
from channel.source import JONES
from classical.sifting import bob_flip
from nodes.relay_software import BELL_OF_PATTERN
from tests.channel.test_impairments import (
    DARK,
    EFF,
    FB,
    PLAN,
    RUN,
    T_ARM,
    WINDOW,
    _class_z,
    _exact,
    _measure,
    clear,
    fault,
    link_with,
    users,
)
from tests.channel.test_timing_faults import _x_error_z
from tests.stats import assert_z_scores_consistent, binomial_z, z_bound

RESEND_MU = 0.3


def _eve(mu: float, basis: int, bit: int) -> list[tuple[float, float, int, int]]:
    """(probability, mean, basis, bit) of what Eve sends for one attacked pulse."""
    out = []
    for eve_basis in (0, 1):
        share = (1.0 - bit if eve_basis == basis else 0.5)  # |⟨e₀|û⟩|²
        p0, p1 = 1 - math.exp(-mu * share), 1 - math.exp(-mu * (1 - share))
        out += [(0.5 * p0 * (1 - p1 / 2), RESEND_MU, eve_basis, 0),
                (0.5 * p1 * (1 - p0 / 2), RESEND_MU, eve_basis, 1),
                (0.5 * (1 - p0) * (1 - p1), 0.0, 0, 0)]
    return out


def _attacked(fraction_a: float = 0.0, fraction_b: float = 0.0):
    """The class statistics with Eve on Alice's and/or Bob's fiber, by the mixture."""
    eff, dark = np.full(4, EFF), np.full(4, DARK)

    def inputs(mu, basis, bit, fraction):
        return [(1 - fraction, mu, basis, bit)] + [(fraction * p, m, b, x)
                                                   for p, m, b, x in _eve(mu, basis, bit)]

    def stats_of(basis, mu_a, mu_b):
        gain = errors = 0.0
        for bit_a in (0, 1):
            for bit_b in (0, 1):
                for wa, ma, ba, xa in inputs(mu_a, basis, bit_a, fraction_a):
                    for wb, mb, bb, xb in inputs(mu_b, basis, bit_b, fraction_b):
                        x, y = detector_fields(ma, mb, T_ARM, T_ARM, JONES[ba, xa],
                                               JONES[bb, xb], eff)
                        probs = wa * wb * pattern_probabilities(x, y, 1.0, dark) / 4
                        bell = BELL_OF_PATTERN
                        ok = bell != 0
                        gain += probs[ok].sum()
                        flips = bob_flip(np.full(16, basis, np.uint8), bell)
                        errors += probs[ok & (bit_a != (bit_b ^ flips))].sum()
        return ClassStatistics(gain, errors / gain, 0.0, 0.0)
    return stats_of


def _eve_link(target: str, fraction: float):
    return link_with(fault(WINDOW[0], "eve", "intercept_resend", target,
                           {"fraction": fraction, "resend_mean_photon_number": RESEND_MU}),
                     clear(WINDOW[1], "rollback"))


def test_eve_attacks_the_share_of_slots_she_is_set_to_in_a_uniform_basis():
    slots = np.arange(10**6, dtype=np.int64) + 12345
    hit, basis = attacked_and_basis(slots, 99, np.full(slots.size, 0.3))
    z = [binomial_z(int(hit.sum()), slots.size, 0.3),
         binomial_z(int(basis[hit].sum()), int(hit.sum()), 0.5)]
    assert_z_scores_consistent(z, "attacked share and basis")
    again, _ = attacked_and_basis(slots, 99, np.full(slots.size, 0.3))
    other, _ = attacked_and_basis(slots, 98, np.full(slots.size, 0.3))
    assert np.array_equal(hit, again) and not np.array_equal(hit, other)
    none, _ = attacked_and_basis(slots, 99, np.zeros(slots.size))
    assert not none.any()


@pytest.mark.parametrize("fraction_a, fraction_b", [(1.0, 0.0), (0.0, 0.4), (0.5, 0.5)])
def test_the_exact_model_is_the_mixture_over_eves_outcomes(fraction_a, fraction_b):
    want = _attacked(fraction_a, fraction_b)
    mu = PLAN.mean_photon_numbers
    for basis in (0, 1):
        for ia, ib in ((0, 0), (1, 0), (0, 2), (1, 1)):
            got = exact_class_statistics(basis, mu[ia], mu[ib], T_ARM, T_ARM, None, None, EFF,
                                         DARK, bell_of_pattern=BELL_OF_PATTERN,
                                         attack_a=fraction_a, attack_b=fraction_b,
                                         resend_mu_a=RESEND_MU, resend_mu_b=RESEND_MU)
            w = want(basis, mu[ia], mu[ib])
            assert got.gain == pytest.approx(w.gain, rel=1e-12)
            assert got.error_rate == pytest.approx(w.error_rate, rel=1e-12)
    link = link_with(*[fault(1, arm, "intercept_resend", f"link/{arm}-charles",
                             {"fraction": f, "resend_mean_photon_number": RESEND_MU})
                       for arm, f in (("alice", fraction_a), ("bob", fraction_b)) if f > 0])
    frame = exact_frame_statistics(link, PLAN, PLAN, 1, 1, 0, 1,
                                   bell_of_pattern=BELL_OF_PATTERN)
    assert frame.gain == pytest.approx(want(1, mu[0], mu[1]).gain, rel=1e-12)
    assert frame.error_rate == pytest.approx(want(1, mu[0], mu[1]).error_rate, rel=1e-12)


@pytest.mark.parametrize("target, fraction", [("link/alice-charles", 1.0),
                                              ("link/bob-charles", 0.5)])
def test_intercept_resend_follows_the_exact_model_and_raises_the_x_errors(target, fraction):
    measured = _measure(_eve_link(target, fraction), 0, RUN << FB, 41)
    lo, hi = WINDOW[0] << FB, WINDOW[1] << FB
    inside = _attacked(fraction, 0.0) if target == "link/alice-charles" else _attacked(
        0.0, fraction)
    z_in = _class_z(measured, lo, hi, inside)
    z_out = _class_z(measured, 0, lo, _exact()) + _class_z(measured, hi, RUN << FB, _exact())
    assert len(z_in) >= 8 and len(z_out) >= 16
    assert_z_scores_consistent(z_in, "inside the attack")
    assert_z_scores_consistent(z_out, "outside the attack (healthy, after the rollback)")
    # the X basis's errors reject the healthy link's at the false-alarm budget
    assert _x_error_z(measured, WINDOW, _exact()) > z_bound()


def test_the_reference_sampler_sees_the_same_eavesdropper():
    link = link_with(fault(2, "eve", "intercept_resend", "link/alice-charles",
                           {"fraction": 1.0, "resend_mean_photon_number": RESEND_MU}))
    measured = _measure(link, 2 << FB, 10 << FB, 42, "reference")
    z = _class_z(measured, 2 << FB, 10 << FB, _attacked(1.0, 0.0), min_events=20)
    assert len(z) >= 4
    assert_z_scores_consistent(z, "reference sampler under attack")


def test_the_singles_follow_the_mixture():
    """The fast sampler's singles (the exact marginal per frame) against the skip-empty
    sampler's exact counts of every click, both under a full attack on Bob's fiber: two
    binomials of the same p per detector."""
    link = link_with(fault(0, "eve", "intercept_resend", "link/bob-charles",
                           {"fraction": 1.0, "resend_mean_photon_number": RESEND_MU}))
    alice, bob = users(8)
    n = 8 << FB
    fast = sample(link, alice, bob, 0, n, 43, "fast").singles
    exact = sample(link, alice, bob, 0, n, 44, "skip-empty").singles
    z = [(a - b) / math.sqrt(a + b) for a, b in zip(fast, exact, strict=True)]
    assert_z_scores_consistent(z, "singles, fast against skip-empty")
    healthy = sample(link_with(), alice, bob, 0, n, 43, "fast").singles
    assert abs(binomial_z(int(fast.sum()), int(healthy.sum() + fast.sum()), 0.5)) > z_bound()


def test_before_and_after_the_attack_the_records_are_exactly_the_healthy_links():
    alice, bob = users(9)
    faulty = link_with(fault(3, "eve", "intercept_resend", "link/alice-charles",
                             {"fraction": 0.7}, frames=4))
    healthy = link_with()
    for lo, hi in ((0, 3), (7, 10)):
        a = sample(faulty, alice, bob, lo << FB, hi << FB, 45).records
        b = sample(healthy, alice, bob, lo << FB, hi << FB, 45).records
        assert len(a) > 100
        for name in ("slot", "pattern", "time_ps"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    runs = [sample(faulty, alice, bob, 0, 10 << FB, 46).records for _ in range(2)]
    assert np.array_equal(runs[0].slot, runs[1].slot)
    assert np.array_equal(runs[0].pattern, runs[1].pattern)
