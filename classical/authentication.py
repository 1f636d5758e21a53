"""Authentication of classical messages: Wegman–Carter tags from a key pool, or HMAC.

Two interchangeable authenticators share one small surface (``mode``, ``tag_bytes``,
``tag(header, payload, seq)``, ``verify(header, payload, seq, tag)``):

* :class:`WegmanCarterAuthenticator` (``mode = "information-theoretic-wegman-carter"``): the
  tag is, per evaluation ``i``, ``(h_{k_i}(message) + s_i) mod p`` with the polynomial hash of
  :mod:`classical.verification` over GF(p), ``p = 2**61 - 1``. The hash keys ``k_i`` are drawn
  once from the :class:`KeyPool` and reused; the pads ``s_i`` are one-time key drawn from the
  pool for every sequence number. The pad is *added mod p*, not XORed: the family is
  ε-almost-Δ-universal for subtraction mod p, which is what the Wegman–Carter argument needs.
  Forgery bound per verification attempt, for messages of at most ``N`` 32-bit blocks:
  ``((N + 1) / p) ** evaluations``; with the default two evaluations (16-byte tag) and 1 MB
  messages, ``(2**18 / 2**61) ** 2 ≈ 2**-86``. Over ``q`` forgery attempts, multiply by ``q``.
  Security is information-theoretic as long as each pad is used for one message only.
* :class:`HmacAuthenticator` (``mode = "computational-hmac"``): HMAC-SHA256 with a long-term
  secret. Consumes no key, but its security rests on SHA-256: computational, not
  information-theoretic. For development and comparison runs.

Key-pool discipline (Wegman–Carter). Use one pool per direction (Alice→Bob, Bob→Alice), each
a copy of the same bytes on both ends. Each end consumes its copy in the same order: first the
hash keys (when the authenticator is built), then the pads in sequence-number order
(``pad(seq)`` is the ``seq``-th pad, drawn on first use; a field element is 8 pool bytes masked
to 61 bits, the all-ones value being rejected and redrawn so it is exactly uniform). Pads are
addressed by sequence number rather than by arrival order, so a replayed or early frame can
still be authenticated and then reported as a :class:`ReplayError`; the verifier keeps the pads
of the last ``replay_window`` sequence numbers and draws at most ``lookahead`` ahead.

Frames (:class:`Sealer` / :class:`Opener`), all integers big-endian::

    version u8 (=1) | seq u64 | payload length u32 | payload | tag (authenticator.tag_bytes)

The tag covers everything before it, preceded by the direction's *context* (e.g.
``b"alice->bob"``, never sent): the sender's and receiver's names are authenticated with the frame,
so a frame cannot be passed off as coming from another node or going the other way.
:meth:`Opener.open` verifies the tag first, reading only the sequence number at its fixed offset
(to select the pad); version, length and payload are looked at only after the tag checks out;
then the sequence number must be exactly the next expected one (or, with ``allow_gaps``, any
later one).

Key consumption is accounted from *authenticated progress*, never from what a verifier drew: a
forged frame claiming a sequence number up to ``lookahead`` ahead makes the verifier draw pads
early, but :meth:`WegmanCarterAuthenticator.key_bytes_through` reports the pool position after the
pads of the frames actually sealed or accepted, which is the same on both ends. A verifier whose
pool cannot supply a claimed pad rejects the frame (:class:`AuthenticationError`), it does not
fail. :class:`KeyPool` still counts raw bytes taken (totals and per round).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

from classical.verification import FIELD_PRIME, polynomial_hash, polynomial_hash_blocks

__all__ = [
    "FRAME_HEADER_BYTES",
    "FRAME_VERSION",
    "AuthenticationError",
    "FrameFormatError",
    "HmacAuthenticator",
    "KeyPool",
    "KeyPoolExhausted",
    "KeyPoolUsage",
    "MessageAuthenticator",
    "OpenedFrame",
    "Opener",
    "ReplayError",
    "Sealer",
    "WegmanCarterAuthenticator",
]

FRAME_VERSION = 1
_FRAME_HEADER = struct.Struct(">BQI")
FRAME_HEADER_BYTES = _FRAME_HEADER.size  # 13
_SEQ_OFFSET = 1
_MAX_SEQ = (1 << 64) - 1
_ELEMENT_BYTES = 8
_ELEMENT_MASK = (1 << 61) - 1


class KeyPoolExhausted(RuntimeError):  # noqa: N818 (name fixed by the node API)
    """The pool holds fewer bytes than requested; nothing was consumed."""


class AuthenticationError(Exception):
    """A tag did not verify (or could not be checked): the message must be discarded."""


class ReplayError(Exception):
    """An authentic frame arrived out of order: a replay (old seq) or a reorder (future seq)."""


class FrameFormatError(Exception):
    """An authentic frame is malformed (unknown version, inconsistent length field)."""


# ---------------------------------------------------------------------------------------------
# Key pool


@dataclass(frozen=True)
class KeyPoolUsage:
    """Bytes taken from and added to a pool during one round."""

    consumed_bytes: int
    replenished_bytes: int


class KeyPool:
    """Pre-shared secret bytes, consumed as one-time key and replenished from distilled key.

    Both ends must hold identical pools and consume them in the same order. Counters:
    ``consumed_bytes`` / ``replenished_bytes`` since creation, ``round_consumed_bytes`` /
    ``round_replenished_bytes`` since the last :meth:`close_round`.
    """

    def __init__(self, initial: bytes = b"") -> None:
        self._buffer = bytearray(initial)
        self._start = 0
        self.consumed_bytes = 0
        self.replenished_bytes = 0
        self.round_consumed_bytes = 0
        self.round_replenished_bytes = 0

    @property
    def available_bytes(self) -> int:
        return len(self._buffer) - self._start

    def take(self, n_bytes: int) -> bytes:
        """Remove and return the next ``n_bytes``; raise :class:`KeyPoolExhausted` if short."""
        if isinstance(n_bytes, bool) or not isinstance(n_bytes, int) or n_bytes < 0:
            raise ValueError(f"n_bytes must be a non-negative integer, got {n_bytes!r}")
        if n_bytes > self.available_bytes:
            raise KeyPoolExhausted(
                f"key pool exhausted: requested {n_bytes} bytes, {self.available_bytes} available"
            )
        end = self._start + n_bytes
        chunk = bytes(self._buffer[self._start : end])
        self._buffer[self._start : end] = bytes(n_bytes)  # best-effort erasure of used key
        self._start = end
        if self._start > 4096 and self._start * 2 > len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0
        self.consumed_bytes += n_bytes
        self.round_consumed_bytes += n_bytes
        return chunk

    def replenish(self, key: bytes) -> None:
        """Append distilled secret key bytes (both ends must append the same bytes)."""
        self._buffer.extend(key)
        self.replenished_bytes += len(key)
        self.round_replenished_bytes += len(key)

    def close_round(self) -> KeyPoolUsage:
        """Return this round's usage and reset the per-round counters."""
        usage = KeyPoolUsage(self.round_consumed_bytes, self.round_replenished_bytes)
        self.round_consumed_bytes = 0
        self.round_replenished_bytes = 0
        return usage


def _draw_field_element(pool: KeyPool) -> int:
    """Uniform element of [0, p) from pool bytes: 61 low bits of 8 bytes, rejecting p itself."""
    while True:
        value = int.from_bytes(pool.take(_ELEMENT_BYTES), "big") & _ELEMENT_MASK
        if value < FIELD_PRIME:
            return value


# ---------------------------------------------------------------------------------------------
# Authenticators


class MessageAuthenticator(Protocol):
    """What :class:`Sealer` and :class:`Opener` need from an authenticator."""

    mode: str
    tag_bytes: int

    def tag(self, header: bytes, payload: bytes, seq: int) -> bytes: ...

    def verify(self, header: bytes, payload: bytes, seq: int, tag: bytes) -> None: ...


def _authenticated_string(header: bytes, payload: bytes, seq: int) -> tuple[bytes, ...]:
    """seq u64 | header length u32 | header | payload: an unambiguous encoding of the triple."""
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError(f"seq must be in [0, 2**64), got {seq}")
    return (struct.pack(">QI", seq, len(header)), header, payload)


class WegmanCarterAuthenticator:
    """Information-theoretic Wegman–Carter tags: polynomial hash + one-time pad per message.

    ``pool``: this direction's key pool. ``evaluations``: independent (hash key, pad) pairs;
    the tag has ``8 * evaluations`` bytes and forgery probability at most
    ``((N + 1) / (2**61 - 1)) ** evaluations`` for messages of ``N`` 32-bit blocks (see the
    module docstring). Building one draws ``evaluations`` hash keys from the pool; every
    sequence number then costs ``8 * evaluations`` pool bytes, on each end.
    """

    mode: ClassVar[str] = "information-theoretic-wegman-carter"

    def __init__(
        self,
        pool: KeyPool,
        *,
        evaluations: int = 2,
        replay_window: int = 64,
        lookahead: int = 64,
    ) -> None:
        if evaluations < 1 or replay_window < 1 or lookahead < 1:
            raise ValueError("evaluations, replay_window and lookahead must be positive")
        self._pool = pool
        self._evaluations = evaluations
        self._replay_window = replay_window
        self._lookahead = lookahead
        self.key_bytes_consumed = 0
        self._hash_keys = [self._draw() for _ in range(evaluations)]
        self._base_offset = pool.consumed_bytes  # pool stream position after the hash keys
        # seq -> (pad, pool stream position just after it): pads are drawn in seq order, so the
        # position after pad s is what sequence numbers 0..s cost, the same on both ends
        self._pads: dict[int, tuple[tuple[int, ...], int]] = {}
        self._next_pad_seq = 0  # pads for seq < this have been drawn
        self._oldest_kept_seq = 0  # pads for seq < this have been discarded
        self._next_tag_seq = 0  # a pad is never used to tag twice

    @property
    def tag_bytes(self) -> int:
        return _ELEMENT_BYTES * self._evaluations

    @property
    def pad_bytes_per_message(self) -> int:
        """Nominal pool bytes per sequence number (a rejected draw costs 8 more, p ≈ 2^-61)."""
        return _ELEMENT_BYTES * self._evaluations

    def forgery_bound(self, message_bytes: int) -> float:
        """Forgery probability per attempt for authenticated strings of ``message_bytes``."""
        return ((polynomial_hash_blocks(message_bytes) + 1) / FIELD_PRIME) ** self._evaluations

    def _draw(self) -> int:
        before = self._pool.consumed_bytes
        value = _draw_field_element(self._pool)
        self.key_bytes_consumed += self._pool.consumed_bytes - before
        return value

    def _pad(self, seq: int) -> tuple[int, ...] | None:
        """The pad of ``seq``, drawing pads up to it; None if outside the held window.

        Raises :class:`KeyPoolExhausted` when the pool runs dry on the way (pads drawn before
        that stay drawn: the pool is a stream, and both ends draw it in the same order)."""
        if seq < self._oldest_kept_seq or seq >= self._next_pad_seq + self._lookahead:
            return None
        while self._next_pad_seq <= seq:
            pad = tuple(self._draw() for _ in range(self._evaluations))
            self._pads[self._next_pad_seq] = (pad, self._pool.consumed_bytes)
            self._next_pad_seq += 1
        return self._pads[seq][0]

    def key_bytes_through(self, seq: int) -> int:
        """Pool stream position after the hash keys and the pads of sequence numbers 0..``seq``
        (``seq = -1``: after the hash keys only).

        This is what authenticated progress costs, identical on both ends of a direction
        whatever either end drew ahead: the sender passes its last sealed seq, the receiver its
        last accepted one (or the next it will seal: its pad is drawn now). ``seq`` must be -1, a
        sequence number whose pad is still held (the last ``replay_window`` ones) or one within
        ``lookahead``; anything else raises ``ValueError``, a dry pool ``KeyPoolExhausted``.
        """
        if seq == -1:
            return self._base_offset
        if seq >= self._next_pad_seq:  # the sender's next frame: draw its pad now
            self._pad(seq)
        held = self._pads.get(seq)
        if held is None:
            raise ValueError(f"seq {seq} is not held (pads held: {self._oldest_kept_seq}.."
                             f"{self._next_pad_seq - 1})")
        return held[1]

    def skip_to(self, seq: int) -> None:
        """Resume this direction at ``seq`` (a restarted session, ``nodes.session``): the pads of
        every sequence number below it are drawn and spent unused, so that neither end can ever
        use them again, and ``key_bytes_through`` counts them as consumed on both ends alike.
        Raises ``ValueError`` for a ``seq`` below one already tagged, ``KeyPoolExhausted`` when
        the pool cannot cover the pads skipped."""
        if seq < self._next_tag_seq:
            raise ValueError(f"cannot resume at seq {seq}: seq {self._next_tag_seq - 1} was "
                             "tagged already")
        while self._next_pad_seq < seq:
            self._pad(self._next_pad_seq)
            self._slide_window(self._next_pad_seq - 1)
        self._next_tag_seq = seq

    def _slide_window(self, seq: int) -> None:
        oldest = seq + 1 - self._replay_window
        while self._oldest_kept_seq < oldest:
            self._pads.pop(self._oldest_kept_seq, None)
            self._oldest_kept_seq += 1

    def _compute(self, parts: tuple[bytes, ...], pad: tuple[int, ...]) -> bytes:
        message = b"".join(parts)
        hashes = polynomial_hash(message, self._hash_keys, len(message))
        return b"".join(
            ((int(h) + s) % FIELD_PRIME).to_bytes(_ELEMENT_BYTES, "big")
            for h, s in zip(hashes, pad, strict=True)
        )

    def tag(self, header: bytes, payload: bytes, seq: int) -> bytes:
        """Tag ``(header, payload)`` under sequence number ``seq`` with that seq's one-time pad.

        Sequence numbers must increase from call to call (a pad is never reused); raises
        :class:`KeyPoolExhausted` when the pool cannot supply the pad.
        """
        parts = _authenticated_string(header, payload, seq)
        if seq < self._next_tag_seq:
            raise ValueError(f"seq {seq} already tagged or skipped: its one-time pad is spent")
        pad = self._pad(seq)
        if pad is None:
            raise ValueError(f"seq {seq} is more than {self._lookahead} ahead of the pad stream")
        self._next_tag_seq = seq + 1
        self._slide_window(seq)
        return self._compute(parts, pad)

    def verify(self, header: bytes, payload: bytes, seq: int, tag: bytes) -> None:
        """Raise :class:`AuthenticationError` unless ``tag`` tags ``(header, payload, seq)``."""
        parts = _authenticated_string(header, payload, seq)
        try:
            pad = self._pad(seq)
        except KeyPoolExhausted as e:  # a claimed seq beyond the pool: cannot be authentic
            raise AuthenticationError(f"no pad for seq {seq}: {e}") from None
        if pad is None:
            raise AuthenticationError(f"no pad held for seq {seq}: cannot authenticate")
        if not hmac.compare_digest(self._compute(parts, pad), bytes(tag)):
            raise AuthenticationError(f"Wegman-Carter tag mismatch for seq {seq}")
        self._slide_window(seq)


class HmacAuthenticator:
    """COMPUTATIONAL authentication: HMAC-SHA256 with a long-term shared secret.

    Consumes no key from any pool, so it does not reduce the net key rate, but its security
    rests on the hardness of SHA-256 (``mode = "computational-hmac"``); it is not the
    information-theoretic authentication QKD assumes. Tag: 32 bytes.
    """

    mode: ClassVar[str] = "computational-hmac"
    tag_bytes: ClassVar[int] = 32
    key_bytes_consumed: ClassVar[int] = 0

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("HMAC secret must be at least 16 bytes")
        self._secret = bytes(secret)

    def tag(self, header: bytes, payload: bytes, seq: int) -> bytes:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in _authenticated_string(header, payload, seq):
            mac.update(part)
        return mac.digest()

    def verify(self, header: bytes, payload: bytes, seq: int, tag: bytes) -> None:
        if not hmac.compare_digest(self.tag(header, payload, seq), bytes(tag)):
            raise AuthenticationError(f"HMAC tag mismatch for seq {seq}")


# ---------------------------------------------------------------------------------------------
# Frames with sequence numbers


class OpenedFrame(NamedTuple):
    """An authenticated, in-order frame: its sequence number and (decoded) payload."""

    seq: int
    payload: Any


class Sealer:
    """Sending end of one direction: numbers frames 0, 1, 2, ... and tags them."""

    def __init__(self, authenticator: MessageAuthenticator, *, first_seq: int = 0,
                 context: bytes = b"") -> None:
        self._authenticator = authenticator
        self.next_seq = first_seq
        self.context = bytes(context)

    def seal(self, payload: bytes) -> bytes:
        """Frame ``version | seq | length | payload | tag`` for the next sequence number."""
        if len(payload) > 0xFFFFFFFF:
            raise ValueError("payload longer than 2**32 - 1 bytes")
        seq = self.next_seq
        header = _FRAME_HEADER.pack(FRAME_VERSION, seq, len(payload))
        tag = self._authenticator.tag(self.context + header, payload, seq)
        self.next_seq = seq + 1
        return b"".join((header, payload, tag))


class Opener:
    """Receiving end of one direction: tag first, then format, then sequence order.

    By default the sequence must be exactly the next one. With ``allow_gaps`` a later sequence
    number is accepted and the frames skipped are counted in ``skipped`` (a frame dropped or
    rejected on the way must not wedge the direction for good); replays and reorders (a number
    at or below the last accepted one) are still rejected.
    """

    def __init__(self, authenticator: MessageAuthenticator, *, first_seq: int = 0,
                 allow_gaps: bool = False, context: bytes = b"") -> None:
        self._authenticator = authenticator
        self.context = bytes(context)
        self.expected_seq = first_seq
        self.allow_gaps = allow_gaps
        self.skipped = 0

    def open(self, frame: bytes, decode: Callable[[bytes], Any] | None = None) -> OpenedFrame:
        """Authenticate ``frame`` and return ``(seq, payload)``, payload passed through ``decode``.

        Raises :class:`AuthenticationError` (bad or uncheckable tag; nothing else is inspected
        first), :class:`FrameFormatError` (authentic but malformed) or :class:`ReplayError`
        (authentic but not the next sequence number). ``decode`` runs only on authentic,
        in-order payloads.
        """
        tag_bytes = self._authenticator.tag_bytes
        if len(frame) < FRAME_HEADER_BYTES + tag_bytes:
            raise AuthenticationError("frame too short to carry a header and a tag")
        view = memoryview(frame)
        header = bytes(view[:FRAME_HEADER_BYTES])
        payload = view[FRAME_HEADER_BYTES:-tag_bytes]
        tag = bytes(view[-tag_bytes:])
        # The seq sits at a fixed offset; it only selects the pad here, it is trusted after.
        claimed_seq = int.from_bytes(header[_SEQ_OFFSET : _SEQ_OFFSET + 8], "big")
        self._authenticator.verify(self.context + header, payload, claimed_seq, tag)

        version, seq, length = _FRAME_HEADER.unpack(header)
        if version != FRAME_VERSION:
            raise FrameFormatError(f"unsupported frame version {version}")
        if length != len(payload):
            raise FrameFormatError(f"length field {length} != payload size {len(payload)}")
        if seq < self.expected_seq or (seq > self.expected_seq and not self.allow_gaps):
            kind = "replay" if seq < self.expected_seq else "reorder"
            raise ReplayError(f"{kind}: got seq {seq}, expected {self.expected_seq}")
        self.skipped += seq - self.expected_seq
        self.expected_seq = seq + 1
        body = bytes(payload)
        return OpenedFrame(seq, body if decode is None else decode(body))
