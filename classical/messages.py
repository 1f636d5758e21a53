"""The classical protocol's messages: one frozen type per kind.

Every message names its round. Arrays are numpy arrays (the codec carries them as raw buffers);
scalars are ints, floats, bools, strings or bytes. ``KIND`` is the one-byte wire type; the codec
and the routers key on it, and ``MESSAGE_TYPES`` lists every kind exactly once.

Who sends what (one key round, docs/architecture.md §3):

    Alice → Bob            RoundStart           the round's slot range (Bob emits on it)
    Charles → Alice, Bob   Announcement         successful Bell-state slots of the round
    Alice ⇄ Bob            SiftingInfo          own basis and intensity at those slots
    Alice ⇄ Bob            XBasisBits           own X-basis sifted bits (the phase-error test)
    Alice ⇄ Bob            UnkeyedBits          own key-class bits of a round the pre-check
                                                stopped (never key: QBER_Z for the calibration)
    Bob → Alice            ReconcileStart       reconciliation method and its public plan
    Bob → Alice            ReconcileRequest     one batch of questions (Cascade: block parities)
    Alice → Bob            ReconcileReply       Alice's answers (bits) for that batch
    Bob → Alice            VerifyRequest        ε_cor-universal hash key and tag of his key
    Alice → Bob            VerifyResult         whether Alice's key has the same tag
    Alice → Bob            Amplify              privacy-amplification seed, output length, key id,
                                                the authentication key it repays (pending key)
    Bob → Alice            Confirm              Bob holds the same pending key (Alice commits)
    Alice → Bob            Committed            Alice has committed it (Bob commits)
    either                 RoundAbort           the round stops, with the reason
    Alice → Bob, Charles   EndOfRun             no more rounds: stop cleanly

A key is delivered in two phases (docs/architecture.md §3): both users hold it *pending* until Bob
confirms; Alice commits on ``Confirm``, Bob on ``Committed``. Alice's ``Amplify`` and ``EndOfRun``
also carry the ID of the last key she committed, which settles a key Bob still holds pending
because ``Committed`` did not reach him.
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
    committed: str  # ID of the last key Alice committed ("" if none)


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
    announcement_digest: bytes  # SHA-256 of the announcement sifted (both must sift the same)


@dataclass(frozen=True)
class XBasisBits(Message):
    KIND: ClassVar[int] = 3
    bits: np.ndarray  # uint8, sender's X-basis sifted bits in sifted order


@dataclass(frozen=True)
class UnkeyedBits(Message):
    """The sender's key-class sifted bits of a round whose pre-check gave no key: they will
    never be key, so disclosing them costs nothing, and they measure QBER_Z for the users'
    calibration loops (``RoundConfig.disclose_unkeyed``)."""

    KIND: ClassVar[int] = 15
    bits: np.ndarray  # uint8, sender's key-class sifted bits in sifted order


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
    seed: np.ndarray  # uint8: the whole Toeplitz seed, input_bits + output_bits - 1 bits
    output_bits: int
    key_id: str
    a_to_b_seq: int  # classical.secure.Repayment: authenticated progress (last seq) per
    b_to_a_seq: int  # direction, and what each pool is owed there, taken from the key's head
    a_to_b_bytes: int
    b_to_a_bytes: int
    committed: str  # ID of the last key Alice committed before this round ("" if none)


@dataclass(frozen=True)
class Confirm(Message):
    """Bob holds the pending key ``key_id`` (he checked the length and the repayment)."""

    KIND: ClassVar[int] = 13
    key_id: str


@dataclass(frozen=True)
class Committed(Message):
    """Alice has committed ``key_id`` (stored, pools replenished)."""

    KIND: ClassVar[int] = 14
    key_id: str


@dataclass(frozen=True)
class RoundAbort(Message):
    KIND: ClassVar[int] = 10
    reason: str


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.KIND: cls for cls in (RoundStart, EndOfRun, Announcement, SiftingInfo, XBasisBits,
                              UnkeyedBits, ReconcileStart, ReconcileRequest, ReconcileReply,
                              VerifyRequest, VerifyResult, Amplify, RoundAbort, Confirm,
                              Committed)
}
