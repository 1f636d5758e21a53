"""Networks of many links (``orchestration.network``, ``orchestration.network_run``).

The format, the seeds, the totals and the placement plan are tested without processes; one test
runs the shipped four-link network on a private three-node Ray cluster (127.0.0.1) through
``mdiqkd run`` and checks each link's figures against the link run alone, locally, with the same
seed.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import orchestration.network_run as network_run
from orchestration.cli import app
from orchestration.config import DEFAULT_SCENARIO, ScenarioError, load_scenario, shipped_scenarios
from orchestration.network import (
    link_seed,
    load_network,
    resolve_any,
    shipped_networks,
)
from orchestration.network_run import (
    colocated_links,
    network_totals,
    plan_sites,
    site_weights,
)
from orchestration.run import RunFailed, execute, prepare_run_dir
from tests.ray_cluster import private_cluster
from tests.short_rounds import short_round_overrides, write_short_round_scenario

runner = CliRunner()


def _network(tmp_path: Path, links: list[dict], **top) -> Path:
    write_short_round_scenario(tmp_path)
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump({"title": "t", "seed": 3, **top, "links": links},
                                   sort_keys=False))
    return path


def _error(path: Path) -> str:
    with pytest.raises(ScenarioError) as e:
        load_network(path)
    return str(e.value)


# --- the format ----------------------------------------------------------------------------------


def test_the_shipped_network_loads_and_single_link_tooling_skips_it():
    assert "network_metro" in shipped_networks()
    assert "network_metro" not in shipped_scenarios()  # each of these loads as one link
    net = load_network(resolve_any("network_metro"))
    assert [link.name for link in net.links] == ["hub-a", "hub-b", "east", "west"]
    assert net.links[0].sites["charles"] == net.links[1].sites["charles"] == "hub"
    assert net.links[2].sites == {"alice": "east-alice", "bob": "east-bob",
                                  "charles": "east-charles"}
    short = load_scenario(DEFAULT_SCENARIO, short_round_overrides())
    for link in net.links:  # the quick start with short rounds, each with its own seed
        assert link.scenario.seed == link.seed == link_seed(7, link.name)
        assert link.scenario.model_copy(update={"seed": 0, "rounds": short.rounds}) == \
            short.model_copy(update={"seed": 0})


def test_link_seeds_derive_from_the_network_seed_and_name_unless_given(tmp_path):
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"},
                               {"name": "b", "scenario": "short-rounds.yaml"},
                               {"name": "c", "scenario": "short-rounds.yaml", "seed": 99}])
    a, b, c = load_network(path).links
    assert a.seed != b.seed and c.seed == c.scenario.seed == 99
    assert a.seed == link_seed(3, "a") != link_seed(4, "a")
    again = load_network(path, {"seed": 4}).links[0]  # `mdiqkd run --seed`: the network's
    assert again.seed == link_seed(4, "a") == again.scenario.seed
    rounds = load_network(path, link_overrides={"rounds": 5}).links
    assert {link.scenario.rounds for link in rounds} == {5}


def test_errors_name_the_file_line_and_field_with_a_close_name(tmp_path):
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"}], titel="x")
    assert _error(path) == "net.yaml:3: titel: unknown field 'titel' (did you mean 'title'?)"
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"},
                               {"name": "b", "scenrio": "short-rounds.yaml"}])
    assert "net.yaml:7: links.1.scenrio: unknown field 'scenrio' (did you mean 'scenario'?)" \
        in _error(path)
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"},
                               {"name": "a", "scenario": "short-rounds.yaml"}])
    assert _error(path) == ("net.yaml:6: links.1.name: link name 'a' is used twice (each link "
                            "has its own run sub-directory)")
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml", "seed": True}])
    assert _error(path) == "net.yaml:6: links.0.seed: must be a number, got true"
    path = _network(tmp_path, [{"name": "../up", "scenario": "short-rounds.yaml"}])
    assert _error(path).startswith("net.yaml:4: links.0.name: String should match pattern")


def test_a_bad_override_is_reported_where_the_network_file_writes_it(tmp_path):
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"},
                               {"name": "b", "scenario": "short-rounds.yaml",
                                "overrides": {"round_frame": 300, "rounds": 0}}])
    message = _error(path)
    assert "net.yaml:9: links.1.overrides.round_frame: unknown field 'round_frame' (did you " \
           "mean 'round_frames'?)" in message
    assert "net.yaml:10: links.1.overrides.rounds: Input should be greater than 0" in message
    assert message.endswith("(link b)")
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml",
                                "overrides": {"seed": 1}}])
    assert _error(path) == "net.yaml:7: links.0.overrides.seed: give a link's seed as " \
        "links.N.seed"


def test_a_bad_link_scenario_is_reported_in_its_own_file(tmp_path):
    path = _network(tmp_path, [{"name": "a", "scenario": "bad.yaml"}])
    (tmp_path / "bad.yaml").write_text("title: x\nrounds: -1\n")
    message = _error(path)
    assert "bad.yaml:2: rounds: Input should be greater than 0" in message
    assert "bad.yaml:1: round_frames: Field required" in message and message.endswith("(link a)")
    path = _network(tmp_path, [{"name": "a", "scenario": "nosuch"}])
    assert _error(path).startswith("net.yaml:5: links.0.scenario: 'nosuch' is neither a file "
                                   "beside the network file nor a shipped scenario")
    (tmp_path / "inner.yaml").write_text((tmp_path / "net.yaml").read_text())
    path = _network(tmp_path, [{"name": "a", "scenario": "inner.yaml"}])
    assert _error(path) == "net.yaml:5: links.0.scenario: inner.yaml is a network, not a " \
        "link scenario"


def test_scenario_validate_takes_network_files(tmp_path):
    good = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"}])
    result = runner.invoke(app, ["scenario", "validate", str(good), "network_metro"])
    assert result.exit_code == 0, result.output
    assert f"{good}: ok" in result.output and "network_metro: ok" in result.output
    (tmp_path / "bad.yaml").write_text("title: t\nlinks:\n  - {name: a, scenario: x, sites: "
                                       "{relay: r}}\n")
    result = runner.invoke(app, ["scenario", "validate", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'bad.yaml'}:3: links.0.sites.relay: unknown field 'relay'" \
        in result.output
    shown = runner.invoke(app, ["scenario", "show", "network_metro"])
    assert shown.exit_code == 0 and "links:" in shown.stdout
    rows = {r["name"]: r for r in json.loads(runner.invoke(
        app, ["scenario", "list", "--json"]).stdout)["scenarios"]}
    assert rows["network_metro"]["kind"] == "network" and rows["network_metro"]["links"] == 4
    assert rows["quickstart"]["links"] == 1


# --- totals and placement ------------------------------------------------------------------------


def _record(name, status, bits, rate, rounds, aborted, z, keys=True):
    return {"name": name, "status": status, "secure_bits": bits, "key_rate_bps_emulated": rate,
            "rounds": rounds, "aborted": aborted, "qber": {"Z": z, "X": None if z is None
                                                           else 2 * z}, "keys_match": keys}


def test_network_totals_add_the_links_and_say_which_failed():
    links = [_record("a", "completed", 1000, 10.0, 3, 1, 0.01),
             _record("b", "completed", 500, 5.5, 2, 0, 0.03),
             _record("c", "failed", None, None, None, None, None, None)]
    t = network_totals(links, wall_seconds=4.0)
    assert (t["links"], t["completed"], t["failed"], t["interrupted"]) == (3, 2, 1, 0)
    assert (t["rounds"], t["aborted"], t["secure_bits"]) == (5, 1, 1500)
    assert t["key_rate_bps_emulated"] == 15.5 and t["secure_bits_per_wall_second"] == 375.0
    assert t["qber_max"] == {"Z": 0.03, "X": 0.06} and t["keys_match"] is False
    assert network_totals(links[:2], 0.0)["keys_match"] is True
    assert network_totals(links[:2], 0.0)["secure_bits_per_wall_second"] is None


def test_sites_shared_by_links_go_together_and_each_link_spreads():
    net = load_network(resolve_any("network_metro"))
    weights = site_weights(net)
    assert weights["hub"] == 4 and weights["east-charles"] == 2 and weights["hospital"] == 1
    group = plan_sites(net, 3)
    for link in net.links:  # Alice, Bob and Charles of every link in three groups (nodes)
        assert len({group[s] for s in link.sites.values()}) == 3
    loads = [sum(w for s, w in weights.items() if group[s] == g) for g in range(3)]
    assert sorted(loads) == [5, 5, 6] and colocated_links(net, group) == []
    one = plan_sites(net, 1)
    assert set(one.values()) == {0}
    assert colocated_links(net, one) == [link.name for link in net.links]
    two = plan_sites(net, 2)  # too few nodes: a link's sites share one, and that is said
    assert set(colocated_links(net, two)) == {link.name for link in net.links}


def test_a_failed_link_fails_the_command_naming_it_and_the_others_still_count(tmp_path,
                                                                            monkeypatch):
    path = _network(tmp_path, [{"name": "ok", "scenario": "short-rounds.yaml"},
                               {"name": "broken", "scenario": "short-rounds.yaml"}])

    def fake(scenario, run_dir, launcher, on_progress, fingerprint, stop_requested):
        assert launcher is None and fingerprint and stop_requested() is None
        if run_dir.name == "broken":
            raise RunFailed("node bob exited with code 1: boom")
        return {"rounds": 2, "aborted": 0, "secure_bits": 7, "key_rate_bps_emulated": 1.0,
                "qber": {"Z": 0.01, "X": 0.2}, "keys_match": True, "interrupted": False,
                "determinism_fingerprint": "f", "abort_reasons": [], "emulated_seconds": 7.0,
                "wall_seconds": 1.0}

    monkeypatch.setattr(network_run, "execute", fake)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "link broken failed: node bob exited with code 1: boom" in result.output
    out = json.loads((tmp_path / "run" / "network.json").read_text())
    assert [(r["name"], r["status"]) for r in out["links"]] == [("ok", "completed"),
                                                                ("broken", "failed")]
    assert out["totals"]["secure_bits"] == 7 and out["totals"]["failed"] == 1
    assert (tmp_path / "run" / "links" / "broken" / "config.json").is_file()
    again = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert again.exit_code == 2 and "is not empty" in again.output


# --- on a three-node Ray cluster ----------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.slow
def test_a_four_link_network_on_three_ray_nodes_matches_each_link_run_alone(tmp_path):
    """`mdiqkd run network_metro --backend ray` on a private cluster of three worker nodes (two
    logical CPUs each): one progress line per link; the hub's two user pairs have their relays
    on one node, every link its Alice, Bob and Charles on three; each link's figures in
    network.json are those of the same link run alone, locally, with the same seed."""
    with private_cluster(workers=3, worker_cpus=2) as cluster:
        import ray

        result = runner.invoke(app, ["run", "network_metro", "--rounds", "1", "--backend",
                                     "ray", "--out", str(tmp_path / "net")])
        workers = {n["NodeID"] for n in ray.nodes() if n["Alive"]} - {
            cluster.head_node.node_id}
    assert result.exit_code == 0, result.output
    for name in ("hub-a", "hub-b", "east", "west"):  # the progress lines, as left at the end
        assert any(line.startswith(name) and "1/1 rounds" in line
                   for line in result.output.splitlines()), result.output
    out = json.loads((tmp_path / "net" / "network.json").read_text())
    assert out["backend"] == "ray" and out["placement"]["mode"] == "spread"
    assert len(out["placement"]["bundles"]) == 3 and out["placement"]["colocated_links"] == []
    links = {r["name"]: r for r in out["links"]}
    nodes = {name: r["ray_nodes"] for name, r in links.items()}
    assert nodes["hub-a"]["charles"] == nodes["hub-b"]["charles"] == nodes["hub-a"]["nature"]
    for n in nodes.values():
        assert len({n["alice"], n["bob"], n["charles"]}) == 3 and n["nature"] == n["charles"]
    assert {x for n in nodes.values() for x in n.values()} == workers

    def alone(name: str) -> dict:
        scenario = load_scenario(DEFAULT_SCENARIO, {**short_round_overrides(), "rounds": 1,
                                                    "seed": link_seed(7, name)})
        return execute(scenario, prepare_run_dir(scenario, tmp_path / "alone" / name),
                       fingerprint=True)

    with ThreadPoolExecutor(4) as pool:
        runs = dict(zip(links, pool.map(alone, links), strict=True))
    for name, r in links.items():
        s = runs[name]
        assert r["status"] == "completed" and r["keys_match"] is True and r["secure_bits"] > 0
        assert r["seed"] == link_seed(7, name)
        assert r["determinism_fingerprint"] == s["determinism_fingerprint"]
        for k in ("rounds", "aborted", "secure_bits", "key_rate_bps_emulated", "qber",
                  "emulated_seconds"):
            assert r[k] == s[k], (name, k)
        own = json.loads((tmp_path / "net" / "links" / name / "summary.json").read_text())
        assert own["determinism_fingerprint"] == r["determinism_fingerprint"]
    assert len({r["determinism_fingerprint"] for r in links.values()}) == 4
    t = out["totals"]
    assert t["secure_bits"] == sum(s["secure_bits"] for s in runs.values())
    assert t["completed"] == 4 and t["keys_match"] is True


def test_a_stop_signal_stops_every_link_in_order_and_the_command_says_so(tmp_path,
                                                                        monkeypatch):
    """SIGTERM reaches the command (main thread) while the links run in threads: each link's
    ``execute`` is asked to stop, and the command exits 128 + 15."""
    import os
    import signal

    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"},
                               {"name": "b", "scenario": "short-rounds.yaml"}])
    asked = []

    def fake(scenario, run_dir, launcher, on_progress, fingerprint, stop_requested):
        if run_dir.name == "a":
            os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while stop_requested() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        asked.append((run_dir.name, stop_requested()))
        return {"rounds": 0, "aborted": 0, "secure_bits": 0, "key_rate_bps_emulated": 0.0,
                "qber": {"Z": None, "X": None}, "keys_match": False, "interrupted": True,
                "interrupted_by": stop_requested(), "abort_reasons": [],
                "emulated_seconds": 0.0, "wall_seconds": 1.0}

    monkeypatch.setattr(network_run, "execute", fake)
    before = signal.getsignal(signal.SIGTERM)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert sorted(asked) == [("a", "SIGTERM"), ("b", "SIGTERM")]
    assert "interrupted (SIGTERM): every link stopped in order" in result.output
    out = json.loads((tmp_path / "run" / "network.json").read_text())
    assert out["interrupted_by"] == "SIGTERM" and out["totals"]["interrupted"] == 2
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is put back


def test_a_stop_request_interrupts_the_watch_of_one_run(tmp_path):
    """``execute(stop_requested=...)``: the run loop stops as on that signal."""
    from orchestration.run import RunInterrupted, _watch

    class Running:
        def poll(self):
            return dict.fromkeys(("alice", "bob", "charles", "nature"))

    scenario = load_scenario(DEFAULT_SCENARIO)
    with pytest.raises(RunInterrupted) as e:
        _watch(scenario, tmp_path, Running(), None, 60.0, time.monotonic(), lambda: "SIGINT")
    assert e.value.signal_name == "SIGINT"


# --- found by a hostile review ----------------------------------------------------------------


def _fake_summary(interrupted: str | None = None) -> dict:
    return {"rounds": 2, "aborted": 0, "secure_bits": 7, "key_rate_bps_emulated": 1.0,
            "qber": {"Z": 0.01, "X": 0.2}, "keys_match": True,
            "interrupted": interrupted is not None, "interrupted_by": interrupted,
            "determinism_fingerprint": "f", "abort_reasons": [], "emulated_seconds": 7.0,
            "wall_seconds": 1.0}


def test_a_network_refuses_an_invalid_otlp_endpoint_as_a_single_run_does(tmp_path,
                                                                       monkeypatch):
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"}])
    monkeypatch.setattr(network_run, "execute", lambda *a, **k: _fake_summary())
    for option in ("--otlp-endpoint", "--otlp-metrics-endpoint"):
        result = runner.invoke(app, ["run", str(path), option, "ftp://x",
                                     "--out", str(tmp_path / option)])
        assert result.exit_code == 2, result.output
        assert f"{option}: 'ftp://x'" in result.output
        assert not (tmp_path / option).exists()


def test_a_link_whose_hypothesis_deviated_makes_the_network_exit_3_naming_it(tmp_path,
                                                                            monkeypatch):
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"},
                               {"name": "b", "scenario": "short-rounds.yaml"}])

    def fake(scenario, run_dir, *args, **kwargs):  # link a's game day deviates, with fail_fast
        deviated = run_dir.name == "a"
        (run_dir / "journal.json").write_text(json.dumps({"deviated": deviated}))
        return _fake_summary("fail_fast" if deviated else None)

    monkeypatch.setattr(network_run, "execute", fake)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 3, result.output
    assert "link a: the steady-state hypothesis failed" in result.output
    assert "link b:" not in result.output
    out = json.loads((tmp_path / "run" / "network.json").read_text())
    links = {r["name"]: r for r in out["links"]}
    assert links["a"]["deviated"] is True and links["a"]["interrupted_by"] == "fail_fast"
    assert links["b"]["deviated"] is False and out["totals"]["deviated"] == 1


def test_each_link_labels_its_metrics_with_its_own_name(tmp_path, monkeypatch):
    path = _network(tmp_path, [{"name": "a", "scenario": "short-rounds.yaml"},
                               {"name": "b", "scenario": "short-rounds.yaml"}])
    monkeypatch.setattr(network_run, "execute", lambda *a, **k: _fake_summary())
    assert runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")]).exit_code == 0
    for name in ("a", "b"):
        config = json.loads((tmp_path / "run" / "links" / name / "config.json").read_text())
        assert config["run"]["link"] == name


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_a_link_scenario_outside_the_network_directory_is_refused_unread(tmp_path, where):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.yaml").write_text('token: "abc-SECRET\n')  # not even valid YAML
    inner = tmp_path / "net"
    inner.mkdir()
    ref = str(outside / "x.yaml") if where == "absolute" else "../elsewhere/x.yaml"
    path = _network(inner, [{"name": "a", "scenario": ref}])
    result = runner.invoke(app, ["scenario", "validate", str(path)])
    assert result.exit_code == 1
    assert "abc-SECRET" not in result.output
    assert "links.0.scenario" in result.output and "outside the network file's directory" \
        in result.output
