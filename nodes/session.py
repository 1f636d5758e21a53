"""A node's durable session progress, and how a restarted node resumes from it.

A link restarts (``runtime.restart``, ``orchestration.run``) when one of its node programs dies:
the others are stopped in order, and all four start again at a later round. What a restarted
node must never forget is what it has already used:

* every sequence number it sealed, per peer: a Wegman–Carter pad is one-time key, and sealing
  a sequence number twice would use it twice. ``Progress`` records, in a small file of the
  node's own directory (``session.progress``), the last sequence number sealed and accepted on
  each of its links, written after each frame is sealed and *before* it can be sent (the frame
  leaves only when ``SecureLink.pack`` returns) and after each frame is accepted; and, for a
  user, the last round it emitted pulses for, before it emits them (a round's pulses are never
  sent twice: the same bits and bases would go out again);
* for a user, its key custody: the key store is the ledger (``nodes.keystore``).

The record is written with ``pwrite`` into the page cache: it survives the death of the process
(SIGKILL, a crash), which is what a node restart is about. It is not flushed to the disk
(``fsync``), so a crash of the whole host may lose its last writes; a host crash is outside what
a restart recovers from (docs/architecture.md).

Resuming (``resume_links``): the orchestrator reads every node's progress (sequence numbers and
round numbers only: nothing secret) and tells the restarted nodes the round to resume at and,
per direction, the sequence number to resume from (one past the last either end used). Each
node takes the larger of that and its own record, so a wrong word from the orchestrator can only
make tags fail, never reuse a pad. A user first rebuilds its pools from its pre-shared bytes and
the refills its ledger recorded, in order, so both ends of each direction hold the same pool
stream; then the pads of the sequence numbers skipped are spent on both ends.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from classical.custody import PendingKey, repayment_from_text
from classical.secure import SecureLink
from nodes.keystore import KeyStore

PROGRESS_FILE = "session.progress"
#: The record: the last round emitted, then per peer (in sorted order) the last sequence number
#: sealed and the last accepted (-1: none).
_HEAD = struct.Struct(">q")
_PAIR = struct.Struct(">qq")


@dataclass(frozen=True)
class NodeProgress:
    """What a node's progress file says: the last round it emitted (-1: none or not a user) and,
    per peer, the last sequence number it sealed and accepted."""

    emitted_round: int
    sealed: dict[str, int]
    accepted: dict[str, int]


class Progress:
    """The progress file of one node, rewritten in place on every change."""

    def __init__(self, node_dir: Path, links: Mapping[str, SecureLink]) -> None:
        self.links = dict(sorted(links.items()))
        self.emitted_round = -1
        path = Path(node_dir) / PROGRESS_FILE
        before = read_progress(node_dir)
        if before is not None:
            self.emitted_round = before.emitted_round
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        for link in self.links.values():
            link.on_progress = self.write
        self.write()

    def emitted(self, round_id: int) -> None:
        """Before a round's pulses leave: the round is spent."""
        self.emitted_round = max(self.emitted_round, round_id)
        self.write()

    def write(self) -> None:
        data = _HEAD.pack(self.emitted_round) + b"".join(
            _PAIR.pack(link.last_sealed, link.last_accepted) for link in self.links.values())
        os.pwrite(self._fd, data, 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_progress(node_dir: Path, peers: list[str] | None = None) -> NodeProgress | None:
    """A node's progress file (None when it has none yet). ``peers``: its peers, in any order
    (the names are not in the file; they are the node's links, sorted)."""
    path = Path(node_dir) / PROGRESS_FILE
    if not path.exists():
        return None
    data = path.read_bytes()
    # empty: the node died between creating the file and its first write, before it sealed
    # anything or emitted a round (``Progress`` writes before either)
    return parse_progress(data, peers) if data else None


def parse_progress(data: bytes, peers: list[str] | None = None) -> NodeProgress:
    """The bytes of a progress file (``read_progress``)."""
    if len(data) < _HEAD.size:
        raise ValueError(f"a progress file of {len(data)} bytes holds no round")
    (emitted,) = _HEAD.unpack_from(data, 0)
    names = sorted(peers or [])
    sealed, accepted = {}, {}
    for i, name in enumerate(names):
        offset = _HEAD.size + i * _PAIR.size
        if offset + _PAIR.size > len(data):
            break
        sealed[name], accepted[name] = _PAIR.unpack_from(data, offset)
    return NodeProgress(emitted, sealed, accepted)


def resume_seqs(progress: Mapping[str, NodeProgress | None]) -> dict[str, int]:
    """Per direction ``"a->b"``, the sequence number a resumed session starts at: one past the
    last either end recorded (the sender's seal, the receiver's accept)."""
    out: dict[str, int] = {}
    for me, p in progress.items():
        if p is None:
            continue
        for peer, seq in p.sealed.items():
            key = f"{me}->{peer}"
            out[key] = max(out.get(key, 0), seq + 1)
        for peer, seq in p.accepted.items():
            key = f"{peer}->{me}"
            out[key] = max(out.get(key, 0), seq + 1)
    return out


def resume_round(progress: Mapping[str, NodeProgress | None]) -> int:
    """The round a resumed session starts at: past every round a user emitted."""
    return 1 + max((p.emitted_round for p in progress.values() if p is not None), default=-1)


def resume_links(me: str, links: Mapping[str, SecureLink], seqs: Mapping[str, int],
                 own: NodeProgress | None) -> None:
    """Resume each of ``me``'s links at the orchestrator's sequence numbers, or past its own
    record where that is further (a pad is never used twice, whatever the orchestrator says)."""
    for peer, link in links.items():
        out_seq = seqs.get(f"{me}->{peer}", 0)
        in_seq = seqs.get(f"{peer}->{me}", 0)
        if own is not None:
            out_seq = max(out_seq, own.sealed.get(peer, -1) + 1)
            in_seq = max(in_seq, own.accepted.get(peer, -1) + 1)
        link.resume(out_seq, in_seq)


def replay_refills(link: SecureLink, role: str, commits: list[tuple[str, int, bytes, bytes]]
                   ) -> None:
    """A restarted user's pools with the peer: the pre-shared bytes (as built) followed by what
    each committed key paid into them, in commit order, as both ends appended it."""
    if link.keys is None:  # HMAC: no pool
        return
    a_to_b, b_to_a = ((link.keys.outgoing, link.keys.incoming) if role == "alice"
                      else (link.keys.incoming, link.keys.outgoing))
    for _key_id, _round, ab, ba in commits:
        a_to_b.replenish(ab)
        b_to_a.replenish(ba)


def custody_from_ledger(store: KeyStore) -> tuple[PendingKey | None, str]:
    """Where a user's key custody stood when its node last ran, from its ledger (the key
    store): the key it held pending (Bob's confirmed, unsettled key; Alice's next word settles
    it) and the ID of the last key it committed."""
    commits = store.commits()
    held = store.pending()
    pending = None
    if held is not None:
        key_id, round_id, bits, repayment = held
        pending = PendingKey(round_id, key_id, bits, repayment_from_text(repayment))
    return pending, commits[-1][0] if commits else ""
