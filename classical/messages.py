"""The classical protocol's messages: one frozen type per kind.

Every message names its round. Arrays are numpy arrays (the codec carries them as raw buffers);
scalars are ints, floats, bools, strings or bytes. ``KIND`` is the one-byte wire type; the codec
and the routers key on it, and ``MESSAGE_TYPES`` lists every kind exactly once.

Who sends what (one key round, docs/architecture.md §3):

    Alice → Bob            RoundStart           the round's slot range (Bob emits on it)
    Charles → Alice, Bob   Announcement         successful Bell-state slots of the round
    Alice ⇄ Bob            SiftingInfo          own basis and intensity at those slots
    Alice ⇄ Bob            XBasisBits           own X-basis sifted bits (the phase-error test)
    Bob → Alice            ReconcileStart       reconciliation method and its public plan
    Bob → Alice            ReconcileRequest     one batch of questions (Cascade: block parities)
    Alice → Bob            ReconcileReply       Alice's answers (bits) for that batch
    Bob → Alice            VerifyRequest        ε_cor-universal hash key and tag of his key
    Alice → Bob            VerifyResult         whether Alice's key has the same tag
    Alice → Bob            Amplify              privacy-amplification seed, output length, key id
    either                 RoundAbort           the round stops, with the reason
    Alice → Bob, Charles   EndOfRun             no more rounds: stop cleanly
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Message:
    KIND: ClassVar[int] = 0
    round_id: int


@dataclass(frozen=True)
class RoundStart(Message):
    KIND: ClassVar[int] = 11
    start_slot: int
    stop_slot: int


@dataclass(frozen=True)
class EndOfRun(Message):
    KIND: ClassVar[int] = 12
    reason: str


@dataclass(frozen=True)
class Announcement(Message):
    KIND: ClassVar[int] = 1
    start_slot: int
    stop_slot: int
    slots: np.ndarray  # int64, sorted
    bell: np.ndarray  # uint8: 1 = ψ⁺, 2 = ψ⁻ (failures are not announced)


@dataclass(frozen=True)
class SiftingInfo(Message):
    KIND: ClassVar[int] = 2
    basis: np.ndarray  # uint8 per announced slot
    intensity: np.ndarray  # uint8 per announced slot
    sent_counts: np.ndarray  # int64 (frames, combos): pulses sent per class in each frame


@dataclass(frozen=True)
class XBasisBits(Message):
    KIND: ClassVar[int] = 3
    bits: np.ndarray  # uint8, sender's X-basis sifted bits in sifted order


@dataclass(frozen=True)
class ReconcileStart(Message):
    """``classical.reconciliation.ReconcilePlan`` on the wire."""

    KIND: ClassVar[int] = 4
    method: str  # a name in classical.reconcilers.RECONCILERS
    key_bits: int
    qber_estimate: float
    seed: str  # decimal: public seeds may exceed JSON's safe integers
    parameters: np.ndarray  # int64, the method's layout (Cascade: bipartition passes, block sizes)


@dataclass(frozen=True)
class ReconcileRequest(Message):
    """One batch of Bob's questions (``classical.reconciliation.Request``)."""

    KIND: ClassVar[int] = 5
    rows: np.ndarray  # int32 (fields, m), the method's layout (Cascade: pass index, start, end)
    bits: np.ndarray  # uint8 0/1: bits Bob discloses (counted as leakage); empty for Cascade


@dataclass(frozen=True)
class ReconcileReply(Message):
    """Alice's answers to one request: every bit is counted as leakage."""

    KIND: ClassVar[int] = 6
    bits: np.ndarray  # uint8 0/1


@dataclass(frozen=True)
class VerifyRequest(Message):
    KIND: ClassVar[int] = 7
    hash_key: np.ndarray  # uint64 field elements
    tag: np.ndarray  # uint64
    tag_bits: int
    corrected_bits: int  # bits Bob's reconciliation flipped (Cascade reveals it anyway)


@dataclass(frozen=True)
class VerifyResult(Message):
    KIND: ClassVar[int] = 8
    matched: bool


@dataclass(frozen=True)
class Amplify(Message):
    KIND: ClassVar[int] = 9
    seed: bytes
    output_bits: int
    key_id: str


@dataclass(frozen=True)
class RoundAbort(Message):
    KIND: ClassVar[int] = 10
    reason: str


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.KIND: cls for cls in (RoundStart, EndOfRun, Announcement, SiftingInfo, XBasisBits,
                              ReconcileStart, ReconcileRequest, ReconcileReply, VerifyRequest,
                              VerifyResult, Amplify, RoundAbort)
}
