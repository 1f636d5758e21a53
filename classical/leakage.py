"""The leakage ledger: what the reconciliation dialogue has told the world about the key.

Every parity Alice discloses during Cascade (and every hash bit the verification stage sends later)
is public information about the sifted key. Privacy amplification must subtract it, so it is
counted in one place, at the moment it is exchanged: :class:`LeakageLedger`.

Two counters, two units:

* ``disclosed_bits`` -- bits of public information about the key (one per parity Alice answers;
  parities Bob *infers* from earlier answers are free and not counted again);
* ``round_trips`` -- request/response exchanges on the classical channel (latency, not secrecy).

The ledger is a small mutable accumulator owned by one key round. It never decides anything; the
stage that talks to the channel records what went over it, and privacy amplification reads
``disclosed_bits``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LeakageLedger:
    """Running totals of disclosed key information and classical round trips.

    Invariants: both counters are non-negative integers and only ever grow.
    """

    disclosed_bits: int = 0
    round_trips: int = 0

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
