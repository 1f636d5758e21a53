"""Game-day scenario sections (issue 12, items 1 and 2): the format, its validation (one line
``FILE:LINE: field.path: message`` with a did-you-mean), `mdiqkd scenario validate/schema`, and
`mdiqkd run` refusing what it cannot do yet. No fault is injected here: the engine is not built."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import (
    MAX_ROUNDS,
    Scenario,
    ScenarioError,
    load_scenario,
    shipped_scenarios,
)
from orchestration.experiment import (
    ACTION_TYPES,
    FAULT_TYPES,
    MAX_DURATION_S,
    MAX_RUNTIME_ROUNDS,
    METRICS,
    TARGETS,
    parse_duration,
)

runner = CliRunner()
EXAMPLE = shipped_scenarios()["gameday_drift"]
EXAMPLE_TEXT = EXAMPLE.read_text()


# --- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5),
    (" 90s ", 90.0), ("3", 3.0), (3, 3.0), (0.25, 0.25), ("2e1s", 20.0), (".5m", 30.0),
])
def test_durations_carry_units_and_a_plain_number_is_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "needle"), [
    ("10sec", "unknown unit 'sec'"), ("10 hours", "unknown unit 'hours'"),
    ("10ns", "unknown unit 'ns'"), ("ms", "not a duration"), ("", "not a duration"),
    ("1,5s", "not a duration"), ("0s", "must be > 0"), (0, "must be > 0"),
    ("-3s", "must be > 0"), (-1.0, "must be > 0"), (math.nan, "not a finite"),
    (math.inf, "not a finite"), ("nan", "not a duration"), (True, "got true"),
    ([1], "got list"), (None, "got NoneType"), (f"{MAX_DURATION_S * 2:g}", "above the bound"),
])
def test_bad_durations_are_refused_with_a_reason(value, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_duration(value)


def test_a_start_time_may_be_zero_but_never_negative():
    assert parse_duration("0s", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="≥ 0"):
        parse_duration("-1ms", allow_zero=True)


def test_bounds_agree_with_the_scenario_bounds():
    assert MAX_RUNTIME_ROUNDS == MAX_ROUNDS


# --- the example and the registry --------------------------------------------------------------


def test_the_shipped_game_day_validates_with_every_section():
    sc = load_scenario(EXAMPLE)
    assert sc.tags == ["gameday", "polarization", "loss"]
    assert sc.runtime is not None and sc.runtime.duration == 60.0 and sc.runtime.pacing == "fast"
    assert [p.name for p in sc.steady_state.probes] == ["qber-z-low", "no-mismatch"]
    assert sc.steady_state.probes[0].tolerance.max == 0.03
    assert sc.steady_state.probes[0].window == 10.0
    assert sc.steady_state.probes[1].tolerance.min == sc.steady_state.probes[1].tolerance.max == 0
    assert [(e.at, e.duration) for e in sc.method] == [(20.0, 15.0), (40.0, None)]
    assert sc.method[0].fault.params == {"rate_rad_per_sqrt_s": 0.05}
    assert sc.rollbacks[0].action.type == "clear_faults" and sc.rollbacks[0].action.target is None


def test_a_game_day_dumps_and_reloads_as_the_same_scenario():
    """The run directory's config.json is read back by every node."""
    sc = load_scenario(EXAMPLE)
    assert Scenario.model_validate(json.loads(sc.model_dump_json())) == sc


def test_today_s_scenarios_dump_as_before():
    for resource in shipped_scenarios().values():
        sc = load_scenario(resource)
        if not {"tags", "runtime", "steady_state", "method", "rollbacks"} & set(
                yaml.safe_load(resource.read_text())):
            dumped = sc.model_dump()
            assert not {"tags", "runtime", "steady_state", "method", "rollbacks"} & set(dumped)


def test_the_game_day_is_the_quickstart_link_plus_its_sections():
    quick = yaml.safe_load(shipped_scenarios()["quickstart"].read_text())
    day = yaml.safe_load(EXAMPLE_TEXT)
    for key in ("clock_rate_hz", "rounds", "round_frames", "alice", "bob", "relay",
                "postprocessing", "authentication"):
        assert day[key] == quick[key], key


def test_the_registry_covers_every_type_the_issue_names():
    assert set(FAULT_TYPES) == {
        "loss", "fiber_cut", "polarization_drift", "polarization_rotation", "clock_offset",
        "clock_skew", "jitter", "dark_count_surge", "detector_efficiency", "detector_dead",
        "relay_firmware_bug", "malicious_relay", "intensity_miscalibration",
        "intensity_fluctuation", "intercept_resend", "latency", "bandwidth_limit", "outage",
        "tamper", "replay", "reorder", "kill", "pause", "full"}
    assert FAULT_TYPES["malicious_relay"].params["mode"].choices == (
        "fake_announcements", "biased_postselection", "intercept_resend")
    assert "clear_faults" in ACTION_TYPES
    assert {"qber_z", "qber_x", "secure_key_rate_bps", "bsm_rate_hz", "coincidence_rate_hz",
            "visibility", "dark_count_rate_hz", "aborted_rounds", "abort_reason",
            "key_mismatches", "keys_from_attacked_rounds", "auth_failures",
            "calibration_actions", "time_to_recover_s"} == set(METRICS)
    for name, kind in FAULT_TYPES.items():
        assert kind.targets and set(kind.targets) <= set(TARGETS), name
        for param, spec in kind.params.items():
            if spec.kind == "number":  # units in the names (a fraction, a factor or a mean
                # photon number, in photons per pulse, has none)
                assert re.search(r"_(db|s|rad_per_sqrt_s|rad_per_s|rad|ps|ppm|ms|bps)$|"
                                 r"fraction|factor|probability|_rel$|mean_photon_number$",
                                 param), (name, param)


def test_the_format_page_documents_every_type_parameter_target_and_metric():
    page = (Path(__file__).resolve().parents[2] / "docs" / "scenario-format.md").read_text()
    for name, kind in {**FAULT_TYPES, **ACTION_TYPES}.items():
        row = next((line for line in page.splitlines() if line.startswith(f"| `{name}` |")), "")
        assert row, name
        for param in kind.params:
            assert f"`{param}`" in row, (name, param)
    for name in (*METRICS, *TARGETS):
        assert f"`{name}`" in page, name


def test_a_section_of_the_wrong_shape_never_names_a_model_class(tmp_path):
    text = shipped_scenarios()["quickstart"].read_text().replace("alice:\n", "alice: 5\nx:\n", 1)
    with pytest.raises(ScenarioError) as info:
        load_scenario(_write(tmp_path, text))
    assert ": alice: must be a mapping of fields" in str(info.value)
    assert "UserModel" not in str(info.value)


def _minimal_params(kind) -> dict:
    out = {}
    for name, spec in kind.params.items():
        if spec.required or name in kind.any_of[:1]:
            if spec.kind == "number":
                out[name] = spec.high if spec.high is not None and spec.high <= 1 else 1
            elif spec.kind == "choice":
                out[name] = spec.choices[0]
            elif spec.kind == "text":
                out[name] = "mu"
    return out


@pytest.mark.parametrize("fault_type", sorted(FAULT_TYPES))
def test_every_fault_type_loads_on_each_of_its_targets(tmp_path, fault_type):
    kind = FAULT_TYPES[fault_type]
    data = yaml.safe_load(EXAMPLE_TEXT)
    data["method"] = [{"at": f"{k}s", "name": f"e{k}", "duration": "1s",
                       "fault": {"type": fault_type, "target": t,
                                 "params": _minimal_params(kind)}}
                      for k, t in enumerate(kind.targets)]
    sc = load_scenario(_write(tmp_path, data))
    assert [e.fault.target for e in sc.method] == list(kind.targets)


# --- refusals through load_scenario --------------------------------------------------------------


def _write(tmp_path: Path, data, name: str = "drift.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def _refusal(tmp_path: Path, old: str, new: str) -> str:
    assert old in EXAMPLE_TEXT, old
    text = EXAMPLE_TEXT.replace(old, new, 1)
    with pytest.raises(ScenarioError) as info:
        load_scenario(_write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message and "union" not in message.lower()
    assert "function-" not in message and "tagged" not in message
    return message


def _line(text: str, needle: str) -> int:
    """The line of the last occurrence of ``needle``."""
    return max(k for k, line in enumerate(text.splitlines(), 1) if needle in line)


LOSS = "fault: {type: loss, target: link/alice-charles, params: {extra_db: 3}}"

#: (old text, new text, field path, message part, the line's text).
REFUSALS = [
    # did-you-mean on names
    ("type: polarization_drift", "type: polarisation_drfit", "method.0.fault.type",
     "unknown fault 'polarisation_drfit' (did you mean 'polarization_drift'?)", "drfit"),
    ("type: clear_faults", "type: clear_fault", "rollbacks.0.action.type",
     "unknown action 'clear_fault' (did you mean 'clear_faults'?)", "clear_fault"),
    ("target: link/alice-charles", "target: link/alice-charls", "method.1.fault.target",
     "unknown target 'link/alice-charls' (did you mean 'link/alice-charles'?)", "charls"),
    ("metric: qber_z", "metric: qber_zz", "steady_state.probes.0.metric",
     "unknown metric 'qber_zz' (did you mean 'qber_z'?)", "qber_zz"),
    ("extra_db: 3", "extra_dB: 3", "method.1.fault.params.extra_dB",
     "unknown parameter 'extra_dB' for fault loss (did you mean 'extra_db'?)", "extra_dB"),
    ("steady_state:", "steady_stat:", "steady_stat",
     "unknown field 'steady_stat' (did you mean 'steady_state'?)", "steady_stat:"),
    ("  probes:", "  probez:", "steady_state.probez",
     "unknown field 'probez' (did you mean 'probes'?)", "probez"),
    ("runtime: {duration: 60s", "runtime: {duraton: 60s", "runtime.duraton",
     "unknown field 'duraton' (did you mean 'duration'?)", "duraton"),
    ("    name: drift\n", "    nmae: drift\n", "method.0.nmae",
     "unknown field 'nmae' (did you mean 'name'?)", "nmae"),
    ("pacing: fast", "pacing: realtme", "runtime.pacing", "(did you mean 'realtime'?)",
     "realtme"),
    ("tolerance: [0, 0.03], window: 10s", "tolerance: [0, 0.03], window: 10s, phases: [durin]",
     "steady_state.probes.0.phases.0", "unknown phase 'durin' (did you mean 'during'?)",
     "durin"),
    # units, zero, negative, NaN
    ("at: 40s", "at: 40sec", "method.1.at", "unknown unit 'sec'", "40sec"),
    ("duration: 15s", "duration: 0s", "method.0.duration", "0s must be > 0", "duration: 0s"),
    ("duration: 15s", "duration: -15s", "method.0.duration", "must be > 0", "-15s"),
    ("window: 10s", "window: .nan", "steady_state.probes.0.window", "not a finite duration",
     ".nan"),
    ("at: 40s", "at: -1s", "method.1.at", "must be ≥ 0", "-1s"),
    # parameters
    ("extra_db: 3", "extra_db: -3", "method.1.fault.params.extra_db", "outside (0, 100]",
     "extra_db: -3"),
    ("extra_db: 3", "extra_db: .inf", "method.1.fault.params.extra_db", "finite", ".inf"),
    ("extra_db: 3", "extra_db: true", "method.1.fault.params.extra_db", "got true",
     "extra_db: true"),
    ("params: {extra_db: 3}", "params: {}", "method.1.fault.params", "needs extra_db",
     "params: {}"),
    ("params: {rate_rad_per_sqrt_s: 0.05}", "params: {rate_rad_per_sqrt_s: 0}",
     "method.0.fault.params", "needs a non-zero rate_rad_per_sqrt_s or ramp_rad_per_s",
     "rate_rad_per_sqrt_s: 0}"),
    (LOSS, "fault: {type: fiber_cut, target: link/alice-charles, params: {extra_db: 3}}",
     "method.1.fault.params.extra_db", "fault fiber_cut takes no parameters", "fiber_cut"),
    (LOSS, "fault: {type: malicious_relay, target: relay, params: {mode: evil}}",
     "method.1.fault.params.mode", "unknown value 'evil'", "evil"),
    (LOSS, "fault: {type: malicious_relay, target: relay, params: {mode: fake_announcements, "
     "announce: [psi_plus]}}", "method.1.fault.params.announce", "only mode "
     "biased_postselection", "announce"),
    (LOSS, "fault: {type: detector_dead, target: relay, params: {detector: cX}}",
     "method.1.fault.params.detector", "unknown value 'cX'", "cX"),
    (LOSS, "fault: {type: intensity_miscalibration, target: source/bob, params: {intensity: muu,"
     " mean_photon_number_factor: 1.1}}", "method.1.fault.params.intensity",
     "unknown intensity class 'muu' of source/bob (did you mean 'mu'?)", "muu"),
    (LOSS, "fault: {type: intensity_miscalibration, target: source/bob, params: {intensity: "
     "omega, mean_photon_number_factor: 3}}", "method.1.fault.params.intensity",
     "class 'omega' of source/bob has mean photon number 0: a factor on it changes nothing",
     "omega"),
    # targets
    ("target: link/alice-charles", "target: relay", "method.1.fault.target",
     "fault loss does not apply to 'relay'", "target: relay"),
    (LOSS, "fault: {type: kill, params: {}}", "method.1.fault.target", "Field required",
     "type: kill"),
    # shape
    (LOSS, "action: {type: clear_faults}\n    " + LOSS, "method.1",
     "give exactly one of fault or action", "at: 40s"),
    (LOSS, "fault: 5", "method.1.fault", "must be a mapping of fields", "fault: 5"),
    ("tags: [gameday, polarization, loss]", "tags: gameday", "tags", "must be a list",
     "tags: gameday"),
    ("tags: [gameday, polarization, loss]", "tags: [gameday, loss, gameday]", "tags.2",
     "listed twice", "tags: [gameday"),
    ("    name: lossy splice\n", "    name: drift\n", "method.1.name",
     "repeats an earlier entry's name", "name: drift"),
    ("{name: no-mismatch, metric: key_mismatches, tolerance: 0}",
     "{name: no-mismatch, metric: key_mismatches, tolerance: [0]}",
     "steady_state.probes.1.tolerance", "a range is [lo, hi]", "tolerance: [0]"),
    ("tolerance: [0, 0.03]", "tolerance: [0.03, 0]", "steady_state.probes.0.tolerance",
     "above max", "[0.03, 0]"),
    ("tolerance: [0, 0.03]", "tolerance: {mn: 0}", "steady_state.probes.0.tolerance.mn",
     "unknown field 'mn' (did you mean 'min'?)", "{mn: 0}"),
    ("tolerance: [0, 0.03]", "tolerance: [2, 3]", "steady_state.probes.0.tolerance",
     "can never hold", "[2, 3]"),
    ("tolerance: 0}", "tolerance: true}", "steady_state.probes.1.tolerance", "got true",
     "tolerance: true"),
    ("runtime: {duration: 60s, pacing: fast}", "runtime: {duration: 60s, rounds: 3}",
     "runtime.rounds", "give duration or rounds, not both", "runtime:"),
    # across entries
    ("at: 40s", "at: 60s", "method.1.at", "at or after the end of the run: runtime.duration "
     "(60 s)", "at: 60s"),
    ("runtime: {duration: 60s, pacing: fast}", "runtime: {rounds: 5}", "method.0.at",
     "runtime.rounds × emulated seconds per round (5 × 3.146 s", "at: 20s"),
    ("runtime: {duration: 60s, pacing: fast}", "runtime: {pacing: fast}", "method.0.at",
     "rounds × emulated seconds per round (3 × 3.146 s", "at: 20s"),
    ("window: 10s", "window: 2m", "steady_state.probes.0.window", "longer than the run",
     "window: 2m"),
    ("action: {type: clear_faults}", "action: {type: clear_faults, params: {fault: drfit}}",
     "rollbacks.0.action.params.fault", "unknown fault entry 'drfit' (did you mean 'drift'?)",
     "drfit"),
    ("  - at: 40s\n    name: lossy splice\n    " + LOSS,
     "  - at: 30s\n    name: more drift\n    fault: {type: polarization_drift, "
     "target: link/bob-charles, params: {ramp_rad_per_s: 0.1}}",
     "method.1", "fault polarization_drift on link/bob-charles overlaps entry 0 ('drift', "
     "from 20 s until 35 s)", "- at: 30s"),
    ("  - at: 40s\n    name: lossy splice\n    " + LOSS,
     "  - at: 40s\n    name: lossy splice\n    " + LOSS + "\n  - at: 50s\n    name: worse\n"
     "    fault: {type: loss, target: link/alice-charles, params: {extra_db: 1}}",
     "method.2", "overlaps entry 1 ('lossy splice', from 40 s until the end of the run)",
     "- at: 50s"),
    # a window that holds no frame start: the emulator would apply nothing (frames of 2**20
    # slots at 1 GHz, 1.048576 ms; the first frame from 20 s starts at 20.000538624 s)
    ("duration: 15s", "duration: 0.5ms", "method.0.duration", "holds no settings frame's "
     "start: faults act on whole frames of 1.049 ms (2**20 slots at 1e+09 Hz)",
     "duration: 0.5ms"),
    ("  - at: 40s\n    name: lossy splice\n    " + LOSS,
     "  - at: 20.0003s\n    name: early stop\n    action: {type: clear_faults, "
     "params: {fault: drift}}", "method.0", "(ended at 20.0003 s by entry 1 'early stop') "
     "holds no settings frame's start", "- at: 20s"),
    # a clear later in the file but earlier in time does not end a fault that starts after it
    ("  - at: 40s\n    name: lossy splice\n    " + LOSS,
     "  - at: 40s\n    name: lossy splice\n    " + LOSS + "\n  - at: 10s\n    name: early\n"
     "    action: {type: clear_faults}\n  - at: 50s\n    name: worse\n"
     "    fault: {type: loss, target: link/alice-charles, params: {extra_db: 1}}",
     "method.3", "overlaps entry 1 ('lossy splice', from 40 s until the end of the run)",
     "- at: 50s"),
]


def test_a_clear_earlier_in_the_file_but_later_in_time_ends_a_fault(tmp_path):
    text = EXAMPLE_TEXT.replace(
        "  - at: 40s\n    name: lossy splice\n    " + LOSS,
        "  - at: 45s\n    name: mend\n    action: {type: clear_faults, target: "
        "link/alice-charles}\n  - at: 40s\n    name: lossy splice\n    " + LOSS
        + "\n  - at: 50s\n    name: worse\n"
        "    fault: {type: loss, target: link/alice-charles, params: {extra_db: 1}}", 1)
    assert "name: worse" in text
    scenario = load_scenario(_write(tmp_path, text))  # the splice ends at 45 s: no overlap
    assert [e.name for e in scenario.method] == ["drift", "mend", "lossy splice", "worse"]


@pytest.mark.parametrize(("old", "new", "field", "needle", "line_text"), REFUSALS,
                         ids=[f"{r[2]}:{r[3][:30]}" for r in REFUSALS])
def test_a_bad_game_day_is_one_line_with_file_line_field_and_reason(tmp_path, old, new, field,
                                                                    needle, line_text):
    message = _refusal(tmp_path, old, new)
    text = EXAMPLE_TEXT.replace(old, new, 1)
    assert message.startswith(f"drift.yaml:{_line(text, line_text)}: {field}: "), message
    assert needle in message, message


def test_the_issue_s_example_message_word_for_word(tmp_path):
    text = EXAMPLE_TEXT.replace("type: polarization_drift", "type: polarisation_drfit", 1)
    with pytest.raises(ScenarioError) as info:
        load_scenario(_write(tmp_path, text))
    line = _line(text, "drfit")
    assert str(info.value) == (f"drift.yaml:{line}: method.0.fault.type: unknown fault "
                               "'polarisation_drfit' (did you mean 'polarization_drift'?)")


@pytest.mark.parametrize(("old", "new"), [
    # a fault ended by a duration, a clear_faults by target or name, or back to back
    ("duration: 15s", "duration: 10s"),
    ("  - at: 40s\n    name: lossy splice\n    " + LOSS,
     "  - at: 30s\n    name: stop\n    action: {type: clear_faults, target: link/bob-charles}\n"
     "  - at: 30s\n    name: more drift\n    fault: {type: polarization_drift, "
     "target: link/bob-charles, params: {ramp_rad_per_s: 0.1}}"),
    ("  - at: 40s\n    name: lossy splice\n    " + LOSS,
     "  - at: 25s\n    name: stop\n    action: {type: clear_faults, params: {fault: drift}}\n"
     "  - at: 25s\n    name: more drift\n    fault: {type: polarization_drift, "
     "target: link/bob-charles, params: {ramp_rad_per_s: 0.1}}"),
    ("  - at: 40s\n    name: lossy splice\n    " + LOSS,
     "  - at: 35s\n    name: more drift\n    fault: {type: polarization_drift, "
     "target: link/bob-charles, params: {ramp_rad_per_s: 0.1}}"),
    # a node killed, restarted, killed again; a probe for one abort reason in two phases
    (LOSS, "fault: {type: kill, target: node/bob}\n  - {at: 45s, name: up, action: {type: "
     "restart, target: node/bob}}\n  - {at: 50s, name: again, fault: {type: kill, target: "
     "node/bob}}"),
    ("tolerance: 0}", "tolerance: 0}\n    - {name: few-aborts, metric: abort_reason, "
     "reason: qber_too_high, tolerance: {max: 1}, phases: [before, after]}"),
    ("at: 20s", "at: 0s"),
    # shorter than a frame, but holding a frame's start (20.000538624 s): it acts on that frame
    ("at: 20s\n    name: drift\n    duration: 15s",
     "at: 20.0003s\n    name: drift\n    duration: 0.5ms"),
])
def test_well_formed_game_days_load(tmp_path, old, new):
    assert old in EXAMPLE_TEXT
    load_scenario(_write(tmp_path, EXAMPLE_TEXT.replace(old, new, 1)))


def test_a_missing_field_points_at_the_entry_that_lacks_it(tmp_path):
    text = EXAMPLE_TEXT.replace("    name: drift\n", "", 1)
    with pytest.raises(ScenarioError, match=r"^drift\.yaml:(\d+): method\.0\.name: Field "
                       r"required$") as info:
        load_scenario(_write(tmp_path, text))
    assert info.match(rf"^drift\.yaml:{_line(text, 'at: 20s')}:")


def test_deeply_nested_yaml_is_refused_not_a_crash(tmp_path):
    with pytest.raises(ScenarioError, match="nested too deeply|not valid YAML"):
        load_scenario(_write(tmp_path, "method: " + "[" * 2000 + "]" * 2000 + "\n"))


# --- the command line -------------------------------------------------------------------


def test_validate_reports_every_file_one_line_each_and_exits_1_when_any_is_bad(tmp_path):
    bad = _write(tmp_path, EXAMPLE_TEXT.replace("polarization_drift", "polarisation_drfit", 1))
    also_bad = _write(tmp_path, EXAMPLE_TEXT.replace("at: 40s", "at: 1h", 1), "late.yaml")
    good = str(Path("scenarios/gameday_drift.yaml").resolve())
    result = runner.invoke(app, ["scenario", "validate", good, str(bad), "quickstart",
                                 str(also_bad), str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit)
    lines = result.stdout.splitlines()
    assert len(lines) == 5, lines
    assert lines[0] == f"{good}: ok" and lines[2] == "quickstart: ok"
    assert lines[1].startswith(f"{bad}:") and "did you mean 'polarization_drift'" in lines[1]
    assert lines[3].startswith(f"{also_bad}:") and "method.1.at" in lines[3]
    assert "missing.yaml: no such file" in lines[4]


@pytest.mark.parametrize(("old", "new", "field", "needle", "line_text"), REFUSALS,
                         ids=[f"{r[2]}:{r[3][:30]}" for r in REFUSALS])
def test_validate_and_run_refuse_each_bad_game_day_in_one_line(tmp_path, old, new, field,
                                                              needle, line_text):
    text = EXAMPLE_TEXT.replace(old, new, 1)
    path = _write(tmp_path, text)
    where = f"{path}:{_line(text, line_text)}: {field}: "
    result = runner.invoke(app, ["scenario", "validate", str(path)])
    assert result.exit_code == 1 and result.exception is None or \
        isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(where) and needle in line, line
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert f"drift.yaml:{_line(text, line_text)}: {field}: " in line and needle in line, line
    assert not (tmp_path / "run").exists()


def test_validate_of_good_files_exits_0_and_json_lists_them():
    result = runner.invoke(app, ["scenario", "validate", "gameday_drift", "four_intensity"])
    assert result.exit_code == 0 and result.stdout.splitlines() == [
        "gameday_drift: ok", "four_intensity: ok"]
    result = runner.invoke(app, ["scenario", "validate", "--json", "gameday_drift", "nosuch"])
    assert result.exit_code == 1
    files = json.loads(result.stdout)["files"]
    assert [f["ok"] for f in files] == [True, False] and "nosuch" in files[1]["error"]


def test_validate_of_broken_yaml_is_still_one_line(tmp_path):
    broken = _write(tmp_path, "title: x\nmethod:\n  - at: 1s\n   name: y\n", "broken.yaml")
    result = runner.invoke(app, ["scenario", "validate", str(broken)])
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 1
    assert "not valid YAML" in result.stdout


def test_schema_is_json_with_the_new_sections():
    result = runner.invoke(app, ["scenario", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    props = schema["properties"]
    assert {"tags", "runtime", "steady_state", "method", "rollbacks", "alice", "rounds"} <= set(
        props)
    defs = schema["$defs"]
    assert set(defs["FaultModel"]["properties"]["type"]["enum"]) == set(FAULT_TYPES)
    assert set(defs["ProbeModel"]["properties"]["metric"]["enum"]) == set(METRICS)
    at = json.dumps(defs["MethodEntry"]["properties"]["at"])
    assert "500ms" in at and "number" in at
    assert "anyOf" in json.dumps(defs["ProbeModel"]["properties"]["tolerance"])


def test_the_schema_is_valid_and_checks_each_fault_type_s_targets_and_parameters():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(runner.invoke(app, ["scenario", "schema"]).stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    # as an editor reads it (YAML 1.2: 1.0e9 is a number; PyYAML's YAML 1.1 reads it as text)
    data = yaml.safe_load(EXAMPLE_TEXT.replace("1.0e9", "1.0e+9"))
    assert not list(validator.iter_errors(data))
    for edit in ({"params": {"extra_dB": 3}}, {"target": "relay"}, {"type": "polarisation"},
                 {"params": {"extra_db": 300}}):
        bad = json.loads(json.dumps(data))
        bad["method"][1]["fault"].update(edit)
        assert list(validator.iter_errors(bad)), edit


def test_numbers_written_yaml_1_1_style_are_numbers(tmp_path):
    """PyYAML reads ``1e-3`` (no dot, no sign) as text; as in today's fields, it is a number."""
    text = EXAMPLE_TEXT.replace("{extra_db: 3}", "{extra_db: 3e0}").replace(
        "tolerance: 0}", "tolerance: 1e-3}")
    sc = load_scenario(_write(tmp_path, text))
    assert sc.method[1].fault.params == {"extra_db": 3.0}
    assert sc.steady_state.probes[1].tolerance.max == 1e-3


def test_list_shows_tags():
    result = runner.invoke(app, ["scenario", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(result.stdout)["scenarios"]}
    assert rows["gameday_drift"]["tags"] == ["gameday", "polarization", "loss"]
    assert rows["quickstart"]["tags"] == []


def _no_run(monkeypatch):
    import orchestration.run as run_module

    def never(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(run_module, "execute", never)
    monkeypatch.setattr(run_module, "prepare_run_dir", never)


def _restart(data):
    data["method"].append({"at": "50s", "name": "restart bob",
                           "action": {"type": "restart", "target": "node/bob"}})


@pytest.mark.parametrize(("edit", "implemented", "needle"), [
    (None, frozenset(), "method.0.fault.type: fault polarization_drift ('drift') is not "
     "injected by the emulator yet; method.1.fault.type: fault loss ('lossy splice')"),
    (None, frozenset({"polarization_drift"}), "method.1.fault.type: fault loss ("),
    (_restart, frozenset({"polarization_drift", "loss"}), "method.2.action.type: action "
     "restart ('restart bob') is not carried out by the emulator yet"),
])
def test_run_refuses_what_it_cannot_honour_before_anything_starts(tmp_path, monkeypatch, edit,
                                                                  implemented, needle):
    import orchestration.experiment as experiment

    _no_run(monkeypatch)
    monkeypatch.setattr(experiment, "IMPLEMENTED_FAULTS", implemented, raising=False)
    data = yaml.safe_load(EXAMPLE_TEXT)
    if edit is not None:
        edit(data)
    path = _write(tmp_path, data)
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert "cannot run as written" in lines[0] and "mdiqkd scenario validate" in lines[0]
    assert not out.exists()


def test_the_example_is_honoured_once_its_faults_are_implemented():
    sc = load_scenario(EXAMPLE)
    assert sc.refused_game_day_parts(frozenset({"polarization_drift", "loss"}),
                                frozenset({"clear_faults"})) == []
    realtime = sc.model_copy(update={"runtime": sc.runtime.model_copy(
        update={"pacing": "realtime"})})
    assert realtime.refused_game_day_parts(frozenset({"polarization_drift", "loss"}),
                                           frozenset({"clear_faults"})) == []  # pacing runs
    assert sc.refused_game_day_parts(frozenset({"polarization_drift", "loss"}), frozenset()) == [
        "rollbacks.0.action.type: action clear_faults ('clear') is not carried out by the "
        "emulator yet"]


# --- fuzzing the loader -------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["10s", "0s", "-1s", "500ms", "2m", "1h", "1x", ".nan", "link/bob-charles",
                     "relay", "clear_faults", "loss", "qber_z", "polarization_drift", "node/bob",
                     "fake_announcements", "before"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for k, v in enumerate(node):
            yield from _paths(v, (*prefix, k))


def _mutate(data, draw):
    paths = list(_paths(data))[1:]
    for _ in range(draw(st.integers(1, 3))):
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            key = path[-1]
            action = draw(st.sampled_from(["replace", "delete", "insert", "rename"]))
            if action == "replace":
                parent[key] = draw(_VALUES)
            elif action == "delete":
                del parent[key]
            elif action == "insert" and isinstance(parent, dict):
                parent[draw(st.text(max_size=10))] = draw(_VALUES)
            elif action == "insert":
                parent.insert(key, draw(_VALUES))
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(["tpye", "nmae", "at ", "param", str(key) + "s"]))] \
                    = parent.pop(key)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return data


@st.composite
def _mutated_texts(draw):
    kind = draw(st.sampled_from(["tree", "tree", "tree", "text"]))
    if kind == "tree":
        data = _mutate(yaml.safe_load(EXAMPLE_TEXT), draw)
        try:
            return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        except yaml.YAMLError:
            return EXAMPLE_TEXT
    lines = EXAMPLE_TEXT.splitlines()
    k = draw(st.integers(0, len(lines) - 1))
    lines[k] = draw(st.sampled_from([
        lines[k][: len(lines[k]) // 2], lines[k] + draw(st.text(max_size=10)),
        draw(st.text(max_size=30)), " " + lines[k], lines[k].replace(":", "", 1)]))
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_mutated_texts())
def test_fuzzed_scenarios_load_or_give_one_scenario_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "f.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_scenario(path)
    except ScenarioError as e:
        assert str(e).strip()


def test_a_fluctuation_fault_on_top_of_the_configured_one_must_stay_within_the_source_bound(
        tmp_path):
    """The fault's fluctuation combines in quadrature with the configured one (independent
    Gaussians), and the sum must stay ≤ 0.2 (μ(1 + r z) clipped at 5σ stays ≥ 0)."""
    data = yaml.safe_load(EXAMPLE_TEXT)
    data["postprocessing"]["mode"] = "asymptotic"
    data["alice"]["source"]["intensity_fluctuation_rel"] = 0.15
    data["method"][1] = {"at": "40s", "name": "shaky", "fault": {
        "type": "intensity_fluctuation", "target": "source/alice",
        "params": {"fluctuation_rel": 0.15}}}
    with pytest.raises(ScenarioError, match=re.escape(
            "method.1.fault.params.fluctuation_rel: 0.15 combined in quadrature with "
            "source/alice's configured intensity_fluctuation_rel 0.15 is 0.2121 > 0.2")):
        load_scenario(_write(tmp_path, data))
    data["method"][1]["fault"]["params"]["fluctuation_rel"] = 0.13
    load_scenario(_write(tmp_path, data))  # √(0.15² + 0.13²) ≈ 0.198


def test_the_relays_and_a_fibers_intercept_resend_may_not_overlap():
    from orchestration.config import DEFAULT_SCENARIO, ScenarioError

    eve = {"at": "1s", "name": "eve", "fault": {"type": "intercept_resend",
                                               "target": "link/alice-charles",
                                               "params": {"fraction": 0.5}}}
    charles = {"at": "2s", "name": "charles", "duration": "1s", "fault": {
        "type": "malicious_relay", "target": "relay", "params": {"mode": "intercept_resend"}}}
    with pytest.raises(ScenarioError, match="overlap; the emulator does not run both"):
        load_scenario(DEFAULT_SCENARIO, {"method": [eve, charles]})
    load_scenario(DEFAULT_SCENARIO, {"method": [{**eve, "duration": "0.5s"}, charles]})


@pytest.mark.parametrize("smallest, first, value", [
    ("polarization_min_step_rad", "polarization_step_rad", 0.3),
    ("delay_min_step_ps", "delay_step_ps", 50.0),
])
def test_a_calibration_step_below_its_smallest_is_refused_in_the_file_and_the_node(
        tmp_path, smallest, first, value):
    from nodes.calibration import LoopSettings

    data = yaml.safe_load(EXAMPLE_TEXT)
    data["calibration"] = {smallest: value}
    with pytest.raises(ScenarioError, match=rf"calibration\.{smallest}: must not exceed {first}"):
        load_scenario(_write(tmp_path, data))
    with pytest.raises(ValueError, match=f"calibration {smallest} must not exceed {first}"):
        LoopSettings(**{smallest: value})
    data["calibration"] = {smallest: value, first: value}  # equal is a search of one step size
    load_scenario(_write(tmp_path, data))
