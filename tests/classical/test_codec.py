"""The wire codec: every kind round-trips; malformed frames raise MessageDecodeError only."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classical.codec import MessageDecodeError, decode, encode
from classical.messages import (
    MESSAGE_TYPES,
    Amplify,
    Announcement,
    Committed,
    Confirm,
    EndOfRun,
    ReconcileReply,
    ReconcileRequest,
    ReconcileStart,
    RoundAbort,
    RoundStart,
    SiftingInfo,
    UnkeyedBits,
    VerifyRequest,
    VerifyResult,
    XBasisBits,
)

SAMPLES = [
    RoundStart(0, 0, 3000 << 20),
    EndOfRun(3, "all rounds done", "r2-0a1b2c3d4e5f"),
    Announcement(1, 0, 1 << 30, np.array([3, 9, 2**40], np.int64), np.array([1, 2, 1], np.uint8)),
    SiftingInfo(2, np.array([0, 1], np.uint8), np.array([2, 0], np.uint8),
                np.arange(12, dtype=np.int64).reshape(2, 6), bytes(range(32))),
    XBasisBits(2, np.zeros(0, np.uint8)),
    UnkeyedBits(2, np.array([1, 0, 0, 1], np.uint8)),
    ReconcileStart(3, "cascade", 100_000, 0.021, str(2**100), np.array([8, 38, 190], np.int64)),
    ReconcileRequest(3, np.array([[0, 1], [0, 7], [7, 9]], np.int32), np.zeros(0, np.uint8)),
    ReconcileReply(3, np.array([1, 0, 1], np.uint8)),
    VerifyRequest(4, np.array([2**61 - 2], np.uint64), np.array([12345], np.uint64), 61, 17),
    VerifyResult(4, True),
    Amplify(5, np.frombuffer(b"\x00\xff" * 16, np.uint8), 4096, "r5-abc", 41, 40, 1024, 960,
            "r4-abd"),
    Confirm(5, "r5-abc"),
    Committed(5, "r5-abc"),
    RoundAbort(6, "QBER_Z 0.31 above threshold 0.11"),
]


def _equal(a, b) -> bool:
    if type(a) is not type(b):
        return False
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def test_samples_cover_every_kind():
    assert {type(m) for m in SAMPLES} == set(MESSAGE_TYPES.values())


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips_with_trace_context(message):
    decoded, trace = decode(encode(message, traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"))
    assert _equal(decoded, message)
    assert trace.startswith("00-abab")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_decode_error(data):
    with contextlib.suppress(MessageDecodeError):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_frames_raise_decode_error_or_decode_cleanly(message, position, value):
    data = bytearray(encode(message))
    data[position % len(data)] = value
    with contextlib.suppress(MessageDecodeError):
        decode(bytes(data))


def test_truncation_is_named():
    data = encode(next(m for m in SAMPLES if isinstance(m, Announcement)))
    with pytest.raises(MessageDecodeError, match="Announcement"):
        decode(data[:-3])


def test_unknown_kind_and_version_are_rejected():
    data = bytearray(encode(SAMPLES[1]))
    data[1] = 200
    with pytest.raises(MessageDecodeError, match="unknown message kind"):
        decode(bytes(data))
    data[0] = 9
    with pytest.raises(MessageDecodeError, match="wire version"):
        decode(bytes(data))
