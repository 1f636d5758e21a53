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
    KeyPoolUsage,
    MessageAuthenticator,
    Opener,
    ReplayError,
    Sealer,
    WegmanCarterAuthenticator,
)
from classical.verification import FIELD_PRIME

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


# --- Mutation testing (docs/mutation-testing.md): each test below turns a surviving mutant red.


def test_every_replenishment_is_counted_in_the_totals_and_the_round() -> None:
    pool = KeyPool(b"")
    pool.replenish(b"abc")
    pool.replenish(b"de")
    assert pool.replenished_bytes == 5
    assert pool.close_round() == KeyPoolUsage(0, 5)
    pool.replenish(b"f")
    pool.replenish(b"gh")
    assert pool.close_round() == KeyPoolUsage(0, 3)
    assert pool.replenished_bytes == 8


def test_a_round_without_traffic_reports_zero_usage() -> None:
    pool = KeyPool(bytes(10))
    pool.take(4)
    pool.replenish(b"xy")
    pool.close_round()
    assert pool.close_round() == KeyPoolUsage(0, 0)


@pytest.mark.parametrize("evaluations", [1, 2, 3])
@pytest.mark.parametrize(("message_bytes", "blocks"), [(1, 1), (4, 1), (5, 2), (1 << 20, 1 << 18)])
def test_wegman_carter_forgery_bound_is_the_polynomial_degree_over_p(
    evaluations: int, message_bytes: int, blocks: int
) -> None:
    authenticator = WegmanCarterAuthenticator(KeyPool(SECRET), evaluations=evaluations)
    expected = ((blocks + 1) / FIELD_PRIME) ** evaluations
    assert authenticator.forgery_bound(message_bytes) == expected


def test_wegman_carter_draws_pads_at_most_lookahead_ahead() -> None:
    lookahead = 4
    sender = WegmanCarterAuthenticator(KeyPool(SECRET), lookahead=lookahead)
    receiver = WegmanCarterAuthenticator(KeyPool(SECRET), lookahead=lookahead)
    with pytest.raises(ValueError, match="ahead"):
        sender.tag(b"h", b"p", lookahead)
    with pytest.raises(AuthenticationError, match="no pad held"):
        receiver.verify(b"h", b"p", lookahead, bytes(16))
    tag = sender.tag(b"h", b"p", lookahead - 1)  # the farthest seq still within reach
    receiver.verify(b"h", b"p", lookahead - 1, tag)


def test_key_bytes_through_the_next_seq_draws_its_pad() -> None:
    # a sender that has sealed nothing yet asks what its first frame will cost
    pool = KeyPool(SECRET)
    authenticator = WegmanCarterAuthenticator(pool, evaluations=2)
    assert authenticator.key_bytes_through(-1) == 16
    assert authenticator.key_bytes_through(0) == 16 + 16
    assert authenticator.key_bytes_through(1) == 16 + 32
    assert pool.consumed_bytes == 48


def test_the_replay_window_holds_exactly_the_last_pads() -> None:
    window = 3
    sealer = Sealer(WegmanCarterAuthenticator(KeyPool(SECRET)))
    receiver = WegmanCarterAuthenticator(KeyPool(SECRET), replay_window=window)
    opener = Opener(receiver)
    frames = [sealer.seal(bytes([i])) for i in range(6)]
    for frame in frames:
        opener.open(frame)
    for seq in range(6 - window, 6):  # still held: authenticated, then flagged as replays
        with pytest.raises(ReplayError):
            opener.open(frames[seq])
        assert receiver.key_bytes_through(seq) == 16 + 16 * (seq + 1)
    for seq in range(6 - window):  # discarded: unverifiable, and no longer accounted
        with pytest.raises(AuthenticationError, match="no pad"):
            opener.open(frames[seq])
        with pytest.raises(ValueError, match="not held"):
            receiver.key_bytes_through(seq)


def test_a_16_byte_hmac_secret_is_enough() -> None:
    sender, receiver = HmacAuthenticator(SECRET[:16]), HmacAuthenticator(SECRET[:16])
    receiver.verify(b"h", b"p", 0, sender.tag(b"h", b"p", 0))
    with pytest.raises(ValueError, match="16 bytes"):
        HmacAuthenticator(SECRET[:15])


class _Sized(bytes):
    """A small payload that reports another length (a 4 GiB payload does not fit in a test)."""

    def __new__(cls, length: int) -> _Sized:
        self = super().__new__(cls, b"p")
        self.length = length
        return self

    def __len__(self) -> int:
        return self.length


class _RecordingAuthenticator:
    mode = "test"
    tag_bytes = 1

    def __init__(self) -> None:
        self.headers: list[bytes] = []

    def tag(self, header: bytes, payload: bytes, seq: int) -> bytes:
        self.headers.append(header)
        return b"T"

    def verify(self, header: bytes, payload: bytes, seq: int, tag: bytes) -> None:
        raise AssertionError("not used")


def test_the_largest_payload_the_length_field_can_carry_is_sealed() -> None:
    authenticator = _RecordingAuthenticator()
    Sealer(authenticator).seal(_Sized(0xFFFFFFFF))
    assert struct.unpack(">BQI", authenticator.headers[0]) == (1, 0, 0xFFFFFFFF)
    with pytest.raises(ValueError, match="2\\*\\*32 - 1"):
        Sealer(authenticator).seal(_Sized(1 << 32))
    assert len(authenticator.headers) == 1


def test_an_opener_that_allows_gaps_counts_every_skipped_frame() -> None:
    sender, receiver = _wegman_carter_pair()
    sealer, opener = Sealer(sender), Opener(receiver, allow_gaps=True)
    frames = [sealer.seal(bytes([i])) for i in range(8)]
    assert opener.open(frames[2]).seq == 2
    assert opener.skipped == 2
    assert opener.open(frames[5]).seq == 5
    assert opener.skipped == 4
    with pytest.raises(ReplayError, match="replay"):
        opener.open(frames[4])
    assert opener.open(frames[6]).seq == 6 and opener.skipped == 4


def test_a_frame_too_short_for_a_tag_is_rejected_before_any_pad_is_drawn() -> None:
    pool = KeyPool(SECRET)
    opener = Opener(WegmanCarterAuthenticator(pool))
    drawn = pool.consumed_bytes
    short = struct.pack(">BQI", 1, 5, 0) + bytes(15)  # header claiming seq 5, 15-byte "tag"
    with pytest.raises(AuthenticationError, match="too short"):
        opener.open(short)
    assert pool.consumed_bytes == drawn


def test_a_pool_built_without_key_is_empty() -> None:
    pool = KeyPool()
    assert pool.available_bytes == 0
    with pytest.raises(KeyPoolExhausted):
        pool.take(1)


def test_taking_nothing_is_allowed_and_costs_nothing() -> None:
    pool = KeyPool(b"abc")
    assert pool.take(0) == b""
    assert (pool.available_bytes, pool.consumed_bytes) == (3, 0)


@pytest.mark.parametrize("n_bytes", [True, 1.0, 2.5, "2"], ids=repr)
def test_only_integers_are_taken_from_a_pool(n_bytes: object) -> None:
    pool = KeyPool(b"abc")
    with pytest.raises(ValueError, match="non-negative integer"):
        pool.take(n_bytes)  # type: ignore[arg-type]
    assert pool.available_bytes == 3


def test_the_all_ones_draw_is_rejected_and_redrawn() -> None:
    # 8 pool bytes masked to 61 bits give 2**61 - 1 = p itself, which is not a field element
    pool = KeyPool(b"\xff" * 8 + (5).to_bytes(8, "big") + SECRET)
    authenticator = WegmanCarterAuthenticator(pool, evaluations=1)
    assert authenticator.key_bytes_consumed == 16 == pool.consumed_bytes
    assert authenticator.key_bytes_through(-1) == 16


def test_wegman_carter_counts_the_key_it_draws() -> None:
    authenticator = WegmanCarterAuthenticator(KeyPool(SECRET), evaluations=2)
    assert authenticator.key_bytes_consumed == 16  # two hash keys
    authenticator.tag(b"h", b"p", 0)
    authenticator.tag(b"h", b"p", 1)
    assert authenticator.key_bytes_consumed == 16 + 2 * 16


def test_the_largest_sequence_number_is_tagged_and_one_more_refused() -> None:
    # the (seq, header, payload) encoding both authenticators share carries seq as a u64
    sender, receiver = _hmac_pair()
    last = (1 << 64) - 1
    receiver.verify(b"h", b"p", last, sender.tag(b"h", b"p", last))
    with pytest.raises(ValueError, match="seq must be in"):
        sender.tag(b"h", b"p", last + 1)


def test_wegman_carter_defaults_hold_and_reach_64_sequence_numbers() -> None:
    sender = WegmanCarterAuthenticator(KeyPool(SECRET))
    with pytest.raises(ValueError, match="ahead"):
        sender.tag(b"h", b"p", 64)
    sender.tag(b"h", b"p", 63)
    sealer = Sealer(WegmanCarterAuthenticator(KeyPool(SECRET)))
    opener = Opener(WegmanCarterAuthenticator(KeyPool(SECRET)))
    frames = [sealer.seal(bytes([i % 256])) for i in range(65)]
    for frame in frames:
        opener.open(frame)
    with pytest.raises(ReplayError):
        opener.open(frames[1])  # the 64th-last pad is still held
    with pytest.raises(AuthenticationError, match="no pad"):
        opener.open(frames[0])


@pytest.mark.parametrize("name", ["evaluations", "replay_window", "lookahead"])
def test_wegman_carter_settings_must_be_at_least_one(name: str) -> None:
    authenticator = WegmanCarterAuthenticator(KeyPool(SECRET), **{name: 1})
    assert authenticator.tag(b"h", b"p", 0)
    with pytest.raises(ValueError, match="must be positive"):
        WegmanCarterAuthenticator(KeyPool(SECRET), **{name: 0})


def test_wegman_carter_tag_is_the_documented_padded_polynomial_hash() -> None:
    # Known answer from the module docstring: per evaluation i, (h_{k_i}(m) + s_i) mod p, 8 bytes
    # big-endian, m = seq u64 | header length u32 | header | payload; k_i then s_i drawn from
    # the pool (8 bytes masked to 61 bits each).
    from classical.verification import polynomial_hash

    pool_bytes = SECRET[:64]
    elements = [int.from_bytes(pool_bytes[i : i + 8], "big") & FIELD_PRIME for i in range(0, 64, 8)]
    assert all(e < FIELD_PRIME for e in elements)
    k, pads = elements[:2], [elements[2:4], elements[4:6], elements[6:8]]
    authenticator = WegmanCarterAuthenticator(KeyPool(pool_bytes), evaluations=2)
    for seq in range(3):
        header, payload = b"head%d" % seq, b"payload" * (seq + 1)
        message = struct.pack(">QI", seq, len(header)) + header + payload
        hashes = polynomial_hash(message, k, len(message))
        expected = b"".join(((int(h) + s) % FIELD_PRIME).to_bytes(8, "big")
                            for h, s in zip(hashes, pads[seq], strict=True))
        assert authenticator.tag(header, payload, seq) == expected
