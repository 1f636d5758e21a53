"""The round protocol's ``Peer`` over any transport of frames, with one frame-opening path.

``FramePeer`` seals outgoing messages (``classical.secure``: codec, tag, sequence number) and opens
incoming frames in one place, for the in-memory peer (``classical.pipeline.QueuePeer``) and the
ZeroMQ peer (``nodes.transport.ZmqPeer``) alike; a transport supplies only ``_put`` and ``_get``.
Opening a frame: authenticate and check order before decoding (``SecureLink.unpack``); count a
rejected frame and abort the round (``ProtocolError``); count and drop an authentic message of an
earlier round (left over after an abort); raise ``PeerAborted`` on the peer's ``RoundAbort`` unless
the caller expects one; anything else of an unexpected kind is a ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from classical.messages import Message, RoundAbort
from classical.rounds import PeerAborted, ProtocolError
from classical.secure import REJECTED_FRAME_ERRORS, SecureLink

Count = Callable[[str], None]
"""Adds one to the named counter (a node's metrics); the default counts nothing."""


def _no_count(name: str) -> None:
    return None


class FramePeer:
    """A ``Peer`` named after the remote side; ``round_id`` is the round in progress."""

    def __init__(self, name: str, link: SecureLink, count: Count | None = None) -> None:
        self.name, self.link = name, link
        self.count = count or _no_count
        self.round_id = -1
        self.last_traceparent: str | None = None

    def _put(self, frame: bytes) -> None:
        raise NotImplementedError

    def _get(self) -> bytes:
        """The next frame from the remote side; ``ProtocolError`` when none comes in time."""
        raise NotImplementedError

    def _traceparent(self) -> str | None:
        return None

    def send(self, message: Message) -> None:
        self._put(self.link.pack(message, self._traceparent()))

    def receive(self, *expected: type) -> Any:
        while True:
            message = self.open(self._get(), expected)
            if message is not None:
                return message

    def open(self, frame: bytes, expected: tuple[type, ...]) -> Message | None:
        """The message in ``frame`` if it is one of ``expected``; None for a stale one."""
        try:
            message, traceparent = self.link.unpack(frame)
        except REJECTED_FRAME_ERRORS as e:
            self.count(f"classical_frames_rejected_{type(e).__name__}")
            raise ProtocolError(f"rejected frame from {self.name} ({type(e).__name__}: "
                                f"{e})") from None
        if message.round_id < self.round_id:
            self.count("classical_frames_stale")
            return None
        self.last_traceparent = traceparent
        if isinstance(message, RoundAbort) and RoundAbort not in expected:
            raise PeerAborted(message.reason)
        if not isinstance(message, expected):
            raise ProtocolError(f"expected {'/'.join(t.__name__ for t in expected)} from "
                                f"{self.name}, got {type(message).__name__}")
        return message
