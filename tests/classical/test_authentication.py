"""Authentication: key pool accounting, Wegman–Carter and HMAC tags, tag-first framing, replays."""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classical.authentication import (
    FRAME_HEADER_BYTES,
    AuthenticationError,
    FrameFormatError,
    HmacAuthenticator,
    KeyPool,
    KeyPoolExhausted,
    MessageAuthenticator,
    Opener,
    ReplayError,
    Sealer,
    WegmanCarterAuthenticator,
)

SECRET = bytes(np.random.default_rng(2024).integers(0, 256, 4096, dtype=np.uint8))


def _wegman_carter_pair() -> tuple[MessageAuthenticator, MessageAuthenticator]:
    return WegmanCarterAuthenticator(KeyPool(SECRET)), WegmanCarterAuthenticator(KeyPool(SECRET))


def _hmac_pair() -> tuple[MessageAuthenticator, MessageAuthenticator]:
    return HmacAuthenticator(SECRET[:32]), HmacAuthenticator(SECRET[:32])


PAIRS: dict[str, Callable[[], tuple[MessageAuthenticator, MessageAuthenticator]]] = {
    "wegman-carter": _wegman_carter_pair,
    "hmac": _hmac_pair,
}


@pytest.fixture(params=sorted(PAIRS))
def channel(request: pytest.FixtureRequest) -> tuple[Sealer, Opener]:
    sender, receiver = PAIRS[request.param]()
    return Sealer(sender), Opener(receiver)


# --- key pool -----------------------------------------------------------------------------


def test_pool_hands_out_bytes_in_order_and_counts_them() -> None:
    pool = KeyPool(b"abcdefgh")
    assert pool.take(3) == b"abc"
    assert pool.take(2) == b"de"
    assert (pool.available_bytes, pool.consumed_bytes) == (3, 5)


def test_pool_exhaustion_raises_and_consumes_nothing() -> None:
    pool = KeyPool(b"abc")
    with pytest.raises(KeyPoolExhausted, match="requested 4 bytes, 3 available"):
        pool.take(4)
    assert pool.available_bytes == 3 and pool.consumed_bytes == 0
    assert pool.take(3) == b"abc"


def test_replenished_key_is_used_after_the_remaining_key() -> None:
    pool = KeyPool(b"ab")
    pool.replenish(b"cd")
    assert pool.take(4) == b"abcd"
    assert pool.replenished_bytes == 2


def test_round_counters_reset_but_totals_accumulate() -> None:
    pool = KeyPool(bytes(100))
    pool.take(10)
    pool.replenish(bytes(7))
    usage = pool.close_round()
    assert (usage.consumed_bytes, usage.replenished_bytes) == (10, 7)
    pool.take(5)
    assert pool.close_round().consumed_bytes == 5
    assert (pool.consumed_bytes, pool.replenished_bytes) == (15, 7)


def test_pool_survives_many_small_takes() -> None:
    data = bytes(range(256)) * 64
    pool = KeyPool(data)
    taken = b"".join(pool.take(7) for _ in range(len(data) // 7))
    assert taken == data[: len(taken)]


def test_negative_take_is_rejected() -> None:
    with pytest.raises(ValueError):
        KeyPool(b"x").take(-1)


# --- tags -----------------------------------------------------------------------------------


def test_modes_are_labelled() -> None:
    assert WegmanCarterAuthenticator.mode == "information-theoretic-wegman-carter"
    assert HmacAuthenticator.mode == "computational-hmac"


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_both_ends_compute_the_same_tag(name: str) -> None:
    sender, receiver = PAIRS[name]()
    tag = sender.tag(b"head", b"payload", 0)
    assert len(tag) == sender.tag_bytes
    receiver.verify(b"head", b"payload", 0, tag)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_tag_binds_header_payload_and_seq(name: str) -> None:
    sender, receiver = PAIRS[name]()
    tag = sender.tag(b"head", b"payload", 0)
    for header, payload, seq in [
        (b"heaD", b"payload", 0),
        (b"head", b"paylo4d", 0),
        (b"hea", b"dpayload", 0),
        (b"head", b"payload", 1),
    ]:
        with pytest.raises(AuthenticationError):
            receiver.verify(header, payload, seq, tag)


def test_wegman_carter_pad_is_never_reused() -> None:
    authenticator = WegmanCarterAuthenticator(KeyPool(SECRET))
    authenticator.tag(b"", b"one", 0)
    with pytest.raises(ValueError, match="one-time pad"):
        authenticator.tag(b"", b"two", 0)


def test_wegman_carter_same_message_gets_fresh_tags() -> None:
    authenticator = WegmanCarterAuthenticator(KeyPool(SECRET))
    assert authenticator.tag(b"h", b"same", 0) != authenticator.tag(b"h", b"same", 1)


def test_wegman_carter_ends_with_different_pools_disagree() -> None:
    sender = WegmanCarterAuthenticator(KeyPool(SECRET))
    receiver = WegmanCarterAuthenticator(KeyPool(SECRET[::-1]))
    with pytest.raises(AuthenticationError):
        receiver.verify(b"h", b"p", 0, sender.tag(b"h", b"p", 0))


def test_wegman_carter_forgery_bound_for_megabyte_messages() -> None:
    authenticator = WegmanCarterAuthenticator(KeyPool(SECRET))
    assert authenticator.tag_bytes == 16
    assert authenticator.forgery_bound(1 << 20) < 2.0**-85


def test_wegman_carter_consumption_is_counted_and_symmetric() -> None:
    sender_pool, receiver_pool = KeyPool(SECRET), KeyPool(SECRET)
    sealer = Sealer(WegmanCarterAuthenticator(sender_pool, evaluations=2))
    opener = Opener(WegmanCarterAuthenticator(receiver_pool, evaluations=2))
    for i in range(5):
        opener.open(sealer.seal(bytes([i]) * 100))
    # 2 hash keys once, then 2 pads per message, 8 bytes each (rejections have p ~ 2^-61).
    assert sender_pool.consumed_bytes == receiver_pool.consumed_bytes == 16 + 5 * 16
    assert sender_pool.close_round().consumed_bytes == 96


def test_wegman_carter_pool_exhaustion_stops_sealing() -> None:
    pool = KeyPool(SECRET[: 16 + 16])  # hash keys and exactly one message's pads
    sealer = Sealer(WegmanCarterAuthenticator(pool))
    sealer.seal(b"first")
    with pytest.raises(KeyPoolExhausted):
        sealer.seal(b"second")


def test_hmac_consumes_no_key_and_rejects_a_short_secret() -> None:
    assert HmacAuthenticator(SECRET[:32]).key_bytes_consumed == 0
    with pytest.raises(ValueError):
        HmacAuthenticator(b"short")


def test_hmac_with_another_secret_is_rejected() -> None:
    tag = HmacAuthenticator(SECRET[:32]).tag(b"h", b"p", 0)
    with pytest.raises(AuthenticationError):
        HmacAuthenticator(SECRET[32:64]).verify(b"h", b"p", 0, tag)


# --- frames -----------------------------------------------------------------------------------


def test_frames_round_trip_in_order(channel: tuple[Sealer, Opener]) -> None:
    sealer, opener = channel
    payloads = [b"", b"x", bytes(range(256)) * 40]
    for seq, payload in enumerate(payloads):
        assert tuple(opener.open(sealer.seal(payload))) == (seq, payload)


def test_frame_layout_is_version_seq_length_payload_tag(channel: tuple[Sealer, Opener]) -> None:
    sealer, _ = channel
    sealer.seal(b"zero")
    frame = sealer.seal(b"abc")
    assert struct.unpack(">BQI", frame[:FRAME_HEADER_BYTES]) == (1, 1, 3)
    assert frame[FRAME_HEADER_BYTES : FRAME_HEADER_BYTES + 3] == b"abc"
    assert len(frame) - FRAME_HEADER_BYTES - 3 in (16, 32)  # Wegman-Carter or HMAC tag


@settings(max_examples=40, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=300),
    where=st.integers(0, 10**6),
    flip=st.integers(1, 255),
    mode=st.sampled_from(sorted(PAIRS)),
)
def test_any_tampered_byte_is_rejected(payload: bytes, where: int, flip: int, mode: str) -> None:
    sender, receiver = PAIRS[mode]()
    frame = bytearray(Sealer(sender).seal(payload))
    frame[where % len(frame)] ^= flip
    with pytest.raises(AuthenticationError):
        Opener(receiver).open(bytes(frame))


def test_tag_is_checked_before_the_payload_is_decoded(channel: tuple[Sealer, Opener]) -> None:
    sealer, opener = channel
    decoded: list[bytes] = []

    def strict_decode(payload: bytes) -> bytes:
        decoded.append(payload)
        if not payload.startswith(b"{"):
            raise ValueError("not a message")
        return payload

    frame = bytearray(sealer.seal(b"{ok}"))
    frame[FRAME_HEADER_BYTES] = ord("#")  # would fail to decode, and breaks the tag
    with pytest.raises(AuthenticationError):
        opener.open(bytes(frame), decode=strict_decode)
    assert decoded == []


def test_tag_is_checked_before_version_and_length(channel: tuple[Sealer, Opener]) -> None:
    sealer, opener = channel
    frame = sealer.seal(b"payload")
    bad_version = b"\x07" + frame[1:]
    bad_length = frame[:9] + struct.pack(">I", 999) + frame[13:]
    for forged in (bad_version, bad_length, frame[:10]):
        with pytest.raises(AuthenticationError):
            opener.open(forged)
    assert opener.open(frame).payload == b"payload"


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_authentic_but_malformed_frame_is_a_format_error(name: str) -> None:
    sender, receiver = PAIRS[name]()
    header = struct.pack(">BQI", 2, 0, 3)  # version 2, correctly tagged
    frame = header + b"abc" + sender.tag(header, b"abc", 0)
    with pytest.raises(FrameFormatError, match="version"):
        Opener(receiver).open(frame)


def test_replayed_frame_is_rejected(channel: tuple[Sealer, Opener]) -> None:
    sealer, opener = channel
    first = sealer.seal(b"first")
    opener.open(first)
    with pytest.raises(ReplayError, match="replay"):
        opener.open(first)
    assert opener.open(sealer.seal(b"second")).seq == 1


def test_reordered_frame_is_rejected_then_accepted_in_turn(channel: tuple[Sealer, Opener]) -> None:
    sealer, opener = channel
    first, second = sealer.seal(b"first"), sealer.seal(b"second")
    with pytest.raises(ReplayError, match="reorder"):
        opener.open(second)
    assert opener.open(first).seq == 0
    assert opener.open(second).seq == 1


def test_decode_runs_on_authentic_in_order_payloads(channel: tuple[Sealer, Opener]) -> None:
    sealer, opener = channel
    assert opener.open(sealer.seal(b"41"), decode=lambda p: int(p) + 1) == (0, 42)


def test_wegman_carter_frame_too_old_for_the_replay_window_is_unverifiable() -> None:
    sealer = Sealer(WegmanCarterAuthenticator(KeyPool(SECRET)))
    opener = Opener(WegmanCarterAuthenticator(KeyPool(SECRET), replay_window=2))
    frames = [sealer.seal(bytes([i])) for i in range(4)]
    for frame in frames:
        opener.open(frame)
    with pytest.raises(ReplayError):
        opener.open(frames[3])  # pad still held: authenticated, then flagged as replay
    with pytest.raises(AuthenticationError, match="no pad"):
        opener.open(frames[0])  # pad discarded: cannot even be authenticated
