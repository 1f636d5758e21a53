"""One authenticated direction of a classical channel: encode → seal, and open → decode.

A ``SecureLink`` pairs the sending half (``Sealer``) of one direction with the receiving half
(``Opener``) of the other. ``unpack`` checks the tag, then the sequence number, and only then
parses the payload (``classical.codec``), so a forged or replayed frame is never parsed. Transports
(in-memory queues in ``classical.pipeline``, ZeroMQ sockets in ``nodes``) move opaque bytes.
"""

from __future__ import annotations

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
class SecureLink:
    sealer: Sealer
    opener: Opener
    rejected: dict[str, int] = field(default_factory=dict)
    keys: LinkKeys | None = None  # the pools behind a Wegman–Carter link (None for HMAC)

    def pack(self, message: Message, traceparent: str | None = None) -> bytes:
        return self.sealer.seal(encode(message, traceparent))

    def unpack(self, frame: bytes) -> tuple[Message, str | None]:
        """Authenticate, check order, then decode; a rejected frame is counted and re-raised."""
        try:
            return self.opener.open(frame, decode=decode).payload
        except REJECTED_FRAME_ERRORS as e:
            name = type(e).__name__
            self.rejected[name] = self.rejected.get(name, 0) + 1
            raise


@dataclass
class LinkKeys:
    """Pre-shared material of one pair of users: one pool per direction (Wegman–Carter)."""

    outgoing: KeyPool
    incoming: KeyPool

    def consumed_bytes(self) -> int:
        return self.outgoing.consumed_bytes + self.incoming.consumed_bytes


def wegman_carter_link(keys: LinkKeys) -> SecureLink:
    return SecureLink(Sealer(WegmanCarterAuthenticator(keys.outgoing)),
                      Opener(WegmanCarterAuthenticator(keys.incoming)), keys=keys)


def repay_key_debt(keys: LinkKeys, key: np.ndarray,
                   role: Literal["alice", "bob"]) -> tuple[np.ndarray, int]:
    """Replenish the Alice–Bob pools from the head of a fresh final key; return (net key, bits).

    Each pool is topped up by what it has consumed beyond what was already replenished, A→B
    first, then B→A, so both users take the same bits for the same pools: at the end of a
    successful round both have processed every frame of both directions (the last ones are
    Bob's VerifyRequest and Alice's Amplify), so their pools' counters agree. What is left is the
    net key: the key rate reported and stored is after authentication's consumption.
    """
    a_to_b, b_to_a = ((keys.outgoing, keys.incoming) if role == "alice"
                      else (keys.incoming, keys.outgoing))
    used = 0
    for pool in (a_to_b, b_to_a):
        debt = pool.consumed_bytes - pool.replenished_bytes
        take = min(max(debt, 0), (key.size - used) // 8)
        if take > 0:
            pool.replenish(np.packbits(key[used:used + 8 * take]).tobytes())
            used += 8 * take
    return key[used:], used


def hmac_link(send_secret: bytes, receive_secret: bytes) -> SecureLink:
    """Computational mode (HMAC-SHA256, one long-term secret per direction so that a frame cannot
    be reflected back to its sender): consumes no key."""
    return SecureLink(Sealer(HmacAuthenticator(send_secret)),
                      Opener(HmacAuthenticator(receive_secret)))
