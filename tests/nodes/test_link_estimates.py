"""nodes.link_estimates: the users' dark-count and visibility estimates, against the exact model
(docs/physics.md §5, ``channel.analytic.exact_class_statistics`` with the relay's Bell table).

* Dark counts: with no light at all, the exact pattern law gives the vacuum class's Bell yield;
  it must be 4p²(1−p)² and the estimator must return p from it (to rounding: 1e-9 relative).
* Visibility: expected counts of every class of a link with mode overlap γ (asymptotic mode, no
  statistical fluctuation), bounded by the round's estimation; the exact single-photon value is
  1 − 2·e11 = γ²·S/Y11 (S = (1−p)²η_aη_b/2, the two-photon term of Y11). The bound must hold
  (never above it, which is never above γ²) and close on it at first order in the weak decoy ν
  (the gap shrinks at least 3-fold when ν shrinks 4-fold: a gap of order ν² or ν shrinks 16- or
  4-fold, one of order 1 does not).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from channel.analytic import exact_class_statistics, single_photon_yield
from classical.estimation import DecoyObservations, Estimate, estimate
from nodes.link_estimates import (
    dark_count_probability,
    round_link_estimates,
    vacuum_counts,
    vacuum_yield,
    visibility_lower,
)
from nodes.metrics import NodeMetrics, parse_exposition, user_round_observations
from nodes.relay_software import BELL_OF_PATTERN

T_ARM = 10 ** (-25 * 0.2 / 10)  # 25 km at 0.2 dB/km
EFF, DARK = 0.6, 1e-6


# (the general formula's inclusion–exclusion loses digits on yields below ~10⁻⁸: p ≥ 10⁻⁴ here,
# smaller p in the round trip below)
@pytest.mark.parametrize("p", [1e-4, 1e-3, 0.05, 0.3])
@pytest.mark.parametrize("basis", [0, 1])
def test_the_vacuum_yield_is_two_background_clicks_and_inverts_to_p(p, basis):
    st = exact_class_statistics(basis, 0.0, 0.0, T_ARM, T_ARM, None, None, EFF, p,
                                bell_of_pattern=BELL_OF_PATTERN)
    assert st.gain == pytest.approx(vacuum_yield(p), rel=1e-9)
    pairs = 1e15
    assert dark_count_probability(st.gain * pairs, pairs) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("p", [1e-9, 1e-7, 3e-6, 0.4999])
def test_the_inversion_is_exact_for_small_and_large_p(p):
    assert dark_count_probability(vacuum_yield(p) * 1e20, 1e20) == pytest.approx(p, rel=1e-9)


def test_the_estimator_s_edges():
    assert dark_count_probability(0, 10) == 0.0
    assert dark_count_probability(0, 0) is None
    assert dark_count_probability(3, 12) == 0.5  # Y00 = 1/4, its largest value
    assert dark_count_probability(12, 12) == 0.5
    # a relay announcing every slot, or a peer's sent counts, can put more detections in the
    # vacuum class than its expected pairs: saturated, never an error that ends the node
    assert dark_count_probability(13, 12) == 0.5
    assert dark_count_probability(-1, 12) is None
    assert dark_count_probability(float("nan"), 12) is None
    assert dark_count_probability(1, float("inf")) is None


def _observations(gamma: float, intensities, pd: float = DARK,
                  pairs_total: float = 1e13) -> DecoyObservations:
    """Expected counts per class (ψ⁺ and ψ⁻) of a symmetric link with overlap γ."""
    k = len(intensities)
    z = np.array([0.9, 0.1, 0.5, 0.5][:k])
    p = np.array([0.4, 0.4, 0.2, 0.1][:k])
    p = (p / p.sum())[:, None] * np.stack([z, 1 - z], -1)
    pairs = pairs_total * p[:, None, :] * p[None, :, :]
    det, err = np.zeros((k, k, 2, 2)), np.zeros((k, k, 2, 2))
    for i, j, b in itertools.product(range(k), range(k), range(2)):
        st = exact_class_statistics(b, intensities[i], intensities[j], T_ARM, T_ARM, None, None,
                                    EFF, pd, gamma, bell_of_pattern=BELL_OF_PATTERN)
        det[i, j, b] = pairs[i, j, b] * np.array([st.gain_psi_plus, st.gain_psi_minus])
        err[i, j, b] = det[i, j, b] * st.error_rate
    return DecoyObservations(intensities, intensities, pairs, det, err)


def _bound(gamma: float, nu: float) -> float:
    est = estimate(_observations(gamma, (0.5, nu, 0.0)), 0.0, "asymptotic")
    assert isinstance(est, Estimate), est
    v = visibility_lower(est.e11_x_upper)
    assert v is not None
    return v


@pytest.mark.parametrize("gamma", [1.0, 0.95, 0.8])
def test_the_visibility_bound_holds_and_closes_on_the_single_photon_value(gamma):
    eta = T_ARM * EFF
    exact = gamma**2 * (1 - DARK) ** 2 * eta * eta / 2 / single_photon_yield(eta, eta, DARK)
    assert exact <= gamma**2
    coarse, fine = _bound(gamma, 0.02), _bound(gamma, 0.005)
    assert coarse <= fine <= exact
    assert exact - fine <= (exact - coarse) / 3


def test_visibility_needs_a_bound_and_is_clipped():
    assert visibility_lower(None) is None and visibility_lower(float("nan")) is None
    assert visibility_lower(0.6) == 0.0 and visibility_lower(0.1) == pytest.approx(0.8)


def test_the_vacuum_class_is_found_wherever_it_is_in_the_layout():
    obs = _observations(1.0, (0.4, 0.1, 0.05, 0.0), pd=1e-3, pairs_total=1e9)
    counts = vacuum_counts(obs)
    assert counts == {"vacuum_pairs": pytest.approx(obs.pairs[3, 3].sum()),
                      "vacuum_detections": pytest.approx(obs.detections[3, 3].sum())}
    fields = round_link_estimates(obs)
    assert fields["dark_count_probability"] == pytest.approx(1e-3, rel=1e-9)
    no_vacuum = _observations(1.0, (0.5, 0.1, 0.01))
    assert vacuum_counts(no_vacuum) == {} == round_link_estimates(no_vacuum)
    assert round_link_estimates(None) == {}


def test_a_round_record_sets_visibility_and_dark_counts():
    record = {"round": 4, "start_slot": 4 * 10**9, "stop_slot": 5 * 10**9,
              "emulated_seconds": 2.0, "aborted": False, "secure_bits": 0,
              "e11_x_upper": 0.05, "vacuum_pairs": 1e8, "vacuum_detections": 4.0,
              "dark_count_probability": 1e-4}
    m = NodeMetrics("bob")
    m.apply(user_round_observations(record))
    m.apply(user_round_observations({**record, "round": 5}))
    series = {name: v for name, [(_, v)] in parse_exposition(m.exposition()).items()
              if name.startswith(("mdiqkd_visibility", "mdiqkd_vacuum", "mdiqkd_dark"))}
    assert series == {"mdiqkd_visibility_lower_ratio": pytest.approx(0.9),
                      "mdiqkd_vacuum_pairs_total": 2e8, "mdiqkd_vacuum_detections_total": 8.0,
                      # all four detectors, 5e8 slots a second
                      "mdiqkd_dark_count_rate_hertz": pytest.approx(4 * 1e-4 * 5e8)}
    bare = NodeMetrics("alice")  # a record without them sets none of them
    bare.apply(user_round_observations({"round": 1, "aborted": True, "abort_reason": "x"}))
    assert not [n for n in parse_exposition(bare.exposition())
                if n.startswith(("mdiqkd_visibility", "mdiqkd_vacuum", "mdiqkd_dark"))]
