"""The relay's optics and detectors, and the records they produce.

Layout (docs/physics.md §4): a 50:50 beam splitter with outputs c = (a+b)/√2 and d = (a−b)/√2, a
polarizing beam splitter on each, four threshold detectors. Detector indices and pattern bits:

    0 = cH, 1 = cV, 2 = dH, 3 = dV     pattern = Σ 2**k over detectors k that clicked

``DetectionRecords`` is all Charles's software receives (docs/trust-boundaries.md): slot,
click pattern, click times. It has no field for a basis, bit or intensity, by construction. Which
patterns count as a Bell state, and within which coincidence window, is the relay software's
decision, not nature's, so it is not made here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from channel.defaults import DARK_COUNT_PROBABILITY, DETECTOR_EFFICIENCY

N_DETECTORS = 4
#: Detector names in index order (the columns of ``DetectionRecords.time_ps``, the singles).
DETECTOR_NAMES = ("cH", "cV", "dH", "dV")
NO_CLICK_TIME = np.iinfo(np.int64).min


@dataclass(frozen=True)
class Detector:
    """A threshold single-photon detector.

    ``efficiency`` multiplies the mean photon number reaching it; ``dark_count_probability`` is per
    detector per slot; ``dead_time_slots`` whole slots after a click during which it cannot click;
    ``afterpulsing_probability`` the chance that a click causes a spurious click in the first slot
    after the dead time; ``jitter_ps`` the rms timing jitter of its timestamps.
    """

    efficiency: float = DETECTOR_EFFICIENCY
    dark_count_probability: float = DARK_COUNT_PROBABILITY
    dead_time_slots: int = 0
    afterpulsing_probability: float = 0.0
    jitter_ps: float = 0.0

    def __post_init__(self) -> None:
        for name in ("efficiency", "dark_count_probability", "afterpulsing_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"detector {name} must be in [0, 1], got {value}")
        if self.dead_time_slots < 0:
            raise ValueError(f"detector dead_time_slots must be >= 0, got {self.dead_time_slots}")
        if not self.jitter_ps >= 0:
            raise ValueError(f"detector jitter_ps must be >= 0, got {self.jitter_ps}")


@dataclass(frozen=True)
class RelayOptics:
    """Four detectors, in the order of ``DETECTOR_NAMES``."""

    detectors: tuple[Detector, Detector, Detector, Detector] = field(
        default_factory=lambda: (Detector(),) * N_DETECTORS)

    def __post_init__(self) -> None:
        if len(self.detectors) != N_DETECTORS:
            raise ValueError(f"the relay needs exactly {N_DETECTORS} detectors")

    @classmethod
    def uniform(cls, efficiency: float = DETECTOR_EFFICIENCY,
                dark_count_probability: float = DARK_COUNT_PROBABILITY) -> RelayOptics:
        det = Detector(efficiency=efficiency, dark_count_probability=dark_count_probability)
        return cls(detectors=(det,) * N_DETECTORS)

    @property
    def efficiencies(self) -> np.ndarray:
        return np.array([d.efficiency for d in self.detectors])

    @property
    def dark_count_probabilities(self) -> np.ndarray:
        return np.array([d.dark_count_probability for d in self.detectors])

    @property
    def jitters_ps(self) -> np.ndarray:
        return np.array([d.jitter_ps for d in self.detectors])

    @property
    def has_memory(self) -> bool:
        """True when a click changes later slots (dead time or afterpulsing)."""
        return any(d.dead_time_slots > 0 or d.afterpulsing_probability > 0 for d in self.detectors)


@dataclass(frozen=True)
class DetectionRecords:
    """Slots with at least two clicks, as the relay's electronics report them.

    ``slot`` int64 (sorted), ``pattern`` uint8 bitmask, ``time_ps`` (n, 4) int64 click times with
    ``NO_CLICK_TIME`` for detectors that did not click.
    """

    slot: np.ndarray
    pattern: np.ndarray
    time_ps: np.ndarray

    def __len__(self) -> int:
        return int(self.slot.size)

    @classmethod
    def empty(cls) -> DetectionRecords:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.uint8),
                   np.zeros((0, N_DETECTORS), np.int64))

    @classmethod
    def concatenate(cls, parts: list[DetectionRecords]) -> DetectionRecords:
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.slot for p in parts]),
                   np.concatenate([p.pattern for p in parts]),
                   np.concatenate([p.time_ps for p in parts]))


@dataclass(frozen=True)
class RelayOutput:
    """What the detectors produced over slots ``[start, stop)``: coincidence records and singles."""

    start: int
    stop: int
    records: DetectionRecords
    singles: np.ndarray  # (4,) int64 clicks per detector, coincidences included

    @property
    def slots(self) -> int:
        return self.stop - self.start

