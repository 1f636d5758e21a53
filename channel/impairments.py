"""Faults in nature's physics, switched on and off at emulated times (docs/physics.md §9).

A scenario's ``method`` is a timeline of faults and actions (docs/scenario-format.md). This module
turns it, as plain values (``TimelineEntry``), into each fault's window (``fault_windows``: a
``duration`` or a later ``clear_faults`` ends it) and then into what the samplers read:

* **link faults** (``LINK_FAULTS``: ``loss``, ``fiber_cut``, ``polarization_rotation``,
  ``polarization_drift``) become per-frame factors on an arm's transmittance and per-frame
  unitaries applied after the fiber's own (``FaultSchedule.arm_effects``, called by
  ``Link.physics``): piecewise constant per settings frame, as the fiber's drift already is;
* **an eavesdropper** (``EAVESDROPPER_FAULTS``: ``intercept_resend`` on a link) becomes a
  per-frame attacked share and resent mean photon number of that arm
  (``FaultSchedule.attack_effects``; the attack itself is ``channel.eavesdropper``'s);
* **timing faults** (``TIMING_FAULTS``: ``clock_offset``, ``clock_skew``, ``jitter`` on a source's
  clock or the relay's) become per-frame time errors and extra rms jitter of that clock
  (``FaultSchedule.clock_effects``, called by ``Link.physics``), also piecewise constant per frame;
* **device faults** (``DEVICE_FAULTS``: the relay's detectors, the users' sources) change a
  device model, so a slot range is cut where the set of active device faults changes
  (``FaultSchedule.device_segments``) and each piece is sampled with a changed ``RelayOptics`` or
  ``Source`` (``with_device_faults``);
* **the relay's attack** (``malicious_relay`` with ``mode: intercept_resend``,
  ``channel.relay_attack``) cuts the range the same way, and its pieces are sampled with the
  attack's own sampler on the slots it attacks (``FaultSchedule.attack_of``).

Time is counted in frames: a fault acts on frame f when its window holds the frame's start
f·2^b / clock_rate (its start and end are rounded to the nearest slot first), so every piece is
whole frames and the samplers keep their per-frame tables. Everything is a pure function of the
timeline and a seed: the random walk of a drift fault is drawn in blocks of ``WALK_BLOCK`` frames,
each from its own stream keyed by ``channel.rng.derive_seed`` (the fault's name, the block), so the
same frames get the same unitaries whatever ranges are asked for and in whatever order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from channel.eavesdropper import DEFAULT_RESEND_MEAN_PHOTON_NUMBER
from channel.fiber import PolarizationDrift, linear_rotation
from channel.relay import DETECTOR_NAMES, Detector, RelayOptics
from channel.relay_attack import RelayAttack, is_relay_attack
from channel.rng import derive_seed
from channel.source import Source

# the timeline's values and windows live in channel.timeline (Charles reads them too); re-exported
from channel.timeline import Fault as Fault
from channel.timeline import TimelineEntry as TimelineEntry
from channel.timeline import fault_rounds as fault_rounds
from channel.timeline import fault_slots as fault_slots
from channel.timeline import fault_windows as fault_windows
from channel.timeline import frame_at as frame_at

#: Faults in a fiber's optics: per-frame transmittance factors and unitaries.
LINK_FAULTS = ("loss", "fiber_cut", "polarization_rotation", "polarization_drift")
#: Faults in a device model (the relay's detectors, a user's source).
RELAY_FAULTS = ("dark_count_surge", "detector_efficiency", "detector_dead")
SOURCE_FAULTS = ("intensity_miscalibration", "intensity_fluctuation")
DEVICE_FAULTS = RELAY_FAULTS + SOURCE_FAULTS
#: Faults of a clock (a source's or the relay's): per-frame time errors and extra jitter.
TIMING_FAULTS = ("clock_offset", "clock_skew", "jitter")
#: An eavesdropper on a fiber (``channel.eavesdropper``): per-frame attacked share of an arm.
EAVESDROPPER_FAULTS = ("intercept_resend",)
#: Every fault this module emulates; the others are left to the nodes and the edge.
PHYSICS_FAULTS = LINK_FAULTS + EAVESDROPPER_FAULTS + TIMING_FAULTS + DEVICE_FAULTS
#: The arm (``a`` Alice's, ``b`` Bob's) a link or source target names.
ARM_OF_TARGET = {"link/alice-charles": "a", "link/bob-charles": "b",
                 "source/alice": "a", "source/bob": "b"}
#: The clock a timing fault's target names: a user's source (``a``, ``b``) or the relay's.
CLOCK_OF_TARGET = {"source/alice": "a", "source/bob": "b", "relay": "relay"}
#: Frames per block of a drift fault's random walk (one random stream and one checkpoint each).
WALK_BLOCK = 1024
#: The fault ramp turns about the circular (S3) axis of the Poincaré sphere: a real-space linear
#: rotation by half the angle, which mixes H with V and D with A, so both bases see it.
FAULT_RAMP_AXIS = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class FaultSchedule:
    """The physics faults of a run (``PHYSICS_FAULTS`` only, in time order) and the seed of their
    random drift; ``Link`` holds one and applies it per frame. The walk checkpoints are a cache
    of pure values, shared by the copies ``link_only`` makes."""

    faults: tuple[Fault, ...]
    seed: int = 0
    _walks: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_timeline(cls, entries: Sequence[TimelineEntry], seed: int) -> FaultSchedule:
        """``seed``: nature's drift seed (the fault walks' streams are derived from it)."""
        kept = tuple(f for f in fault_windows(entries) if (
            f.kind in PHYSICS_FAULTS or is_relay_attack(f.kind, f.params)) and f.end_s > f.start_s)
        return cls(kept, derive_seed(seed, "fault drift"))

    def frames_of(self, fault: Fault, clock_rate_hz: float, frame_bits: int) -> tuple[int, int]:
        """The frames ``[first, stop)`` the fault acts on."""
        return (frame_at(fault.start_s, clock_rate_hz, frame_bits),
                frame_at(fault.end_s, clock_rate_hz, frame_bits))

    @property
    def has_device_faults(self) -> bool:
        """Faults that cut a range into pieces: device faults and the relay's attack."""
        return any(_cuts(f) for f in self.faults)

    def attack_of(self, active: Sequence[Fault]) -> RelayAttack | None:
        """The relay's intercept–resend among ``active`` (``channel.relay_attack``), with the key
        that picks its slots, or None."""
        for f in active:
            if is_relay_attack(f.kind, f.params):
                return RelayAttack(f.name, float(f.params.get("fraction", 1.0)),
                                   derive_seed(self.seed, f"relay attack {f.name}"))
        return None

    def link_only(self) -> FaultSchedule:
        """This schedule without the faults that cut a range (device faults and the relay's
        attack), for a piece of a link whose devices and attack already carry them; the link's
        own faults (optics, clocks, an eavesdropper on a fiber) stay."""
        return dataclasses.replace(self, faults=tuple(f for f in self.faults if not _cuts(f)))

    # --- link faults ---------------------------------------------------------------------------

    def arm_effects(self, arm: str, frames: np.ndarray, clock_rate_hz: float,
                    frame_bits: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Per frame of ``frames``: the factor on arm ``arm``'s transmittance, and the unitary
        applied after its fiber's (None when no fault turns the polarization)."""
        frames = np.asarray(frames, dtype=np.int64)
        factor = np.ones(frames.size)
        unitary: np.ndarray | None = None
        frame_s = (1 << frame_bits) / clock_rate_hz
        for fault in self.faults:
            if fault.kind not in LINK_FAULTS or ARM_OF_TARGET.get(fault.target) != arm:
                continue
            first, stop = self.frames_of(fault, clock_rate_hz, frame_bits)
            on = (frames >= first) & (frames < stop)
            if not on.any():
                continue
            if fault.kind == "loss":
                factor[on] *= loss_factor(fault.params, (frames[on] - first) * frame_s)
            elif fault.kind == "fiber_cut":
                factor[on] = 0.0
            else:
                turn = (linear_rotation(float(fault.params["angle_rad"]))[None]
                        if fault.kind == "polarization_rotation"
                        else self._walk(fault, frames[on] - first, frame_s))
                if unitary is None:
                    unitary = np.broadcast_to(np.eye(2, dtype=np.complex128),
                                              (frames.size, 2, 2)).copy()
                unitary[on] = np.einsum("nij,njk->nik", np.broadcast_to(
                    turn, (int(on.sum()), 2, 2)), unitary[on])
        return factor, unitary

    # --- an eavesdropper on a fiber -------------------------------------------------------------

    def attack_effects(self, arm: str, frames: np.ndarray, clock_rate_hz: float,
                       frame_bits: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Per frame of ``frames``: the share of arm ``arm``'s pulses Eve attacks and the mean
        photon number she resends; and her key for choosing the slots (``channel.eavesdropper``)."""
        frames = np.asarray(frames, dtype=np.int64)
        fraction = np.zeros(frames.size)
        resend_mu = np.zeros(frames.size)
        for fault in self.faults:
            if fault.kind not in EAVESDROPPER_FAULTS or ARM_OF_TARGET.get(fault.target) != arm:
                continue
            first, stop = self.frames_of(fault, clock_rate_hz, frame_bits)
            on = (frames >= first) & (frames < stop)
            fraction[on] = float(fault.params["fraction"])
            resend_mu[on] = float(fault.params.get("resend_mean_photon_number",
                                                   DEFAULT_RESEND_MEAN_PHOTON_NUMBER))
        return fraction, resend_mu, derive_seed(self.seed, "intercept_resend", ord(arm))

    # --- timing faults -------------------------------------------------------------------------

    def clock_effects(self, frames: np.ndarray, clock_rate_hz: float,
                      frame_bits: int) -> ClockEffects:
        """Per frame of ``frames`` and per clock (``a``, ``b``, ``relay``): the time error the
        timing faults add (ps) and the extra rms jitter (ps, the faults' added in quadrature).

        ``clock_offset`` adds ``offset_ps`` to its clock's time; ``clock_skew`` runs its clock
        ``skew_ppm`` fast (negative: slow) from the fault's first frame, so the error at a frame
        is skew_ppm·10⁻⁶ × (time since that frame) (evaluated at each frame's start, piecewise
        constant like every per-frame effect); when the fault ends the clock is back in step
        (the error it built up is gone). ``jitter`` adds ``jitter_ps`` rms."""
        frames = np.asarray(frames, dtype=np.int64)
        error = {c: np.zeros(frames.size) for c in ("a", "b", "relay")}
        variance = {c: np.zeros(frames.size) for c in ("a", "b", "relay")}
        frame_s = (1 << frame_bits) / clock_rate_hz
        for fault in self.faults:
            clock = CLOCK_OF_TARGET.get(fault.target)
            if fault.kind not in TIMING_FAULTS or clock is None:
                continue
            first, stop = self.frames_of(fault, clock_rate_hz, frame_bits)
            on = (frames >= first) & (frames < stop)
            if fault.kind == "clock_offset":
                error[clock][on] += float(fault.params["offset_ps"])
            elif fault.kind == "clock_skew":
                elapsed_s = (frames[on] - first) * frame_s
                error[clock][on] += skew_error_ps(float(fault.params["skew_ppm"]), elapsed_s)
            else:
                variance[clock][on] += float(fault.params["jitter_ps"]) ** 2
        return ClockEffects(error["a"], error["b"], error["relay"], np.sqrt(variance["a"]),
                            np.sqrt(variance["b"]), np.sqrt(variance["relay"]))

    def _walk(self, fault: Fault, steps: np.ndarray, frame_s: float) -> np.ndarray:
        """The drift fault's unitary after ``steps`` frames of it (identity at 0)."""
        drift = PolarizationDrift(float(fault.params.get("rate_rad_per_sqrt_s", 0.0)),
                                  float(fault.params.get("ramp_rad_per_s", 0.0)),
                                  FAULT_RAMP_AXIS)
        checkpoints = self._walks.setdefault(f"{fault.name} {frame_s!r}",
                                             [np.eye(2, dtype=np.complex128)])
        out = np.empty((steps.size, 2, 2), dtype=np.complex128)
        blocks = steps // WALK_BLOCK
        for block in np.unique(blocks):
            while len(checkpoints) <= block:  # the product of every whole block before
                j = len(checkpoints) - 1
                prefix = _prefix_products(self._block_steps(drift, fault, j, frame_s))
                checkpoints.append(prefix[-1] @ checkpoints[j])
            prefix = _prefix_products(self._block_steps(drift, fault, int(block), frame_s))
            here = blocks == block
            within = steps[here] % WALK_BLOCK
            exclusive = np.concatenate([np.eye(2, dtype=np.complex128)[None], prefix[:-1]])
            out[here] = exclusive[within] @ checkpoints[block]
        return out

    def _block_steps(self, drift: PolarizationDrift, fault: Fault, block: int,
                     frame_s: float) -> np.ndarray:
        rng = np.random.default_rng(derive_seed(self.seed, f"walk {fault.name}", block))
        return drift.steps(rng.standard_normal((WALK_BLOCK, 3)), frame_s)

    # --- device faults -------------------------------------------------------------------------

    def device_segments(self, start: int, stop: int, clock_rate_hz: float,
                        frame_bits: int) -> list[tuple[int, int, tuple[Fault, ...]]]:
        """``[start, stop)`` cut where the set of active device faults (and the relay's attack)
        changes: (lo, hi, the faults active there, in time order)."""
        windows = [(f, *self.frames_of(f, clock_rate_hz, frame_bits))
                   for f in self.faults if _cuts(f)]
        cuts = sorted({start, stop} | {b << frame_bits for _, a, z in windows for b in (a, z)
                                       if start < b << frame_bits < stop})
        out: list[tuple[int, int, tuple[Fault, ...]]] = []
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            frame = lo >> frame_bits
            active = tuple(f for f, a, z in windows if a <= frame < z)
            if out and out[-1][2] == active:
                out[-1] = (out[-1][0], hi, active)
            else:
                out.append((lo, hi, active))
        return out


def _cuts(fault: Fault) -> bool:
    """Whether a fault is sampled piecewise: a device fault or the relay's attack."""
    return fault.kind in DEVICE_FAULTS or is_relay_attack(fault.kind, fault.params)


class ClockEffects(NamedTuple):
    """What the timing faults add, per frame (ps): time errors of the two sources' clocks and
    of the relay's, and extra rms jitter of each (zero where no fault acts)."""

    error_a_ps: np.ndarray
    error_b_ps: np.ndarray
    error_relay_ps: np.ndarray
    jitter_a_ps: np.ndarray
    jitter_b_ps: np.ndarray
    jitter_relay_ps: np.ndarray


def skew_error_ps(skew_ppm: float, elapsed_s: np.ndarray | float) -> np.ndarray:
    """The time error (ps) of a clock running ``skew_ppm`` fast for ``elapsed_s`` seconds."""
    return skew_ppm * 1e-6 * np.asarray(elapsed_s, dtype=np.float64) * 1e12


def loss_factor(params: Mapping[str, Any], elapsed_s: np.ndarray) -> np.ndarray:
    """10^(−L/10) with L = ``extra_db``, or, with ``ramp_s`` > 0, L growing linearly from 0 over
    ``ramp_s`` seconds of the fault (``elapsed_s``: time since its first frame)."""
    extra = float(params["extra_db"])
    ramp = float(params.get("ramp_s", 0.0) or 0.0)
    share = np.ones_like(elapsed_s, dtype=np.float64) if ramp <= 0 else np.clip(
        np.asarray(elapsed_s, dtype=np.float64) / ramp, 0.0, 1.0)
    return 10.0 ** (-extra * share / 10.0)


def _prefix_products(steps: np.ndarray) -> np.ndarray:
    """M_i = S_i S_{i−1} … S_0 for each i (a Hillis–Steele scan: log₂ n vectorized products)."""
    out = steps.copy()
    d = 1
    while d < out.shape[0]:
        out[d:] = out[d:] @ out[:-d]
        d *= 2
    return out


def _detectors(relay: RelayOptics, name: str) -> list[int]:
    return list(range(len(DETECTOR_NAMES))) if name == "all" else [DETECTOR_NAMES.index(name)]


def faulty_relay(relay: RelayOptics, faults: Sequence[Fault]) -> RelayOptics:
    """The detectors under the relay faults: a surge adds dark counts (``surged_dark_count``),
    an efficiency fault multiplies the efficiency, a dead detector neither sees light nor counts
    dark (applied last, so it wins)."""
    dets = list(relay.detectors)
    ordered = [f for f in faults if f.kind != "detector_dead"] + [
        f for f in faults if f.kind == "detector_dead"]
    for fault in ordered:
        for k in _detectors(relay, str(fault.params.get("detector", "all"))):
            d = dets[k]
            if fault.kind == "dark_count_surge":
                d = dataclasses.replace(d, dark_count_probability=surged_dark_count(
                    d.dark_count_probability, float(fault.params["dark_count_probability"])))
            elif fault.kind == "detector_efficiency":
                d = dataclasses.replace(
                    d, efficiency=d.efficiency * float(fault.params["efficiency_factor"]))
            elif fault.kind == "detector_dead":
                d = Detector(0.0, 0.0, d.dead_time_slots, 0.0, d.jitter_ps)
            dets[k] = d
    return RelayOptics(tuple(dets))  # type: ignore[arg-type]


def surged_dark_count(configured: float, surge: float) -> float:
    """A detector's dark-count probability per slot under a surge: the configured dark counts and
    the surge's are independent sources of a click, 1 − (1 − p₀)(1 − p_s)."""
    return 1.0 - (1.0 - configured) * (1.0 - surge)


def combined_fluctuation(configured: float, fault: float) -> float:
    """A source's relative rms fluctuation under a fluctuation fault: two independent Gaussian
    fluctuations of the pulse energy add in quadrature, √(r₀² + r²)."""
    return math.hypot(configured, fault)


def faulty_source(source: Source, faults: Sequence[Fault]) -> Source:
    """The source under its faults: a miscalibrated class emits factor × its nominal mean (the
    plan, which the users' estimation reads, keeps the nominal value); a fluctuation fault adds
    to the configured fluctuation (``combined_fluctuation``)."""
    names = [c.name for c in source.plan.intensities]
    factors = np.array(source.mean_photon_number_factors or (1.0,) * len(names))
    fluctuation = source.intensity_fluctuation_rel
    for fault in faults:
        if fault.kind == "intensity_miscalibration":
            factors[names.index(str(fault.params["intensity"]))] *= float(
                fault.params["mean_photon_number_factor"])
        elif fault.kind == "intensity_fluctuation":
            fluctuation = combined_fluctuation(fluctuation, float(fault.params["fluctuation_rel"]))
    return dataclasses.replace(source, intensity_fluctuation_rel=fluctuation,
                               mean_photon_number_factors=tuple(float(x) for x in factors))


def with_device_faults(relay: RelayOptics, source_a: Source, source_b: Source,
                       faults: Sequence[Fault]) -> tuple[RelayOptics, Source, Source]:
    """The relay and both sources under the active device faults."""
    relay_faults = [f for f in faults if f.kind in RELAY_FAULTS]
    by_arm = {arm: [f for f in faults if f.kind in SOURCE_FAULTS
                    and ARM_OF_TARGET.get(f.target) == arm] for arm in ("a", "b")}
    return (faulty_relay(relay, relay_faults) if relay_faults else relay,
            faulty_source(source_a, by_arm["a"]) if by_arm["a"] else source_a,
            faulty_source(source_b, by_arm["b"]) if by_arm["b"] else source_b)
