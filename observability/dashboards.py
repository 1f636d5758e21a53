"""The Grafana dashboards of an MDI-QKD link, built with ``grafana-foundation-sdk``.

``python -m observability.dashboards`` writes ``observability/dashboards/<name>.json`` (the
committed files; a test checks they are what this module builds, and that every query names
only metrics a live run's Prometheus holds). Import them in Grafana (Dashboards → New →
Import); each asks for a Prometheus data source (the variable ``datasource``), such as the one
``mdiqkd observe`` starts.

* ``executive``: secure key rate, key-provisioning availability, QBER rolling average, SLO burn;
* ``oncall``: per-link QBER per basis, Bell rate, detector click rates, dark counts, aborted
  rounds by reason, authentication failures, firing alerts;
* ``debug``: error-correction leakage, round trips, authentication key consumed, frames
  rejected, key-provisioning latency, the round stages' durations, finite-key bounds,
  coincidences, warm-up times, the relay's click-time offset and jitter per detector, the
  visibility lower bound, decoy counts per class.

The stage durations come from the same clock as the stage spans of the rounds' traces; one
round's stages, with their attributes, are in its trace: ``mdiqkd trace show RUN_DIR --round N``
(the round number is in ``rounds.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from observability import DASHBOARDS_DIR

DS = "${datasource}"


def _sdk() -> Any:
    try:
        from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
        from grafana_foundation_sdk.models.dashboard import DataSourceRef
    except ImportError as e:  # pragma: no cover - a developer's environment
        raise SystemExit("building the dashboards needs the package grafana-foundation-sdk "
                         "(pip install -e '.[test]')") from e
    return dashboard, prometheus, stat, timeseries, JSONEncoder, DataSourceRef


def _query(prometheus: Any, expr: str, legend: str, ref: str) -> Any:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)


#: A panel: (title, kind, Grafana unit, [(PromQL expression, legend)]).
Panel = tuple[str, str, str, list[tuple[str, str]]]
#: Per dashboard: (title, [(row title, [panel, …]), …]).
PANELS: dict[str, tuple[str, list[tuple[str, list[Panel]]]]] = {
    "executive": ("MDI-QKD — executive", [
        ("Key", [
            ("Secure key rate (per emulated second, 1h)", "timeseries", "bps", [
                ("link:mdiqkd_secure_key_rate_bits_per_second:1h", "{{link}}")]),
            ("Secure key bits delivered", "stat", "short", [
                ('sum by (link) (mdiqkd_secure_key_bits_total{node="alice"})', "{{link}}")]),
            ("Key provisioning available (5m windows)", "timeseries", "percentunit", [
                ("avg_over_time(link:mdiqkd_key_provisioning_available:5m[1h])", "{{link}}")]),
        ]),
        ("Quality and SLOs", [
            ("QBER Z rolling average (1h)", "timeseries", "percentunit", [
                ("link:mdiqkd_qber_z:avg_1h", "{{link}}")]),
            ("Error-budget burn rate (1h)", "timeseries", "short", [
                ("link:mdiqkd_slo_key_provisioning:burn_rate_1h", "key provisioning {{link}}"),
                ("link:mdiqkd_slo_qber:burn_rate_1h", "QBER {{link}}")]),
        ]),
    ]),
    "oncall": ("MDI-QKD — on call", [
        ("Link", [
            ("QBER per basis", "timeseries", "percentunit", [
                ("mdiqkd_qber_ratio", "{{link}} {{node}} {{basis}}")]),
            ("Bell-measurement success rate (per emulated second)", "timeseries", "hz", [
                ("mdiqkd_bell_success_rate_hertz", "{{link}}")]),
            ("Detector clicks (per wall second)", "timeseries", "hz", [
                ("rate(mdiqkd_detector_clicks_total[1m])", "{{detector}}")]),
            ("Dark counts (background clicks per detector per slot, vacuum class, 1h)",
             "timeseries", "sci", [
                 ("link:mdiqkd_dark_count_probability:1h", "{{link}}")]),

            ("Recent calibrations (1h): searches, moves, intensity flags", "timeseries", "short", [
                ('sum by (link, loop, action) (increase(mdiqkd_calibration_actions_total'
                 '{node="alice"}[1h]))', "{{loop}} {{action}}")]),
        ]),
        ("Trouble", [
            ("Aborted rounds by reason (15m)", "timeseries", "short", [
                ("sum by (link, reason) (increase(mdiqkd_rounds_aborted_total[15m]))",
                 "{{reason}}")]),
            ("Authentication failures (15m)", "timeseries", "short", [
                ("sum by (node, peer) (increase(mdiqkd_authentication_failures_total[15m]))",
                 "{{node}} ← {{peer}}")]),
            ("Firing alerts", "stat", "short", [
                ('count by (alertname, severity) (ALERTS{alertstate="firing"})',
                 "{{severity}}: {{alertname}}")]),
            ("Nodes up", "stat", "short", [('up{job="mdiqkd"}', "{{instance}}")]),
            ("Last round (mdiqkd trace show RUN_DIR --round N)", "timeseries", "none", [
                ("mdiqkd_last_round", "{{node}}")]),
        ]),
    ]),
    "debug": ("MDI-QKD — debug", [
        ("Post-processing", [
            ("Error-correction leakage (bits per wall second)", "timeseries", "short", [
                ("rate(mdiqkd_ec_leakage_bits_total[5m])", "{{node}}")]),
            ("Reconciliation round trips (per wall second)", "timeseries", "short", [
                ("rate(mdiqkd_round_trips_total[5m])", "{{node}}")]),
            ("Finite-key bounds of the last round", "timeseries", "short", [
                ("mdiqkd_phase_error_upper_ratio", "phase error upper {{node}}"),
                ("mdiqkd_single_photon_z_bits_lower", "single-photon Z bits lower {{node}}")]),
            ("Key-provisioning latency p50 / p95", "timeseries", "s", [
                ("histogram_quantile(0.5, sum by (le, node) "
                 "(rate(mdiqkd_key_provisioning_latency_seconds_bucket[15m])))", "p50 {{node}}"),
                ("histogram_quantile(0.95, sum by (le, node) "
                 "(rate(mdiqkd_key_provisioning_latency_seconds_bucket[15m])))",
                 "p95 {{node}}")]),
            ("Round stages: mean and p95 wall time (15m)", "timeseries", "s", [
                ("sum by (node, stage) (rate(mdiqkd_round_stage_duration_seconds_sum[15m])) / "
                 "sum by (node, stage) (rate(mdiqkd_round_stage_duration_seconds_count[15m]))",
                 "mean {{node}} {{stage}}"),
                ("histogram_quantile(0.95, sum by (le, node, stage) "
                 "(rate(mdiqkd_round_stage_duration_seconds_bucket[15m])))",
                 "p95 {{node}} {{stage}}")]),
        ]),
        ("Channels", [
            ("Authentication key consumed (bits per wall second)", "timeseries", "short", [
                ("rate(mdiqkd_auth_key_consumed_bits_total[5m])", "{{node}} ↔ {{peer}}")]),
            ("Frames rejected by reason (15m)", "timeseries", "short", [
                ("sum by (node, peer, reason) (increase(mdiqkd_frames_rejected_total[15m]))",
                 "{{node}} ← {{peer}} {{reason}}")]),
            ("Coincidences and Bell successes (per wall second)", "timeseries", "short", [
                ("rate(mdiqkd_coincidences_total[5m])", "coincidences"),
                ("rate(mdiqkd_bell_successes_total[5m])", "Bell successes")]),
            ("Key store depth", "timeseries", "short", [
                ("mdiqkd_key_store_bits", "{{node}}")]),
            ("Kernel warm-up", "stat", "s", [("mdiqkd_warm_up_seconds", "{{node}}")]),
        ]),
        ("Relay timing and interference", [
            ("Click-time offset on the relay's slot grid", "timeseries", "s", [
                ("mdiqkd_relay_click_offset_seconds", "{{detector}}")]),
            ("Click-time jitter at the relay (rms)", "timeseries", "s", [
                ("mdiqkd_relay_click_jitter_seconds", "{{detector}}")]),
            ("Two-photon interference visibility (lower bound)", "timeseries", "percentunit", [
                ("mdiqkd_visibility_lower_ratio", "{{node}}")]),
            ("Decoy counts: detections per pulse pair, per class and basis (15m)", "timeseries",
             "sci", [
                 ('sum by (classes, basis) (increase(mdiqkd_decoy_detections_total'
                  '{node="alice"}[15m])) / sum by (classes, basis) (increase('
                  'mdiqkd_decoy_pulse_pairs_total{node="alice"}[15m]))', "{{classes}} {{basis}}")]),
        ]),
    ]),
}


def build(name: str) -> dict[str, Any]:
    """One dashboard as Grafana's JSON model."""
    dashboard, prometheus, stat, timeseries, encoder, ds_ref = _sdk()
    title, rows = PANELS[name]
    b = (dashboard.Dashboard(title).uid(f"mdiqkd-{name}").tags(["mdiqkd", "qkd"])
         .refresh("10s").time("now-1h", "now").timezone("browser")
         .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus")
                        .type("prometheus")))
    ref = ds_ref(type_val="prometheus", uid=DS)
    for row_title, panels in rows:
        b = b.with_row(dashboard.Row(row_title))
        for panel_title, kind, unit, queries in panels:
            panel = (timeseries.Panel() if kind == "timeseries" else stat.Panel())
            panel = panel.title(panel_title).unit(unit).datasource(ref).height(8).span(8)
            for i, (expr, legend) in enumerate(queries):
                panel = panel.with_target(_query(prometheus, expr, legend, chr(ord("A") + i)))
            b = b.with_panel(panel)
    return json.loads(json.dumps(b.build(), cls=encoder))


def render(name: str) -> str:
    return json.dumps(build(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def queries(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's JSON (panels, rows' panels)."""
    out = []
    for panel in model.get("panels", []):
        for p in [panel, *panel.get("panels", [])]:
            out += [t["expr"] for t in p.get("targets", []) if "expr" in t]
    return out


#: PromQL words that are not metric names (aggregations, functions are followed by "(").
_KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
             "group_right", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, grouping
    clauses, durations and function names left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # dashboard variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, call = m.group(1), m.group(2)
        if call is None and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in PANELS:
        path = args.out / f"{name}.json"
        path.write_text(render(name))
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
