"""Game-day sections of a scenario file: ``tags``, ``runtime``, ``steady_state``, ``method`` and
``rollbacks`` (issue 12, items 1 and 2: the format and its validation; docs/scenario-format.md).

Shaped like Chaos Toolkit experiments. Everything here is checked when the scenario loads: the
duration units, each fault type's targets and parameters (``FAULT_TYPES``), each action's
(``ACTION_TYPES``), the probe metrics (``METRICS``), and, across entries (``cross_check``, called
by ``orchestration.config.Scenario``), that nothing starts after the run ends and that no two
faults of the same type hold the same target at once. A misspelt name gets a did-you-mean.

Nothing here injects a fault. ``IMPLEMENTED_FAULTS`` names the types a run can inject today: the
physics faults nature emulates (``channel.impairments``, built from ``method`` by
``orchestration.config.build_link``) and the relay's (``malicious_relay``,
``relay_firmware_bug``). This module imports nothing from ``orchestration.config``
(which imports it).
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from channel.eavesdropper import DEFAULT_RESEND_MEAN_PHOTON_NUMBER
from channel.impairments import PHYSICS_FAULTS, TimelineEntry, frame_at
from channel.source import FLUCTUATION_CLIP_SIGMAS
from orchestration.edge import CLASSICAL_FAULTS


class FieldProblem(ValueError):
    """A validation error about a field below the validated model: ``path`` continues the
    location pydantic reports, so the message names (and the loader finds the line of) e.g.
    ``alice.source.intensities.2.mean_photon_number`` rather than ``alice.source``."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, word: Any, choices: Sequence[str], of: str = "") -> str:
    """``unknown fault 'x' (did you mean 'y'?)``, or the list of choices when none is close;
    ``of`` follows the word (``unknown parameter 'x' for fault loss``)."""
    hint = did_you_mean(word, choices)
    if not hint:
        shown = ", ".join(choices) if len(choices) <= 30 else ", ".join(choices[:30]) + ", …"
        hint = f" (one of: {shown})" if choices else ""
    return f"unknown {kind} {word!r}{of}{hint}"


def _number(value: Any) -> float | None:
    """A finite int or float (never a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:  # an integer beyond any float: not a number a parameter can take
        return None


_NUMBER_TEXT = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")


def numeric_text(value: Any) -> Any:
    """``'1e-3'`` as the number 1e-3: YAML 1.1 (PyYAML) reads an exponent without a dot or a sign
    as text, which today's fields accept as a number too (pydantic's lax mode); other values as
    they are."""
    if isinstance(value, str) and _NUMBER_TEXT.match(value):
        number = float(value)
        return int(number) if number.is_integer() and re.fullmatch(r"\s*[+-]?\d+\s*", value) \
            else number
    return value


# --- durations ----------------------------------------------------------------------------------

#: Emulated-time units a duration may carry; a plain number is seconds.
DURATION_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
#: The longest duration or start time a scenario may give (about 11.6 days of emulated time; a
#: run of ``MAX_ROUNDS`` rounds of 2**20-slot frames at 1 GHz is far shorter).
MAX_DURATION_S = 1e6
_DURATION = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-zµ]*)\s*$")


def parse_duration(value: Any, *, allow_zero: bool = False) -> float:
    """Seconds of emulated time from ``500ms``, ``10s``, ``2m``, ``1h`` or a plain number (seconds).

    Refused: another unit, a boolean, NaN or infinity, a negative value, zero (unless
    ``allow_zero``: a start time may be 0), more than ``MAX_DURATION_S``.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a duration such as 10s, got {str(value).lower()}")
    if isinstance(value, int | float):
        seconds, text = float(value), repr(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration: give a number and a unit, e.g. "
                             "500ms, 10s, 2m, 1h (a plain number is seconds)")
        number, unit = match.groups()
        if unit and unit not in DURATION_UNITS:
            raise ValueError(f"{value!r}: unknown unit {unit!r}"
                             f"{did_you_mean(unit, DURATION_UNITS)} (units: "
                             f"{', '.join(DURATION_UNITS)}; a plain number is seconds)")
        seconds, text = float(number) * DURATION_UNITS[unit or "s"], value
    else:
        raise ValueError(f"must be a duration such as 10s or 500ms, got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"{text} is not a finite duration")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{text} must be {'≥' if allow_zero else '>'} 0")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text} is above the bound of {MAX_DURATION_S:g} s of emulated time")
    return seconds


_DURATION_SCHEMA = {"anyOf": [
    {"type": "number", "description": "seconds"},
    {"type": "string", "pattern": r"^\s*\d+(\.\d*)?\s*(ms|s|m|h)?\s*$",
     "examples": ["500ms", "10s", "2m", "1h"]}]}
#: A positive duration, held as seconds of emulated time.
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
#: A start time (zero allowed), held as seconds of emulated time.
StartTime = Annotated[float, BeforeValidator(lambda v: parse_duration(v, allow_zero=True)),
                      WithJsonSchema(_DURATION_SCHEMA)]


# --- targets, metrics, fault and action types ----------------------------------------------------

LINKS = ("link/alice-charles", "link/bob-charles")
SOURCES = ("source/alice", "source/bob")
RELAY = ("relay",)
CLASSICAL = ("classical/alice-bob", "classical/charles-alice", "classical/charles-bob")
NODES = ("node/alice", "node/bob", "node/charles")
KEYSTORES = ("keystore/alice", "keystore/bob")
#: Every target a fault or action may name.
TARGETS = (*LINKS, *SOURCES, *RELAY, *CLASSICAL, *NODES, *KEYSTORES)

#: Charles's four detectors (as in ``relay.detectors``), and ``all``.
DETECTORS = ("cH", "cV", "dH", "dV", "all")
#: The Bell states Charles announces.
BELL_STATES = ("psi_plus", "psi_minus")


@dataclass(frozen=True)
class Param:
    """One parameter of a fault or action type. ``kind``: ``number`` (finite, in
    [``low``, ``high``], ``low`` excluded when ``low_open``), ``integer``, ``choice`` (one of
    ``choices``), ``choices`` (a non-empty list of distinct ``choices``) or ``text``."""

    kind: Literal["number", "integer", "choice", "choices", "text"]
    doc: str
    required: bool = False
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def range_text(self) -> str:
        if self.kind in ("choice", "choices"):
            return ", ".join(self.choices)
        if self.low is None and self.high is None:
            return ""
        lo = "(" if self.low_open else "["
        return f"{lo}{self.low:g}, {self.high:g}]"

    def check(self, value: Any) -> str | None:
        """What is wrong with ``value``, or None."""
        if self.kind in ("number", "integer"):
            x = _number(value)
            if x is None or (self.kind == "integer" and not isinstance(value, int)):
                shown = str(value).lower() if isinstance(value, bool) else repr(value)
                return f"must be a finite {self.kind}, got {shown}"
            below = self.low is not None and (x <= self.low if self.low_open else x < self.low)
            if below or (self.high is not None and x > self.high):
                return f"{value} is outside {self.range_text()}"
            return None
        if self.kind == "choice":
            if not isinstance(value, str):
                return f"must be one of {self.range_text()}, got {value!r}"
            return None if value in self.choices else unknown("value", value, self.choices)
        if self.kind == "choices":
            items = value if isinstance(value, list) else None
            if not items:
                return f"must be a non-empty list of: {self.range_text()}"
            for item in items:
                if not isinstance(item, str) or item not in self.choices:
                    return unknown("value", item, self.choices)
            if len(set(items)) != len(items):
                return "lists a value twice"
            return None
        if not isinstance(value, str) or not value.strip():
            return f"must be a non-empty text, got {value!r}"
        return None


@dataclass(frozen=True)
class Kind:
    """A fault or action type: where it applies, its parameters and what it does."""

    doc: str
    targets: tuple[str, ...]
    params: dict[str, Param] = field(default_factory=dict)
    #: At least one of these must be given and non-zero (a fault that changes nothing).
    any_of: tuple[str, ...] = ()
    #: An action whose target may be left out (meaning: every target).
    target_optional: bool = False


def _p(doc: str, low: float | None = None, high: float | None = None, *, required: bool = False,
       default: Any = None, low_open: bool = False) -> Param:
    return Param("number", doc, required, default, low, high, low_open)


_FRACTION = _p("share of pulses or messages affected, 0 … 1", 0.0, 1.0, default=1.0,
               low_open=True)
_DETECTOR = Param("choice", "which detector: cH, cV, dH, dV, or all", default="all",
                  choices=DETECTORS)
_MALICIOUS_MODES = ("fake_announcements", "biased_postselection", "intercept_resend")

#: Every fault type: its targets and parameters (units in the names). docs/scenario-format.md
#: renders this table.
FAULT_TYPES: dict[str, Kind] = {
    # link
    "loss": Kind("extra loss on a fiber, as a step or a linear ramp", LINKS, {
        "extra_db": _p("extra attenuation in dB", 0.0, 100.0, required=True, low_open=True),
        "ramp_s": _p("seconds over which the loss ramps up from 0 (0: a step)", 0.0,
                     MAX_DURATION_S, default=0.0)}),
    "fiber_cut": Kind("the fiber transmits nothing (transmittance 0)", LINKS),
    "polarization_drift": Kind("polarization drift: an SU(2) random walk and/or a ramp", LINKS, {
        "rate_rad_per_sqrt_s": _p("random-walk rate, rad/√s", 0.0, 10.0, default=0.0),
        "ramp_rad_per_s": _p("deterministic rotation rate, rad/s", 0.0, 100.0, default=0.0)},
        any_of=("rate_rad_per_sqrt_s", "ramp_rad_per_s")),
    "polarization_rotation": Kind("a static linear polarization rotation", LINKS, {
        "angle_rad": _p("rotation angle in rad", -2 * math.pi, 2 * math.pi, required=True)}),
    "intercept_resend": Kind("an eavesdropper on the fiber measures a share of the pulses in a "
                             "random basis and resends what she saw", LINKS, {
        "fraction": _p("share of pulses attacked, 0 … 1", 0.0, 1.0, required=True,
                       low_open=True),
        "resend_mean_photon_number": _p("mean photon number of the pulse she resends",
                                        0.0, 10.0, default=DEFAULT_RESEND_MEAN_PHOTON_NUMBER,
                                        low_open=True)}),
    # timing (per source, or the relay's reference)
    "clock_offset": Kind("a time offset of a source's or the relay's clock", SOURCES + RELAY, {
        "offset_ps": _p("offset in ps", -1e6, 1e6, required=True)}),
    "clock_skew": Kind("a frequency error of a source's or the relay's clock", SOURCES + RELAY, {
        "skew_ppm": _p("frequency error in ppm", -1e3, 1e3, required=True)}),
    "jitter": Kind("extra Gaussian timing jitter (rms)", SOURCES + RELAY, {
        "jitter_ps": _p("rms jitter in ps", 0.0, 1e5, required=True, low_open=True)}),
    # relay
    "dark_count_surge": Kind("dark counts rise (stray light, a warm detector)", RELAY, {
        "dark_count_probability": _p("dark-count probability per slot the surge adds to the "
                                     "configured one, ≤ 10⁻³ (docs/bounds.md)", 0.0, 1e-3,
                                     required=True, low_open=True),
        "detector": _DETECTOR}),
    "detector_efficiency": Kind("detector efficiency falls (one detector: an efficiency "
                                "mismatch)", RELAY, {
        "efficiency_factor": _p("factor on the efficiency, (0, 1]", 0.0, 1.0, required=True,
                                low_open=True),
        "detector": _DETECTOR}),
    "detector_dead": Kind("a detector never clicks", RELAY, {
        "detector": Param("choice", "which detector: cH, cV, dH, dV, or all", required=True,
                          choices=DETECTORS)}),
    "relay_firmware_bug": Kind("Charles's software adds timing noise to records and spurious "
                               "announcements", RELAY, {
        "timing_noise_ps": _p("rms noise added to recorded times, ps", 0.0, 1e5, default=0.0),
        "spurious_fraction": _p("spurious announcements added per honest one (each honest "
                                "one brings one with this probability), 0 … 1", 0.0, 1.0,
                                default=0.0)},
        any_of=("timing_noise_ps", "spurious_fraction")),
    "malicious_relay": Kind("Charles cheats (mode: fake_announcements, biased_postselection, "
                            "intercept_resend)", RELAY, {
        "mode": Param("choice", "fake_announcements (random Bell outcomes), "
                      "biased_postselection (announces only the Bell states in `announce`), "
                      "intercept_resend (measures each pulse in a random basis and announces "
                      "accordingly)", required=True, choices=_MALICIOUS_MODES),
        "announce": Param("choices", "biased_postselection only: the Bell states announced "
                          "(default [psi_minus])", choices=BELL_STATES),
        "fraction": _p("share of pulses or announcements affected, 0 … 1", 0.0, 1.0,
                       default=1.0, low_open=True)}),
    # source
    "intensity_miscalibration": Kind("one intensity class's mean photon number is off by a "
                                     "factor the users' estimation does not know", SOURCES, {
        "intensity": Param("text", "the class's name in the source's `intensities` (a "
                           "class with light: mean photon number > 0)", required=True),
        "mean_photon_number_factor": _p("factor on the mean photon number", 0.0, 10.0,
                                        required=True, low_open=True)}),
    "intensity_fluctuation": Kind("pulse-to-pulse intensity fluctuation", SOURCES, {
        "fluctuation_rel": _p("relative rms fluctuation, added in quadrature to the "
                              "configured one", 0.0, 0.2, required=True, low_open=True)}),
    # classical channels, at the edge
    "latency": Kind("messages are delayed", CLASSICAL, {
        "latency_ms": _p("added one-way delay in ms", 0.0, 6e4, required=True, low_open=True),
        "jitter_ms": _p("rms variation of the delay in ms", 0.0, 6e4, default=0.0)}),
    "bandwidth_limit": Kind("the channel carries at most this many bits per second",
                            CLASSICAL, {
        "bandwidth_bps": _p("bits per second", 0.0, 1e12, required=True, low_open=True)}),
    "outage": Kind("the channel carries nothing", CLASSICAL),
    "tamper": Kind("bytes of messages are altered in flight", CLASSICAL, {"fraction": _FRACTION}),
    "replay": Kind("earlier messages are sent again", CLASSICAL, {"fraction": _FRACTION}),
    "reorder": Kind("messages arrive out of order", CLASSICAL, {
        "fraction": _FRACTION,
        "window_messages": Param("integer", "how far a message may move, in messages",
                                 default=2, low=2, high=1000)}),
    # nodes and key stores
    "kill": Kind("the node's process is killed (restarted when the fault's duration ends)",
                 NODES),
    "pause": Kind("the node's process is stopped (resumed when the fault's duration ends)",
                  NODES),
    "full": Kind("the key store refuses new keys", KEYSTORES),
}
#: The fault types a run can inject today: nature's physics (``channel.impairments``), the
#: classical channels' faults at the edge (``orchestration.edge``), a full key store (the
#: user is told in its secrets which rounds' keys its store has no room for), and the relay's
#: attacks and firmware bug (``malicious_relay``: its intercept_resend in nature,
#: ``channel.relay_attack``, its other modes and ``relay_firmware_bug`` in Charles's software,
#: ``nodes.relay_faults``), and a node process's ``pause`` and ``kill`` (the orchestrator's,
#: ``orchestration.node_faults``; a kill's restart is not, ``Scenario.refused_game_day_parts``).
IMPLEMENTED_FAULTS: frozenset[str] = (frozenset(PHYSICS_FAULTS) | frozenset(CLASSICAL_FAULTS)
                                       | {"full", "malicious_relay", "relay_firmware_bug",
                                          "pause", "kill"})

#: Calibration loops an action may trigger (issue 12, item 4).
CALIBRATION_LOOPS = ("polarization", "clock", "intensity")

#: Every action type.
ACTION_TYPES: dict[str, Kind] = {
    "clear_faults": Kind("end active faults: all of them (no target), those on a target, or one "
                         "by name (params.fault)", TARGETS, {
        "fault": Param("text", "the `name` of a method entry whose fault to end")},
        target_optional=True),
    "restart": Kind("restart a node (ends a kill or pause on it)", NODES),
    "resume": Kind("resume a paused node", NODES),
    "calibrate": Kind("run a calibration loop now (no target: on every target it serves)",
                      LINKS + SOURCES, {
        "loop": Param("choice", "polarization (links), clock or intensity (sources)",
                      required=True, choices=CALIBRATION_LOOPS)},
        target_optional=True),
}

#: Probe metrics, with the range of values each can take (a tolerance outside it never holds).
METRICS: dict[str, tuple[str, float, float]] = {
    "qber_z": ("quantum bit error rate in the Z (key) basis", 0.0, 1.0),
    "qber_x": ("quantum bit error rate in the X (test) basis", 0.0, 1.0),
    "secure_key_rate_bps": ("secure key bits per emulated second", 0.0, math.inf),
    "bsm_rate_hz": ("successful Bell-state measurements per emulated second", 0.0, math.inf),
    "coincidence_rate_hz": ("coincidences per emulated second", 0.0, math.inf),
    "visibility": ("interference visibility", 0.0, 1.0),
    "dark_count_rate_hz": ("dark counts per emulated second, all detectors", 0.0, math.inf),
    "aborted_rounds": ("rounds aborted in the window", 0.0, math.inf),
    "abort_reason": ("rounds aborted for the probe's `reason`", 0.0, math.inf),
    "key_mismatches": ("stored keys that differ between Alice and Bob", 0.0, math.inf),
    "keys_from_attacked_rounds": ("key bits stored from rounds under attack", 0.0, math.inf),
    "auth_failures": ("messages refused by authentication", 0.0, math.inf),
    "calibration_actions": ("actions taken by the calibration loops", 0.0, math.inf),
    "time_to_recover_s": ("emulated seconds from a fault's end until every probe holds again",
                          0.0, math.inf),
}

PHASES = ("before", "during", "after")

#: Bounds on the lengths of the new sections (a scenario is a page of YAML).
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_NAME_CHARS = 200
MAX_PROBES = 100
MAX_ENTRIES = 1000
#: As ``orchestration.config.MAX_ROUNDS`` (not imported: config imports this module).
MAX_RUNTIME_ROUNDS = 1_000_000


def check_params(kind: Kind, given: dict[str, Any], what: str) -> None:
    """Refuse an unknown, missing or out-of-range parameter, naming it (``params.<name>``)."""
    for name, value in given.items():
        spec = kind.params.get(str(name))
        if spec is None:
            if not kind.params:
                raise FieldProblem(("params", name), f"{what} takes no parameters")
            raise FieldProblem(("params", name),
                               unknown("parameter", name, list(kind.params), f" for {what}"))
        problem = spec.check(value)
        if problem:
            raise FieldProblem(("params", name), problem)
    for name, spec in kind.params.items():
        if spec.required and name not in given:
            raise FieldProblem(("params",), f"{what} needs {name} ({spec.doc})")
    if kind.any_of and not any(given.get(n) for n in kind.any_of):
        raise FieldProblem(("params",), f"{what} needs a non-zero {' or '.join(kind.any_of)}")


def _check_target(kind: Kind, target: str | None, what: str) -> None:
    if target is None:
        if not kind.target_optional:
            raise FieldProblem(("target",), f"{what} needs a target: one of "
                               f"{', '.join(kind.targets)}")
        return
    if target in kind.targets:
        return
    if target in TARGETS:
        raise FieldProblem(("target",), f"{what} does not apply to {target!r} (targets: "
                           f"{', '.join(kind.targets)})")
    raise FieldProblem(("target",), unknown("target", target, kind.targets or TARGETS))


# --- models ---------------------------------------------------------------------------------------


class _Model(BaseModel):
    # as orchestration.config._Model: unknown fields, NaN and infinity are refused
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``true`` is not the number 1."""
        annotation = cls.model_fields[info.field_name or ""].annotation
        if isinstance(value, bool) and annotation in (int, float, int | None, float | None):
            raise ValueError(f"must be a number, got {str(value).lower()}")
        return value


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class RuntimeModel(_Model):
    """How long a game day runs and how fast: ``duration`` (emulated) or ``rounds``."""

    duration: Duration | None = Field(None, description="emulated time, e.g. 90s, 2m")
    rounds: int | None = Field(None, gt=0, le=MAX_RUNTIME_ROUNDS,
                               description="key rounds (instead of duration)")
    pacing: Literal["fast", "realtime"] = Field(
        "fast", description="fast: as fast as the machine goes; realtime: emission throttled "
        "to the wall clock, so that a game day can be watched live")
    fail_fast: bool = Field(False, description="stop at the first probe that fails")
    message_timeout: Duration | None = Field(
        None, description="wall-clock time a node waits for a peer's message before it aborts "
        "the round (default 300s); a game day that drops classical messages wants it short")
    announcement_timeout: Duration | None = Field(
        None, description="wall-clock time the users wait for Charles's announcement of a "
        "round (default 300s); it must exceed the time nature takes to measure a round")
    restart: bool = Field(False, description="when a node program dies, stop the others in "
                          "order and restart the link at the next round that no user has "
                          "emitted (no half-stored and no mismatched key; docs/architecture.md)")
    max_restarts: int = Field(3, ge=1, le=100, description="restarts allowed in one run (with "
                              "restart: true); the run fails, naming the node, past them")

    @model_validator(mode="after")
    def _duration_or_rounds(self) -> RuntimeModel:
        if self.duration is not None and self.rounds is not None:
            raise FieldProblem(("rounds",), "give duration or rounds, not both")
        return self


def _tolerance(value: Any) -> Any:
    """A scalar (exactly that value), ``[lo, hi]`` or ``{min, max}`` (either may be left out), as
    ``{min, max}``."""
    if isinstance(value, Tolerance):
        return value
    if isinstance(value, bool):
        raise ValueError(f"must be a number, [lo, hi] or {{min, max}}, got {str(value).lower()}")
    value = numeric_text(value)
    if isinstance(value, int | float):
        return {"min": value, "max": value}
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError(f"a range is [lo, hi], got a list of {len(value)}")
        return {"min": value[0], "max": value[1]}
    if isinstance(value, dict):
        return value
    raise ValueError(f"must be a number, [lo, hi] or {{min, max}}, got {type(value).__name__}")


class Tolerance(_Model):
    """The values a probe accepts: from ``min`` to ``max`` (either open-ended when left out)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Tolerance:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


_TOLERANCE_SCHEMA = {"anyOf": [
    {"type": "number", "description": "exactly this value"},
    {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
     "description": "[lo, hi]"},
    {"type": "object", "properties": {"min": {"type": "number"}, "max": {"type": "number"}},
     "additionalProperties": False, "minProperties": 1}]}
ToleranceInput = Annotated[Tolerance, BeforeValidator(_tolerance),
                           WithJsonSchema(_TOLERANCE_SCHEMA)]


class ProbeModel(_Model):
    name: Name
    metric: str = Field(json_schema_extra={"enum": list(METRICS)})
    tolerance: ToleranceInput
    window: Duration | None = Field(None, description="emulated time the metric is taken over")
    phases: list[Literal["before", "during", "after"]] = Field(
        list(PHASES), min_length=1, description="before the first fault (baseline), during "
        "each fault, after recovery")
    reason: str | None = Field(None, description="abort_reason only: the reason counted")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(unknown("metric", value, list(METRICS)))
        return value

    @field_validator("phases", mode="before")
    @classmethod
    def _known_phases(cls, value: Any) -> Any:
        if isinstance(value, list):
            for k, phase in enumerate(value):
                if isinstance(phase, str) and phase not in PHASES:
                    raise FieldProblem((k,), unknown("phase", phase, PHASES))
            if len(set(map(str, value))) != len(value):
                raise ValueError("lists a phase twice")
        return value

    @model_validator(mode="after")
    def _tolerance_can_hold(self) -> ProbeModel:
        _, low, high = METRICS[self.metric]
        t = self.tolerance
        if (t.max is not None and t.max < low) or (t.min is not None and t.min > high):
            raise FieldProblem(("tolerance",), f"{self.metric} lies in [{low:g}, {high:g}]: "
                               "this tolerance can never hold")
        if self.metric == "abort_reason" and not self.reason:
            raise FieldProblem(("reason",), "metric abort_reason needs the reason it counts")
        if self.metric != "abort_reason" and self.reason is not None:
            raise FieldProblem(("reason",), "only metric abort_reason takes a reason")
        return self


class SteadyStateModel(_Model):
    """The hypothesis: every probe holds in each of its phases."""

    title: str
    probes: list[ProbeModel] = Field(min_length=1, max_length=MAX_PROBES)

    @model_validator(mode="after")
    def _unique_names(self) -> SteadyStateModel:
        _unique([p.name for p in self.probes], "probes", "probe")
        return self


def _unique(names: list[str], section: str, what: str) -> None:
    for k, name in enumerate(names):
        if name in names[:k]:
            raise FieldProblem((section, k, "name") if section else (k, "name"),
                               f"{name!r} repeats an earlier {what}'s name")


def _numeric_params(data: Any, kinds: dict[str, Kind]) -> Any:
    """Numbers written as text (``1e-3`` in YAML 1.1) become numbers, for numeric parameters."""
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        return data
    kind = kinds.get(data.get("type")) if isinstance(data.get("type"), str) else None
    if kind is None:
        return data
    params = {k: numeric_text(v) if isinstance(k, str) and k in kind.params
              and kind.params[k].kind in ("number", "integer") else v
              for k, v in data["params"].items()}
    return {**data, "params": params}


def _known_type(value: Any, kinds: dict[str, Kind], what: str) -> Any:
    if isinstance(value, str) and value not in kinds:
        raise ValueError(unknown(what, value, list(kinds)))
    return value


def _param_schema(spec: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"description": spec.doc}
    if spec.kind in ("number", "integer"):
        out["type"] = spec.kind
        if spec.low is not None:
            out["exclusiveMinimum" if spec.low_open else "minimum"] = spec.low
        if spec.high is not None:
            out["maximum"] = spec.high
    elif spec.kind == "choice":
        out["enum"] = list(spec.choices)
    elif spec.kind == "choices":
        out.update(type="array", items={"enum": list(spec.choices)}, minItems=1,
                   uniqueItems=True)
    else:
        out.update(type="string", minLength=1)
    if spec.default is not None:
        out["default"] = spec.default
    return out


def _per_type_schema(kinds: dict[str, Kind]) -> Any:
    """For editors: each type's targets and parameters, as JSON Schema if/then clauses."""

    def extra(schema: dict[str, Any]) -> None:
        schema["allOf"] = [{
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {"properties": {
                "target": {"enum": list(kind.targets)},
                "params": {"type": "object", "additionalProperties": False,
                           "properties": {n: _param_schema(p) for n, p in kind.params.items()},
                           "required": [n for n, p in kind.params.items() if p.required]}}},
        } for name, kind in kinds.items()]

    return extra


class _TypedEntry(_Model):
    """A fault or an action: a ``type`` from its registry (``KINDS``), a target and parameters
    that type allows, numbers written as text read as numbers."""

    KINDS: ClassVar[dict[str, Kind]]
    WHAT: ClassVar[str]

    @field_validator("type", check_fields=False)
    @classmethod
    def _check_type(cls, value: Any) -> Any:
        return _known_type(value, cls.KINDS, cls.WHAT)

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        return _numeric_params(data, cls.KINDS)

    def _check_kind(self) -> None:
        what = f"{self.WHAT} {self.type}"
        kind = self.KINDS[self.type]
        _check_target(kind, self.target, what)  # type: ignore[attr-defined]
        check_params(kind, self.params, what)  # type: ignore[attr-defined]


class FaultModel(_TypedEntry):
    KINDS, WHAT = FAULT_TYPES, "fault"
    model_config = ConfigDict(json_schema_extra=_per_type_schema(FAULT_TYPES))

    type: str = Field(json_schema_extra={"enum": list(FAULT_TYPES)})
    target: str = Field(json_schema_extra={"enum": list(TARGETS)})
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fits_its_type(self) -> FaultModel:
        self._check_kind()
        if self.type == "malicious_relay" and "announce" in self.params \
                and self.params["mode"] != "biased_postselection":
            raise FieldProblem(("params", "announce"), "only mode biased_postselection takes "
                               "announce")
        return self


class ActionModel(_TypedEntry):
    KINDS, WHAT = ACTION_TYPES, "action"
    model_config = ConfigDict(json_schema_extra=_per_type_schema(ACTION_TYPES))

    type: str = Field(json_schema_extra={"enum": list(ACTION_TYPES)})
    target: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fits_its_type(self) -> ActionModel:
        self._check_kind()
        if self.type == "calibrate" and self.target is not None:
            serves = LINKS if self.params["loop"] == "polarization" else SOURCES
            if self.target not in serves:
                raise FieldProblem(("target",), f"the {self.params['loop']} loop runs on "
                                   f"{', '.join(serves)}, not {self.target!r}")
        return self


class MethodEntry(_Model):
    """At ``at`` (emulated), start a fault (for ``duration``, else until a rollback or a
    ``clear_faults``) or run an action."""

    at: StartTime
    name: Name
    duration: Duration | None = None
    fault: FaultModel | None = None
    action: ActionModel | None = None

    @model_validator(mode="after")
    def _fault_or_action(self) -> MethodEntry:
        if (self.fault is None) == (self.action is None):
            raise ValueError("give exactly one of fault or action")
        if self.action is not None and self.duration is not None:
            raise FieldProblem(("duration",), "an action takes no duration (only a fault lasts)")
        return self

    @property
    def end(self) -> float:
        return math.inf if self.duration is None else self.at + self.duration


def timeline_entries(method: Sequence[MethodEntry] | None) -> tuple[TimelineEntry, ...]:
    """The method entries as plain values, as the channel emulator reads them
    (``channel.impairments``): what nature is given in its own secrets, and what the verdict
    places the faults by."""
    return tuple(TimelineEntry(e.at, e.name, item.type, item.target, dict(item.params),
                               e.duration, is_action=e.action is not None)
                 for e in method or () for item in (e.fault or e.action,) if item is not None)


class RollbackModel(_Model):
    name: Name
    action: ActionModel


Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
Method = Annotated[list[MethodEntry], Field(max_length=MAX_ENTRIES)]
Rollbacks = Annotated[list[RollbackModel], Field(max_length=MAX_ENTRIES)]


# --- checks across entries ----------------------------------------------------------------------


def _ender(k: int, entries: list[MethodEntry]) -> int | None:
    """The entry whose action ends entry ``k``'s fault first, before its duration does, or None.
    Entries apply in time order, file order at equal times (as the emulator and the verdict apply
    them: ``channel.impairments.fault_windows``), so an action ends the fault when it comes later
    in time, or at the same time and later in the file."""
    entry = entries[k]
    assert entry.fault is not None
    end, ender = entry.end, None
    for j, other in enumerate(entries):
        a = other.action
        if a is None or other.at >= end or other.at < entry.at or (
                other.at == entry.at and j < k):
            continue
        ends = (a.type == "clear_faults" and a.target in (None, entry.fault.target)
                and a.params.get("fault") in (None, entry.name)) or (
                a.type == "restart" and a.target == entry.fault.target) or (
                a.type == "resume" and entry.fault.type == "pause"
                and a.target == entry.fault.target)
        if ends:
            end, ender = other.at, j
    return ender


def _ends(k: int, entries: list[MethodEntry]) -> float:
    """When entry ``k``'s fault ends: its duration, or the first action in time that ends it."""
    j = _ender(k, entries)
    return entries[k].end if j is None else entries[j].at


def _frameless(k: int, entries: list[MethodEntry], clock_rate_hz: float, frame_bits: int,
               run_frames: int) -> FieldProblem | None:
    """Why entry ``k``'s fault would act on nothing, or None: faults act on whole settings
    frames, those whose start its window holds (``channel.impairments.frame_at``), and a window
    that holds no frame start of the run changes nothing."""
    entry = entries[k]
    end, j = _ends(k, entries), _ender(k, entries)
    first = frame_at(entry.at, clock_rate_hz, frame_bits)
    stop = min(frame_at(end, clock_rate_hz, frame_bits), run_frames)
    if stop > first:
        return None
    frame_s = (1 << frame_bits) / clock_rate_hz
    frames = f"faults act on whole frames of {frame_s * 1e3:.4g} ms (2**{frame_bits} slots at " \
             f"{clock_rate_hz:g} Hz), those whose start the window holds"
    if first >= run_frames:
        return FieldProblem(("method", k, "at"), f"{entry.at:g} s is after the start of the "
                            f"run's last frame ({(run_frames - 1) * frame_s:.10g} s): {frames}")
    nxt = f"the next frame starts at {first * frame_s:.10g} s"
    if j is not None:
        return FieldProblem(("method", k), f"fault {entry.name!r} from {entry.at:g} s (ended at "
                            f"{entries[j].at:g} s by entry {j} {entries[j].name!r}) holds no "
                            f"settings frame's start: {frames}; {nxt}")
    where = ("method", k, "duration") if entry.duration is not None else ("method", k)
    return FieldProblem(where, f"{entry.end - entry.at:g} s from {entry.at:g} s holds no "
                        f"settings frame's start: {frames}; {nxt}, so make it last until then "
                        "or longer")


#: The largest relative fluctuation a source takes (``channel.source``: μ(1 + r z) clipped at
#: 5σ stays ≥ 0).
MAX_FLUCTUATION_REL = 1.0 / FLUCTUATION_CLIP_SIGMAS


def _source_fault_problem(fault: FaultModel, intensities: dict[str, dict[str, float]],
                          fluctuations: dict[str, float]) -> FieldProblem | None:
    """What is wrong with a source fault given the source it targets, or None: a miscalibrated
    class must exist and carry light (a factor on μ = 0 changes nothing); a fluctuation, added in
    quadrature to the configured one, must stay within the source's bound."""
    if fault.type == "intensity_miscalibration":
        classes = intensities.get(fault.target, {})
        name = fault.params["intensity"]
        if name not in classes:
            return FieldProblem(("params", "intensity"), unknown(
                "intensity class", name, list(classes), f" of {fault.target}"))
        if classes[name] == 0:
            lit = [c for c, mu in classes.items() if mu > 0]
            return FieldProblem(("params", "intensity"), f"class {name!r} of {fault.target} has "
                                "mean photon number 0: a factor on it changes nothing "
                                f"(miscalibrate one of {', '.join(lit)})")
    if fault.type == "intensity_fluctuation":
        r0, r = fluctuations.get(fault.target, 0.0), float(fault.params["fluctuation_rel"])
        total = math.hypot(r0, r)
        if r0 > 0 and total > MAX_FLUCTUATION_REL:
            return FieldProblem(("params", "fluctuation_rel"), f"{r:g} combined in quadrature "
                                f"with {fault.target}'s configured intensity_fluctuation_rel "
                                f"{r0:g} is {total:.4g} > {MAX_FLUCTUATION_REL:g}, the most a "
                                "source takes (μ(1 + r z) clipped at 5σ must stay ≥ 0)")
    return None


def cross_check(*, tags: list[str] | None, method: list[MethodEntry] | None,
                steady_state: SteadyStateModel | None, rollbacks: list[RollbackModel] | None,
                runtime: RuntimeModel | None, rounds: int, seconds_per_round: float,
                intensities: dict[str, dict[str, float]], fluctuations: dict[str, float],
                clock_rate_hz: float, frame_bits: int, run_frames: int) -> None:
    """What no single entry can check: raises ``FieldProblem`` with a path from the scenario's
    top. ``rounds``, ``seconds_per_round``, ``clock_rate_hz`` and ``frame_bits`` are the
    scenario's, ``run_frames`` the settings frames its run covers; ``intensities`` each source's
    classes and their mean photon numbers (``source/alice``: {name: μ}), ``fluctuations`` each
    source's configured ``intensity_fluctuation_rel``."""
    if tags and len(set(tags)) != len(tags):
        k = next(k for k, t in enumerate(tags) if t in tags[:k])
        raise FieldProblem(("tags", k), f"{tags[k]!r} is listed twice")
    if runtime is not None and runtime.duration is not None:
        length, how = runtime.duration, f"runtime.duration ({runtime.duration:g} s)"
    else:
        n = runtime.rounds if runtime is not None and runtime.rounds is not None else rounds
        source = "runtime.rounds" if n is not rounds else "rounds"
        length = n * seconds_per_round
        how = f"{source} × emulated seconds per round ({n} × {seconds_per_round:.4g} s = " \
              f"{length:.4g} s)"
    entries = method or []
    _unique([e.name for e in entries], "method", "entry")
    if rollbacks:
        _unique([r.name for r in rollbacks], "rollbacks", "rollback")
    names = {e.name for e in entries if e.fault is not None}
    for k, e in enumerate(entries):
        if e.at >= length:
            raise FieldProblem(("method", k, "at"), f"{e.at:g} s is at or after the end of the "
                               f"run: {how}")
        problem = _source_fault_problem(e.fault, intensities, fluctuations) \
            if e.fault is not None else None
        if problem is not None:
            raise FieldProblem(("method", k, "fault", *problem.path), str(problem))
    actions = [("method", k, e.action) for k, e in enumerate(entries) if e.action is not None]
    actions += [("rollbacks", k, r.action) for k, r in enumerate(rollbacks or [])]
    for section, k, a in actions:
        if a.type == "clear_faults" and "fault" in a.params and a.params["fault"] not in names:
            raise FieldProblem((section, k, "action", "params", "fault"),
                               unknown("fault entry", a.params["fault"], sorted(names)))
    if steady_state is not None:
        for k, probe in enumerate(steady_state.probes):
            if probe.window is not None and probe.window > length:
                raise FieldProblem(("steady_state", "probes", k, "window"),
                                   f"{probe.window:g} s is longer than the run: {how}")
    faults = [(k, e) for k, e in enumerate(entries) if e.fault is not None]
    for k, _ in faults:
        problem = _frameless(k, entries, clock_rate_hz, frame_bits, run_frames)
        if problem is not None:
            raise problem
    def relay_attack(e: MethodEntry) -> bool:
        return e.fault is not None and e.fault.type == "malicious_relay" \
            and e.fault.params.get("mode") == "intercept_resend"

    for k, e in faults:  # the two intercept-resend attacks are not emulated together
        for j, other in faults:
            if relay_attack(e) and other.fault is not None \
                    and other.fault.type == "intercept_resend" \
                    and other.at < _ends(k, entries) and e.at < _ends(j, entries):
                raise FieldProblem(("method", max(j, k)), "the relay's intercept-resend "
                                   f"({e.name!r}) and an eavesdropper on a fiber ({other.name!r})"
                                   " overlap; the emulator does not run both on the same frames")
    for i, (k, e) in enumerate(faults):
        assert e.fault is not None
        end = _ends(k, entries)
        for j, other in faults[i + 1:]:
            assert other.fault is not None
            same = (other.fault.type, other.fault.target) == (e.fault.type, e.fault.target)
            if same and other.at < end and e.at < _ends(j, entries):
                until = "the end of the run" if math.isinf(end) else f"{end:g} s"
                raise FieldProblem(("method", j), f"fault {other.fault.type} on "
                                   f"{other.fault.target} overlaps entry {k} ({e.name!r}, from "
                                   f"{e.at:g} s until {until}); end it first (a duration, or "
                                   "a clear_faults action)")


def model_at(model: Any, loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model that holds the fields at ``loc`` below ``model`` (following lists,
    dicts, optionals and unions), or None."""
    tp: Any = model
    for key in loc:
        tp = _pick(tp, key)
        if tp is None:
            return None
    return next((c for c in _options(tp) if isinstance(c, type) and issubclass(c, BaseModel)),
                None)


def _options(tp: Any) -> list[Any]:
    """The types a value of ``tp`` may have: unions and ``Annotated`` unwrapped."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _options(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [o for a in get_args(tp) for o in _options(a)]
    return [tp]


def _pick(tp: Any, key: str | int) -> Any:
    for c in _options(tp):
        origin = get_origin(c)
        if isinstance(key, int) and origin in (list, tuple):
            return get_args(c)[0]
        if isinstance(key, str) and origin is dict:
            return get_args(c)[1]
        if isinstance(key, str) and isinstance(c, type) and issubclass(c, BaseModel) \
                and key in c.model_fields:
            return c.model_fields[key].annotation
    return None
