"""The wire codec of classical messages: one format, one version field.

Layout (all integers big-endian)::

    version u8 | kind u8 | meta length u32 | meta (UTF-8 JSON) | array section

``meta`` holds the scalar fields and the envelope (``round_id`` and, optionally, the W3C
``traceparent`` of the sender's span); bytes fields travel as hex. The array section holds the
array fields in declaration order, each as ``dtype code u8 | ndim u8 | shape u32×ndim | data``.
Decoding never trusts a length: every size is checked against what is left, the dtype against a
short whitelist and the fields against the message type, and any mismatch raises
``MessageDecodeError`` naming the field. The authenticator (``classical.authentication``) wraps
the encoded bytes; a frame is decoded only after its tag has been verified.

A peer that holds the key can still send anything, so ``decode`` treats every frame as hostile:
whatever is wrong with it (sizes, JSON, nesting, numbers beyond 64 bits, shapes whose product
overflows) raises ``MessageDecodeError`` and nothing else, with a message of bounded length.
Sizes are bounded three ways: the meta by ``MAX_META_BYTES``, each array by the bytes it actually
carries (and each of its dimensions by the frame's length, so even an empty array has a sane
shape), and the whole frame by the receiving socket (``max_message_bytes``, applied as ZeroMQ's
``MAXMSGSIZE`` in ``nodes.transport``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import typing
from typing import Any

import numpy as np

from classical.messages import MESSAGE_TYPES, Message

WIRE_VERSION = 2
_HEAD = struct.Struct(">BBI")
#: Wire dtypes (big-endian) by code; an array's code is found by (kind, itemsize).
_DTYPES: tuple[np.dtype, ...] = tuple(np.dtype(d) for d in ("u1", ">i2", ">i4", ">i8", ">u8",
                                                              ">f8"))
_CODE = {(d.kind, d.itemsize): i for i, d in enumerate(_DTYPES)}
_MAX_NDIM = 4
#: Scalar meta only (numbers, short strings, hex seeds, a trace context): 64 KiB is ample.
MAX_META_BYTES = 1 << 16
#: Integer fields are signed 64-bit (slot numbers, lengths, counts); larger ones are refused.
_INT_RANGE = (-(1 << 63), (1 << 63) - 1)
#: A W3C traceparent is 55 characters; a longer one is refused rather than passed to tracing.
_MAX_TRACEPARENT = 256
#: Bytes per slot of a round that bound any one classical message of the round: the largest, the
#: announcement, carries 9 (an int64 slot number and a Bell byte per announced slot); sifting
#: (2 per announced slot, and 8 per class and frame of at least 1024 slots), X bits and a Cascade
#: request (12 per question, well under one question per key bit) carry fewer.
MESSAGE_BYTES_PER_SLOT = 16
#: Room for the meta (at most ``MAX_META_BYTES``), the headers and the fixed-size messages.
MESSAGE_BYTES_OVERHEAD = 1 << 20


class MessageDecodeError(ValueError):
    """A frame that is not a well-formed message of a known kind."""


def max_message_bytes(round_slots: int) -> int:
    """The longest message a round of ``round_slots`` slots can produce: its encoding, or the
    authenticated frame around it (``classical.authentication``'s 13-byte header is within the
    overhead). Receivers refuse anything longer before reading it into memory, and the
    Wegman–Carter forgery bound is stated for messages of this length."""
    return MESSAGE_BYTES_PER_SLOT * round_slots + MESSAGE_BYTES_OVERHEAD


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of attacker-supplied data, cut so that an error message stays short."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def _array_fields(cls: type[Message]) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] is np.ndarray]


def _scalar_fields(cls: type[Message]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if hints[f.name] is not np.ndarray}


def encode(message: Message, traceparent: str | None = None) -> bytes:
    cls = type(message)
    if MESSAGE_TYPES.get(cls.KIND) is not cls:
        raise TypeError(f"{cls.__name__} is not a registered message type")
    meta: dict[str, Any] = {}
    for name, hint in _scalar_fields(cls).items():
        value = getattr(message, name)
        meta[name] = value.hex() if hint is bytes else value
    if traceparent:
        meta["_traceparent"] = traceparent
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    parts = [_HEAD.pack(WIRE_VERSION, cls.KIND, len(meta_bytes)), meta_bytes]
    for name in _array_fields(cls):
        arr = np.asarray(getattr(message, name))
        code = _CODE.get((arr.dtype.kind, arr.dtype.itemsize))
        if code is None or arr.ndim > _MAX_NDIM:
            raise TypeError(f"{cls.__name__}.{name}: unsupported array {arr.dtype} ndim={arr.ndim}")
        parts.append(struct.pack(">BB", code, arr.ndim))
        parts.append(struct.pack(f">{arr.ndim}I", *arr.shape))
        parts.append(np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes())
    return b"".join(parts)


def decode(data: bytes | memoryview) -> tuple[Message, str | None]:
    """Bytes → (message, traceparent). Arrays are read-only views of ``data`` in native order.

    Raises ``MessageDecodeError``, and nothing else, for a frame that is not a well-formed
    message of a known kind."""
    view = memoryview(data).cast("B")
    if len(view) < _HEAD.size:
        raise MessageDecodeError(f"frame of {len(view)} bytes is shorter than the header")
    version, kind, meta_len = _HEAD.unpack_from(view, 0)
    if version != WIRE_VERSION:
        raise MessageDecodeError(f"unsupported wire version {version} (expected {WIRE_VERSION})")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise MessageDecodeError(f"unknown message kind {kind}")
    pos = _HEAD.size
    if pos + meta_len > len(view):
        raise MessageDecodeError(f"{cls.__name__}: meta length {meta_len} runs past the frame")
    if meta_len > MAX_META_BYTES:
        raise MessageDecodeError(f"{cls.__name__}: meta of {meta_len} bytes exceeds "
                                 f"{MAX_META_BYTES}")
    try:
        meta = json.loads(bytes(view[pos:pos + meta_len]))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, too many digits, deep nesting
        raise MessageDecodeError(f"{cls.__name__}: meta is not JSON "
                                 f"({type(e).__name__}: {_short(str(e))})") from None
    if not isinstance(meta, dict):
        raise MessageDecodeError(f"{cls.__name__}: meta must be an object")
    pos += meta_len
    traceparent = meta.pop("_traceparent", None)
    if traceparent is not None and not (isinstance(traceparent, str)
                                        and len(traceparent) <= _MAX_TRACEPARENT):
        raise MessageDecodeError(f"{cls.__name__}: _traceparent must be a string of at most "
                                 f"{_MAX_TRACEPARENT} characters, got {_short(traceparent)}")
    values: dict[str, Any] = {}
    for name, hint in _scalar_fields(cls).items():
        if name not in meta:
            raise MessageDecodeError(f"{cls.__name__}: missing field {name!r}")
        values[name] = _scalar(cls, name, hint, meta.pop(name))
    if meta:
        raise MessageDecodeError(f"{cls.__name__}: {len(meta)} unexpected fields "
                                 f"{_short(sorted(meta))}")
    for name in _array_fields(cls):
        values[name], pos = _array(cls, name, view, pos)
    if pos != len(view):
        raise MessageDecodeError(f"{cls.__name__}: {len(view) - pos} trailing bytes")
    try:
        return cls(**values), traceparent
    except (ValueError, TypeError) as e:  # a message type that checks its own invariants
        raise MessageDecodeError(f"{cls.__name__}: {_short(str(e))}") from None


def _scalar(cls: type, name: str, hint: Any, value: Any) -> Any:
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str),
          bytes: lambda v: isinstance(v, str)}[hint]
    if not ok(value):
        raise MessageDecodeError(f"{cls.__name__}.{name}: expected {hint.__name__}, "
                                 f"got {_short(value)}")
    if hint is int and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise MessageDecodeError(f"{cls.__name__}.{name}: {_short(value)} is not a signed "
                                 f"64-bit integer")
    if hint is bytes:
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise MessageDecodeError(f"{cls.__name__}.{name}: not hex") from None
    return float(value) if hint is float else value


def _array(cls: type, name: str, view: memoryview, pos: int) -> tuple[np.ndarray, int]:
    if pos + 2 > len(view):
        raise MessageDecodeError(f"{cls.__name__}.{name}: array header missing")
    code, ndim = struct.unpack_from(">BB", view, pos)
    if code >= len(_DTYPES) or ndim > _MAX_NDIM:
        raise MessageDecodeError(f"{cls.__name__}.{name}: bad dtype code {code} or ndim {ndim}")
    pos += 2
    if pos + 4 * ndim > len(view):
        raise MessageDecodeError(f"{cls.__name__}.{name}: shape runs past the frame")
    shape = struct.unpack_from(f">{ndim}I", view, pos)
    pos += 4 * ndim
    if max(shape, default=0) > len(view):  # no array is longer than its frame, even an empty one
        raise MessageDecodeError(f"{cls.__name__}.{name}: shape {shape} is longer than the "
                                 f"{len(view)}-byte frame")
    dtype = _DTYPES[code]
    count = math.prod(shape)  # exact (Python integers): a forged shape cannot overflow it
    nbytes = count * dtype.itemsize
    if pos + nbytes > len(view):
        raise MessageDecodeError(f"{cls.__name__}.{name}: {nbytes} data bytes run past the frame")
    arr = np.frombuffer(view, dtype=dtype, count=count, offset=pos)
    arr = arr.reshape(shape)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr, pos + nbytes
