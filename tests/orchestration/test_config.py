"""Scenario files: the shipped scenarios load and build; bad intensity layouts name the field
and its line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from orchestration.config import (
    DEFAULT_SCENARIO,
    ScenarioError,
    build_round_config,
    build_settings,
    load_scenario,
    resolve_scenario,
    shipped_scenarios,
)

FOUR = shipped_scenarios()["four_intensity"]


def test_shipped_scenarios_are_package_data_listed_by_name():
    shipped = shipped_scenarios()
    assert {"quickstart", "four_intensity"} <= set(shipped)
    assert DEFAULT_SCENARIO.name == "quickstart.yaml" and DEFAULT_SCENARIO.is_file()


def test_a_scenario_is_found_by_path_first_then_by_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_scenario(None) == DEFAULT_SCENARIO
    assert resolve_scenario("four_intensity") == FOUR
    assert resolve_scenario("four_intensity.yaml") == FOUR
    (tmp_path / "quickstart").write_text("title: mine\n")  # a local file shadows the name
    assert resolve_scenario("quickstart") == Path("quickstart")


@pytest.mark.parametrize(("ref", "needle"), [
    ("nosuch", "no such file, and no shipped scenario of that name (shipped: "),
    (".", "not a file"),
])
def test_an_unknown_scenario_says_what_is_shipped(ref, needle):
    with pytest.raises(ScenarioError, match=re.escape(needle)):
        resolve_scenario(ref)


@pytest.mark.parametrize("name", sorted(shipped_scenarios()))
def test_every_shipped_scenario_builds(name):
    scenario = load_scenario(shipped_scenarios()[name])
    cfg = build_round_config(scenario)
    for user in ("alice", "bob"):
        plan = build_settings(scenario, user).plan
        assert len(plan.intensities) in cfg.n_intensities
    assert cfg.key_intensity == (0, 0)


def test_the_four_intensity_scenario_uses_joint_constraints_and_four_classes():
    cfg = build_round_config(load_scenario(FOUR))
    assert cfg.decoy_method == "joint" and cfg.n_intensities == (4, 4)


def _edited(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(FOUR.read_text())
    edit(data)
    out = tmp_path / "edited.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _error(tmp_path: Path, edit) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(_edited(tmp_path, edit))
    return str(info.value)


def test_analytic_bounds_with_four_intensities_name_decoy_method(tmp_path):
    def edit(d):
        d["postprocessing"]["decoy_method"] = "analytic"

    message = _error(tmp_path, edit)
    assert "postprocessing.decoy_method" in message and "'lp'" in message
    assert message.startswith("edited.yaml:")  # with a line number


def test_a_repeated_intensity_names_its_mean_photon_number(tmp_path):
    def edit(d):
        d["bob"]["source"]["intensities"][2]["mean_photon_number"] = 0.35

    message = _error(tmp_path, edit)
    assert "bob.source.intensities.2.mean_photon_number" in message
    assert "distinct" in message


def test_a_signal_never_in_z_names_its_z_probability(tmp_path):
    def edit(d):
        d["alice"]["source"]["intensities"][0]["z_probability"] = 0.0

    assert "alice.source.intensities.0.z_probability" in _error(tmp_path, edit)


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_a_fluctuating_intensity_is_refused_for_the_finite_key_naming_the_field(tmp_path, user):
    def edit(d):
        d[user]["source"]["intensity_fluctuation_rel"] = 0.02

    message = _error(tmp_path, edit)
    assert f"{user}.source.intensity_fluctuation_rel" in message
    assert "mode: finite" in message and "Poisson" in message
    assert message.startswith("edited.yaml:")  # with a line number


def test_a_fluctuating_intensity_is_accepted_asymptotically(tmp_path):
    def edit(d):
        d["alice"]["source"]["intensity_fluctuation_rel"] = 0.02
        d["postprocessing"]["mode"] = "asymptotic"

    scenario = load_scenario(_edited(tmp_path, edit))
    assert scenario.alice.source.intensity_fluctuation_rel == 0.02


def test_probabilities_that_do_not_sum_to_one_name_the_list(tmp_path):
    def edit(d):
        d["alice"]["source"]["intensities"][3]["probability"] = 0.5

    message = _error(tmp_path, edit)
    assert "alice.source.intensities: intensity probabilities must sum to 1" in message


def test_too_few_or_too_many_intensities_name_the_list(tmp_path):
    def few(d):
        d["alice"]["source"]["intensities"] = d["alice"]["source"]["intensities"][:2]

    def many(d):
        base = d["alice"]["source"]["intensities"][3]
        d["alice"]["source"]["intensities"] += [
            {**base, "name": f"x{i}", "mean_photon_number": 0.01 * (i + 1), "probability": 0.0}
            for i in range(5)
        ]

    assert "alice.source.intensities" in _error(tmp_path, few)
    assert "alice.source.intensities" in _error(tmp_path, many)


def test_three_intensities_must_still_be_ordered(tmp_path):
    def edit(d):
        d["alice"]["source"]["intensities"] = [
            {"name": "mu", "mean_photon_number": 0.1, "probability": 0.5},
            {"name": "nu", "mean_photon_number": 0.4, "probability": 0.3},
            {"name": "omega", "mean_photon_number": 0.0, "probability": 0.2},
        ]

    message = _error(tmp_path, edit)
    assert "alice.source.intensities: three intensities must be ordered" in message


def test_the_reconciler_is_named_with_its_settings(tmp_path):
    def edit(d):
        del d["postprocessing"]["cascade_variant"]
        d["postprocessing"]["reconciliation"] = {"method": "cascade", "variant": "pow2"}

    reconciler = build_round_config(load_scenario(_edited(tmp_path, edit))).reconciler
    assert reconciler.name == "cascade" and reconciler.parameters.variant == "pow2"


def test_cascade_variant_is_short_for_a_cascade_reconciliation():
    reconciler = build_round_config(load_scenario(FOUR)).reconciler
    assert reconciler.name == "cascade" and reconciler.parameters.variant == "shallow"


def test_a_dumped_scenario_loads_again_as_the_same_scenario():
    scenario = load_scenario(FOUR)  # uses the cascade_variant shorthand
    assert type(scenario).model_validate(scenario.model_dump()) == scenario


@pytest.mark.parametrize(("reconciliation", "field", "needle"), [
    ({"method": "cascade"}, "postprocessing.cascade_variant", "not both"),
    ({"method": "turbo"}, "postprocessing.reconciliation", "unknown reconciliation method"),
    ({"method": "cascade", "depth": 3}, "postprocessing.reconciliation", "depth"),
    ({"method": "cascade", "variant": "nope"}, "postprocessing.reconciliation", "nope"),
])
def test_a_bad_reconciliation_names_its_field(tmp_path, reconciliation, field, needle):
    def edit(d):
        d["postprocessing"]["reconciliation"] = reconciliation
        if field.endswith("reconciliation"):  # alone, not beside the cascade_variant shorthand
            d["postprocessing"].pop("cascade_variant", None)

    message = _error(tmp_path, edit)
    assert field in message and needle in message
