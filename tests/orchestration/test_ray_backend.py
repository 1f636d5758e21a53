"""The nodes as Ray actors (``orchestration.ray_launcher``).

The cluster tests start their own Ray (``ray.cluster_utils.Cluster``: a head that runs nothing
and three worker nodes of one CPU each, every raylet its own process on 127.0.0.1, in a private
temporary directory) and shut it down; they never join another cluster. The pure parts
(placement, endpoints, gathering) are tested without Ray.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.launchers import NODE_ORDER
from orchestration.ray_launcher import (
    RayLauncher,
    RayOptions,
    endpoint_count,
    extract_gathered,
    placement,
    spread_endpoints,
)
from orchestration.run import RunFailed, execute, prepare_run_dir
from tests.ray_cluster import private_cluster
from tests.short_rounds import short_round_overrides
from tests.stores import store_keys

# --- without Ray ---------------------------------------------------------------------------------


def test_site_resources_win_over_the_number_of_nodes():
    sites = {"CPU": 3.0, "alice": 1.0, "bob": 1.0, "charles": 1.0}
    assert placement(sites, alive_nodes=1) == "resources"
    assert placement({"CPU": 3.0, "alice": 1.0, "bob": 1.0}, alive_nodes=3) == "spread"
    assert placement({"CPU": 3.0}, alive_nodes=2) == "pack"


def _run_config() -> dict:
    return {"run_dir": "/x", "mailboxes": {n: f"tcp://127.0.0.1:{p}" for n, p in
                                           (("alice", 1), ("bob", 2), ("charles", 3))},
            "pulses": "tcp://127.0.0.1:4", "records": "tcp://127.0.0.1:5", "connect": {},
            "control": None, "metrics": {n: f"127.0.0.1:{10 + i}" for i, n in
                                         enumerate(("alice", "bob", "charles", "nature"))}}


def test_each_bound_endpoint_moves_to_its_binders_host():
    run = _run_config()
    hosts = {"alice": "10.0.0.1", "bob": "10.0.0.2", "charles": "10.0.0.3", "nature": "10.0.0.3"}
    counts = endpoint_count(run)
    assert counts == {"nature": 2, "charles": 3, "bob": 2, "alice": 2}
    ports = {n: [7000 + 10 * i + k for k in range(counts[n])] for i, n in enumerate(NODE_ORDER)}
    out = spread_endpoints(run, hosts, ports)
    assert out["mailboxes"] == {"alice": "tcp://10.0.0.1:7030", "bob": "tcp://10.0.0.2:7020",
                                "charles": "tcp://10.0.0.3:7011"}
    assert out["pulses"] == "tcp://10.0.0.3:7000" and out["records"] == "tcp://10.0.0.3:7010"
    assert out["metrics"]["nature"] == "10.0.0.3:7001" and out["metrics"]["alice"].startswith(
        "10.0.0.1:")
    assert run["pulses"] == "tcp://127.0.0.1:4"  # the input is left as it was


def test_on_one_host_only_the_ports_change():
    run = _run_config()
    ports = {n: [9000 + 10 * i + k for k in range(4)] for i, n in enumerate(NODE_ORDER)}
    out = spread_endpoints(run, dict.fromkeys(NODE_ORDER), ports)
    assert out["pulses"] == "tcp://127.0.0.1:9000" and out["records"] == "tcp://127.0.0.1:9010"
    assert out["metrics"]["bob"] == "127.0.0.1:9021"


def test_endpoints_the_control_plane_uses_stay_and_are_refused_across_hosts():
    run = {**_run_config(), "control": "tcp://127.0.0.1:9", "connect": {"bob": "tcp://x:8"}}
    assert endpoint_count(run) == {"nature": 2, "charles": 3, "bob": 1, "alice": 2}
    out = spread_endpoints(run, dict.fromkeys(NODE_ORDER), {n: [1, 2, 3] for n in NODE_ORDER})
    assert out["control"] == run["control"] and out["mailboxes"]["bob"] == "tcp://127.0.0.1:2"
    assert out["mailboxes"]["alice"] == "tcp://127.0.0.1:1"
    with pytest.raises(ValueError, match="--no-control"):
        spread_endpoints(run, dict.fromkeys(NODE_ORDER, "10.0.0.1"),
                         {n: [1] * 4 for n in NODE_ORDER})


def _tarball(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def test_a_gathered_file_outside_the_run_directory_is_refused(tmp_path):
    assert extract_gathered(_tarball("alice/metrics.json", b"{}"), tmp_path) == \
        ["alice/metrics.json"]
    assert (tmp_path / "alice" / "metrics.json").read_bytes() == b"{}"
    for bad in ("../escape", "/etc/passwd-copy"):
        with pytest.raises(ValueError, match="not a plain file in the run directory"):
            extract_gathered(_tarball(bad), tmp_path)
    with pytest.raises(ValueError, match="not a plain file"):
        extract_gathered(_tarball("alice/link", kind=tarfile.SYMTYPE), tmp_path)
    assert not (tmp_path.parent / "escape").exists()


# --- a private Ray, started by `mdiqkd run --backend ray` ---------------------------------------


def _private_ray_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("mdiqkd-ray-*"))


def _processes_naming(paths: set[Path]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if any(str(p).encode() in args for p in paths) and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


@pytest.mark.cluster
@pytest.mark.slow
def test_sigterm_stops_a_run_on_a_private_ray_in_order(tmp_path):
    """``mdiqkd run --backend ray``: its own Ray on 127.0.0.1; SIGTERM stops the actors in
    order (Ray's own SIGTERM handler would abort the command), the summary says so, the stores
    agree, and the private Ray is gone with its directory."""
    before = _private_ray_dirs()
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "run", "quickstart", "--rounds", "3",
         "--backend", "ray", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 150
    while not (out / "alice" / "rounds.jsonl").exists():  # mirrored once her first round is
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no round within 150 s"
        time.sleep(0.2)
    ours = _private_ray_dirs() - before
    assert len(ours) == 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["interrupted_by"] == "SIGTERM"
    assert store_keys(out / "alice" / "keys.sqlite") == store_keys(out / "bob" / "keys.sqlite")
    ray_json = json.loads((out / "orchestrator" / "ray.json").read_text())
    assert ray_json["placement"] == "pack" and ray_json["address"] is None
    assert {w["host"] for w in ray_json["nodes"].values()} == {"127.0.0.1"}
    for n in NODE_ORDER:
        assert "stopped by a stop request, closed" in (out / "logs" / f"{n}.log").read_text()
    deadline = time.monotonic() + 10
    while _processes_naming(ours):
        assert time.monotonic() < deadline, f"left running: {_processes_naming(ours)}"
        time.sleep(0.2)
    assert not any(p.exists() for p in ours)


# --- on a Ray cluster of three nodes on 127.0.0.1 -----------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """A private Ray: a head with no CPU (it places nothing) and three worker nodes of one CPU
    and a small object store each, all on 127.0.0.1; the test process is its driver."""
    with private_cluster() as c:
        yield c


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.cluster
@pytest.mark.slow
def test_the_nodes_run_on_three_ray_nodes_with_the_local_keys_and_fingerprint(cluster, tmp_path):
    scenario = load_scenario(DEFAULT_SCENARIO, {"rounds": 1})
    launcher = RayLauncher()
    on_ray = execute(scenario, prepare_run_dir(scenario, tmp_path / "ray"), launcher,
                     fingerprint=True)
    assert launcher.placement == "spread"
    nodes = {n: w["node_id"] for n, w in launcher.where.items()}
    assert len({nodes["alice"], nodes["bob"], nodes["charles"]}) == 3
    assert nodes["nature"] == nodes["charles"]
    assert cluster.head_node.node_id not in nodes.values()
    local = execute(scenario, prepare_run_dir(scenario, tmp_path / "local"), fingerprint=True)
    assert on_ray["keys_match"] is True and on_ray["secure_bits"] > 0
    assert on_ray["determinism_fingerprint"] == local["determinism_fingerprint"]
    ray_dir = tmp_path / "ray"
    assert store_keys(ray_dir / "alice" / "keys.sqlite") \
        == store_keys(ray_dir / "bob" / "keys.sqlite") \
        == store_keys(tmp_path / "local" / "alice" / "keys.sqlite")
    for n in NODE_ORDER:  # each node's outputs, gathered from its host through Ray
        assert (ray_dir / "traces" / f"{n}.jsonl").stat().st_size > 0
        assert json.loads((ray_dir / n / "metrics.json").read_text())
    assert "stopped by a stop request" in (ray_dir / "logs" / "nature.log").read_text()
    assert not any(_alive(w["pid"]) for w in launcher.where.values())
    import ray

    assert ray.util.placement_group_table(launcher._group)["state"] == "REMOVED"


@pytest.mark.cluster
@pytest.mark.slow
def test_a_killed_node_actor_fails_the_run_naming_it_within_seconds(cluster, tmp_path):
    """On three more Ray nodes, each advertising one site's resource (as ``ray start
    --resources '{"alice": 1}'`` does): each node runs at its site, and nature with Charles.
    Bob's actor killed mid-run fails the run within seconds, naming him; no node's process
    is left."""
    import ray

    sites = {}
    for site in ("alice", "bob", "charles"):
        sites[site] = cluster.add_node(**cluster.common_node_args, num_cpus=1,
                                       resources={site: 1}).node_id
    cluster.wait_for_nodes()
    scenario = load_scenario(DEFAULT_SCENARIO, {"rounds": 3})
    launcher = RayLauncher()
    killed_at: list[float] = []

    def kill_bob() -> None:  # once the users have started their first round
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "bob" not in launcher.actors:
            time.sleep(0.1)
        time.sleep(8)
        ray.kill(launcher.actors["bob"], no_restart=True)
        killed_at.append(time.monotonic())

    killer = threading.Thread(target=kill_bob, daemon=True)
    killer.start()
    with pytest.raises(RunFailed, match=r"node bob exited with code -9: its Ray actor died"):
        execute(scenario, prepare_run_dir(scenario, tmp_path / "run"), launcher, timeout_s=180)
    assert launcher.placement == "resources"
    assert {n: w["node_id"] for n, w in launcher.where.items()} == {
        "alice": sites["alice"], "bob": sites["bob"], "charles": sites["charles"],
        "nature": sites["charles"]}
    failed_after = time.monotonic() - killed_at[0]
    assert failed_after < 15, f"the run failed {failed_after:.1f} s after bob was killed"
    deadline = time.monotonic() + 10
    while any(_alive(w["pid"]) for w in launcher.where.values()):
        assert time.monotonic() < deadline, "a node's worker process outlived the run"
        time.sleep(0.2)
    for n, w in launcher.where.items():  # the others cleaned up; bob's stays on its host
        assert Path(w["dir"]).exists() == (n == "bob")
    shutil.rmtree(launcher.where["bob"]["dir"])


@pytest.mark.cluster
@pytest.mark.slow
def test_a_killed_node_actor_is_recreated_on_its_host_and_the_link_resumes(cluster, tmp_path):
    """With ``runtime.restart``, Bob's actor killed after the first round is re-created on the
    same Ray node, in his directory there (ledger, progress); the link resumes at a round no
    user emitted, keys flow again, and the two stores hold the same keys."""
    import ray

    scenario = load_scenario(DEFAULT_SCENARIO, {
        **short_round_overrides(), "rounds": 6,
        "runtime": {"restart": True, "max_restarts": 1, "message_timeout": "20s"}})
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    launcher = RayLauncher()
    before: dict[str, str] = {}

    def kill_bob() -> None:  # once Alice has recorded a round
        deadline = time.monotonic() + 120
        rounds = run_dir / "alice" / "rounds.jsonl"
        while time.monotonic() < deadline and not (rounds.exists() and rounds.read_text()):
            time.sleep(0.1)
        before.update(node=launcher.where["bob"]["node_id"], pid=launcher.where["bob"]["pid"])
        ray.kill(launcher.actors["bob"], no_restart=True)

    killer = threading.Thread(target=kill_bob, daemon=True)
    killer.start()
    summary = execute(scenario, run_dir, launcher, timeout_s=240)
    killer.join()
    [restart] = summary["restarts"]
    assert restart["node"] == "bob" and "its Ray actor died" in restart["cause"]
    assert launcher.where["bob"]["node_id"] == before["node"]  # back on its own host
    assert launcher.where["bob"]["pid"] != before["pid"]  # in a new actor
    final = {r["round"]: r for r in _jsonl(run_dir / "alice" / "rounds.jsonl")}
    assert sorted(final) == list(range(6))
    resumed = restart["resume_round"]
    assert 0 < resumed < 6
    assert all(final[r]["secure_bits"] > 0 for r in range(resumed, 6))  # keys flow again
    assert summary["keys_match"] is True
    assert store_keys(run_dir / "alice" / "keys.sqlite") \
        == store_keys(run_dir / "bob" / "keys.sqlite")
    deadline = time.monotonic() + 10
    while any(_alive(w["pid"]) for w in launcher.where.values()):
        assert time.monotonic() < deadline, "a node's worker process outlived the run"
        time.sleep(0.2)
    assert not any(Path(w["dir"]).exists() for w in launcher.where.values())


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_an_unknown_backend_is_refused_before_anything_runs(tmp_path):
    from typer.testing import CliRunner

    from orchestration.cli import app

    result = CliRunner().invoke(app, ["run", "--backend", "slurm", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "--backend: 'slurm' is not one of local, ray" in result.output
    assert not (tmp_path / "r").exists()


def test_an_unreachable_cluster_fails_the_run_naming_the_address(tmp_path, monkeypatch):
    """Nothing listens on the address: a clear RunFailed, not Ray's traceback (a port of
    127.0.0.1 just closed; Ray gives up on it after its own retries)."""
    pytest.importorskip("ray")
    import ray

    from orchestration.runconfig import free_ports

    class Refused(ConnectionError):
        pass

    def unreachable(*args, **kwargs):  # what ray.init raises, without its minute of retries
        raise Refused(f"Failed to connect to Ray cluster at {kwargs.get('address')}")

    monkeypatch.setattr(ray, "init", unreachable)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # not this module's cluster
    address = f"127.0.0.1:{free_ports(1)[0]}"
    scenario = load_scenario(DEFAULT_SCENARIO, {"rounds": 1})
    with pytest.raises(RunFailed, match=rf"Ray backend \({address}\): Refused: Failed to "
                                        rf"connect to Ray cluster at {address}"):
        execute(scenario, prepare_run_dir(scenario, tmp_path / "run"),
                RayLauncher(RayOptions(address=address)))
