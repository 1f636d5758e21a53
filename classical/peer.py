"""The round protocol's ``Peer`` over any transport of frames, with one frame-opening path.

``FramePeer`` seals outgoing messages (``classical.secure``: codec, tag, sequence number) and opens
incoming frames in one place, for the in-memory peer (``classical.pipeline.QueuePeer``) and the
ZeroMQ peer (``nodes.transport.ZmqPeer``) alike; a transport supplies only ``_put`` and ``_get``.
Opening a frame: authenticate and check order before decoding (``SecureLink.unpack``); count and
drop a rejected frame (forged, replayed, malformed) and keep waiting, so a stranger who can reach a
port cannot end a round by sending garbage, unless more than ``MAX_REJECTED_PER_ROUND`` frames are
rejected in one round (then the channel is broken and the round aborts, ``ProtocolError``); count
and drop an authentic message of an earlier round (left over after an abort); raise
``PeerAborted`` on the peer's ``RoundAbort`` unless the caller expects one. A message of a *later*
round is kept for that round (``receive`` returns it once ``round_id`` has caught up, or to a
caller that expects its kind if that kind starts a round or ends the run, ``ACROSS_ROUNDS``) and
the wait ends with a ``ProtocolError``: the peer has moved on.
Anything else of an unexpected kind is a ``ProtocolError``, unless the caller asks
(``hold_current``) to keep a message of the round in progress for that round's own wait: then it
is held and ``receive`` returns ``HELD`` (a user between rounds learns this way that the peer
has gone on with the round, so a message of the peer's it waited for was lost).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from classical.authentication import KeyPoolExhausted
from classical.messages import Announcement, EndOfRun, Message, RoundAbort, RoundStart
from classical.rounds import PeerAborted, ProtocolError
from classical.secure import REJECTED_FRAME_ERRORS, SecureLink

#: The kinds a caller may take from a later round than the one in progress: those that start a
#: round or end the run (Bob waits for ``RoundStart(r + 1)`` in round r; a user whose
#: announcement was lost is handed the next round's, and ``nodes.users`` puts it back). A later
#: round's message of any other kind is never an answer to this round's wait, even of the kind
#: waited for: the peer has gone on without this round.
ACROSS_ROUNDS = (RoundStart, EndOfRun, Announcement)

#: Rejected frames tolerated per round before the channel counts as broken: far more than a
#: corrupted or replayed frame now and then, few enough that a flood ends the round quickly.
MAX_REJECTED_PER_ROUND = 32

#: What ``receive(..., hold_current=True)`` returns when it kept a message of the round in
#: progress (``FramePeer.held``) instead of one of the kinds asked for.
HELD: Any = type("Held", (), {"__repr__": lambda self: "HELD"})()

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
        self._rejected_round = -1
        self._rejected_in_round = 0
        self._held: Message | None = None  # a later round's message, kept for that round

    def _put(self, frame: bytes) -> None:
        raise NotImplementedError

    def _get(self) -> bytes:
        """The next frame from the remote side; ``ProtocolError`` when none comes in time."""
        raise NotImplementedError

    def _traceparent(self) -> str | None:
        return None

    def send(self, message: Message) -> None:
        try:
            frame = self.link.pack(message, self._traceparent())
        except KeyPoolExhausted as e:  # no pad left for this direction: nothing can be sent
            raise ProtocolError(f"cannot authenticate a message to {self.name}: {e}") from None
        self._put(frame)

    @property
    def held(self) -> Message | None:
        """A later round's message received while this round waited for another (or None)."""
        return self._held

    def hold(self, message: Message) -> None:
        """Keep ``message`` (of a later round than the one in progress) for its round, as if it
        had just arrived: ``receive`` returns it once ``round_id`` has caught up."""
        if self._held is not None:
            raise ProtocolError(f"{self.name}: a message of round {self._held.round_id} is "
                                "already held")
        self._held = message

    def receive(self, *expected: type, hold_current: bool = False) -> Any:
        while True:
            if hold_current and self._held is not None \
                    and self._held.round_id == self.round_id \
                    and not isinstance(self._held, expected):
                return HELD  # still held for the round in progress: the caller is told again
            if self._held is not None and (self._held.round_id <= self.round_id
                                           or isinstance(self._held, expected)):
                held, self._held = self._held, None
                message = self._dispatch(held, expected)
            else:
                frame = self._get()
                if hold_current and self._held is None:
                    message = self._open_holding(frame, expected)
                else:
                    message = self.open(frame, expected)
            if message is not None:
                return message

    def open(self, frame: bytes, expected: tuple[type, ...]) -> Message | None:
        """The message in ``frame`` if it is one of ``expected``; None for a frame dropped (rejected
        or stale)."""
        message = self._unpack(frame)
        return None if message is None else self._dispatch(message, expected)

    def _unpack(self, frame: bytes) -> Message | None:
        """The authentic message of a round not yet over in ``frame``; None (counted) for a frame
        rejected or stale."""
        try:
            message, traceparent = self.link.unpack(frame)
        except REJECTED_FRAME_ERRORS as e:
            self.count(f"classical_frames_rejected_{type(e).__name__}")
            if self._rejected_round != self.round_id:
                self._rejected_round, self._rejected_in_round = self.round_id, 0
            self._rejected_in_round += 1
            if self._rejected_in_round > MAX_REJECTED_PER_ROUND:
                raise ProtocolError(f"channel from {self.name} broken: more than "
                                    f"{MAX_REJECTED_PER_ROUND} frames rejected this round (last: "
                                    f"{type(e).__name__}: {e})") from None
            return None
        if message.round_id < self.round_id:
            self.count("classical_frames_stale")
            return None
        self.last_traceparent = traceparent
        return message

    def _open_holding(self, frame: bytes, expected: tuple[type, ...]) -> Any:
        """``open``, but an authentic message of the round in progress of another kind than
        ``expected`` is held for that round (``HELD``) rather than refused."""
        message = self._unpack(frame)
        if message is None:
            return None
        if message.round_id == self.round_id and not isinstance(message, expected):
            self._held = message
            return HELD
        return self._dispatch(message, expected)

    def _dispatch(self, message: Message, expected: tuple[type, ...]) -> Message | None:
        answers = isinstance(message, expected) and isinstance(message, ACROSS_ROUNDS)
        if 0 <= self.round_id < message.round_id and not answers and self._held is None:
            # the peer has moved on to a later round (e.g. our last message of this round did
            # not reach it, or its answer was lost): keep the message for that round
            self._held = message
            raise ProtocolError(f"{self.name} moved on to round {message.round_id} "
                                f"({type(message).__name__}) while round {self.round_id} "
                                f"waited for {'/'.join(t.__name__ for t in expected)}")
        if message.round_id < self.round_id:  # held from an earlier round: now stale
            self.count("classical_frames_stale")
            return None
        if isinstance(message, RoundAbort) and RoundAbort not in expected:
            raise PeerAborted(message.reason)
        if not isinstance(message, expected):
            raise ProtocolError(f"expected {'/'.join(t.__name__ for t in expected)} from "
                                f"{self.name}, got {type(message).__name__}")
        return message
