"""The users' calibration loops: polarization compensation and clock re-synchronisation.

Deployed MDI-QKD links keep their users aligned to the relay with feedback loops. Here both are
driven by the error rates the users measure anyway (docs/calibration.md):

* **polarization** (``polarization``): each user's polarization controller in front of its fiber
  (``channel.controls``: a rotation vector, three coordinates per user) is tuned so that the
  relay's polarizing beam splitters see H/V as sent. A misaligned arm raises QBER_Z (H ↔ V mixing)
  and QBER_X (D/A, H/V phase);
* **clock** (``clock``): Bob's emission delay is tuned against Alice's, the reference, so that
  their pulses overlap at the relay's beam splitter; an offset lowers the Hong–Ou–Mandel overlap
  and raises QBER_X.

One compass (pattern) search serves both: its coordinates are the enabled loops' actuators. A
search starts when the cost J = QBER_Z + QBER_X of the current setting rises above its reference
(the cost when the link was last aligned) by ``trigger_sigmas`` standard errors; each round then
tries one coordinate one step up or down and keeps the setting if it lowers J by
``accept_sigmas`` standard errors (every ``TRIALS_PER_BASE`` trial rounds, a round measures the
current setting again, so trials are judged against a recent cost, and a cost that rose under
the search, another fault, starts its sweep over); a sweep of every direction with no gain
halves the steps; steps below their minimum, or a cost back within ``accept_sigmas`` of the
reference, end the search (converged: J is the new reference), and a search that reads
``max_search_rounds`` trial results ends as failed (the best setting found is kept, its cost the
new reference). Every decision is a pure function of the public error rates, which both users
hold, so both run the same controller and each applies its own coordinates; neither sends the
other a message for it.

A round's setting is fixed when its pulses are emitted, and its error rates are known only once
it has been post-processed, one or two rounds later (the users pipeline emission,
docs/architecture.md §2): ``settings_for`` hands out the next point to the next round emitted and
``observe`` takes rounds' results in any order, comparing each with the setting that round
really had.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from channel.controls import MAX_DELAY_PS, MAX_ROTATION_RAD, SourceControls

#: While searching, the setting itself is measured again after this many trial rounds, so that
#: trials are judged against a recent cost even when the link changes under the search.
TRIALS_PER_BASE = 3
#: The loops ``calibration`` switches (the intensity monitor is ``nodes.intensity_monitor``).
LOOPS = ("polarization", "clock")


#: (smallest step, first step) of each search coordinate: a search halves the first step down to
#: the smallest, so the smallest must not exceed the first.
STEP_PAIRS = (("polarization_min_step_rad", "polarization_step_rad"),
              ("delay_min_step_ps", "delay_step_ps"))


def step_order_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, what is wrong) for the first smallest step above its first step, else None; the
    one rule both ``LoopSettings`` and the scenario's ``calibration`` section apply."""
    for smallest, first in STEP_PAIRS:
        if values[smallest] > values[first]:
            return smallest, f"must not exceed {first}"
    return None


@dataclass(frozen=True)
class LoopSettings:
    """The scenario's ``calibration`` section (docs/scenario-format.md), as plain values."""

    polarization: bool = True
    clock: bool = True
    polarization_step_rad: float = 0.2
    polarization_min_step_rad: float = 0.05
    delay_step_ps: float = 40.0
    delay_min_step_ps: float = 10.0
    trigger_sigmas: float = 6.0
    #: and the rise must be at least this much (absolute): noise on the reference is not a fault
    trigger_min_rise: float = 0.002
    accept_sigmas: float = 3.0
    max_search_rounds: int = 60

    def __post_init__(self) -> None:
        for name in ("polarization_step_rad", "polarization_min_step_rad", "delay_step_ps",
                     "delay_min_step_ps", "trigger_sigmas", "accept_sigmas"):
            if not getattr(self, name) > 0:
                raise ValueError(f"calibration {name} must be > 0")
        problem = step_order_problem(vars(self))
        if problem is not None:
            raise ValueError(f"calibration {problem[0]} {problem[1]}")
        if not self.trigger_min_rise >= 0:
            raise ValueError("calibration trigger_min_rise must be >= 0")
        if self.max_search_rounds < 1:
            raise ValueError("calibration max_search_rounds must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.polarization or self.clock


def _count(value: object) -> int | None:
    """``value`` if it is a whole count (an integer, not a bool), else None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def measured_qber_z(report: Mapping[str, Any]) -> tuple[float, int] | None:
    """A round's measured QBER_Z and the number of bits it was measured on, from its report
    (``classical.rounds``) and from figures both users hold, so that both users' searches and
    next pre-checks agree: the bits reconciliation corrected, once the final estimate ran (Bob's
    reconciliation stage also holds that count and Alice's does not, so a round that failed
    verification would set the two apart; a final estimate that aborted keeps the pre-check's
    ``qber_z``, the prior itself, which is not a measurement), or else the key-class bits a round
    without key disclosed (``UnkeyedBits``). None when the round measured neither."""
    n_key, corrected = _count(report.get("key_bits_raw")), _count(report.get("corrected_bits"))
    if report.get("phase") == "final" and n_key and corrected is not None \
            and 0 <= corrected <= n_key:
        return corrected / n_key, n_key
    n_disclosed = _count(report.get("disclosed_key_bits"))
    disclosed = _count(report.get("disclosed_z_errors"))
    if n_disclosed and disclosed is not None and 0 <= disclosed <= n_disclosed:
        return disclosed / n_disclosed, n_disclosed
    return None


@dataclass(frozen=True)
class Measurement:
    """A round's public error rates: QBER_X over ``n_x`` disclosed X bits, and QBER_Z of the key
    class over ``n_z`` bits once reconciliation has counted its errors (None before)."""

    qber_x: float
    n_x: int
    qber_z: float | None = None
    n_z: int = 0

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Measurement | None:
        """From a round's report (``classical.rounds``): None when it has no X bits. QBER_Z only
        from the bits reconciliation corrected, or the key-class bits a round without key
        disclosed (``UnkeyedBits``), never the prior a pre-check assumed."""
        n_x, e_x = int(report.get("x_bits") or 0), report.get("qber_x")
        if n_x <= 0 or e_x is None or not 0.0 <= float(e_x) <= 1.0:
            return None
        z = measured_qber_z(report)
        return cls(float(e_x), n_x) if z is None else cls(float(e_x), n_x, z[0], z[1])

    def cost(self, with_z: bool) -> tuple[float, float]:
        """(J, its variance): QBER_X, plus QBER_Z when ``with_z``."""
        j = self.qber_x
        var = self.qber_x * (1 - self.qber_x) / self.n_x
        if with_z:
            assert self.qber_z is not None
            j += self.qber_z
            var += self.qber_z * (1 - self.qber_z) / self.n_z
        return j, var


def rise(m: Measurement, ref: Measurement) -> tuple[float, float]:
    """How much higher ``m``'s cost is than ``ref``'s, and the standard error of the difference;
    QBER_Z counts only when both have it."""
    with_z = m.qber_z is not None and ref.qber_z is not None
    (j1, v1), (j0, v0) = m.cost(with_z), ref.cost(with_z)
    return j1 - j0, math.sqrt(v1 + v0)


@dataclass(frozen=True)
class CalibrationEvent:
    """What a loop did when it read a round's result (``round``): ``action`` is ``started``,
    ``moved`` (a setting kept), ``converged`` or ``failed``; ``loop`` the loop whose actuator
    moved (``polarization`` or ``clock``), or ``search`` for the search as a whole."""

    round: int
    loop: str
    action: str
    detail: str
    cost: float

    def as_record(self) -> dict[str, Any]:
        return {"round": self.round, "loop": self.loop, "action": self.action,
                "detail": self.detail, "cost": self.cost}


@dataclass(frozen=True)
class _Coordinate:
    user: str  # whose actuator
    loop: str
    index: int  # 0-2 rotation vector, 3 delay
    step: float
    min_step: float
    limit: float


def coordinates(settings: LoopSettings) -> tuple[_Coordinate, ...]:
    out: list[_Coordinate] = []
    if settings.polarization:
        out += [_Coordinate(user, "polarization", i, settings.polarization_step_rad,
                            settings.polarization_min_step_rad, MAX_ROTATION_RAD)
                for user in ("alice", "bob") for i in range(3)]
    if settings.clock:  # Alice's clock is the reference
        out.append(_Coordinate("bob", "clock", 3, settings.delay_step_ps,
                               settings.delay_min_step_ps, MAX_DELAY_PS))
    return tuple(out)


@dataclass
class Calibrator:
    """The compass search over both users' actuators (see the module's docstring).

    Directions are (coordinate, sign) pairs, 2k for +step and 2k + 1 for −step on coordinate k.
    While searching, each round emitted tries the next direction (``cursor``) from the base
    setting of that moment, so a trial is in flight in every round despite the pipelining; a
    result that beats the base by ``accept_sigmas`` moves the base there and the next round tries
    that direction again."""

    settings: LoopSettings
    coords: tuple[_Coordinate, ...] = ()
    base: np.ndarray = field(default_factory=lambda: np.zeros(0))
    base_m: Measurement | None = None  # the latest result at the base setting
    reference: Measurement | None = None  # the cost of an aligned link
    searching: bool = False
    search_rounds: int = 0  # trial results read in this search
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cursor: int = 0  # the direction the next trial round tries
    missed: set[int] = field(default_factory=set)  # directions tried in vain this sweep
    sweep: int = 0  # counts restarts, gains and step changes: a trial counts in its own sweep
    remeasure: bool = False  # the next round emitted measures the base again
    trials_since_base: int = 0  # trial rounds emitted since the last base round
    planned: dict[int, tuple[np.ndarray, int | None, int]] = field(default_factory=dict)
    forced: bool = False  # a game day's ``calibrate`` action: search at the next result

    def __post_init__(self) -> None:
        self.coords = coordinates(self.settings)
        self.base = np.zeros(len(self.coords))
        self.steps = np.array([c.step for c in self.coords])

    # --- what each round emits with ------------------------------------------------------------

    def settings_for(self, round_id: int) -> tuple[SourceControls, SourceControls]:
        """(Alice's, Bob's) actuators for round ``round_id``, fixed at its first call."""
        if round_id not in self.planned:
            point, tried = self.base.copy(), None
            if self.trials_since_base >= TRIALS_PER_BASE:
                self.remeasure = True  # the link may have changed under the search
            if self.searching and not self.remeasure:
                self.trials_since_base += 1
                tried = self.cursor
                self.cursor = (self.cursor + 1) % (2 * len(self.coords))
                k, minus = divmod(tried, 2)
                point[k] = np.clip(point[k] + (-self.steps[k] if minus else self.steps[k]),
                                   -self.coords[k].limit, self.coords[k].limit)
            if tried is None:
                self.remeasure, self.trials_since_base = False, 0
            self.planned[round_id] = (point, tried, self.sweep)
        return self.controls(self.planned[round_id][0])

    def controls(self, point: np.ndarray) -> tuple[SourceControls, SourceControls]:
        """The point's coordinates as each user's actuator settings."""
        rot = {"alice": [0.0, 0.0, 0.0], "bob": [0.0, 0.0, 0.0]}
        delay = 0.0
        for c, x in zip(self.coords, point, strict=True):
            if c.index == 3:
                delay = float(x)
            else:
                rot[c.user][c.index] = float(x)
        return (SourceControls((rot["alice"][0], rot["alice"][1], rot["alice"][2])),
                SourceControls((rot["bob"][0], rot["bob"][1], rot["bob"][2]), delay))

    # --- what each round's result teaches -------------------------------------------------------

    def force(self) -> None:
        """Start a search at the next result, whatever the cost (a ``calibrate`` action); none
        while a search runs (the action is then already done)."""
        self.forced = not self.searching

    def observe(self, round_id: int, m: Measurement | None) -> list[CalibrationEvent]:
        """Take round ``round_id``'s result (None: it gave no usable error rates); what the loops
        did on reading it."""
        point, tried, sweep = self.planned.pop(round_id, (None, None, -1))
        events: list[CalibrationEvent] = []
        if point is None or not self.coords or m is None:
            return events  # nothing learnt (a trial without a result is simply not counted)
        if tried is None:
            if np.array_equal(point, self.base):
                if self.searching and self.base_m is not None and self._rose(m, self.base_m):
                    # the link changed under the search (another fault): start the sweep over
                    self.steps = np.array([c.step for c in self.coords])
                    self._new_sweep(cursor=self._first_direction(m, self.base_m))
                self.base_m = m
                if self.reference is None:
                    self.reference = m  # the link as it starts is taken as aligned
                elif not self.searching and self._triggered(m):
                    self._start(round_id, m, "its cost rose above its reference", events)
        elif self.searching and self.base_m is not None:
            self._judge(round_id, point, tried, sweep, m, events)
        if self.forced and not self.searching and self.base_m is not None:
            self._start(round_id, self.base_m, "a calibrate action", events)
        return events

    def _new_sweep(self, cursor: int) -> None:
        self.missed, self.cursor, self.sweep = set(), cursor, self.sweep + 1

    def _judge(self, round_id: int, point: np.ndarray, tried: int, sweep: int, m: Measurement,
               events: list[CalibrationEvent]) -> None:
        assert self.base_m is not None
        self.search_rounds += 1
        gain, sigma = rise(self.base_m, m)
        if gain > self.settings.accept_sigmas * sigma:
            k = tried // 2
            self.base, self.base_m = point, m
            self._new_sweep(cursor=tried)  # go on the same way
            c = self.coords[k]
            events.append(CalibrationEvent(
                round_id, c.loop, "moved", f"{c.user} {_AXES[c.index]} to {point[k]:+.4g} "
                f"{_UNIT[c.index]} (cost {-gain:+.4g})", self._cost(m)))
            assert self.reference is not None
            up, sigma = rise(m, self.reference)
            if up <= self.settings.accept_sigmas * sigma:  # back to the aligned link's cost
                self._end(round_id, "converged", events)
                return
        else:
            if sweep == self.sweep:  # a trial of an earlier sweep says nothing of this one
                self.missed.add(tried)
            if len(self.missed) == 2 * len(self.coords):  # every direction, in vain
                self.steps = self.steps / 2
                self._new_sweep(cursor=self.cursor)
                self.remeasure = True
                if all(s < c.min_step for s, c in zip(self.steps, self.coords, strict=True)):
                    # as fine as the loops go: aligned again, or a fault they cannot undo
                    assert self.reference is not None
                    self._end(round_id, "failed" if self._rose(self.base_m, self.reference)
                              else "converged", events)
                    return
        if self.search_rounds >= self.settings.max_search_rounds:
            self._end(round_id, "failed", events)

    def _triggered(self, m: Measurement) -> bool:
        assert self.reference is not None
        up, sigma = rise(m, self.reference)
        if up < -self.settings.accept_sigmas * sigma:
            self.reference = m  # better than ever: the new reference
        return self._rose(m, self.reference)

    def _rose(self, m: Measurement, than: Measurement) -> bool:
        up, sigma = rise(m, than)
        return up > max(self.settings.trigger_sigmas * sigma, self.settings.trigger_min_rise)

    def _start(self, round_id: int, m: Measurement, why: str,
               events: list[CalibrationEvent]) -> None:
        self.searching, self.forced, self.base_m = True, False, m
        self.search_rounds = 0
        self._new_sweep(cursor=self._first_direction(m, self.reference))
        self.steps = np.array([c.step for c in self.coords])
        events.append(CalibrationEvent(round_id, "search", "started", why, self._cost(m)))

    def _first_direction(self, m: Measurement, ref: Measurement | None) -> int:
        """Where a sweep starts: at Bob's delay when QBER_Z was measured and has not risen
        since ``ref`` (a timing offset raises QBER_X only), else at the first coordinate."""
        clock = [k for k, c in enumerate(self.coords) if c.loop == "clock"]
        if not clock or ref is None or m.qber_z is None or ref.qber_z is None:
            return 0
        z_up = m.qber_z - ref.qber_z
        sd = math.sqrt(m.qber_z * (1 - m.qber_z) / m.n_z + ref.qber_z * (1 - ref.qber_z) / ref.n_z)
        return 2 * clock[0] if z_up <= self.settings.accept_sigmas * sd else 0

    def _end(self, round_id: int, how: str, events: list[CalibrationEvent]) -> None:
        assert self.base_m is not None
        self.searching = False
        self.reference = self.base_m
        setting = ", ".join(f"{c.user} {_AXES[c.index]} {x:+.4g} {_UNIT[c.index]}"
                            for c, x in zip(self.coords, self.base, strict=True) if x)
        events.append(CalibrationEvent(round_id, "search", how,
                                       f"after {self.search_rounds} trial rounds; setting: "
                                       f"{setting or 'identity'}", self._cost(self.base_m)))

    @staticmethod
    def _cost(m: Measurement) -> float:
        return m.cost(m.qber_z is not None)[0]


#: The rotation vector's components are along (σx, σy, σz) of the Jones basis (H, V): σz turns
#: about the H/V axis of the Poincaré sphere, σx about the D/A axis, σy about the circular one.
_AXES = ("rotation x (D/A axis)", "rotation y (circular axis)", "rotation z (H/V axis)", "delay")
_UNIT = ("rad", "rad", "rad", "ps")
