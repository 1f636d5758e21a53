"""An independent count of what crosses the classical channel about the key: the bits of every
reconciliation reply and request and of the verification tag, read off the wire."""

from __future__ import annotations

from classical.codec import decode
from classical.messages import Message, ReconcileReply, ReconcileRequest, VerifyRequest
from classical.verification import ELEMENT_BITS

HEADER_BYTES, TAG_BYTES = 13, 16  # frame header; Wegman–Carter tag (docs/wire-formats.md)


def open_frame(frame: bytes) -> Message:
    """The message in an authenticated frame (read, not verified: the tap is on the wire)."""
    return decode(frame[HEADER_BYTES:-TAG_BYTES])[0]


def disclosed(message: Message) -> tuple[str, int] | None:
    """(kind, bits) a message discloses about the key, or None for one that discloses none."""
    if isinstance(message, ReconcileReply):
        return "reply", int(message.bits.size)
    if isinstance(message, ReconcileRequest):
        return "request", int(message.bits.size)
    if isinstance(message, VerifyRequest):
        # the tag is that many field elements, each worth at most ELEMENT_BITS bits
        assert message.tag_bits == ELEMENT_BITS * message.tag.size
        return "tag", ELEMENT_BITS * int(message.tag.size)
    return None
