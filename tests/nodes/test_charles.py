"""The relay under hostile pulse batches: each is counted and dropped, none ends Charles, and
what waits for a partner is bounded by the round configuration."""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
from types import SimpleNamespace

import pytest
import zmq

from classical.messages import EndOfRun
from classical.peer import FramePeer
from classical.secure import hmac_link
from nodes.nature import ROUNDS_IN_FLIGHT
from tests.nodes.relay_harness import BATCHES_PER_ROUND, ROUND_FRAMES, Relay


@pytest.fixture
def relay():
    r = Relay()
    yield r
    r.close()


def _with_header(parts: list[bytes], **changes) -> list[bytes]:
    header = json.loads(parts[0])
    header.update(changes)
    return [json.dumps(header).encode(), parts[1]]


def _dropped(relay: Relay, reason: str) -> int:
    return relay.count(f"pulse_batches_dropped_{reason}")


def test_an_honest_round_is_measured_and_announced(relay):
    for i in range(BATCHES_PER_ROUND):
        relay.on_pulses(relay.parts("alice", 0, i))
        relay.on_pulses(relay.parts("bob", 0, i))
    assert relay.announced() == [0]
    assert relay.count("pulse_batches_accepted_total") == 2 * BATCHES_PER_ROUND
    assert relay.nature.next_round == 1 and not any(relay.nature.waiting.values())


@pytest.mark.parametrize("header", [b"[1, 2]", b"17", b"null", b'"alice"', b"{}", b"\xff\xfe",
                                    b"[" * 5000, b"{" * 500])
def test_a_header_that_is_not_a_mapping_is_dropped(relay, header):
    relay.on_pulses([header, bytes(48)])
    assert _dropped(relay, "malformed") == 1


@pytest.mark.parametrize("changes", [
    {"first_frame": -1}, {"first_frame": -ROUND_FRAMES, "round": -1},
    {"first_frame": 2**50}, {"first_frame": 2**50, "round": 2**50 // ROUND_FRAMES},
    {"first_frame": 1}, {"round": 5}, {"last": True}, {"shape": [1, 6]},
])
def test_frames_outside_the_configured_round_are_dropped(relay, changes):
    parts = _with_header(relay.parts("alice", 0, 0), **changes)
    if "shape" in changes:
        parts[1] = parts[1][:48]
    relay.on_pulses(parts)
    relay.on_pulses(_with_header(relay.parts("bob", 0, 0), **changes))
    assert relay.count("pulse_batches_received_total") == 2
    assert relay.count("pulse_batches_dropped_total") >= 1
    assert relay.count("pulse_batches_accepted_total") + relay.count(
        "pulse_batches_dropped_total") == 2


@pytest.mark.parametrize("changes", [{"user": "eve"}, {"user": "ALICE"}])
def test_an_unknown_user_is_dropped(relay, changes):
    relay.on_pulses(_with_header(relay.parts("alice", 0, 0), **changes))
    assert _dropped(relay, "unknown_user") == 1


@pytest.mark.parametrize("changes", [
    {"v": 1}, {"v": 3}, {"v": True}, {"round": 0.0}, {"round": "0"}, {"first_frame": None},
    {"shape": [2, 6, 1]}, {"shape": [-2, -6]}, {"shape": "2,6"}, {"key": "-1"}, {"key": 5},
    {"key": str(2**64)}, {"last": 1}, {"traceparent": 5}, {"traceparent": "x" * 1000},
    {"extra": 1}, {"controls": 1}, {"controls": []}, {"controls": {}},
    {"controls": {"rotation_rad": [0, 0], "delay_ps": 0}},
    {"controls": {"rotation_rad": [0, 0, "1"], "delay_ps": 0}},
    {"controls": {"rotation_rad": [0, 0, True], "delay_ps": 0}},
    {"controls": {"rotation_rad": [0, 0, 7.0], "delay_ps": 0}},
    {"controls": {"rotation_rad": [0, 0, 0], "delay_ps": 2e6}},
    {"controls": {"rotation_rad": [0, 0, 0], "delay_ps": None}},
    {"controls": {"rotation_rad": [0, 0, 0], "delay_ps": 0, "gain": 1}},
    {"controls": {"rotation_rad": [0, 0, 1e400], "delay_ps": 0}},
])
def test_ill_typed_fields_are_dropped(relay, changes):
    relay.on_pulses(_with_header(relay.parts("alice", 0, 0), **changes))
    assert _dropped(relay, "malformed") == 1


def test_missing_fields_and_buffers_that_do_not_fit_are_dropped(relay):
    parts = relay.parts("alice", 0, 0)
    header = json.loads(parts[0])
    del header["key"]
    relay.on_pulses([json.dumps(header).encode(), parts[1]])
    relay.on_pulses([parts[0], parts[1][:-1]])
    relay.on_pulses([parts[0], parts[1] + bytes(8)])
    relay.on_pulses([parts[0]])
    relay.on_pulses([parts[0], parts[1], b""])
    assert _dropped(relay, "malformed") == 5


@pytest.mark.parametrize("corrupt", ["sum", "negative", "huge", "overflowing"])
def test_counts_that_do_not_add_up_to_the_frame_are_dropped(relay, corrupt):
    batch = relay.batch("alice", 0, 0)
    counts = batch.frame_counts.copy()
    if corrupt == "sum":
        counts[0, 0] += 1
    elif corrupt == "negative":
        counts[0, :2] = counts[0, 0] + counts[0, 1] + 1, -1
    elif corrupt == "huge":
        counts[0] = 0
        counts[0, 0] = 2**62
    else:  # wraps around to the frame size in int64
        counts[0, :3] = 2**62, 2**62, -(2**63) + (counts[0].sum() - counts[0, 3:].sum())
    parts = [batch.to_parts()[0], counts.tobytes()]
    relay.on_pulses(parts)
    relay.on_pulses(relay.parts("bob", 0, 0))
    assert _dropped(relay, "bad_counts") == 1
    assert relay.announced() == []


def test_waiting_is_bounded_by_the_rounds_in_flight(relay):
    for r in range(100):
        for i in range(BATCHES_PER_ROUND):
            relay.on_pulses(relay.parts("alice", r, i))
    assert len(relay.nature.waiting["alice"]) == ROUNDS_IN_FLIGHT * BATCHES_PER_ROUND
    assert _dropped(relay, "ahead") == (100 - ROUNDS_IN_FLIGHT) * BATCHES_PER_ROUND


def test_a_batch_sent_twice_is_dropped_and_a_measured_one_is_stale(relay):
    relay.on_pulses(relay.parts("alice", 0, 0))
    relay.on_pulses(relay.parts("alice", 0, 0))
    assert _dropped(relay, "duplicate") == 1
    relay.on_pulses(relay.parts("bob", 0, 0))
    relay.on_pulses(relay.parts("alice", 0, 0))
    relay.on_pulses(relay.parts("bob", 0, 0))
    assert _dropped(relay, "stale") == 2
    assert relay.nature.waiting == {"alice": {}, "bob": {}}


def test_the_window_moves_on_with_completed_rounds(relay):
    for r in range(2 * ROUNDS_IN_FLIGHT):
        for i in range(BATCHES_PER_ROUND):
            relay.on_pulses(relay.parts("alice", r, i))
            relay.on_pulses(relay.parts("bob", r, i))
    assert relay.announced() == list(range(2 * ROUNDS_IN_FLIGHT))
    assert relay.count("pulse_batches_dropped_total") == 0
    relay.on_pulses(relay.parts("bob", 0, 0))
    assert _dropped(relay, "stale") == 1
    assert set(relay.nature.paired) <= {relay.nature.next_round}


def test_a_forged_frame_in_alices_queue_does_not_hold_up_the_records(relay):
    class AlicePeer(FramePeer):  # Charles's end of his link with Alice, frames handed in by hand
        def _put(self, frame: bytes) -> None:
            sent.append(frame)

        def _get(self) -> bytes:  # as ZmqPeer: wait for Alice's next frame
            return alice_q.get(timeout=60)

    sent: list[bytes] = []

    alice = hmac_link(b"a" * 32, b"c" * 32)
    charles = hmac_link(b"c" * 32, b"a" * 32)
    charles.opener.allow_gaps = True
    relay.charles.ctx.peers["alice"] = AlicePeer("alice", charles, relay.counters.add)
    relay.charles.ctx.stop = threading.Event()
    alice_q: queue.Queue[bytes] = queue.Queue()
    relay.charles.ctx.mailbox = SimpleNamespace(queues={"alice": alice_q})
    alice_q.put(b"\x01" + bytes(60))  # forged: fails authentication, and nothing follows it
    node = threading.Thread(target=relay.charles.run, daemon=True)
    node.start()
    push = relay.context.socket(zmq.PUSH)
    try:
        push.connect(relay.records_endpoint)
        for i in range(BATCHES_PER_ROUND):
            for user in ("alice", "bob"):
                out = relay.nature_node.on_pulses(relay.parts(user, 0, i))
                if out is not None:  # nature's records, to Charles's socket
                    push.send_multipart(out.to_parts())
        deadline = time.monotonic() + 30
        while relay.count("rounds_announced_total") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay.count("rounds_announced_total") == 1  # the records went on meanwhile
        assert len(sent) == 1  # the announcement, to Alice
        alice_q.put(alice.pack(_end_of_run()))
        node.join(timeout=30)
        assert not node.is_alive()
        assert charles.rejected == {"AuthenticationError": 1}
    finally:
        relay.charles.ctx.stop.set()  # ends the loop (NodeStopped) if it is still running
        node.join(timeout=5)
        push.close(linger=0)


def _end_of_run() -> EndOfRun:
    fields = dataclasses.fields(EndOfRun)
    values = {f.name: 0 if f.type in (int, "int") else "" for f in fields}
    return EndOfRun(**values)


def test_every_message_is_counted(relay):
    messages = [relay.parts("alice", 0, 0), [b"{}", b""], relay.parts("bob", 0, 0),
                relay.parts("bob", 0, 0), [b"x"], relay.parts("alice", 9, 0)]
    for m in messages:
        relay.on_pulses(m)
    counts = relay.counters.values
    assert counts["pulse_batches_received_total"] == len(messages)
    assert counts["pulse_batches_accepted_total"] + counts["pulse_batches_dropped_total"] == \
        len(messages)
    assert counts["pulse_batches_dropped_total"] == sum(
        v for k, v in counts.items() if k.startswith("pulse_batches_dropped_") and k !=
        "pulse_batches_dropped_total")


def test_the_pulse_socket_refuses_more_than_a_full_batch(relay):
    assert max(map(len, relay.parts("alice", 0, 0))) <= relay.layout.max_message_bytes()
    assert relay.nature_node.pulses.socket.getsockopt(zmq.MAXMSGSIZE) == \
        relay.layout.max_message_bytes()


def test_a_batch_carries_its_users_actuator_settings_to_nature(relay):
    # the calibration loops' settings (channel.controls) travel in the header and are applied
    # to the frames of that batch only; the round is measured and announced as usual
    from channel.controls import SourceControls
    from nodes.transport import PulseBatch
    parts = _with_header(relay.parts("bob", 0, 0),
                         controls={"rotation_rad": [0.0, -0.4, 0.0], "delay_ps": -150.0})
    batch = PulseBatch.from_parts(parts, relay.nature.layout)
    assert batch.controls == SourceControls((0.0, -0.4, 0.0), -150.0)
    again = PulseBatch.from_parts(batch.to_parts(), relay.nature.layout)
    assert again.controls == batch.controls
    assert (again.frame_counts == batch.frame_counts).all()
    for i in range(BATCHES_PER_ROUND):
        relay.on_pulses(relay.parts("alice", 0, i))
        relay.on_pulses(parts if i == 0 else relay.parts("bob", 0, i))
    assert relay.announced() == [0]
    assert relay.count("pulse_batches_accepted_total") == 2 * BATCHES_PER_ROUND
