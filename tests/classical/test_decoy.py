"""Three-intensity decoy bounds: one formula for one 3×3 matrix and for a batch of them."""

from __future__ import annotations

import numpy as np
import pytest

from channel.analytic import arm_transmittance, mr_x_basis
from classical.decoy import single_photon_error_upper, single_photon_yield_lower

PD, ED = 3e-6, 0.015


def _x_gains(intensities_a, intensities_b, distance_km):
    eta = 0.145 * float(arm_transmittance(distance_km / 2))
    a, b = np.asarray(intensities_a), np.asarray(intensities_b)
    q, e = mr_x_basis(eta, eta, a[:, None], b[None, :], PD, ED)
    return q, q * e


@pytest.mark.parametrize(("ints_a", "ints_b"), [
    ((0.4, 0.1, 0.0), (0.4, 0.1, 0.0)),
    ((0.5, 0.1, 0.01), (0.3, 0.1, 0.0)),  # a's ratio is the larger: the roles are swapped
    ((0.3, 0.1, 0.0), (0.5, 0.1, 0.01)),
])
def test_a_batch_gives_the_bounds_of_each_matrix(ints_a, ints_b):
    distances = [0, 80, 160, 240]
    single = [_x_gains(ints_a, ints_b, d) for d in distances]
    q = np.stack([s[0] for s in single])
    eq = np.stack([s[1] for s in single])
    y = single_photon_yield_lower(ints_a, ints_b, q)
    e = single_photon_error_upper(ints_a, ints_b, eq, y)
    assert y.shape == e.shape == (len(distances),)
    for k, (qk, eqk) in enumerate(single):
        yk = single_photon_yield_lower(ints_a, ints_b, qk)
        assert isinstance(yk, float)
        assert y[k] == pytest.approx(yk, rel=1e-15)
        assert e[k] == pytest.approx(single_photon_error_upper(ints_a, ints_b, eqk, yk), rel=1e-15)


def test_intensities_broadcast_with_the_batch():
    """A different signal per batch entry, as in a scan over μ; a swap only where needed."""
    mus = np.array([0.2, 0.4, 0.8])
    ints_b = (0.4, 0.1, 0.01)
    q = np.stack([_x_gains((m, 0.1, 0.0), ints_b, 100)[0] for m in mus])
    y = single_photon_yield_lower((mus, 0.1, 0.0), ints_b, q)
    for k, m in enumerate(mus):
        assert y[k] == pytest.approx(single_photon_yield_lower((m, 0.1, 0.0), ints_b, q[k]),
                                     rel=1e-15)


def test_no_positive_yield_bound_means_the_worst_error_rate():
    eq = _x_gains((0.4, 0.1, 0.0), (0.4, 0.1, 0.0), 50)[1]
    e = single_photon_error_upper((0.4, 0.1, 0.0), (0.4, 0.1, 0.0), np.stack([eq, eq]),
                                  np.array([0.0, -1.0]))
    assert e.tolist() == [0.5, 0.5]


def test_unordered_intensities_are_refused():
    with pytest.raises(ValueError, match="intensities_a"):
        single_photon_yield_lower((0.4, 0.1, 0.2), (0.4, 0.1, 0.0), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="intensities_b"):
        single_photon_yield_lower((0.4, 0.1, 0.0), (np.array([0.4, 0.05]), 0.1, 0.0),
                                  np.zeros((2, 3, 3)))
