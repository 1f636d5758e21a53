"""A key round between two in-memory endpoints: Alice and Bob in two threads, real wire format.

Messages travel as authenticated frames (``classical.secure``: codec + Wegman–Carter or HMAC tags
+ sequence numbers) through in-memory queues, so the pipeline exercises exactly the bytes a
network transport would carry. A ``wire`` hook (a function on frames) sits on the queue between
the two users, at the edge, for fault injection in tests; the protocol logic knows nothing of it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from classical.authentication import KeyPool
from classical.messages import Announcement
from classical.peer import FramePeer
from classical.rounds import (
    LocalView,
    ProtocolError,
    RecordingObserver,
    RoundConfig,
    RoundOutcome,
    run_alice_round,
    run_bob_round,
)
from classical.secure import LinkKeys, SecureLink, wegman_carter_link

Wire = Callable[[str, bytes], bytes | None]
"""(direction "alice->bob" or "bob->alice", frame) → the frame to deliver, or None to drop it."""


class QueuePeer(FramePeer):
    """A ``Peer`` over two queues of frames (one per direction); ``wire`` sees every frame sent."""

    def __init__(self, link: SecureLink, outbox: queue.Queue[bytes], inbox: queue.Queue[bytes],
                 timeout_s: float = 60.0, wire: Wire | None = None,
                 direction: str = "") -> None:
        super().__init__(direction.split("->")[-1] if "->" in direction else "peer", link)
        self.outbox, self.inbox = outbox, inbox
        self.timeout_s, self.wire, self.direction = timeout_s, wire, direction

    def _put(self, frame: bytes) -> None:
        if self.wire is not None:
            frame = self.wire(self.direction, frame)
            if frame is None:
                return
        self.outbox.put(frame)

    def _get(self) -> bytes:
        try:
            return self.inbox.get(timeout=self.timeout_s)
        except queue.Empty:
            raise ProtocolError(f"no message from {self.name} within {self.timeout_s} s") from None


def shared_link_keys(secret_bytes: int, rng: np.random.Generator) -> tuple[LinkKeys, LinkKeys]:
    """Alice's and Bob's copies of fresh pre-shared pools, one per direction."""
    ab, ba = rng.bytes(secret_bytes), rng.bytes(secret_bytes)
    return (LinkKeys(outgoing=KeyPool(ab), incoming=KeyPool(ba)),
            LinkKeys(outgoing=KeyPool(ba), incoming=KeyPool(ab)))


@dataclass(frozen=True)
class PipelineResult:
    alice: RoundOutcome
    bob: RoundOutcome

    @property
    def keys_match(self) -> bool:
        a, b = self.alice.key, self.bob.key
        return a is not None and b is not None and np.array_equal(a, b)


def run_key_round(announcement: Announcement, alice: LocalView, bob: LocalView, cfg: RoundConfig,
                  seed: int, keys: tuple[LinkKeys, LinkKeys] | None = None,
                  wire: Wire | None = None, qber_prior: float = 0.02,
                  timeout_s: float = 60.0) -> PipelineResult:
    """Run one round with Alice and Bob in two threads; both outcomes are returned."""
    seeds = np.random.SeedSequence(seed).spawn(3)
    if keys is None:
        keys = shared_link_keys(1 << 16, np.random.default_rng(seeds[2]))
    a_to_b: queue.Queue[bytes] = queue.Queue()
    b_to_a: queue.Queue[bytes] = queue.Queue()
    peers = (QueuePeer(wegman_carter_link(keys[0]), a_to_b, b_to_a, timeout_s, wire,
                       "alice->bob"),
             QueuePeer(wegman_carter_link(keys[1]), b_to_a, a_to_b, timeout_s, wire,
                       "bob->alice"))
    outcomes: dict[str, RoundOutcome] = {}
    errors: list[BaseException] = []

    def side(name: str, fn: Callable[..., RoundOutcome], view: LocalView, peer: QueuePeer,
             ss: np.random.SeedSequence) -> None:
        try:
            outcomes[name] = fn(announcement, view, cfg, peer, np.random.default_rng(ss),
                                RecordingObserver(), qber_prior)
        except BaseException as e:  # surfaced below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=side, args=("alice", run_alice_round, alice, peers[0],
                                                   seeds[0]), name="alice"),
               threading.Thread(target=side, args=("bob", run_bob_round, bob, peers[1],
                                                   seeds[1]), name="bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return PipelineResult(outcomes["alice"], outcomes["bob"])
