"""Scenario files and the resolved run configuration (pydantic, at the edge).

A scenario is YAML. ``load_scenario`` reports a bad file with the file name, the field's path and
its line (``quickstart.yaml:14: alice.source.intensities.0.probability: ...``). After loading,
``build_*`` functions turn the models into the plain values ``channel``/``classical``/``nodes`` use.

Intensities. A user's source lists three or more intensity classes, each with its probability and
Z-basis probability; the first is the signal, whose Z-basis pairs make the key (the key class is
(0, 0)). Three classes are the usual (μ, ν, ω) layout, every intensity in both bases, ordered
μ > ν > ω ≥ 0. Four are the layout of Zhou, Yu & Wang (PRA 93, 042324, 2016): signal s in Z only,
then decoys μ, ν and a vacuum o for estimation (``scenarios/four_intensity.yaml``;
``channel.settings.four_intensity_plan``). More than three classes need
``postprocessing.decoy_method: joint`` (the default) or ``lp``; three work with any method.
Errors name the field, e.g. ``alice.source.intensities.0.z_probability``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from channel.clock import Clock
from channel.defaults import ATTENUATION_DB_PER_KM, DARK_COUNT_PROBABILITY, DETECTOR_EFFICIENCY
from channel.fiber import Fiber, PolarizationDrift, linear_rotation
from channel.impairments import FaultSchedule, TimelineEntry
from channel.link import Link
from channel.relay import Detector, RelayOptics
from channel.rng import derive_seed
from channel.settings import DEFAULT_FRAME_BITS, IntensityClass, SettingsGenerator, SettingsPlan
from channel.source import Source
from classical.cascade import CascadeVariant
from classical.estimation import (
    DEFAULT_DECOY_METHOD,
    DecoyMethod,
    SecurityParameters,
    decoy_method_problem,
    intensity_list_problem,
)
from classical.reconcilers import DEFAULT_METHOD, get_reconciler
from classical.reconciliation import Reconciler
from classical.rounds import RoundConfig
from nodes.calibration import LoopSettings, step_order_problem
from nodes.intensity_monitor import IntensityMonitor, LinkModel
from nodes.relay_software import DEFAULT_COINCIDENCE_WINDOW_PS, CharlesConfig
from orchestration.experiment import (
    FieldProblem,
    Method,
    Rollbacks,
    RuntimeModel,
    SteadyStateModel,
    Tags,
    cross_check,
    did_you_mean,
    model_at,
    timeline_entries,
    unknown,
)

#: The scenario ``mdiqkd run`` runs when none is named.
DEFAULT_SCENARIO_NAME = "quickstart"


def shipped_scenarios() -> dict[str, Traversable]:
    """The link scenarios installed with the package (``scenarios/*.yaml``), by name (file
    stem); network scenarios (a top-level ``links:``, ``orchestration.network``) are not.

    Found through ``importlib.resources``, so an installed wheel and a checkout behave alike.
    """
    found = (p for p in resources.files("scenarios").iterdir() if p.name.endswith(".yaml"))
    return {p.name.removesuffix(".yaml"): p for p in sorted(found, key=lambda p: p.name)
            if not is_network_data(yaml.safe_load(p.read_text()))}


def is_network_data(data: Any) -> bool:
    """A parsed scenario file is a network of links (``orchestration.network``) when it is a
    mapping with ``links``."""
    return isinstance(data, dict) and "links" in data


DEFAULT_SCENARIO: Traversable = resources.files("scenarios") / f"{DEFAULT_SCENARIO_NAME}.yaml"


def resolve_scenario(ref: str | Path | None) -> Traversable:
    """A scenario file from what a user typed: a path to a file, else a shipped scenario's name
    (with or without ``.yaml``); ``None`` is the default scenario."""
    if ref is None:
        return DEFAULT_SCENARIO
    path = Path(ref)
    if path.is_file():
        return path
    shipped = shipped_scenarios()
    name = str(ref).removesuffix(".yaml")
    if name in shipped:
        return shipped[name]
    if path.exists():
        raise ScenarioError(f"{ref}: not a file")
    raise ScenarioError(f"{ref}: no such file, and no shipped scenario of that name (shipped: "
                        f"{', '.join(shipped)}; `mdiqkd scenario list` shows them)")


#: Bounds on every size a scenario sets, each checked when the scenario loads, before any process
#: starts (docs/bounds.md gives the reasons). Memory: Charles holds every click of a pulse batch
#: and each user every frame record of a round.
MAX_ROUNDS = 1_000_000
MAX_ROUND_FRAMES = 100_000
MAX_BATCH_SLOTS = 1 << 30
MAX_INITIAL_POOL_BYTES = 1 << 28
MAX_DARK_COUNT_PROBABILITY = 1e-3
MAX_SEED = (1 << 64) - 1
#: Why each bounded field has its bound, added to the message when a value exceeds it.
BOUND_REASONS = {
    "rounds": "the run keeps a line of progress per round and the users a key-store row",
    "round_frames": "each user holds a round's frame records and sifted bits in memory",
    "initial_pool_bytes": "each user holds its authentication key pool in memory",
    "seed": "seeds are 64-bit integers",
}
#: A scenario is a page of YAML; a larger file is refused before it is parsed.
MAX_SCENARIO_BYTES = 1 << 20


def refuse_booleans(value: Any, info: ValidationInfo, numeric: dict[str, Any]) -> Any:
    """``true`` is not the number 1: a boolean given for a numeric field is refused."""
    if isinstance(value, bool) and numeric.get(info.field_name or "") in (int, float):
        raise ValueError(f"must be a number, got {str(value).lower()}")
    return value


class _Model(BaseModel):
    # allow_inf_nan=False: a NaN or infinite number is refused, naming its field
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_booleans(value, info, {n: f.annotation for n, f in
                                             cls.model_fields.items()})


#: Most intensity classes a source may list (the LP bounds grow with the square of it).
MAX_INTENSITIES = 8


class IntensityModel(_Model):
    name: str
    mean_photon_number: float = Field(ge=0.0, le=10.0)
    probability: float = Field(ge=0.0, le=1.0)
    z_probability: float = Field(0.5, ge=0.0, le=1.0)


class SourceModel(_Model):
    intensities: list[IntensityModel] = Field(min_length=3, max_length=MAX_INTENSITIES)
    intensity_fluctuation_rel: float = Field(0.0, ge=0.0, lt=0.2)
    encoder_flip_probability: float = Field(
        0.0, ge=0.0, le=0.5, description="the papers' flip-model misalignment e_d")

    @model_validator(mode="after")
    def _decoy_layout(self) -> SourceModel:
        ints = self.intensities
        means = [i.mean_photon_number for i in ints]
        for k, i in enumerate(ints):
            if i.mean_photon_number in means[:k]:
                raise FieldProblem(("intensities", k, "mean_photon_number"),
                                   f"{i.mean_photon_number} repeats an earlier intensity; "
                                   "intensities must be distinct")
            if i.name in [j.name for j in ints[:k]]:
                raise FieldProblem(("intensities", k, "name"),
                                   f"{i.name!r} repeats an earlier name")
        problem = intensity_list_problem(means)
        if problem:
            raise FieldProblem(("intensities",), problem)
        signal = ints[0]
        if signal.mean_photon_number <= 0:
            raise FieldProblem(("intensities", 0, "mean_photon_number"),
                               "the first intensity is the signal (the key) and must be > 0")
        if signal.z_probability <= 0 or signal.probability <= 0:
            field = "probability" if signal.probability <= 0 else "z_probability"
            raise FieldProblem(("intensities", 0, field), "the first intensity is the signal, "
                               "whose Z-basis pulses make the key: must be > 0")
        total = sum(i.probability for i in ints)
        if abs(total - 1.0) > 1e-9:
            raise FieldProblem(("intensities",),
                               f"intensity probabilities must sum to 1, got {total}")
        return self


class ArmModel(_Model):
    length_km: float = Field(ge=0.0)
    attenuation_db_per_km: float = Field(ATTENUATION_DB_PER_KM, ge=0.0)
    extra_loss_db: float = Field(0.0, ge=0.0)
    rotation_rad: float = 0.0
    drift_rad_per_sqrt_s: float = Field(0.0, ge=0.0)
    ramp_rad_per_s: float = Field(0.0, ge=0.0)


class ClockModel(_Model):
    offset_ps: float = 0.0
    frequency_offset_ppm: float = 0.0
    drift_ppm_per_s: float = 0.0
    jitter_ps: float = Field(0.0, ge=0.0)


class UserModel(_Model):
    source: SourceModel
    arm: ArmModel
    clock: ClockModel = ClockModel()


class DetectorModel(_Model):
    efficiency: float = Field(DETECTOR_EFFICIENCY, gt=0.0, le=1.0)
    dark_count_probability: float = Field(DARK_COUNT_PROBABILITY, ge=0.0, le=1.0)
    jitter_ps: float = Field(0.0, ge=0.0)

    @field_validator("dark_count_probability")
    @classmethod
    def _bounded_dark_counts(cls, value: float) -> float:
        if value > MAX_DARK_COUNT_PROBABILITY:
            raise ValueError(f"{value} is above the bound {MAX_DARK_COUNT_PROBABILITY}: Charles "
                             "holds every click of a pulse batch in memory, and dark clicks at "
                             "this rate would fill it (docs/bounds.md)")
        return value


class RelayModel(_Model):
    detectors: DetectorModel | list[DetectorModel] = DetectorModel()
    coincidence_window_ps: float = Field(DEFAULT_COINCIDENCE_WINDOW_PS, gt=0.0,
                                         description="Charles's setting, not the optics'")
    pulse_rms_ps: float = Field(50.0, gt=0.0)

    @field_validator("detectors", mode="before")
    @classmethod
    def _one_or_four(cls, value: Any) -> Any:
        """One detector model for all four, or a list of four: validated here so that an error
        names the detector's field instead of pydantic's two union branches."""
        if isinstance(value, DetectorModel | dict):
            items, path = [value], ()
        elif isinstance(value, list | tuple):
            if len(value) != 4:
                raise ValueError("give one detector model or a list of four (cH, cV, dH, dV), "
                                 f"got a list of {len(value)}")
            items = list(value)
        else:
            raise ValueError("give one detector model (a mapping) or a list of four")
        models = []
        for k, item in enumerate(items):
            try:
                models.append(DetectorModel.model_validate(item))
            except ValidationError as e:
                err = e.errors()[0]
                path = (k,) if isinstance(value, list | tuple) else ()
                raise FieldProblem((*path, *err["loc"]),
                                   err["msg"].removeprefix("Value error, ")) from None
        return models if isinstance(value, list | tuple) else models[0]


class ReconciliationModel(BaseModel):
    """``postprocessing.reconciliation``: ``method`` names a reconciler
    (``classical.reconcilers.RECONCILERS``, ``cascade`` by default) and every other field is one
    of its settings (Cascade: the fields of ``classical.cascade.CascadeParameters``, e.g.
    ``variant``), checked by the method itself when the scenario loads."""

    model_config = ConfigDict(extra="allow", frozen=True)
    method: str = DEFAULT_METHOD

    @model_validator(mode="after")
    def _the_method_accepts_its_settings(self) -> ReconciliationModel:
        self.reconciler()
        return self

    def reconciler(self) -> Reconciler:
        return get_reconciler(self.method, self.model_extra or {})


class PostprocessingModel(_Model):
    mode: Literal["finite", "asymptotic"] = "finite"
    qber_prior: float = Field(0.02, gt=0.0, lt=0.5)
    reconciliation: ReconciliationModel = ReconciliationModel()
    #: Shorthand for ``reconciliation: {method: cascade, variant: ...}``.
    cascade_variant: CascadeVariant | None = None
    decoy_method: DecoyMethod = DEFAULT_DECOY_METHOD
    epsilon_correctness: float = Field(1e-15, gt=0.0, lt=1.0)
    epsilon_pa: float = Field(1e-10, gt=0.0, lt=1.0)
    epsilon_pe: float = Field(1e-10, gt=0.0, lt=1.0)
    max_qber_z: float = Field(0.11, gt=0.0, le=0.5)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``cascade_variant: v`` stands for ``reconciliation: {method: cascade, variant: v}``;
        giving both is refused unless they agree (as in a dumped configuration)."""
        if not isinstance(data, dict) or data.get("cascade_variant") is None:
            return data
        expanded = {"method": "cascade", "variant": data["cascade_variant"]}
        given = data.get("reconciliation")
        if given is not None:
            if isinstance(given, BaseModel):
                given = given.model_dump()
            if given != expanded:
                raise FieldProblem(("cascade_variant",), "give reconciliation or "
                                   "cascade_variant, not both (cascade_variant is short for "
                                   "reconciliation: {method: cascade, variant: ...})")
        return {**data, "reconciliation": expanded}

    def reconciler(self) -> Reconciler:
        """The reconciler both users run (the method and its parameters)."""
        return self.reconciliation.reconciler()


class CalibrationModel(_Model):
    """``calibration``: the users' calibration loops (``nodes.calibration``, docs/calibration.md).
    The section runs them; each loop is on unless switched off here."""

    polarization: bool = Field(True, description="tune each user's polarization controller "
                               "against QBER_Z + QBER_X")
    clock: bool = Field(True, description="tune Bob's emission delay against Alice's")
    polarization_step_rad: float = Field(0.2, gt=0.0, le=1.0)
    polarization_min_step_rad: float = Field(0.05, gt=0.0, le=1.0)
    delay_step_ps: float = Field(40.0, gt=0.0, le=1000.0)
    delay_min_step_ps: float = Field(10.0, gt=0.0, le=1000.0)
    trigger_sigmas: float = Field(6.0, gt=0.0, le=100.0)
    trigger_min_rise: float = Field(0.002, ge=0.0, le=1.0)
    accept_sigmas: float = Field(3.0, gt=0.0, le=100.0)
    max_search_rounds: int = Field(60, ge=1, le=100_000)
    intensity: bool = Field(True, description="the intensity monitor: flag a round whose "
                            "per-class counts do not fit the nominal intensities")
    intensity_false_alarm: float = Field(1e-6, gt=0.0, lt=1.0, description="the monitor's "
                                         "false-alarm probability per check")
    intensity_window_rounds: int = Field(1, ge=1, le=1000, description="rounds the monitor "
                                         "pools into one check")

    @model_validator(mode="after")
    def _steps_ordered(self) -> CalibrationModel:
        problem = step_order_problem(self.model_dump())
        if problem is not None:
            raise FieldProblem((problem[0],), problem[1])
        return self


class AuthenticationModel(_Model):
    mode: Literal["wegman-carter", "hmac"] = "wegman-carter"
    initial_pool_bytes: int = Field(1 << 20, ge=1024, le=MAX_INITIAL_POOL_BYTES,
                                    description="each user holds its pool in memory")


class Scenario(_Model):
    title: str
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    entropy: Literal["seeded", "os"] = Field(
        "seeded", description="seeded: every secret derived from `seed` (reproducible "
        "emulation); os: from the operating system's generator (not reproducible)")
    clock_rate_hz: float = Field(1e9, gt=0.0)
    rounds: int = Field(gt=0, le=MAX_ROUNDS)
    round_frames: int = Field(gt=0, le=MAX_ROUND_FRAMES,
                              description="frames of 2**frame_bits slots per key round")
    batch_frames: int = Field(256, gt=0, description="frames per pulse batch on the wire")
    frame_bits: int = Field(DEFAULT_FRAME_BITS, ge=10, le=30)
    alice: UserModel
    bob: UserModel
    relay: RelayModel = RelayModel()
    postprocessing: PostprocessingModel = PostprocessingModel()
    authentication: AuthenticationModel = AuthenticationModel()
    tracing: bool = True
    #: the users' calibration loops: off unless the section is given (docs/calibration.md)
    calibration: CalibrationModel | None = None
    # Game-day sections (orchestration/experiment.py, docs/scenario-format.md): optional, and
    # left out of a dump when not given, so a scenario without them dumps as before.
    tags: Tags | None = None
    runtime: RuntimeModel | None = None
    steady_state: SteadyStateModel | None = None
    method: Method | None = None
    rollbacks: Rollbacks | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_game_day_sections(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in (*GAME_DAY_FIELDS, "calibration"):
                if name in data and data[name] is None:
                    del data[name]
        return data

    @model_validator(mode="after")
    def _even_frame_bits(self) -> Scenario:
        if self.frame_bits % 2:
            raise FieldProblem(("frame_bits",), f"must be even, got {self.frame_bits}")
        return self

    @model_validator(mode="after")
    def _bounded_batches(self) -> Scenario:
        slots = self.batch_frames << self.frame_bits
        if slots > MAX_BATCH_SLOTS:
            raise FieldProblem(("batch_frames",), f"{self.batch_frames} frames of "
                               f"2**{self.frame_bits} slots is {slots} slots per batch, above "
                               f"the bound {MAX_BATCH_SLOTS}: Charles holds a batch's clicks in "
                               "memory (docs/bounds.md)")
        return self

    @model_validator(mode="after")
    def _decoy_method_fits_the_layout(self) -> Scenario:
        counts = (len(self.alice.source.intensities), len(self.bob.source.intensities))
        problem = decoy_method_problem(self.postprocessing.decoy_method, counts)
        if problem:
            raise FieldProblem(("postprocessing", "decoy_method"), problem)
        return self

    @model_validator(mode="after")
    def _finite_key_needs_nominal_intensities(self) -> Scenario:
        """The decoy bounds take each class's photon number as Poissonian of its nominal mean; a
        fluctuating intensity makes it a mixture of Poissonians, for which the finite-key bounds
        (and so its ε) are not proven (docs/finite-key.md §6)."""
        if self.postprocessing.mode != "finite":
            return self
        for name, user in (("alice", self.alice), ("bob", self.bob)):
            r = user.source.intensity_fluctuation_rel
            if r > 0:
                raise FieldProblem(
                    (name, "source", "intensity_fluctuation_rel"),
                    f"{r} > 0 is refused with postprocessing.mode: finite: the decoy bounds "
                    "assume every pulse of a class has the nominal mean photon number (a Poisson "
                    "photon number), which a fluctuating intensity breaks, so the finite key "
                    "would claim an ε it does not have; set it to 0, or use mode: asymptotic to "
                    "study the fluctuation (docs/finite-key.md §6)")
        return self

    @model_validator(mode="after")
    def _game_day_cross_checks(self) -> Scenario:
        cross_check(tags=self.tags, method=self.method, steady_state=self.steady_state,
                    rollbacks=self.rollbacks, runtime=self.runtime, rounds=self.rounds,
                    seconds_per_round=self.emulated_seconds_per_round,
                    intensities={f"source/{u}": {i.name: i.mean_photon_number
                                                 for i in m.source.intensities}
                                 for u, m in (("alice", self.alice), ("bob", self.bob))},
                    fluctuations={f"source/{u}": m.source.intensity_fluctuation_rel
                                  for u, m in (("alice", self.alice), ("bob", self.bob))},
                    clock_rate_hz=self.clock_rate_hz, frame_bits=self.frame_bits,
                    run_frames=self.run_rounds * self.round_frames)
        return self

    @model_validator(mode="after")
    def _bounded_run_rounds(self) -> Scenario:
        """A duration is whole rounds, and rounds have their bound (docs/bounds.md)."""
        if self.run_rounds > MAX_ROUNDS:
            assert self.runtime is not None and self.runtime.duration is not None
            raise FieldProblem(("runtime", "duration"), f"{self.runtime.duration:g} s is "
                               f"{self.run_rounds} rounds of {self.emulated_seconds_per_round:.4g}"
                               f" s, above the bound {MAX_ROUNDS} ({BOUND_REASONS['rounds']}; "
                               "docs/bounds.md)")
        return self

    def refused_game_day_parts(self, implemented_faults: frozenset[str],
                               implemented_actions: frozenset[str]) -> list[str]:
        """The parts of the game-day sections a run cannot honour, each as ``field: why``:
        faults and actions the engine does not implement."""
        refused = []
        for k, e in enumerate(self.method or []):
            if e.fault is not None and e.fault.type not in implemented_faults:
                refused.append(f"method.{k}.fault.type: fault {e.fault.type} ({e.name!r}) is "
                               "not injected by the emulator yet")
            restarts = self.runtime is not None and self.runtime.restart
            if (e.fault is not None and e.fault.type == "kill" and e.duration is not None
                    and not restarts):
                refused.append(f"method.{k}.duration: a killed node is restarted only when the "
                               f"link restarts ({e.name!r}): set runtime.restart: true, or "
                               "leave out the duration (the run then fails, naming the node)")
            if e.fault is not None and e.fault.type == "pause" and e.duration is None:
                refused.append(f"method.{k}.duration: a pause needs a duration (wall-clock "
                               f"seconds the node stays stopped; {e.name!r})")
            if e.action is not None and e.action.type not in implemented_actions:
                refused.append(f"method.{k}.action.type: action {e.action.type} ({e.name!r}) "
                               "is not carried out by the emulator yet")
            elif e.action is not None and e.action.type == "calibrate":
                why = self._calibrate_problem(e.action.params["loop"])
                if why:
                    refused.append(f"method.{k}.action.params.loop: {why} ({e.name!r})")
        for k, r in enumerate(self.rollbacks or []):
            if r.action.type not in implemented_actions:
                refused.append(f"rollbacks.{k}.action.type: action {r.action.type} "
                               f"({r.name!r}) is not carried out by the emulator yet")
        return refused

    def _calibrate_problem(self, loop: str) -> str | None:
        """Why a ``calibrate`` action of ``loop`` cannot run, or None: it starts a search of
        the users' loops (docs/calibration.md), so the loop must run."""
        if loop == "intensity":
            return ("the intensity monitor checks every round by itself: there is no loop to "
                    "start")
        c = self.calibration
        if c is None or not getattr(c, loop):
            return (f"the {loop} loop does not run in this scenario (add calibration: "
                    f"{{{loop}: true}})")
        return None

    @property
    def run_rounds(self) -> int:
        """The key rounds a run of this scenario does: ``runtime.rounds``, else
        ``runtime.duration`` rounded up to a whole number of rounds (so that the run covers
        the whole duration), else ``rounds``."""
        rt = self.runtime
        if rt is not None and rt.rounds is not None:
            return rt.rounds
        if rt is not None and rt.duration is not None:
            return rounds_for_duration(rt.duration, self.emulated_seconds_per_round)
        return self.rounds

    def for_run(self) -> Scenario:
        """This scenario with ``rounds`` set to the rounds the run does (what the nodes read)."""
        return self.model_copy(update={"rounds": self.run_rounds})

    @property
    def round_slots(self) -> int:
        return self.round_frames << self.frame_bits

    @property
    def emulated_seconds_per_round(self) -> float:
        return self.round_slots / self.clock_rate_hz


def rounds_for_duration(duration_s: float, seconds_per_round: float) -> int:
    """Whole rounds covering ``duration_s`` of emulated time: rounded up (a duration within a
    part per billion of a whole number of rounds is that number), at least one."""
    q = duration_s / seconds_per_round
    whole = round(q)
    return max(1, whole if abs(q - whole) <= 1e-9 * q else math.ceil(q))


#: The optional game-day sections of a scenario (orchestration/experiment.py).
GAME_DAY_FIELDS = ("tags", "runtime", "steady_state", "method", "rollbacks")
GAME_DAY_FIELDS_LOC = {(name,) for name in GAME_DAY_FIELDS}


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file, field and line."""


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the field at ``loc``; of its nearest enclosing entry when the field itself is
    not in the file (a missing field: the line of the mapping that lacks it)."""
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            found = node.value[key]
        else:
            break
        if found is None:
            break
        node = found
    return node.start_mark.line + 1 if node is not None else None


def _key_line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the key at the end of ``loc`` (an unknown field's name), else as _line_of."""
    parent = node
    for key in loc[:-1]:
        if isinstance(parent, yaml.MappingNode):
            parent = next((v for k, v in parent.value if k.value == str(key)), None)
        elif isinstance(parent, yaml.SequenceNode) and isinstance(key, int) \
                and key < len(parent.value):
            parent = parent.value[key]
        else:
            parent = None
    if isinstance(parent, yaml.MappingNode) and loc:
        key_node = next((k for k, _ in parent.value if k.value == str(loc[-1])), None)
        if key_node is not None:
            return key_node.start_mark.line + 1
    return _line_of(node, loc)


def _unknown_field(loc: tuple[Any, ...], root_model: type[BaseModel] | None = None) -> str:
    """An unknown field's message, with the closest known name of its model."""
    model = model_at(root_model or Scenario, loc[:-1])
    if model is None or not loc:
        return "unknown field"
    return unknown("field", loc[-1], list(model.model_fields))


#: pydantic messages (by error type) reworded: a model's class name anywhere, and in the game-day
#: sections (mappings and lists written by hand) the type names too.
_PLAIN_MESSAGES = {"model_type": "must be a mapping of fields",
                   "model_attributes_type": "must be a mapping of fields",
                   "dict_type": "must be a mapping", "list_type": "must be a list"}


def read_scenario_yaml(path: Path | Traversable) -> tuple[Any, yaml.Node | None]:
    """A scenario file's data and its YAML node tree (for the lines of errors), parsed once;
    ``ScenarioError`` for a file that cannot be read, is too large, or is not YAML."""
    if isinstance(path, str):
        path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)
        if len(raw) > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"{path}: larger than the bound of {MAX_SCENARIO_BYTES} bytes "
                                "for a scenario file (docs/bounds.md)")
        text = raw.decode("utf-8")
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: not a text file in UTF-8 (byte {e.start})") from None
    try:
        loader = yaml.SafeLoader(text)  # parsed once: the node tree (for lines), then the data
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: not valid YAML: nested too deeply") from None
    return data, root


def load_scenario(path: Path | Traversable,
                  overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file (a path, or a shipped scenario's resource)."""
    if isinstance(path, str):
        path = Path(path)
    data, root = read_scenario_yaml(path)
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario must be a mapping of fields")
    data.update(overrides or {})
    try:
        return Scenario.model_validate(data)
    except RecursionError:
        raise ScenarioError(f"{path}: nested too deeply") from None
    except ValidationError as e:
        raise ScenarioError("; ".join(validation_problems(e, path.name, root,
                                                          overrides or {}))) from None


def validation_problems(e: ValidationError, name: str, root: yaml.Node | None,
                        overrides: dict[str, Any], model: type[BaseModel] | None = None,
                        override_where: Callable[[tuple[Any, ...], bool], str] | None = None,
                        ) -> list[str]:
    """Each error of validating ``model`` (default: ``Scenario``) as ``FILE:LINE: field.path:
    message`` (``--option: message`` for an override, or ``override_where(loc, unknown)`` when
    given: where an override was written). A missing field that a misspelt one next to it stands
    for is reported once, as the misspelling."""
    found = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
        problem = err.get("ctx", {}).get("error")
        if isinstance(problem, FieldProblem):
            loc += problem.path
        message = err["msg"].removeprefix("Value error, ")
        extra = err["type"] == "extra_forbidden" or message == "Extra inputs are not permitted"
        if extra:
            message = _unknown_field(loc, model or Scenario)
        elif err["type"] == "literal_error":
            message += did_you_mean(err.get("input"), re.findall(
                r"'([^']*)'", str(err.get("ctx", {}).get("expected", ""))))
        elif err["type"] in _PLAIN_MESSAGES and (loc[:1] in GAME_DAY_FIELDS_LOC
                                                 or err["type"].startswith("model_")):
            message = _PLAIN_MESSAGES[err["type"]]  # (a model's class name means nothing here)
        if err["type"] == "less_than_equal" and loc and loc[-1] in BOUND_REASONS:
            message += f" ({BOUND_REASONS[loc[-1]]}; docs/bounds.md)"
        found.append((loc, err["type"], extra, message))
    misspelt = {(loc[:-1], m.split("did you mean '")[1].split("'")[0])
                for loc, _, extra, m in found if extra and loc and "did you mean '" in m}
    problems = []
    for loc, kind, extra, message in found:
        if kind == "missing" and loc and (loc[:-1], str(loc[-1])) in misspelt:
            continue
        if loc and loc[0] in overrides and override_where is not None:
            problems.append(f"{override_where(loc, extra)}: {message}")
            continue
        if loc and loc[0] in overrides:
            # a command-line override: name the option, not the file
            problems.append(f"--{str(loc[0]).replace('_', '-')}: {message}")
            continue
        line = _key_line_of(root, loc) if extra else _line_of(root, loc)
        where = f"{name}:{line}" if line else name
        field = ".".join(str(p) for p in loc) or "(top level)"
        problems.append(f"{where}: {field}: {message}")
    return problems


def line_of(root: yaml.Node | None, loc: tuple[Any, ...], key: bool = False) -> int | None:
    """The line of the field at ``loc`` in a parsed file (``key``: of its key, for an unknown
    field's name), or of its nearest enclosing entry."""
    return _key_line_of(root, loc) if key else _line_of(root, loc)


# --- building plain values --------------------------------------------------------------------


def _plan(source: SourceModel) -> SettingsPlan:
    return SettingsPlan(tuple(IntensityClass(i.name, i.mean_photon_number, i.probability,
                                             i.z_probability) for i in source.intensities))


def _fiber(arm: ArmModel) -> Fiber:
    return Fiber(arm.length_km, arm.attenuation_db_per_km, arm.extra_loss_db,
                 rotation=linear_rotation(arm.rotation_rad),
                 drift=PolarizationDrift(arm.drift_rad_per_sqrt_s, arm.ramp_rad_per_s))


def build_link(s: Scenario, drift_seed: int | None = None,
               timeline: Sequence[TimelineEntry] | None = None) -> Link:
    """Nature's link, with the physics faults of ``timeline`` (by default the scenario's
    ``method``: nature itself gets its timeline from its own secrets, not from the scenario);
    ``drift_seed`` defaults to the one derived from the scenario's seed."""
    dets = s.relay.detectors if isinstance(s.relay.detectors, list) else [s.relay.detectors] * 4
    relay = RelayOptics(tuple(Detector(d.efficiency, d.dark_count_probability,
                                       jitter_ps=d.jitter_ps) for d in dets))
    seed = derive_seed(s.seed, "polarization drift") if drift_seed is None else drift_seed
    return Link(
        source_a=Source(_plan(s.alice.source),
                        intensity_fluctuation_rel=s.alice.source.intensity_fluctuation_rel,
                        bit_flip_probability=s.alice.source.encoder_flip_probability),
        source_b=Source(_plan(s.bob.source),
                        intensity_fluctuation_rel=s.bob.source.intensity_fluctuation_rel,
                        bit_flip_probability=s.bob.source.encoder_flip_probability),
        fiber_a=_fiber(s.alice.arm), fiber_b=_fiber(s.bob.arm), relay=relay,
        clock_a=Clock(**s.alice.clock.model_dump()), clock_b=Clock(**s.bob.clock.model_dump()),
        clock_rate_hz=s.clock_rate_hz, pulse_rms_ps=s.relay.pulse_rms_ps,
        frame_bits=s.frame_bits, drift_seed=seed,
        faults=build_fault_schedule(s, seed, timeline))


def fault_timeline(s: Scenario) -> tuple[TimelineEntry, ...]:
    """The scenario's ``method`` as plain values: what nature is given, in its own secrets, to
    build its fault schedule from."""
    return timeline_entries(s.method)


def build_fault_schedule(s: Scenario, drift_seed: int,
                         timeline: Sequence[TimelineEntry] | None = None) -> FaultSchedule | None:
    """The physics faults of ``timeline`` (by default the scenario's ``method``;
    ``channel.impairments``), their random drift keyed by nature's ``drift_seed``; None without
    any entry. Faults the channel does not emulate (classical, nodes, …) are left to
    whoever injects them."""
    entries = fault_timeline(s) if timeline is None else tuple(timeline)
    return FaultSchedule.from_timeline(entries, drift_seed) if entries else None


#: What no node reads: the master seed (each node gets its own secrets) and the game day's
#: timeline and hypothesis (nature gets the timeline in its own secrets; the verdict is the
#: orchestrator's).
HIDDEN_FROM_NODES = frozenset({"seed", "method", "rollbacks", "steady_state"})


def node_view(s: Scenario) -> dict[str, Any]:
    """The scenario as every node reads it (``config.json``): without ``HIDDEN_FROM_NODES``."""
    return s.model_dump(exclude=set(HIDDEN_FROM_NODES))


def build_charles_config(s: Scenario) -> CharlesConfig:
    return CharlesConfig(s.relay.coincidence_window_ps)


def user_keys(s: Scenario) -> dict[str, int]:
    """Each user's secret settings key and protocol seed, and nature's seed, derived from the
    scenario seed."""
    names = ("alice_settings", "bob_settings", "alice_protocol", "bob_protocol", "nature")
    return {n: derive_seed(s.seed, n) for n in names}


def settings_plan(s: Scenario, user: Literal["alice", "bob"]) -> SettingsPlan:
    """A user's public settings plan (intensities, probabilities): no key."""
    return _plan((s.alice if user == "alice" else s.bob).source)


def build_settings(s: Scenario, user: Literal["alice", "bob"],
                   key: int | None = None) -> SettingsGenerator:
    """A user's settings generator; ``key`` defaults to the one derived from the scenario's seed
    (in-process tools and tests: the nodes get theirs from ``orchestration.secrets``)."""
    model = s.alice if user == "alice" else s.bob
    key = user_keys(s)[f"{user}_settings"] if key is None else key
    return SettingsGenerator(_plan(model.source), key, s.frame_bits)


def build_calibration(s: Scenario) -> LoopSettings | None:
    """The users' calibration loops (``nodes.calibration``), None without the section or with
    every loop off."""
    c = s.calibration
    if c is None or not (c.polarization or c.clock):
        return None
    return LoopSettings(**c.model_dump(exclude={"intensity", "intensity_false_alarm",
                                                "intensity_window_rounds"}))


def build_intensity_monitor(s: Scenario) -> IntensityMonitor | None:
    """The users' intensity monitor (``nodes.intensity_monitor``) over the scenario's nominal
    link, None without a calibration section or with the monitor off. Built from public values
    only (the link's configured devices; no fault, no seed)."""
    c = s.calibration
    if c is None or not c.intensity:
        return None
    plans = {u: settings_plan(s, u) for u in ("alice", "bob")}
    names = {u: [i.name for i in m.source.intensities] for u, m in (("alice", s.alice),
                                                                    ("bob", s.bob))}
    model = LinkModel.from_link(build_link(s, drift_seed=0, timeline=()),
                                coincidence_window_ps=s.relay.coincidence_window_ps)
    return IntensityMonitor(model, plans["alice"].mean_photon_numbers,
                            plans["bob"].mean_photon_numbers, names["alice"], names["bob"],
                            false_alarm=c.intensity_false_alarm,
                            window_rounds=c.intensity_window_rounds)


def build_round_config(s: Scenario) -> RoundConfig:
    p = s.postprocessing
    ints_a = tuple(i.mean_photon_number for i in s.alice.source.intensities)
    ints_b = tuple(i.mean_photon_number for i in s.bob.source.intensities)
    return RoundConfig(ints_a, ints_b, 1 << s.frame_bits, p.mode,  # type: ignore[arg-type]
                       SecurityParameters(epsilon_correctness=p.epsilon_correctness,
                                          epsilon_pa=p.epsilon_pa, epsilon_pe=p.epsilon_pe,
                                          max_qber_z=p.max_qber_z),
                       reconciler=p.reconciler(), decoy_method=p.decoy_method,
                       key_intensity=(0, 0),
                       # the polarization loop needs QBER_Z of rounds that give no key too
                       disclose_unkeyed=s.calibration is not None and s.calibration.polarization)
