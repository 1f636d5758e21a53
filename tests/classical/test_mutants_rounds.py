"""The key round's contract (classical/rounds.py), fast enough for a mutation run
(docs/mutation-testing.md): the round tests over the in-memory wire take minutes for the module,
these about ten seconds.

* Bob's checks of Alice's ``Amplify`` and the key-class errors of the final estimate, each on its
  own: the round tests reach them only through honest peers.
* Each step against a scripted peer: the pre-check and the final estimate (recomputed from the
  counts by hand), amplification and the two-phase commit (what each side sends, commits,
  discards and why), sifting (every refusal, the public counts), Bob's plan, channel and
  disclosed unkeyed bits, Alice's answers and verification, the round's early stops.
* One small emulated round (2 × 1 km, 5·10⁷ slots) over the real wire: both keys equal and of the
  finite-key length recomputed from the leakage counted on the wire, the dialogue in order, the
  reports, the pools still in step; and its failures (a missed error, a lying corrected count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import threading

import numpy as np
import pytest

from channel.fiber import Fiber
from channel.link import Link
from channel.relay import RelayOptics
from channel.source import Source
from classical.amplification import seed_bits, toeplitz_hash, toeplitz_seed_bytes
from classical.custody import KeyCustody, PendingKey, Settled
from classical.estimation import (
    Abort,
    DecoyObservations,
    SecurityParameters,
    decoy_method_problem,
    estimate,
    predicted_leakage,
)
from classical.leakage import LeakageLedger
from classical.messages import (
    Amplify,
    Announcement,
    Committed,
    Confirm,
    ReconcileReply,
    ReconcileRequest,
    ReconcileStart,
    RoundAbort,
    SiftingInfo,
    UnkeyedBits,
    VerifyRequest,
    VerifyResult,
    XBasisBits,
)
from classical.pipeline import QueuePeer, run_key_round, shared_link_keys
from classical.reconcilers import default_reconciler
from classical.reconciliation import Request
from classical.rounds import (
    LocalView,
    PeerAborted,
    ProtocolError,
    RecordingObserver,
    RoundConfig,
    _Abort,
    _alice_commit,
    _alice_reconcile,
    _bob_commit,
    _checked_amplify,
    _disclose_unkeyed,
    _finish,
    _PeerReconcileChannel,
    _precheck,
    _received_plan,
    _RecordedStage,
    _sift_and_test,
    _with_z_errors,
    epsilon_attributes,
    run_alice_round,
    run_bob_round,
)
from classical.secure import Repayment, wegman_carter_link
from classical.sifting import (
    BASIS_X,
    announcement_digest,
    check_announcement,
    class_errors,
    sent_pairs,
    sift,
)
from classical.verification import draw_hash_key, tag_bits_for, verification_tag
from orchestration.inmemory import emulate_round, round_config
from tests.classical.test_estimation import INTENSITIES, _analytic_observations
from tests.leakage_count import disclosed, open_frame
from tests.metro import PLAN, metro_users

KEY_BITS, LENGTH, ROUND = 1000, 300, 7
CASCADE = default_reconciler()


def _announcement() -> Announcement:
    return Announcement(ROUND, 0, 1 << 20, np.array([3, 9], np.int64), np.array([1, 2], np.uint8))


def _amplify(**changes) -> Amplify:
    fields = dict(round_id=ROUND, seed=np.zeros(toeplitz_seed_bytes(KEY_BITS, LENGTH), np.uint8),
                  output_bits=LENGTH, key_id=f"r{ROUND}-0a0b0c0d0e0f", a_to_b_seq=-1,
                  b_to_a_seq=-1, a_to_b_bytes=0, b_to_a_bytes=0, committed="")
    fields.update(changes)
    return Amplify(**fields)


def _check(msg: Amplify) -> Repayment:
    return _checked_amplify(msg, LENGTH, KEY_BITS, KeyCustody("bob"))


def _refused(msg: Amplify, reason: str) -> None:
    with pytest.raises(_Abort, match=reason) as caught:
        _check(msg)
    assert caught.value.notify_peer  # Bob tells Alice why he will not confirm


def test_a_well_formed_amplify_is_accepted_with_its_repayment() -> None:
    assert _check(_amplify()) == Repayment(-1, -1, 0, 0)


@pytest.mark.parametrize("output_bits", [LENGTH - 1, LENGTH + 1])
def test_an_amplify_to_another_length_than_bobs_estimate_is_refused(output_bits: int) -> None:
    seed = np.zeros(toeplitz_seed_bytes(KEY_BITS, output_bits), np.uint8)
    _refused(_amplify(output_bits=output_bits, seed=seed),
             f"Alice amplifies to {output_bits} bits, Bob's estimate allows {LENGTH}")


@pytest.mark.parametrize("seed", [np.zeros(toeplitz_seed_bytes(KEY_BITS, LENGTH) - 1, np.uint8),
                                  np.zeros(toeplitz_seed_bytes(KEY_BITS, LENGTH) + 1, np.uint8),
                                  np.zeros(toeplitz_seed_bytes(KEY_BITS, LENGTH), np.int8),
                                  np.zeros((1, toeplitz_seed_bytes(KEY_BITS, LENGTH)), np.uint8)],
                         ids=["short", "long", "int8", "2-D"])
def test_a_seed_that_is_not_the_whole_toeplitz_seed_is_refused(seed: np.ndarray) -> None:
    _refused(_amplify(seed=seed), "Toeplitz seed of shape")


@pytest.mark.parametrize("key_id", [f"r{ROUND + 1}-0a0b", f"r{ROUND}0a0b", f"x{ROUND}-0a0b",
                                    f"r{ROUND}-" + "f" * 62])
def test_a_key_id_of_another_round_or_too_long_is_refused(key_id: str) -> None:
    _refused(_amplify(key_id=key_id), "malformed key ID")


def test_a_key_id_of_64_characters_is_accepted() -> None:
    key_id = f"r{ROUND}-" + "f" * 61
    assert len(key_id) == 64
    assert _check(_amplify(key_id=key_id)) == Repayment()


@pytest.mark.parametrize("field", ["a_to_b_seq", "b_to_a_seq", "a_to_b_bytes", "b_to_a_bytes"])
def test_a_repayment_bob_does_not_compute_himself_is_refused(field: str) -> None:
    _refused(_amplify(**{field: 3}), "authentication pools are out of step")


def _observations(key_det: tuple[float, float], key_err: tuple[float, float]) -> DecoyObservations:
    ints = (0.5, 0.1, 0.0)
    pairs = np.full((3, 3, 2), 1e6)
    det = np.full((3, 3, 2, 2), 100.0)
    err = np.full((3, 3, 2, 2), 5.0)
    det[0, 0, 0] = key_det
    err[0, 0, 0] = key_err
    return DecoyObservations(ints, ints, pairs, det, err)


def test_the_corrected_errors_are_shared_between_the_bell_states_by_their_detections() -> None:
    obs = _observations((300.0, 100.0), (0.0, 0.0))
    out = _with_z_errors(obs, 40.0)
    assert out.errors[0, 0, 0].tolist() == [30.0, 10.0]
    # every other class, and the rest of the observations, are untouched
    rest = np.ones(out.errors.shape, bool)
    rest[0, 0, 0] = False
    assert np.array_equal(out.errors[rest], obs.errors[rest])
    assert np.array_equal(out.detections, obs.detections)
    assert np.array_equal(out.pairs, obs.pairs)
    assert (out.intensities_a, out.intensities_b, out.key_intensity) == (
        obs.intensities_a, obs.intensities_b, obs.key_intensity)


def test_the_corrected_errors_replace_the_previous_key_class_errors() -> None:
    out = _with_z_errors(_observations((200.0, 200.0), (50.0, 50.0)), 10.0)
    assert out.errors[0, 0, 0].tolist() == [5.0, 5.0]


def test_errors_beyond_a_bell_states_detections_are_capped_at_them() -> None:
    out = _with_z_errors(_observations((300.0, 100.0), (0.0, 0.0)), 1000.0)
    assert out.errors[0, 0, 0].tolist() == [300.0, 100.0]


def test_without_key_class_detections_no_errors_are_placed() -> None:
    out = _with_z_errors(_observations((0.0, 0.0), (0.0, 0.0)), 0.0)
    assert out.errors[0, 0, 0].tolist() == [0.0, 0.0]


def test_expected_counts_below_one_detection_are_shared_in_proportion_too() -> None:
    # the asymptotic mode estimates from expected (fractional) counts
    out = _with_z_errors(_observations((0.4, 0.1), (0.0, 0.0)), 0.2)
    assert out.errors[0, 0, 0] == pytest.approx([0.16, 0.04])


def test_the_errors_go_to_the_key_class_of_a_four_intensity_layout() -> None:
    ints = (0.5, 0.3, 0.1, 0.0)
    det = np.full((4, 4, 2, 2), 100.0)
    err = np.full((4, 4, 2, 2), 5.0)
    obs = DecoyObservations(ints, ints, np.full((4, 4, 2), 1e6), det, err, key_intensity=(1, 1))
    out = _with_z_errors(obs, 60.0)
    assert out.key_intensity == (1, 1)
    assert out.errors[1, 1, 0].tolist() == [30.0, 30.0]
    assert out.errors[0, 0, 0].tolist() == [5.0, 5.0]


# --- the round's steps one at a time, against a scripted peer ----------------------------------
# (issue 15 item 5: mutmut over the rest of classical/rounds.py; the round tests over the
# in-memory wire take minutes a mutant, these a fraction of a second)


class ScriptedPeer:
    """A ``Peer`` that hands out ``incoming`` in order (an exception is raised instead, and
    ``RoundAbort`` raises ``PeerAborted`` as a real peer does) and keeps what it is sent."""

    def __init__(self, *incoming) -> None:
        self.incoming = list(incoming)
        self.sent: list = []

    def send(self, message) -> None:
        self.sent.append(message)

    def receive(self, *expected):
        message = self.incoming.pop(0)
        if isinstance(message, BaseException):
            raise message
        if isinstance(message, RoundAbort):
            raise PeerAborted(message.reason)
        if not isinstance(message, expected):
            raise ProtocolError(f"unexpected {type(message).__name__}")
        return message


class RecordedCustody(KeyCustody):
    """A ``KeyCustody`` that records what it settles and delivers, and may state a repayment
    (the round tests' custody has no link, so it repays nothing) or have no room."""

    def __init__(self, role, repayment: Repayment | None = None, full: str | None = None):
        self.settled: list[Settled] = []
        self.delivered: list[tuple[str, int, np.ndarray]] = []
        # the store has no room for this round's key only: the round asks about its own
        super().__init__(role, None, lambda *d: self.delivered.append(d), self.settled.append,
                         (lambda r: full if r == ROUND else None) if full is not None else None)
        self.repayment = Repayment() if repayment is None else repayment

    def stated_repayment(self) -> Repayment:
        return self.repayment

    def expected_repayment(self) -> Repayment:
        return self.repayment


def _pending(custody: KeyCustody, key_id: str = f"r{ROUND}-k", bits: int = 16) -> PendingKey:
    key = PendingKey(ROUND, key_id, np.ones(bits, np.uint8), Repayment())
    custody.hold(key)
    return key


def _raises_abort(fn, *args, reason: str, notify: bool):
    with pytest.raises(_Abort) as caught:
        fn(*args)
    assert caught.value.reason == str(caught.value) == reason
    assert caught.value.notify_peer is notify
    return caught.value


def _discarded(custody: RecordedCustody, key_id: str, reason: str) -> None:
    assert [(s.key_id, s.committed, s.reason) for s in custody.settled] == [(key_id, False, reason)]
    assert custody.pending is None and custody.delivered == []


KEY_ID = f"r{ROUND}-k"


def test_alice_commits_on_bobs_confirm_and_tells_him() -> None:
    custody, peer = RecordedCustody("alice"), ScriptedPeer(Confirm(ROUND, KEY_ID))
    key = _pending(custody)
    settled = _alice_commit(_announcement(), KEY_ID, peer, custody)
    assert settled == Settled(ROUND, KEY_ID, True, 16, 0)
    assert peer.sent == [Committed(ROUND, KEY_ID)]
    assert [(k, r, b.tolist()) for k, r, b in custody.delivered] == [
        (KEY_ID, ROUND, key.key.tolist())]
    assert custody.last_committed == KEY_ID


@pytest.mark.parametrize(("error", "notify"), [(PeerAborted("no"), False),
                                               (ProtocolError("odd"), True)])
def test_alice_discards_a_key_bob_does_not_confirm(error, notify) -> None:
    custody, peer = RecordedCustody("alice"), ScriptedPeer(error)
    _pending(custody)
    reason = f"key {KEY_ID} not confirmed by Bob ({type(error).__name__}: {error})"
    _raises_abort(_alice_commit, _announcement(), KEY_ID, peer, custody, reason=reason,
                  notify=notify)  # she tells Bob only when his message was not an abort
    _discarded(custody, KEY_ID, reason)
    assert peer.sent == []


def test_alice_discards_a_key_bob_confirmed_under_another_id() -> None:
    custody, peer = RecordedCustody("alice"), ScriptedPeer(Confirm(ROUND, "r7-other"))
    _pending(custody)
    reason = f"Bob confirmed 'r7-other', not {KEY_ID}"
    _raises_abort(_alice_commit, _announcement(), KEY_ID, peer, custody, reason=reason,
                  notify=True)
    _discarded(custody, KEY_ID, reason)
    assert peer.sent == []


def test_alice_without_room_discards_and_tells_bob_instead_of_committing() -> None:
    custody = RecordedCustody("alice", full="is full")
    peer = ScriptedPeer(Confirm(ROUND, KEY_ID))
    _pending(custody)
    reason = f"key {KEY_ID} not committed: Alice's key store is full"
    _raises_abort(_alice_commit, _announcement(), KEY_ID, peer, custody, reason=reason,
                  notify=True)
    _discarded(custody, KEY_ID, reason)
    assert peer.sent == []


def test_bob_confirms_then_commits_on_alices_committed() -> None:
    custody, peer = RecordedCustody("bob"), ScriptedPeer(Committed(ROUND, KEY_ID))
    _pending(custody)
    settled = _bob_commit(_announcement(), KEY_ID, peer, custody)
    assert settled == Settled(ROUND, KEY_ID, True, 16, 0)
    assert peer.sent == [Confirm(ROUND, KEY_ID)]
    assert [k for k, _, _ in custody.delivered] == [KEY_ID]


def test_bob_without_room_discards_and_tells_alice_without_confirming() -> None:
    custody, peer = RecordedCustody("bob", full="is full"), ScriptedPeer()
    _pending(custody)
    reason = f"key {KEY_ID} not confirmed: Bob's key store is full"
    _raises_abort(_bob_commit, _announcement(), KEY_ID, peer, custody, reason=reason,
                  notify=True)
    _discarded(custody, KEY_ID, reason)
    assert peer.sent == []


def test_bob_discards_on_alices_abort_without_answering() -> None:
    custody, peer = RecordedCustody("bob"), ScriptedPeer(RoundAbort(ROUND, "her store is full"))
    _pending(custody)
    reason = f"Alice discarded {KEY_ID}: her store is full"
    _raises_abort(_bob_commit, _announcement(), KEY_ID, peer, custody, reason=reason,
                  notify=False)
    _discarded(custody, KEY_ID, reason)
    assert peer.sent == [Confirm(ROUND, KEY_ID)]


def test_bob_keeps_the_key_pending_when_committed_does_not_come() -> None:
    custody, peer = RecordedCustody("bob"), ScriptedPeer(ProtocolError("timed out"))
    key = _pending(custody)
    assert _bob_commit(_announcement(), KEY_ID, peer, custody) is None
    assert custody.pending == key and custody.settled == []


def test_bob_discards_a_key_alice_committed_under_another_id() -> None:
    custody, peer = RecordedCustody("bob"), ScriptedPeer(Committed(ROUND, "r7-other"))
    _pending(custody)
    reason = f"Alice committed 'r7-other', not {KEY_ID}"
    _raises_abort(_bob_commit, _announcement(), KEY_ID, peer, custody, reason=reason,
                  notify=False)
    _discarded(custody, KEY_ID, reason)


# --- estimates, amplification and the commit, as _finish runs them ------------------------------

OBS = _analytic_observations(5.0, 1e10)  # expected counts of 2 × 5 km: a positive finite key
# not the defaults: a step that drops the round's security parameters or EC prediction shows
CFG = RoundConfig(INTENSITIES, INTENSITIES, 1 << 20, decoy_method="analytic",
                  security=SecurityParameters(epsilon_correctness=1e-12, epsilon_pe=1e-9),
                  ec_efficiency_prediction=1.1)
KEY_SIZE = int(OBS.detections[0, 0, 0].sum())
CORRECTED, DISCLOSED = 4000, 9000


def _independent_estimate(z_errors: float, leakage: float, cfg: RoundConfig = CFG):
    """The estimate from OBS with the key class's Z errors put in by hand (shared ψ⁺/ψ⁻ by
    their detections, as the round states it)."""
    det = OBS.detections
    err = np.array(OBS.errors)
    err[0, 0, 0] = z_errors * det[0, 0, 0] / det[0, 0, 0].sum()
    obs = DecoyObservations(OBS.intensities_a, OBS.intensities_b, OBS.pairs, det, err)
    return estimate(obs, leakage, cfg.mode, cfg.security, cfg.decoy_method)


def _stages(observer: RecordingObserver) -> list[tuple[str, dict]]:
    return [(s.name, s.attributes) for s in observer.stages]


def _estimate_attributes(est, leakage: float) -> dict:
    return dict(method=est.method, secure_length=int(est.secure_length),
                s11_z_lower=float(est.s11_z_lower), e11_x_upper=float(est.e11_x_upper),
                qber_z=float(est.qber_z), leakage_bits=float(leakage))


def test_the_precheck_estimates_with_the_prior_and_the_predicted_leakage() -> None:
    observer, prior = RecordingObserver(), 0.004
    _precheck(OBS, KEY_SIZE, prior, CFG, observer)
    leak = predicted_leakage(KEY_SIZE, prior, CFG.ec_efficiency_prediction)
    est = _independent_estimate(prior * KEY_SIZE, leak)
    assert _stages(observer) == [("estimate", dict(
        phase="precheck", predicted_leakage_bits=float(leak), **_estimate_attributes(est, leak)))]
    assert est.secure_length > 0


def test_a_precheck_without_key_stops_the_round_with_the_estimates_reason() -> None:
    observer, prior = RecordingObserver(), 0.3
    leak = predicted_leakage(KEY_SIZE, prior, CFG.ec_efficiency_prediction)
    expected = _independent_estimate(prior * KEY_SIZE, leak)
    assert isinstance(expected, Abort)
    _raises_abort(_precheck, OBS, KEY_SIZE, prior, CFG, observer, reason=expected.reason,
                  notify=False)  # both users reach it from the same public counts
    assert _stages(observer) == [("estimate", dict(
        phase="precheck", predicted_leakage_bits=float(leak), abort_reason=expected.reason))]


def test_the_epsilons_of_a_finite_key_are_flat_scalars_and_none_asymptotically() -> None:
    est = _independent_estimate(CORRECTED, DISCLOSED)
    out = epsilon_attributes(est)
    (block,) = est.per_block
    assert out == {"eps_sec": est.epsilon_security, "eps_cor": est.epsilon_correctness,
                   **{f"eps_{k}": v for k, v in est.epsilons.items()},
                   f"chernoff_counts_{block.name}": block.bounds.bounded_counts}
    assert {"eps_sec", "eps_cor", "eps_correctness", "eps_parameter_estimation_psi+-",
            "chernoff_counts_psi+-"} <= set(out)
    assert all(type(v) is float for k, v in out.items() if k.startswith("eps_"))
    assert type(out["chernoff_counts_psi+-"]) is int and out["chernoff_counts_psi+-"] > 0
    asymptotic = _independent_estimate(CORRECTED, DISCLOSED,
                                       dataclasses.replace(CFG, mode="asymptotic"))
    assert epsilon_attributes(asymptotic) == {}


def _amplify_of(rng_seed: int, est, last_committed: str, rep: Repayment) -> Amplify:
    """What Alice's ``Amplify`` must be: the whole seed drawn from her generator, the key ID
    from the seed's first six bytes, her repayment and her last committed key."""
    length = int(est.secure_length)
    seed = np.frombuffer(np.random.default_rng(rng_seed).bytes(
        toeplitz_seed_bytes(KEY_SIZE, length)), np.uint8)
    return Amplify(ROUND, seed, length, f"r{ROUND}-{seed[:6].tobytes().hex()}", rep.a_to_b_seq,
                   rep.b_to_a_seq, rep.a_to_b_bytes, rep.b_to_a_bytes, last_committed)


def _same_amplify(a: Amplify, b: Amplify) -> bool:
    return (np.array_equal(a.seed, b.seed) and a.seed.dtype == b.seed.dtype
            and dataclasses.replace(a, seed=None) == dataclasses.replace(b, seed=None))


REPAYMENT = Repayment(3, 4, 5, 6)


class PoolCustody(RecordedCustody):
    """Commits pay ``REPLENISH`` bits into the pools before the key store (as a link does)."""

    REPLENISH = 96

    def commit(self, key_id: str) -> Settled:
        s = super().commit(key_id)
        return dataclasses.replace(s, net_bits=s.net_bits - self.REPLENISH,
                                   replenished_bits=self.REPLENISH)


def _finish_of(role, peer, custody, key, rng_seed: int = 9):
    observer = RecordingObserver()
    out = _finish(role, _announcement(), OBS, key, CORRECTED, DISCLOSED, CFG, peer,
                  np.random.default_rng(rng_seed), observer, custody)
    return out, observer


def _expected_finish_stages(est, final_key_id: str, status: str, net: int,
                            replenished: int) -> list:
    length = int(est.secure_length)
    return [("estimate", dict(phase="final", corrected_bits=CORRECTED,
                              **_estimate_attributes(est, DISCLOSED), **epsilon_attributes(est))),
            ("amplify", dict(input_bits=KEY_SIZE, output_bits=length, key_id=final_key_id,
                             auth_key_bits_repaid=8 * (5 + 6))),
            ("commit", dict(key_status=status, net_secure_bits=net,
                            auth_key_bits_replenished=replenished))]


def test_alice_amplifies_to_the_final_estimates_length_and_commits_on_confirm() -> None:
    est = _independent_estimate(CORRECTED, DISCLOSED)
    length = int(est.secure_length)
    expected = _amplify_of(9, est, "r6-earlier", REPAYMENT)
    key = np.random.default_rng(1).integers(0, 2, KEY_SIZE, dtype=np.uint8)
    custody = PoolCustody("alice", REPAYMENT)
    custody.last_committed = "r6-earlier"
    peer = ScriptedPeer(Confirm(ROUND, expected.key_id))
    (final, key_id, pending), observer = _finish_of("alice", peer, custody, key)
    want = toeplitz_hash(key, seed_bits(expected.seed, KEY_SIZE, length), length)
    assert final.dtype == np.uint8 and np.array_equal(final, want) and final.size == length
    assert (key_id, pending) == (expected.key_id, False)
    sent_amplify, committed = peer.sent
    assert _same_amplify(sent_amplify, expected)
    assert committed == Committed(ROUND, key_id)
    assert [(k, r) for k, r, _ in custody.delivered] == [(key_id, ROUND)]
    assert np.array_equal(custody.delivered[0][2], want) and custody.pending is None
    assert _stages(observer) == _expected_finish_stages(
        est, key_id, "committed", length - PoolCustody.REPLENISH, PoolCustody.REPLENISH)


def test_bob_settles_the_earlier_key_amplifies_with_alices_seed_and_commits() -> None:
    est = _independent_estimate(CORRECTED, DISCLOSED)
    length = int(est.secure_length)
    amplify = _amplify_of(9, est, "r6-earlier", REPAYMENT)
    key = np.random.default_rng(1).integers(0, 2, KEY_SIZE, dtype=np.uint8)
    custody = PoolCustody("bob", REPAYMENT)
    custody.hold(PendingKey(6, "r6-earlier", np.ones(800, np.uint8), Repayment()))
    peer = ScriptedPeer(amplify, Committed(ROUND, amplify.key_id))
    # Bob draws nothing: his generator may be anything
    (final, key_id, pending), observer = _finish_of("bob", peer, custody, key, rng_seed=123)
    want = toeplitz_hash(key, seed_bits(amplify.seed, KEY_SIZE, length), length)
    assert np.array_equal(final, want) and (key_id, pending) == (amplify.key_id, False)
    assert peer.sent == [Confirm(ROUND, key_id)]
    # the key Alice says she committed last is committed first, then this round's
    assert [(s.key_id, s.committed) for s in custody.settled] == [("r6-earlier", True),
                                                                   (key_id, True)]
    assert _stages(observer) == _expected_finish_stages(
        est, key_id, "committed", length - PoolCustody.REPLENISH, PoolCustody.REPLENISH)


def test_bob_without_committed_keeps_the_final_key_pending_and_reports_nothing_stored() -> None:
    est = _independent_estimate(CORRECTED, DISCLOSED)
    amplify = _amplify_of(9, est, "", REPAYMENT)
    key = np.zeros(KEY_SIZE, np.uint8)
    custody = PoolCustody("bob", REPAYMENT)
    peer = ScriptedPeer(amplify, ProtocolError("timed out"))
    (final, key_id, pending), observer = _finish_of("bob", peer, custody, key)
    assert pending is True and custody.pending is not None
    assert custody.pending.key_id == key_id and np.array_equal(custody.pending.key, final)
    assert custody.pending.repayment == REPAYMENT
    assert _stages(observer)[2] == ("commit", dict(key_status="pending", net_secure_bits=0,
                                                   auth_key_bits_replenished=0))


def test_bob_refuses_an_amplify_his_final_estimate_does_not_allow() -> None:
    est = _independent_estimate(CORRECTED, DISCLOSED)
    wrong = _independent_estimate(CORRECTED, DISCLOSED - 2000)  # a leakage Alice undercounts
    assert wrong.secure_length != est.secure_length
    amplify = _amplify_of(9, wrong, "", Repayment())
    peer, custody = ScriptedPeer(amplify), RecordedCustody("bob")
    with pytest.raises(_Abort, match="Bob's estimate allows"):
        _finish_of("bob", peer, custody, np.zeros(KEY_SIZE, np.uint8))
    assert custody.pending is None and peer.sent == []


# --- reconciliation's plan and channel, the disclosed unkeyed bits ------------------------------


def _start(**changes) -> tuple[ReconcileStart, object]:
    plan = CASCADE.plan(5000, 0.02, np.random.default_rng(4))
    fields = dict(round_id=ROUND, method=plan.method, key_bits=plan.key_bits,
                  qber_estimate=plan.qber_estimate, seed=str(plan.seed),
                  parameters=np.asarray(plan.parameters, np.int64))
    fields.update(changes)
    return ReconcileStart(**fields), plan


def test_alice_takes_bobs_plan_as_he_announced_it() -> None:
    start, plan = _start()
    assert _received_plan(start, CASCADE, 5000) == plan


@pytest.mark.parametrize(("changes", "reason"), [
    (dict(method="ldpc"), "Bob reconciles with 'ldpc', the round agreed on 'cascade'"),
    (dict(key_bits=4999), "Bob reconciles 4999 bits, Alice holds 5000"),
    (dict(parameters=np.zeros((1, 3), np.int64)),
     "bad reconciliation plan: parameters must be 1-D int64, got 2-D int64"),
    (dict(parameters=np.zeros(3, np.int32)),
     "bad reconciliation plan: parameters must be 1-D int64, got 1-D int32"),
    (dict(seed="x"), "bad reconciliation plan: invalid literal"),
    (dict(qber_estimate=0.5), "bad reconciliation plan: qber_estimate"),
])
def test_alice_refuses_a_plan_that_is_not_the_agreed_one(changes, reason) -> None:
    start, _ = _start(**changes)
    with pytest.raises(ProtocolError) as caught:
        _received_plan(start, CASCADE, 5000)
    assert str(caught.value).startswith(reason)


def test_bobs_channel_sends_his_question_and_charges_the_round_trip() -> None:
    rows = np.array([[0, 1], [0, 0], [8, 16]], np.int32)
    request = Request(rows, np.array([1, 0, 1], np.uint8), reply_bits=2)
    reply = np.array([1, 0], np.uint8)
    peer, ledger = ScriptedPeer(ReconcileReply(ROUND, reply)), LeakageLedger()
    got = _PeerReconcileChannel(peer, ROUND, ledger).ask(request)
    assert got is reply
    (sent,) = peer.sent
    assert (sent.round_id, sent.rows.tolist(), sent.bits.tolist()) == (
        ROUND, rows.tolist(), [1, 0, 1])
    assert (ledger.disclosed_bits, ledger.round_trips) == (2 + 3, 1)


@pytest.mark.parametrize("reply", [np.array([1], np.uint8), np.array([1, 2], np.uint8)])
def test_bobs_channel_refuses_a_reply_the_request_did_not_ask_for(reply) -> None:
    request = Request(np.zeros((3, 1), np.int32), reply_bits=2)
    ledger = LeakageLedger()
    with pytest.raises(ProtocolError, match="^reconciliation reply: "):
        _PeerReconcileChannel(ScriptedPeer(ReconcileReply(ROUND, reply)), ROUND, ledger).ask(
            request)
    assert ledger.round_trips == 1  # charged as it crossed, before it is checked


def _disclose(key: np.ndarray, other: np.ndarray):
    peer, observer = ScriptedPeer(UnkeyedBits(ROUND, other)), RecordingObserver()
    errors = _disclose_unkeyed(_announcement(), key, peer, observer)
    return errors, peer, observer


def test_the_unkeyed_bits_are_exchanged_and_their_differences_counted() -> None:
    key = np.array([0, 1, 1, 0, 1], np.int64)
    errors, peer, observer = _disclose(key, np.array([1, 1, 0, 0, 1], np.uint8))
    assert errors == 2 and type(errors) is int
    (sent,) = peer.sent
    assert sent.round_id == ROUND and sent.bits.dtype == np.uint8
    assert sent.bits.tolist() == key.tolist()
    assert _stages(observer) == [("disclose", dict(disclosed_key_bits=5, disclosed_z_errors=2))]


def test_no_unkeyed_bits_are_no_errors() -> None:
    empty = np.zeros(0, np.uint8)
    assert _disclose(empty, empty)[0] == 0


@pytest.mark.parametrize(("other", "reason"), [
    (np.array([0, 1], np.uint8), "peer disclosed 2 key-class bits, expected 3"),
    (np.array([0, 2, 1], np.uint8), "peer disclosed key-class bits that are not 0 or 1"),
    (np.array([0, -1, 1], np.int8), "peer disclosed key-class bits that are not 0 or 1"),
])
def test_unkeyed_bits_of_another_length_or_not_bits_are_refused(other, reason) -> None:
    with pytest.raises(ProtocolError) as caught:
        _disclose(np.array([0, 1, 1], np.uint8), other)
    assert str(caught.value) == reason


# --- sifting and test, and the round's early stops, against a scripted peer --------------------

FRAME_SLOTS, FRAMES, ANNOUNCED = 4096, 2, 3000
INTENSITIES_B = (0.4, 0.2, 0.1, 0.0)  # Bob with four intensities, Alice with three: the
SIFT_CFG = RoundConfig(INTENSITIES, INTENSITIES_B, FRAME_SLOTS, decoy_method="lp")  # roles differ


def _view(rng: np.random.Generator, k: int, n: int = ANNOUNCED) -> LocalView:
    sent = np.stack([rng.multinomial(FRAME_SLOTS, np.full(2 * k, 1 / (2 * k)))
                     for _ in range(FRAMES)])
    return LocalView(rng.integers(0, 2, n).astype(np.uint8), rng.integers(0, 2, n).astype(np.uint8),
                     rng.integers(0, k, n).astype(np.uint8), sent)


def _sift_round(seed: int = 5, n: int = ANNOUNCED):
    """A random announcement and the two users' random views of it (sifting needs no physics)."""
    rng = np.random.default_rng(seed)
    slots = np.sort(rng.choice(FRAMES * FRAME_SLOTS, n, replace=False)).astype(np.int64)
    ann = Announcement(ROUND, 0, FRAMES * FRAME_SLOTS, slots,
                       rng.integers(1, 3, n).astype(np.uint8))
    return ann, _view(rng, 3, n), _view(rng, 4, n)


def _info(ann: Announcement, view: LocalView, **changes) -> SiftingInfo:
    fields = dict(round_id=ROUND, basis=view.basis, intensity=view.intensity,
                  sent_counts=view.sent_counts, announcement_digest=announcement_digest(ann))
    fields.update(changes)
    return SiftingInfo(**fields)


def _x_bits(sifted) -> XBasisBits:
    return XBasisBits(ROUND, sifted.bits[sifted.basis == BASIS_X])


@pytest.mark.parametrize("role", ["alice", "bob"])
def test_sifting_exchanges_bases_and_x_bits_and_counts_every_class(role) -> None:
    ann, va, vb = _sift_round()
    own, other = (va, vb) if role == "alice" else (vb, va)
    ours = sift(role, ann.bell, own.basis, own.bit, own.intensity, other.basis, other.intensity,
                n_intensities=(3, 4), slots=ann.slots)
    theirs = sift("bob" if role == "alice" else "alice", ann.bell, other.basis, other.bit,
                  other.intensity, own.basis, own.intensity, n_intensities=(3, 4),
                  slots=ann.slots)
    peer, stage = ScriptedPeer(_info(ann, other), _x_bits(theirs)), RecordingObserver()
    with stage.stage("sift") as st:
        sifted, obs = _sift_and_test(role, ann, own, SIFT_CFG, peer, st)
    assert np.array_equal(sifted.bits, ours.bits) and np.array_equal(sifted.basis, ours.basis)
    assert np.array_equal(sifted.slot, ann.slots[ours.index])  # the relay's slot numbers
    # what the peer is sent: own bases, intensities and sent counts, the digest; own X bits
    info, x_bits = peer.sent
    assert (type(info), info.round_id, info.announcement_digest) == (
        SiftingInfo, ROUND, announcement_digest(ann))
    for name, dtype in (("basis", np.uint8), ("intensity", np.uint8), ("sent_counts", np.int64)):
        assert getattr(info, name).dtype == dtype
        assert np.array_equal(getattr(info, name), getattr(own, name))
    x = ours.basis == BASIS_X
    assert (type(x_bits), x_bits.round_id) == (XBasisBits, ROUND)
    assert np.array_equal(x_bits.bits, ours.bits[x])
    # the public counts: Alice's intensities first, whoever computes them
    peer_bits = np.zeros(len(ours), np.uint8)
    peer_bits[x] = theirs.bits[x]
    errors = class_errors(ours, peer_bits, where=x)
    assert obs.pairs.shape[:2] == (3, 4)
    assert np.array_equal(obs.pairs, sent_pairs(va.sent_counts, vb.sent_counts, FRAME_SLOTS))
    assert np.array_equal(obs.detections, ours.detections)
    assert np.array_equal(obs.errors, errors)
    assert (obs.intensities_a, obs.intensities_b, obs.key_intensity) == (
        INTENSITIES, INTENSITIES_B, (0, 0))
    assert stage.stages[0].attributes == dict(
        announced=ANNOUNCED, sifted=len(ours), key_bits_raw=int(ours.key_mask().sum()),
        x_bits=int(x.sum()), qber_x=float(errors[:, :, 1].sum() / x.sum()))
    assert 0 < stage.stages[0].attributes["qber_x"] < 1


def test_without_x_bits_the_x_error_rate_is_unknown_not_zero() -> None:
    ann, va, vb = _sift_round()
    va, vb = (dataclasses.replace(v, basis=np.zeros(ANNOUNCED, np.uint8)) for v in (va, vb))
    peer, observer = ScriptedPeer(_info(ann, vb), XBasisBits(ROUND, np.zeros(0, np.uint8))), \
        RecordingObserver()
    with observer.stage("sift") as st:
        _sift_and_test("alice", ann, va, SIFT_CFG, peer, st)
    assert observer.stages[0].attributes["x_bits"] == 0
    assert observer.stages[0].attributes["qber_x"] is None


def _sift_refused(role: str, reason: str, info_changes: dict | None = None,
                  x_bits: np.ndarray | None = None, own_changes: dict | None = None,
                  cfg: RoundConfig = SIFT_CFG) -> None:
    ann, va, vb = _sift_round()
    own, other = (va, vb) if role == "alice" else (vb, va)
    own = dataclasses.replace(own, **(own_changes or {}))
    theirs = sift("bob" if role == "alice" else "alice", ann.bell, other.basis, other.bit,
                  other.intensity, own.basis, own.intensity, n_intensities=(3, 4))
    bits = _x_bits(theirs) if x_bits is None else XBasisBits(ROUND, x_bits)
    peer = ScriptedPeer(_info(ann, other, **(info_changes or {})), bits)
    with pytest.raises(ProtocolError) as caught:
        _sift_and_test(role, ann, own, cfg, peer, _NoStage())
    assert str(caught.value) == reason


class _NoStage:
    def set(self, **attributes) -> None:
        pass


def test_sifting_refuses_a_peer_that_sifts_another_announcement() -> None:
    _sift_refused("alice", "the users received different announcements from the relay",
                  dict(announcement_digest=bytes(32)))


@pytest.mark.parametrize("name", ["basis", "intensity"])
def test_sifting_refuses_a_peer_whose_settings_cover_other_slots(name) -> None:
    ann, _, vb = _sift_round()
    short = dict(basis=vb.basis[:-1]) if name == "basis" else dict(intensity=vb.intensity[:-1])
    size = ANNOUNCED - 1 if name == "basis" else ANNOUNCED
    _sift_refused("alice", f"peer's sifting info covers {size} slots, expected {ANNOUNCED}",
                  short)


@pytest.mark.parametrize(("role", "shape"), [("alice", (FRAMES, 6)), ("alice", (FRAMES + 1, 8)),
                                             ("bob", (FRAMES, 8))])
def test_sifting_refuses_sent_counts_of_another_shape(role, shape) -> None:
    # Bob has four intensities (8 classes), Alice three (6): each checks the other's
    _sift_refused(role, f"peer's sent counts have shape {shape}, expected ({FRAMES} frames, "
                        f"{8 if role == 'alice' else 6} classes)",
                  dict(sent_counts=np.full(shape, FRAME_SLOTS // shape[1], np.int64)))


def test_sifting_refuses_intensity_indices_outside_the_agreed_plan() -> None:
    ann, _, vb = _sift_round()
    bad = vb.intensity.copy()
    bad[0] = 4
    with pytest.raises(ProtocolError, match="^sifting: intensity index out of range"):
        _sift_and_test("alice", ann, _sift_round()[1], SIFT_CFG,
                       ScriptedPeer(_info(ann, vb, intensity=bad)), _NoStage())


def test_sifting_refuses_x_bits_of_another_count() -> None:
    ann, va, vb = _sift_round()
    x = int((sift("alice", ann.bell, va.basis, va.bit, va.intensity, vb.basis, vb.intensity,
                  n_intensities=(3, 4)).basis == BASIS_X).sum())
    _sift_refused("alice", f"peer disclosed {x - 1} X bits, expected {x}",
                  x_bits=np.zeros(x - 1, np.uint8))


def test_sifting_refuses_sent_counts_that_do_not_add_up_to_the_frames() -> None:
    ann, _, vb = _sift_round()
    counts = vb.sent_counts.copy()
    counts[0, 0] += 1
    _sift_refused("alice", "sent counts: each block's sent counts must sum to its number of "
                           "slots", dict(sent_counts=counts))


def test_sifting_refuses_own_sent_counts_that_do_not_fit_the_round_config() -> None:
    # Alice's own counts of four intensities where the config gives her three
    ann, va, vb = _sift_round()
    own = np.full((FRAMES, 8), FRAME_SLOTS // 8, np.int64)
    with pytest.raises(ProtocolError) as caught:
        _sift_and_test("alice", ann, dataclasses.replace(va, sent_counts=own), SIFT_CFG,
                       ScriptedPeer(_info(ann, vb), _x_bits(sift(
                           "bob", ann.bell, vb.basis, vb.bit, vb.intensity, va.basis,
                           va.intensity, n_intensities=(3, 4)))), _NoStage())
    assert str(caught.value) == "sent counts cover (4, 4) intensities, the round config (3, 4)"


def _early(role: str, ann: Announcement, view: LocalView, *incoming,
           cfg: RoundConfig = SIFT_CFG):
    peer = ScriptedPeer(*incoming)
    run = run_alice_round if role == "alice" else run_bob_round
    return run(ann, view, cfg, peer, np.random.default_rng(0), RecordingObserver()), peer


def _sent_kinds(peer: ScriptedPeer) -> list[str]:
    return [type(m).__name__ for m in peer.sent]


@pytest.mark.parametrize("role", ["alice", "bob"])
def test_an_announcement_the_round_does_not_allow_stops_it_and_tells_the_peer(role) -> None:
    ann, va, vb = _sift_round()
    bell = ann.bell.copy()
    bell[0] = 3
    out, peer = _early(role, dataclasses.replace(ann, bell=bell), va if role == "alice" else vb)
    with pytest.raises(ValueError) as refused:
        check_announcement(dataclasses.replace(ann, bell=bell), ROUND, 0, FRAMES * FRAME_SLOTS)
    assert out.abort_reason == f"announcement refused: {refused.value}"
    assert (out.round_id, out.key, out.key_id, out.pending, out.observations) == (
        ROUND, None, None, False, None)
    assert out.report == {"timings_s": {}} and out.aborted and not out.committed
    assert [(type(m), m.round_id, m.reason) for m in peer.sent] == [
        (RoundAbort, ROUND, out.abort_reason)]


def test_a_local_view_of_other_slots_stops_the_round_and_tells_the_peer() -> None:
    ann, va, _ = _sift_round()
    short = dataclasses.replace(va, basis=va.basis[:-1])
    out, peer = _early("alice", ann, short)
    reason = f"local view covers ({ANNOUNCED - 1},) slots, the announcement ({ANNOUNCED},)"
    assert out.abort_reason == reason
    assert [(type(m), m.reason) for m in peer.sent] == [(RoundAbort, reason)]


def test_a_peers_abort_while_sifting_ends_the_round_without_answering() -> None:
    ann, va, _ = _sift_round()
    out, peer = _early("alice", ann, va, RoundAbort(ROUND, "relay lied"))
    assert out.abort_reason == "PeerAborted: relay lied" and out.key is None
    assert _sent_kinds(peer) == ["SiftingInfo"]
    assert "sifted" not in out.report and "sift" in out.report["timings_s"]


def test_a_protocol_error_while_sifting_ends_the_round_and_tells_the_peer() -> None:
    ann, va, vb = _sift_round()
    out, peer = _early("bob", ann, vb, _info(ann, va, announcement_digest=bytes(32)))
    reason = "ProtocolError: the users received different announcements from the relay"
    assert out.abort_reason == reason and out.observations is None
    assert _sent_kinds(peer) == ["SiftingInfo", "RoundAbort"] and peer.sent[1].reason == reason


def _peer_messages(ann: Announcement, role: str, own: LocalView, other: LocalView):
    peer_role = "bob" if role == "alice" else "alice"
    theirs = sift(peer_role, ann.bell, other.basis, other.bit, other.intensity, own.basis,
                  own.intensity, n_intensities=(3, 4))
    return theirs, _info(ann, other), _x_bits(theirs)


def test_a_round_without_key_class_detections_stops_after_sifting_silently() -> None:
    ann, va, vb = _sift_round()
    va = dataclasses.replace(va, intensity=np.ones(ANNOUNCED, np.uint8))  # never Alice's μ
    _, info, x_bits = _peer_messages(ann, "alice", va, vb)
    out, peer = _early("alice", ann, va, info, x_bits)
    assert out.abort_reason == "too few counts: no key-class detections"
    assert _sent_kinds(peer) == ["SiftingInfo", "XBasisBits"]  # the peer sees the same counts
    assert out.observations is not None and out.observations.detections[0, 0].sum() == 0
    assert out.report["sifted"] > 0 and out.report["key_bits_raw"] == 0


@pytest.mark.parametrize("role", ["alice", "bob"])
@pytest.mark.parametrize("disclose", [False, True])
def test_a_round_the_precheck_stops_discloses_its_key_bits_only_when_configured(role,
                                                                                disclose) -> None:
    # random settings: QBER_X is about 1/2, so the pre-check finds no key
    ann, va, vb = _sift_round()
    own, other = (va, vb) if role == "alice" else (vb, va)
    theirs, info, x_bits = _peer_messages(ann, role, own, other)
    ours = sift(role, ann.bell, own.basis, own.bit, own.intensity, other.basis, other.intensity,
                n_intensities=(3, 4))
    key, peer_key = ours.bits[ours.key_mask()], theirs.bits[theirs.key_mask()]
    cfg = dataclasses.replace(SIFT_CFG, disclose_unkeyed=disclose)
    out, peer = _early(role, ann, own, info, x_bits, UnkeyedBits(ROUND, peer_key), cfg=cfg)
    assert out.aborted and out.abort_reason == out.report["abort_reason"]
    assert out.report["phase"] == "precheck"
    obs = out.observations
    x = ours.basis == BASIS_X
    peer_bits = np.zeros(len(ours), np.uint8)
    peer_bits[x] = theirs.bits[x]
    sifted_errors = class_errors(ours, peer_bits, where=x)
    rest = np.ones(obs.errors.shape, bool)
    rest[0, 0, 0] = False
    assert np.array_equal(obs.errors[rest], sifted_errors[rest])
    if disclose:
        errors = int((key != peer_key).sum())
        assert errors > 0 and obs.errors[0, 0, 0].sum() == pytest.approx(errors)
        assert (out.report["disclosed_key_bits"], out.report["disclosed_z_errors"]) == (
            key.size, errors)
        assert _sent_kinds(peer) == ["SiftingInfo", "XBasisBits", "UnkeyedBits"]
    else:
        assert np.array_equal(obs.errors, sifted_errors)
        assert "disclosed_z_errors" not in out.report
        assert _sent_kinds(peer) == ["SiftingInfo", "XBasisBits"]


LONG_ID = f"r{ROUND}-" + "a" * 70  # a peer's key ID is quoted to 64 characters, no more


def test_alice_quotes_a_long_key_id_bob_confirmed_to_64_characters() -> None:
    custody, peer = RecordedCustody("alice"), ScriptedPeer(Confirm(ROUND, LONG_ID))
    _pending(custody)
    reason = f"Bob confirmed {LONG_ID[:64]!r}, not {KEY_ID}"
    _raises_abort(_alice_commit, _announcement(), KEY_ID, peer, custody, reason=reason,
                  notify=True)
    _discarded(custody, KEY_ID, reason)


def test_bob_quotes_a_long_key_id_alice_committed_to_64_characters() -> None:
    custody, peer = RecordedCustody("bob"), ScriptedPeer(Committed(ROUND, LONG_ID))
    _pending(custody)
    reason = f"Alice committed {LONG_ID[:64]!r}, not {KEY_ID}"
    _raises_abort(_bob_commit, _announcement(), KEY_ID, peer, custody, reason=reason,
                  notify=False)
    _discarded(custody, KEY_ID, reason)


# --- a whole small round over the in-memory wire ------------------------------------------------


class MessageTap:
    """A ``wire`` hook that keeps every message with its direction (frames pass unchanged)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def __call__(self, direction: str, frame: bytes) -> bytes:
        with self._lock:
            self.messages.append((direction, open_frame(frame)))
        return frame

    def kinds(self, direction: str) -> list[str]:
        return [type(m).__name__ for d, m in self.messages if d == direction]

    def of(self, kind: type) -> list:
        return [m for _, m in self.messages if isinstance(m, kind)]

    @property
    def leakage(self) -> int:
        return sum(c[1] for _, m in self.messages if (c := disclosed(m)) is not None)


@functools.cache
def _small_round():
    """2 × 1 km, 5·10⁷ slots: the metro users' settings, a finite key of a few thousand bits in
    about a second (emulated once per test process)."""
    users = metro_users()
    link = Link(Source(PLAN), Source(PLAN, bit_flip_probability=0.01), Fiber(1), Fiber(1),
                relay=RelayOptics.uniform(0.8, 1e-7))
    frame = users[0].frame_size
    emulated = emulate_round(link, *users, round_id=ROUND, start_slot=0,
                             stop_slot=(50_000_000 // frame) * frame, seed=11)
    return round_config(*users), emulated


def _small_key_round(cfg: RoundConfig | None = None, prior: float = 0.01):
    base, em = _small_round()
    tap = MessageTap()
    tap.keys = shared_link_keys(1 << 16, np.random.default_rng(0))  # the pools, kept to check
    # a side that fails leaves the other waiting for its next message: 10 s, not a minute
    result = run_key_round(em.announcement, em.alice, em.bob, cfg or base, 3, keys=tap.keys,
                           wire=tap, qber_prior=prior, timeout_s=10.0)
    return result, tap


def _honest_small_round():
    # not cached: each test runs its own round, so that mutmut knows which tests run which code
    return _small_key_round()


def _public_counts(cfg: RoundConfig):
    """(observations without the key class's Z errors, Z errors, key bits) from the two users'
    views, by sifting both sides and comparing their bits."""
    _, em = _small_round()
    ann, va, vb = em.announcement, em.alice, em.bob
    sa = sift("alice", ann.bell, va.basis, va.bit, va.intensity, vb.basis, vb.intensity)
    sb = sift("bob", ann.bell, vb.basis, vb.bit, vb.intensity, va.basis, va.intensity)
    x = sa.basis == BASIS_X
    errors = class_errors(sa, sb.bits, where=x)
    key_a, key_b = sa.bits[sa.key_mask()], sb.bits[sb.key_mask()]
    obs = DecoyObservations(cfg.intensities_a, cfg.intensities_b,
                            sent_pairs(va.sent_counts, vb.sent_counts, cfg.frame_slots),
                            sa.detections, errors)
    return obs, int((key_a != key_b).sum()), key_a


def test_a_small_round_gives_both_users_one_key_of_the_finite_key_length_its_leakage_allows():
    result, tap = _honest_small_round()
    cfg = _small_round()[0]
    a, b = result.alice, result.bob
    assert a.abort_reason is None and b.abort_reason is None
    assert a.committed and b.committed and a.pending is False and b.pending is False
    assert np.array_equal(a.key, b.key) and a.key_id == b.key_id and a.round_id == ROUND
    obs, z_errors, key_a = _public_counts(cfg)
    det = obs.detections[0, 0, 0]
    err = np.array(obs.errors)
    err[0, 0, 0] = z_errors * det / det.sum()
    final_obs = DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs,
                                  obs.detections, err)
    est = estimate(final_obs, tap.leakage, cfg.mode, cfg.security, cfg.decoy_method)
    assert a.key.size == int(est.secure_length) > 1000
    for outcome in (a, b):
        assert outcome.report["leakage_bits"] == tap.leakage
        assert outcome.report["corrected_bits"] == z_errors > 0
        assert np.array_equal(outcome.observations.errors, err)
        assert np.array_equal(outcome.observations.detections, obs.detections)
    # the key is Alice's sifted key, hashed with the seed she sent
    (amplify,) = tap.of(Amplify)
    length = a.key.size
    assert np.array_equal(a.key, toeplitz_hash(key_a, seed_bits(amplify.seed, key_a.size, length),
                                               length))
    # each side paid the same key bits back into the same direction's pool: still in step
    alice_keys, bob_keys = tap.keys
    for mine, theirs in ((alice_keys.outgoing, bob_keys.incoming),
                         (alice_keys.incoming, bob_keys.outgoing)):
        assert mine.available_bytes == theirs.available_bytes
        assert mine.take(mine.available_bytes) == theirs.take(theirs.available_bytes)


def test_a_small_round_says_what_each_side_must_say_in_order():
    result, tap = _honest_small_round()
    trips = result.bob.report["round_trips"]
    assert trips > 1
    assert tap.kinds("alice->bob") == (["SiftingInfo", "XBasisBits"] + ["ReconcileReply"] * trips
                                       + ["VerifyResult", "Amplify", "Committed"])
    assert tap.kinds("bob->alice") == (["SiftingInfo", "XBasisBits", "ReconcileStart"]
                                       + ["ReconcileRequest"] * trips + ["VerifyRequest",
                                                                         "Confirm"])
    assert all(m.round_id == ROUND for _, m in tap.messages)
    cfg = _small_round()[0]
    key_bits = result.alice.report["key_bits_raw"]
    (start,) = tap.of(ReconcileStart)
    assert (start.method, start.key_bits) == ("cascade", key_bits)
    (request,) = tap.of(VerifyRequest)
    tag_bits = tag_bits_for(key_bits, cfg.security.epsilon_correctness)
    assert (request.tag_bits, request.corrected_bits) == (
        tag_bits, result.bob.report["corrected_bits"])
    assert tap.of(VerifyResult)[0].matched is True
    assert tap.of(Confirm)[0].key_id == tap.of(Committed)[0].key_id == result.alice.key_id
    replies = sum(m.bits.size for m in tap.of(ReconcileReply))
    for outcome in (result.alice, result.bob):
        r = outcome.report
        assert (r["reconciler"], r["round_trips"], r["matched"], r["tag_bits"]) == (
            "cascade", trips, True, tag_bits)
        assert r["disclosed_bits"] == replies  # the stage's count, before the tag
        assert r["leakage_bits"] == replies + tag_bits
        assert (r["key_status"], r["key_id"], r["output_bits"], r["input_bits"]) == (
            "committed", outcome.key_id, outcome.key.size, key_bits)
        assert r["auth_key_bits_repaid"] > 0 and r["auth_key_bits_replenished"] > 0
        assert r["net_secure_bits"] == outcome.key.size - r["auth_key_bits_replenished"]
        assert list(r["timings_s"]) == ["sift", "estimate", "reconcile", "verify", "amplify",
                                        "commit"]
    assert result.bob.report["corrected_bits"] == result.alice.report["corrected_bits"]


class _MissingCascade:
    """Cascade whose Bob ends with one bit of his key wrong (an error it missed)."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def bob(self, *args, **kwargs):
        result = self.real.bob(*args, **kwargs)
        key = result.corrected_key.copy()
        key[0] ^= 1
        return dataclasses.replace(result, corrected_key=key)


def test_a_missed_error_fails_verification_on_both_sides_and_nothing_is_kept():
    cfg = _small_round()[0]
    result, tap = _small_key_round(dataclasses.replace(cfg, reconciler=_MissingCascade(
        cfg.reconciler)))
    for outcome in (result.alice, result.bob):
        assert outcome.abort_reason == "verification failed: reconciled keys differ"
        assert outcome.key is None and outcome.report["matched"] is False
    # no final estimate: Bob's report keeps his reconciliation's own figures
    _, z_errors, _ = _public_counts(cfg)
    assert result.bob.report["corrected_bits"] == z_errors > 0
    assert result.bob.report["passes"] > 1  # Cascade's own figure
    assert tap.of(VerifyResult)[0].matched is False
    assert tap.of(RoundAbort) == [] and tap.of(Amplify) == []  # each decides alone


class _LyingBob(_MissingCascade):
    """Cascade whose Bob reports ``corrected`` corrected bits, whatever he corrected."""

    def __init__(self, real, corrected) -> None:
        super().__init__(real)
        self.corrected = corrected

    def bob(self, *args, **kwargs):
        return dataclasses.replace(self.real.bob(*args, **kwargs), corrected_bits=self.corrected)


@pytest.mark.parametrize("corrected", [-1, 10**9])
def test_alice_refuses_a_corrected_count_no_key_can_have_and_tells_bob(corrected):
    cfg = _small_round()[0]
    result, tap = _small_key_round(dataclasses.replace(cfg, reconciler=_LyingBob(
        cfg.reconciler, corrected)))
    key_bits = result.alice.report["key_bits_raw"]
    reason = f"ProtocolError: peer reports {corrected!r} corrected bits of a {key_bits}-bit key"
    assert result.alice.abort_reason == reason
    assert [(d, m.reason) for d, m in tap.messages if isinstance(m, RoundAbort)] == [
        ("alice->bob", reason)]
    assert result.alice.key is None and result.bob.key is None


def _alice_reconciles(key: np.ndarray, *requests, corrected: int = 0, tag_key: np.ndarray = None,
                      cfg: RoundConfig = SIFT_CFG):
    """Alice's reconciliation against a Bob who asks ``requests`` and then the verification of
    ``tag_key`` (her own key unless given)."""
    plan = CASCADE.plan(key.size, 0.02, np.random.default_rng(4))
    start = ReconcileStart(ROUND, plan.method, plan.key_bits, plan.qber_estimate, str(plan.seed),
                           np.asarray(plan.parameters, np.int64))
    tag_bits = tag_bits_for(key.size, 1e-12)
    hash_key = draw_hash_key(np.random.default_rng(5), tag_bits)
    tag = verification_tag(key if tag_key is None else tag_key, hash_key, tag_bits)
    peer, observer = ScriptedPeer(start, *requests, VerifyRequest(
        ROUND, hash_key, tag, tag_bits, corrected)), RecordingObserver()
    return _alice_reconcile(_announcement(), key, cfg, peer, observer), peer, observer


KEY = np.random.default_rng(8).integers(0, 2, 2000, dtype=np.uint8)


@pytest.mark.parametrize("corrected", [0, 17, KEY.size])
def test_alice_answers_until_the_verification_and_takes_bobs_corrected_count(corrected):
    rows = np.array([[0], [0], [64]], np.int32)  # pass 0, the parity of bits [0, 64)
    (key, got, disclosed_bits), peer, observer = _alice_reconciles(
        KEY, ReconcileRequest(ROUND, rows, np.zeros(0, np.uint8)), corrected=corrected)
    tag_bits = tag_bits_for(KEY.size, 1e-12)
    assert key is KEY and got == corrected and type(got) is int
    reply, result = peer.sent
    assert (type(reply), reply.round_id, reply.bits.tolist()) == (
        ReconcileReply, ROUND, [int(KEY[:64].sum() % 2)])
    assert (type(result), result.round_id, result.matched) == (VerifyResult, ROUND, True)
    assert disclosed_bits == 1 + tag_bits
    assert _stages(observer) == [
        ("reconcile", dict(reconciler="cascade", disclosed_bits=1, round_trips=1)),
        ("verify", dict(matched=True, tag_bits=tag_bits))]


@pytest.mark.parametrize("corrected", [-1, KEY.size + 1, True, 3.0])
def test_alice_refuses_a_corrected_count_that_is_not_a_count_of_her_key(corrected):
    with pytest.raises(ProtocolError) as caught:
        _alice_reconciles(KEY, corrected=corrected)
    assert str(caught.value) == (f"peer reports {corrected!r} corrected bits of a "
                                 f"{KEY.size}-bit key")


def test_alice_tells_bob_a_tag_of_another_key_did_not_match_and_stops():
    other = KEY.copy()
    other[5] ^= 1
    with pytest.raises(_Abort) as caught:
        _alice_reconciles(KEY, tag_key=other)
    assert (caught.value.reason, caught.value.notify_peer) == (
        "verification failed: reconciled keys differ", False)


def test_alice_refuses_a_malformed_reconciliation_request():
    bad = ReconcileRequest(ROUND, np.zeros((3, 1), np.int64), np.zeros(0, np.uint8))
    with pytest.raises(ProtocolError) as caught:
        _alice_reconciles(KEY, bad)
    assert str(caught.value) == ("bad reconciliation request: request rows must be 2-D int32, "
                                 "got 2-D int64")



def test_the_observations_name_the_configured_key_class() -> None:
    ann, va, vb = _sift_round()
    cfg = dataclasses.replace(SIFT_CFG, key_intensity=(0, 1))
    theirs = sift("bob", ann.bell, vb.basis, vb.bit, vb.intensity, va.basis, va.intensity,
                  n_intensities=(3, 4))
    peer = ScriptedPeer(_info(ann, vb), _x_bits(theirs))
    sifted, obs = _sift_and_test("alice", ann, va, cfg, peer, _NoStage())
    assert obs.key_intensity == (0, 1)


@pytest.mark.parametrize("role", ["alice", "bob"])
def test_a_round_run_without_a_prior_plans_with_two_percent(role) -> None:
    ann, va, vb = _sift_round()
    own, other = (va, vb) if role == "alice" else (vb, va)
    _, info, x_bits = _peer_messages(ann, role, own, other)
    run = run_alice_round if role == "alice" else run_bob_round
    out = run(ann, own, SIFT_CFG, ScriptedPeer(info, x_bits), np.random.default_rng(0),
              RecordingObserver())
    n_key = out.report["key_bits_raw"]
    assert out.report["predicted_leakage_bits"] == predicted_leakage(
        n_key, 0.02, SIFT_CFG.ec_efficiency_prediction)


def test_a_key_alice_holds_for_a_round_that_then_ends_is_discarded() -> None:
    # e.g. her Amplify could not be sent: the key of this round must not stay pending
    ann, va, _ = _sift_round()
    custody = RecordedCustody("alice")
    _pending(custody)
    out = run_alice_round(ann, va, SIFT_CFG, ScriptedPeer(RoundAbort(ROUND, "gone")),
                          np.random.default_rng(0), RecordingObserver(), custody=custody)
    _discarded(custody, KEY_ID, out.abort_reason)


def test_a_key_held_for_another_round_is_left_to_its_own_settlement() -> None:
    ann, va, vb = _sift_round()
    for role, view in (("alice", va), ("bob", vb)):
        custody = RecordedCustody(role)
        key = PendingKey(ROUND - 1, "r6-k", np.ones(8, np.uint8), Repayment())
        custody.hold(key)
        run = run_alice_round if role == "alice" else run_bob_round
        run(ann, view, SIFT_CFG, ScriptedPeer(RoundAbort(ROUND, "gone")),
            np.random.default_rng(0), RecordingObserver(), custody=custody)
        assert custody.pending == key and custody.settled == []


def test_both_users_deliver_the_small_rounds_key_through_their_own_custody() -> None:
    cfg, em = _small_round()
    keys = shared_link_keys(1 << 16, np.random.default_rng(0))
    ab, ba = queue.Queue(), queue.Queue()
    peers = {"alice": QueuePeer(wegman_carter_link(keys[0], "alice", "bob"), ab, ba, 10.0),
             "bob": QueuePeer(wegman_carter_link(keys[1], "bob", "alice"), ba, ab, 10.0)}
    stores: dict = {"alice": {}, "bob": {}}
    outcomes: dict = {}

    def side(role, run, view):
        custody = KeyCustody(role, peers[role].link,
                             lambda key_id, _r, bits: stores[role].__setitem__(key_id, bits))
        outcomes[role] = run(em.announcement, view, cfg, peers[role], np.random.default_rng(
            1 if role == "alice" else 2), RecordingObserver(), 0.01, custody)

    threads = [threading.Thread(target=side, args=("alice", run_alice_round, em.alice)),
               threading.Thread(target=side, args=("bob", run_bob_round, em.bob))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = outcomes["alice"], outcomes["bob"]
    assert a.committed and b.committed
    assert list(stores["alice"]) == list(stores["bob"]) == [a.key_id]
    assert np.array_equal(stores["alice"][a.key_id], stores["bob"][a.key_id])
    assert stores["bob"][a.key_id].size == b.report["net_secure_bits"] > 0


def test_a_report_sums_each_stages_time_to_the_microsecond() -> None:
    observer = RecordingObserver()
    observer.stages += [_RecordedStage("sift", {"a": 1}, 0.1234567),
                        _RecordedStage("estimate", {"b": 2}, 0.5),
                        _RecordedStage("sift", {"a": 3}, 0.25)]
    # the later stage's attributes win; the times of stages of one name add up
    assert observer.report() == {"a": 3, "b": 2,
                                 "timings_s": {"sift": 0.373457, "estimate": 0.5}}


def test_a_round_config_refuses_a_decoy_method_its_layout_cannot_use() -> None:
    four = (0.4, 0.2, 0.1, 0.0)
    with pytest.raises(ValueError) as caught:
        RoundConfig(four, four, 1 << 20, decoy_method="analytic")
    assert str(caught.value) == f"decoy_method {decoy_method_problem('analytic', (4, 4))}"


class _StagesOnly:
    """An observer with stages but no report (the nodes' spans)."""

    @contextlib.contextmanager
    def stage(self, name):
        yield _NoStage()


def test_a_round_observed_without_a_report_reports_nothing() -> None:
    ann, va, _ = _sift_round()
    out = run_alice_round(ann, va, SIFT_CFG, ScriptedPeer(RoundAbort(ROUND, "gone")),
                          np.random.default_rng(0), _StagesOnly())
    assert out.report == {} and out.abort_reason == "PeerAborted: gone"


class _GonePeer(ScriptedPeer):
    """A peer whose channel is gone: every send fails (an exhausted authentication pool)."""

    def send(self, message) -> None:
        raise ProtocolError("authentication pool exhausted")


def test_a_round_ends_with_its_reason_even_when_its_abort_cannot_be_sent() -> None:
    ann, va, _ = _sift_round()
    short = dataclasses.replace(va, basis=va.basis[:-1])
    out = run_alice_round(ann, short, SIFT_CFG, _GonePeer(), np.random.default_rng(0),
                          RecordingObserver())
    assert out.abort_reason.startswith("local view covers") and out.key is None


class _AliceOf(_MissingCascade):
    """Cascade whose Alice session is ``session(real session)``."""

    def __init__(self, real, session) -> None:
        super().__init__(real)
        self.session = session

    def alice(self, key, plan):
        return self.session(self.real.alice(key, plan))


class _Recording:
    """Keeps each request; answers Cascade's part of it (a method that also takes Bob's bits,
    as ``tests/classical/test_rounds_leakage.py``'s ``DisclosingCascade``)."""

    def __init__(self, session) -> None:
        self.session, self.requests = session, []

    def answer(self, request):
        self.requests.append(request)
        return self.session.answer(dataclasses.replace(request, bits=np.zeros(0, np.uint8)))


def test_alice_hands_bobs_disclosed_bits_to_her_method_and_charges_them():
    sessions: list[_Recording] = []

    def recording(session):
        sessions.append(_Recording(session))
        return sessions[-1]

    cfg = dataclasses.replace(SIFT_CFG, reconciler=_AliceOf(CASCADE, recording))
    rows = np.array([[0], [0], [64]], np.int32)
    bob_bits = np.array([1, 0, 1], np.uint8)
    (_, _, disclosed_bits), _, observer = _alice_reconciles(
        KEY, ReconcileRequest(ROUND, rows, bob_bits), cfg=cfg)
    (request,) = sessions[0].requests
    assert request.rows.tolist() == rows.tolist() and request.bits.tolist() == [1, 0, 1]
    assert observer.stages[0].attributes["disclosed_bits"] == 3 + 1  # Bob's bits and the reply


def test_alice_refuses_a_plan_her_method_cannot_follow():
    def refusing(session):
        raise ValueError("no such layout")

    cfg = dataclasses.replace(SIFT_CFG, reconciler=_AliceOf(CASCADE, refusing))
    with pytest.raises(ProtocolError) as caught:
        _alice_reconciles(KEY, cfg=cfg)
    assert str(caught.value) == "bad reconciliation plan: no such layout"
