"""A user's own actuators at its source, which its calibration loops set (``nodes.calibration``).

* a **polarization controller** in front of the fiber: a rotation of the Poincaré sphere by the
  rotation vector ``rotation_rad`` (``channel.fiber.su2(v, |v|)``), applied to every pulse before
  the fiber, so it can undo a rotation the fiber adds after it;
* a **delay** its clock adds to its emission (ps): its pulses reach the relay that much later, so
  it can undo a timing offset between the two users' pulses.

Nature applies them per pulse batch (``channel.link.Link.physics``); a batch carries its user's
settings (``nodes.transport.PulseBatch``). The users are not trusted by nature any more than by
each other: a setting outside the controller's range is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from channel.fiber import su2

#: The polarization controller's range: each component of the rotation vector (rad).
MAX_ROTATION_RAD = 2 * math.pi
#: The delay line's range (ps): ± 1 µs.
MAX_DELAY_PS = 1.0e6


@dataclass(frozen=True)
class SourceControls:
    """One user's actuator settings; the default is the identity (no rotation, no delay)."""

    rotation_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    delay_ps: float = 0.0

    def __post_init__(self) -> None:
        rot = tuple(float(x) for x in self.rotation_rad)
        if len(rot) != 3 or not all(math.isfinite(x) and abs(x) <= MAX_ROTATION_RAD for x in rot):
            raise ValueError(f"rotation_rad must be three finite numbers within "
                             f"±{MAX_ROTATION_RAD:.6g} rad, got {self.rotation_rad!r}")
        if not (math.isfinite(self.delay_ps) and abs(self.delay_ps) <= MAX_DELAY_PS):
            raise ValueError(f"delay_ps must be finite and within ±{MAX_DELAY_PS:g} ps, got "
                             f"{self.delay_ps!r}")
        object.__setattr__(self, "rotation_rad", rot)
        object.__setattr__(self, "delay_ps", float(self.delay_ps))

    @property
    def is_identity(self) -> bool:
        return self.delay_ps == 0.0 and not any(self.rotation_rad)

    @property
    def unitary(self) -> np.ndarray:
        """The polarization controller's 2×2 unitary."""
        v = np.asarray(self.rotation_rad)
        return su2(v, float(np.linalg.norm(v)))


IDENTITY = SourceControls()
