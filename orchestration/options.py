"""Typed, validated command-line options (pydantic at the edge; plain values inside).

Every field's alias is the command-line option, so a validation error names the option the user
typed (``--mu: must be greater than --nu``), never a Python identifier.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from channel.defaults import (
    ATTENUATION_DB_PER_KM,
    DARK_COUNT_PROBABILITY,
    DETECTOR_EFFICIENCY,
    MISALIGNMENT,
)
from classical.estimation import DEFAULT_EC_INEFFICIENCY

Probability = Field(ge=0.0, le=1.0)


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class PhysicsOptions(_Options):
    eta_d: float = Field(DETECTOR_EFFICIENCY, gt=0.0, le=1.0, alias="--eta-d")
    dark_count: float = Field(DARK_COUNT_PROBABILITY, ge=0.0, le=1.0, alias="--dark-count")
    misalignment: float = Field(MISALIGNMENT, ge=0.0, le=0.5, alias="--misalignment")
    ec_efficiency: float = Field(DEFAULT_EC_INEFFICIENCY, ge=1.0, alias="--ec-efficiency")
    attenuation: float = Field(ATTENUATION_DB_PER_KM, ge=0.0, alias="--attenuation")


class KeyRateOptions(PhysicsOptions):
    distances_km: list[float] = Field(alias="--distance-km", min_length=1)
    decoys: Literal["infinite", "3", "4"] = Field("infinite", alias="--decoys")
    mu: float = Field(0.4, gt=0.0, le=10.0, alias="--mu")
    nu: float = Field(0.1, ge=0.0, alias="--nu")
    omega: float = Field(0.0, ge=0.0, alias="--omega")

    @model_validator(mode="after")
    def _ordered(self) -> KeyRateOptions:
        if any(d < 0 for d in self.distances_km):
            raise ValueError("--distance-km: distances must be >= 0")
        from orchestration.keyrate import MIN_FOUR_INTENSITY_OMEGA  # scipy: only when needed

        if self.decoys == "4" and not self.omega >= MIN_FOUR_INTENSITY_OMEGA:
            raise ValueError(f"--omega: with --decoys 4 it is the weaker X-basis decoy and must "
                             f"be >= {MIN_FOUR_INTENSITY_OMEGA} (the vacuum is added; a weaker "
                             "decoy is numerically a second vacuum)")
        if self.decoys in ("3", "4"):
            if not self.nu > self.omega:
                raise ValueError("--nu must be greater than --omega")
            if not self.mu > self.nu:
                raise ValueError("--mu must be greater than --nu")
        return self


class SimulateOptions(PhysicsOptions):
    basis: Literal["Z", "X"] = Field("Z", alias="--basis")
    distance_a_km: float = Field(25.0, ge=0.0, alias="--distance-a-km")
    distance_b_km: float = Field(25.0, ge=0.0, alias="--distance-b-km")
    mu_a: float = Field(0.4, ge=0.0, le=10.0, alias="--mu-a")
    mu_b: float = Field(0.4, ge=0.0, le=10.0, alias="--mu-b")
    rotation_a: float = Field(0.0, alias="--rotation-a")
    rotation_b: float = Field(0.0, alias="--rotation-b")
    gamma: float = Field(1.0, ge=0.0, le=1.0, alias="--gamma")
    slots: int = Field(10**9, gt=0, alias="--slots")
    seed: int = Field(0, ge=0, alias="--seed")
    sampler: Literal["fast", "skip-empty", "reference"] = Field("fast", alias="--sampler")


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem, naming the option."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) if e["loc"] else ""
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return "\n".join(lines)


def parse_distances(text: str) -> list[float]:
    """``0,50,100`` (a list) or ``0:200:25`` (start:stop:step, stop included when on the grid)."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise ValueError
            n = int((stop - start) / step + 1e-9) + 1
            return [round(start + i * step, 9) for i in range(n)]
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--distance-km: expected a list like 0,50,100 or a range like "
                         f"0:200:25, got {text!r}") from None
