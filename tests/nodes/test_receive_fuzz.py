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

The quick versions run in the default suite, drawn by Hypothesis (derandomized: a fixed seed per
test, so CI sees the same frames every time); the ``slow`` ones run 10,000 frames per path, made of
the same choices drawn from a seeded generator (``_Draws``): Hypothesis's own work per example cost
several times what the receive paths do with it.
"""

from __future__ import annotations

import json
import struct
import threading

import numpy as np
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


class _Draws:
    """The choices a hostile message is made of, from Hypothesis (the quick runs: it explores
    and shrinks) or from a seeded generator (the 10,000-message runs: Hypothesis's own work per
    example cost several times the receive path's, and a plain stream of the same choices is
    what a long run needs)."""

    def __init__(self, draw=None, rng: np.random.Generator | None = None) -> None:
        self.draw, self.rng = draw, rng

    def integer(self, lo: int, hi: int) -> int:
        if self.draw is not None:
            return self.draw(st.integers(lo, hi))
        if hi - lo < 1 << 62:
            return lo + int(self.rng.integers(0, hi - lo + 1))
        return lo + int.from_bytes(self.rng.bytes(16), "big") % (hi - lo + 1)

    def choice(self, options: list):
        if self.draw is not None:
            return self.draw(st.sampled_from(options))
        return options[int(self.rng.integers(len(options)))]

    def binary(self, max_size: int) -> bytes:
        if self.draw is not None:
            return self.draw(st.binary(max_size=max_size))
        return self.rng.bytes(int(self.rng.integers(0, max_size + 1)))

    def text(self, max_size: int) -> str:
        if self.draw is not None:
            return self.draw(st.text(max_size=max_size))
        return "".join(chr(int(c)) for c in self.rng.integers(
            0, 0xD800, int(self.rng.integers(0, max_size + 1))))


def _run(one, examples: int, stream: bool, seed: int) -> None:
    """``one(draws)`` per example: from a seeded generator (``stream``) or from Hypothesis."""
    if stream:
        draws = _Draws(rng=np.random.default_rng(seed))
        for _ in range(examples):
            one(draws)
    else:
        _fuzz(given(st.data())(lambda data: one(_Draws(data.draw))), examples)


# --- mutations ------------------------------------------------------------------------------

_SPECIAL_SIZES = [0, 1, 2, 255, 1 << 16, (1 << 31) - 1, (1 << 32) - 1]


def _size(d: _Draws) -> int:
    return (d.choice(_SPECIAL_SIZES) if d.choice([True, False])
            else d.integer(0, (1 << 32) - 1))


def _byte_mutation(d: _Draws) -> tuple:
    kind = d.choice(["flip", "set", "truncate", "extend", "size"])
    if kind == "flip":
        return kind, d.integer(0, 1 << 20), d.integer(0, 7)
    if kind == "set":
        return kind, d.integer(0, 1 << 20), d.integer(0, 255)
    if kind == "truncate":
        return kind, d.integer(0, 1 << 20)
    if kind == "extend":
        return kind, d.binary(64) or b"\x00"
    return kind, d.integer(0, 1 << 20), _size(d)


def _byte_mutations(d: _Draws, most: int) -> list[tuple]:
    return [_byte_mutation(d) for _ in range(d.integer(1, most))]


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


def _codec_frame(d: _Draws) -> bytes:
    if d.integer(0, 9) == 0:
        return d.binary(256)
    frame = d.choice(_HONEST)
    return _mutate(frame, _byte_mutations(d, 4), _codec_size_fields(frame))


# --- (a) the codec ----------------------------------------------------------------------------


def _codec_path(examples: int, stream: bool = False) -> None:
    seen = {"received": 0, "accepted": 0, "dropped": 0}

    def check(frame: bytes) -> None:
        seen["received"] += 1
        try:
            decode(frame)
        except MessageDecodeError as e:
            assert len(str(e)) < 400
            seen["dropped"] += 1
        else:
            seen["accepted"] += 1

    _run(lambda d: check(_codec_frame(d)), examples, stream, seed=1)
    assert seen["received"] >= examples
    assert seen["received"] == seen["accepted"] + seen["dropped"]


def test_codec_takes_hostile_frames():
    _codec_path(QUICK)


@pytest.mark.slow
def test_codec_takes_10000_hostile_frames():
    _codec_path(SLOW, stream=True)


# --- (b) the classical receive path: mailbox, then the authenticated link ---------------------


def _sealed_frame(d: _Draws, peer) -> tuple[bytes, bytes]:
    """(sender name, frame): from a key-holding peer sealing a mutated payload, from a forger
    mutating a sealed frame, or random bytes under any name."""
    sender = d.choice([b"alice", b"alice", b"alice", b"eve", b"", b"\xff"])
    kind = d.choice(["sealed", "forged", "random"])
    if kind == "random":
        return sender, d.binary(256)
    payload = _codec_frame(d) if d.choice([True, False]) else d.choice(_HONEST)
    frame = peer.sealer.seal(payload)
    if kind == "forged":
        frame = _mutate(frame, _byte_mutations(d, 3), [9])
    return sender, frame


def _link_path(examples: int, stream: bool = False) -> None:
    alice_end = hmac_link(b"a" * 32, b"b" * 32)  # the key-holding sender
    bob_end = hmac_link(b"b" * 32, b"a" * 32)
    bob_end.opener.allow_gaps = True  # as the nodes run
    context = zmq.Context()
    mailbox = Mailbox(context, "inproc://fuzz-mailbox", ["alice"], Counters(), threading.Event())
    mailbox.stop.set()  # drained by hand: ``sort`` is the thread's whole work
    accepted = 0

    def check(message: tuple[bytes, bytes]) -> None:
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
        _run(lambda d: check(_sealed_frame(d, alice_end)), examples, stream, seed=2)
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
    _link_path(SLOW, stream=True)


# --- (c) Charles's pulse path -----------------------------------------------------------------

_JSON_VALUES = [None, True, False, [], {}, [2, 6], [[2], [6]], {"shape": [2, 6]}, "", "eve",
                "alice\x00", 1.5, -0.0, float("inf"), float("nan"), "1" * 30]


def _json(d: _Draws):
    kind = d.integer(0, 2)
    if kind == 0:
        return d.choice(_JSON_VALUES)
    return d.integer(-(1 << 70), 1 << 70) if kind == 1 else d.text(8)


def _header_mutation(d: _Draws) -> tuple:
    kind = d.choice(["field", "drop", "shift", "shape"])
    if kind == "field":
        return kind, d.choice(["v", "user", "round", "first_frame", "shape", "key", "last",
                               "traceparent", "other"]), _json(d)
    if kind == "drop":
        return kind, d.choice(["v", "user", "round", "shape", "key", "last"])
    if kind == "shift":
        return kind, d.choice(["round", "first_frame"]), d.choice(
            [-1, 1, -(1 << 40), 1 << 40, 1 << 63])
    return kind, [_size(d) if d.choice([True, False]) else d.integer(-3, 3)
                  for _ in range(d.integer(0, 3))]


def _pulse_message(d: _Draws, relay: Relay, near_round: int) -> list[bytes]:
    """A hostile message: random parts, or a batch of a round near ``near_round`` (the honest
    users' current one) sent as is (a copy), or with one mutation of its header's fields, its
    header's bytes, its counts' bytes or its number of parts."""
    what = d.choice(["random", "copy", "copy", "copy", "field", "field", "header", "counts",
                     "counts", "parts"])
    if what == "random":
        return [d.binary(64) for _ in range(d.integer(0, 3))]
    user = d.choice(["alice", "bob"])
    shift = d.integer(-2, 4) if d.choice([True, False]) else d.integer(-50, 50)
    round_id = max(0, near_round + shift)
    header, counts = relay.parts(user, round_id, d.integer(0, BATCHES_PER_ROUND - 1))
    if what == "field":
        h, m = json.loads(header), _header_mutation(d)
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
        header = _mutate(header, [_byte_mutation(d)], [])
    elif what == "counts":
        counts = _mutate(counts, [_byte_mutation(d)], [])
    elif what == "parts":
        return d.choice([[header], [header, counts, b""], [counts, header], []])
    return [header, counts]


def _pulse_path(examples: int, stream: bool = False) -> None:
    """Each example interleaves one hostile message with the next of the honest users' stream
    (Alice's and Bob's batches in order); every round the honest stream completes must still be
    announced exactly once, whatever the hostile messages did."""
    relay = Relay()
    honest = 0  # honest messages sent

    def one(d: _Draws) -> None:
        nonlocal honest
        step = honest // 2
        near = step // BATCHES_PER_ROUND
        relay.on_pulses(_pulse_message(d, relay, near))  # must not raise
        relay.on_pulses(relay.parts(("alice", "bob")[honest % 2], near,
                                            step % BATCHES_PER_ROUND))
        honest += 1
        assert sum(map(len, relay.nature.waiting.values())) <= \
            2 * ROUNDS_IN_FLIGHT * BATCHES_PER_ROUND

    try:
        _run(one, examples, stream, seed=3)
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
    _pulse_path(SLOW, stream=True)


# --- (d) Charles's records path (from nature's process) ----------------------------------------


def _records_message(d: _Draws, honest: list[list[bytes]]) -> list[bytes]:
    """A hostile records message: random parts, or an honest one with one part's bytes mutated,
    a header field changed, or parts dropped or added."""
    what = d.choice(["random", "bytes", "field", "field", "parts"])
    if what == "random":
        return [d.binary(64) for _ in range(d.integer(0, 5))]
    parts = [bytes(p) for p in d.choice(honest)]
    if what == "bytes":
        i = d.integer(0, 3)
        parts[i] = _mutate(parts[i], [_byte_mutation(d)], [])
    elif what == "field":
        h = json.loads(parts[0])
        h[d.choice(["v", "round", "first_slot", "stop_slot", "complete", "traceparents",
                    "measure", "other"])] = _json(d)
        parts[0] = json.dumps(h).encode()
    else:
        parts = d.choice([parts[:3], parts + [b""], parts[::-1], []])
    return parts


HONEST_ROUNDS = 8


def _records_path(examples: int, stream: bool = False) -> None:
    """Hostile records interleaved with nature's honest ones (those of ``HONEST_ROUNDS`` rounds,
    made first): Charles never raises, counts every message, and announces each round once."""
    relay = Relay()
    honest: list[list[bytes]] = []
    for r in range(HONEST_ROUNDS):
        for i in range(BATCHES_PER_ROUND):
            relay.nature_node.on_pulses(relay.parts("alice", r, i))
            honest.append(relay.nature_node.on_pulses(relay.parts("bob", r, i)).to_parts())
    sent = 0

    def one(d: _Draws) -> None:
        nonlocal sent
        relay.charles.on_records(_records_message(d, honest))  # must not raise
        if sent < len(honest):
            relay.charles.on_records(honest[sent])
            sent += 1

    try:
        _run(one, examples, stream, seed=4)
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
    _records_path(SLOW, stream=True)
