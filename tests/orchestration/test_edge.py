"""Classical-channel faults at the edge (``orchestration.edge``): which rounds' messages each
fault acts on, and what it does to them, checked on real authenticated frames."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from channel.impairments import TimelineEntry, fault_slots, fault_windows
from classical.authentication import AuthenticationError, ReplayError
from classical.messages import RoundAbort, RoundStart
from classical.secure import hmac_link
from orchestration.edge import (
    REORDER_HOLD_S,
    EdgeBook,
    EdgeFault,
    EdgePolicy,
    EdgeProxy,
    edge_faults,
    frame_label,
    receivers,
)
from orchestration.runconfig import HOST, free_ports
from tests.stats import binomial_z, z_bound

CLOCK, FRAME_BITS, ROUND_SLOTS = 1e9, 20, 1000 << 20  # rounds of 1.048576 s


def _link(me: str = "bob", peer: str = "alice"):
    """The two ends of one direction ``me`` → ``peer`` (HMAC: no key is consumed); the
    receiver lets gaps through, as the nodes' do."""
    a, b = b"s" * 32, b"r" * 32
    receiver = hmac_link(b, a, peer, me)
    receiver.opener.allow_gaps = True
    return hmac_link(a, b, me, peer), receiver


def _frames(n: int, round_id: int = 1) -> list[bytes]:
    send, _ = _link()
    return [send.pack(RoundAbort(round_id, f"message {k}")) for k in range(n)]


def _fault(kind: str, target: str = "classical/alice-bob", first: int = 1, stop: int = 2,
           **params) -> EdgeFault:
    return EdgeFault(f"{kind}-fault", kind, target, params, first, stop)


def test_a_fault_acts_on_the_rounds_that_share_a_slot_with_its_frames():
    entries = [TimelineEntry(1.2, "cut", "outage", "classical/alice-bob", {}, 0.6),
               TimelineEntry(2.0, "slow", "latency", "classical/charles-bob",
                             {"latency_ms": 5.0}, 1.5),
               TimelineEntry(0.5, "drift", "loss", "link/alice-charles", {"extra_db": 3.0})]
    out = {f.name: f for f in edge_faults(entries, CLOCK, FRAME_BITS, ROUND_SLOTS)}
    assert set(out) == {"cut", "slow"}  # the loss is nature's, not the edge's
    assert (out["cut"].first_round, out["cut"].stop_round) == (1, 2)  # [1.2, 1.8) s in round 1
    assert (out["slow"].first_round, out["slow"].stop_round) == (1, 4)  # [2.0, 3.5) s: 1, 2, 3
    for f in fault_windows(entries):
        if f.name in out:  # the same slots the verdict's phases use
            first, stop = fault_slots(f, CLOCK, FRAME_BITS)
            rounds = range(out[f.name].first_round, out[f.name].stop_round)
            assert all(r * ROUND_SLOTS < stop and (r + 1) * ROUND_SLOTS > first for r in rounds)
            assert (rounds.start - 1 + 1) * ROUND_SLOTS <= first or rounds.start == 0
            assert rounds.stop * ROUND_SLOTS >= stop
    assert receivers(tuple(out.values())) == ["alice", "bob", "charles"]


def test_frame_label_reads_the_round_and_kind_in_clear_and_nothing_else():
    send, _ = _link()
    assert frame_label(send.pack(RoundStart(7, 0, 10))) == (7, RoundStart.KIND)
    assert frame_label(send.pack(RoundAbort(3, "x"))) == (3, RoundAbort.KIND)
    for junk in (b"", b"\x01" * 12, b"\x01" * 13 + b"\x02\x00\xff\xff\xff\xff", b"\x00" * 64):
        assert frame_label(junk) is None


def test_an_outage_drops_the_faulted_rounds_messages_of_its_directions_only():
    policy = EdgePolicy("alice", [_fault("outage")], seed=1)
    in_round, before = _frames(1, round_id=1)[0], _frames(1, round_id=0)[0]
    assert policy.route("bob", in_round, 0.0) == []
    assert [r.frame for r in policy.route("bob", before, 0.0)] == [before]
    assert [r.frame for r in policy.route("charles", in_round, 0.0)] == [in_round]
    assert policy.counts.to_json() == {"outage-fault": {"dropped": 1}}


def test_tampering_picks_the_fraction_deterministically_and_every_pick_fails_its_tag():
    n, fraction = 4000, 0.3
    frames = _frames(n)
    outs = []
    for _ in range(2):
        policy = EdgePolicy("alice", [_fault("tamper", fraction=fraction)], seed=5)
        outs.append([policy.route("bob", f, 0.0)[0].frame for f in frames])
    assert outs[0] == outs[1]  # the same seed picks the same messages
    picked = [k for k, (a, b) in enumerate(zip(frames, outs[0], strict=True)) if a != b]
    assert abs(binomial_z(len(picked), n, fraction)) <= z_bound()
    for k in picked[:50]:
        diff = np.unpackbits(np.frombuffer(frames[k], np.uint8)
                             ^ np.frombuffer(outs[0][k], np.uint8))
        assert diff.sum() == 1 and np.flatnonzero(diff)[0] >= 13 * 8  # one bit, in the body
    _, receive = _link()
    for k, frame in enumerate(outs[0][:200]):  # the receiver drops exactly the picked ones
        if k in picked:
            with pytest.raises(AuthenticationError):
                receive.unpack(frame)
        else:
            assert receive.unpack(frame)[0] == RoundAbort(1, f"message {k}")
    other = EdgePolicy("alice", [_fault("tamper", fraction=fraction)], seed=6)
    assert [other.route("bob", f, 0.0)[0].frame for f in frames] != outs[0]


def test_latency_delays_each_message_and_keeps_their_order():
    policy = EdgePolicy("alice", [_fault("latency", latency_ms=40.0, jitter_ms=30.0)], seed=2)
    frames = _frames(200)
    releases = [policy.route("bob", f, 0.001 * k)[0] for k, f in enumerate(frames)]
    assert [r.frame for r in releases] == frames
    times = np.array([r.at for r in releases])
    assert np.all(np.diff(times) >= 0)  # FIFO: never overtaken
    assert np.all(times >= 0.001 * np.arange(200))  # never early (the jitter is cut at 0)
    again = EdgePolicy("alice", [_fault("latency", latency_ms=40.0, jitter_ms=30.0)], seed=2)
    assert [again.route("bob", f, 0.001 * k)[0].at for k, f in enumerate(frames)] == \
        times.tolist()
    plain = EdgePolicy("alice", [_fault("latency", latency_ms=40.0)], seed=2)
    assert plain.route("bob", frames[0], 1.0)[0].at == pytest.approx(1.040)


def test_a_bandwidth_limit_serialises_messages_at_its_rate():
    policy = EdgePolicy("alice", [_fault("bandwidth_limit", bandwidth_bps=8000.0)], seed=3)
    frames = _frames(3)
    times = [policy.route("bob", f, 0.0)[0].at for f in frames]
    sizes = np.cumsum([len(f) for f in frames])
    assert times == pytest.approx((8 * sizes / 8000.0).tolist())  # each waits for the ones before


def test_a_replay_sends_the_previous_message_again_and_the_receiver_refuses_it():
    policy = EdgePolicy("alice", [_fault("replay", fraction=1.0)], seed=4)
    frames = _frames(2)
    first = [r.frame for r in policy.route("bob", frames[0], 0.0)]
    second = [r.frame for r in policy.route("bob", frames[1], 0.0)]
    assert first == [frames[0], frames[0]] and second == [frames[1], frames[0]]
    _, receive = _link()
    receive.unpack(first[0])
    with pytest.raises(ReplayError):
        receive.unpack(first[1])


def test_a_reordered_message_is_overtaken_by_the_next_or_released_after_its_hold():
    policy = EdgePolicy("alice", [_fault("reorder", fraction=1.0, window_messages=2)], seed=5)
    a, b = _frames(2)
    assert policy.route("bob", a, 0.0) == []  # held
    assert policy.due(REORDER_HOLD_S / 2) == []
    # b comes: a may be overtaken by one message (window 2), so it goes on; b is held in turn
    assert [r.frame for r in policy.route("bob", b, 0.01)] == [a]
    assert [r.frame for r in policy.due(1.0)] == [b]
    lone = EdgePolicy("alice", [_fault("reorder", fraction=1.0)], seed=5)
    assert lone.route("bob", a, 0.0) == [] and lone.next_deadline() == REORDER_HOLD_S
    assert [r.frame for r in lone.due(REORDER_HOLD_S)] == [a]  # nothing came to overtake it


def test_messages_overtake_a_held_one_then_it_follows():
    fault = _fault("reorder", fraction=0.5, window_messages=2)
    frames = _frames(400)
    policy = EdgePolicy("alice", [fault], seed=9)
    order: list[bytes] = []
    for k, f in enumerate(frames):
        order += [r.frame for r in sorted(policy.route("bob", f, k * 1e-3), key=lambda r: r.at)]
    order += [r.frame for r in policy.due(1e9)]
    assert sorted(order) == sorted(frames)  # nothing lost, nothing doubled
    moved = [k for k, f in enumerate(order) if f != frames[k]]
    assert moved  # some messages arrive out of order ...
    positions = {f: k for k, f in enumerate(order)}
    # ... each overtaken by at most window - 1 = 1 message
    assert max(positions[f] - k for k, f in enumerate(frames)) == 1


def test_the_proxy_delays_on_a_fifo_link():
    listen, mailbox = (f"tcp://{HOST}:{p}" for p in free_ports(2))
    ctx = zmq.Context()
    sink = ctx.socket(zmq.PULL)
    sink.bind(mailbox)
    proxy = EdgeProxy(listen, mailbox, EdgePolicy(
        "alice", [_fault("latency", latency_ms=150.0)], seed=1))
    source = ctx.socket(zmq.PUSH)
    source.connect(listen)
    try:
        slow, fast = _frames(1, round_id=1)[0], _frames(1, round_id=0)[0]
        t0 = time.monotonic()
        source.send_multipart([b"bob", slow])
        source.send_multipart([b"bob", fast])  # round 0: no fault
        got = []
        while len(got) < 2 and sink.poll(5000):
            got.append((sink.recv_multipart(), time.monotonic() - t0))
        # a FIFO link: the undelayed message waits behind the delayed one
        assert [parts for parts, _ in got] == [[b"bob", slow], [b"bob", fast]]
        assert got[0][1] >= 0.15
    finally:
        proxy.close()
        source.close(0)
        sink.close(0)
        ctx.term()


def test_only_the_users_messages_of_the_runs_rounds_move_the_latest_round():
    """Charles is untrusted and authentic on his own links: a far-future round label from him
    (or EndOfRun's, which carries the number of rounds) must not move the proxies' clock."""
    book = EdgeBook(rounds=5)
    policy = EdgePolicy("alice", book, seed=1)
    policy.route("charles", _frames(1, round_id=10**9)[0], 0.0)
    policy.route("bob", _frames(1, round_id=5)[0], 0.0)
    assert book.latest_round == -1
    policy.route("bob", _frames(1, round_id=3)[0], 0.0)
    assert book.latest_round == 3


def test_a_clear_ends_only_faults_that_have_begun():
    book = EdgeBook([_fault("outage", first=1, stop=3), _fault("tamper", first=6, stop=9)])
    assert book.end("outage-fault", 2) and not book.end("tamper-fault", 2)
    assert [(f.first_round, f.stop_round) for f in book.faults] == [(1, 2), (6, 9)]
