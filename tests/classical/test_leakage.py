"""The leakage accounting of a two-way reconciliation (``classical.leakage``): Alice's answers and
Bob's disclosed bits are charged, Bob's questions are not, which is sound only because his
questions depend on the keys only through their difference. That condition is checked here for
every registered method, and both sides of a round are shown to charge the same bits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
from numpy.typing import NDArray

from classical.cascade import CascadeParameters, CascadeReconciler
from classical.leakage import LeakageLedger, round_trip_leakage
from classical.reconcilers import RECONCILERS, get_reconciler
from classical.reconciliation import (
    BobOutcome,
    ReconcileChannel,
    ReconcilePlan,
    Reconciler,
    Request,
)
from tests.classical.test_reconciliation import AliceOverChannel  # one in-process channel
from tests.metro import shared_metro_20km_round


def _questions(reconciler: Reconciler, alice: np.ndarray, bob: np.ndarray, qber: float,
               seed: int) -> list[np.ndarray]:
    """The rows of every request Bob makes, under the plan drawn from ``seed``."""
    plan = reconciler.plan(bob.size, qber, np.random.default_rng(seed))
    transcript = AliceOverChannel(reconciler.alice(alice, plan))
    reconciler.bob(bob, plan, transcript)
    return [r.rows for r in transcript.requests]


def _keys(seed: int, n: int, qber: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    return alice, alice ^ (rng.random(n) < qber).astype(np.uint8)


def _asks_by_difference_only(reconciler: Reconciler, seed: int, n: int, qber: float) -> bool:
    """Whether Bob asks exactly the same questions after the same random positions of both
    keys are flipped (the error string W = X ⊕ Y unchanged, Alice's answers changed)."""
    alice, bob = _keys(seed, n, qber)
    v = np.random.default_rng(seed + 1000).integers(0, 2, n, dtype=np.uint8)
    asked = _questions(reconciler, alice, bob, qber, seed)
    asked_flipped = _questions(reconciler, alice ^ v, bob ^ v, qber, seed)
    return len(asked) == len(asked_flipped) and all(
        np.array_equal(a, b) for a, b in zip(asked, asked_flipped, strict=True))


CASCADES = [CascadeReconciler(CascadeParameters(variant=v)) for v in
            ("shallow", "yanetal", "option8", "original", "lowlatency", "pow2")] + [
    CascadeReconciler(CascadeParameters(variant="option8", initial_passes=2, overlap_queries=2)),
    CascadeReconciler(CascadeParameters(variant="shallow", defer_levels=1, defer_min_leaves=4)),
]


@pytest.mark.parametrize("method", sorted(RECONCILERS))
@pytest.mark.parametrize(("seed", "qber"), [(1, 0.01), (2, 0.05)])
def test_every_method_asks_by_the_keys_difference_only(method, seed, qber):
    assert _asks_by_difference_only(get_reconciler(method), seed, 20_000, qber)


@pytest.mark.parametrize("reconciler", CASCADES, ids=lambda r: repr(r.parameters))
def test_every_cascade_schedule_asks_by_the_keys_difference_only(reconciler):
    assert _asks_by_difference_only(reconciler, 3, 20_000, 0.03)


@dataclass(frozen=True)
class _OnesOfBob(Reconciler):
    """A bad method: Bob asks for Alice's bits where *his* key holds a 1 (then copies them)."""

    name: ClassVar[str] = "ones-of-bob"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> _OnesOfBob:
        return cls()

    def plan(self, key_bits: int, qber_estimate: float,
             rng: np.random.Generator) -> ReconcilePlan:
        return ReconcilePlan(self.name, key_bits, qber_estimate, 0, ())

    def bob(self, key: NDArray[np.uint8], plan: ReconcilePlan,
            channel: ReconcileChannel) -> BobOutcome:
        ones = np.flatnonzero(key).astype(np.int32)
        corrected = key.copy()
        corrected[ones] = channel.ask(Request(ones[None, :], reply_bits=ones.size))
        return BobOutcome(corrected, int((corrected != key).sum()))

    def alice(self, key: NDArray[np.uint8], plan: ReconcilePlan):
        class Session:
            def answer(self, request: Request) -> NDArray[np.uint8]:
                return key[request.rows[0]]
        return Session()


def test_the_check_catches_questions_that_read_bobs_key():
    """Where Bob's 1s are is not a function of W: charging only the reply would be unsound."""
    assert not _asks_by_difference_only(_OnesOfBob(), 4, 2_000, 0.03)


def test_a_round_trip_charges_bobs_disclosed_bits_and_alices_answers_not_the_questions():
    rows = np.arange(30, dtype=np.int32).reshape(3, 10)
    request = Request(rows, np.array([1, 0, 1], np.uint8), reply_bits=10)
    assert round_trip_leakage(request, np.zeros(10, np.uint8)) == 3 + 10
    ledger = LeakageLedger()
    ledger.record_exchange(request, np.zeros(10, np.uint8))
    ledger.record_exchange(Request(rows), np.ones(10, np.uint8))
    assert (ledger.disclosed_bits, ledger.round_trips) == (23, 2)


def test_cascade_is_charged_alices_answers_exactly():
    alice, bob = _keys(5, 10_000, 0.02)
    cascade = CascadeReconciler()
    plan = cascade.plan(bob.size, 0.02, np.random.default_rng(5))
    transcript = AliceOverChannel(cascade.alice(alice, plan))
    cascade.bob(bob, plan, transcript)
    ledger = LeakageLedger()
    for request, reply in zip(transcript.requests, transcript.replies, strict=True):
        ledger.record_exchange(request, reply)
    assert ledger.disclosed_bits == sum(r.size for r in transcript.replies) > 0
    assert ledger.round_trips == len(transcript.replies)


def test_alice_and_bob_charge_the_same_leakage_in_a_round():
    # the metro round on 2 x 20 km (as tests/classical/test_rounds_report.py, computed once for
    # both): it reaches reconciliation
    _, result = shared_metro_20km_round()
    a, b = result.alice.report, result.bob.report
    assert a["disclosed_bits"] == b["disclosed_bits"] > 0
    assert a["round_trips"] == b["round_trips"] > 0
    assert a["leakage_bits"] == b["leakage_bits"] == a["disclosed_bits"] + a["tag_bits"]
