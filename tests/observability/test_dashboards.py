"""observability/dashboards: the committed JSON is what the generator builds, every panel is a
well-formed Grafana panel on the Prometheus data-source variable, every query parses into
metric names the nodes declare (or the rules record). The live check, against a real run's
Prometheus, is tests/orchestration/test_observe.py."""

from __future__ import annotations

import json

import pytest

from nodes.metrics import METRICS
from observability import DASHBOARDS_DIR
from observability.dashboards import PANELS, metric_names, queries
from observability.rules import rule_groups

DASHBOARDS = sorted(PANELS)


def _committed(name: str) -> dict:
    return json.loads((DASHBOARDS_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", DASHBOARDS)
def test_the_committed_dashboard_is_what_the_generator_builds(name):
    pytest.importorskip("grafana_foundation_sdk", reason="the test extras install it")
    from observability.dashboards import render

    assert (DASHBOARDS_DIR / f"{name}.json").read_text() == render(name), \
        "run `python -m observability.dashboards` and commit observability/dashboards/"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_panel_is_importable_and_queries_the_datasource_variable(name):
    model = _committed(name)
    assert model["uid"] == f"mdiqkd-{name}" and model["title"]
    (variable,) = model["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert panels
    for p in panels:
        assert p["type"] in ("timeseries", "stat")
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"h", "w", "x", "y"} <= set(p["gridPos"])
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])


def _known_names() -> set[str]:
    recorded = {r["record"] for g in rule_groups()["groups"] for r in g["rules"]
                if "record" in r}
    histograms = {f"{n}_{part}" for n, s in METRICS.items() if s.kind == "histogram"
                  for part in ("bucket", "sum", "count")}
    return set(METRICS) | recorded | histograms | {"ALERTS", "up"}


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_query_names_declared_metrics_only(name):
    names = set().union(*map(metric_names, queries(_committed(name))))
    assert names and names <= _known_names(), names - _known_names()


def test_metric_names_leaves_out_functions_labels_and_literals():
    assert metric_names('histogram_quantile(0.95, sum by (le, node) (rate('
                        'a_bucket{node="x"}[5m])))') == {"a_bucket"}
    assert metric_names('b:rec:1h > bool 0.11 and on (link) c offset 5m') == {"b:rec:1h", "c"}
    assert metric_names('count(ALERTS{alertstate="firing", x="y{z}"})') == {"ALERTS"}
