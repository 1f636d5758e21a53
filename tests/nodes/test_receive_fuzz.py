"""Random and mutated frames at every receive path: no crash, no hang, every frame counted.

Four paths, each fed honest frames mutated by bit flips, byte overwrites, truncation,
extension and corruption of the size fields, and plain random bytes:

* the classical codec (``classical.codec.decode``): only ``MessageDecodeError``;
* a node's classical receive path: the mailbox's sorting (``nodes.transport.Mailbox``) and the
  authenticated link (``classical.secure.SecureLink.unpack``), for a stranger who forges frames
  and for a peer who holds the key and seals whatever it likes: only the documented rejections,
  and received = accepted + dropped;
* the pulse path (nature's ``nodes.nature.NatureNode.on_pulses``, whose records go on to Charles),
  hostile messages interleaved with an honest stream: never an exception, received = accepted +
  dropped, what waits is bounded, and every round the honest users complete is announced once;
* Charles's records path (``nodes.charles.CharlesNode.on_records``), the same with hostile
  records messages among nature's honest ones.

The quick versions run in the default suite; the ``slow`` ones run 10,000 frames per path.
Hypothesis runs derandomized (a fixed seed per test), so CI sees the same frames every time.
"""

from __future__ import annotations

import json
import struct
import threading

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classical.codec import MessageDecodeError, decode, encode
from classical.secure import REJECTED_FRAME_ERRORS, hmac_link
from nodes.nature import ROUNDS_IN_FLIGHT
from nodes.transport import Counters, Mailbox
from tests.classical.test_codec import SAMPLES
from tests.nodes.relay_harness import BATCHES_PER_ROUND, Relay

QUICK, SLOW = 150, 10_000


def _fuzz(test, examples: int) -> None:
    settings(max_examples=examples, deadline=None, derandomize=True, database=None,
             suppress_health_check=list(HealthCheck))(test)()


# --- mutations ------------------------------------------------------------------------------

_SIZES = st.sampled_from([0, 1, 2, 255, 1 << 16, (1 << 31) - 1, (1 << 32) - 1]) | st.integers(
    0, (1 << 32) - 1)
_BYTE_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("size"), st.integers(0, 1 << 20), _SIZES),
)


def _mutate(data: bytes, mutations: list[tuple], size_fields: list[int]) -> bytes:
    """Apply ``mutations``; a ``size`` mutation overwrites one of the u32 ``size_fields`` (byte
    offsets of length and shape fields)."""
    out = bytearray(data)
    for m in mutations:
        if m[0] == "extend":
            out += m[1]
        elif not out:
            continue
        elif m[0] == "flip":
            out[m[1] % len(out)] ^= 1 << m[2]
        elif m[0] == "set":
            out[m[1] % len(out)] = m[2]
        elif m[0] == "truncate":
            del out[m[1] % len(out):]
        elif size_fields:
            at = size_fields[m[1] % len(size_fields)]
            if at + 4 <= len(out):
                out[at:at + 4] = struct.pack(">I", m[2])
    return bytes(out)


def _codec_size_fields(frame: bytes) -> list[int]:
    """Offsets of the meta length, and of every array's dtype/ndim pair and shape entries."""
    fields = [2]
    pos = 6 + struct.unpack_from(">I", frame, 2)[0]
    while pos + 2 <= len(frame):
        code, ndim = frame[pos], frame[pos + 1]
        fields.append(pos - 2)  # rewrites the dtype code and ndim (and the bytes before them)
        shape = struct.unpack_from(f">{ndim}I", frame, pos + 2)
        fields.extend(pos + 2 + 4 * i for i in range(ndim))
        count = 1
        for n in shape:
            count *= n
        pos += 2 + 4 * ndim + count * (1, 2, 4, 8, 8, 8)[code]
    return fields


_TRACE = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
_HONEST = [encode(m, _TRACE) for m in SAMPLES]


@st.composite
def codec_frames(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=256))
    frame = draw(st.sampled_from(_HONEST))
    mutations = draw(st.lists(_BYTE_MUTATION, min_size=1, max_size=4))
    return _mutate(frame, mutations, _codec_size_fields(frame))


# --- (a) the codec ----------------------------------------------------------------------------


def _codec_path(examples: int) -> None:
    seen = {"received": 0, "accepted": 0, "dropped": 0}

    @given(codec_frames())
    def one(frame: bytes) -> None:
        seen["received"] += 1
        try:
            decode(frame)
        except MessageDecodeError as e:
            assert len(str(e)) < 400
            seen["dropped"] += 1
        else:
            seen["accepted"] += 1

    _fuzz(one, examples)
    assert seen["received"] >= examples
    assert seen["received"] == seen["accepted"] + seen["dropped"]


def test_codec_takes_hostile_frames():
    _codec_path(QUICK)


@pytest.mark.slow
def test_codec_takes_10000_hostile_frames():
    _codec_path(SLOW)


# --- (b) the classical receive path: mailbox, then the authenticated link ---------------------


@st.composite
def sealed_frames(draw, peer) -> tuple[bytes, bytes]:
    """(sender name, frame): from a key-holding peer sealing a mutated payload, from a forger
    mutating a sealed frame, or random bytes under any name."""
    sender = draw(st.sampled_from([b"alice", b"alice", b"alice", b"eve", b"", b"\xff"]))
    kind = draw(st.sampled_from(["sealed", "forged", "random"]))
    if kind == "random":
        return sender, draw(st.binary(max_size=256))
    payload = draw(codec_frames()) if draw(st.booleans()) else draw(st.sampled_from(_HONEST))
    frame = peer.sealer.seal(payload)
    if kind == "forged":
        frame = _mutate(frame, draw(st.lists(_BYTE_MUTATION, min_size=1, max_size=3)), [9])
    return sender, frame


def _link_path(examples: int) -> None:
    alice_end = hmac_link(b"a" * 32, b"b" * 32)  # the key-holding sender
    bob_end = hmac_link(b"b" * 32, b"a" * 32)
    bob_end.opener.allow_gaps = True  # as the nodes run
    context = zmq.Context()
    mailbox = Mailbox(context, "inproc://fuzz-mailbox", ["alice"], Counters(), threading.Event())
    mailbox.stop.set()  # drained by hand: ``sort`` is the thread's whole work
    accepted = 0

    @given(sealed_frames(alice_end))
    def one(message: tuple[bytes, bytes]) -> None:
        nonlocal accepted
        if not mailbox.sort(list(message)):
            return
        frame = mailbox.queues["alice"].get_nowait()
        try:
            bob_end.unpack(frame)
        except REJECTED_FRAME_ERRORS:
            return
        accepted += 1

    try:
        _fuzz(one, examples)
    finally:
        mailbox.close()
        context.term()
    counts = mailbox.counters.values
    received = counts["classical_frames_received_total"]
    dropped = counts.get("classical_frames_dropped_malformed", 0) + sum(bob_end.rejected.values())
    assert received >= examples and accepted > 0 and bob_end.rejected
    assert received == accepted + dropped


def test_classical_receive_path_takes_hostile_frames():
    _link_path(QUICK)


@pytest.mark.slow
def test_classical_receive_path_takes_10000_hostile_frames():
    _link_path(SLOW)


# --- (c) Charles's pulse path -----------------------------------------------------------------

_JSON = st.one_of(
    st.sampled_from([None, True, False, [], {}, [2, 6], [[2], [6]], {"shape": [2, 6]}, "", "eve",
                     "alice\x00", 1.5, -0.0, float("inf"), float("nan"), "1" * 30]),
    st.integers(-(1 << 70), 1 << 70), st.text(max_size=8))
_HEADER_MUTATION = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(["v", "user", "round", "first_frame", "shape",
                                                 "key", "last", "traceparent", "other"]), _JSON),
    st.tuples(st.just("drop"), st.sampled_from(["v", "user", "round", "shape", "key", "last"])),
    st.tuples(st.just("shift"), st.sampled_from(["round", "first_frame"]),
              st.sampled_from([-1, 1, -(1 << 40), 1 << 40, 1 << 63])),
    st.tuples(st.just("shape"), st.lists(_SIZES | st.integers(-3, 3), max_size=3)),
)


@st.composite
def pulse_messages(draw, relay: Relay, near_round: int) -> list[bytes]:
    """A hostile message: random parts, or a batch of a round near ``near_round`` (the honest
    users' current one) sent as is (a copy), or with one mutation of its header's fields, its
    header's bytes, its counts' bytes or its number of parts."""
    what = draw(st.sampled_from(["random", "copy", "copy", "copy", "field", "field", "header",
                                 "counts", "counts", "parts"]))
    if what == "random":
        return draw(st.lists(st.binary(max_size=64), max_size=3))
    user = draw(st.sampled_from(["alice", "bob"]))
    round_id = max(0, near_round + draw(st.integers(-2, 4) | st.integers(-50, 50)))
    header, counts = relay.parts(user, round_id, draw(st.integers(0, BATCHES_PER_ROUND - 1)))
    if what == "field":
        h, m = json.loads(header), draw(_HEADER_MUTATION)
        if m[0] == "field":
            h[m[1]] = m[2]
        elif m[0] == "drop":
            del h[m[1]]
        elif m[0] == "shift":
            h[m[1]] += m[2]
        else:
            h["shape"] = m[1]
        header = json.dumps(h).encode()
    elif what == "header":
        header = _mutate(header, [draw(_BYTE_MUTATION)], [])
    elif what == "counts":
        counts = _mutate(counts, [draw(_BYTE_MUTATION)], [])
    elif what == "parts":
        return draw(st.sampled_from([[header], [header, counts, b""], [counts, header], []]))
    return [header, counts]


def _pulse_path(examples: int) -> None:
    """Each example interleaves one hostile message with the next of the honest users' stream
    (Alice's and Bob's batches in order); every round the honest stream completes must still be
    announced exactly once, whatever the hostile messages did."""
    relay = Relay()
    honest = 0  # honest messages sent

    @given(st.data())
    def one(data) -> None:
        nonlocal honest
        step = honest // 2
        near = step // BATCHES_PER_ROUND
        relay.on_pulses(data.draw(pulse_messages(relay, near)))  # must not raise
        relay.on_pulses(relay.parts(("alice", "bob")[honest % 2], near,
                                            step % BATCHES_PER_ROUND))
        honest += 1
        assert sum(map(len, relay.nature.waiting.values())) <= \
            2 * ROUNDS_IN_FLIGHT * BATCHES_PER_ROUND

    try:
        _fuzz(one, examples)
    finally:
        relay.close()
    counts = relay.counters.values
    received = counts["pulse_batches_received_total"]
    dropped = counts["pulse_batches_dropped_total"]
    reasons = sum(v for k, v in counts.items()
                  if k.startswith("pulse_batches_dropped_") and k != "pulse_batches_dropped_total")
    assert received >= 2 * examples and dropped == reasons
    assert received == counts["pulse_batches_accepted_total"] + dropped
    completed = honest // (2 * BATCHES_PER_ROUND)
    announced = relay.announced()
    assert len(set(announced)) == len(announced) and set(range(completed)) <= set(announced)
    assert max(announced) < completed + ROUNDS_IN_FLIGHT


def test_relay_takes_hostile_pulse_batches():
    _pulse_path(QUICK)


@pytest.mark.slow
def test_relay_takes_10000_hostile_pulse_batches():
    _pulse_path(SLOW)


# --- (d) Charles's records path (from nature's process) ----------------------------------------


@st.composite
def records_messages(draw, honest: list[list[bytes]]) -> list[bytes]:
    """A hostile records message: random parts, or an honest one with one part's bytes mutated,
    a header field changed, or parts dropped or added."""
    what = draw(st.sampled_from(["random", "bytes", "field", "field", "parts"]))
    if what == "random":
        return draw(st.lists(st.binary(max_size=64), max_size=5))
    parts = [bytes(p) for p in draw(st.sampled_from(honest))]
    if what == "bytes":
        i = draw(st.integers(0, 3))
        parts[i] = _mutate(parts[i], [draw(_BYTE_MUTATION)], [])
    elif what == "field":
        h = json.loads(parts[0])
        h[draw(st.sampled_from(["v", "round", "first_slot", "stop_slot", "complete",
                                "traceparents", "measure", "other"]))] = draw(_JSON)
        parts[0] = json.dumps(h).encode()
    else:
        parts = draw(st.sampled_from([parts[:3], parts + [b""], parts[::-1], []]))
    return parts


HONEST_ROUNDS = 8


def _records_path(examples: int) -> None:
    """Hostile records interleaved with nature's honest ones (those of ``HONEST_ROUNDS`` rounds,
    made first): Charles never raises, counts every message, and announces each round once."""
    relay = Relay()
    honest: list[list[bytes]] = []
    for r in range(HONEST_ROUNDS):
        for i in range(BATCHES_PER_ROUND):
            relay.nature_node.on_pulses(relay.parts("alice", r, i))
            honest.append(relay.nature_node.on_pulses(relay.parts("bob", r, i)).to_parts())
    sent = 0

    @given(st.data())
    def one(data) -> None:
        nonlocal sent
        relay.charles.on_records(data.draw(records_messages(honest)))  # must not raise
        if sent < len(honest):
            relay.charles.on_records(honest[sent])
            sent += 1

    try:
        _fuzz(one, examples)
    finally:
        relay.close()
    counts = relay.counters.values
    received = counts["records_batches_received_total"]
    assert received == examples + min(examples, len(honest))
    assert received == counts.get("records_batches_accepted_total", 0) + counts.get(
        "records_batches_dropped_total", 0)
    announced = relay.announced()
    assert len(set(announced)) == len(announced)
    assert set(range(min(examples, len(honest)) // BATCHES_PER_ROUND)) <= set(announced)


def test_charles_takes_hostile_records():
    _records_path(QUICK)


@pytest.mark.slow
def test_charles_takes_10000_hostile_records():
    _records_path(SLOW)
