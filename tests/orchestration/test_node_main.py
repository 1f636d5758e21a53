"""A stop that lands inside an import is still a clean stop.

Before a node runs, a stop signal raises ``_Stop`` wherever the main thread is. Inside a C
extension's import (numpy's, which imports ``datetime`` through a capsule) that exception comes
out as an ``ImportError``; seen in CI as a node that exited 1 when stopped while starting. These
tests raise the stop the same way, in process, at both stages of start-up.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from orchestration import node_main
from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.run import prepare_run_dir


@pytest.fixture
def fresh_stop(monkeypatch):
    """A new stop request per test, and the test process's own signal handlers restored. The
    stop's deadline, which ends a node's process (``os._exit``) when it has not closed in time,
    must not end the test process: it is switched off here."""
    monkeypatch.setattr(node_main._StopRequest, "_deadline", lambda self: None)
    monkeypatch.setattr(node_main, "_stop", node_main._StopRequest())
    saved = {s: signal.getsignal(s) for s in node_main.STOP_SIGNALS}
    yield node_main._stop
    for s, handler in saved.items():
        signal.signal(s, handler)


def _stop_inside_an_import(*args, **kwargs):
    """What numpy's import does with the stop's exception: another error in its place."""
    try:
        node_main._stop.request("SIGTERM")
    except node_main._Stop as e:
        raise ImportError('PyCapsule_Import could not import module "datetime"') from e
    raise AssertionError("before the node runs, a stop raises")


@pytest.fixture
def run_dir(tmp_path):
    return prepare_run_dir(load_scenario(DEFAULT_SCENARIO, {"rounds": 1}), tmp_path / "run")


def test_a_stop_turned_into_an_import_error_while_starting_exits_0(fresh_stop, run_dir,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr("orchestration.telemetry.setup_tracing", _stop_inside_an_import)
    assert node_main.main(["charles", str(run_dir)]) == 0
    assert "charles: stopped by SIGTERM before it started" in capsys.readouterr().err


def test_a_stop_turned_into_an_import_error_while_building_exits_0(fresh_stop, run_dir,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr(node_main, "build_node", _stop_inside_an_import)
    assert node_main.main(["charles", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "charles: stopped by SIGTERM" in err and "failed" not in err


def test_an_import_error_without_a_stop_still_fails_the_node(fresh_stop, run_dir, monkeypatch,
                                                             capsys):
    def broken(*args, **kwargs):
        raise ImportError("a missing module")

    monkeypatch.setattr(node_main, "build_node", broken)
    assert node_main.main(["charles", str(run_dir)]) == 1
    assert "charles: failed" in capsys.readouterr().err


def test_run_node_closes_in_order_when_its_flag_is_set_and_the_deadline_ends_nothing(
        run_dir, monkeypatch, capsys):
    """``run_node`` (an actor's thread runs it): its stop flag stops the node as a signal stops
    a process, and once it has closed, the stop's deadline (which ends a process that did not
    close in time) does nothing: the process, an actor's, goes on."""
    exits: list[int] = []
    monkeypatch.setattr(node_main, "STOP_DEADLINE_S", 3.0)  # longer than charles's close
    monkeypatch.setattr(node_main.os, "_exit", exits.append)
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    assert node_main.run_node("charles", run_dir, stop) == 0
    assert time.monotonic() - started < 3.0, "charles took longer than the deadline to close"
    time.sleep(3.5 - (time.monotonic() - started))  # past the deadline
    assert exits == []
    err = capsys.readouterr().err
    assert "charles: stopped by a stop request, closed in" in err and "failed" not in err


def test_run_node_reports_a_failure_with_its_cause(run_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no such detector")

    monkeypatch.setattr(node_main, "build_node", broken)
    causes: list[str] = []
    assert node_main.run_node("charles", run_dir, threading.Event(), causes.append) == 1
    assert causes == ["RuntimeError: no such detector"]
