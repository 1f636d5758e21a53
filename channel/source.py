"""The source output model: phase-randomized weak coherent pulses in BB84 polarization states.

Jones vectors (docs/physics.md §2): bit 0 = H or D, bit 1 = V or A. Phases are random per pulse by
default (the analytic model assumes it); a phase-locked source is offered for experiments.
Intensity fluctuation is relative and Gaussian, clipped at ``FLUCTUATION_CLIP_SIGMAS`` so that the
samplers keep a finite upper bound on the brightest pulse (and, at most 0.2, no pulse goes below
zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from channel.settings import SettingsPlan

INV_SQRT2 = 1.0 / np.sqrt(2.0)
#: JONES[basis, bit] -> (H, V) amplitudes.
JONES = np.array(
    [[[1.0, 0.0], [0.0, 1.0]],  # Z: H, V
     [[INV_SQRT2, INV_SQRT2], [INV_SQRT2, -INV_SQRT2]]],  # X: D, A
    dtype=np.complex128,
)
FLUCTUATION_CLIP_SIGMAS = 5.0


@dataclass(frozen=True)
class Source:
    """One user's source: the settings plan plus the imperfections of the device.

    ``intensity_fluctuation_rel``: relative rms fluctuation of every pulse's mean photon number
    (0 = ideal). ``bit_flip_probability``: the papers' flip-model misalignment e_d, applied as an
    encoder that prepares the other state of the basis with this probability while the user's
    record keeps the intended bit. Averaged over uniform bits this leaves every gain unchanged and
    turns a sifted error rate E into E + e_d(1 − 2E), exactly the flip model of docs/physics.md §6.
    """

    plan: SettingsPlan
    phase_randomized: bool = True
    intensity_fluctuation_rel: float = 0.0
    bit_flip_probability: float = 0.0
    #: What each class really emits, as a factor on its nominal mean photon number (the plan's,
    #: which the users' estimation reads); empty: every class as planned. A miscalibrated source
    #: (``channel.impairments``) has a factor other than 1.
    mean_photon_number_factors: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.intensity_fluctuation_rel <= 1.0 / FLUCTUATION_CLIP_SIGMAS:
            raise ValueError("intensity_fluctuation_rel must be in [0, 0.2], got "
                             f"{self.intensity_fluctuation_rel}")
        factors = self.mean_photon_number_factors
        if factors and (len(factors) != len(self.plan.intensities)
                        or not all(0.0 <= f < math.inf for f in factors)):
            raise ValueError(f"mean_photon_number_factors must be one finite factor >= 0 per "
                             f"intensity class ({len(self.plan.intensities)}), got {factors}")
        if not 0.0 <= self.bit_flip_probability <= 0.5:
            raise ValueError("bit_flip_probability (flip-model misalignment e_d) must be in "
                             f"[0, 0.5], got {self.bit_flip_probability}")

    def emitted_mean_photon_numbers(self, plan: SettingsPlan) -> np.ndarray:
        """The mean photon number each class of ``plan`` really has at the source's output."""
        nominal = plan.mean_photon_numbers
        if not self.mean_photon_number_factors:
            return nominal
        return nominal * np.asarray(self.mean_photon_number_factors, dtype=np.float64)

    @property
    def max_fluctuation_factor(self) -> float:
        return 1.0 + FLUCTUATION_CLIP_SIGMAS * self.intensity_fluctuation_rel
