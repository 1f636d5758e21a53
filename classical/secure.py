"""One authenticated direction of a classical channel: encode → seal, and open → decode.

A ``SecureLink`` pairs the sending half (``Sealer``) of one direction with the receiving half
(``Opener``) of the other. ``unpack`` checks the tag, then the sequence number, and only then
parses the payload (``classical.codec``), so a forged or replayed frame is never parsed. Transports
(in-memory queues in ``classical.pipeline``, ZeroMQ sockets in ``nodes``) move opaque bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from classical.authentication import (
    AuthenticationError,
    FrameFormatError,
    HmacAuthenticator,
    KeyPool,
    Opener,
    ReplayError,
    Sealer,
    WegmanCarterAuthenticator,
)
from classical.codec import MessageDecodeError, decode, encode
from classical.messages import Message

#: Everything ``SecureLink.unpack`` may raise for a bad frame (count it, drop it, go on).
REJECTED_FRAME_ERRORS = (AuthenticationError, FrameFormatError, ReplayError, MessageDecodeError)


@dataclass
class LinkKeys:
    """Pre-shared material of one pair of users: one pool per direction (Wegman–Carter)."""

    outgoing: KeyPool
    incoming: KeyPool

    def consumed_bytes(self) -> int:
        return self.outgoing.consumed_bytes + self.incoming.consumed_bytes


@dataclass(frozen=True)
class Repayment:
    """The authentication key a final key pays back, as Alice states it in ``Amplify``.

    ``a_to_b_seq``/``b_to_a_seq``: the last sequence number authenticated in each direction
    (-1: none), which fixes the pool position both ends have paid for; ``a_to_b_bytes``/
    ``b_to_a_bytes``: what each pool is owed at that position (consumed minus replenished). Both
    users compute it from their own pools and sequence numbers; Bob refuses a statement that
    differs from his. Taken from the head of the final key, A→B first, each capped by what is
    left of the key (a debt the key cannot cover carries over to the next one).
    """

    a_to_b_seq: int = -1
    b_to_a_seq: int = -1
    a_to_b_bytes: int = 0
    b_to_a_bytes: int = 0

    def split(self, key_bits: int) -> tuple[int, int]:
        """Bytes taken for the A→B and the B→A pool out of a ``key_bits``-bit key."""
        ab = min(self.a_to_b_bytes, key_bits // 8)
        ba = min(self.b_to_a_bytes, (key_bits - 8 * ab) // 8)
        return ab, ba


def _pools(keys: LinkKeys, role: Literal["alice", "bob"]) -> tuple[KeyPool, KeyPool]:
    """(A→B pool, B→A pool) of ``role``'s copy."""
    return (keys.outgoing, keys.incoming) if role == "alice" else (keys.incoming, keys.outgoing)


@dataclass
class SecureLink:
    sealer: Sealer
    opener: Opener
    rejected: dict[str, int] = field(default_factory=dict)
    keys: LinkKeys | None = None  # the pools behind a Wegman–Carter link (None for HMAC)
    #: called after every frame sealed (before it can be sent) and every frame accepted: a
    #: node records its progress there durably (``nodes.session``), so that a restarted node
    #: never seals a sequence number, and so never uses a one-time pad, twice
    on_progress: Callable[[], None] | None = None

    def pack(self, message: Message, traceparent: str | None = None) -> bytes:
        frame = self.sealer.seal(encode(message, traceparent))
        if self.on_progress is not None:
            self.on_progress()
        return frame

    def unpack(self, frame: bytes) -> tuple[Message, str | None]:
        """Authenticate, check order, then decode; a rejected frame is counted and re-raised."""
        try:
            out = self.opener.open(frame, decode=decode).payload
        except REJECTED_FRAME_ERRORS as e:
            name = type(e).__name__
            self.rejected[name] = self.rejected.get(name, 0) + 1
            raise
        if self.on_progress is not None:
            self.on_progress()
        return out

    def resume(self, out_seq: int, in_seq: int) -> None:
        """Start a restarted session: seal from ``out_seq`` and accept from ``in_seq`` on, the
        pads of the sequence numbers skipped spent on both ends (Wegman–Carter: see
        ``WegmanCarterAuthenticator.skip_to``). Frames of the earlier session are then replays."""
        for auth, seq in ((self.sealer._authenticator, out_seq),  # noqa: SLF001 - owned here
                          (self.opener._authenticator, in_seq)):  # noqa: SLF001
            if isinstance(auth, WegmanCarterAuthenticator):
                auth.skip_to(seq)
        if out_seq < self.sealer.next_seq:
            raise ValueError(f"cannot seal from seq {out_seq}: seq {self.sealer.next_seq - 1} "
                             "was sealed already")
        self.sealer.next_seq = out_seq
        self.opener.expected_seq = max(self.opener.expected_seq, in_seq)

    @property
    def last_sealed(self) -> int:
        """Sequence number of the last frame sent (-1: none)."""
        return self.sealer.next_seq - 1

    @property
    def last_accepted(self) -> int:
        """Sequence number of the last authentic frame accepted (-1: none)."""
        return self.opener.expected_seq - 1

    def repayment(self, role: Literal["alice", "bob"], a_to_b_seq: int,
                  b_to_a_seq: int) -> Repayment:
        """What ``role``'s pools are owed once the frames through the given sequence numbers are
        paid for (all zero for HMAC, which consumes no key)."""
        if self.keys is None:
            return Repayment(a_to_b_seq, b_to_a_seq)
        out_auth = self.sealer._authenticator  # noqa: SLF001 - the link owns both halves
        in_auth = self.opener._authenticator  # noqa: SLF001
        a_to_b_auth, b_to_a_auth = (out_auth, in_auth) if role == "alice" else (in_auth, out_auth)
        a_to_b, b_to_a = _pools(self.keys, role)
        return Repayment(
            a_to_b_seq, b_to_a_seq,
            max(0, a_to_b_auth.key_bytes_through(a_to_b_seq) - a_to_b.replenished_bytes),
            max(0, b_to_a_auth.key_bytes_through(b_to_a_seq) - b_to_a.replenished_bytes))

    def settle(self, key: np.ndarray, repayment: Repayment,
               role: Literal["alice", "bob"]) -> tuple[np.ndarray, int]:
        """Replenish the pools from the head of a committed final key; (net key, bits used)."""
        ab, ba = repayment.split(int(key.size))
        if self.keys is None or ab + ba == 0:
            return key, 0
        a_to_b, b_to_a = _pools(self.keys, role)
        a_to_b.replenish(np.packbits(key[:8 * ab]).tobytes())
        b_to_a.replenish(np.packbits(key[8 * ab:8 * (ab + ba)]).tobytes())
        used = 8 * (ab + ba)
        return key[used:], used


def wegman_carter_link(keys: LinkKeys, me: str = "", peer: str = "") -> SecureLink:
    """A Wegman–Carter link from ``me`` to ``peer``: the names are authenticated with every
    frame (the sealer's context ``me->peer``, the opener's ``peer->me``)."""
    return SecureLink(Sealer(WegmanCarterAuthenticator(keys.outgoing),
                             context=f"{me}->{peer}".encode()),
                      Opener(WegmanCarterAuthenticator(keys.incoming),
                             context=f"{peer}->{me}".encode()), keys=keys)


def hmac_link(send_secret: bytes, receive_secret: bytes, me: str = "",
              peer: str = "") -> SecureLink:
    """Computational mode (HMAC-SHA256, one long-term secret per direction so that a frame cannot
    be reflected back to its sender; the names authenticated as for Wegman–Carter): consumes no
    key."""
    return SecureLink(Sealer(HmacAuthenticator(send_secret), context=f"{me}->{peer}".encode()),
                      Opener(HmacAuthenticator(receive_secret),
                             context=f"{peer}->{me}".encode()))
