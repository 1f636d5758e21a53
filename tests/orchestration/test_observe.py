"""A real three-process run watched by a real Prometheus (`mdiqkd observe`'s functions): the
series it scraped equal the run's own records; Charles's endpoint carries nothing of the users'
settings; a fibre cut over a whole round fires the Bell page alert; every dashboard query names
only metrics the nodes export.

The run is the shipped fibre-cut game day with the cut widened to cover all of round 1 and made
on both arms (so that round has no Bell success at all), every node keeping its endpoint up 3 s
after its last round (``metrics_linger_s``) and Prometheus scraping and evaluating every second.
Prometheus's series go stale once the nodes exit, so values are read with ``last_over_time``/
``max_over_time`` over the run.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from nodes.metrics import METRICS, charles_metric_names, metrics_json_series
from observability import DASHBOARDS_DIR, rule_files
from observability.dashboards import metric_names, queries
from observability.rules import RuleParams, render
from orchestration.config import load_scenario, resolve_scenario
from orchestration.observe import (
    ObserveError,
    metrics_targets,
    start_prometheus,
    write_prometheus_config,
)
from orchestration.run import execute, prepare_run_dir
from orchestration.runconfig import HOST, free_ports

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="the prometheus binary is not installed (Debian package `prometheus`; .ci/run "
    "installs it)")

WINDOW = "30m"  # longer than the run: every sample it scraped


def _cut_scenario(tmp: Path) -> Path:
    """gameday_fiber_cut with both fibres cut from before round 1 starts to after it ends."""
    shipped = resolve_scenario("gameday_fiber_cut")
    sc = load_scenario(shipped)
    round_s = sc.round_slots / sc.clock_rate_hz
    text = shipped.read_text()
    old = ("  - at: 1.2s\n    name: cut\n    duration: 600ms\n"
           "    fault: {type: fiber_cut, target: link/bob-charles}\n")
    assert old in text
    at, duration = f"{round(1e3 * (round_s - 0.05))}ms", f"{round(1e3 * (round_s + 0.1))}ms"
    # both arms: with Bob's alone cut, two photons of Alice's pulses still make Bell successes
    text = text.replace(old, "".join(
        f"  - at: {at}\n    name: cut-{arm}\n    duration: {duration}\n"
        f"    fault: {{type: fiber_cut, target: link/{arm}-charles}}\n"
        for arm in ("alice", "bob")))
    path = tmp / "cut.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("observe")
    scenario = load_scenario(_cut_scenario(tmp))
    run_dir = prepare_run_dir(scenario, tmp / "run", metrics_linger_s=3.0)
    # the shipped rules, and the same generator's rules with windows short enough for one run:
    # on a fast machine the cut round's zero Bell rate stands for well under a second before
    # the next round is announced, so Prometheus scrapes and evaluates every 200 ms, and the
    # fast alert looks at the last 600 ms (a window of a few scrapes, all of them zero)
    fast = tmp / "fast.rules.yml"
    fast.write_text(render(RuleParams(bell_window="600ms", bell_for="0s")).replace(
        "name: mdiqkd-", "name: fast-mdiqkd-"))
    config = write_prometheus_config(run_dir, scrape_interval="200ms",
                                     evaluation_interval="200ms", rules=[*rule_files(), fast])
    prom = start_prometheus(run_dir, free_ports(1)[0], config)
    try:
        prom.wait_ready()
        prom.wait_targets()  # ~5 s after it is ready: a run on a fast machine takes less
        summary = execute(scenario, run_dir)
        yield run_dir, prom, summary
    finally:
        prom.stop()


def _rounds(path: Path) -> list[dict]:
    by_round: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        by_round[r["round"]] = r  # a settled-late line supersedes the pending one
    return [by_round[k] for k in sorted(by_round)]


def _last(prom, expr: str) -> dict[str, float]:
    out = {}
    for s in prom.query(f"last_over_time({expr}[{WINDOW}])"):
        key = ",".join(f"{k}={v}" for k, v in sorted(s["metric"].items())
                       if k in ("node", "basis", "detector", "peer", "reason"))
        out[key] = float(s["value"][1])
    return out


def _series(prom, match: str) -> list[dict[str, str]]:
    url = prom.url + "/api/v1/series?" + urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]


@pytest.mark.slow
@needs_prometheus
def test_prometheus_scraped_every_node(observed):
    run_dir, prom, _ = observed
    targets = metrics_targets(run_dir)
    assert set(targets) == {"alice", "bob", "charles", "nature"}
    up = {s["metric"]["instance"]: float(s["value"][1])
          for s in prom.query(f'max_over_time(up{{job="mdiqkd"}}[{WINDOW}])')}
    assert up == {address: 1.0 for address in targets.values()}
    nodes = {s["metric"]["node"] for s in prom.query(f"last_over_time(mdiqkd_warm_up_seconds"
                                                     f"[{WINDOW}])")}
    assert nodes == {"alice", "bob", "charles", "nature"}


@pytest.mark.slow
@needs_prometheus
def test_qber_bell_rate_and_key_bits_equal_the_round_records(observed):
    run_dir, prom, summary = observed
    for user in ("alice", "bob"):
        rounds = _rounds(run_dir / user / "rounds.jsonl")
        assert len(rounds) == 3
        measured = [r for r in rounds if r.get("qber_z") is not None]
        qber = _last(prom, f'mdiqkd_qber_ratio{{node="{user}"}}')
        assert qber[f"basis=Z,node={user}"] == measured[-1]["qber_z"]
        assert qber[f"basis=X,node={user}"] == measured[-1]["qber_x"]
        bits = _last(prom, f'mdiqkd_secure_key_bits_total{{node="{user}"}}')
        assert bits[f"node={user}"] == sum(r["secure_bits"] for r in rounds) \
            == summary["secure_bits"] > 0
        last = _last(prom, f'mdiqkd_round_secure_key_bits{{node="{user}"}}')
        assert last[f"node={user}"] == rounds[-1]["secure_bits"]
    rounds = _rounds(run_dir / "alice" / "rounds.jsonl")
    rate = _last(prom, "mdiqkd_bell_success_rate_hertz")
    assert rate == {"node=charles": rounds[-1]["announced"] / rounds[-1]["emulated_seconds"]}
    peak = prom.query(f"max_over_time(mdiqkd_bell_success_rate_hertz[{WINDOW}])")
    assert float(peak[0]["value"][1]) == max(r["announced"] / r["emulated_seconds"]
                                             for r in rounds)
    successes = _last(prom, "mdiqkd_bell_successes_total")
    assert successes == {"node=charles": sum(r["announced"] for r in rounds)}


@pytest.mark.slow
@needs_prometheus
def test_relay_timing_and_visibility_are_what_the_link_and_the_records_make(observed):
    """The shipped link's Bob clock is 10 ps late and nothing jitters: every click Charles
    tags sits at the mid-point offset 5 ps on his grid, rms 0 (docs/metrics.md); the users'
    visibility bound is 1 − 2·e11_x_upper of their last round that bounded it."""
    run_dir, prom, _ = observed
    detectors = ("cH", "cV", "dH", "dV")
    assert _last(prom, "mdiqkd_relay_click_offset_seconds") == {
        f"detector={d},node=charles": 5e-12 for d in detectors}
    assert _last(prom, "mdiqkd_relay_click_jitter_seconds") == {
        f"detector={d},node=charles": 0.0 for d in detectors}
    for user in ("alice", "bob"):
        bounded = [r for r in _rounds(run_dir / user / "rounds.jsonl")
                   if r.get("e11_x_upper") is not None]
        visibility = _last(prom, f'mdiqkd_visibility_lower_ratio{{node="{user}"}}')
        assert visibility == {f"node={user}": 1 - 2 * bounded[-1]["e11_x_upper"]}


@pytest.mark.slow
@needs_prometheus
def test_every_metrics_json_entry_agrees_with_its_series(observed):
    run_dir, prom, _ = observed
    for node in ("alice", "bob", "charles", "nature"):
        data = json.loads((run_dir / node / "metrics.json").read_text())
        for key, value in data.items():
            series = metrics_json_series(key, value)
            if series is None:
                continue
            name, labels, expected = series
            selector = ",".join([f'node="{node}"', *(f'{k}="{v}"' for k, v in labels.items())])
            got = prom.query(f"last_over_time({name}{{{selector}}}[{WINDOW}])")
            assert len(got) == 1, (node, key, name, got)
            assert float(got[0]["value"][1]) == expected, (node, key)


@pytest.mark.slow
@needs_prometheus
def test_charles_exports_nothing_derived_from_the_users_settings(observed):
    _, prom, _ = observed
    series = _series(prom, '{node="charles"}')
    assert series
    # detector: his own detectors' click timing (the records' click times, docs/metrics.md)
    allowed_labels = {"__name__", "link", "node", "peer", "reason", "detector", "job",
                      "instance", "run",
                      "otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}
    declared = {n for n, s in METRICS.items() if "charles" in s.nodes}
    assert declared == charles_metric_names()
    for s in series:
        assert set(s) <= allowed_labels, s
        name = s["__name__"]
        # his own instruments, or the mirror of his own plain counters (records, frames)
        assert name in declared or name.startswith(("mdiqkd_records_", "mdiqkd_classical_",
                                                    "mdiqkd_rounds_announced",
                                                    "mdiqkd_unexpected_messages")), name
        assert s.get("reason") in (None, "AuthenticationError", "FrameFormatError",
                                   "ReplayError", "MessageDecodeError")
        assert s.get("detector") in (None, "cH", "cV", "dH", "dV")


@pytest.mark.slow
@needs_prometheus
def test_a_round_without_bell_successes_fires_the_page_alert(observed):
    run_dir, prom, _ = observed
    rounds = _rounds(run_dir / "alice" / "rounds.jsonl")
    assert [r["announced"] == 0 for r in rounds] == [False, True, False]
    fired = prom.query(f'max_over_time(ALERTS{{alertname="MdiqkdNoBellSuccesses", '
                       f'alertstate="firing", severity="page"}}[{WINDOW}])')
    assert fired and fired[0]["metric"]["link"] == "alice-bob"


def test_observe_refuses_a_directory_without_endpoints(tmp_path):
    with pytest.raises(ObserveError, match="no config.json"):
        write_prometheus_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"run": {"mailboxes": {}}}))
    with pytest.raises(ObserveError, match="no metrics endpoints"):
        write_prometheus_config(tmp_path)
    assert not (tmp_path / "prometheus").exists()


def test_the_written_configuration_scrapes_config_json_targets(tmp_path):
    address = f"{HOST}:{free_ports(1)[0]}"
    (tmp_path / "config.json").write_text(json.dumps({"run": {"metrics": {"alice": address}}}))
    config = yaml.safe_load(write_prometheus_config(tmp_path).read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [address]
    assert config["rule_files"] == [str(p) for p in rule_files()]


@pytest.mark.slow
@needs_prometheus
def test_every_dashboard_query_names_only_metrics_of_the_live_run(observed):
    """Every name a dashboard selects is in this run's Prometheus: scraped from a node, or
    recorded by the shipped rules from scraped series (or Prometheus's own ``up``/``ALERTS``)."""
    _, prom, _ = observed
    with urllib.request.urlopen(prom.url + "/api/v1/label/__name__/values", timeout=5) as r:
        live = set(json.loads(r.read())["data"])
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        names = set().union(*map(metric_names, queries(json.loads(path.read_text()))))
        assert names, path
        assert names <= live, (path.name, sorted(names - live))


def test_the_observe_command_writes_the_configuration_or_says_what_is_wrong(tmp_path,
                                                                            monkeypatch):
    from typer.testing import CliRunner

    from orchestration import observe
    from orchestration.cli import app

    runner = CliRunner()
    address = f"{HOST}:{free_ports(1)[0]}"
    (tmp_path / "config.json").write_text(json.dumps({"run": {"metrics": {"bob": address}}}))
    result = runner.invoke(app, ["observe", str(tmp_path), "--config-only",
                                 "--scrape-interval", "2s"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "2s"
    result = runner.invoke(app, ["observe", str(tmp_path), "--scrape-interval", "often"])
    assert result.exit_code == 2 and "not a Prometheus duration" in result.output
    result = runner.invoke(app, ["observe", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no config.json" in result.output
    monkeypatch.setattr(observe, "prometheus_binary", lambda: None)
    result = runner.invoke(app, ["observe", str(tmp_path)])
    assert result.exit_code == 1 and "apt-get install -y prometheus" in result.output


def test_run_refuses_an_otlp_metrics_endpoint_that_is_not_a_url(tmp_path):
    from typer.testing import CliRunner

    from orchestration.cli import app

    result = CliRunner().invoke(app, ["run", "--rounds", "1", "--out", str(tmp_path / "r"),
                                      "--otlp-metrics-endpoint", "ftp://127.0.0.1/x"])
    assert result.exit_code == 2 and "--otlp-metrics-endpoint" in result.output
    assert not (tmp_path / "r").exists()
