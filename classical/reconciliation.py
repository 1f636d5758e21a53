"""Information reconciliation behind one interface: the shape of the dialogue and what it discloses.

A reconciler makes Bob's key equal to Alice's (Alice's key is the reference). Every method speaks
the same three messages (``classical.messages``), in a dialogue Bob drives:

    Bob → Alice    ReconcileStart      the method's name, the key length, its public plan
    Bob → Alice    ReconcileRequest    one batch of questions (and any bits Bob discloses)
    Alice → Bob    ReconcileReply      Alice's answers: bits about her key

Cascade asks for block parities over tens of round trips; a one-way code (LDPC, polar) is one
request answered by the syndrome. A method is a :class:`Reconciler`: Bob's side plans and runs
the dialogue over a :class:`ReconcileChannel` (one ``ask`` = one round trip), Alice's side is a
:class:`AliceSession` that answers one request at a time. Methods are found by name in
``classical.reconcilers``.

What is counted, and by whom: every bit in a ``bits`` field (Alice's replies and Bob's requests)
is public information about the keys, and the round (``classical.rounds``), not the method,
records it in the :class:`~classical.leakage.LeakageLedger` as it crosses the channel, on both
sides, by one rule (:func:`~classical.leakage.round_trip_leakage`); a method never touches the
ledger itself. ``rows`` (positions, pass indices) and plan ``parameters`` are not charged, which
is sound (Tupkary & Lütkenhaus; the argument is in ``classical.leakage``) only because every
method obeys one rule: *Bob's questions depend on the keys only through their difference*
W = X ⊕ Y. Cascade's bisection questions do depend on Bob's key, but only through where his
parities differ from Alice's; flipping the same positions of both keys leaves every question as
it was (tests/classical/test_leakage.py checks this for every registered method). A method whose
questions use Bob's key in any other way must put those key-dependent bits into ``bits``.

Lengths are checked before anything is decoded: the codec bounds every array, the round checks the
generic shapes and dtypes below (and that a reply has the ``reply_bits`` Bob expects), and the
method checks its own layout of ``rows`` and ``parameters`` before it builds anything from them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AliceSession",
    "BobOutcome",
    "ReconcileChannel",
    "ReconcilePlan",
    "Reconciler",
    "Request",
    "check_reply",
    "check_request",
]

#: Largest public seed a plan may carry (128 bits).
MAX_SEED = 2**128


@dataclass(frozen=True)
class ReconcilePlan:
    """The public parameters Bob announces before the first request (``ReconcileStart``).

    Attributes:
        method: the reconciler's registry name (``classical.reconcilers.RECONCILERS``).
        key_bits: length of the keys being reconciled, ``>= 1``.
        qber_estimate: the QBER Bob planned with, in ``[0, 0.5)``.
        seed: public randomness of the plan (Cascade: its shuffles), ``0 <= seed < 2**128``.
        parameters: the method's integer parameters, in its own documented layout.
    """

    method: str
    key_bits: int
    qber_estimate: float
    seed: int
    parameters: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.key_bits < 1:
            raise ValueError(f"key_bits must be >= 1, got {self.key_bits}")
        if not 0.0 <= self.qber_estimate < 0.5:
            raise ValueError(f"qber_estimate must be in [0, 0.5), got {self.qber_estimate}")
        if not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**128), got {self.seed}")


_NO_BITS = np.empty(0, np.uint8)
_NO_ROWS = np.empty((0, 0), np.int32)


@dataclass(frozen=True)
class Request:
    """One batch of Bob's questions (one round trip).

    Attributes:
        rows: int32, 2-D ``(fields, m)``: the questions, in the method's layout (Cascade: pass
            index, start, end of each queried range). They may depend on the keys only through
            their difference, and are then not charged (module docstring).
        bits: uint8 0/1, 1-D: bits about Bob's key he discloses with the questions (empty for
            Cascade); counted in the ledger.
        reply_bits: how many bits Alice's reply must hold (checked before the method sees it);
            Bob's own bookkeeping, not sent.
    """

    rows: NDArray[np.int32] = field(default_factory=lambda: _NO_ROWS)
    bits: NDArray[np.uint8] = field(default_factory=lambda: _NO_BITS)
    reply_bits: int = 0


class ReconcileChannel(Protocol):
    """Bob's view of Alice during reconciliation: one call is one round trip.

    Returns Alice's reply, a 1-D uint8 array of ``request.reply_bits`` 0/1 values (the
    transport checks that before returning).
    """

    def ask(self, request: Request) -> NDArray[np.uint8]: ...


class AliceSession(Protocol):
    """Alice's side of one reconciliation, built from Bob's plan and her key."""

    def answer(self, request: Request) -> NDArray[np.uint8]:
        """Her reply to one request: 1-D uint8 0/1. ``ValueError`` on a malformed request."""
        ...


@dataclass(frozen=True)
class BobOutcome:
    """What Bob's side ends with.

    Attributes:
        corrected_key: Bob's key after correction (uint8 0/1).
        corrected_bits: bits Bob flipped.
        report: the method's own figures for the round report (Cascade: ``passes``).
    """

    corrected_key: NDArray[np.uint8]
    corrected_bits: int
    report: Mapping[str, Any] = field(default_factory=dict)


class Reconciler(ABC):
    """One reconciliation method with its parameters (a plain, immutable value).

    Both users hold the same reconciler (it is part of the agreed round configuration); Alice
    refuses a plan that names another method. Bob's questions must depend on the keys only
    through their difference (module docstring): that is what makes them free of charge.
    """

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Reconciler:
        """The reconciler a scenario's settings describe; ``ValueError`` naming a bad setting."""

    @abstractmethod
    def plan(self, key_bits: int, qber_estimate: float,
             rng: np.random.Generator) -> ReconcilePlan:
        """Bob's public plan for a key of ``key_bits`` bits."""

    @abstractmethod
    def bob(self, key: NDArray[np.uint8], plan: ReconcilePlan,
            channel: ReconcileChannel) -> BobOutcome:
        """Run Bob's side under ``plan`` (announced already), asking Alice over ``channel``."""

    @abstractmethod
    def alice(self, key: NDArray[np.uint8], plan: ReconcilePlan) -> AliceSession:
        """Alice's side for Bob's ``plan``; ``ValueError`` if the plan does not fit her key."""


def check_request(rows: NDArray[Any], bits: NDArray[Any]) -> None:
    """``ValueError`` unless ``rows`` is 2-D int32 and ``bits`` 1-D uint8 of 0/1."""
    if rows.ndim != 2 or rows.dtype != np.int32:
        raise ValueError(f"request rows must be 2-D int32, got {rows.ndim}-D {rows.dtype}")
    _check_bits(bits, "request bits")


def check_reply(bits: NDArray[Any], expected: int) -> None:
    """``ValueError`` unless ``bits`` is ``expected`` uint8 values, each 0 or 1."""
    _check_bits(bits, "reply")
    if bits.size != expected:
        raise ValueError(f"reply holds {bits.size} bits, the request asked for {expected}")


def _check_bits(bits: NDArray[Any], name: str) -> None:
    if bits.ndim != 1 or bits.dtype != np.uint8:
        raise ValueError(f"{name} must be 1-D uint8, got {bits.ndim}-D {bits.dtype}")
    if bits.size and int(bits.max()) > 1:
        raise ValueError(f"{name} must hold only 0 and 1")
