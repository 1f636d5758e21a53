"""Typed, validated command-line options (pydantic at the edge; plain values inside).

Every field's alias is the command-line option, so a validation error names the option the user
typed (``--mu: must be greater than --nu``), never a Python identifier.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from channel.defaults import (
    ATTENUATION_DB_PER_KM,
    DARK_COUNT_PROBABILITY,
    DETECTOR_EFFICIENCY,
    MISALIGNMENT,
)
from classical.estimation import DEFAULT_EC_INEFFICIENCY

#: Bounds on sizes (docs/bounds.md): a grid point costs a key-rate evaluation (up to a second
#: with --optimize-mu), and the samplers keep every detection of ``--slots`` in memory.
MAX_DISTANCE_POINTS = 10_000
MAX_DISTANCE_KM = 10_000.0
MAX_SIMULATE_SLOTS = 10**12
MAX_REFERENCE_SLOTS = 10**8
#: The samplers keep each slot with clicks on both sides (~30 bytes): 5·10^7 is ~1.5 GiB.
MAX_SIMULATE_RECORDS = 5 * 10**7


class _Options(BaseModel):
    # allow_inf_nan=False: NaN and ±inf are refused, naming the option
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid",
                              allow_inf_nan=False)


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
        if any(not 0 <= d <= MAX_DISTANCE_KM for d in self.distances_km):
            raise ValueError(f"--distance-km: distances must lie in [0, {MAX_DISTANCE_KM:g}] km "
                             "(beyond, no photon arrives and every rate is 0)")
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
    seed: int = Field(0, ge=0, le=(1 << 64) - 1, alias="--seed")
    sampler: Literal["fast", "skip-empty", "reference"] = Field("fast", alias="--sampler")

    def expected_records(self) -> float:
        """An upper estimate of the slots the sampler keeps: clicks on both sides of the relay
        (the arriving mean photon number, squared when small), plus dark clicks."""
        arriving = self.eta_d * sum(
            mu * 10 ** (-self.attenuation * km / 10)
            for mu, km in ((self.mu_a, self.distance_a_km), (self.mu_b, self.distance_b_km)))
        per_slot = min(1.0, (1 - math.exp(-arriving)) ** 2 + 4 * self.dark_count)
        return self.slots * per_slot

    @model_validator(mode="after")
    def _bounded_slots(self) -> SimulateOptions:
        bound = MAX_REFERENCE_SLOTS if self.sampler == "reference" else MAX_SIMULATE_SLOTS
        if self.slots > bound:
            why = ("the reference sampler visits every slot" if self.sampler == "reference"
                   else "the sampler walks every slot")
            raise ValueError(f"--slots: {self.slots} is above the bound {bound:.0e} for the "
                             f"{self.sampler} sampler ({why}; docs/bounds.md)")
        if self.expected_records() > MAX_SIMULATE_RECORDS:
            raise ValueError(f"--slots: about {self.expected_records():.2g} slots with "
                             f"detections expected, above the bound {MAX_SIMULATE_RECORDS:.0e} "
                             "the sampler can keep in memory (~30 bytes each; docs/bounds.md)")
        return self


def describe_validation_error(err: ValidationError) -> str:
    """One line naming the option of each problem (problems separated by ``; ``)."""
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) if e["loc"] else ""
        msg = e["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {msg}" if where else msg)
    return "; ".join(problems)


def parse_distances(text: str) -> list[float]:
    """``0,50,100`` (a list) or ``0:200:25`` (start:stop:step, stop included when on the grid),
    finite numbers, at most ``MAX_DISTANCE_POINTS`` of them (counted before the list is built)."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or not all(math.isfinite(p) for p in parts):
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise ValueError
            count = (stop - start) / step + 1e-9
            if count >= MAX_DISTANCE_POINTS:
                raise OverflowError(count)
            n = int(count) + 1
            return [round(start + i * step, 9) for i in range(n)]
        if text.count(",") >= MAX_DISTANCE_POINTS:
            raise OverflowError(text.count(",") + 1)
        values = [float(p) for p in text.split(",") if p.strip()]
        if not all(math.isfinite(v) for v in values):
            raise ValueError
        return values
    except OverflowError:
        raise ValueError(f"--distance-km: more than {MAX_DISTANCE_POINTS} distances (each costs "
                         "a key-rate evaluation; docs/bounds.md)") from None
    except ValueError:
        raise ValueError(f"--distance-km: expected finite numbers, a list like 0,50,100 or a "
                         f"range like 0:200:25, got {text!r}") from None
