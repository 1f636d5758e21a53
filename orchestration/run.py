"""`mdiqkd run`: prepare a run directory, launch the three nodes, watch them, summarise.

Run directory (every file and field: docs/run-directory.md)::

    config.json          resolved scenario (without its seed and game-day timeline and
                         hypothesis: config.node_view) and endpoints (what the nodes read)
    <node>/secrets.json  that node's own secrets only, owner-only (orchestration.secrets);
                         nature's hold the fault timeline
    orchestrator/scenario.json  the whole scenario as run (no seed), owner-only; no node reads it
    rounds.jsonl         one line per key round (Alice's view, with Bob's outcome beside it)
    summary.json         rounds, aborted, secure_bits, key_rate_bps_emulated, qber, keys_match,
                         authentication …
    journal.json         the game day's verdict: status, deviated, each probe per phase, the
                         timeline of faults and actions (orchestration.verdict)
    report.html, plots/  the run's report and its plots against emulated time
                         (orchestration.report), written after journal.json
    traces/<node>.jsonl  OpenTelemetry spans, one JSON object per line
    <node>/metrics.json  counters of each node; alice/ and bob/ also hold keys.sqlite
    logs/<node>.log      each process's output
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets as os_secrets
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from channel.rng import derive_seed
from channel.timeline import Fault, fault_windows
from classical.authentication import HmacAuthenticator, KeyPool, WegmanCarterAuthenticator
from classical.codec import max_message_bytes
from nodes.keystore import KeyStore
from orchestration import experiment
from orchestration.config import Scenario, node_view
from orchestration.edge import EdgeBook, EdgeFault, edge_faults, receivers, start_proxies
from orchestration.launchers import PROTOCOL_NODES, Launcher, LocalProcessLauncher
from orchestration.node_faults import NODE_FAULTS, NodeFaultWatcher
from orchestration.report import write_report
from orchestration.runconfig import HOST, MAX_METRICS_LINGER_S, free_ports, local_run_config
from orchestration.secrets import node_secrets, read_node_secrets, write_node_secrets
from orchestration.supervision import RESTARTS_FILE, LinkRestarter
from orchestration.verdict import evaluate, settled_deviations


class RunFailed(RuntimeError):
    """A node died or the run did not finish in time; the message names the node."""


class RunInterrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP reached the process running ``execute``: it stops the nodes in
    order and writes a summary marked ``interrupted`` (a BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` swallows it)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class FailFast(Exception):
    """``runtime.fail_fast``: a probe deviated in a window no later round can change, so the
    run stops in order (``interrupted_by: fail_fast``). ``judged`` is the number of recorded
    rounds whose last one settled the deviation: the journal judges those only, so that where
    the watcher happened to notice does not change it."""

    def __init__(self, message: str, judged: int) -> None:
        super().__init__(message)
        self.message, self.judged = message, judged


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_handled(on_stop: Callable[[str], None]):  # type: ignore[no-untyped-def]
    """While inside, SIGINT, SIGTERM and SIGHUP call ``on_stop`` with the signal's name; the
    handlers before are put back after. In the main thread only: elsewhere Python cannot take
    signals, and the caller's own handling stays."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        on_stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_signals_interrupt():  # type: ignore[no-untyped-def]
    """While the nodes run, a stop signal raises ``RunInterrupted``."""
    def interrupt(name: str) -> None:
        raise RunInterrupted(name)

    return stop_signals_handled(interrupt)


def _ignoring_stop_signals() -> None:
    """While the nodes are being stopped: a second Ctrl-C must not cut the orderly stop short."""
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)


@dataclass(frozen=True)
class Progress:
    rounds_done: int
    rounds_total: int
    secure_bits: int
    emulated_seconds: float


def new_run_dir(root: Path = Path("runs")) -> Path:
    """A new directory ``root/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, … when that second is taken),
    created here: ``mkdir`` is atomic, so runs started in the same second never share one."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 10_000):
        path = root / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{root}: no free run directory name for {stamp}; choose --out")


def prepare_run_dir(scenario: Scenario, out: Path, otlp_endpoint: str | None = None,
                    control: bool | None = None, metrics_linger_s: float = 0.0,
                    otlp_metrics_endpoint: str | None = None, link: str | None = None) -> Path:
    """Create the run directory with ``config.json`` (what every node reads: the scenario with
    the rounds the run does, ``Scenario.for_run``, as ``node_view`` shows it), each node's secrets
    (nature's hold the fault timeline) and the operators' record of the whole scenario."""
    scenario = scenario.for_run()
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"run directory {out} is not empty; choose another --out")
    run = local_run_config(out.resolve(), otlp_endpoint)
    if not 0.0 <= metrics_linger_s <= MAX_METRICS_LINGER_S:
        raise ValueError(f"metrics linger {metrics_linger_s} s is not in [0, "
                         f"{MAX_METRICS_LINGER_S}] s")
    run.metrics_linger_s = metrics_linger_s  # the nodes' metrics endpoints: nodes.metrics
    run.otlp_metrics_endpoint = otlp_metrics_endpoint
    if link is not None:  # the ``link`` label of every series (a network's link name)
        run.link = link
    control = has_control_plane(scenario) if control is None else control
    nodes = ["alice", "bob", "charles"] if control else receivers(scenario_edge_faults(scenario))
    if control:  # nature's end of the live control plane (orchestration.control)
        run.control = f"tcp://{HOST}:{free_ports(1)[0]}"
    if nodes:  # the classical faults' proxies bind where these nodes' peers connect
        run.connect = {n: f"tcp://{HOST}:{p}" for n, p in
                       zip(nodes, free_ports(len(nodes)), strict=True)}
    rt = scenario.runtime
    if rt is not None and rt.message_timeout is not None:
        run.message_timeout_s = rt.message_timeout
    if rt is not None and rt.announcement_timeout is not None:
        run.announcement_timeout_s = rt.announcement_timeout
    config = {"run": json.loads(run.model_dump_json()), "scenario": node_view(scenario)}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    given = node_secrets(scenario)
    if control:  # nature takes control requests that carry this (drawn anew for every run)
        given["nature"] = given["nature"].model_copy(
            update={"control_token": os_secrets.token_hex(16)})
    write_node_secrets(out, given)
    write_scenario_record(out, scenario)
    return out


#: The orchestrator's own directory in a run directory: no node reads it.
ORCHESTRATOR_DIR = "orchestrator"


def scenario_edge_faults(scenario: Scenario) -> tuple[EdgeFault, ...]:
    """The scenario's classical-channel faults with the rounds each acts on."""
    return edge_faults(experiment.timeline_entries(scenario.method), scenario.clock_rate_hz,
                       scenario.frame_bits, scenario.round_slots)


def scenario_node_faults(scenario: Scenario) -> list[Fault]:
    """The scenario's faults on node processes (``orchestration.node_faults``)."""
    return [f for f in fault_windows(experiment.timeline_entries(scenario.method))
            if f.kind in NODE_FAULTS]


def _write_orchestrator_file(run_dir: Path, name: str, data: Any) -> None:
    directory = run_dir / ORCHESTRATOR_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / name).write_text(json.dumps(data, indent=2))


def has_control_plane(scenario: Scenario) -> bool:
    """Game days (a ``runtime``, ``method`` or ``steady_state``) run with the live control plane
    (``orchestration.control``): proxies in front of every mailbox, nature's control socket and
    the HTTP API; other runs only with the proxies their classical faults need."""
    return any(x is not None for x in (scenario.runtime, scenario.method, scenario.steady_state))


@contextlib.contextmanager
def control_plane(scenario: Scenario, run_dir: Path):  # type: ignore[no-untyped-def]
    """For the run's lifetime: the classical faults' proxies (``orchestration.edge``), where
    ``config.json`` routes peers to them, and the live control API where it names nature's
    control socket. Yields the run's ``LiveFaults`` (None without a control plane); what the
    proxies did is written to ``orchestrator/edge.json`` when they close."""
    from orchestration.control import ControlServer, LiveFaults, NatureControl

    run = json.loads((run_dir / "config.json").read_text())["run"]
    book = EdgeBook(list(scenario_edge_faults(scenario)), rounds=scenario.rounds)
    ours = bool(book.faults or run.get("control"))  # else ``connect`` is someone else's proxy
    proxies = start_proxies(book, run.get("connect") or {}, run["mailboxes"],
                            derive_seed(scenario.seed, "edge faults")) \
        if ours and run.get("connect") else []
    live = server = None
    directory = run_dir / ORCHESTRATOR_DIR
    if run.get("control"):
        token = read_node_secrets(run_dir, "nature").control_token
        live = LiveFaults(scenario, book if proxies else None,
                          NatureControl(run["control"], token))
        server = ControlServer(run_dir, scenario, live)
        server.start(directory)
    try:
        yield live
    finally:
        if server is not None:
            server.stop(directory)
        if live is not None and live.nature is not None:
            live.nature.close()
        for proxy in proxies:
            proxy.close()
        if book.faults:
            directory.mkdir(mode=0o700, exist_ok=True)
            (directory / "edge.json").write_text(json.dumps(
                {"faults": [f.name for f in book.faults], "effects": book.counts.to_json()},
                indent=2))


def write_scenario_record(run_dir: Path, scenario: Scenario) -> Path:
    """``RUN_DIR/orchestrator/scenario.json``: the scenario as run, game-day sections included
    (the master seed left out, as ``summary.json`` records it), owner-only in a directory no node
    reads, for operators and tools that judge the run afterwards."""
    directory = run_dir / ORCHESTRATOR_DIR
    directory.mkdir(mode=0o700)
    path = directory / "scenario.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(json.loads(scenario.model_dump_json(exclude={"seed"})), indent=2))
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a node's JSON-lines log; nothing unless it is a regular file (a log
    that is a device, such as /dev/full on a full-disk drill, would be read without end)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return rows


#: How much of the end of a log the failure message reads.
TAIL_BYTES = 64 << 10


def _tail(path: Path, n: int = 15) -> list[str]:
    """The last ``n`` lines of a log file: of a regular file only (a log may be a device, or
    endless), and of its last ``TAIL_BYTES`` only."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno())
            if not stat.S_ISREG(size.st_mode):
                return []
            f.seek(max(0, size.st_size - TAIL_BYTES))
            return f.read(TAIL_BYTES).decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def node_failure(name: str, code: int, log: Path, cause: str = "") -> str:
    """Why a node failed: the error that ended it first (as the node reported it on its status
    pipe, readable even when its log could not be written, e.g. on a full disk), then the end
    of its log."""
    tail = _tail(log)
    cause = cause or next((line.strip() for line in reversed(tail) if line.strip()), "")
    head = f"node {name} exited with code {code}" + (f": {cause}" if cause else "")
    if not tail:
        return f"{head} (its log {log} is empty or unreadable)"
    return f"{head}\nits log ({log}) ends with:\n" + "\n".join(tail)


def execute(scenario: Scenario, run_dir: Path, launcher: Launcher | None = None,
            on_progress: Callable[[Progress], None] | None = None,
            timeout_s: float | None = None, fingerprint: bool = False,
            stop_requested: Callable[[], str | None] | None = None) -> dict[str, Any]:
    """Launch the nodes on a prepared run directory and wait; returns the summary.

    SIGINT, SIGTERM or SIGHUP stop the run in order: the nodes are asked to stop (each settles
    its key commit and closes its key store), and the summary of what was delivered so far is
    written with ``"interrupted": true`` and returned. ``journal.json`` is written in every
    case, a failed run's too, and then ``report.html`` (``orchestration.report``). The run
    does ``scenario.run_rounds`` rounds. ``stop_requested``: asked while the nodes run; a name
    (a signal's) it returns stops the run in order as that signal would (a run in another thread
    than the main one, as a network's links, takes no signals itself)."""
    scenario = scenario.for_run()
    launcher = launcher or LocalProcessLauncher()
    timeout_s = timeout_s or 120.0 + 300.0 * scenario.rounds
    t0, started = time.monotonic(), time.time()
    interrupted: str | None = None
    failure: RunFailed | None = None
    judged: int | None = None  # fail_fast: the rounds the journal judges
    node_faults = scenario_node_faults(scenario)
    watcher: NodeFaultWatcher | None = None
    with _stop_signals_interrupt(), control_plane(scenario, run_dir) as live:
        try:
            if node_faults and live is None:
                raise RunFailed("faults on node processes need the live control plane (the "
                                "link's emulated time comes from it): run without --no-control")
            launcher.start(run_dir)
            if node_faults:
                assert live is not None
                watcher = NodeFaultWatcher(node_faults, _LiveProcesses(launcher),
                                           lambda: live.now_s(0.0))
                watcher.start()
            restarter = None
            if scenario.runtime is not None and scenario.runtime.restart:
                if not getattr(launcher, "restartable", False):
                    raise RunFailed("runtime.restart: this launcher cannot restart a link")
                restarter = LinkRestarter(run_dir, launcher, scenario.runtime.max_restarts,
                                          _kill_downtime(watcher),
                                          getattr(launcher, "node_progress", None))
            _watch(scenario, run_dir, launcher, on_progress, timeout_s, t0, stop_requested,
                   restarter)
        except RunInterrupted as e:
            interrupted = e.signal_name
            _ignoring_stop_signals()
        except FailFast as e:
            interrupted, judged = "fail_fast", e.judged
            _ignoring_stop_signals()
        except RunFailed as e:
            failure = e
        finally:
            if watcher is not None:  # a paused node is continued, so that it can stop
                watcher.stop()
                _write_orchestrator_file(run_dir, "node_faults.json", {"done": watcher.done})
            launcher.stop()
    wall = time.monotonic() - t0
    live_entries: list[dict[str, Any]] = []
    if live is not None and live.entries:  # the verdict judges the live faults' phases too
        scenario = scenario.model_copy(update={"method": live.method()})
        live_entries = live.live
    if failure is not None:  # the journal of a failed run: what the rounds recorded show
        # (a store the dead node left unreadable must not hide why the run failed)
        with contextlib.suppress(OSError, ValueError, sqlite3.Error):
            write_journal(scenario, run_dir, "failed",
                          _read_jsonl(run_dir / "alice" / "rounds.jsonl"),
                          wall_clock(started, wall), live=live_entries)
            write_report(run_dir)
        raise failure
    summary = summarise(scenario, run_dir, wall, fingerprint, interrupted)
    records = _read_jsonl(run_dir / "rounds.jsonl")
    write_journal(scenario, run_dir, "interrupted" if interrupted else "completed",
                  records if judged is None else records[:judged], wall_clock(started, wall),
                  summary=summary, fail_fast=judged is not None, live=live_entries)
    write_report(run_dir)
    return summary


class _LiveProcesses:
    """The launcher's node processes as they are when a fault acts (a link restart replaces
    them; the Ray launcher's are computed on each look)."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher

    def get(self, name: str) -> Any:
        return getattr(self.launcher, "processes", {}).get(name)


def _kill_downtime(watcher: NodeFaultWatcher | None) -> Callable[[str], float]:
    """How long a node killed by a ``kill`` fault stays down before the link restarts: the
    fault's duration (wall-clock seconds, as for ``pause``), each kill counted once; 0 for a
    node that died by itself."""
    used: set[int] = set()

    def downtime(node: str) -> float:
        if watcher is None:
            return 0.0
        for i, done in enumerate(watcher.done):
            if i in used or done.get("action") != "killed" or done["target"] != f"node/{node}":
                continue
            used.add(i)
            fault = next((f for f in watcher.faults if f.name == done["name"]), None)
            if fault is not None and fault.end_s < float("inf"):
                return max(0.0, fault.end_s - fault.start_s - (time.time() - done["unix"]))
            return 0.0
        return 0.0

    return downtime


def _watch(scenario: Scenario, run_dir: Path, launcher: Launcher,
           on_progress: Callable[[Progress], None] | None, timeout_s: float, t0: float,
           stop_requested: Callable[[], str | None] | None = None,
           restarter: LinkRestarter | None = None) -> None:
    """Poll the nodes until the protocol nodes are done; RunFailed when one fails (unless the
    link restarts: ``orchestration.supervision``), FailFast when the scenario asks for it and a
    probe has deviated for good before the last round.

    The rounds are read after the nodes' exit codes, so a run whose nodes are done has all its
    rounds read and judged, round by round, before it counts as completed: the round that
    settles a deviation is the same whenever the watcher looks."""
    fail_fast = scenario.runtime is not None and scenario.runtime.fail_fast \
        and scenario.steady_state is not None
    judged = 0
    while True:
        codes = launcher.poll()
        failed = {n: c for n, c in codes.items() if c not in (None, 0)}
        if failed:
            name, code = next(iter(failed.items()))
            cause = launcher.cause(name) if hasattr(launcher, "cause") else ""
            if restarter is not None and restarter.can_restart():
                resume = restarter.restart(name, code, cause)
                print(f"node {name} exited with code {code}"
                      + (f" ({cause})" if cause else "")
                      + f"; the link restarted at round {resume.round} "
                      f"(restart {resume.restart} of at most {restarter.max_restarts}; "
                      f"{run_dir})", file=sys.stderr, flush=True)
                continue
            raise RunFailed(node_failure(name, code, run_dir / "logs" / f"{name}.log", cause))
        if on_progress is not None or fail_fast:
            rows = _read_jsonl(run_dir / "alice" / "rounds.jsonl")
            if on_progress is not None:
                on_progress(Progress(len(rows), scenario.rounds,
                                     sum(r["secure_bits"] for r in rows),
                                     sum(r["emulated_seconds"] for r in rows)))
            if fail_fast:
                judged = _fail_fast_check(scenario, rows, judged)
        if all(codes.get(n) == 0 for n in PROTOCOL_NODES):
            return  # nature is stopped after (it serves until then) and writes its metrics
        requested = stop_requested() if stop_requested is not None else None
        if requested:
            raise RunInterrupted(requested)
        if time.monotonic() - t0 > timeout_s:
            running = [n for n, c in codes.items() if c is None]
            raise RunFailed(f"run did not finish within {timeout_s:.0f} s; still running: "
                            f"{', '.join(running)}")
        time.sleep(0.2)


def _store_items(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    store = KeyStore(path)
    try:
        return {key_id: bits for key_id, _, bits in store.items()}
    finally:
        store.close()


def rounds_wall_seconds(rounds: list[dict[str, Any]]) -> float | None:
    """Wall time from the first round's emission to the last round's stored key (node start-up
    excluded). Rounds overlap (the users emit round r + 1 while distilling round r), so this is
    not the sum of the rounds' own wall times."""
    spans = [(r["emitted_at_unix"], r["finished_at_unix"]) for r in rounds
             if "emitted_at_unix" in r and "finished_at_unix" in r]
    if not spans:
        return None
    return max(e for _, e in spans) - min(s for s, _ in spans)


def authentication_record(scenario: Scenario) -> dict[str, Any]:
    """``summary.json``'s ``authentication``: the mode, and its ε per authenticated message.

    Wegman–Carter: the forgery bound of ``WegmanCarterAuthenticator.forgery_bound`` for messages
    of at most ``message_bytes_bound`` bytes (``classical.codec.max_message_bytes``, the bound the
    receivers enforce); a run's ε_auth is that times the number of verified messages and
    forgery attempts (docs/finite-key.md §4). HMAC: no information-theoretic ε
    (``"computational"``). The nodes do not count authenticated messages, so none is given.
    """
    if scenario.authentication.mode == "hmac":
        return {"mode": HmacAuthenticator.mode, "epsilon_per_message": "computational"}
    bound = max_message_bytes(scenario.round_slots)
    # the bound depends on the message size and the tag's evaluations; this pool is never used
    authenticator = WegmanCarterAuthenticator(KeyPool(bytes(1 << 10)))
    return {"mode": authenticator.mode, "epsilon_per_message": authenticator.forgery_bound(bound),
            "message_bytes_bound": bound, "tag_bits": 8 * authenticator.tag_bytes}


def summarise(scenario: Scenario, run_dir: Path, wall_seconds: float,
              fingerprint: bool = False, interrupted: str | None = None) -> dict[str, Any]:
    alice_rounds = _read_jsonl(run_dir / "alice" / "rounds.jsonl")
    bob_rounds = {r["round"]: r for r in _read_jsonl(run_dir / "bob" / "rounds.jsonl")}
    keys_a = _store_items(run_dir / "alice" / "keys.sqlite")
    keys_b = _store_items(run_dir / "bob" / "keys.sqlite")
    keys_match = bool(keys_a) and keys_a.keys() == keys_b.keys() and all(
        (keys_a[k] == keys_b[k]).all() for k in keys_a)
    rows = []
    for r in alice_rounds:
        b = bob_rounds.get(r["round"], {})
        rows.append({**r, "bob_aborted": b.get("aborted"), "bob_abort_reason":
                     b.get("abort_reason"), "bob_secure_bits": b.get("secure_bits")})
    with (run_dir / "rounds.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    emulated = sum(r["emulated_seconds"] for r in alice_rounds)
    rounds_wall = rounds_wall_seconds(alice_rounds)
    secure = sum(int(v.size) for v in keys_a.values()) if keys_match else 0
    qber_z = [r["qber_z"] for r in alice_rounds if r.get("qber_z") is not None and
              not r["aborted"]]
    qber_x = [r["qber_x"] for r in alice_rounds if r.get("qber_x") is not None]
    summary: dict[str, Any] = {
        "title": scenario.title,
        "seed": scenario.seed,
        # seeded: every secret derived from the seed, so a run can be replayed; os: drawn from
        # the operating system's generator (orchestration.secrets)
        "entropy": scenario.entropy,
        "rounds": len(alice_rounds),
        "aborted": sum(1 for r in alice_rounds if r["aborted"]),
        "abort_reasons": sorted({r["abort_reason"] for r in alice_rounds if r["aborted"]}),
        "secure_bits": secure,
        "emulated_seconds": emulated,
        "key_rate_bps_emulated": secure / emulated if emulated else 0.0,
        "qber": {"Z": sum(qber_z) / len(qber_z) if qber_z else None,
                 "X": sum(qber_x) / len(qber_x) if qber_x else None},
        "keys_match": keys_match,
        "wall_seconds": wall_seconds,
        "realtime_factor": emulated / wall_seconds if wall_seconds else None,
        "rounds_wall_seconds": rounds_wall,
        "realtime_factor_rounds": emulated / rounds_wall if rounds_wall else None,
        "authentication": authentication_record(scenario),
        # stopped by a signal before its last round: what is here was delivered until then
        "interrupted": interrupted is not None,
    }
    if interrupted is not None:
        summary["interrupted_by"] = interrupted
    restarts_path = run_dir / RESTARTS_FILE
    if restarts_path.exists():  # the link restarted after a node died (runtime.restart)
        summary["restarts"] = json.loads(restarts_path.read_text())
    if fingerprint and keys_match:
        h = hashlib.sha256()
        for key_id in sorted(keys_a):
            h.update(key_id.encode())
            h.update(keys_a[key_id].tobytes())
        summary["determinism_fingerprint"] = h.hexdigest()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# --- game days: what a run honours, fail_fast --------------------------------------------------


#: The action types the emulator carries out: ``clear_faults`` only, the one action that ends a
#: fault's window in the channel emulator (``channel.impairments.fault_windows``).
IMPLEMENTED_ACTIONS: frozenset[str] = frozenset({"clear_faults", "calibrate"})


def implemented_faults() -> frozenset[str]:
    """The fault types the emulator injects (``orchestration.experiment.IMPLEMENTED_FAULTS``)."""
    return frozenset(experiment.IMPLEMENTED_FAULTS)


def implemented_actions() -> frozenset[str]:
    """The action types the emulator carries out (``IMPLEMENTED_ACTIONS``)."""
    return IMPLEMENTED_ACTIONS


def run_end_slot(scenario: Scenario) -> int:
    """The planned end of the run in slots, as the rounds' ``stop_slot`` gives it."""
    return scenario.rounds * scenario.round_slots


def run_end_s(scenario: Scenario) -> float:
    """The planned end of the run in emulated seconds."""
    return run_end_slot(scenario) / scenario.clock_rate_hz


def settled_deviations_so_far(scenario: Scenario, rows: list[dict[str, Any]]) -> list[Any]:
    """The deviations no later round can undo, from the rounds Alice has recorded so far."""
    recorded = max((r["stop_slot"] for r in rows), default=0)
    v = evaluate(scenario.steady_state, scenario.method, scenario.rollbacks, rows,
                 scenario.clock_rate_hz, run_end_slot(scenario), frame_bits=scenario.frame_bits,
                 stopped_at_slot=recorded)
    return settled_deviations(v, recorded)


def _fail_fast_check(scenario: Scenario, rows: list[dict[str, Any]], judged: int) -> int:
    """Judge each round recorded since the first ``judged`` in order (the last round of the run
    never stops it: that run completes); FailFast at the first whose completion settles a
    deviation. Returns the rounds judged so far."""
    for k in range(judged + 1, min(len(rows), scenario.rounds - 1) + 1):
        settled = settled_deviations_so_far(scenario, rows[:k])
        if settled:
            raise FailFast(settled[0].message, k)
    return max(judged, min(len(rows), scenario.rounds - 1))


# --- journal.json -------------------------------------------------------------------------------


def wall_clock(started_unix: float, wall_seconds: float) -> dict[str, float]:
    """The journal's only wall-clock fields (everything else is the same on every run)."""
    return {"started_at_unix": started_unix, "finished_at_unix": started_unix + wall_seconds,
            "wall_seconds": wall_seconds}


def key_mismatches_by_round(run_dir: Path) -> dict[int, bool] | None:
    """For each round with a stored key on either side: whether the users' stores differ for
    it (a key on one side only, or different bits); None when a store is missing."""
    paths = [run_dir / user / "keys.sqlite" for user in ("alice", "bob")]
    if not all(p.exists() for p in paths):
        return None
    sides = []
    for path in paths:
        store = KeyStore(path)
        try:
            by_round: dict[int, dict[str, Any]] = {}
            for key_id, round_id, bits in store.items():
                by_round.setdefault(int(round_id), {})[key_id] = bits
        finally:
            store.close()
        sides.append(by_round)
    a, b = sides
    out = {}
    for r in sorted(a.keys() | b.keys()):
        ka, kb = a.get(r, {}), b.get(r, {})
        out[r] = ka.keys() != kb.keys() or any(
            ka[k].shape != kb[k].shape or not (ka[k] == kb[k]).all() for k in ka)
    return out


def run_totals(run_dir: Path) -> dict[str, float]:
    """Run totals from the nodes' metrics: ``coincidences`` (nature) and ``auth_failures``
    (frames every node refused for a failed authentication tag), each only when its metrics
    files are there."""
    def metrics(node: str) -> dict[str, Any] | None:
        path = run_dir / node / "metrics.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None

    totals: dict[str, float] = {}
    nature = metrics("nature")
    if nature is not None and "coincidence_records_total" in nature:
        totals["coincidences"] = float(nature["coincidence_records_total"])
    nodes = [metrics(n) for n in PROTOCOL_NODES]
    if all(m is not None for m in nodes):
        totals["auth_failures"] = float(sum(
            v for m in nodes for k, v in m.items()  # type: ignore[union-attr]
            if k.startswith("rejected_from_") and k.endswith("_AuthenticationError")))
    return totals


#: Why a run that stopped early has no run totals: its counters ran past its last round.
STOPPED_TOTALS_NOTE = ("the run stopped before its end: the nodes' counters include rounds it "
                       "did not record")


def judged_mismatches(mismatched: dict[int, bool] | None, records: list[dict[str, Any]],
                      stopped: bool) -> dict[int, bool] | None:
    """The key stores' mismatches of the rounds the journal judges: every round of a completed
    run; of a stopped one, the rounds in ``records`` only (a store may hold a round recorded
    after the stop)."""
    if mismatched is None or not stopped:
        return mismatched
    rounds = {r["round"] for r in records}
    return {k: bad for k, bad in mismatched.items() if k in rounds}


def calibration_events(run_dir: Path) -> list[dict[str, Any]]:
    """What the users' calibration loops did (``bob/calibration.jsonl``; Alice's holds the same
    events, both running the same search), with emulated times and without wall times."""
    path = run_dir / "bob" / "calibration.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                out.append({k: v for k, v in event.items() if k != "at_unix"})
    return out


def write_journal(scenario: Scenario, run_dir: Path, status: str,
                  records: list[dict[str, Any]], wall: dict[str, float],
                  summary: dict[str, Any] | None = None, fail_fast: bool = False,
                  live: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``journal.json``: the run's status, the verdict of its steady-state hypothesis on
    ``records`` and its timeline (docs/run-directory.md). Two runs of a scenario and seed give the
    same file but for ``wall_clock``; with ``fail_fast``, ``records`` end with the round that
    settled the deviation (``run.fail_fast_round``), and so does everything the journal says.
    ``live``: the faults injected through the control plane while the run went (they are in
    ``scenario.method`` too, at the emulated times they took effect)."""
    spr = scenario.emulated_seconds_per_round
    stopped = status != "completed"
    recorded = max((r["stop_slot"] for r in records), default=0)
    mismatched = judged_mismatches(key_mismatches_by_round(run_dir), records, stopped)
    verdict = evaluate(scenario.steady_state, scenario.method, scenario.rollbacks, records,
                       scenario.clock_rate_hz, run_end_slot(scenario),
                       frame_bits=scenario.frame_bits,
                       stopped_at_slot=recorded if stopped else None, mismatched=mismatched,
                       totals={} if stopped else run_totals(run_dir),
                       totals_note=STOPPED_TOTALS_NOTE if stopped else "")
    if stopped or summary is None:
        keys_match = None if mismatched is None else bool(mismatched) and not any(
            mismatched.values())
    else:
        keys_match = summary["keys_match"]
    journal = {
        "format": "mdiqkd-journal/1",
        "title": scenario.title,
        "seed": scenario.seed,
        "entropy": scenario.entropy,
        "status": status,
        "interrupted_by": None if summary is None else summary.get("interrupted_by"),
        **{k: v for k, v in verdict.to_json().items() if k != "run_end_s"},
        "run": {"rounds_planned": scenario.rounds, "rounds_recorded": len(records),
                "seconds_per_round": spr, "emulated_seconds_planned": run_end_s(scenario),
                "emulated_seconds_recorded": recorded / scenario.clock_rate_hz,
                "duration_s": scenario.runtime.duration if scenario.runtime else None,
                "fail_fast_round": records[-1]["round"] if fail_fast and records else None,
                "keys_match": keys_match,
                "mismatched_rounds": None if mismatched is None else
                [r for r, bad in mismatched.items() if bad]},
        "live": live or [],
        "calibration": calibration_events(run_dir),
        "wall_clock": wall,
    }
    (run_dir / "journal.json").write_text(json.dumps(journal, indent=2))
    return journal
