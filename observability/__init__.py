"""What operators watch a run with: Prometheus rule files (``rules/``; their ``promtool`` unit
tests are in tests/observability/), Grafana dashboards (``dashboards/``), and the code that
generates the rules and the dashboards from their parameters (``observability.rules``,
``observability.dashboards``). Shipped as package data, so ``mdiqkd observe`` finds them in an
installed tree too (docs/metrics.md, docs/runbooks/)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE / "rules"
DASHBOARDS_DIR = HERE / "dashboards"


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))
