"""Faults injected at the edge, outside the protocol: a ZeroMQ proxy in front of a mailbox.

``MailboxProxy`` binds where a node's peers connect, forwards every two-part classical message
``[sender, frame]`` to the node's real mailbox, and lets a ``mutate`` function change or drop
frames on the way (a man in the middle on the classical channel). It counts what it touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from orchestration.edge import EdgeProxy, Release

Mutation = Callable[[str, int, bytes], bytes | None]
"""(sender, index of this sender's frame, frame) → the frame to forward, or None to drop it."""


class _MutationPolicy:
    """An ``orchestration.edge.EdgeProxy`` policy that hands each frame to ``mutate`` at once."""

    receiver = "mailbox"

    def __init__(self, mutate: Mutation) -> None:
        self.mutate = mutate
        self.seen: dict[str, int] = {}
        self.altered = 0

    def route(self, sender: str, frame: bytes, now: float) -> list[Release]:
        index = self.seen.get(sender, 0)
        self.seen[sender] = index + 1
        out = self.mutate(sender, index, frame)
        if out != frame:
            self.altered += 1
        return [] if out is None else [Release(now, sender, out)]

    def due(self, now: float) -> list[Release]:
        return []

    def next_deadline(self) -> float:
        return math.inf


class MailboxProxy(EdgeProxy):
    """An ``EdgeProxy`` whose every frame goes through ``mutate``; ``seen`` counts the frames per
    sender, ``altered`` those changed or dropped."""

    def __init__(self, listen: str, forward_to: str, mutate: Mutation) -> None:
        super().__init__(listen, forward_to, _MutationPolicy(mutate))  # type: ignore[arg-type]

    @property
    def seen(self) -> dict[str, int]:
        return self.policy.seen  # type: ignore[attr-defined, no-any-return]

    @property
    def altered(self) -> int:
        return self.policy.altered  # type: ignore[attr-defined, no-any-return]


def flip_byte(sender: str, index: int, offset: int = 20) -> Mutation:
    """Flip one bit of one byte in the ``index``-th frame from ``sender``."""

    def mutate(s: str, i: int, frame: bytes) -> bytes:
        if s != sender or i != index:
            return frame
        j = min(offset, len(frame) - 1)
        return frame[:j] + bytes([frame[j] ^ 0x01]) + frame[j + 1:]

    return mutate
