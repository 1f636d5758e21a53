"""Alice, Bob and Charles as three real processes over ZeroMQ on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from classical.messages import Committed
from nodes.keystore import KeyStore
from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.faults import MailboxProxy, flip_byte
from orchestration.launchers import LocalProcessLauncher
from orchestration.run import RunFailed, execute, prepare_run_dir
from orchestration.runconfig import HOST, free_ports
from orchestration.traces import load_spans, round_trees

SMALL = {"round_frames": 256, "rounds": 1}  # a quick round: it aborts for too few counts


def _run(tmp: Path, name: str, **overrides):
    scenario = load_scenario(DEFAULT_SCENARIO, overrides)
    run_dir = prepare_run_dir(scenario, tmp / name)
    return scenario, run_dir


def _execute_behind_proxy(scenario, run_dir: Path, mutation, node: str = "alice",
                          message_timeout_s: float = 10.0, announcement_timeout_s: float = 120.0):
    """Run with a fault-injecting proxy in front of ``node``'s mailbox (every node exits 0); a
    message that does not come ends the wait after ``message_timeout_s`` (an announcement after
    ``announcement_timeout_s``)."""
    config = json.loads((run_dir / "config.json").read_text())
    proxy_address = f"tcp://{HOST}:{free_ports(1)[0]}"
    config["run"]["connect"] = {node: proxy_address}
    config["run"]["message_timeout_s"] = message_timeout_s
    config["run"]["announcement_timeout_s"] = announcement_timeout_s
    (run_dir / "config.json").write_text(json.dumps(config))
    proxy = MailboxProxy(proxy_address, config["run"]["mailboxes"][node], mutation)
    try:
        return execute(scenario, run_dir), proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    scenario, run_dir = _run(tmp_path_factory.mktemp("runs"), "quick", rounds=2)
    summary = execute(scenario, run_dir, fingerprint=True)
    return scenario, run_dir, summary


def test_identical_keys_on_both_sides_of_the_estimated_length(quickstart_run):
    _, run_dir, summary = quickstart_run
    assert summary["rounds"] == 2 and summary["aborted"] == 0
    assert summary["keys_match"] is True and summary["secure_bits"] > 0
    rounds = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    a, b = KeyStore(run_dir / "alice" / "keys.sqlite"), KeyStore(run_dir / "bob" / "keys.sqlite")
    for r in rounds:
        assert a.get(r["key_id"]).tolist() == b.get(r["key_id"]).tolist()
        assert r["secure_length"] == r["output_bits"]
        # the stored key is the amplified key less what repaid authentication's key pools
        assert 0 < r["auth_key_bits_replenished"] < 0.5 * r["secure_length"]
        assert a.get(r["key_id"]).size == r["secure_length"] - r["auth_key_bits_replenished"]
    assert summary["secure_bits"] == sum(r["secure_bits"] for r in rounds)
    assert summary["key_rate_bps_emulated"] == pytest.approx(
        summary["secure_bits"] / summary["emulated_seconds"])


def test_summary_json_records_the_authentication_mode_and_its_epsilon(quickstart_run):
    scenario, run_dir, summary = quickstart_run
    written = json.loads((run_dir / "summary.json").read_text())
    assert written["authentication"] == summary["authentication"]
    auth = written["authentication"]
    assert scenario.authentication.mode == "wegman-carter"
    assert auth["mode"] == "information-theoretic-wegman-carter" and auth["tag_bits"] == 128
    # two evaluations of a polynomial hash over GF(2^61 - 1): ((N + 1) / p)^2 for N 32-bit blocks
    assert auth["message_bytes_bound"] >= 9 * scenario.round_slots  # an announcement of every slot
    blocks = -(-auth["message_bytes_bound"] // 4)
    assert auth["epsilon_per_message"] == pytest.approx(((blocks + 1) / (2**61 - 1)) ** 2,
                                                        rel=1e-12)
    assert auth["epsilon_per_message"] < 1e-15


def test_one_trace_per_round_spans_all_four_nodes(quickstart_run):
    _, run_dir, _ = quickstart_run
    spans = load_spans(run_dir)
    trees = round_trees(spans)
    assert sorted(r for r in trees if r >= 0) == [0, 1]
    for r in (0, 1):
        (root,) = trees[r]  # Alice's round span is the only root of the round
        trace_spans = [s for s in spans if s.trace_id == root.trace_id]
        assert {s.service for s in trace_spans} == {"alice", "bob", "charles", "nature"}
        names = {(s.service, s.name) for s in trace_spans}
        for stage in ("emit", "sift", "estimate", "reconcile", "verify", "amplify", "commit",
                      "store"):
            assert ("alice", stage) in names and ("bob", stage) in names
        assert ("charles", "announce") in names and ("charles", "decide") in names
        measures = [s for s in trace_spans if s.name == "measure"]
        assert {m.service for m in measures} == {"nature"}  # the emulator's own process
        assert measures and all(len(m.links) == 2 and m.kind == "CONSUMER" for m in measures)
        emits = {s.span_id for s in trace_spans if s.name == "emit"}
        assert all(set(m.links) == emits for m in measures)  # linked to both senders' frames


def test_the_next_round_is_emitted_before_this_round_is_distilled(quickstart_run):
    """Rounds overlap: both users emit round 1 before they start sifting round 0, and nature
    measures round 1 before they have distilled round 0 (it may finish before their sifting
    starts, when the relay's announcement of round 0 is the slower: only the overlap with the
    whole distillation is certain)."""
    _, run_dir, _ = quickstart_run
    spans = load_spans(run_dir)

    def one(service: str, name: str, r: int):
        (span,) = [s for s in spans if s.service == service and s.name == name
                   and s.attributes.get("mdiqkd.round") == r
                   and s.attributes.get("mdiqkd.phase", "final") == "final"]
        return span

    for user in ("alice", "bob"):
        assert one(user, "emit", 1).end <= one(user, "sift", 0).start
    stored_0 = one("alice", "store", 0)
    measuring_1 = [s for s in spans if s.name == "measure" and s.attributes["mdiqkd.round"] == 1]
    assert min(s.start for s in measuring_1) < stored_0.end


def test_spans_carry_no_key_material(quickstart_run):
    _, run_dir, _ = quickstart_run
    store = KeyStore(run_dir / "alice" / "keys.sqlite")
    key_hex = [bits[:256].tobytes().hex() for _, _, bits in store.items()]
    packed_hex = [__import__("numpy").packbits(bits[:256]).tobytes().hex()
                  for _, _, bits in store.items()]
    text = "".join(p.read_text() for p in (run_dir / "traces").glob("*.jsonl"))
    text += "".join(p.read_text() for p in run_dir.glob("*/metrics.json"))
    for k in key_hex + packed_hex:
        assert k[:64] not in text


def test_same_scenario_and_seed_give_the_same_keys(quickstart_run, tmp_path):
    scenario, run_dir, summary = quickstart_run
    again = prepare_run_dir(scenario, tmp_path / "again")
    second = execute(scenario, again, fingerprint=True)
    assert second["determinism_fingerprint"] == summary["determinism_fingerprint"]
    first_rounds = (run_dir / "rounds.jsonl").read_text().splitlines()
    second_rounds = (again / "rounds.jsonl").read_text().splitlines()
    for x, y in zip(first_rounds, second_rounds, strict=True):
        x, y = json.loads(x), json.loads(y)
        for key in ("announced", "sifted", "key_bits_raw", "disclosed_bits", "secure_bits"):
            assert x[key] == y[key]


def test_too_few_counts_abort_with_the_reason_and_store_nothing(tmp_path):
    scenario, run_dir = _run(tmp_path, "small", **SMALL)
    summary = execute(scenario, run_dir)
    assert summary["aborted"] == 1 and summary["secure_bits"] == 0
    assert summary["keys_match"] is False
    (row,) = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert row["abort_reason"] and row["bob_abort_reason"] == row["abort_reason"]
    assert list(KeyStore(run_dir / "alice" / "keys.sqlite").items()) == []


def test_a_classical_frame_altered_on_the_wire_is_dropped_and_its_loss_aborts_the_round(
        tmp_path):
    scenario, run_dir = _run(tmp_path, "tampered", **SMALL)
    # Bob's first frame to Alice (his sifting info) gets one bit flipped on the wire: Alice
    # counts and drops it, and the round ends without it (Bob's next message comes instead)
    summary, proxy = _execute_behind_proxy(scenario, run_dir, flip_byte("bob", index=0),
                                           message_timeout_s=3)
    assert proxy.altered == 1
    assert summary["aborted"] == 1 and summary["secure_bits"] == 0
    (row,) = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert "expected SiftingInfo from bob" in row["abort_reason"]
    metrics = json.loads((run_dir / "alice" / "metrics.json").read_text())
    assert metrics["rejected_from_bob_AuthenticationError"] == 1
    assert list(KeyStore(run_dir / "bob" / "keys.sqlite").items()) == []


def test_a_crashed_node_fails_the_run_naming_it(tmp_path):
    scenario, run_dir = _run(tmp_path, "crash", rounds=3)

    class KillBob(LocalProcessLauncher):
        def poll(self):  # type: ignore[no-untyped-def]
            if time.monotonic() - started > 3 and self.processes["bob"].poll() is None:
                self.processes["bob"].kill()
            return super().poll()

    started = time.monotonic()
    with pytest.raises(RunFailed, match="node bob exited"):
        execute(scenario, run_dir, launcher=KillBob(), timeout_s=120)


def test_nodes_stop_cleanly_on_sigterm(tmp_path):
    scenario, run_dir = _run(tmp_path, "sigterm", rounds=3)
    launcher = LocalProcessLauncher()
    launcher.start(run_dir)
    deadline = time.monotonic() + 120  # until both users are built (their logs are open) ...
    while not all((run_dir / u / "rounds.jsonl").exists() for u in ("alice", "bob")):
        assert time.monotonic() < deadline, "the users did not start within 120 s"
        time.sleep(0.2)
    time.sleep(2)  # ... and into the first round
    for p in launcher.processes.values():
        p.send_signal(signal.SIGTERM)
    codes = {n: p.wait(timeout=30) for n, p in launcher.processes.items()}
    assert codes == {"alice": 0, "bob": 0, "charles": 0, "nature": 0}
    for n in ("alice", "bob", "charles", "nature"):
        assert "stopped by SIGTERM" in (run_dir / "logs" / f"{n}.log").read_text()
        assert (run_dir / n / "metrics.json").exists()


def _wait_until_catching(pid: int, signum: int, timeout_s: float = 30.0) -> None:
    """Until the process has a handler for ``signum`` (the SigCgt mask of /proc/PID/status)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(x for x in status.splitlines() if x.startswith("SigCgt:")).split()[1],
                     16)
        if caught >> (signum - 1) & 1:
            return
        assert time.monotonic() < deadline, f"process {pid} installed no handler for {signum}"
        time.sleep(0.01)


def test_a_node_stopped_while_it_starts_exits_cleanly(tmp_path):
    """SIGTERM before the node's modules are loaded (they take seconds: numba) is a clean stop,
    not a death by signal: the handlers are in place before anything heavy is imported."""
    scenario, run_dir = _run(tmp_path, "early", rounds=1)
    launcher = LocalProcessLauncher()
    launcher.start(run_dir)
    for p in launcher.processes.values():  # each has its handler for SIGTERM (and no more)
        _wait_until_catching(p.pid, signal.SIGTERM)
    for p in launcher.processes.values():
        p.send_signal(signal.SIGTERM)
    codes = {n: p.wait(timeout=60) for n, p in launcher.processes.items()}
    assert codes == {"alice": 0, "bob": 0, "charles": 0, "nature": 0}
    for n in codes:
        assert "stopped by SIGTERM" in (run_dir / "logs" / f"{n}.log").read_text()


def test_a_tampered_announcement_aborts_the_round_on_both_sides_without_a_crash(tmp_path):
    scenario, run_dir = _run(tmp_path, "announcement", **SMALL)
    summary, _ = _execute_behind_proxy(scenario, run_dir,
                                       flip_byte("charles", index=0, offset=40),
                                       message_timeout_s=15, announcement_timeout_s=5)
    (row,) = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert "no announcement from charles" in row["abort_reason"]
    metrics = json.loads((run_dir / "alice" / "metrics.json").read_text())
    assert metrics["rejected_from_charles_AuthenticationError"] == 1  # counted and dropped
    assert row["bob_aborted"] and "no announcement from charles" in row["bob_abort_reason"]
    assert summary["secure_bits"] == 0


def test_a_package_in_the_working_directory_cannot_shadow_the_installed_nodes(tmp_path,
                                                                              monkeypatch):
    """Nodes start with -P: an `orchestration/` folder where the user stands is never imported."""
    decoy = tmp_path / "cwd" / "orchestration"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    (decoy / "node_main.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(decoy.parent)
    scenario, run_dir = _run(tmp_path, "shadow", **SMALL)
    summary = execute(scenario, run_dir)
    assert summary["rounds"] == 1  # the nodes ran the installed code to the end


def _drop_first(sender: str, kind: int):
    """Drop the first frame from ``sender`` whose message kind is ``kind`` (the payload's kind
    byte sits after the 13-byte frame header and the codec's version byte)."""
    dropped = []

    def mutate(s: str, i: int, frame: bytes) -> bytes | None:
        if s == sender and not dropped and len(frame) > 14 and frame[14] == kind:
            dropped.append(i)
            return None
        return frame

    return mutate, dropped


def test_a_lost_committed_message_leaves_both_key_stores_identical(tmp_path):
    """Issue 10 (item 3) across real processes: Alice's ``Committed`` for round 0 never reaches
    Bob. He holds round 0's key pending, settles it when Alice's next ``Amplify`` names it, and
    both stores end identical, with every round's key."""
    scenario, run_dir = _run(tmp_path, "commit", rounds=2)
    mutate, dropped = _drop_first("alice", Committed.KIND)
    summary, _ = _execute_behind_proxy(scenario, run_dir, mutate, node="bob",
                                       message_timeout_s=5)
    assert dropped and summary["keys_match"] is True and summary["aborted"] == 0
    a = dict((k, v.tolist()) for k, _, v in KeyStore(run_dir / "alice" / "keys.sqlite").items())
    b = dict((k, v.tolist()) for k, _, v in KeyStore(run_dir / "bob" / "keys.sqlite").items())
    assert a == b and len(a) == 2
    bob_rows = [json.loads(x) for x in (run_dir / "bob" / "rounds.jsonl").read_text().splitlines()]
    assert [r.get("key_status") for r in bob_rows if r["round"] == 0] == ["pending", "committed"]
