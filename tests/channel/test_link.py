"""Fiber, clock and link physics per frame."""

from __future__ import annotations

import numpy as np
import pytest

from channel.clock import Clock, mode_overlap, slot_alignment
from channel.fiber import PAULI, Fiber, PolarizationDrift, linear_rotation, su2
from channel.link import Link
from channel.settings import three_intensity_plan
from channel.source import Source
from tests.stats import assert_normal_sample_consistent


def test_fiber_loss_in_db():
    f = Fiber(50, 0.2, extra_loss_db=3.0)
    assert f.loss_db == pytest.approx(13.0)
    assert f.transmittance == pytest.approx(10 ** -1.3)


@pytest.mark.parametrize("kwargs", [{"length_km": -1},
                                    {"length_km": 1, "attenuation_db_per_km": -1},
                                    {"length_km": 1, "extra_loss_db": -2}])
def test_bad_fibers_are_rejected(kwargs):
    with pytest.raises(ValueError, match="must be >= 0"):
        Fiber(**kwargs)


def test_linear_rotation_turns_h_toward_v():
    u = linear_rotation(np.pi / 6)
    out = u @ np.array([1, 0])
    assert out.real.tolist() == pytest.approx([np.cos(np.pi / 6), np.sin(np.pi / 6)])


def test_su2_is_unitary_with_unit_determinant():
    u = su2(np.array([0.3, -1, 2]), 1.7)
    assert np.allclose(u.conj().T @ u, np.eye(2))
    assert np.linalg.det(u) == pytest.approx(1.0)


def _rotation_vector(u: np.ndarray) -> np.ndarray:
    """θ·n of u = cos(θ/2) I − i sin(θ/2) n·σ (θ in [0, π] for the small angles used here)."""
    theta = 2 * np.arccos(np.clip(np.trace(u).real / 2, -1.0, 1.0))
    n_sin = np.array([-np.trace(u @ p).imag / 2 for p in PAULI])
    s = np.sin(theta / 2)
    return n_sin * (theta / s) if s > 0 else np.zeros(3)


def test_random_walk_drift_spreads_with_time_on_every_axis():
    """After n steps of rms σ√Δt per axis, each component of the accumulated rotation vector is
    N(0, σ² n Δt): the steps are small (θ ≈ 0.05 rad), so composing the rotations adds their
    vectors up to O(θ²) relative, far inside the tolerance. Per axis, the mean and the spread
    are tested at the false-alarm budget of tests/stats.py (N = 1000 walks: a spread off by
    more than about 10 % fails; a walk that loses one axis, or runs √(2/3) too slow, fails)."""
    drift = PolarizationDrift(random_walk_rad_per_sqrt_s=0.1)
    rng = np.random.default_rng(0)
    steps, step_s = 100, 1e-3
    vectors = np.array([_rotation_vector(drift.unitaries(steps + 1, step_s, rng)[-1])
                        for _ in range(1000)])
    sigma = 0.1 * np.sqrt(steps * step_s)
    for axis in range(3):
        assert_normal_sample_consistent(vectors[:, axis], sigma, f"axis {axis}", assertions=3)


def test_ramp_drift_is_deterministic_rotation():
    u = PolarizationDrift(ramp_rad_per_s=2.0).unitaries(3, 0.25, np.random.default_rng(0))
    assert np.allclose(u[2], su2(np.array([0, 0, 1.0]), 1.0))


def test_mode_overlap_and_slot_alignment():
    assert mode_overlap(0.0, 50.0) == 1.0
    assert mode_overlap(100.0, 50.0) == pytest.approx(np.exp(-0.5))
    shift, residual = slot_alignment(np.array([1400.0, -600.0]), 1000.0)
    assert shift.tolist() == [1, -1]
    assert residual.tolist() == pytest.approx([400.0, 400.0])


def test_link_turns_clock_skew_into_overlap_and_shift():
    plan = three_intensity_plan()
    link = Link(Source(plan), Source(plan), Fiber(1), Fiber(1),
                clock_b=Clock(offset_ps=30.0, frequency_offset_ppm=1.0), frame_bits=20)
    phys = link.physics(0, 3 << 20)
    t = np.arange(3) * link.frame_seconds
    dt = 30.0 + 1e-6 * t * 1e12  # Bob's clock runs 1 ppm fast: ~1 ns later every ~1 ms frame
    shift = np.round(dt / 1000.0)
    residual = dt - 1000.0 * shift
    assert phys.gamma == pytest.approx(np.exp(-residual**2 / (8 * 50.0**2)))
    assert phys.bob_slot_offset.tolist() == (-shift).astype(int).tolist() == [0, -1, -2]


def test_link_rejects_bad_gamma():
    plan = three_intensity_plan()
    with pytest.raises(ValueError, match="gamma"):
        Link(Source(plan), Source(plan), Fiber(1), Fiber(1), gamma_override=1.5)
