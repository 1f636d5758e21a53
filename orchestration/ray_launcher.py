"""``RayLauncher``: the four node programs as Ray actors (``mdiqkd run --backend ray``).

Ray places and supervises the node programs; ZeroMQ stays the data plane between them. Each node
(nature, Charles, Bob, Alice) is one actor in its own worker process, running
``orchestration.node_main.run_node`` in a thread with a stop flag, so the actor stays responsive
to the launcher's calls (state, stop, gather) while the node runs.

Nothing assumes a file system shared with the driver: the driver sends each actor the public
``config.json`` and that node's own ``secrets.json`` (through Ray), the actor writes them into a
private directory on its host, the node writes its outputs there (traces, metrics, logs, rounds,
key store), and when the run ends the driver gathers each node's directory back into the run
directory as a tarball returned by the actor (secrets left out). While the run goes, Alice's
``rounds.jsonl`` is mirrored into the run directory for the progress line and ``fail_fast``.

Placement (``placement``): custom resources ``alice``, ``bob`` and ``charles`` when the cluster
advertises all three (``ray start --resources '{"alice": 1}'`` pins a site to a host; nature
goes with Charles); else a ``STRICT_SPREAD`` placement group of three bundles (Alice; Bob;
Charles with nature) when the cluster has at least three nodes; else one ``STRICT_PACK`` bundle,
everything on one node.

Endpoints: once the actors run (and before any node starts), each endpoint a node binds gets a
port its host reports free (``spread_endpoints``; the driver's choice in ``config.json`` could be
taken meanwhile by a process Ray started). On one host they stay on 127.0.0.1; when the actors
land on several hosts, each moves to its node's host address (the live control plane, which
binds on the driver, is then refused). ``config.json`` in the run directory records the
endpoints the nodes bound.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import tarfile
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration.launchers import NODE_ORDER

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: Set for the private Ray (before Ray is imported): Ray then keeps to 127.0.0.1 (its node
#: address, and a local address is not rewritten to the host's) rather than the host's address.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: The object store of the private Ray: the run moves only configurations and the gathered
#: node directories through it.
PRIVATE_OBJECT_STORE_BYTES = 100 << 20
#: How long a placement may take before the run fails (a cluster without room never places it).
PLACEMENT_TIMEOUT_S = 120.0
#: How long one call to an actor may take before it counts as unanswered.
CALL_TIMEOUT_S = 10.0
#: Which node's host each bundle of the spread placement group holds.
BUNDLES = ("alice", "bob", "charles")
BUNDLE_OF = {"alice": 0, "bob": 1, "charles": 2, "nature": 2}
#: Site resources: the node programs each one takes (nature sits with the relay).
SITE_OF = {"alice": "alice", "bob": "bob", "charles": "charles", "nature": "charles"}
#: The exit code the launcher reports for a node whose actor died (as a process killed by
#: SIGKILL reports -9 locally).
ACTOR_DIED = -9
#: The files a node does not send back: its secrets, and the configuration the driver wrote.
NOT_GATHERED = ("secrets.json", "config.json")


@dataclass(frozen=True)
class RayOptions:
    """Where the actors run. ``address`` None: a private Ray on this machine, started for the
    run and shut down after it; ``"auto"`` or ``HOST:PORT``: an existing cluster, joined (and
    left, not stopped). ``node_cpus``: the CPUs Ray reserves for each node program (for
    placement only; a node uses what it needs)."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_bytes: int = PRIVATE_OBJECT_STORE_BYTES
    node_cpus: float = 0.25


def placement(resources: dict[str, float], alive_nodes: int) -> str:
    """``"resources"``, ``"spread"`` or ``"pack"``: how the nodes are placed on a cluster with
    these total ``resources`` and this many alive nodes (module docstring)."""
    if all(resources.get(site, 0) > 0 for site in BUNDLES):
        return "resources"
    return "spread" if alive_nodes >= len(BUNDLES) else "pack"


#: Which node binds each endpoint of ``config.json``'s ``run`` (the others connect to it).
def _binders(run: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = [(("pulses",), "nature"), (("records",), "charles")]
    out += [(("mailboxes", n), n) for n in run.get("mailboxes", {})]
    out += [(("metrics", n), n) for n in run.get("metrics", {})]
    if run.get("control"):
        out.append((("control",), "nature"))
    return out


def kept_endpoints(run: dict[str, Any]) -> set[tuple[str, ...]]:
    """The endpoints the driver has already used when the launcher starts (the live control
    plane's: nature's control socket, and each mailbox a classical fault's proxy forwards to):
    they cannot be moved."""
    kept = {("mailboxes", n) for n in run.get("connect") or {}}
    if run.get("control"):
        kept.add(("control",))
    return kept


def spread_endpoints(run: dict[str, Any], hosts: dict[str, str | None],
                     ports: dict[str, list[int]]) -> dict[str, Any]:
    """``run`` (config.json's) with each endpoint a node binds moved to the next of the ports
    its host reported free (``ports``: node → ports), and to that node's host address
    (``hosts``: node → address; None keeps the endpoint's host, as on one machine). The ports
    are chosen once the actors run, so that no process Ray starts for them takes one first.
    Endpoints the driver already uses (``kept_endpoints``) stay; when they would have to move
    to another host, they are refused."""
    kept = kept_endpoints(run)
    if kept and any(h is not None for h in hosts.values()):
        raise ValueError("the live control plane and the classical faults' proxies run on this "
                         "machine and bind 127.0.0.1: across hosts, run without them "
                         "(--no-control, a scenario without classical faults)")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in run.items()}
    free = {n: list(p) for n, p in ports.items()}
    for path, node in _binders(run):
        if path in kept:
            continue
        old = str(run[path[0]] if len(path) == 1 else run[path[0]][path[1]])
        scheme = "tcp://" if old.startswith("tcp://") else ""
        host = hosts[node] or old.removeprefix(scheme).rsplit(":", 1)[0]
        new = f"{scheme}{host}:{free[node].pop(0)}"
        if len(path) == 1:
            out[path[0]] = new
        else:
            out[path[0]][path[1]] = new
    return out


def endpoint_count(run: dict[str, Any]) -> dict[str, int]:
    """How many endpoints each node binds that ``spread_endpoints`` moves."""
    counts = dict.fromkeys(NODE_ORDER, 0)
    kept = kept_endpoints(run)
    for path, node in _binders(run):
        counts[node] += path not in kept
    return counts


def _gather_tar(local: Path) -> bytes:
    """The node's directory as a gzip tarball, its secrets and configuration left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(local.rglob("*")):
            if path.is_file() and path.name not in NOT_GATHERED:
                tar.add(path, arcname=str(path.relative_to(local)), recursive=False)
    return buf.getvalue()


def extract_gathered(data: bytes, run_dir: Path) -> list[str]:
    """Unpack a node's tarball into the run directory; only regular files inside it (a member
    with an absolute path, ``..``, a link or a device is refused: the tarball comes from a
    process on another host)."""
    names = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            target = (run_dir / member.name).resolve()
            if not member.isfile() or not target.is_relative_to(run_dir.resolve()):
                raise ValueError(f"gathered file {member.name!r} is not a plain file in the run "
                                 "directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            names.append(member.name)
    return names


class NodeProgram:
    """One node program in a Ray actor (``ray.remote`` wraps it in ``RayLauncher``): prepared
    with its files, run in a thread, asked to stop, and gathered."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.local = Path(tempfile.mkdtemp(prefix=f"mdiqkd-{role}-"))
        self.stop_flag = threading.Event()
        self.thread: threading.Thread | None = None
        self.code: int | None = None
        self.cause = ""

    def prepare(self, config: bytes, secrets: bytes) -> dict[str, Any]:
        """Write the node's configuration (its ``run_dir`` this directory) and secrets; returns
        where the node runs."""
        import json

        import ray

        data = json.loads(config)
        data["run"]["run_dir"] = str(self.local)
        (self.local / "config.json").write_text(json.dumps(data, indent=2))
        node_dir = self.local / self.role
        node_dir.mkdir(mode=0o700)
        fd = os.open(node_dir / "secrets.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets)
        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "dir": str(self.local)}

    def adopt(self, local: str) -> dict[str, Any]:
        """A re-created actor (a link restart) takes over the directory of the node it replaces,
        which its predecessor left on this host: ledger, progress and logs. Refused when the
        directory is not here (the actor was placed on another host)."""
        import ray

        path = Path(local)
        if not (path / self.role / "secrets.json").is_file():
            raise RuntimeError(f"{self.role}'s directory {local} is not on this host: its "
                               "ledger cannot be resumed here")
        shutil.rmtree(self.local, ignore_errors=True)
        self.local = path
        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "dir": str(self.local)}

    def read(self, relative: str) -> bytes | None:
        """A file of the node's directory (its progress file, for a restart), or None."""
        path = self.local / relative
        return path.read_bytes() if path.is_file() else None

    def free_ports(self, n: int) -> list[int]:
        """``n`` ports free on this host's addresses now."""
        import socket

        socks = []
        try:
            for _ in range(n):
                s = socket.socket()
                s.bind(("", 0))
                socks.append(s)
            return [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()

    def set_run(self, run: dict[str, Any]) -> None:
        """Replace the run configuration's endpoints (``spread_endpoints``)."""
        import json

        path = self.local / "config.json"
        data = json.loads(path.read_text())
        data["run"] = {**run, "run_dir": str(self.local)}
        path.write_text(json.dumps(data, indent=2))

    def start(self) -> None:
        """Run the node in a thread, its output (this worker's stdout and stderr) in
        ``logs/ROLE.log`` as a local node's."""
        import sys

        from orchestration.node_main import run_node

        logs = self.local / "logs"
        logs.mkdir(exist_ok=True)
        log = open(logs / f"{self.role}.log", "ab", buffering=0)  # noqa: SIM115 - for the run
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115

        def cause(line: str) -> None:
            self.cause = line

        # a fresh start (also the second in this actor, when the link restarts)
        self.stop_flag, self.code, self.cause = threading.Event(), None, ""

        def run() -> None:
            try:
                self.code = run_node(self.role, self.local, self.stop_flag, cause)
            except BaseException as e:  # noqa: BLE001 - the node must report, whatever ends it
                self.cause = self.cause or f"{type(e).__name__}: {e}"
                self.code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()

        self.thread = threading.Thread(target=run, name=f"node-{self.role}", daemon=True)
        self.thread.start()

    def state(self, mirror: str | None = None) -> tuple[int | None, str, bytes | None]:
        """Exit code (None while running), the cause of a failure, and the bytes of the file
        ``mirror`` (relative to the node's directory) if it exists."""
        data = None
        if mirror is not None:
            path = self.local / mirror
            if path.is_file():
                data = path.read_bytes()
        return self.code, self.cause, data

    def stop(self) -> None:
        self.stop_flag.set()

    def tail(self, n: int = 15) -> list[str]:
        path = self.local / "logs" / f"{self.role}.log"
        if not path.is_file():
            return []
        with path.open("rb") as f:
            return list(deque(f.read().decode(errors="replace").splitlines(), maxlen=n))

    def gather(self) -> bytes:
        return _gather_tar(self.local)

    def cleanup(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)


@contextlib.contextmanager
def keeping_stop_handlers():  # type: ignore[no-untyped-def]
    """The process's handlers of SIGINT, SIGTERM and SIGHUP as they were before: ``ray.init``
    installs its own (which abort the driver), and ``mdiqkd run`` must still stop in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)


def init_ray(options: RayOptions) -> str | None:
    """Start the private Ray of ``options`` (``address`` None) or join its cluster; returns the
    private Ray's temporary directory (None when joining). The process's stop handlers stay."""
    import ray

    with keeping_stop_handlers():
        if options.address is not None:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
            return None
        temp_dir = tempfile.mkdtemp(prefix="mdiqkd-ray-", dir="/tmp")
        try:
            ray.init(address="local", _temp_dir=temp_dir, include_dashboard=False,
                     object_store_memory=options.object_store_bytes,
                     num_cpus=options.num_cpus or max(2, os.cpu_count() or 1),
                     log_to_driver=False)
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        return temp_dir


@dataclass(frozen=True)
class Placed:
    """Where the caller has decided each node program goes (a network's placement,
    ``orchestration.network``): ``label`` for the run's record, and each node's actor options
    (``num_cpus`` and a scheduling strategy or resources). Any placement group in them is the
    caller's: the launcher does not remove it."""

    label: str
    actor_options: dict[str, dict[str, Any]]


class PortBook:
    """The ports the actors of concurrent runs have chosen, by host: so that two runs on one host
    never pick the same port between choosing and binding it (the actors choose in separate
    processes, and several Ray nodes may share a host)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[tuple[str, int]] = set()

    def take(self, host: str, ports: list[int]) -> list[int]:
        """The ports of ``ports`` not yet taken on ``host``, now taken."""
        with self._lock:
            fresh = [p for p in ports if (host, p) not in self._taken]
            self._taken.update((host, p) for p in fresh)
            return fresh


class RayLauncher:
    """The ``Launcher`` of ``orchestration.launchers`` over Ray actors (module docstring).
    ``placed``: the caller's placement instead of the launcher's own; ``ports``: the ports
    concurrent runs' actors took (``PortBook``)."""

    def __init__(self, options: RayOptions | None = None, placed: Placed | None = None,
                 ports: PortBook | None = None) -> None:
        self.options = options or RayOptions()
        self.placed = placed
        self.ports = ports
        self.actors: dict[str, Any] = {}
        self.where: dict[str, dict[str, Any]] = {}  # node → node_id, pid, dir, host
        self.codes: dict[str, int | None] = {}
        self.causes: dict[str, str] = {}
        self.placement = ""
        self.run_dir: Path | None = None
        self._group: Any = None
        self._started_ray = False
        self._temp_dir: str | None = None
        self._gathered: set[str] = set()
        self._strategies_by_node: dict[str, dict[str, Any]] = {}

    #: ``halt`` and ``resume`` restart the link on the same actors (``orchestration.supervision``)
    restartable = True

    # --- Ray itself ---------------------------------------------------------------------------

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return  # the caller's Ray (a test's cluster): used, and left running
        self._started_ray = True  # shut down in ``stop``, even if it failed to start
        self._temp_dir = init_ray(self.options)

    def _strategies(self) -> dict[str, dict[str, Any]]:
        """The actor options that place each node (module docstring)."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if self.placed is not None:
            self.placement = self.placed.label
            return self.placed.actor_options
        cpus = self.options.node_cpus
        alive = [n for n in ray.nodes() if n.get("Alive")]
        self.placement = placement(ray.cluster_resources(), len(alive))
        if self.placement == "resources":
            return {n: {"num_cpus": cpus, "resources": {SITE_OF[n]: 0.01}} for n in NODE_ORDER}
        if self.placement == "spread":
            bundles = [{"CPU": cpus * sum(1 for n in NODE_ORDER if BUNDLE_OF[n] == i)}
                       for i in range(len(BUNDLES))]
            self._group = placement_group(bundles, strategy="STRICT_SPREAD")
        else:
            self._group = placement_group([{"CPU": cpus * len(NODE_ORDER)}],
                                          strategy="STRICT_PACK")
        ready = self._group.ready()
        done, _ = ray.wait([ready], timeout=PLACEMENT_TIMEOUT_S)
        if not done:
            raise RuntimeError(f"Ray could not place the nodes ({self.placement}: "
                               f"{len(alive)} nodes, {ray.cluster_resources()}) within "
                               f"{PLACEMENT_TIMEOUT_S:.0f} s")
        return {n: {"num_cpus": cpus, "scheduling_strategy": PlacementGroupSchedulingStrategy(
            self._group, placement_group_bundle_index=BUNDLE_OF[n]
            if self.placement == "spread" else 0)} for n in NODE_ORDER}

    # --- the Launcher protocol ----------------------------------------------------------------

    def start(self, run_dir: Path) -> None:
        """Connect to Ray, place and prepare the four actors, then start the nodes; a Ray that
        cannot be reached, nodes that cannot be placed, or an actor that cannot be created (the
        project not installed on a host) end the run with ``RunFailed`` saying so."""
        from orchestration.run import RunFailed

        if self.options.address is None:  # read when Ray is imported: before it is, then
            os.environ.update(RAY_ENV)
        try:
            self._start(run_dir)
        except RunFailed:
            raise
        except Exception as e:  # noqa: BLE001 - Ray's errors, said in one line
            where = self.options.address or "a private Ray on this machine"
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            said = f"Ray backend ({where}): {type(e).__name__}: {lines[0] if lines else ''}"
            missing = next((x for x in lines if "No module named" in x), None)
            if missing is not None:
                said += f"; {missing}: install this mdiqkd on every host of the cluster"
            raise RunFailed(said) from e

    def _start(self, run_dir: Path) -> None:
        import json

        import ray

        self.run_dir = run_dir
        self._connect()
        strategies = self._strategies_by_node = self._strategies()
        remote = _remote()
        config = (run_dir / "config.json").read_bytes()
        for name in NODE_ORDER:
            self.actors[name] = remote.options(name=None, **strategies[name]).remote(name)
        prepared = ray.get([self.actors[n].prepare.remote(
            config, (run_dir / n / "secrets.json").read_bytes()) for n in NODE_ORDER],
            timeout=PLACEMENT_TIMEOUT_S)
        hosts = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        for name, where in zip(NODE_ORDER, prepared, strict=True):
            self.where[name] = {**where, "host": hosts.get(where["node_id"], "?")}
        run = json.loads(config)["run"]
        here = hosts.get(ray.get_runtime_context().get_node_id())
        several = len({w["host"] for w in self.where.values()} | {here}) > 1
        ports = self._free_ports(endpoint_count(run))
        run = spread_endpoints(run, {n: w["host"] if several else None
                                     for n, w in self.where.items()}, ports)
        ray.get([a.set_run.remote(run) for a in self.actors.values()], timeout=CALL_TIMEOUT_S)
        data = json.loads(config)  # the run's record: the endpoints the nodes bound
        data["run"] = {**run, "run_dir": data["run"]["run_dir"]}
        (run_dir / "config.json").write_text(json.dumps(data, indent=2))
        record = {"placement": self.placement, "address": self.options.address,
                  "nodes": {n: {"ray_node_id": w["node_id"], "host": w["host"]}
                            for n, w in self.where.items()}}
        directory = run_dir / "orchestrator"  # orchestration.run.ORCHESTRATOR_DIR
        directory.mkdir(mode=0o700, exist_ok=True)
        (directory / "ray.json").write_text(json.dumps(record, indent=2))
        (run_dir / "logs").mkdir(exist_ok=True)
        for name in NODE_ORDER:  # in order, as the local launcher: Alice leads, so she is last
            ray.get(self.actors[name].start.remote(), timeout=CALL_TIMEOUT_S)
            self.codes[name] = None

    def _free_ports(self, counts: dict[str, int]) -> dict[str, list[int]]:
        """Ports each node's host reports free, none another run of the ``PortBook`` took."""
        import ray

        ports: dict[str, list[int]] = {n: [] for n in NODE_ORDER}
        for _ in range(20):
            short = [n for n in NODE_ORDER if len(ports[n]) < counts[n]]
            if not short:
                return ports
            found = ray.get([self.actors[n].free_ports.remote(counts[n] - len(ports[n]))
                             for n in short], timeout=CALL_TIMEOUT_S)
            for name, got in zip(short, found, strict=True):
                got = [p for p in got if p not in ports[name]]
                if self.ports is not None:
                    # by host: several Ray nodes on one host (a test's cluster) share its ports
                    got = self.ports.take(self.where[name]["host"], got)
                ports[name] += got
        raise RuntimeError("no free ports the other runs had not taken")

    @property
    def processes(self) -> dict[str, int]:
        """Each node's process id, when every node runs on this machine's Ray node (for the
        faults on node processes, ``orchestration.node_faults``); else none."""
        import ray

        here = ray.get_runtime_context().get_node_id()
        if any(w["node_id"] != here for w in self.where.values()):
            return {}
        return {n: w["pid"] for n, w in self.where.items() if self.codes.get(n) is None}

    def poll(self) -> dict[str, int | None]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        running = [n for n in NODE_ORDER if self.codes.get(n) is None and n in self.actors]
        refs = {n: self.actors[n].state.remote("alice/rounds.jsonl" if n == "alice" else None)
                for n in running}
        ready = set(ray.wait(list(refs.values()), num_returns=len(refs),
                             timeout=CALL_TIMEOUT_S)[0]) if refs else set()
        for name, ref in refs.items():
            if ref not in ready:
                continue  # busy (or paused): still running
            try:
                code, cause, mirrored = ray.get(ref, timeout=CALL_TIMEOUT_S)
            except GetTimeoutError:
                continue
            except RayActorError as e:
                self.codes[name] = ACTOR_DIED
                first = next((x for x in str(e).splitlines() if x.strip()), type(e).__name__)
                host = self.where.get(name, {}).get("host", "?")
                self.causes[name] = f"its Ray actor died on host {host} ({first.strip()})"
                continue
            if mirrored is not None and self.run_dir is not None:
                path = self.run_dir / "alice" / "rounds.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(mirrored)
            if code is not None:
                self.codes[name], self.causes[name] = code, cause
                if code != 0:  # its log, for the failure message
                    self._gather(name)
        return dict(self.codes)

    def cause(self, name: str) -> str:
        return self.causes.get(name, "")

    def _gather(self, name: str) -> None:
        import ray

        if name in self._gathered or self.run_dir is None:
            return
        try:
            data = ray.get(self.actors[name].gather.remote(), timeout=60.0)
        except Exception:  # noqa: BLE001 - a dead actor: its files stay on its host
            return
        extract_gathered(data, self.run_dir)
        self._gathered.add(name)

    def _ask_to_stop(self, grace_s: float) -> None:
        """Ask every node still running to stop (each closes in order) and wait up to
        ``grace_s`` for them."""
        for name, actor in self.actors.items():
            if self.codes.get(name) is None:
                actor.stop.remote()
        deadline = time.monotonic() + grace_s
        while any(c is None for c in self.poll().values()) and time.monotonic() < deadline:
            time.sleep(0.1)

    # --- a link restart (orchestration.supervision) -------------------------------------------

    def halt(self, grace_s: float = 5.0) -> None:
        """Stop the nodes still running, in order, and keep the actors and their directories:
        the link restarts on them (``resume``). A node that does not stop in time is killed
        with its actor, which ``resume`` re-creates."""
        import ray

        self._ask_to_stop(grace_s)
        for name, code in self.codes.items():
            if code is None:
                with contextlib.suppress(Exception):
                    ray.kill(self.actors[name], no_restart=True)
                _wait_dead(self.actors[name])  # it must send nothing once its progress is read
                self.codes[name] = ACTOR_DIED
        self._recreate_dead()

    def _recreate_dead(self) -> None:
        """A dead node's actor re-created where its placement puts it (the same host: its site
        resource or its placement-group bundle), in its predecessor's directory."""
        import ray

        for name in NODE_ORDER:
            if self.codes.get(name) != ACTOR_DIED:
                continue
            from orchestration.run import RunFailed

            actor = _remote().options(name=None, **self._strategies_by_node[name]).remote(name)
            try:
                where = ray.get(actor.adopt.remote(self.where[name]["dir"]),
                                timeout=PLACEMENT_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - its host gone, or placed elsewhere
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
                first = next((x for x in str(e).splitlines() if x.strip()), type(e).__name__)
                raise RunFailed(f"node {name} could not be restarted on host "
                                f"{self.where[name].get('host', '?')}: {first.strip()}") from e
            hosts = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
            self.actors[name] = actor
            self.where[name] = {**where, "host": hosts.get(where["node_id"], "?")}
            self.codes[name] = 0  # re-created; its node is started by ``resume``

    def node_progress(self, node: str) -> Any:
        """A node's progress file (``nodes.session``), read through its actor."""
        import ray

        from nodes.session import parse_progress
        from orchestration.supervision import PEERS

        data = ray.get(self.actors[node].read.remote(f"{node}/session.progress"),
                       timeout=CALL_TIMEOUT_S)
        return None if data is None else parse_progress(data, PEERS[node])

    def resume(self, run_dir: Path) -> None:
        """Start the link again on its actors (``halt`` re-created the dead ones), every node
        with the run configuration and its ``resume`` section."""
        import json

        import ray

        run = json.loads((run_dir / "config.json").read_text())["run"]
        ray.get([a.set_run.remote(run) for a in self.actors.values()], timeout=CALL_TIMEOUT_S)
        self._gathered.clear()
        for name in NODE_ORDER:  # Alice last, as at the first start
            ray.get(self.actors[name].start.remote(), timeout=CALL_TIMEOUT_S)
            self.codes[name] = None
            self.causes.pop(name, None)

    def stop(self, grace_s: float = 5.0) -> None:
        """Ask every node still running to stop; wait up to ``grace_s``; gather every node's
        directory into the run directory; kill the actors (and stop the private Ray)."""
        import ray

        try:
            self._ask_to_stop(grace_s)
            for name in self.actors:
                if self.codes.get(name) != ACTOR_DIED:
                    self._gathered.discard(name)  # again: the final files
                    self._gather(name)
            for actor in self.actors.values():
                with contextlib.suppress(Exception):  # a dead actor: nothing to clean
                    ray.get(actor.cleanup.remote(), timeout=CALL_TIMEOUT_S)
        finally:
            for actor in self.actors.values():
                with contextlib.suppress(Exception):  # gone already
                    ray.kill(actor, no_restart=True)
            if self._group is not None:
                from ray.util.placement_group import remove_placement_group

                with contextlib.suppress(Exception):
                    remove_placement_group(self._group)
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False
                if self._temp_dir is not None:
                    shutil.rmtree(self._temp_dir, ignore_errors=True)



def _remote() -> Any:
    """``NodeProgram`` as a Ray actor class. Ray does not restart it by itself: a link restart
    is one for all and must resume every node together (``RayLauncher.resume``)."""
    import ray

    return ray.remote(max_concurrency=4, max_restarts=0, max_task_retries=0)(NodeProgram)


def _wait_dead(actor: Any, timeout_s: float = 10.0) -> None:
    """Until a killed actor answers no more (Ray reports it dead once its worker is gone)."""
    import ray
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.state.remote(), timeout=1.0)
        except RayActorError:
            return
        except Exception:  # noqa: BLE001 - no answer yet: ask again
            pass
        time.sleep(0.1)
    raise RuntimeError("a killed node actor did not end within 10 s")
