"""Leakage and the end of a round across three real processes (issue 15, items 1 and 2).

Two fault proxies (``orchestration.faults.MailboxProxy``) stand in front of Alice's and Bob's
mailboxes. Passing every frame unchanged, they open each one and count the bits the leakage rule
of ``classical.leakage`` charges (Alice's replies, Bob's disclosed bits, the verification tag):
both users' ``leakage_bits`` must equal that count, and the stored key must be as long as the
finite-key length recomputed from it. Tampering a frame at the end of the round instead must
leave that round with no key in either store; the round is large enough to yield a key when
nobody interferes (the first test), so "nothing stored" is a result and not the round's size.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from classical.messages import (
    Amplify,
    Committed,
    VerifyRequest,
    VerifyResult,
)
from nodes.keystore import KeyStore
from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.faults import MailboxProxy, Mutation
from orchestration.run import execute, prepare_run_dir
from orchestration.runconfig import HOST, free_ports
from tests.leakage_count import HEADER_BYTES, TAG_BYTES, disclosed, open_frame
from tests.short_rounds import short_round_overrides

KIND_OFFSET = HEADER_BYTES + 1  # after the codec's version byte
#: one short round (tests/short_rounds.py): about 2e5 secure bits
ONE_ROUND = {**short_round_overrides(), "rounds": 1}


def _execute_behind_proxies(scenario, run_dir: Path, mutations: dict[str, Mutation],
                            message_timeout_s: float = 10.0, timeout_s: float = 420.0):
    """Run with a proxy in front of each named node's mailbox (``mutations``: node → mutation)."""
    config = json.loads((run_dir / "config.json").read_text())
    ports = free_ports(len(mutations))
    addresses = {node: f"tcp://{HOST}:{port}" for node, port in zip(mutations, ports, strict=True)}
    config["run"]["connect"] = addresses
    config["run"]["message_timeout_s"] = message_timeout_s
    (run_dir / "config.json").write_text(json.dumps(config))
    proxies = [MailboxProxy(addresses[node], config["run"]["mailboxes"][node], mutate)
               for node, mutate in mutations.items()]
    try:
        return execute(scenario, run_dir, timeout_s=timeout_s)
    finally:
        for p in proxies:
            p.close()


class LeakageTap:
    """A proxy mutation that changes nothing and counts the disclosed bits by kind."""

    def __init__(self) -> None:
        self.bits: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, sender: str, index: int, frame: bytes) -> bytes:
        if sender in ("alice", "bob"):
            counted = disclosed(open_frame(frame))
            if counted is not None:
                with self._lock:
                    self.bits[counted[0]] += counted[1]
        return frame

    @property
    def total(self) -> int:
        return sum(self.bits.values())


def _rows(run_dir: Path, node: str) -> list[dict]:
    return [json.loads(x) for x in (run_dir / node / "rounds.jsonl").read_text().splitlines()]


def _final(rows: list[dict], round_id: int) -> dict:
    """The last row a node wrote for ``round_id`` (Bob may write a pending, then a committed)."""
    return [r for r in rows if r["round"] == round_id][-1]


def _store(run_dir: Path, node: str) -> dict[str, list[int]]:
    return {k: v.tolist() for k, _, v in KeyStore(run_dir / node / "keys.sqlite").items()}


@pytest.fixture(scope="module")
def tapped_run(tmp_path_factory):
    scenario = load_scenario(DEFAULT_SCENARIO, ONE_ROUND)
    run_dir = prepare_run_dir(scenario, tmp_path_factory.mktemp("runs") / "tapped")
    tap = LeakageTap()
    summary = _execute_behind_proxies(scenario, run_dir, {"alice": tap, "bob": tap})
    return scenario, run_dir, summary, tap


def test_the_round_charges_every_bit_that_crossed_between_the_processes(tapped_run):
    scenario, run_dir, summary, tap = tapped_run
    assert summary["aborted"] == 0 and summary["keys_match"] is True
    assert tap.bits["reply"] > 1000 and tap.bits["tag"] > 0
    alice, bob = _final(_rows(run_dir, "alice"), 0), _final(_rows(run_dir, "bob"), 0)
    assert alice["leakage_bits"] == bob["leakage_bits"] == tap.total


def test_the_stored_key_is_the_finite_key_length_of_the_counted_leakage(tapped_run):
    """The length is linear in the leakage with slope one (the test in
    tests/classical/test_rounds_leakage.py shows it), so the estimate recomputed with the tap's
    count moves the key length by exactly the difference between count and report."""
    _, run_dir, _, tap = tapped_run
    row = _final(_rows(run_dir, "alice"), 0)
    a, b = _store(run_dir, "alice"), _store(run_dir, "bob")
    assert a == b and list(a) == [row["key_id"]]
    assert row["output_bits"] == row["secure_length"] > 10_000
    expected_length = row["secure_length"] + round(row["leakage_bits"] - tap.total)
    assert len(a[row["key_id"]]) == expected_length - row["auth_key_bits_replenished"]


def _tamper_first(sender: str, kind: type) -> tuple[Mutation, list[int]]:
    """Flip one bit in the payload of ``sender``'s first frame of ``kind``."""
    done: list[int] = []

    def mutate(s: str, i: int, frame: bytes) -> bytes:
        if s != sender or done or len(frame) <= KIND_OFFSET or frame[KIND_OFFSET] != kind.KIND:
            return frame
        done.append(i)
        j = len(frame) - TAG_BYTES - 1  # the payload's last byte
        return frame[:j] + bytes([frame[j] ^ 0x01]) + frame[j + 1:]

    return mutate, done


@pytest.mark.slow
@pytest.mark.parametrize("node, sender, kind", [
    ("alice", "bob", VerifyRequest),
    ("bob", "alice", VerifyResult),
    ("bob", "alice", Amplify),
])
def test_a_tampered_frame_at_the_end_of_the_round_leaves_no_key_in_either_store(
        tapped_run, tmp_path, node, sender, kind):
    scenario, _, untampered, _ = tapped_run
    assert untampered["secure_bits"] > 0  # the same round yields a key when left alone
    run_dir = prepare_run_dir(scenario, tmp_path / "tampered")
    mutate, done = _tamper_first(sender, kind)
    summary = _execute_behind_proxies(scenario, run_dir, {node: mutate}, message_timeout_s=4)
    assert len(done) == 1
    assert summary["aborted"] == 1 and summary["secure_bits"] == 0
    assert _store(run_dir, "alice") == {} and _store(run_dir, "bob") == {}
    metrics = json.loads((run_dir / node / "metrics.json").read_text())
    assert metrics[f"rejected_from_{sender}_AuthenticationError"] == 1


@pytest.mark.slow
def test_a_tampered_committed_leaves_identical_stores(tapped_run, tmp_path):
    """Bob keeps the last round's key pending and Alice's ``EndOfRun`` settles it."""
    scenario, _, untampered, _ = tapped_run
    assert untampered["secure_bits"] > 0
    run_dir = prepare_run_dir(scenario, tmp_path / "committed")
    mutate, done = _tamper_first("alice", Committed)
    _execute_behind_proxies(scenario, run_dir, {"bob": mutate}, message_timeout_s=4,
                            timeout_s=60)
    assert len(done) == 1
    a, b = _store(run_dir, "alice"), _store(run_dir, "bob")
    assert a == b and len(a) == 1
