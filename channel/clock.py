"""Node clocks and what their disagreement does at the relay.

Each node's clock has an offset (ps), a frequency offset (ppm), a linear frequency drift (ppm/s)
and rms jitter (ps). At the relay, the arrival-time difference δt between Alice's and Bob's pulses
of one slot becomes the mode overlap γ = exp(−δt²/(8τ²) − δω²τ²/2) (Gaussian transform-limited
pulses of rms intensity duration τ, docs/physics.md §3); once |δt| passes half a slot, pulses of
different slots meet, which the samplers emulate as a slot shift of Bob's settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clock:
    offset_ps: float = 0.0
    frequency_offset_ppm: float = 0.0
    drift_ppm_per_s: float = 0.0
    jitter_ps: float = 0.0

    def __post_init__(self) -> None:
        if not self.jitter_ps >= 0:
            raise ValueError(f"jitter_ps must be >= 0, got {self.jitter_ps}")

    def error_ps(self, t_s: np.ndarray | float) -> np.ndarray | float:
        """Deterministic time error of this clock at emulated time ``t_s`` (ps)."""
        ppm = self.frequency_offset_ppm + 0.5 * self.drift_ppm_per_s * np.asarray(t_s)
        return self.offset_ps + ppm * 1e-6 * np.asarray(t_s) * 1e12


def mode_overlap(delta_t_ps: np.ndarray | float, pulse_rms_ps: float,
                 detuning_rad_per_ps: float = 0.0) -> np.ndarray | float:
    """|γ| for a timing offset and detuning between two Gaussian pulses."""
    if pulse_rms_ps <= 0:
        raise ValueError(f"pulse_rms_ps must be > 0, got {pulse_rms_ps}")
    dt = np.asarray(delta_t_ps, dtype=np.float64)
    return np.exp(-dt**2 / (8.0 * pulse_rms_ps**2) - detuning_rad_per_ps**2 * pulse_rms_ps**2 / 2)


def slot_alignment(delta_t_ps: np.ndarray | float, slot_ps: float) -> tuple[np.ndarray, np.ndarray]:
    """Split an arrival offset into (whole-slot shift, residual offset in (−slot/2, slot/2])."""
    dt = np.asarray(delta_t_ps, dtype=np.float64)
    shift = np.round(dt / slot_ps).astype(np.int64)
    return shift, dt - shift * slot_ps
