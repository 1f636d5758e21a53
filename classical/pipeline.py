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
from classical.custody import KeyCustody
from classical.messages import Announcement, EndOfRun
from classical.peer import FramePeer
from classical.rounds import (
    LocalView,
    PeerAborted,
    ProtocolError,
    RecordingObserver,
    RoundConfig,
    RoundOutcome,
    run_alice_round,
    run_bob_round,
)
from classical.secure import LinkKeys, SecureLink, wegman_carter_link

Wire = Callable[[str, bytes], bytes | list[bytes] | None]
"""(direction "alice->bob" or "bob->alice", frame) → the frame to deliver, several frames to
deliver in that order (an injected one beside it), or None to drop it."""


class QueuePeer(FramePeer):
    """A ``Peer`` over two queues of frames (one per direction); ``wire`` sees every frame sent."""

    def __init__(self, link: SecureLink, outbox: queue.Queue[bytes], inbox: queue.Queue[bytes],
                 timeout_s: float = 60.0, wire: Wire | None = None,
                 direction: str = "") -> None:
        super().__init__(direction.split("->")[-1] if "->" in direction else "peer", link)
        self.outbox, self.inbox = outbox, inbox
        self.timeout_s, self.wire, self.direction = timeout_s, wire, direction

    def _put(self, frame: bytes) -> None:
        out = self.wire(self.direction, frame) if self.wire is not None else frame
        for f in [out] if isinstance(out, bytes) else out or []:
            self.outbox.put(f)

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
        """Both committed the round's key, and it is the same."""
        a, b = self.alice.key, self.bob.key
        return (self.alice.committed and self.bob.committed and a is not None and b is not None
                and np.array_equal(a, b))


RoundInput = tuple[Announcement, LocalView, LocalView]
"""One round's announcement and Alice's and Bob's local views."""


@dataclass(frozen=True)
class RunResult:
    """Several rounds over one pair of links, as a run does them: the key stores at the end
    (key ID → net key bits), every round's outcomes, and the pools' final state."""

    alice: list[RoundOutcome]
    bob: list[RoundOutcome]
    alice_store: dict[str, np.ndarray]
    bob_store: dict[str, np.ndarray]
    keys: tuple[LinkKeys, LinkKeys]

    @property
    def stores_match(self) -> bool:
        return (self.alice_store.keys() == self.bob_store.keys()
                and all(np.array_equal(v, self.bob_store[k]) for k, v in self.alice_store.items()))


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
    peers = (QueuePeer(wegman_carter_link(keys[0], "alice", "bob"), a_to_b, b_to_a, timeout_s,
                       wire, "alice->bob"),
             QueuePeer(wegman_carter_link(keys[1], "bob", "alice"), b_to_a, a_to_b, timeout_s, wire,
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

    _both(errors, threading.Thread(target=side, args=("alice", run_alice_round, alice, peers[0],
                                                      seeds[0]), name="alice"),
          threading.Thread(target=side, args=("bob", run_bob_round, bob, peers[1], seeds[1]),
                           name="bob"))
    return PipelineResult(outcomes["alice"], outcomes["bob"])


def _both(errors: list[BaseException], *threads: threading.Thread) -> None:
    """Run Alice's and Bob's threads to the end; raise the first error either met."""
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def run_key_rounds(rounds: list[RoundInput], cfg: RoundConfig, seed: int,
                   keys: tuple[LinkKeys, LinkKeys] | None = None, wire: Wire | None = None,
                   qber_prior: float = 0.02, timeout_s: float = 60.0) -> RunResult:
    """Run ``rounds`` in order with Alice and Bob in two threads over one pair of links, with
    the two-phase key commit and the end-of-run settlement (``classical.custody``), and return
    both key stores. The same protocol as the nodes, without sockets and without pipelining."""
    seeds = np.random.SeedSequence(seed).spawn(3)
    if keys is None:
        keys = shared_link_keys(1 << 16, np.random.default_rng(seeds[2]))
    a_to_b: queue.Queue[bytes] = queue.Queue()
    b_to_a: queue.Queue[bytes] = queue.Queue()
    peers = {"alice": QueuePeer(wegman_carter_link(keys[0], "alice", "bob"), a_to_b, b_to_a,
                                timeout_s, wire, "alice->bob"),
             "bob": QueuePeer(wegman_carter_link(keys[1], "bob", "alice"), b_to_a, a_to_b,
                              timeout_s, wire, "bob->alice")}
    for p in peers.values():
        p.link.opener.allow_gaps = True  # as the nodes: a lost frame leaves a gap, not a wedge
    stores: dict[str, dict[str, np.ndarray]] = {"alice": {}, "bob": {}}
    outcomes: dict[str, list[RoundOutcome]] = {"alice": [], "bob": []}
    errors: list[BaseException] = []

    def side(role: str, ss: np.random.SeedSequence) -> None:
        peer = peers[role]
        custody = KeyCustody(role, peer.link,  # type: ignore[arg-type]
                             lambda key_id, _r, bits: stores[role].__setitem__(key_id, bits))
        run = run_alice_round if role == "alice" else run_bob_round
        try:
            for r, (ann, view_a, view_b) in enumerate(rounds):
                peer.round_id = ann.round_id
                rng = np.random.default_rng([ss.entropy, r])  # type: ignore[list-item]
                outcomes[role].append(run(ann, view_a if role == "alice" else view_b, cfg, peer,
                                          rng, RecordingObserver(), qber_prior, custody))
            if role == "alice":
                peer.send(EndOfRun(len(rounds), "all rounds done", custody.last_committed))
            else:
                try:
                    custody.resolve(peer.receive(EndOfRun).committed)
                except (ProtocolError, PeerAborted) as e:  # no word from Alice: not delivered
                    if custody.pending is not None:
                        custody.discard(custody.pending.key_id, f"no EndOfRun from Alice ({e})")
        except BaseException as e:  # surfaced below, in the caller's thread
            errors.append(e)

    _both(errors, *(threading.Thread(target=side, args=(role, ss), name=role)
                    for role, ss in (("alice", seeds[0]), ("bob", seeds[1]))))
    return RunResult(outcomes["alice"], outcomes["bob"], stores["alice"], stores["bob"], keys)
