"""Faults injected at the edge, outside the protocol: a ZeroMQ proxy in front of a mailbox.

``MailboxProxy`` binds where a node's peers connect, forwards every two-part classical message
``[sender, frame]`` to the node's real mailbox, and lets a ``mutate`` function change or drop
frames on the way (a man in the middle on the classical channel). It counts what it touched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import zmq

Mutation = Callable[[str, int, bytes], bytes | None]
"""(sender, index of this sender's frame, frame) → the frame to forward, or None to drop it."""


class MailboxProxy:
    def __init__(self, listen: str, forward_to: str, mutate: Mutation) -> None:
        self._ctx = zmq.Context()
        self._in = self._ctx.socket(zmq.PULL)
        self._in.setsockopt(zmq.LINGER, 0)
        self._in.bind(listen)
        self._out = self._ctx.socket(zmq.PUSH)
        self._out.setsockopt(zmq.LINGER, 1000)
        self._out.connect(forward_to)
        self._mutate = mutate
        self._stop = threading.Event()
        self.seen: dict[str, int] = {}
        self.altered = 0
        self._thread = threading.Thread(target=self._run, name="mailbox-proxy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._in.poll(100):
                continue
            sender_raw, frame = self._in.recv_multipart()
            sender = sender_raw.decode(errors="replace")
            index = self.seen.get(sender, 0)
            self.seen[sender] = index + 1
            out = self._mutate(sender, index, frame)
            if out != frame:
                self.altered += 1
            if out is not None:
                self._out.send_multipart([sender_raw, out])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._in.close()
        self._out.close()
        self._ctx.term()


def flip_byte(sender: str, index: int, offset: int = 20) -> Mutation:
    """Flip one bit of one byte in the ``index``-th frame from ``sender``."""

    def mutate(s: str, i: int, frame: bytes) -> bytes:
        if s != sender or i != index:
            return frame
        j = min(offset, len(frame) - 1)
        return frame[:j] + bytes([frame[j] ^ 0x01]) + frame[j + 1:]

    return mutate
