"""Reconciliation behind one interface: methods found by name, Cascade as one of them, and the
checks every request and reply passes. All in memory; the round-level counting is in
tests/orchestration/test_inmemory.py."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from classical.cascade import (
    CascadeParameters,
    CascadeReconciler,
    cascade_block_sizes,
    reconcile,
)
from classical.reconcilers import RECONCILERS, default_reconciler, get_reconciler
from classical.reconciliation import ReconcilePlan, Request, check_reply, check_request
from classical.reconciliation_channel import InMemoryParityChannel


class AliceOverChannel:
    """A ``ReconcileChannel`` answering from Alice's session in-process; logs what crosses."""

    def __init__(self, session) -> None:
        self.session = session
        self.requests: list[Request] = []
        self.replies: list[NDArray[np.uint8]] = []

    def ask(self, request: Request) -> NDArray[np.uint8]:
        reply = self.session.answer(Request(request.rows, request.bits))
        check_reply(reply, request.reply_bits)
        self.requests.append(request)
        self.replies.append(reply)
        return reply


def _keys(seed: int, n: int = 5_000, qber: float = 0.03):
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    return alice, alice ^ (rng.random(n) < qber).astype(np.uint8)


def test_methods_are_found_by_name():
    assert RECONCILERS["cascade"] is CascadeReconciler
    assert default_reconciler() == CascadeReconciler(CascadeParameters(variant="shallow"))
    assert get_reconciler("cascade", {"variant": "pow2"}).parameters.variant == "pow2"


@pytest.mark.parametrize(("method", "settings", "needle"), [
    ("ldpc", {}, "choose one of cascade"),
    ("cascade", {"depth": 3}, "unknown Cascade setting(s) depth"),
    ("cascade", {"biconf_passes": "2"}, "must be an integer"),
    ("cascade", {"variant": "nope"}, "variant must be one of"),
])
def test_a_bad_method_or_setting_is_named(method, settings, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        get_reconciler(method, settings)


@pytest.mark.parametrize("seed", range(3))
def test_cascade_behind_the_interface_has_reconcile_s_transcript(seed):
    alice, bob = _keys(seed)
    cascade = CascadeReconciler()
    plan = cascade.plan(bob.size, 0.03, np.random.default_rng(seed))
    channel = AliceOverChannel(cascade.alice(alice, plan))
    outcome = cascade.bob(bob, plan, channel)
    assert np.array_equal(outcome.corrected_key, alice)
    assert outcome.corrected_bits == int((alice != bob).sum())
    assert all(r.bits.size == 0 and r.rows.shape == (3, r.reply_bits) for r in channel.requests)
    direct = reconcile(bob, 0.03, InMemoryParityChannel(alice), np.random.default_rng(seed))
    assert direct.plan.seed == plan.seed
    assert direct.disclosed_bits == sum(r.size for r in channel.replies)
    assert direct.round_trips == len(channel.replies)
    assert outcome.report == {"passes": direct.passes}


def test_a_cascade_plan_travels_as_bipartition_passes_then_block_sizes():
    plan = CascadeReconciler().plan(100_000, 0.01, np.random.default_rng(1))
    assert plan.method == "cascade" and plan.key_bits == 100_000 and plan.qber_estimate == 0.01
    sizes, halves = cascade_block_sizes(0.01, 100_000)
    assert plan.parameters == (halves, *sizes)


@pytest.mark.parametrize(("plan", "needle"), [
    (ReconcilePlan("other", 100, 0.01, 1, (0, 10)), "not a Cascade plan"),
    (ReconcilePlan("cascade", 100, 0.01, 1, (0,)), "at least one block size"),
    (ReconcilePlan("cascade", 100, 0.01, 1, (0, 101)), "block_sizes"),
    (ReconcilePlan("cascade", 100, 0.01, 1, (-1, 10)), "bipartition_passes"),
])
def test_alice_refuses_a_plan_that_is_not_a_cascade_plan(plan, needle):
    with pytest.raises(ValueError, match=needle):
        CascadeReconciler().alice(np.zeros(100, np.uint8), plan)


def test_plans_bound_their_fields():
    with pytest.raises(ValueError, match="seed"):
        ReconcilePlan("cascade", 100, 0.01, 2**128, (0, 10))
    with pytest.raises(ValueError, match="key_bits"):
        ReconcilePlan("cascade", 0, 0.01, 1, (0, 10))
    with pytest.raises(ValueError, match="qber_estimate"):
        ReconcilePlan("cascade", 100, 0.5, 1, (0, 10))


@pytest.mark.parametrize(("rows", "bits", "needle"), [
    (np.zeros((2, 1), np.int32), np.zeros(0, np.uint8), "3 rows"),
    (np.array([[0], [0], [5]], np.int32), np.array([1], np.uint8), "no bits"),
    (np.array([[0], [5], [5]], np.int32), np.zeros(0, np.uint8), "start/end"),
    (np.array([[9], [0], [5]], np.int32), np.zeros(0, np.uint8), "pass_index"),
])
def test_alice_refuses_a_malformed_cascade_request(rows, bits, needle):
    cascade = CascadeReconciler()
    session = cascade.alice(np.zeros(100, np.uint8), ReconcilePlan("cascade", 100, 0.01, 1,
                                                                   (0, 10)))
    with pytest.raises(ValueError, match=needle):
        session.answer(Request(rows, bits))


@pytest.mark.parametrize(("rows", "bits", "needle"), [
    (np.zeros(3, np.int32), np.zeros(0, np.uint8), "2-D int32"),
    (np.zeros((3, 1), np.int64), np.zeros(0, np.uint8), "2-D int32"),
    (np.zeros((3, 1), np.int32), np.zeros(1, np.int64), "1-D uint8"),
    (np.zeros((3, 1), np.int32), np.array([2], np.uint8), "only 0 and 1"),
])
def test_requests_are_checked_before_a_method_sees_them(rows, bits, needle):
    with pytest.raises(ValueError, match=needle):
        check_request(rows, bits)


def test_replies_must_hold_the_bits_asked_for():
    check_reply(np.array([0, 1], np.uint8), 2)
    with pytest.raises(ValueError, match="asked for 3"):
        check_reply(np.array([0, 1], np.uint8), 3)
    with pytest.raises(ValueError, match="1-D uint8"):
        check_reply(np.array([[0, 1]], np.uint8), 2)
