"""The timing the relay sees: click-time offset and jitter per detector, from the records alone.

Charles's electronics time-tag every click (``DetectionRecords.time_ps``) and label it with a
slot of his own clock; the public pulse clock gives the slot period. A click's **residual** is
its time minus its slot's start on that grid, ``t − slot · slot_ps`` (ps). Over a round, per
detector, the mean residual is the offset at which the light arrives on Charles's grid and the
rms spread about it the jitter he sees. In the emulator's model (``channel.samplers``) a click
of slot s is tagged at ``s · slot_ps + δt/2 + Δ_relay + σ_k · z`` and labelled
``s + round(Δ_relay / slot_ps)``: the mean residual is the Alice–Bob mid-point offset δt/2 plus
the relay clock's error modulo a slot, the rms the detector's jitter with the relay clock's and
(mid-point) the sources' in quadrature (``FramePhysics.click_jitter_ps``), plus whatever the
offset drifts within the round. No setting enters: every click of every record counts, Bell
state or not, whatever the users sent.

``TimingAccumulator`` sums per batch (vectorized over the batch's clicks) and is read once per
round; nothing here knows the link.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from channel.arrays import readonly
from channel.relay import DETECTOR_NAMES, N_DETECTORS, NO_CLICK_TIME, DetectionRecords


@dataclass(frozen=True)
class DetectorTiming:
    """One detector's clicks of a round on the relay's grid: ``clicks`` counted, their mean
    residual ``offset_ps`` and the rms ``jitter_ps`` about it (the population standard
    deviation; 0 with one click; both None with none)."""

    detector: str
    clicks: int
    offset_ps: float | None
    jitter_ps: float | None


@dataclass
class TimingAccumulator:
    """Per detector: clicks, Σ residual and Σ residual² (ps, ps²) of the batches added so far.

    A residual is within about a slot of 0, so float64 sums over 10⁹ clicks keep far better
    than a picosecond; with an integer slot period (every clock rate dividing 10¹² Hz) the
    residual itself is computed exactly in integers."""

    slot_ps: float
    clicks: np.ndarray = field(default_factory=lambda: np.zeros(N_DETECTORS, np.int64))
    total_ps: np.ndarray = field(default_factory=lambda: np.zeros(N_DETECTORS))
    total_sq_ps2: np.ndarray = field(default_factory=lambda: np.zeros(N_DETECTORS))

    def __post_init__(self) -> None:
        if not self.slot_ps > 0:
            raise ValueError(f"slot_ps must be > 0, got {self.slot_ps}")

    def add(self, records: DetectionRecords) -> None:
        """Add one batch's clicks (one pass over its records, compiled)."""
        if len(records) == 0:
            return
        slot_ps = float(self.slot_ps)
        _accumulate(readonly(np.ascontiguousarray(records.slot, np.int64)),
                    readonly(np.ascontiguousarray(records.time_ps, np.int64)), slot_ps,
                    np.int64(slot_ps) if slot_ps.is_integer() else np.int64(0),
                    self.clicks, self.total_ps, self.total_sq_ps2)

    def read(self) -> tuple[DetectorTiming, ...]:
        out = []
        for k, name in enumerate(DETECTOR_NAMES):
            n = int(self.clicks[k])
            if n == 0:
                out.append(DetectorTiming(name, 0, None, None))
                continue
            mean = float(self.total_ps[k] / n)
            var = max(float(self.total_sq_ps2[k] / n) - mean * mean, 0.0)
            out.append(DetectorTiming(name, n, mean, var ** 0.5))
        return tuple(out)


@njit(cache=True)
def _accumulate(slots, times, slot_ps, whole_slot_ps, clicks, total, total_sq
                ):  # pragma: no cover - numba
    """Per detector: clicks, Σ residual, Σ residual² of the records, added in place. With an
    integer slot period (``whole_slot_ps`` > 0) the residual is computed exactly in integers."""
    for i in range(slots.size):
        for k in range(times.shape[1]):
            t = times[i, k]
            if t == NO_CLICK_TIME:
                continue
            if whole_slot_ps > 0:
                r = float(t - slots[i] * whole_slot_ps)
            else:
                r = float(t) - float(slots[i]) * slot_ps
            clicks[k] += 1
            total[k] += r
            total_sq[k] += r * r


def warm_up_timing() -> None:
    """Compile (or load from numba's cache) the accumulation before the first records arrive."""
    times = np.full((1, N_DETECTORS), NO_CLICK_TIME, np.int64)
    times[0, :2] = 0
    TimingAccumulator(1000.0).add(DetectionRecords(np.zeros(1, np.int64),
                                                   np.full(1, 0b0011, np.uint8), times))
