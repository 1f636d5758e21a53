"""The `mdiqkd` commands: outputs, JSON schemas, and clear errors for nonsense input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orchestration.cli import app

runner = CliRunner()


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_keyrate_json_schema_and_reach():
    data = _json(["keyrate", "--distance-km", "0:100:50", "--max-distance"])
    assert [p["distance_km"] for p in data["points"]] == [0, 50, 100]
    keys = {"distance_km", "mu", "nu", "omega", "key_rate_per_pulse", "Q_Z", "E_Z", "Q_X", "E_X",
            "Y11_L", "e11_U"}
    assert all(set(p) == keys for p in data["points"])
    rates = [p["key_rate_per_pulse"] for p in data["points"]]
    assert rates == sorted(rates, reverse=True) and rates[-1] > 0
    assert data["max_distance_km"] > 100


def test_keyrate_optimize_mu_never_loses_to_fixed_mu():
    fixed = _json(["keyrate", "--distance-km", "0,100", "--decoys", "3"])["points"]
    best = _json(["keyrate", "--distance-km", "0,100", "--decoys", "3", "--optimize-mu"])["points"]
    for f, b in zip(fixed, best, strict=True):
        assert b["key_rate_per_pulse"] >= f["key_rate_per_pulse"] * (1 - 1e-9)


def test_keyrate_four_decoys_json():
    data = _json(["keyrate", "--distance-km", "0,100", "--decoys", "4", "--omega", "0.02"])
    assert data["params"]["decoys"] == "4"
    assert all(0 < p["Y11_L"] and 0 < p["e11_U"] < 0.5 and p["key_rate_per_pulse"] > 0
               for p in data["points"])


def test_keyrate_plot_writes_png(tmp_path):
    out = tmp_path / "rate.png"
    result = runner.invoke(app, ["keyrate", "--distance-km", "0:200:50", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_json_schema():
    data = _json(["simulate", "--slots", "100000000", "--basis", "X", "--seed", "3"])
    assert data["sampler"] == "fast" and data["seed"] == 3
    (row,) = data["classes"]
    assert set(row) == {"basis", "mu_a", "mu_b", "slots", "detections", "errors", "Q", "E",
                        "Q_analytic", "E_analytic", "z_Q", "z_E"}
    assert row["detections"] > 1000 and abs(row["z_Q"]) < 5


@pytest.mark.parametrize(("args", "needle"), [
    (["keyrate", "--distance-km", "-10,20"], "--distance-km"),
    (["keyrate", "--distance-km", "a:b"], "--distance-km"),
    (["keyrate", "--decoys", "3", "--mu", "0.05", "--nu", "0.1"], "--mu"),
    (["keyrate", "--decoys", "3", "--nu", "0.0", "--omega", "0.0"], "--nu"),
    (["keyrate", "--decoys", "4"], "--omega"),  # the weaker X decoy must be >= 1e-3
    (["keyrate", "--decoys", "4", "--omega", "1e-6"], "--omega"),
    (["keyrate", "--decoys", "4", "--nu", "0.05", "--omega", "0.1"], "--nu"),
    (["keyrate", "--dark-count", "1.5"], "--dark-count"),
    (["keyrate", "--misalignment", "-0.1"], "--misalignment"),
    (["simulate", "--slots", "0"], "--slots"),
    (["simulate", "--distance-a-km", "-1"], "--distance-a-km"),
    (["simulate", "--gamma", "2"], "--gamma"),
    (["simulate", "--basis", "Y"], "--basis"),
    (["simulate", "--sampler", "magic"], "--sampler"),
])
def test_nonsense_parameters_name_the_option_without_traceback(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_scenario_list_names_every_shipped_scenario_and_the_default():
    rows = _json(["scenario", "list"])["scenarios"]
    names = {r["name"] for r in rows}
    assert {"quickstart", "four_intensity"} <= names
    assert [r["name"] for r in rows if r["default"]] == ["quickstart"]
    assert all(r["rounds"] > 0 and r["emulated_s_per_round"] > 0 for r in rows)


def test_scenario_show_prints_yaml_that_loads_as_the_same_scenario(tmp_path):
    from orchestration.config import load_scenario, shipped_scenarios

    result = runner.invoke(app, ["scenario", "show", "four_intensity"])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "mine.yaml"
    copy.write_text(result.stdout)
    assert load_scenario(copy) == load_scenario(shipped_scenarios()["four_intensity"])


@pytest.mark.parametrize("args", [["run", "nosuch-scenario"],
                                  ["scenario", "show", "nosuch-scenario"]])
def test_an_unknown_scenario_name_is_one_clear_line(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "nosuch-scenario: no such file, and no shipped scenario of that name" in result.output
    assert "Traceback" not in result.output
