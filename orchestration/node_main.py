"""Entry point of one node process: ``python -m orchestration.node_main ROLE RUN_DIR``.

Reads ``RUN_DIR/config.json`` (public: the scenario without its seed and game-day timeline, the
endpoints) and the node's own ``RUN_DIR/ROLE/secrets.json`` (``orchestration.secrets``; nature's
hold the fault timeline), builds the node, sets up telemetry, and runs the node until its work
is done or it is asked to stop; then it flushes traces and metrics and exits 0. Any other failure
exits 1 with the error on stderr.

Stopping is orderly. SIGINT, SIGTERM and SIGHUP, and the death of the process that started the
node (``--parent PID``: a parent-death signal where Linux offers one, and a watchdog that polls
the parent), only *ask* the node to stop: they set its stop flag, every wait of the node ends
with ``NodeStopped`` at its next poll, and the node closes in order (the user nodes settle the
two-phase key commit first, see ``nodes.users.UserNode.close``). Nothing is raised inside
library code (a lock, the key store), so no stop leaves a traceback or a half-written file.
Before the node runs (imports take seconds: numba), a signal ends the process at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

# Only the standard library is imported before the signal handlers are in place (main): the
# project's modules load numba and take seconds, and a SIGTERM in that time must still end the
# node cleanly.
if TYPE_CHECKING:
    from orchestration.config import Scenario
    from orchestration.runconfig import RunConfig
    from orchestration.secrets import NodeSecrets


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: A node asked to stop is gone within this, whatever it was doing (a kernel over a whole batch
#: can take seconds on a loaded machine): the orderly stop normally takes well under a second,
#: and the launcher kills a node after 5 s.
STOP_DEADLINE_S = 4.5
#: How often the watchdog looks for its parent (a lost parent stops the node within this).
PARENT_POLL_S = 0.25
_PR_SET_PDEATHSIG = 1


class _Stop(Exception):
    pass


class _StopRequest:
    """Why and whether the node was asked to stop. Before the node runs, a stop ends the process
    at once (``_Stop``); once it runs, a stop sets the node's flag and nothing more."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.flag: threading.Event | None = None
        self.role = "node"
        self.asked_at: float | None = None
        #: set once the node has closed (``run_node``): the deadline then ends nothing
        self.closed = threading.Event()

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason, self.asked_at = reason, time.monotonic()
        if self.flag is None:
            raise _Stop(self.reason)
        if not self.flag.is_set():
            self.flag.set()
            threading.Thread(target=self._deadline, name="stop-deadline", daemon=True).start()

    def _deadline(self) -> None:
        if self.closed.wait(STOP_DEADLINE_S):
            return
        _say(f"{self.role}: did not stop within {STOP_DEADLINE_S:g} s of {self.reason}; exiting "
             "(where each thread was, below)")
        with contextlib.suppress(OSError, ValueError):
            faulthandler.dump_traceback(sys.stderr, all_threads=True)
        os._exit(1)

    def took(self) -> str:
        return "" if self.asked_at is None else f" in {time.monotonic() - self.asked_at:.2f} s"

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request(signal.Signals(signum).name)

    def run_with(self, flag: threading.Event) -> None:
        """From now on a stop sets ``flag``; a stop asked for already sets it at once."""
        self.flag = flag
        if self.reason is not None:
            self.request(self.reason)


_stop = _StopRequest()


def _watch_parent(parent: int) -> None:
    """Stop the node when ``parent`` dies: Linux sends SIGTERM (a parent-death signal), and a
    watchdog thread notices a changed parent elsewhere or if the parent died before the signal
    was armed. So no node outlives the ``mdiqkd run`` that started it, even after a SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still runs

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, like any stop

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def build_node(role: str, run: RunConfig, scenario: Scenario, secrets: NodeSecrets, tracer,  # type: ignore[no-untyped-def]
               stop: threading.Event | None = None):
    """The node object of ``role``, built from public configuration and its own secrets only;
    ``stop`` (a new flag if None) asks it to stop."""
    from nodes.base import Endpoints, NodeContext
    from nodes.records import RoundLayout
    from nodes.transport import classical_max_message_bytes
    from orchestration.config import (
        build_calibration,
        build_charles_config,
        build_intensity_monitor,
        build_link,
        build_round_config,
        build_settings,
        settings_plan,
    )
    from orchestration.runconfig import secure_links

    endpoints = Endpoints(run.mailboxes, run.pulses, run.records, run.connect)
    ctx = NodeContext(role, endpoints, secure_links(role, scenario, secrets), tracer,
                      run.run_dir, timeout_s=run.message_timeout_s,
                      max_message_bytes=classical_max_message_bytes(scenario.round_slots),
                      stop=stop if stop is not None else threading.Event())
    resume = run.resume
    if scenario.runtime is not None and scenario.runtime.restart:
        _start_session(role, ctx, resume)
    elif resume is not None:
        raise ValueError("config.json resumes a session, but the scenario does not restart "
                         "(runtime.restart)")
    if role == "nature":
        from nodes.nature import ChannelEmulator, NatureNode
        from nodes.transport import PulseLayout

        link = build_link(scenario, secrets.drift_seed, secrets.fault_timeline)
        plans = {u: settings_plan(scenario, u) for u in ("alice", "bob")}  # type: ignore[arg-type]
        layout = PulseLayout(scenario.rounds, scenario.round_frames, scenario.batch_frames,
                             scenario.frame_bits, {u: p.n_combos for u, p in plans.items()})
        emulator = ChannelEmulator(link, plans, _required(secrets.nature_seed, "nature"), layout,
                                   timeline=tuple(secrets.fault_timeline),
                                   control_token=secrets.control_token)
        if resume is not None:  # the rounds before were emitted in an earlier session
            emulator.next_round = resume.round
            emulator.sampled_until_frame = resume.round * scenario.round_frames
        return ctx, NatureNode(ctx, emulator, run.records, run.control)
    if role == "charles":
        from nodes.charles import CharlesNode
        from nodes.relay_faults import RelayMisbehaviour

        layout = RoundLayout(scenario.rounds, scenario.round_frames, scenario.batch_frames,
                             scenario.frame_bits)
        misbehaviour = RelayMisbehaviour.from_timeline(  # his own faults, from his own secrets
            secrets.relay_faults, secrets.relay_seed, scenario.clock_rate_hz, scenario.frame_bits)
        return ctx, CharlesNode(ctx, layout, build_charles_config(scenario), run.records,
                                misbehaviour, scenario.clock_rate_hz)
    from nodes.users import UserNode, UserPlan

    ctx.peers["charles"].timeout_s = max(run.message_timeout_s, run.announcement_timeout_s)

    settings = build_settings(scenario, role, _required(secrets.settings_key, role))  # type: ignore[arg-type]
    plan = UserPlan(role, settings, build_round_config(scenario),  # type: ignore[arg-type]
                    scenario.rounds, scenario.round_frames, scenario.batch_frames,
                    _required(secrets.protocol_seed, role), scenario.postprocessing.qber_prior,
                    scenario.clock_rate_hz, secrets.entropy == "os",
                    scenario.runtime is not None and scenario.runtime.pacing == "realtime",
                    secrets.store_full_rounds, build_calibration(scenario),
                    secrets.calibrate_rounds,
                    (tuple(i.name for i in scenario.alice.source.intensities),
                     tuple(i.name for i in scenario.bob.source.intensities)),
                    build_intensity_monitor(scenario),
                    0 if resume is None else resume.round)
    return ctx, UserNode(ctx, plan)


def _start_session(role: str, ctx: Any, resume: Any) -> None:
    """A link that restarts (``runtime.restart``): the node records its progress durably from
    its first frame (``nodes.session``); a restarted one first resumes its links past
    everything used before (a user's pools rebuilt from its ledger first)."""
    from nodes.keystore import KeyStore
    from nodes.session import Progress, read_progress, replay_refills, resume_links

    if not ctx.links:  # nature: nothing to resume but the round (build_node)
        return
    if resume is not None:
        own = read_progress(ctx.node_dir, list(ctx.links))
        if role in ("alice", "bob"):
            store = KeyStore(ctx.node_dir / "keys.sqlite")
            try:
                replay_refills(ctx.links["bob" if role == "alice" else "alice"], role,
                               store.commits())
            finally:
                store.close()
        resume_links(role, ctx.links, resume.seqs, own)
    ctx.progress = Progress(ctx.node_dir, ctx.links)


def _required(value: int | None, role: str) -> int:
    if value is None:
        raise ValueError(f"{role}'s secrets lack a value it needs")
    return value


def _parse(args: list[str]) -> tuple[list[str], dict[str, int]]:
    """``ROLE RUN_DIR [--parent PID] [--status-fd FD]``: the positional arguments and options."""
    positional, options = [], {}
    it = iter(args)
    for a in it:
        if a in ("--parent", "--status-fd"):
            value = next(it, "")
            if value.isdigit():
                options[a[2:]] = int(value)
                continue
        positional.append(a)
    return positional, options


def _last_line(text: str) -> str:
    return next((x.strip() for x in reversed(text.splitlines()) if x.strip()), text)


def _report_cause(fd: int | None, line: str) -> None:
    """The last line of the error that ended the node, on the status pipe the launcher reads (it
    is not on the disk the node's log may have filled)."""
    if fd is None:
        return
    with contextlib.suppress(OSError):  # nobody listens (the launcher is gone)
        os.write(fd, line.encode(errors="replace")[:4096] + b"\n")


def _say(text: str) -> None:
    """A line on stderr (the node's log); the log may be gone (a dead launcher's pipe, a full
    disk): never an exception for that."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


@dataclass
class LoadedNode:
    """What a node reads before it is built: the public run configuration and scenario, its own
    secrets, and its tracer (with the function that flushes and shuts it down)."""

    role: str
    run: RunConfig
    scenario: Scenario
    secrets: NodeSecrets
    tracer: Any
    shutdown: Callable[[], None]


def load_node(role: str, run_dir: Path) -> LoadedNode:
    """Read ``RUN_DIR/config.json`` and ``RUN_DIR/ROLE/secrets.json`` and set up tracing."""
    from orchestration.config import Scenario
    from orchestration.runconfig import RunConfig
    from orchestration.secrets import read_node_secrets
    from orchestration.telemetry import setup_tracing

    data = json.loads((run_dir / "config.json").read_text())
    run = RunConfig.model_validate(data["run"])
    scenario = Scenario.model_validate(data["scenario"])  # no master seed, no timeline
    secrets = read_node_secrets(run_dir, role)
    tracer, shutdown = setup_tracing(role, run_dir, scenario.tracing, run.otlp_endpoint)
    return LoadedNode(role, run, scenario, secrets, tracer, shutdown)


def run_node(role: str, run_dir: Path, stop: threading.Event,
             report_cause: Callable[[str], None] | None = None) -> int:
    """The node program, for a thread of any process (a Ray actor's, ``orchestration.ray``):
    build the node of ``role`` from ``run_dir`` and run it until its work is done or ``stop``
    is set, then close it in order (as ``main`` does on a signal). Returns 0, or 1 after a
    failure, whose traceback goes to stderr and whose last line to ``report_cause``. Installs no
    signal handler; a stop that does not close within ``STOP_DEADLINE_S`` ends the process, as
    in ``main``."""
    request = _StopRequest()
    request.role = role
    try:
        loaded = load_node(role, run_dir)
    except Exception:  # noqa: BLE001 - report and fail loudly, naming the node
        _say(f"{role}: failed\n{traceback.format_exc()}")
        if report_cause is not None:
            report_cause(_last_line(traceback.format_exc()))
        return 1
    flag = threading.Event()

    def relay() -> None:  # ``stop`` asks the node to stop, like a signal (with its deadline)
        stop.wait()
        with contextlib.suppress(_Stop):  # asked before the node is built: it stops once built
            request.request("a stop request")

    threading.Thread(target=relay, name="stop-relay", daemon=True).start()
    try:
        return _run_loaded(loaded, request, flag, report_cause)
    finally:
        request.closed.set()  # the process goes on (an actor's): the deadline must not end it


def _run_loaded(loaded: LoadedNode, request: _StopRequest, flag: threading.Event,
                report_cause: Callable[[str], None] | None) -> int:
    """Build and run a loaded node; a stop ``request`` sets ``flag`` from the moment it is
    built (before, it raises ``_Stop`` where the stop lands, in ``main``'s process)."""
    from nodes.transport import NodeStopped

    role, run = loaded.role, loaded.run

    def cause(text: str) -> None:
        if report_cause is not None:
            report_cause(_last_line(text))

    ctx = node = metrics = None
    code = 0
    try:
        ctx, node = build_node(role, run, loaded.scenario, loaded.secrets, loaded.tracer, flag)
        if run.metrics.get(role):  # the live metrics endpoint (nodes.metrics)
            from nodes.metrics import NodeMetrics

            metrics = NodeMetrics(role, run.link, run.otlp_metrics_endpoint)
            metrics.serve(run.metrics[role])
            ctx.attach_metrics(metrics)
        request.run_with(ctx.stop)
        node.run()
    except _Stop as e:  # while the node was being built
        _say(f"{role}: stopped by {e}")
    except NodeStopped:  # said below, once closed
        pass
    except Exception as e:  # noqa: BLE001 - report and fail loudly, naming the node
        if request.reason is not None and request.flag is None:  # the stop, inside an import
            _say(f"{role}: stopped by {request.reason} (it interrupted {type(e).__name__})")
        else:
            _say(f"{role}: failed\n{traceback.format_exc()}")
            cause(traceback.format_exc())
            code = 1
    finally:
        if request.flag is None:  # a second signal must not interrupt the closing below
            request.run_with(ctx.stop if ctx is not None else threading.Event())
        try:
            if node is not None:
                node.close()
            if ctx is not None:
                ctx.close()
        except Exception:  # noqa: BLE001 - e.g. the disk is full: say so, in one place
            _say(f"{role}: failed while closing\n{traceback.format_exc()}")
            if code == 0:
                cause(traceback.format_exc())
            code = 1
        finally:
            if metrics is not None:  # final values stay scrapeable a little longer
                time.sleep(run.metrics_linger_s)
                metrics.close()
            loaded.shutdown()
    if request.reason is not None and code == 0:
        _say(f"{role}: stopped by {request.reason}, closed{request.took()} after it")
    return code


def main(argv: list[str] | None = None) -> int:
    args, options = _parse(argv if argv is not None else sys.argv[1:])
    parent, status_fd = options.get("parent"), options.get("status-fd")
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop.on_signal)
    role = _stop.role = args[0] if args else "node"
    try:
        if parent is not None:
            _watch_parent(parent)
        from orchestration.secrets import NODES

        if len(args) != 2 or args[0] not in NODES:
            _say(f"usage: python -m orchestration.node_main {'|'.join(NODES)} RUN_DIR "
                 "[--parent PID] [--status-fd FD]")
            return 2
        # the node's own modules, loaded while a stop still ends the process at once
        from nodes.transport import NodeStopped  # noqa: F401
        loaded = load_node(role, Path(args[1]))
    except _Stop as e:
        _say(f"{role}: stopped by {e} before it started")
        return 0
    except BaseException as e:  # noqa: BLE001 - only a stop's, re-raised otherwise
        if _stop.reason is None:
            raise
        # the stop's _Stop was raised inside an import and came out as another error (numpy's C
        # extension turns it into an ImportError; pydantic-core's Rust, caught in importing
        # datetime's C API, into a pyo3 PanicException, a BaseException): it is still the stop
        _say(f"{role}: stopped by {_stop.reason} before it started (it interrupted "
             f"{type(e).__name__})")
        return 0
    return _run_loaded(loaded, _stop, threading.Event(),
                       lambda line: _report_cause(status_fd, line))


if __name__ == "__main__":
    status = main()
    if _stop.reason is not None:
        # stopped, and closed in order above: do not wait at exit for work abandoned in worker
        # threads (a kernel over a pulse batch), which interpreter shutdown would join
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
