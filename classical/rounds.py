"""One key round between Alice and Bob, after Charles's announcement: the protocol logic.

Transport-agnostic (docs/architecture.md §7): each side talks to a ``Peer`` (send; receive one of
the expected kinds) and reports its stages to an ``Observer``. ``classical.pipeline`` runs both
sides over in-memory queues; ``nodes`` runs them over ZeroMQ with OpenTelemetry spans.

Stages, in order (docs/architecture.md §3): sift → estimate (pre-check with predicted leakage) →
reconcile (``RoundConfig.reconciler``, Cascade by default: Bob drives, Alice answers, and the round,
not the method, counts every disclosed bit in a ``LeakageLedger``) → verify (Bob's ε_cor-universal
tag, Alice compares) → estimate (final, with the bits actually disclosed) → amplify (Alice's
Toeplitz seed). The final estimate's stage also carries every ε of a finite-key round, flattened to
scalars (:func:`epsilon_attributes`), so they reach the round report (rounds.jsonl) and the span.

Both sides compute the estimates from identical public data (announcement, both users' bases and
intensities, both users' X-basis bits, the sent-pulse counts, the disclosed bits), so they reach
the same decision without a message; a side that fails for a local reason sends ``RoundAbort``.
Keys are the Z-basis signal-signal class (``RoundConfig.key_intensity``, (0, 0) in both standard
layouts) with ψ⁺ and ψ⁻ reconciled as one block (the estimate merges the two Bell states
accordingly, ``classical.estimation``).

Any number K ≥ 3 of intensities per user: the class counts have one row per intensity of
``RoundConfig.intensities_a``/``intensities_b``. The three-intensity layout (μ, ν, ω in both bases)
works with either decoy method; the four-intensity layout (s in Z only; μ, ν, o for estimation,
``channel.settings.four_intensity_plan``) and any other K need ``decoy_method="joint"`` or
``"lp"``, which ``RoundConfig`` checks when it is built.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from classical.amplification import seed_bits, toeplitz_hash, toeplitz_seed_bytes
from classical.custody import KeyCustody, PendingKey, Settled
from classical.estimation import (
    DEFAULT_DECOY_METHOD,
    DEFAULT_EC_INEFFICIENCY,
    Abort,
    DecoyObservations,
    Estimate,
    SecurityParameters,
    check_intensity_layout,
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
    Message,
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
from classical.reconcilers import default_reconciler
from classical.reconciliation import (
    ReconcilePlan,
    Reconciler,
    Request,
    check_reply,
    check_request,
)
from classical.secure import Repayment
from classical.sifting import (
    BASIS_X,
    SiftedData,
    announcement_digest,
    check_announcement,
    class_errors,
    sent_pairs,
    sift,
)
from classical.verification import draw_hash_key, tag_bits_for, verification_tag, verify

M = TypeVar("M", bound=Message)
Role = Literal["alice", "bob"]


class PeerAborted(Exception):
    """The peer sent ``RoundAbort``."""


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow here."""


class Peer(Protocol):
    def send(self, message: Message) -> None: ...

    def receive(self, *expected: type[M]) -> M:
        """Next message of one of the ``expected`` kinds; raises ``PeerAborted`` on RoundAbort
        and ``ProtocolError`` on any other kind."""
        ...


class Stage(Protocol):
    def set(self, **attributes: Any) -> None: ...


class Observer(Protocol):
    def stage(self, name: str) -> Any:  # a context manager yielding a Stage
        ...

    def report(self) -> dict[str, Any]:
        """Every stage's attributes merged, plus ``timings_s`` per stage name."""
        ...


@dataclass
class _RecordedStage:
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def set(self, **attributes: Any) -> None:
        self.attributes.update(attributes)


@dataclass
class RecordingObserver:
    """Keeps every stage's attributes and wall time (the round report's source)."""

    stages: list[_RecordedStage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[_RecordedStage]:
        record = _RecordedStage(name)
        self.stages.append(record)
        t0 = time.perf_counter()
        try:
            yield record
        finally:
            record.seconds = time.perf_counter() - t0

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for s in self.stages:
            out.update(s.attributes)
        timings: dict[str, float] = {}
        for s in self.stages:
            timings[s.name] = round(timings.get(s.name, 0.0) + s.seconds, 6)
        out["timings_s"] = timings
        return out


@dataclass(frozen=True)
class RoundConfig:
    """What both users agreed on before the round (public).

    ``intensities_a``/``intensities_b``: mean photon numbers, in the order of the users' settings
    plans (index = the intensity class on the wire); at least three each. ``key_intensity``:
    (Alice's, Bob's) index of the intensity whose Z-basis pairs form the key. ``reconciler``:
    the reconciliation method with its parameters (``classical.reconcilers.get_reconciler``).
    """

    intensities_a: tuple[float, ...]
    intensities_b: tuple[float, ...]
    frame_slots: int
    mode: Literal["finite", "asymptotic"] = "finite"
    security: SecurityParameters = field(default_factory=SecurityParameters)
    reconciler: Reconciler = field(default_factory=default_reconciler)
    ec_efficiency_prediction: float = DEFAULT_EC_INEFFICIENCY
    decoy_method: Literal["analytic", "lp", "joint"] = DEFAULT_DECOY_METHOD
    key_intensity: tuple[int, int] = (0, 0)
    #: when the pre-check finds no key, both users disclose the round's key-class bits
    #: (``UnkeyedBits``) and report the Z errors they show: QBER_Z for the calibration loops
    disclose_unkeyed: bool = False

    def __post_init__(self) -> None:
        # the checks DecoyObservations makes every round, made once here, so that a bad
        # configuration is refused when it is built rather than failing each round
        check_intensity_layout(self.intensities_a, self.intensities_b, self.key_intensity)
        problem = decoy_method_problem(self.decoy_method, self.n_intensities)
        if problem:
            raise ValueError(f"decoy_method {problem}")

    @property
    def n_intensities(self) -> tuple[int, int]:
        return len(self.intensities_a), len(self.intensities_b)


@dataclass(frozen=True)
class LocalView:
    """One user's private knowledge of the round: own settings at the announced slots."""

    basis: np.ndarray
    bit: np.ndarray
    intensity: np.ndarray
    sent_counts: np.ndarray  # (frames, combos) pulses sent per class in each frame


@dataclass(frozen=True)
class RoundOutcome:
    """``key``: the final key (before repayment), None when aborted; ``pending``: Bob holds it
    but has not learnt that Alice committed it (``classical.custody``); the report's
    ``net_secure_bits`` is what was delivered to the key store."""

    round_id: int
    key: np.ndarray | None  # final key bits (uint8), None when aborted
    key_id: str | None
    abort_reason: str | None
    report: dict[str, Any]
    pending: bool = False
    #: the round's public per-class counts once sifting has run (pulse pairs, detections, X
    #: errors; the key class's Z errors once reconciled), for the users' monitors
    #: (``nodes.calibration``); None when the round stopped before sifting
    observations: DecoyObservations | None = None

    @property
    def aborted(self) -> bool:
        return self.key is None

    @property
    def committed(self) -> bool:
        return self.key is not None and not self.pending


class _Abort(Exception):
    def __init__(self, reason: str, notify_peer: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.notify_peer = notify_peer


def _sift_and_test(role: Role, ann: Announcement, local: LocalView, cfg: RoundConfig, peer: Peer,
                   st: Stage) -> tuple[SiftedData, DecoyObservations]:
    digest = announcement_digest(ann)
    peer.send(SiftingInfo(ann.round_id, local.basis.astype(np.uint8),
                          local.intensity.astype(np.uint8), local.sent_counts.astype(np.int64),
                          digest))
    other = peer.receive(SiftingInfo)
    if other.announcement_digest != digest:
        raise ProtocolError("the users received different announcements from the relay")
    n = ann.slots.size
    if other.basis.shape != (n,) or other.intensity.shape != (n,):
        raise ProtocolError(f"peer's sifting info covers {other.basis.size} slots, expected {n}")
    k_peer = cfg.n_intensities[1 if role == "alice" else 0]
    if other.sent_counts.shape != (local.sent_counts.shape[0], 2 * k_peer):
        raise ProtocolError(f"peer's sent counts have shape {other.sent_counts.shape}, expected "
                            f"({local.sent_counts.shape[0]} frames, {2 * k_peer} classes)")
    try:
        sifted = sift(role, ann.bell, local.basis, local.bit, local.intensity, other.basis,
                      other.intensity, n_intensities=cfg.n_intensities, slots=ann.slots)
    except ValueError as e:  # the peer's intensity indices do not fit the agreed plan
        raise ProtocolError(f"sifting: {e}") from None
    x_mask = sifted.basis == BASIS_X
    peer.send(XBasisBits(ann.round_id, sifted.bits[x_mask]))
    peer_x = peer.receive(XBasisBits).bits
    if peer_x.shape != (int(x_mask.sum()),):
        raise ProtocolError(f"peer disclosed {peer_x.size} X bits, expected {int(x_mask.sum())}")
    peer_bits = np.zeros(len(sifted), dtype=np.uint8)
    peer_bits[x_mask] = peer_x
    errors = class_errors(sifted, peer_bits, where=x_mask)
    sent_a, sent_b = ((local.sent_counts, other.sent_counts) if role == "alice"
                      else (other.sent_counts, local.sent_counts))
    try:
        pairs = sent_pairs(sent_a, sent_b, cfg.frame_slots)
    except ValueError as e:  # e.g. the peer's counts do not add up to its frames' slots
        raise ProtocolError(f"sent counts: {e}") from None
    if pairs.shape[:2] != cfg.n_intensities:
        raise ProtocolError(f"sent counts cover {pairs.shape[:2]} intensities, the round "
                            f"config {cfg.n_intensities}")
    obs = DecoyObservations(cfg.intensities_a, cfg.intensities_b, pairs, sifted.detections, errors,
                            cfg.key_intensity)
    key_bits = int(sifted.key_mask(key_intensity=cfg.key_intensity).sum())
    st.set(announced=int(n), sifted=len(sifted), key_bits_raw=key_bits,
           x_bits=int(x_mask.sum()),
           # no X-basis bits: the X error rate is unknown (None), not 0
           qber_x=float(errors[:, :, 1].sum() / x_mask.sum()) if x_mask.any() else None)
    return sifted, obs


def _with_z_errors(obs: DecoyObservations, errors: float) -> DecoyObservations:
    """The observations with the key class's Z errors set to ``errors`` (shared ψ⁺/ψ⁻ in
    proportion to their detections)."""
    err = np.array(obs.errors)
    det = obs.detections
    key = (*obs.key_intensity, 0)
    total = det[key].sum()
    share = det[key] / total if total > 0 else np.array([0.5, 0.5])
    err[key] = np.clip(errors * share, 0.0, det[key])
    return DecoyObservations(obs.intensities_a, obs.intensities_b, obs.pairs, det, err,
                             obs.key_intensity)


def _estimate(obs: DecoyObservations, z_errors: float, leakage: float, cfg: RoundConfig,
              st: Stage) -> Estimate:
    result = estimate(_with_z_errors(obs, z_errors), leakage, cfg.mode, cfg.security,
                      cfg.decoy_method)
    if isinstance(result, Abort):
        st.set(abort_reason=result.reason)
        raise _Abort(result.reason, notify_peer=False)
    st.set(method=result.method, secure_length=int(result.secure_length),
           s11_z_lower=float(result.s11_z_lower), e11_x_upper=float(result.e11_x_upper),
           qber_z=float(result.qber_z), leakage_bits=float(leakage))
    return result


def epsilon_attributes(est: Estimate) -> dict[str, float | int]:
    """Every ε of a finite-key estimate as flat report/span attributes (scalars only: spans take
    nothing else, and ``nodes.tracing`` would turn a dict into a string).

    ``eps_sec`` and ``eps_cor``: the round's totals (``Estimate.epsilon_security`` and
    ``epsilon_correctness``, summed over the blocks that yield key); ``eps_<name>`` for each
    entry of ``Estimate.epsilons`` (``eps_correctness`` is ε_cor per block,
    ``eps_parameter_estimation_<block>`` a block's ε_e); ``chernoff_counts_<block>``: how many
    counts the block bounded, so that ε_e = that · ``eps_parameter_estimation_per_count`` can be
    checked from the report. Empty in the asymptotic mode, which claims no ε.
    """
    if not est.epsilons:
        return {}
    out: dict[str, float | int] = {"eps_sec": float(est.epsilon_security),
                                   "eps_cor": float(est.epsilon_correctness)}
    out.update({f"eps_{name}": float(value) for name, value in est.epsilons.items()})
    out.update({f"chernoff_counts_{b.name}": int(b.bounds.bounded_counts)
                for b in est.per_block if b.kept})
    return out


def _precheck(obs: DecoyObservations, n_key: int, qber_prior: float, cfg: RoundConfig,
              observer: Observer) -> None:
    with observer.stage("estimate") as st:
        leak = predicted_leakage(n_key, qber_prior, cfg.ec_efficiency_prediction)
        st.set(phase="precheck", predicted_leakage_bits=float(leak))
        _estimate(obs, qber_prior * n_key, leak, cfg, st)


def _finish(role: Role, ann: Announcement, obs: DecoyObservations, key: np.ndarray,
            corrected: int, disclosed: int, cfg: RoundConfig, peer: Peer, rng: np.random.Generator,
            observer: Observer, custody: KeyCustody) -> tuple[np.ndarray, str, bool]:
    """Final estimate, privacy amplification and the two-phase commit (``classical.custody``).
    Returns (final key, key ID, still pending)."""
    with observer.stage("estimate") as st:
        st.set(phase="final", corrected_bits=int(corrected))
        est = _estimate(obs, corrected, disclosed, cfg, st)
        st.set(**epsilon_attributes(est))
    with observer.stage("amplify") as st:
        length = int(est.secure_length)
        if role == "alice":
            seed = np.frombuffer(rng.bytes(toeplitz_seed_bytes(key.size, length)), np.uint8)
            key_id = f"r{ann.round_id}-{seed[:6].tobytes().hex()}"
            rep = custody.stated_repayment()
            msg = Amplify(ann.round_id, seed, length, key_id, rep.a_to_b_seq, rep.b_to_a_seq,
                          rep.a_to_b_bytes, rep.b_to_a_bytes, custody.last_committed)
        else:
            msg = peer.receive(Amplify)
            custody.resolve(msg.committed)  # a key still pending from an earlier round
            rep = _checked_amplify(msg, length, key.size, custody)
            seed, key_id = msg.seed, msg.key_id
        final = toeplitz_hash(key, seed_bits(seed, key.size, length), length)
        custody.hold(PendingKey(ann.round_id, key_id, final, rep))
        if role == "alice":
            peer.send(msg)
        st.set(input_bits=int(key.size), output_bits=length, key_id=key_id,
               auth_key_bits_repaid=8 * sum(rep.split(length)))
    with observer.stage("commit") as st:
        settled = (_alice_commit if role == "alice" else _bob_commit)(ann, key_id, peer, custody)
        st.set(key_status="pending" if settled is None else "committed",
               net_secure_bits=0 if settled is None else settled.net_bits,
               auth_key_bits_replenished=0 if settled is None else settled.replenished_bits)
    return final, key_id, settled is None


def _checked_amplify(msg: Amplify, length: int, key_bits: int,
                     custody: KeyCustody) -> Repayment:
    """Bob's checks of ``Amplify``: the length his estimate allows, a whole seed, a well-formed
    key ID, and the repayment his own pools and sequence numbers give."""
    if msg.output_bits != length:
        raise _Abort(f"Alice amplifies to {msg.output_bits} bits, Bob's estimate allows "
                     f"{length}", notify_peer=True)
    if msg.seed.shape != (toeplitz_seed_bytes(key_bits, length),) or msg.seed.dtype != np.uint8:
        raise _Abort(f"Toeplitz seed of shape {msg.seed.shape}, expected "
                     f"{toeplitz_seed_bytes(key_bits, length)}", notify_peer=True)
    if not msg.key_id.startswith(f"r{msg.round_id}-") or len(msg.key_id) > 64:
        raise _Abort(f"malformed key ID {msg.key_id[:64]!r}", notify_peer=True)
    stated = Repayment(msg.a_to_b_seq, msg.b_to_a_seq, msg.a_to_b_bytes, msg.b_to_a_bytes)
    expected = custody.expected_repayment()
    if stated != expected:
        raise _Abort(f"Alice's repayment {stated} differs from Bob's {expected}: the "
                     f"authentication pools are out of step", notify_peer=True)
    return stated


def _alice_commit(ann: Announcement, key_id: str, peer: Peer, custody: KeyCustody) -> Settled:
    """Alice commits on Bob's ``Confirm``; without it (abort, timeout) she discards."""
    try:
        confirm = peer.receive(Confirm)
    except (PeerAborted, ProtocolError) as e:
        reason = f"key {key_id} not confirmed by Bob ({type(e).__name__}: {e})"
        custody.discard(key_id, reason)
        raise _Abort(reason, notify_peer=isinstance(e, ProtocolError)) from None
    if confirm.key_id != key_id:
        reason = f"Bob confirmed {confirm.key_id[:64]!r}, not {key_id}"
        custody.discard(key_id, reason)
        raise _Abort(reason, notify_peer=True)
    full = custody.no_room(ann.round_id)
    if full is not None:  # Bob holds it confirmed: he discards on the abort
        reason = f"key {key_id} not committed: Alice's key store {full}"
        custody.discard(key_id, reason)
        raise _Abort(reason, notify_peer=True)
    settled = custody.commit(key_id)
    peer.send(Committed(ann.round_id, key_id))
    return settled


def _bob_commit(ann: Announcement, key_id: str, peer: Peer,
                custody: KeyCustody) -> Settled | None:
    """Bob confirms, then commits on ``Committed``; on Alice's abort he discards; if nothing
    comes he keeps the key pending (settled by Alice's next ``Amplify`` or ``EndOfRun``). A store
    without room for the key: he discards it and tells Alice (she discards on the abort)."""
    full = custody.no_room(ann.round_id)
    if full is not None:
        reason = f"key {key_id} not confirmed: Bob's key store {full}"
        custody.discard(key_id, reason)
        raise _Abort(reason, notify_peer=True)
    peer.send(Confirm(ann.round_id, key_id))
    try:
        done = peer.receive(Committed)
    except PeerAborted as e:
        reason = f"Alice discarded {key_id}: {e}"
        custody.discard(key_id, reason)
        raise _Abort(reason, notify_peer=False) from None
    except ProtocolError:
        return None
    if done.key_id != key_id:
        custody.discard(key_id, f"Alice committed {done.key_id[:64]!r}, not {key_id}")
        raise _Abort(f"Alice committed {done.key_id[:64]!r}, not {key_id}", notify_peer=False)
    return custody.commit(key_id)


class _PeerReconcileChannel:
    """Bob's ``ReconcileChannel`` over the round's peer: each round trip's disclosed bits (his
    request's and Alice's reply's) go to ``ledger`` as they cross, before the reply is used."""

    def __init__(self, peer: Peer, round_id: int, ledger: LeakageLedger) -> None:
        self.peer, self.round_id, self.ledger = peer, round_id, ledger

    def ask(self, request: Request) -> np.ndarray:
        self.peer.send(ReconcileRequest(self.round_id, request.rows, request.bits))
        bits = self.peer.receive(ReconcileReply).bits
        self.ledger.record_exchange(request, bits)
        try:
            check_reply(bits, request.reply_bits)
        except ValueError as e:
            raise ProtocolError(f"reconciliation reply: {e}") from None
        return bits


def run_alice_round(ann: Announcement, local: LocalView, cfg: RoundConfig, peer: Peer,
                    rng: np.random.Generator, observer: Observer, qber_prior: float = 0.02,
                    custody: KeyCustody | None = None) -> RoundOutcome:
    return _run("alice", ann, local, cfg, peer, rng, observer, qber_prior, custody)


def run_bob_round(ann: Announcement, local: LocalView, cfg: RoundConfig, peer: Peer,
                  rng: np.random.Generator, observer: Observer, qber_prior: float = 0.02,
                  custody: KeyCustody | None = None) -> RoundOutcome:
    return _run("bob", ann, local, cfg, peer, rng, observer, qber_prior, custody)


def _run(role: Role, ann: Announcement, local: LocalView, cfg: RoundConfig, peer: Peer,
         rng: np.random.Generator, observer: Observer, qber_prior: float,
         custody: KeyCustody | None) -> RoundOutcome:
    """One round. ``custody`` holds the final key through the two-phase commit (a fresh one
    over the peer's link, delivering nowhere, when None: one-round use and tests)."""
    def report() -> dict[str, Any]:
        return observer.report() if hasattr(observer, "report") else {}

    if custody is None:
        custody = KeyCustody(role, getattr(peer, "link", None))
    public: DecoyObservations | None = None  # the outcome's observations
    try:
        try:
            check_announcement(ann, ann.round_id, ann.start_slot, ann.stop_slot)
        except ValueError as e:  # the caller checks the round and range it expects
            raise _Abort(f"announcement refused: {e}", notify_peer=True) from None
        if local.basis.shape != ann.slots.shape:
            raise _Abort(f"local view covers {local.basis.shape} slots, the announcement "
                         f"{ann.slots.shape}", notify_peer=True)
        with observer.stage("sift") as st:
            sifted, obs = _sift_and_test(role, ann, local, cfg, peer, st)
        public = obs
        key = sifted.bits[sifted.key_mask(key_intensity=cfg.key_intensity)]
        if key.size == 0:
            raise _Abort("too few counts: no key-class detections", notify_peer=False)
        try:
            _precheck(obs, key.size, qber_prior, cfg, observer)
        except _Abort:
            # both users reach the same decision: the same public counts, and the same prior
            # (nodes.users.next_qber_prior); if not, the peer's next message ends the round
            if cfg.disclose_unkeyed:
                public = _with_z_errors(obs, _disclose_unkeyed(ann, key, peer, observer))
            raise
        if role == "alice":
            key, corrected, disclosed = _alice_reconcile(ann, key, cfg, peer, observer)
        else:
            key, corrected, disclosed = _bob_reconcile(ann, key, qber_prior, cfg, peer, rng,
                                                       observer)
        public = _with_z_errors(obs, corrected)
        final, key_id, pending = _finish(role, ann, obs, key, corrected, disclosed, cfg, peer,
                                         rng, observer, custody)
        return RoundOutcome(ann.round_id, final, key_id, None, report(), pending, public)
    except (_Abort, PeerAborted, ProtocolError) as e:
        reason = e.reason if isinstance(e, _Abort) else f"{type(e).__name__}: {e}"
        held = custody.pending
        if role == "alice" and held is not None and held.round_id == ann.round_id:
            custody.discard(held.key_id, reason)  # e.g. her Amplify could not be sent
        if isinstance(e, ProtocolError) or (isinstance(e, _Abort) and e.notify_peer):
            # the channel itself may be gone (pool exhausted): the peer then times out instead
            with contextlib.suppress(ProtocolError):
                peer.send(RoundAbort(ann.round_id, reason))
        return RoundOutcome(ann.round_id, None, None, reason, report(), observations=public)


def _disclose_unkeyed(ann: Announcement, key: np.ndarray, peer: Peer,
                      observer: Observer) -> int:
    """Exchange the key-class bits of a round the pre-check stopped (they will never be key)
    and count where they differ: the round's Z errors, measured rather than reconciled."""
    with observer.stage("disclose") as st:
        peer.send(UnkeyedBits(ann.round_id, key.astype(np.uint8)))
        other = peer.receive(UnkeyedBits).bits
        if other.shape != key.shape:
            raise ProtocolError(f"peer disclosed {other.size} key-class bits, expected "
                                f"{key.size}")
        if other.size and (int(other.max()) > 1 or int(other.min()) < 0):
            raise ProtocolError("peer disclosed key-class bits that are not 0 or 1")
        errors = int(np.count_nonzero(other != key))
        st.set(disclosed_key_bits=int(key.size), disclosed_z_errors=errors)
        return errors


def _bob_reconcile(ann: Announcement, key: np.ndarray, qber_prior: float, cfg: RoundConfig,
                   peer: Peer, rng: np.random.Generator,
                   observer: Observer) -> tuple[np.ndarray, int, int]:
    reconciler = cfg.reconciler
    ledger = LeakageLedger()
    with observer.stage("reconcile") as st:
        plan = reconciler.plan(key.size, qber_prior, rng)
        peer.send(ReconcileStart(ann.round_id, plan.method, plan.key_bits, plan.qber_estimate,
                                 str(plan.seed), np.asarray(plan.parameters, np.int64)))
        result = reconciler.bob(key, plan, _PeerReconcileChannel(peer, ann.round_id, ledger))
        st.set(reconciler=plan.method, disclosed_bits=ledger.disclosed_bits,
               round_trips=ledger.round_trips, corrected_bits=result.corrected_bits,
               **result.report)
    with observer.stage("verify") as st:
        tag_bits = tag_bits_for(key.size, cfg.security.epsilon_correctness)
        hash_key = draw_hash_key(rng, tag_bits)
        tag = verification_tag(result.corrected_key, hash_key, tag_bits)
        ledger.record_disclosure(tag_bits)
        peer.send(VerifyRequest(ann.round_id, hash_key, tag, tag_bits, result.corrected_bits))
        matched = peer.receive(VerifyResult).matched
        st.set(matched=bool(matched), tag_bits=tag_bits)
        if not matched:
            raise _Abort("verification failed: reconciled keys differ", notify_peer=False)
    return result.corrected_key, result.corrected_bits, ledger.disclosed_bits


def _received_plan(start: ReconcileStart, reconciler: Reconciler, key_bits: int) -> ReconcilePlan:
    """Bob's plan as Alice checks it: the agreed method, her key's length, a well-formed plan."""
    if start.method != reconciler.name:
        raise ProtocolError(f"Bob reconciles with {start.method!r}, the round agreed on "
                            f"{reconciler.name!r}")
    if start.key_bits != key_bits:
        raise ProtocolError(f"Bob reconciles {start.key_bits} bits, Alice holds {key_bits}")
    if start.parameters.ndim != 1 or start.parameters.dtype != np.int64:
        raise ProtocolError(f"bad reconciliation plan: parameters must be 1-D int64, got "
                            f"{start.parameters.ndim}-D {start.parameters.dtype}")
    try:
        return ReconcilePlan(start.method, start.key_bits, start.qber_estimate, int(start.seed),
                             tuple(int(p) for p in start.parameters))
    except ValueError as e:
        raise ProtocolError(f"bad reconciliation plan: {e}") from None


def _alice_reconcile(ann: Announcement, key: np.ndarray, cfg: RoundConfig, peer: Peer,
                     observer: Observer) -> tuple[np.ndarray, int, int]:
    reconciler = cfg.reconciler
    ledger = LeakageLedger()
    with observer.stage("reconcile") as st:
        plan = _received_plan(peer.receive(ReconcileStart), reconciler, key.size)
        try:
            session = reconciler.alice(key, plan)
        except ValueError as e:
            raise ProtocolError(f"bad reconciliation plan: {e}") from None
        while True:
            msg = peer.receive(ReconcileRequest, VerifyRequest)
            if isinstance(msg, VerifyRequest):
                break
            try:
                check_request(msg.rows, msg.bits)
                answers = session.answer(Request(msg.rows, msg.bits))
            except ValueError as e:
                raise ProtocolError(f"bad reconciliation request: {e}") from None
            ledger.record_exchange(Request(msg.rows, msg.bits), answers)
            peer.send(ReconcileReply(ann.round_id, answers))
        st.set(reconciler=plan.method, disclosed_bits=ledger.disclosed_bits,
               round_trips=ledger.round_trips)
    with observer.stage("verify") as st:
        outcome = verify(key, msg.hash_key, msg.tag_bits, msg.tag)
        ledger.record_disclosure(int(outcome.leaked_bits))
        peer.send(VerifyResult(ann.round_id, bool(outcome.matched)))
        st.set(matched=bool(outcome.matched), tag_bits=int(msg.tag_bits))
        if not outcome.matched:
            raise _Abort("verification failed: reconciled keys differ", notify_peer=False)
    corrected = msg.corrected_bits  # Bob's count: it sets QBER_Z in Alice's final estimate
    if isinstance(corrected, bool) or not isinstance(corrected, int) or not (
            0 <= corrected <= key.size):
        raise ProtocolError(f"peer reports {corrected!r} corrected bits of a {key.size}-bit key")
    return key, corrected, ledger.disclosed_bits
