"""Fiber links: loss and polarization (static rotation, random-walk drift, ramp).

Propagation delay is not modelled: the relay's timing is taken as calibrated to each arm, and
only the clocks' errors shift the pulses (``channel.clock``, ``channel.link``).

Polarization transformations are 2×2 unitaries (Jones calculus). A drift process is piecewise
constant over *steps* of emulated time (the samplers use one unitary per settings frame, about
1 ms at 1 GHz; drift rates of fibers are rad/s at most, so the error of holding the state for a
frame is far below the statistical resolution of a frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from channel.defaults import ATTENUATION_DB_PER_KM

PAULI = np.array([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=np.complex128)


def su2(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """exp(−i angle/2 · axis·σ): rotate the Poincaré sphere by ``angle_rad`` about ``axis``."""
    axis = np.asarray(axis, dtype=np.float64)
    norm = np.linalg.norm(axis)
    if norm == 0.0 or angle_rad == 0.0:
        return np.eye(2, dtype=np.complex128)
    n = axis / norm
    gen = np.tensordot(n, PAULI, axes=1)
    return np.cos(angle_rad / 2) * np.eye(2) - 1j * np.sin(angle_rad / 2) * gen


def su2_many(vectors: np.ndarray) -> np.ndarray:
    """``su2(v, |v|)`` for each rotation vector v of an (n, 3) array, vectorized: (n, 2, 2)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    angle = np.linalg.norm(vectors, axis=1)
    safe = np.where(angle > 0, angle, 1.0)
    gen = np.tensordot(vectors / safe[:, None], PAULI, axes=1)
    out = np.cos(angle / 2)[:, None, None] * np.eye(2) - 1j * np.sin(angle / 2)[:, None, None] * gen
    out[angle == 0] = np.eye(2)
    return out


def linear_rotation(theta_rad: float) -> np.ndarray:
    """Rotate linear polarization by ``theta_rad`` in real space (H → cos θ H + sin θ V)."""
    c, s = np.cos(theta_rad), np.sin(theta_rad)
    return np.array([[c, -s], [s, c]], dtype=np.complex128)


@dataclass(frozen=True)
class PolarizationDrift:
    """Random walk on SU(2) with an rms rate in rad/√s, plus a deterministic ramp in rad/s."""

    random_walk_rad_per_sqrt_s: float = 0.0
    ramp_rad_per_s: float = 0.0
    ramp_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if self.random_walk_rad_per_sqrt_s < 0 or self.ramp_rad_per_s < 0:
            raise ValueError("polarization drift rates must be >= 0")

    @property
    def is_static(self) -> bool:
        return self.random_walk_rad_per_sqrt_s == 0.0 and self.ramp_rad_per_s == 0.0

    def steps(self, normals: np.ndarray, step_s: float) -> np.ndarray:
        """The (n, 2, 2) unitaries of n steps of length ``step_s``, ramp after kick, from (n, 3)
        standard normals: the step law of ``unitaries``, vectorized, for callers that compose
        the steps themselves (``channel.impairments``)."""
        sigma = self.random_walk_rad_per_sqrt_s * np.sqrt(step_s)
        ramp = su2(np.array(self.ramp_axis), self.ramp_rad_per_s * step_s)
        return np.einsum("ij,njk->nik", ramp, su2_many(sigma * np.asarray(normals)))

    def unitaries(self, n_steps: int, step_s: float, rng: np.random.Generator) -> np.ndarray:
        """Drift unitaries at the start of each of ``n_steps`` steps (the first is the identity)."""
        out = np.empty((n_steps, 2, 2), dtype=np.complex128)
        u = np.eye(2, dtype=np.complex128)
        ramp = su2(np.array(self.ramp_axis), self.ramp_rad_per_s * step_s)
        sigma = self.random_walk_rad_per_sqrt_s * np.sqrt(step_s)
        for i in range(n_steps):  # per step (≈ ms), not per pulse
            out[i] = u
            # an isotropic Gaussian step of the rotation vector: rms angle sigma per axis
            kick = np.eye(2, dtype=np.complex128)
            if sigma > 0:
                vec = rng.normal(0.0, sigma, 3)
                kick = su2(vec, float(np.linalg.norm(vec)))
            u = ramp @ kick @ u
        return out


@dataclass(frozen=True)
class Fiber:
    """One arm (user → relay)."""

    length_km: float
    attenuation_db_per_km: float = ATTENUATION_DB_PER_KM
    extra_loss_db: float = 0.0
    rotation: np.ndarray | None = None  # static polarization unitary (None = identity)
    drift: PolarizationDrift = PolarizationDrift()

    def __post_init__(self) -> None:
        if not self.length_km >= 0:
            raise ValueError(f"length_km must be >= 0, got {self.length_km}")
        if not self.attenuation_db_per_km >= 0:
            raise ValueError("attenuation_db_per_km must be >= 0, got "
                             f"{self.attenuation_db_per_km}")
        if not self.extra_loss_db >= 0:
            raise ValueError(f"extra_loss_db must be >= 0, got {self.extra_loss_db}")
        if self.rotation is not None:
            u = np.asarray(self.rotation, dtype=np.complex128)
            if u.shape != (2, 2) or not np.allclose(u.conj().T @ u, np.eye(2), atol=1e-9):
                raise ValueError("rotation must be a 2x2 unitary matrix")

    @property
    def loss_db(self) -> float:
        return self.length_km * self.attenuation_db_per_km + self.extra_loss_db

    @property
    def transmittance(self) -> float:
        return float(10.0 ** (-self.loss_db / 10.0))

    @property
    def static_unitary(self) -> np.ndarray:
        if self.rotation is None:
            return np.eye(2, dtype=np.complex128)
        return np.asarray(self.rotation, dtype=np.complex128)
