"""A link across three hosts: three network namespaces joined by a bridge, a Ray head in one and
a Ray worker in each of the others, started with ``ray start`` as README "Cluster" says, and
``mdiqkd run --ray-address`` from the head's host.

Every address is inside namespaces the test makes (10.213.77.0/24 on a bridge in a fourth
namespace): nothing touches the machine's own network. The hosts share this machine's file
system, so Alice's and Bob's hosts run in their own mount namespaces in which the driver's
directory (the run directory's parent) is hidden under an empty tmpfs: whatever reaches the run
directory from them came through Ray. Needs root and ``ip netns`` (CAP_NET_ADMIN, CAP_SYS_ADMIN);
elsewhere the test skips, saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from orchestration.launchers import NODE_ORDER
from orchestration.ray_launcher import RAY_ENV
from tests.stores import store_keys

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.213.77"
#: host → (its address's last byte, the site resource it advertises); the head is Charles's
HOSTS = {"h1": (1, "charles"), "h2": (2, "alice"), "h3": (3, "bob")}
SITE_HOST = {site: h for h, (_, site) in HOSTS.items()}
GCS_PORT = 6379  # each namespace has its own ports: no clash with anything on the machine
ROUNDS = 1


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


def _why_not() -> str | None:
    """Why this machine cannot host the test, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "needs root (ip netns add, mount)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command"
    return None


def _pids(namespaces: list[str]) -> list[int]:
    pids: list[int] = []
    for ns in namespaces:
        pids += [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
    return pids


def _clear(namespaces: list[str]) -> None:
    """End every process in these namespaces (SIGTERM, then SIGKILL), then delete them: their
    veth pairs and bridge go with them."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for pid in _pids(namespaces):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _pids(namespaces) and time.monotonic() < deadline:
            time.sleep(0.2)
    for ns in reversed(namespaces):
        _ip("netns", "del", ns, check=False)


class Hosts:
    """Three namespaces h1..h3 (each ``eth0`` with its address, ``lo`` up) on a bridge in a
    fourth; their names carry this process's id. ``close`` kills every process left in them
    and deletes them (the veth pairs go with them)."""

    def __init__(self) -> None:
        tag = f"mdq{os.getpid()}"
        self.bridge = f"{tag}-br"
        self.ns = {h: f"{tag}-{h}" for h in HOSTS}
        self.made: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="mdq-ns-", dir="/tmp"))  # short: Ray's sockets

    def address(self, host: str) -> str:
        return f"{SUBNET}.{HOSTS[host][0]}"

    def make(self) -> None:
        made = _ip("netns", "add", self.bridge, check=False)
        if made.returncode != 0:
            pytest.skip(f"`ip netns add` failed: {made.stderr.strip()}")
        self.made.append(self.bridge)
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        for i, (host, ns) in enumerate(self.ns.items(), start=1):
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", self.bridge, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.bridge, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            for sub in ("home", "tmp", "ray"):
                (self.dir / host / sub).mkdir(parents=True)

    def close(self) -> None:
        _clear(self.made)
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, host: str) -> dict[str, str]:
        """A host's environment: its own HOME (where Ray keeps its token) and TMPDIR (where
        each node program keeps its directory), this tree's code, token authentication; never
        another cluster's address, and not the private Ray's 127.0.0.1 setting."""
        env = {k: v for k, v in os.environ.items() if k not in (*RAY_ENV, "RAY_ADDRESS")}
        env.update(HOME=str(self.dir / host / "home"), TMPDIR=str(self.dir / host / "tmp"),
                   RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        return env

    def run(self, host: str, args: list[str], hide: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``args`` on ``host``; with ``hide``, in a mount namespace of its own in which that
        directory is an empty tmpfs (the processes it starts stay there)."""
        cmd = ["ip", "netns", "exec", self.ns[host]]
        if hide is not None:
            cmd += ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount -t tmpfs -o size=1m,mode=700 mdq-hidden "$0" && exec "$@"', str(hide)]
        try:
            return subprocess.run(cmd + args, capture_output=True, text=True,
                                  env=self.env(host), stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
            pytest.fail(f"{' '.join(args[:6])} … on {host} still running after {timeout:.0f} s:"
                        f"\n{(err or '')[-4000:]}")


def _stale_namespaces() -> list[str]:
    """Namespaces an earlier run of this test left (its process killed before its finalizer
    ran): named as ``Hosts`` names them, after a process that is gone."""
    out = _ip("netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    stale = []
    for name in names:
        m = re.fullmatch(r"mdq(\d+)-(br|h1|h2|h3)", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            stale.append(name)
    return stale


@pytest.fixture
def hosts():
    why = _why_not()
    if why is not None:
        pytest.skip(why)
    _clear(_stale_namespaces())  # an earlier run's, killed before its finalizer ran
    h = Hosts()
    try:
        h.make()
        yield h
    finally:
        h.close()


def _ray_start(hosts: Hosts, host: str, hide: Path | None, *args: str) -> None:
    site = HOSTS[host][1]
    done = hosts.run(host, [
        sys.executable, "-m", "ray.scripts.scripts", "start", *args,
        "--node-ip-address", hosts.address(host), "--resources", json.dumps({site: 1}),
        "--num-cpus", "1", "--object-store-memory", str(80 << 20),
        "--temp-dir", str(hosts.dir / host / "ray"), "--disable-usage-stats"], hide=hide)
    assert done.returncode == 0, f"ray start on {host}:\n{done.stdout}\n{done.stderr}"


def _mdiqkd(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "orchestration.cli", "run", "quickstart", "--rounds",
            str(ROUNDS), "--fingerprint", "--no-control", "--json", "--out", str(out), *args]


@pytest.fixture
def local_run(tmp_path):
    """The same scenario and seed with local processes on 127.0.0.1, run meanwhile (for the
    fingerprint), on this machine's own network."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(_mdiqkd(tmp_path / "local"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    try:
        yield proc, tmp_path / "local"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.cluster
@pytest.mark.slow
def test_a_link_runs_across_three_hosts_in_network_namespaces(hosts, local_run, tmp_path):
    t0 = time.monotonic()
    driver = tmp_path / "driver"  # the driver's files; hidden from Alice's and Bob's hosts
    driver.mkdir()
    head = f"{hosts.address('h1')}:{GCS_PORT}"
    made = hosts.run("h1", [sys.executable, "-m", "ray.scripts.scripts", "get-auth-token",
                            "--generate"])
    assert made.returncode == 0, made.stderr
    _ray_start(hosts, "h1", None, "--head", "--port", str(GCS_PORT),
               "--include-dashboard", "false")
    token = hosts.dir / "h1" / "home" / ".ray" / "auth_token"
    for host in ("h2", "h3"):  # the token copied to each host, as README "Cluster" says
        (hosts.dir / host / "home" / ".ray").mkdir()
        shutil.copy2(token, hosts.dir / host / "home" / ".ray" / "auth_token")
        _ray_start(hosts, host, driver, "--address", head)

    started = time.monotonic()
    print(f"\nthree Ray hosts up in {started - t0:.1f} s")
    done = hosts.run("h1", _mdiqkd(driver / "run", "--ray-address", head), timeout=180)
    took = time.monotonic() - started
    assert done.returncode == 0, f"mdiqkd run across the namespaces:\n{done.stderr[-4000:]}"
    summary = json.loads(done.stdout)
    assert summary["keys_match"] is True and summary["secure_bits"] > 0
    assert summary["rounds"] == ROUNDS and summary["aborted"] == 0

    run = driver / "run"
    ray_json = json.loads((run / "orchestrator" / "ray.json").read_text())
    assert ray_json["placement"] == "resources" and ray_json["address"] == head
    where = {n: w["host"] for n, w in ray_json["nodes"].items()}
    assert where == {"alice": hosts.address("h2"), "bob": hosts.address("h3"),
                     "charles": hosts.address("h1"), "nature": hosts.address("h1")}
    # each endpoint a node binds is on its own host's address, so every peer reached it across
    # the bridge
    endpoints = json.loads((run / "config.json").read_text())["run"]
    for node in ("alice", "bob", "charles"):
        assert endpoints["mailboxes"][node].startswith(f"tcp://{where[node]}:")
    assert endpoints["pulses"].startswith(f"tcp://{where['nature']}:")
    assert endpoints["records"].startswith(f"tcp://{where['charles']}:")
    for node in NODE_ORDER:
        assert endpoints["metrics"][node].startswith(f"{where[node]}:")
    # each node's outputs, gathered through Ray from hosts that cannot see the run directory
    for node in NODE_ORDER:
        assert (run / "traces" / f"{node}.jsonl").stat().st_size > 0
        assert json.loads((run / node / "metrics.json").read_text())
        assert (run / "logs" / f"{node}.log").is_file()
    assert "stopped by a stop request" in (run / "logs" / "nature.log").read_text()
    alice_keys = store_keys(run / "alice" / "keys.sqlite")
    assert alice_keys == store_keys(run / "bob" / "keys.sqlite") != {}
    for host in ("h2", "h3"):  # the node programs removed their directories on their hosts
        assert not list((hosts.dir / host / "tmp").glob("mdiqkd-*"))
    # and the run directory was out of Alice's and Bob's hosts' sight: each process there sees
    # the driver's directory empty (``/proc/PID/root`` resolves in that process's mounts)
    assert (run / "summary.json").is_file()
    for host in ("h2", "h3"):
        checked = 0
        for pid in (int(p) for p in _ip("netns", "pids", hosts.ns[host]).stdout.split()):
            try:
                seen = sorted(os.listdir(f"/proc/{pid}/root{driver}"))
            except (FileNotFoundError, ProcessLookupError):
                continue  # a process that ended meanwhile
            assert seen == [], f"{host}: pid {pid} sees {driver}: {seen}"
            checked += 1
        assert checked, f"no Ray process left on {host} to look through"

    # the same scenario and seed with local processes: the same keys and fingerprint
    local, local_dir = local_run
    out, err = local.communicate(timeout=300)
    assert local.returncode == 0, err[-4000:]
    assert summary["determinism_fingerprint"] == json.loads(out)["determinism_fingerprint"]
    assert alice_keys == store_keys(local_dir / "alice" / "keys.sqlite")
    print(f"the run across the namespaces took {took:.1f} s; the test "
          f"{time.monotonic() - t0:.1f} s")


def test_the_test_skips_saying_why_where_the_machine_cannot_host_it(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert _why_not() == "needs root (ip netns add, mount)"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "unshare" else "/x")
    assert _why_not() == "no `unshare` command"
    monkeypatch.setattr(shutil, "which", lambda tool: "/x")
    assert _why_not() is None
