"""The leakage ledger: what the reconciliation dialogue has told the world about the key.

Everything Alice and Bob say during reconciliation and verification is public, and privacy
amplification must subtract what it reveals about Alice's key X (the reference). It is counted in
one place, at the moment it is exchanged: :class:`LeakageLedger`, with one accounting rule for
every round trip, :func:`round_trip_leakage`, a pure function of the public transcript that Alice
and Bob apply to the same request and reply, so both sides reach the same λ_EC without a message.

What a two-way dialogue leaks (D. Tupkary, N. Lütkenhaus, "Using Cascade in quantum key
distribution", Phys. Rev. Applied 20, 064040 (2023), arXiv:2307.00576). Let C_A be Alice's
messages, C_B Bob's, E Eve's system. The chain rule H_min(X|E C_A) ≥ H_min(X|E) − |C_A|
charges Alice's bits only, which is not enough: Bob's messages are computed from his key Y,
which is correlated with X. Charging every bit both sides send, H_min(X|E C_A C_B) ≥
H_min(X|E) − |C_A| − |C_B|, is always valid but pessimistic: for Cascade it roughly doubles
λ_EC, because each of Bob's queries reveals whether his parity of a block agreed with Alice's.
Their alternative: in Cascade, Bob's messages are a function of Alice's messages and of the
error string W = X ⊕ Y, since his own parities enter only through their differences from hers.
Then H_min(X|E C_A C_B) ≥ H_min(X|E C_A W) ≥ H_min(X|E W) − |C_A|: charge Alice's bits, and
bound the entropy of X for an Eve who is also told where the errors are.

Why that costs nothing here (derived for this estimation, not quoted from the paper). The key
length (``classical.estimation``) bounds the entropy by the phase-error rate of single-photon
pairs, s11 [1 − h(e11)], and grants Eve Alice's bit on every other pair. In the virtual qubit
protocol, telling Eve W is a measurement of Z_A Z_B on each key pair, which commutes with the
phase-error observable X_A X_B: the distribution of phase errors, hence the uncertainty-relation
bound and its sampling estimate from the X basis, is the same with or without W. (Equivalently,
the phase-error bound is attained by Bell-diagonal states, whose purification already holds W.
Tupkary and Lütkenhaus report that their rectified rate often equals the old one and is lower in
other scenarios; their examples set statistics coarse-grained to error rates against finer ones.)
So with this estimation

    λ_EC = Alice's reply bits + the bits Bob discloses in ``Request.bits`` + the verification tag,

and Bob's choice of questions (``Request.rows``) is not charged, on one condition, which every
:class:`~classical.reconciliation.Reconciler` must meet and a test checks for each: Bob's
questions depend on the keys only through W (flip the same positions of both keys, and Bob asks
exactly the same questions). Bits Bob discloses outright are charged one for one: given W, each
bit of Y is a bit of X. Bob's other public outputs (the number of corrected bits, the
verification verdict) are functions of W too. Another entropy bound (one that uses more than
the phase-error rate) would have to be evaluated with W announced, or charge both directions.

Two counters, two units:

* ``disclosed_bits`` -- bits of public information about the key, by the rule above (parities
  Bob *infers* from earlier answers are free and not counted again);
* ``round_trips`` -- request/response exchanges on the classical channel (latency, not secrecy).

The ledger is a small mutable accumulator owned by one key round. It never decides anything; the
stage that talks to the channel records what went over it, and privacy amplification reads
``disclosed_bits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from classical.reconciliation import Request

__all__ = ["LeakageLedger", "round_trip_leakage"]


def round_trip_leakage(request: Request, reply: NDArray[np.uint8]) -> int:
    """Bits of Alice's key one reconciliation round trip discloses: ``request.bits`` and the reply.

    ``request.rows`` costs nothing: a reconciler's questions depend on the keys only through
    their difference (the module docstring gives the argument and its condition).
    """
    return int(request.bits.size) + int(reply.size)


@dataclass
class LeakageLedger:
    """Running totals of disclosed key information and classical round trips.

    Invariants: both counters are non-negative integers and only ever grow.
    """

    disclosed_bits: int = 0
    round_trips: int = 0

    def record_exchange(self, request: Request, reply: NDArray[np.uint8]) -> None:
        """Record one reconciliation round trip, charged by :func:`round_trip_leakage`."""
        self.record_round_trip(round_trip_leakage(request, reply))

    def record_round_trip(self, disclosed_bits: int) -> None:
        """Record one request/response exchange that disclosed ``disclosed_bits`` bits."""
        self._check(disclosed_bits)
        self.disclosed_bits += disclosed_bits
        self.round_trips += 1

    def record_disclosure(self, disclosed_bits: int) -> None:
        """Record bits disclosed in a one-way message (piggybacked, no extra round trip)."""
        self._check(disclosed_bits)
        self.disclosed_bits += disclosed_bits

    @staticmethod
    def _check(disclosed_bits: int) -> None:
        if int(disclosed_bits) != disclosed_bits or disclosed_bits < 0:
            raise ValueError(
                f"disclosed_bits must be a non-negative integer, got {disclosed_bits!r}"
            )
