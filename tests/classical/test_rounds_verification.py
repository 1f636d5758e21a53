"""Verification and the end of a round (issue 15, item 2), in memory over the real wire format.

* Cascade leaves an error in Bob's key (monkeypatched): verification must catch it, both users
  abort with that reason, no key is stored on either side, and the authentication pools stay in
  step for the next round.
* Someone drops or tampers the verification messages (``VerifyRequest``, ``VerifyResult``): the
  round ends with no key on either side, the other rounds' keys are identical in both stores.

The commit messages (``Amplify``, ``Confirm``, ``Committed``) dropped, delayed or tampered are
tests/classical/test_hostile_peers.py's, except ``Committed`` in the last round (here). Every
run here first shows that the same rounds give keys when nobody interferes, so "no key" is a
result and not the round's size.
"""

from __future__ import annotations

import pytest

from classical.cascade import CascadeReconciler
from classical.messages import Committed, VerifyRequest, VerifyResult
from classical.pipeline import run_key_round, run_key_rounds
from classical.reconciliation import BobOutcome
from orchestration.inmemory import round_config
from tests.metro import shared_metro, shared_undisturbed_run, three_metro_rounds

KIND_OFFSET = 13 + 1  # frame header (13 bytes), then the codec's version byte, then the kind
TIMEOUT_S = 6.0


@pytest.fixture(scope="module")
def users():
    return shared_metro()[0]


@pytest.fixture(scope="module")
def honest():
    return shared_metro()[1]


@pytest.fixture(scope="module")
def three_rounds(honest):
    return three_metro_rounds(honest)


@pytest.fixture(scope="module")
def undisturbed():
    # run_key_rounds(three_rounds, round_config(*users), 5, timeout_s=TIMEOUT_S), computed once
    # for this module and test_hostile_peers
    return shared_undisturbed_run(TIMEOUT_S)


def _pools_in_step(result) -> None:
    ka, kb = result.keys
    assert ka.outgoing.replenished_bytes == kb.incoming.replenished_bytes > 0
    assert ka.incoming.replenished_bytes == kb.outgoing.replenished_bytes > 0


def _stores(result) -> tuple[dict, dict]:
    return ({k: v.tolist() for k, v in result.alice_store.items()},
            {k: v.tolist() for k, v in result.bob_store.items()})


def test_the_undisturbed_rounds_each_store_a_key_on_both_sides(undisturbed):
    a, b = _stores(undisturbed)
    assert a == b and len(a) == 3 and all(len(v) > 10_000 for v in a.values())
    _pools_in_step(undisturbed)


def _leave_one_error(monkeypatch, rounds: set[int] | None = None) -> list[int]:
    """Cascade's Bob ends with one bit of his key flipped (in every round, or the n-th calls
    listed in ``rounds``); returns the calls that were spoilt."""
    honest_bob = CascadeReconciler.bob
    calls, spoilt = [0], []

    def bob(self, key, plan, channel):
        out = honest_bob(self, key, plan, channel)
        n = calls[0]
        calls[0] += 1
        if rounds is not None and n not in rounds:
            return out
        spoilt.append(n)
        wrong = out.corrected_key.copy()
        wrong[key.size // 2] ^= 1
        return BobOutcome(wrong, out.corrected_bits, out.report)

    monkeypatch.setattr(CascadeReconciler, "bob", bob)
    return spoilt


def test_an_error_cascade_missed_aborts_the_round_on_both_sides(users, honest, monkeypatch):
    spoilt = _leave_one_error(monkeypatch)
    result = run_key_round(honest.announcement, honest.alice, honest.bob, round_config(*users), 3,
                           timeout_s=TIMEOUT_S)
    assert spoilt == [0]
    assert result.alice.key is None and result.bob.key is None
    # both stop at verification, on their own reading of it (not by a timeout or the other's
    # abort): Alice's tag differs, and Bob is told so
    assert result.alice.abort_reason == result.bob.abort_reason == (
        "verification failed: reconciled keys differ")
    for outcome in (result.alice, result.bob):
        assert outcome.report["matched"] is False
        assert "amplify" not in outcome.report["timings_s"]


def test_a_round_with_a_missed_error_stores_nothing_and_the_next_round_goes_on(
        users, three_rounds, undisturbed, monkeypatch):
    spoilt = _leave_one_error(monkeypatch, rounds={1})
    result = run_key_rounds(three_rounds, round_config(*users), 5, timeout_s=TIMEOUT_S)
    assert spoilt == [1]
    assert result.alice[1].key is None and result.bob[1].key is None
    for outcome in (result.alice[1], result.bob[1]):
        assert outcome.abort_reason == "verification failed: reconciled keys differ"
    a, b = _stores(result)
    assert a == b
    assert sorted(a) == sorted(k for k in undisturbed.alice_store if not k.startswith("r1-"))
    assert result.alice[2].committed and result.bob[2].committed
    _pools_in_step(result)


def _attack(kind: type, how: str, round_id: int = 1):
    """A wire that drops or tampers the first message of ``kind`` in round ``round_id``."""
    done = []
    marker = f'"round_id":{round_id}'.encode()

    def wire(direction: str, frame: bytes):
        if done or frame[KIND_OFFSET] != kind.KIND or marker not in frame:
            return frame
        done.append(how)
        if how == "drop":
            return None
        return frame[:30] + bytes([frame[30] ^ 0x04]) + frame[31:]  # tamper

    return wire, done


@pytest.mark.parametrize("how", [
    "tamper", pytest.param("drop", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", [VerifyRequest, VerifyResult])
def test_a_lost_or_altered_verification_message_leaves_no_key_of_that_round(
        users, three_rounds, undisturbed, kind, how):
    wire, done = _attack(kind, how)
    result = run_key_rounds(three_rounds, round_config(*users), 5, wire=wire,
                            timeout_s=TIMEOUT_S)
    assert done == [how]
    assert result.alice[1].key is None and result.bob[1].key is None
    a, b = _stores(result)
    assert a == b
    assert sorted(k[:3] for k in a) == ["r0-", "r2-"]
    _pools_in_step(result)


def test_a_lost_committed_in_the_last_round_leaves_identical_stores(users, three_rounds):
    """The last round's ``Committed`` is tampered: only ``EndOfRun`` can settle Bob's key."""
    wire, done = _attack(Committed, "tamper", round_id=2)
    result = run_key_rounds(three_rounds, round_config(*users), 5, wire=wire,
                            timeout_s=TIMEOUT_S)
    assert done == ["tamper"]
    a, b = _stores(result)
    assert a == b and len(a) == 3
