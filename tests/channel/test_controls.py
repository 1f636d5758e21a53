"""A user's actuators at its source (channel.controls): the polarization controller undoes the
rotation its fiber adds after it, the delay undoes a timing offset, and nothing outside their
ranges is taken. Checked against the exact model (channel.analytic), to rounding."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from channel.analytic import exact_frame_statistics
from channel.clock import Clock
from channel.controls import MAX_DELAY_PS, MAX_ROTATION_RAD, SourceControls
from channel.fiber import Fiber, su2
from channel.link import Link
from channel.settings import three_intensity_plan
from channel.source import Source
from nodes.relay_software import BELL_OF_PATTERN

PLAN = three_intensity_plan()


def _link(**changes) -> Link:
    return replace(Link(Source(PLAN), Source(PLAN), Fiber(25), Fiber(25)), **changes)


def _stats(link: Link, basis: int):
    return exact_frame_statistics(link, PLAN, PLAN, 0, basis, 0, 0,
                                  bell_of_pattern=BELL_OF_PATTERN)


@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, -2, 0.5)])
@pytest.mark.parametrize("arm", ["a", "b"])
def test_the_polarization_controller_undoes_the_fibers_rotation(axis, arm):
    angle = 0.5
    rotated = Fiber(25, rotation=su2(np.array(axis), angle))
    link = _link(**{f"fiber_{arm}": rotated})
    n = np.asarray(axis, float) / np.linalg.norm(axis)
    undo = SourceControls(tuple(-angle * n))
    fixed = replace(link, **{f"controls_{arm}": undo})
    rises = []
    for basis in (0, 1):
        aligned, broken, compensated = _stats(_link(), basis), _stats(link, basis), _stats(
            fixed, basis)
        rises.append(broken.error_rate - aligned.error_rate)
        assert compensated.error_rate == pytest.approx(aligned.error_rate, rel=1e-9, abs=1e-12)
        assert compensated.gain == pytest.approx(aligned.gain, rel=1e-9)
    # the rotation matters (a turn about the D/A axis leaves the X basis alone, not the Z one)
    assert max(rises) > 1e-2


def test_the_controller_acts_before_the_fiber_not_after():
    # U_fiber · C: a controller equal to the fiber's rotation doubles it instead
    r = su2(np.array([0.0, 1.0, 0.0]), 0.3)
    link = _link(fiber_b=Fiber(25, rotation=r), controls_b=SourceControls((0.0, 0.3, 0.0)))
    ph = link.physics(0, 1 << link.frame_bits)
    np.testing.assert_allclose(ph.unitary_b[0], r @ r, atol=1e-12)


def test_the_delay_undoes_a_clock_offset_between_the_users():
    late = _link(clock_b=Clock(offset_ps=150.0))
    slot = 1 << late.frame_bits
    assert late.physics(0, slot).gamma[0] < 0.9
    for fixed in (replace(late, controls_b=SourceControls(delay_ps=-150.0)),
                  replace(late, controls_a=SourceControls(delay_ps=150.0))):
        ph = fixed.physics(0, slot)
        assert ph.gamma[0] == pytest.approx(1.0, abs=1e-12)
        assert ph.residual_offset_ps[0] == pytest.approx(0.0, abs=1e-9)


def test_a_delay_of_more_than_half_a_slot_moves_bobs_pulses_to_another_slot():
    ph = _link(controls_b=SourceControls(delay_ps=1000.0)).physics(0, 1 << 20)
    assert ph.bob_slot_offset[0] == -1 and ph.gamma[0] == pytest.approx(1.0)


@pytest.mark.parametrize("rotation, delay", [
    ((0.0, 0.0, MAX_ROTATION_RAD * 1.001), 0.0), ((math.nan, 0.0, 0.0), 0.0),
    ((0.0, 0.0), 0.0), ((0.0, 0.0, 0.0), MAX_DELAY_PS * 1.5), ((0.0, 0.0, 0.0), math.inf),
])
def test_settings_outside_the_actuators_ranges_are_refused(rotation, delay):
    with pytest.raises(ValueError, match="rotation_rad|delay_ps"):
        SourceControls(rotation, delay)


def test_the_identity_changes_nothing():
    assert SourceControls().is_identity
    np.testing.assert_allclose(SourceControls().unitary, np.eye(2))
    a, b = _link(), _link(controls_a=SourceControls(), controls_b=SourceControls())
    for name in ("unitary_a", "unitary_b", "gamma", "residual_offset_ps"):
        np.testing.assert_array_equal(getattr(a.physics(0, 1 << 20), name),
                                      getattr(b.physics(0, 1 << 20), name))
