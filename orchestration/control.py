"""The live control plane of a running emulation (docs/game-days.md, "Live control").

While a game day runs, the orchestrator serves a small HTTP API on 127.0.0.1 (its address and a
bearer token in ``RUN_DIR/orchestrator/control.json``, owner-only) through which an operator, the
``mdiqkd fault`` and ``mdiqkd status`` commands or a Chaos Toolkit experiment inject and clear
faults and read the run's current indicators:

* ``GET /status``: rounds done, the last round's QBERs, key bits and rate, aborts, the emulated
  time the rounds have reached (``emulated_seconds``) and the link (``emulated_seconds_reached``:
  nature samples ahead of the rounds' distillation), the faults active there;
* ``GET /faults``: every fault of the run, the scenario's and the live ones, with their windows;
* ``POST /faults`` ``{"target", "type", "params", "duration_s"?, "name"?}``: inject a fault;
* ``POST /faults/clear`` ``{"name"?}``: end one live or scenario fault, or every active one.

A live fault takes effect at the first point of emulated time nothing has been emulated at yet,
and that is the time recorded: nature's physics faults from the next frame it has not sampled
(it is asked over its control socket, ``RunConfig.control``), classical-channel faults from the
round after the latest one whose messages the proxies have seen. Every injection and clear joins
the run's timeline as a method entry at that time, so ``journal.json``'s verdict judges its
phases like the scenario's own. Other fault types (carried out by a node told at its start, or not
emulated) are refused with the reason. A live run is not reproducible by its seed alone: the
journal lists its live entries (``live``).

The API is for the machine it runs on: it binds 127.0.0.1 and every request needs the token.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import secrets as os_secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zmq
from pydantic import ValidationError

from channel.impairments import PHYSICS_FAULTS, TimelineEntry
from orchestration.config import Scenario
from orchestration.edge import CLASSICAL_FAULTS, EdgeBook, EdgeFault
from orchestration.experiment import ActionModel, FieldProblem, MethodEntry

CONTROL_FILE = "control.json"
#: How long the orchestrator waits for nature's answer to a control request.
NATURE_TIMEOUT_S = 10.0
LIVE_PHYSICS = frozenset(PHYSICS_FAULTS)
LIVE_EDGE = frozenset(CLASSICAL_FAULTS)


class ControlError(ValueError):
    """A request the control plane refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def entry_payload(entry: TimelineEntry) -> dict[str, Any]:
    """A timeline entry as nature's control socket reads it (JSON)."""
    return {**asdict(entry), "params": dict(entry.params)}


def _problems(e: ValidationError) -> str:
    """A validation error as ``field.path: message`` items (a ``FieldProblem`` adds its path)."""
    out = []
    for x in e.errors():
        cause = (x.get("ctx") or {}).get("error")
        path = [*x["loc"], *(cause.path if isinstance(cause, FieldProblem) else ())]
        message = str(cause) if isinstance(cause, FieldProblem) else x["msg"]
        out.append(f"{'.'.join(map(str, path))}: {message}")
    return "; ".join(out)


class NatureControl:
    """The orchestrator's end of nature's control socket (REQ, one request at a time)."""

    def __init__(self, endpoint: str, token: str = "",
                 timeout_s: float = NATURE_TIMEOUT_S) -> None:
        self._token = token  # nature's control token (its secrets): nobody else may steer it
        self._ctx = zmq.Context()
        self._endpoint, self._timeout_ms = endpoint, int(timeout_s * 1000)
        self._lock = threading.Lock()
        self._sock: zmq.Socket | None = None
        self._closed = False

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                raise ControlError("the run is ending", HTTPStatus.SERVICE_UNAVAILABLE)
            if self._sock is None:
                self._sock = self._ctx.socket(zmq.REQ)
                self._sock.setsockopt(zmq.LINGER, 0)
                self._sock.setsockopt(zmq.RCVTIMEO, self._timeout_ms)
                self._sock.setsockopt(zmq.SNDTIMEO, self._timeout_ms)
                self._sock.connect(self._endpoint)
            try:
                self._sock.send_json({**payload, "token": self._token})
                reply = self._sock.recv_json()
            except zmq.Again:  # no answer: a REQ socket is then stuck; start afresh next time
                self._sock.close()
                self._sock = None
                raise ControlError("the channel emulator did not answer within "
                                   f"{self._timeout_ms / 1000:g} s (is the run still going?)",
                                   HTTPStatus.SERVICE_UNAVAILABLE) from None
            except zmq.ZMQError as e:  # the run is ending: its context is closed
                raise ControlError(f"the channel emulator is gone ({e})",
                                   HTTPStatus.SERVICE_UNAVAILABLE) from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise ControlError(f"the channel emulator refused: {error}", HTTPStatus.CONFLICT)
        return reply

    def close(self) -> None:
        """After any request in flight (a socket must not close under a thread using it: libzmq
        aborts the process)."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        self._ctx.term()


@dataclass
class LiveFaults:
    """The faults injected and cleared while the run goes, and the scenario's; thread-safe."""

    scenario: Scenario
    edge: EdgeBook | None = None
    nature: NatureControl | None = None
    live: list[dict[str, Any]] = field(default_factory=list)
    entries: list[MethodEntry] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def round_s(self) -> float:
        return self.scenario.emulated_seconds_per_round

    def names(self) -> set[str]:
        return {e.name for e in [*(self.scenario.method or []), *self.entries]}

    def method(self) -> list[MethodEntry]:
        """The scenario's method with the live entries, in time order: what the verdict judges."""
        return sorted([*(self.scenario.method or []), *self.entries], key=lambda e: e.at)

    def inject(self, request: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise ControlError("the body must be a JSON object")
        unknown = set(request) - {"target", "type", "params", "duration_s", "name"}
        if unknown:
            raise ControlError(f"unknown field(s) {sorted(unknown)}; give target, type, "
                               "params, duration_s, name")
        kind = request.get("type")
        with self.lock:
            name = request.get("name") or f"live {kind} {len(self.live) + 1}"
            if name in self.names():
                raise ControlError(f"a fault named {name!r} exists already; choose a name")
            try:
                entry = MethodEntry.model_validate({
                    "at": 0, "name": name, "duration": request.get("duration_s"),
                    "fault": {"type": kind, "target": request.get("target"),
                              "params": request.get("params") or {}}})
            except ValidationError as e:
                raise ControlError(_problems(e)) from None
            assert entry.fault is not None
            start_s = self._start(entry)
            entry = entry.model_copy(update={"at": start_s})
            self.entries.append(entry)
            record = {"name": name, "type": kind, "target": entry.fault.target,
                      "params": dict(entry.fault.params), "duration_s": entry.duration,
                      "start_s": start_s, "requested_unix": time.time(), "cleared_s": None}
            self.live.append(record)
            return record

    def _start(self, entry: MethodEntry) -> float:
        assert entry.fault is not None
        kind = entry.fault.type
        timeline = TimelineEntry(0.0, entry.name, kind, entry.fault.target,
                                 dict(entry.fault.params), entry.duration)
        if kind in LIVE_EDGE:
            if self.edge is None:
                raise ControlError("this run has no classical-channel proxies")
            first = self.edge.latest_round + 1
            stop = math.inf if entry.duration is None else first + max(
                1, math.ceil(entry.duration / self.round_s - 1e-12))
            self.edge.add(EdgeFault(entry.name, kind, entry.fault.target,
                                    dict(entry.fault.params), first,
                                    stop if math.isfinite(stop) else 1 << 62))
            return first * self.round_s
        if kind in LIVE_PHYSICS:
            if self.nature is None:
                raise ControlError("this run has no control socket to the channel emulator")
            reply = self.nature.request({"op": "inject", "entry": entry_payload(timeline)})
            return float(reply["start_s"])
        raise ControlError(f"fault {kind} cannot be injected live (live: "
                           f"{', '.join(sorted(LIVE_PHYSICS | LIVE_EDGE))}); put it in the "
                           "scenario's method", HTTPStatus.UNPROCESSABLE_ENTITY)

    def clear(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """End the named fault (or every one that can be): a physics fault from the next frame
        nature has not sampled, a classical one from the next round the proxies have not seen;
        returns what was ended, with the time. Faults a node carries out as it was told at its
        start (Charles's software, a key store, a node process) cannot be ended live: naming one
        is refused, and clearing every fault leaves them be (and says so in the journal, whose
        clears name each fault they end)."""
        from channel.timeline import fault_windows
        from orchestration.experiment import timeline_entries

        name = request.get("name") if isinstance(request, dict) else None
        if name is not None and not isinstance(name, str):
            raise ControlError("name must be a text")
        with self.lock:
            windows = fault_windows(timeline_entries(self.method()))
            if name is not None:
                named = [f for f in windows if f.name == name]
                if not named:
                    raise ControlError(f"no fault named {name!r}", HTTPStatus.NOT_FOUND)
                if named[0].kind not in LIVE_PHYSICS | LIVE_EDGE:
                    raise ControlError(f"fault {name!r} ({named[0].kind}) is carried out as "
                                       "its node was told at its start; it cannot be ended "
                                       "live", HTTPStatus.UNPROCESSABLE_ENTITY)
            now = self.now_s(0.0)
            open_ = [f for f in windows if name in (None, f.name) and f.end_s > now]
            ended: list[dict[str, Any]] = []
            physics = [f for f in open_ if f.kind in LIVE_PHYSICS]
            if physics and self.nature is not None:
                for f in physics:
                    reply = self.nature.request({"op": "clear", "name": f.name})
                    ended.append({"name": f.name, "end_s": float(reply["end_s"])})
            if self.edge is not None:
                stop = self.edge.latest_round + 1
                for f in (f for f in open_ if f.kind in LIVE_EDGE):
                    if self.edge.end(f.name, stop):
                        ended.append({"name": f.name, "end_s": stop * self.round_s})
            for e in ended:
                label, taken = f"clear {e['name']}"[:56], self.names()
                label = next(f"{label} ({k})" for k in range(2, 10**6)
                             if f"{label} ({k})" not in taken) if label in taken else label
                self.entries.append(MethodEntry(
                    at=e["end_s"], name=label,
                    action=ActionModel(type="clear_faults", params={"fault": e["name"]})))
                for record in self.live:
                    if record["name"] == e["name"] and record["cleared_s"] is None:
                        record["cleared_s"] = e["end_s"]
            return ended

    def now_s(self, done_s: float) -> float:
        """The emulated time the link has reached: the further of the rounds recorded
        (``done_s``) and the frames nature has sampled (the frames' own time, which no node's
        message can push ahead)."""
        now = done_s
        if self.nature is not None:
            with contextlib.suppress(ControlError):
                now = max(now, float(self.nature.request({"op": "where"})["now_s"]))
        return now

    def faults(self, now_s: float) -> list[dict[str, Any]]:
        """Every fault of the run with its window, and whether it is active at ``now_s``."""
        from channel.impairments import fault_windows
        from orchestration.experiment import timeline_entries

        live = {r["name"] for r in self.live}
        with self.lock:
            windows = fault_windows(timeline_entries(self.method()))
        return [{"name": f.name, "type": f.kind, "target": f.target, "params": dict(f.params),
                 "start_s": f.start_s, "end_s": None if math.isinf(f.end_s) else f.end_s,
                 "source": "live" if f.name in live else "scenario",
                 "active": f.start_s <= now_s < f.end_s} for f in windows]


def read_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """Alice's round records so far (complete lines only)."""
    from orchestration.run import _read_jsonl

    return _read_jsonl(run_dir / "alice" / "rounds.jsonl")


def status(run_dir: Path, scenario: Scenario, faults: LiveFaults | None) -> dict[str, Any]:
    """The run's current indicators, from the rounds recorded so far."""
    rows = read_rounds(run_dir)
    done_s = max((r["stop_slot"] for r in rows if "stop_slot" in r), default=0) \
        / scenario.clock_rate_hz
    now_s = done_s if faults is None else faults.now_s(done_s)
    last = rows[-1] if rows else {}
    bits = sum(int(r.get("secure_bits", 0)) for r in rows)
    return {
        "rounds_done": len(rows), "rounds_planned": scenario.rounds,
        "emulated_seconds": done_s, "emulated_seconds_reached": now_s,
        "last_round": None if not rows else {
            k: last.get(k) for k in ("round", "qber_z", "qber_x", "secure_bits", "aborted",
                                     "abort_reason", "announced", "emulated_seconds")},
        # the most recent round that measured each error rate (an aborted round may not have)
        "last_measured": {k: next(({"round": r["round"], "value": r[k]} for r in reversed(rows)
                                   if r.get(k) is not None), None)
                          for k in ("qber_z", "qber_x")},
        "secure_bits": bits,
        "secure_key_rate_bps": bits / done_s if done_s else None,
        "aborted_rounds": sum(1 for r in rows if r.get("aborted")),
        "faults": [] if faults is None else faults.faults(now_s),
    }


class ControlServer:
    """The HTTP API, in a thread of the orchestrator, for the run's lifetime."""

    def __init__(self, run_dir: Path, scenario: Scenario, faults: LiveFaults) -> None:
        self.run_dir, self.scenario, self.faults = run_dir, scenario, faults
        self.token = os_secrets.token_urlsafe(24)
        routes: dict[tuple[str, str], Callable[[Any], Any]] = {
            ("GET", "/status"): lambda _: status(run_dir, scenario, faults),
            ("GET", "/faults"): lambda _: {"faults": faults.faults(faults.now_s(
                status(run_dir, scenario, None)["emulated_seconds"])), "live": faults.live},
            ("POST", "/faults"): faults.inject,
            ("POST", "/faults/clear"): lambda body: {"ended": faults.clear(body or {})},
        }
        token = self.token

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                if not hmac.compare_digest(self.headers.get("Authorization") or "",
                                           f"Bearer {token}"):
                    self._answer(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"})
                    return
                route = routes.get((method, self.path.rstrip("/") or "/"))
                if route is None:
                    self._answer(HTTPStatus.NOT_FOUND, {"error": f"no route {method} "
                                                        f"{self.path}"})
                    return
                body = None
                if method == "POST":
                    try:
                        length = int(self.headers.get("Content-Length") or 0)
                    except ValueError:
                        length = -1
                    if not 0 <= length <= 1 << 16:
                        self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                     {"error": "a body of 0 to 64 KiB, with its length"})
                        return
                    try:
                        body = json.loads(self.rfile.read(length) or b"{}")
                    except ValueError as e:
                        self._answer(HTTPStatus.BAD_REQUEST, {"error": f"not JSON: {e}"})
                        return
                try:
                    self._answer(HTTPStatus.OK, route(body))
                except ControlError as e:
                    self._answer(e.status, {"error": str(e)})
                except Exception as e:  # noqa: BLE001 - a request never ends the server
                    self._answer(HTTPStatus.INTERNAL_SERVER_ERROR,
                                 {"error": f"{type(e).__name__}: {e}"[:300]})

            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None  # requests are not logged (the token is in a header, never here)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="control",
                                        daemon=True)

    def start(self, directory: Path) -> Path:
        """Serve, and write ``control.json`` (owner-only) in ``directory``."""
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / CONTROL_FILE
        path.unlink(missing_ok=True)
        import os

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.url, "token": self.token}, f)
        self._thread.start()
        return path

    def stop(self, directory: Path) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        (directory / CONTROL_FILE).unlink(missing_ok=True)


class ControlClient:
    """``mdiqkd fault`` and ``mdiqkd status``: requests to a live run's control plane."""

    def __init__(self, run_dir: Path, timeout_s: float = 30.0) -> None:
        path = run_dir / "orchestrator" / CONTROL_FILE
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise ControlError(f"{path} does not exist: the run has ended, has not started, or "
                               "runs without a control plane") from None
        self.url, self.token, self.timeout_s = info["url"], info["token"], timeout_s

    def call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", str(e))
            except ValueError:
                message = str(e)
            raise ControlError(message, e.code) from None
        except OSError as e:
            raise ControlError(f"cannot reach the run's control plane at {self.url}: {e}",
                               HTTPStatus.SERVICE_UNAVAILABLE) from None
