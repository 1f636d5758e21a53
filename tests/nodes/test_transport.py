"""The ZeroMQ edge under hostile senders: sizes bounded by the configuration, all counted."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from classical.codec import max_message_bytes
from nodes.transport import (
    MAX_CLASSICAL_MESSAGE_BYTES,
    Counters,
    Mailbox,
    classical_max_message_bytes,
)


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.term()


def _mailbox(context, **kwargs) -> Mailbox:
    return Mailbox(context, "tcp://127.0.0.1:*", ["alice", "bob"], Counters(), threading.Event(),
                   **kwargs)


def _close(mailbox: Mailbox) -> None:
    mailbox.stop.set()
    mailbox.close()


def test_the_mailbox_has_a_maximum_message_size(context):
    mailbox = _mailbox(context, max_message_bytes=4096)
    try:
        assert mailbox.socket.getsockopt(zmq.MAXMSGSIZE) == 4096
    finally:
        _close(mailbox)


def test_a_message_above_the_bound_is_never_read(context):
    mailbox = _mailbox(context, max_message_bytes=4096)
    endpoint = mailbox.socket.getsockopt(zmq.LAST_ENDPOINT).decode()
    try:
        for size in (4097, 100, 1 << 20, 200):
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.connect(endpoint)
            push.send_multipart([b"alice", bytes(size)])
            push.close()
        deadline = time.monotonic() + 5
        while mailbox.queues["alice"].qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        got = [len(mailbox.queues["alice"].get_nowait()) for _ in range(2)]
        assert sorted(got) == [100, 200] and mailbox.queues["alice"].empty()
    finally:
        _close(mailbox)


def test_a_flooding_sender_fills_only_its_own_bounded_queue(context):
    mailbox = _mailbox(context, max_queued=8)
    try:
        kept = [mailbox.sort([b"bob", b"%d" % i]) for i in range(50)]
        assert sum(kept) == 8 and mailbox.queues["bob"].qsize() == 8
        assert mailbox.sort([b"alice", b"frame"])
        assert mailbox.counters.values["classical_frames_dropped_queue_full"] == 42
    finally:
        _close(mailbox)


def test_every_message_is_counted(context):
    mailbox = _mailbox(context, max_queued=2)
    messages = [[b"alice", b"a"], [b"eve", b"x"], [b"alice"], [b"alice", b"b", b"c"], [],
                [b"\xff\xfe", b"x"], [b"alice", b"c"], [b"alice", b"d"], [b"bob", b"e"]]
    try:
        queued = sum(mailbox.sort(m) for m in messages)
        values = mailbox.counters.values
        assert values["classical_frames_received_total"] == len(messages)
        assert queued + values["classical_frames_dropped_malformed"] + values[
            "classical_frames_dropped_queue_full"] == len(messages)
        assert queued == 3
    finally:
        _close(mailbox)


def test_the_bound_grows_with_the_round_and_stops_at_the_frame_format():
    assert classical_max_message_bytes(1 << 20) > max_message_bytes(1 << 20) > 9 << 20
    assert classical_max_message_bytes(1 << 30) == MAX_CLASSICAL_MESSAGE_BYTES
