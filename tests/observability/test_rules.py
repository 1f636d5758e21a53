"""observability/rules: `promtool check rules` and `promtool test rules` on synthetic series,
each alert shown firing and not firing; the committed file is what the generator writes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from observability import RULES_DIR, rule_files
from observability.rules import (
    ALERTS_PAGE,
    ALERTS_TICKET,
    RULES_FILE,
    RuleParams,
    render,
    rule_groups,
)

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; .ci/run "
    "installs it)")


def _alerts() -> dict[str, dict]:
    return {r["alert"]: r for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}


def test_the_committed_rule_file_is_what_the_generator_writes():
    assert (RULES_DIR / RULES_FILE).read_text() == render(), \
        "run `python -m observability.rules` and commit observability/rules/"


def test_every_alert_has_a_severity_and_a_runbook_in_the_repository():
    alerts = _alerts()
    assert set(alerts) == set(ALERTS_PAGE + ALERTS_TICKET)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] == ("page" if name in ALERTS_PAGE else "ticket")
        runbook = ROOT / rule["annotations"]["runbook_url"]
        assert runbook.is_file(), runbook
        assert name in runbook.read_text()


def test_a_parameter_changes_the_rules_and_a_bad_one_is_refused():
    from observability.rules import _parse_set

    text = render(_parse_set(["qber_threshold=0.09", "long_window=6h"]))
    assert "> bool 0.09" in text and "[6h]" in text
    with pytest.raises(SystemExit, match="expected NAME=VALUE"):
        _parse_set(["no_such=1"])


@needs_promtool
def test_promtool_check_rules_passes():
    out = subprocess.run([PROMTOOL, "check", "rules", *map(str, rule_files())],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _render_template(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)


def _expect(alert: str, labels: dict[str, str]) -> dict:
    rule = _alerts()[alert]
    return {"exp_labels": {**labels, "severity": rule["labels"]["severity"]},
            "exp_annotations": {k: _render_template(v, labels)
                                for k, v in rule["annotations"].items()}}


def _s(name: str, values: str, **labels: str) -> dict:
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{body}}}", "values": values}


# Each case: input series, then (time, alert, [labels of the alerts expected firing]); an empty
# list is the alert not firing. Every alert appears firing and not firing.
Z = {"basis": "Z", "node": "alice"}
CASES = [
    ([_s("mdiqkd_bell_success_rate_hertz", "0x30", link="a", node="charles"),
      _s("mdiqkd_bell_success_rate_hertz", "5x30", link="b", node="charles")],
     [("0m", "MdiqkdNoBellSuccesses", []),  # pending: not yet for 1m
      ("10m", "MdiqkdNoBellSuccesses", [{"link": "a"}])]),
    ([_s("up", "0x10", job="mdiqkd", instance="n1"),
      _s("up", "1x10", job="mdiqkd", instance="n2")],
     [("0m", "MdiqkdLinkDown", []),
      ("5m", "MdiqkdLinkDown", [{"job": "mdiqkd", "instance": "n1"}])]),
    ([_s("mdiqkd_qber_ratio", "0.2x20", link="a", **Z),
      _s("mdiqkd_qber_ratio", "0.05x20", link="b", **Z),
      _s("mdiqkd_qber_ratio", "0.3x20", link="b", basis="X", node="alice")],  # X: not QBER_Z
     [("3m", "MdiqkdQberAboveThreshold", []),
      ("10m", "MdiqkdQberAboveThreshold", [{"link": "a"}])]),
    ([_s("mdiqkd_qber_ratio", "0.05+0.001x60", link="a", **Z),  # 0.08 passed at 31 min
      _s("mdiqkd_qber_ratio", "0.09x60", link="b", **Z)],  # high but not rising
     [("20m", "MdiqkdQberRising", []),
      ("45m", "MdiqkdQberRising", [{"link": "a"}])]),
    ([_s("mdiqkd_secure_key_bits_total", "0+1000x120", link="a", node="alice"),
      _s("mdiqkd_emulated_seconds_total", "0+1x120", link="a", node="alice"),
      _s("mdiqkd_secure_key_bits_total", "0+20000x120", link="b", node="alice"),
      _s("mdiqkd_emulated_seconds_total", "0+1x120", link="b", node="alice")],
     [("10m", "MdiqkdKeyRateBelowSlo", []),  # below, but not yet for 30 min
      ("100m", "MdiqkdKeyRateBelowSlo", [{"link": "a"}])]),
    ([_s("mdiqkd_keys_committed_total", "0x120", link="a", node="alice"),
      _s("mdiqkd_keys_committed_total", "0+1x120", link="b", node="alice")],
     [("0m", "MdiqkdKeyProvisioningBudgetBurn", []),
      ("70m", "MdiqkdKeyProvisioningBudgetBurn", [{"link": "a"}])]),
    ([_s("mdiqkd_qber_ratio", "0.2x120", link="a", **Z),
      _s("mdiqkd_qber_ratio", "0.05x120", link="b", **Z),
      # over the threshold for the last 10 min only: the short window burns, the long does not
      _s("mdiqkd_qber_ratio", "0.05x110 0.2x10", link="c", **Z)],
     [("70m", "MdiqkdQberBudgetBurn", [{"link": "a"}]),
      ("116m", "MdiqkdQberBudgetBurn", [{"link": "a"}])]),
    ([_s("mdiqkd_rounds_aborted_total", "0 0 1x60", link="a", node="alice", reason="qber")],
     [("10m", "MdiqkdRoundsAborting", [{"link": "a", "reason": "qber"}]),
      ("40m", "MdiqkdRoundsAborting", [])]),  # none in the last 15 min
    ([_s("mdiqkd_authentication_failures_total", "0 0 0 2x40", link="a", node="bob",
         peer="alice")],
     [("5m", "MdiqkdAuthenticationFailures", [{"link": "a", "node": "bob", "peer": "alice"}]),
      ("30m", "MdiqkdAuthenticationFailures", [])]),
    # 10^9 vacuum pairs a minute; a: 10 detections a minute, Y00 = 1e-8, p = 5.0e-5 > 3e-5;
    # b: 1 a minute, p = 1.6e-5; c: two detections in 10^4 pairs, p = 7e-3 but too few to tell
    ([_s("mdiqkd_vacuum_pairs_total", "0+1e9x120", link="a", node="alice"),
      _s("mdiqkd_vacuum_detections_total", "0+10x120", link="a", node="alice"),
      _s("mdiqkd_vacuum_pairs_total", "0+1e9x120", link="b", node="alice"),
      _s("mdiqkd_vacuum_detections_total", "0+1x120", link="b", node="alice"),
      _s("mdiqkd_vacuum_pairs_total", "0+100x120", link="c", node="alice"),
      _s("mdiqkd_vacuum_detections_total", "0 0 0 1 2x117", link="c", node="alice")],
     [("10m", "MdiqkdDarkCountsElevated", []),  # above, but not yet for 15 min
      ("40m", "MdiqkdDarkCountsElevated", [{"link": "a"}])]),
    # a: a search failed at 10 min, another converged at 30 min; b: failed only; c: converged
    # only. At 35 min a fires; at 5 min nothing has happened; at 80 min a's failure is older
    # than the 1h window
    ([_s("mdiqkd_calibration_actions_total", "0x9 1x120", link="a", node="alice",
         loop="search", action="failed"),
      _s("mdiqkd_calibration_actions_total", "0x29 1x100", link="a", node="alice",
         loop="search", action="converged"),
      _s("mdiqkd_calibration_actions_total", "0x9 1x120", link="b", node="alice",
         loop="search", action="failed"),
      _s("mdiqkd_calibration_actions_total", "0x29 1x100", link="c", node="alice",
         loop="search", action="converged")],
     [("5m", "MdiqkdCalibrationFailedButRecovered", []),
      ("35m", "MdiqkdCalibrationFailedButRecovered", [{"link": "a"}]),
      ("80m", "MdiqkdCalibrationFailedButRecovered", [])]),
]


def test_every_alert_is_tested_firing_and_not_firing():
    firing = {a for _, checks in CASES for _, a, exp in checks if exp}
    quiet = {a for _, checks in CASES for _, a, exp in checks if not exp}
    assert firing == set(_alerts()), set(_alerts()) - firing
    # a case that fires for one link and not another also shows the alert not firing
    quiet |= {a for series, checks in CASES for _, a, exp in checks
              if exp and len({s["series"].split("link=")[-1] for s in series}) > len(exp)}
    assert quiet == set(_alerts()), set(_alerts()) - quiet


def promtool_tests() -> dict:
    tests = []
    for series, checks in CASES:
        tests.append({"interval": "1m", "input_series": series, "alert_rule_test": [
            {"eval_time": t, "alertname": a, "exp_alerts": [_expect(a, lab) for lab in exp]}
            for t, a, exp in checks]})
    return {"rule_files": [str(p) for p in rule_files()], "evaluation_interval": "1m",
            "tests": tests}


@needs_promtool
def test_promtool_test_rules_shows_each_alert_firing_and_not_firing(tmp_path):
    path = tmp_path / "mdiqkd.rules.test.yml"
    path.write_text(yaml.safe_dump(promtool_tests(), sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path):
    """The harness can fail: expecting the Bell alert for the healthy link is refused."""
    tests = promtool_tests()
    tests["tests"] = tests["tests"][:1]
    tests["tests"][0]["alert_rule_test"][1]["exp_alerts"] = [
        _expect("MdiqkdNoBellSuccesses", {"link": "b"})]
    path = tmp_path / "wrong.test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode != 0


def test_rule_params_defaults_match_the_default_scenario():
    from orchestration.config import DEFAULT_SCENARIO, load_scenario

    assert RuleParams().qber_threshold == load_scenario(DEFAULT_SCENARIO).postprocessing.max_qber_z
