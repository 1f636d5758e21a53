"""A whole emulated link (Alice's arm, Bob's arm, the relay) and its physics per settings frame.

``Link`` gathers the device models; ``Link.physics(start, stop)`` turns them into
``FramePhysics``: plain arrays, one entry per settings frame touched by slots ``[start, stop)``,
that the samplers read. Drift and clock errors are evaluated once per frame (piecewise constant),
and so are the faults of a game day (``channel.impairments``): link and timing faults here, per
frame; device faults by ``Link.device_segments``, which cuts a range where they change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from channel.clock import Clock, mode_overlap, slot_alignment
from channel.controls import IDENTITY, SourceControls
from channel.fiber import Fiber
from channel.impairments import FaultSchedule, with_device_faults
from channel.relay import RelayOptics
from channel.relay_attack import RelayAttack
from channel.rng import derive_seed
from channel.settings import DEFAULT_FRAME_BITS
from channel.source import Source


@dataclass(frozen=True)
class FramePhysics:
    """Per-frame link state for frames ``first_frame .. first_frame + n − 1``."""

    frame_bits: int
    first_frame: int
    transmittance_a: np.ndarray  # (n,) fiber only; detector efficiency is the relay's
    transmittance_b: np.ndarray
    unitary_a: np.ndarray  # (n, 2, 2) complex
    unitary_b: np.ndarray
    gamma: np.ndarray  # (n,) mode overlap |γ|
    bob_slot_offset: np.ndarray  # (n,) int64: Alice's slot s meets Bob's slot s + offset
    residual_offset_ps: np.ndarray  # (n,) arrival offset within the slot (Bob − Alice)
    #: (n,) the relay's clock error (ps): its timestamps read this much late, and it labels a
    #: click with the slot its own clock says (``relay_slot_shift``)
    relay_error_ps: np.ndarray
    #: (n, 4) rms jitter (ps) of each detector's click times: the detector's, the relay clock's
    #: and the two sources' (``(σ_a² + σ_b²)/2``) added in quadrature
    click_jitter_ps: np.ndarray
    #: (n,) share of each arm's pulses an eavesdropper attacks, and the mean photon number she
    #: resends (``channel.eavesdropper``); zeros without one
    attack_a: np.ndarray
    attack_b: np.ndarray
    resend_mu_a: np.ndarray
    resend_mu_b: np.ndarray
    #: her keys for choosing the attacked slots of each arm
    attack_key_a: int = 0
    attack_key_b: int = 0

    @property
    def attacked(self) -> bool:
        return bool(self.attack_a.any() or self.attack_b.any())

    @property
    def n_frames(self) -> int:
        return int(self.gamma.size)


@dataclass
class Link:
    """Device models of one MDI link (frozen; a changed link is a new ``Link``), and the
    drift unitaries it has drawn, cached per arm."""

    source_a: Source
    source_b: Source
    fiber_a: Fiber
    fiber_b: Fiber
    relay: RelayOptics = field(default_factory=RelayOptics)
    clock_a: Clock = field(default_factory=Clock)
    clock_b: Clock = field(default_factory=Clock)
    clock_rate_hz: float = 1e9
    pulse_rms_ps: float = 50.0
    detuning_rad_per_ps: float = 0.0
    gamma_override: float | None = None  # fixed |γ| (tests, `mdiqkd simulate --gamma`)
    frame_bits: int = DEFAULT_FRAME_BITS
    drift_seed: int = 0
    #: Faults switched on and off at emulated times (``channel.impairments``); None: none.
    faults: FaultSchedule | None = None
    #: The relay's intercept–resend on this piece of a range (``channel.relay_attack``; set by
    #: ``device_segments``), applied by ``channel.samplers.sample``; None: honest optics.
    attack: RelayAttack | None = None
    #: Each user's own actuators (``channel.controls``), as its current pulse batch carries them:
    #: the polarization controller acts before the fiber, the delay on the arrival time.
    controls_a: SourceControls = IDENTITY
    controls_b: SourceControls = IDENTITY
    _drift_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.clock_rate_hz > 0:
            raise ValueError(f"clock_rate_hz must be > 0, got {self.clock_rate_hz}")
        if self.gamma_override is not None and not 0.0 <= self.gamma_override <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma_override}")

    @property
    def slot_ps(self) -> float:
        return 1e12 / self.clock_rate_hz

    @property
    def frame_seconds(self) -> float:
        return (1 << self.frame_bits) / self.clock_rate_hz

    def _drift(self, which: str, fiber: Fiber, last_frame: int) -> np.ndarray:
        cached = self._drift_cache.get(which)
        if cached is None or cached.shape[0] <= last_frame:
            n = max(last_frame + 1, 2 * (0 if cached is None else cached.shape[0]), 64)
            rng = np.random.default_rng(derive_seed(self.drift_seed, f"arm {which}"))
            cached = fiber.drift.unitaries(n, self.frame_seconds, rng)
            self._drift_cache[which] = cached
        return cached

    def physics(self, start: int, stop: int) -> FramePhysics:
        if stop <= start or start < 0:
            raise ValueError(f"invalid slot range [{start}, {stop})")
        f0, f1 = start >> self.frame_bits, (stop - 1) >> self.frame_bits
        frames = np.arange(f0, f1 + 1)
        n = frames.size
        t_s = frames * self.frame_seconds
        u_a = np.broadcast_to(self.fiber_a.static_unitary, (n, 2, 2))
        u_b = np.broadcast_to(self.fiber_b.static_unitary, (n, 2, 2))
        if not self.fiber_a.drift.is_static:
            u_a = np.einsum("ij,njk->nik", self.fiber_a.static_unitary,
                            self._drift("a", self.fiber_a, f1)[f0:f1 + 1])
        if not self.fiber_b.drift.is_static:
            u_b = np.einsum("ij,njk->nik", self.fiber_b.static_unitary,
                            self._drift("b", self.fiber_b, f1)[f0:f1 + 1])
        # Fiber delays are taken as calibrated out; clock errors are not.
        delta_t = np.asarray(self.clock_b.error_ps(t_s) - self.clock_a.error_ps(t_s), float)
        delta_t = delta_t + (self.controls_b.delay_ps - self.controls_a.delay_ps)
        delta_t = np.broadcast_to(delta_t, (n,))
        timing = (self.faults.clock_effects(frames, self.clock_rate_hz, self.frame_bits)
                  if self.faults is not None else None)
        jitter_a = np.full(n, self.clock_a.jitter_ps)
        jitter_b = np.full(n, self.clock_b.jitter_ps)
        relay_error = np.zeros(n)
        relay_jitter = np.zeros(n)
        if timing is not None:
            delta_t = delta_t + timing.error_b_ps - timing.error_a_ps
            jitter_a, jitter_b = np.hypot(jitter_a, timing.jitter_a_ps), np.hypot(
                jitter_b, timing.jitter_b_ps)
            relay_error, relay_jitter = timing.error_relay_ps, timing.jitter_relay_ps
        click_jitter = np.sqrt(self.relay.jitters_ps[None, :] ** 2 + relay_jitter[:, None] ** 2
                               + ((jitter_a ** 2 + jitter_b ** 2) / 2)[:, None])
        shift, residual = slot_alignment(delta_t, self.slot_ps)
        if self.gamma_override is not None:
            gamma = np.full(n, self.gamma_override)
        else:
            gamma = np.asarray(mode_overlap(residual, self.pulse_rms_ps, self.detuning_rad_per_ps))
        trans_a = np.full(n, self.fiber_a.transmittance)
        trans_b = np.full(n, self.fiber_b.transmittance)
        attack = {"a": (np.zeros(n), np.zeros(n), 0), "b": (np.zeros(n), np.zeros(n), 0)}
        if self.faults is not None:
            trans_a, u_a = self._faulty_arm("a", frames, trans_a, u_a)
            trans_b, u_b = self._faulty_arm("b", frames, trans_b, u_b)
            attack = {arm: self.faults.attack_effects(arm, frames, self.clock_rate_hz,
                                                      self.frame_bits) for arm in ("a", "b")}
        # each user's polarization controller acts first, at its source
        if any(self.controls_a.rotation_rad):
            u_a = np.einsum("nij,jk->nik", u_a, self.controls_a.unitary)
        if any(self.controls_b.rotation_rad):
            u_b = np.einsum("nij,jk->nik", u_b, self.controls_b.unitary)
        return FramePhysics(
            frame_bits=self.frame_bits, first_frame=int(f0),
            transmittance_a=trans_a, transmittance_b=trans_b,
            unitary_a=np.ascontiguousarray(u_a, dtype=np.complex128),
            unitary_b=np.ascontiguousarray(u_b, dtype=np.complex128),
            gamma=np.ascontiguousarray(gamma, dtype=np.float64),
            bob_slot_offset=np.ascontiguousarray(-shift, dtype=np.int64),
            residual_offset_ps=np.ascontiguousarray(residual, dtype=np.float64),
            relay_error_ps=np.ascontiguousarray(relay_error, dtype=np.float64),
            click_jitter_ps=np.ascontiguousarray(click_jitter, dtype=np.float64),
            attack_a=attack["a"][0], attack_b=attack["b"][0],
            resend_mu_a=attack["a"][1], resend_mu_b=attack["b"][1],
            attack_key_a=int(attack["a"][2]), attack_key_b=int(attack["b"][2]),
        )

    def _faulty_arm(self, arm: str, frames: np.ndarray, trans: np.ndarray,
                    unitary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An arm's per-frame transmittance and unitary with the link faults on it applied."""
        assert self.faults is not None
        factor, turn = self.faults.arm_effects(arm, frames, self.clock_rate_hz, self.frame_bits)
        if turn is not None:
            unitary = np.einsum("nij,njk->nik", turn, unitary)
        return trans * factor, unitary

    def device_segments(self, start: int, stop: int) -> list[tuple[int, int, Link]]:
        """``[start, stop)`` cut where the active device faults change (relay, sources, the
        relay's attack), each piece with the link whose devices carry them (and its ``attack``;
        ``self`` where none is active)."""
        if self.faults is None or not self.faults.has_device_faults:
            return [(start, stop, self)]
        healthy = replace(self, faults=self.faults.link_only())
        out = []
        for lo, hi, active in self.faults.device_segments(start, stop, self.clock_rate_hz,
                                                          self.frame_bits):
            if not active:
                out.append((lo, hi, healthy))
                continue
            relay, source_a, source_b = with_device_faults(self.relay, self.source_a,
                                                           self.source_b, active)
            out.append((lo, hi, replace(healthy, relay=relay, source_a=source_a,
                                        source_b=source_b,
                                        attack=self.faults.attack_of(active))))
        return out
