"""Custody of a final key between privacy amplification and the key store: the two-phase commit.

A round's final key is first *held pending* by each user. Alice's ``Amplify`` states the key and
the authentication key it repays; Bob checks both against his own view, holds the same key pending
and sends ``Confirm``; Alice *commits* on ``Confirm`` (pools replenished from the key's head, the
rest delivered to her key store) and sends ``Committed``; Bob commits on ``Committed``. A pending
key that is not confirmed is *discarded* on both sides, with the reason, and since pools are only
replenished on commit, they stay in step.

``Committed`` may not reach Bob (dropped, delayed, forged). He then keeps the key pending and
settles it the next time Alice says which key she committed last: her next ``Amplify`` or her
``EndOfRun`` carry it (:meth:`KeyCustody.resolve`). Only the loss of the very last message of a
run can leave the two stores different (the two generals' problem has no finite solution); a key
Bob still holds pending when he stops is discarded and reported, never delivered.

A key store may have no room for a round's key (a game day's ``full`` fault on it). Each user asks
its store (``room``) before its word in the commit: Bob before ``Confirm``, Alice before
``Committed``; a user without room discards the key and aborts the round, telling the other, who
discards too. The answer is per round, so a key Bob has confirmed is stored when it is settled,
however late.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from classical.secure import Repayment, SecureLink

Role = Literal["alice", "bob"]


class Ledger(Protocol):
    """Where a node keeps its custody durably (``nodes.keystore.KeyStore``), so that a node
    restarted after a crash resumes it: the key it holds pending, and each key committed with
    the bytes its head paid into the A→B and B→A pools (which a restarted node appends to its
    pools again, in order). ``commit`` is one transaction: key, refills and pending end."""

    def hold(self, key_id: str, round_id: int, bits: np.ndarray, repayment: str) -> None: ...

    def commit(self, key_id: str, round_id: int, bits: np.ndarray,
               refills: tuple[bytes, bytes]) -> None: ...

    def discard(self, key_id: str) -> None: ...
Deliver = Callable[[str, int, np.ndarray], None]
"""(key ID, round, net key bits) → stores the key: called once per committed key with bits."""
Room = Callable[[int], str | None]
"""round → why the key store cannot take that round's key, or None when it can."""


@dataclass(frozen=True)
class PendingKey:
    round_id: int
    key_id: str
    key: np.ndarray  # the final key, before repayment
    repayment: Repayment


@dataclass(frozen=True)
class Settled:
    """What became of a pending key."""

    round_id: int
    key_id: str
    committed: bool
    net_bits: int = 0  # delivered to the key store (after repayment)
    replenished_bits: int = 0  # paid back into the authentication pools
    reason: str | None = None  # why it was discarded


class KeyCustody:
    """One user's pending key (at most one at a time) and the record of what it committed."""

    def __init__(self, role: Role, link: SecureLink | None = None,
                 deliver: Deliver | None = None,
                 on_settled: Callable[[Settled], None] | None = None,
                 room: Room | None = None, ledger: Ledger | None = None) -> None:
        self.role, self.link = role, link
        self._ledger = ledger
        self._deliver = deliver
        self._room = room
        self._on_settled = on_settled
        self.pending: PendingKey | None = None
        self.last_committed = ""
        self.pending_at_stop = ""  # the key ``stop_holding`` left in the ledger

    # --- the repayment a key states and checks -----------------------------------------------

    def stated_repayment(self) -> Repayment:
        """Alice, about to send ``Amplify``: the A→B progress includes that very frame."""
        if self.link is None:
            return Repayment()
        return self.link.repayment("alice", self.link.last_sealed + 1, self.link.last_accepted)

    def expected_repayment(self) -> Repayment:
        """Bob, having just accepted ``Amplify``: what Alice should have stated."""
        if self.link is None:
            return Repayment()
        return self.link.repayment("bob", self.link.last_accepted, self.link.last_sealed)

    def no_room(self, round_id: int) -> str | None:
        """Why this user's key store cannot take round ``round_id``'s key (None: it can)."""
        return None if self._room is None else self._room(round_id)

    # --- the two phases ----------------------------------------------------------------------

    def hold(self, key: PendingKey) -> None:
        if self.pending is not None:
            raise RuntimeError(f"{self.role} already holds pending key {self.pending.key_id}")
        if self._ledger is not None and self.role == "bob":  # before his Confirm is sent
            self._ledger.hold(key.key_id, key.round_id, key.key, repayment_text(key.repayment))
        self.pending = key

    def stop_holding(self) -> bool:
        """Bob stops while he holds a key Alice has not said she committed. With a ledger (a
        link that restarts) the key is only dropped from memory and stays pending in the ledger:
        Alice may have committed it just before she died, and the next session's first word
        from her settles it (``restore``). Without one it must be discarded (returns False).
        Nothing is delivered either way."""
        if self._ledger is None or self.pending is None:
            return False
        self.pending_at_stop, self.pending = self.pending.key_id, None
        return True

    def restore(self, pending: PendingKey | None, last_committed: str) -> None:
        """A restarted node's custody, as its ledger recorded it."""
        self.pending, self.last_committed = pending, last_committed

    def commit(self, key_id: str) -> Settled:
        p = self._take(key_id)
        net, used = (self.link.settle(p.key, p.repayment, self.role) if self.link is not None
                     else (p.key, 0))
        if self._ledger is not None:  # the key, the pools' refills, the pending state: at once
            ab = 8 * p.repayment.split(int(p.key.size))[0] if used else 0
            self._ledger.commit(p.key_id, p.round_id, net,
                                (np.packbits(p.key[:ab]).tobytes(),
                                 np.packbits(p.key[ab:used]).tobytes()))
        elif net.size and self._deliver is not None:
            self._deliver(p.key_id, p.round_id, net)
        self.last_committed = p.key_id
        return self._settled(Settled(p.round_id, p.key_id, True, int(net.size), used))

    def discard(self, key_id: str, reason: str) -> Settled:
        p = self._take(key_id)
        if self._ledger is not None:
            self._ledger.discard(p.key_id)
        return self._settled(Settled(p.round_id, p.key_id, False, reason=reason))

    def resolve(self, alice_last_committed: str) -> Settled | None:
        """Bob: settle a key still pending, given the last key Alice says she committed."""
        if self.pending is None:
            return None
        key_id = self.pending.key_id
        if alice_last_committed == key_id:
            return self.commit(key_id)
        return self.discard(key_id, f"Alice did not commit {key_id} (her last committed key: "
                                    f"{alice_last_committed or 'none'})")

    def _take(self, key_id: str) -> PendingKey:
        if self.pending is None or self.pending.key_id != key_id:
            held = self.pending.key_id if self.pending else "none"
            raise RuntimeError(f"{self.role} holds no pending key {key_id} (holds {held})")
        p, self.pending = self.pending, None
        return p

    def _settled(self, s: Settled) -> Settled:
        if self._on_settled is not None:
            self._on_settled(s)
        return s


def repayment_text(r: Repayment) -> str:
    """A repayment as the ledger keeps it."""
    return json.dumps([r.a_to_b_seq, r.b_to_a_seq, r.a_to_b_bytes, r.b_to_a_bytes])


def repayment_from_text(text: str) -> Repayment:
    a, b, c, d = (int(x) for x in json.loads(text))
    return Repayment(a, b, c, d)
