"""The Prometheus rules of an MDI-QKD link, generated from their parameters.

``python -m observability.rules`` writes ``observability/rules/mdiqkd.rules.yml`` with the
defaults below (the committed file; a test checks that it is what this module generates);
``--set NAME=VALUE`` changes a parameter (an operator's own thresholds, windows or runbook
address). Three groups:

* ``mdiqkd-sli``: recording rules of the service-level indicators (windowed QBER, Bell rate,
  secure key rate per emulated second, key-provisioning availability, background clicks per
  detector per slot from the users' vacuum-vacuum class);
* ``mdiqkd-slo``: the two SLOs' error ratios and error-budget burn rates over a short and a
  long window: key provisioning available in ``availability_objective`` of the
  ``provisioning_window`` windows; QBER_Z below ``qber_threshold`` in ``qber_objective`` of the
  evaluations;
* ``mdiqkd-alerts``: alerts with ``severity: page`` or ``severity: ticket`` and a
  ``runbook_url`` annotation (docs/runbooks/<alert>.md).

Every expression uses only metrics the nodes export (``nodes.metrics``) and ``up``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from observability import RULES_DIR

RULES_FILE = "mdiqkd.rules.yml"


@dataclass(frozen=True)
class RuleParams:
    #: the abort threshold of QBER_Z (the default scenario's ``postprocessing.max_qber_z``)
    qber_threshold: float = 0.11
    #: QBER_Z above this (and at most the threshold) and rising: a ticket
    qber_warning: float = 0.08
    #: secure key rate SLO, net bits per emulated second
    key_rate_slo_bps: float = 10000.0
    availability_objective: float = 0.99
    qber_objective: float = 0.95
    #: a provisioning window is available when a key was committed in it
    provisioning_window: str = "5m"
    short_window: str = "5m"
    long_window: str = "1h"
    burn_factor: float = 3.0
    bell_window: str = "5m"
    bell_for: str = "1m"
    link_down_for: str = "1m"
    qber_for: str = "5m"
    qber_rising_window: str = "30m"
    qber_rising_for: str = "10m"
    key_rate_for: str = "30m"
    aborts_window: str = "15m"
    auth_window: str = "15m"
    #: background clicks per detector per slot above this (estimated from the users'
    #: vacuum-vacuum class over ``dark_count_window``): a ticket; 10x the standard set's 3e-6
    dark_count_probability_max: float = 3e-5
    #: and at least this many vacuum-class detections in the window (one detection in few pairs
    #: is a large estimate, not evidence)
    dark_count_min_detections: int = 3
    dark_count_window: str = "1h"
    dark_count_for: str = "15m"
    #: a calibration search failed within this window ...
    calibration_window: str = "1h"
    #: ... and one converged within this (more recent) window: a ticket
    calibration_recent: str = "15m"
    #: where ``runbook_url`` points: the repository's runbooks, relative to its root by default
    runbook_base: str = "docs/runbooks"


ALERTS_PAGE = ("MdiqkdNoBellSuccesses", "MdiqkdLinkDown", "MdiqkdQberAboveThreshold",
               "MdiqkdKeyProvisioningBudgetBurn", "MdiqkdQberBudgetBurn")
ALERTS_TICKET = ("MdiqkdQberRising", "MdiqkdKeyRateBelowSlo", "MdiqkdRoundsAborting",
                 "MdiqkdAuthenticationFailures", "MdiqkdDarkCountsElevated",
                 "MdiqkdCalibrationFailedButRecovered")


def _runbook(p: RuleParams, alert: str) -> str:
    return f"{p.runbook_base.rstrip('/')}/{alert}.md"


def _alert(p: RuleParams, name: str, expr: str, for_: str, severity: str, summary: str,
           description: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ not in ("", "0s"):
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description,
                           "runbook_url": _runbook(p, name)}
    return rule


def rule_groups(p: RuleParams = RuleParams()) -> dict[str, Any]:
    """The rule file's content."""
    s, l, w = p.short_window, p.long_window, p.provisioning_window
    d = p.dark_count_window
    qber = 'max by (link) (mdiqkd_qber_ratio{basis="Z", node="alice"})'
    sli = [
        {"record": "link:mdiqkd_qber_z:max", "expr": qber},
        {"record": f"link:mdiqkd_qber_z:avg_{s}",
         "expr": f"avg_over_time(link:mdiqkd_qber_z:max[{s}])"},
        {"record": f"link:mdiqkd_qber_z:avg_{l}",
         "expr": f"avg_over_time(link:mdiqkd_qber_z:max[{l}])"},
        {"record": "link:mdiqkd_bell_success_rate_hertz:max",
         "expr": "max by (link) (mdiqkd_bell_success_rate_hertz)"},
        {"record": f"link:mdiqkd_bell_successes:rate_{s}",
         "expr": f"sum by (link) (rate(mdiqkd_bell_successes_total[{s}]))"},
        *({"record": f"link:mdiqkd_secure_key_rate_bits_per_second:{win}",
           "expr": f'sum by (link) (increase(mdiqkd_secure_key_bits_total{{node="alice"}}[{win}]))'
                   f' / sum by (link) (increase(mdiqkd_emulated_seconds_total{{node="alice"}}'
                   f"[{win}]))"} for win in dict.fromkeys((s, l))),
        {"record": f"link:mdiqkd_key_provisioning_available:{w}",
         "expr": f'sum by (link) (increase(mdiqkd_keys_committed_total{{node="alice"}}[{w}]))'
                 " > bool 0"},
        {"record": "link:mdiqkd_qber_z_over_threshold:bool",
         "expr": f"link:mdiqkd_qber_z:max > bool {p.qber_threshold:g}"},
        # background clicks from the users' vacuum-vacuum class (nodes/link_estimates.py):
        # Y00 = detections / pairs = 4 p^2 (1 - p)^2, p = sqrt(Y00) / (1 + sqrt(1 - 2 sqrt(Y00)))
        {"record": f"link:mdiqkd_vacuum_detections:increase_{d}",
         "expr": f'sum by (link) (increase(mdiqkd_vacuum_detections_total{{node="alice"}}[{d}]))'},
        {"record": f"link:mdiqkd_vacuum_yield:ratio_{d}",
         "expr": f"clamp_max(link:mdiqkd_vacuum_detections:increase_{d} / sum by (link) "
                 f'(increase(mdiqkd_vacuum_pairs_total{{node="alice"}}[{d}])), 0.25)'},
        {"record": f"link:mdiqkd_dark_count_probability:{d}",
         "expr": f"sqrt(link:mdiqkd_vacuum_yield:ratio_{d}) / (1 + sqrt(1 - 2 * "
                 f"sqrt(link:mdiqkd_vacuum_yield:ratio_{d})))"},
    ]
    slo = []
    for win in dict.fromkeys((s, l)):
        slo += [
            {"record": f"link:mdiqkd_slo_key_provisioning:error_ratio_{win}",
             "expr": f"1 - avg_over_time(link:mdiqkd_key_provisioning_available:{w}[{win}])"},
            {"record": f"link:mdiqkd_slo_key_provisioning:burn_rate_{win}",
             "expr": f"link:mdiqkd_slo_key_provisioning:error_ratio_{win} / "
                     f"{1 - p.availability_objective:.6g}"},
            {"record": f"link:mdiqkd_slo_qber:error_ratio_{win}",
             "expr": f"avg_over_time(link:mdiqkd_qber_z_over_threshold:bool[{win}])"},
            {"record": f"link:mdiqkd_slo_qber:burn_rate_{win}",
             "expr": f"link:mdiqkd_slo_qber:error_ratio_{win} / {1 - p.qber_objective:.6g}"},
        ]
    f = f"{p.burn_factor:g}"
    alerts = [
        _alert(p, "MdiqkdNoBellSuccesses",
               f"max_over_time(link:mdiqkd_bell_success_rate_hertz:max[{p.bell_window}]) == 0",
               p.bell_for, "page", "No Bell-measurement successes on link {{ $labels.link }}",
               f"Every round Charles announced in the last {p.bell_window} had no Bell "
               "success: no key can be made."),
        _alert(p, "MdiqkdLinkDown", 'up{job="mdiqkd"} == 0', p.link_down_for, "page",
               "Node {{ $labels.instance }} of the link is not answering",
               "Prometheus cannot scrape a node's metrics endpoint: the node is down or "
               "unreachable."),
        _alert(p, "MdiqkdQberAboveThreshold",
               f"link:mdiqkd_qber_z:max > {p.qber_threshold:g}", p.qber_for, "page",
               "QBER_Z above the abort threshold on link {{ $labels.link }}",
               f"QBER_Z has stayed above {p.qber_threshold:g} for {p.qber_for}: rounds abort "
               "and no key is made."),
        _alert(p, "MdiqkdKeyProvisioningBudgetBurn",
               f"link:mdiqkd_slo_key_provisioning:burn_rate_{s} > {f} and "
               f"link:mdiqkd_slo_key_provisioning:burn_rate_{l} > {f}", "", "page",
               "Key-provisioning error budget burning fast on link {{ $labels.link }}",
               f"The availability SLO ({p.availability_objective:g} of {w} windows with a "
               f"key) burns its budget more than {f} times the planned rate over {s} and {l}."),
        _alert(p, "MdiqkdQberBudgetBurn",
               f"link:mdiqkd_slo_qber:burn_rate_{s} > {f} and "
               f"link:mdiqkd_slo_qber:burn_rate_{l} > {f}", "", "page",
               "QBER error budget burning fast on link {{ $labels.link }}",
               f"The QBER SLO (QBER_Z below {p.qber_threshold:g} in {p.qber_objective:g} of "
               f"evaluations) burns its budget more than {f} times the planned rate over {s} "
               f"and {l}."),
        _alert(p, "MdiqkdQberRising",
               f"link:mdiqkd_qber_z:max > {p.qber_warning:g} and link:mdiqkd_qber_z:max <= "
               f"{p.qber_threshold:g} and delta(link:mdiqkd_qber_z:max[{p.qber_rising_window}])"
               " > 0", p.qber_rising_for, "ticket",
               "QBER_Z rising towards the abort threshold on link {{ $labels.link }}",
               f"QBER_Z is above {p.qber_warning:g}, below the abort threshold "
               f"{p.qber_threshold:g}, and higher than {p.qber_rising_window} ago."),
        _alert(p, "MdiqkdKeyRateBelowSlo",
               f"link:mdiqkd_secure_key_rate_bits_per_second:{l} < {p.key_rate_slo_bps:g}",
               p.key_rate_for, "ticket",
               "Secure key rate below its SLO on link {{ $labels.link }}",
               f"Net secure bits per emulated second over {l} are below "
               f"{p.key_rate_slo_bps:g}."),
        _alert(p, "MdiqkdRoundsAborting",
               f'sum by (link, reason) (increase(mdiqkd_rounds_aborted_total{{node="alice"}}'
               f"[{p.aborts_window}])) > 0", "", "ticket",
               "Key rounds aborting ({{ $labels.reason }}) on link {{ $labels.link }}",
               f"At least one key round aborted in the last {p.aborts_window}."),
        _alert(p, "MdiqkdAuthenticationFailures",
               "sum by (link, node, peer) (increase(mdiqkd_authentication_failures_total"
               f"[{p.auth_window}])) > 0", "", "ticket",
               "{{ $labels.node }} refused frames from {{ $labels.peer }} that failed "
               "authentication",
               "Frames with a bad authentication tag reached a node: a fault, or someone "
               "injecting messages on the classical channel."),
        _alert(p, "MdiqkdDarkCountsElevated",
               f"link:mdiqkd_dark_count_probability:{d} > {p.dark_count_probability_max:g} and "
               f"link:mdiqkd_vacuum_detections:increase_{d} >= {p.dark_count_min_detections}",
               p.dark_count_for, "ticket",
               "Dark counts elevated on link {{ $labels.link }}",
               f"Background clicks per detector per slot, from the users' vacuum-vacuum class "
               f"over {d}, are above {p.dark_count_probability_max:g} (with at least "
               f"{p.dark_count_min_detections} such detections): detectors warming or ageing, "
               "stray light, or light injected at the relay."),
        _alert(p, "MdiqkdCalibrationFailedButRecovered",
               f'sum by (link) (increase(mdiqkd_calibration_actions_total{{node="alice", '
               f'action="failed"}}[{p.calibration_window}])) > 0 and sum by (link) '
               f'(increase(mdiqkd_calibration_actions_total{{node="alice", '
               f'action="converged"}}[{p.calibration_recent}])) > 0',
               "", "ticket",
               "Calibration failed, then recovered, on link {{ $labels.link }}",
               f"A calibration search of the users' loops ended failed within "
               f"{p.calibration_window}, and one converged within {p.calibration_recent}: the "
               "link is aligned again, but something moved faster or further than the loops "
               "follow (fiber handling, a clock step, a device drifting)."),
    ]
    assert {a["alert"] for a in alerts} == set(ALERTS_PAGE + ALERTS_TICKET)
    return {"groups": [{"name": "mdiqkd-sli", "rules": sli},
                       {"name": "mdiqkd-slo", "rules": slo},
                       {"name": "mdiqkd-alerts", "rules": alerts}]}


HEADER = ("# Generated by `python -m observability.rules` (observability/rules.py): edit the\n"
          "# parameters there, not this file. Every metric: docs/metrics.md.\n")


def render(p: RuleParams = RuleParams()) -> str:
    return HEADER + yaml.safe_dump(rule_groups(p), sort_keys=False, width=100)


def _parse_set(items: list[str]) -> RuleParams:
    fields = {f.name: f for f in dataclasses.fields(RuleParams)}
    values: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(fields)}")
        default = getattr(RuleParams(), name)
        values[name] = type(default)(value)
    return RuleParams(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RULES_DIR / RULES_FILE)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    args.out.write_text(render(_parse_set(args.set)))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
