"""The codec under hostile frames: every problem is a short ``MessageDecodeError``, nothing else.

Each test forges one frame a peer holding the key could send (the tag is checked before the codec
runs, so authentication does not stop it).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from classical.codec import MAX_META_BYTES, MessageDecodeError, decode, encode, max_message_bytes
from classical.messages import Announcement, RoundAbort

_HEAD = struct.Struct(">BBI")


def _meta(message) -> dict:
    data = encode(message)
    (meta_len,) = struct.unpack_from(">I", data, 2)
    return json.loads(data[6:6 + meta_len])


def _frame(kind: int, meta: bytes, arrays: bytes = b"") -> bytes:
    return _HEAD.pack(2, kind, len(meta)) + meta + arrays


def _abort_meta(**extra) -> bytes:
    meta = _meta(RoundAbort(1, "x"))
    meta.update(extra)
    return json.dumps(meta).encode()


def _announcement_with(slots_header: bytes, padding: int = 0) -> bytes:
    """An announcement whose ``slots`` array header is ``slots_header`` and whose ``bell`` is
    empty, with ``padding`` zero bytes of data in between."""
    meta = json.dumps(_meta(Announcement(0, 0, 4096, np.zeros(0, np.int64),
                                         np.zeros(0, np.uint8)))).encode()
    empty_bell = struct.pack(">BBI", 0, 1, 0)
    return _frame(Announcement.KIND, meta, slots_header + bytes(padding) + empty_bell)


def test_shape_whose_product_overflows_int64_is_a_decode_error():
    # 65536**4 = 2**64: np.prod wrapped it to 0 and reshape raised a plain ValueError
    frame = _announcement_with(struct.pack(">BB4I", 3, 4, *[1 << 16] * 4), padding=1 << 17)
    with pytest.raises(MessageDecodeError, match="run past the frame|longer than"):
        decode(frame)


def test_empty_array_with_an_absurd_dimension_is_rejected():
    frame = _announcement_with(struct.pack(">BB2I", 3, 2, 0, (1 << 32) - 1))
    with pytest.raises(MessageDecodeError, match="longer than the"):
        decode(frame)


def test_integer_with_thousands_of_digits_is_a_decode_error():
    meta = _abort_meta(round_id=0).replace(b'"round_id": 0', b'"round_id": ' + b"7" * 5000)
    with pytest.raises(MessageDecodeError, match="not JSON"):
        decode(_frame(RoundAbort.KIND, meta))


def test_deeply_nested_meta_is_a_decode_error():
    meta = b"[" * 30_000 + b"]" * 30_000  # within MAX_META_BYTES: the parser's recursion limit
    with pytest.raises(MessageDecodeError, match="not JSON"):
        decode(_frame(RoundAbort.KIND, meta))


def test_meta_longer_than_the_bound_is_refused_unparsed():
    meta = _abort_meta(reason="x" * MAX_META_BYTES)
    with pytest.raises(MessageDecodeError, match="exceeds"):
        decode(_frame(RoundAbort.KIND, meta))


@pytest.mark.parametrize("value", [1 << 63, -(1 << 63) - 1, 1 << 200])
def test_integer_fields_beyond_64_bits_are_rejected(value):
    with pytest.raises(MessageDecodeError, match="64-bit"):
        decode(_frame(RoundAbort.KIND, _abort_meta(round_id=value)))


@pytest.mark.parametrize("value", [{"a": 1}, 12, ["00-ab"], "0" * 300])
def test_traceparent_must_be_a_short_string(value):
    with pytest.raises(MessageDecodeError, match="_traceparent"):
        decode(_frame(RoundAbort.KIND, _abort_meta(_traceparent=value)))


def test_error_messages_stay_short_whatever_the_frame_holds():
    fields = {f"field_{i}": i for i in range(3000)}
    with pytest.raises(MessageDecodeError) as err:
        decode(_frame(RoundAbort.KIND, _abort_meta(**fields)))
    assert "3000 unexpected fields" in str(err.value) and len(str(err.value)) < 200
    with pytest.raises(MessageDecodeError) as err:
        decode(_frame(RoundAbort.KIND, _abort_meta(round_id="r" * 10_000)))
    assert len(str(err.value)) < 200


def test_max_message_bytes_holds_an_announcement_of_every_slot_of_the_round():
    slots = 1 << 20
    every_slot = Announcement(0, 0, slots, np.arange(slots, dtype=np.int64),
                              np.ones(slots, np.uint8))
    length = len(encode(every_slot, "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"))
    assert 9 * slots < length <= max_message_bytes(slots)
