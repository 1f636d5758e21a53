"""Cascade information reconciliation, Bob's side: batched, vectorised, with a leakage ledger.

Bob holds the noisy key and drives the dialogue; Alice only answers parity queries (see
:mod:`classical.reconciliation_channel`, which defines the plan, the shuffles, the queries and
Alice's pure answering function). Nothing here opens a socket: the transport is an injected
:class:`~classical.reconciliation_channel.ParityChannel`, and every call to it is one round trip.

docs/cascade.md describes the variants and their block sizes (and why ``"shallow"`` is the
default), what one round trip carries, wide splits in the tail (``tail_queries``), deepest-last
scheduling (``defer_levels``) and the data structures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from numba import njit
from numpy.typing import NDArray

from channel.arrays import readonly
from classical.leakage import LeakageLedger
from classical.reconciliation import (
    BobOutcome,
    ReconcileChannel,
    ReconcilePlan,
    Reconciler,
    Request,
)
from classical.reconciliation_channel import (
    AliceParityOracle,
    CascadePlan,
    ParityChannel,
    ParityQueries,
    as_key_bits,
    bipartition_into,
    bipartition_masks,
    bipartition_sizes,
    pass_key,
    permute_into,
)

__all__ = [
    "CascadeParameters",
    "CascadeReconciler",
    "CascadeResult",
    "CascadeVariant",
    "cascade_block_sizes",
    "plan_cascade",
    "reconcile",
    "run_cascade",
]

CascadeVariant = Literal[
    "yanetal", "option8", "option7", "original", "lowlatency", "pow2", "shallow"
]
_VARIANTS: tuple[str, ...] = (
    "yanetal",
    "option8",
    "option7",
    "original",
    "lowlatency",
    "pow2",
    "shallow",
)
_DEFAULT_TAIL_QUERIES = {"pow2": 16, "shallow": 16}
_MIN_QBER = 1e-6  # block sizes for smaller estimates are capped at the key length anyway
# A round is "busy" (the deepest-last rule applies) with one odd leaf per this many frame bits:
# 256 leaves at 10^5 bits. A fixed count would make it apply in almost every round of a larger
# frame and stretch its chains (10^6 bits at 5 %: 96 round trips with 256, 77 with 2564).
_BITS_PER_BUSY_LEAF = 390


@dataclass(frozen=True)
class CascadeParameters:
    """Which Cascade to run.

    Attributes:
        variant: block-size schedule (docs/cascade.md §2); ``"shallow"`` by default.
        biconf_passes: extra BICONF passes (random half of the key + complement, cascading) after
            the variant's own passes; each costs one disclosed bit when it finds nothing.
        initial_passes: passes started together at the beginning (1 = textbook order).
        overlap_queries: a further pass starts as soon as a round would carry at most this many
            bisection queries (0 = only when every started pass is quiet, textbook order).
            Overlap cuts round trips and costs leakage; e.g. ``variant="option8",
            initial_passes=2, overlap_queries=2`` roughly halves opt. (8)'s round trips for ~2 %
            more disclosed bits.
        tail_queries: budget of a *wide* round: when a round would bisect at most a third of
            this many leaves, each leaf is split ``2**m`` ways instead of two (``2**m - 1``
            parities, ``m`` as large as keeps the round within the budget). ``None`` takes the
            variant's default: 16 for ``"pow2"`` and ``"shallow"``, 0 (always binary) for the
            others. See docs/cascade.md §4.
        defer_levels: the *deepest-last* rule: in a round with at least ``defer_min_leaves``
            odd leaves, a leaf more than this many bisection levels deeper than the round's
            shallowest odd leaf is not bisected yet (it is offered again next round). ``None``
            takes the variant's default: for ``"shallow"``, two levels less than its
            second-pass blocks' depth; off (-1) for the others. Scheduling only (Bob's side):
            it changes which parities are asked when, never how they are counted. See
            docs/cascade.md §5.
        defer_min_leaves: the deepest-last rule only applies in rounds with at least this many
            odd leaves (the busy part of the dialogue, where it costs few round trips). ``None``
            scales it with the frame: one per 390 bits (256 at 10^5 bits, 2564 at 10^6).
    """

    def deferral_levels(self, block_sizes: tuple[int, ...]) -> int:
        """``defer_levels`` with the variant's default filled in for a plan's block sizes."""
        if self.defer_levels is not None:
            return self.defer_levels
        if self.variant == "shallow" and len(block_sizes) > 1:
            return max(-1, math.ceil(math.log2(block_sizes[1])) - 2)
        return -1

    def deferral_min_leaves(self, n_bits: int) -> int:
        """``defer_min_leaves`` with the default (one per 390 bits of the frame) filled in."""
        if self.defer_min_leaves is not None:
            return self.defer_min_leaves
        return max(1, n_bits // _BITS_PER_BUSY_LEAF)

    @property
    def wide_split_budget(self) -> int:
        """``tail_queries`` with the variant's default filled in."""
        if self.tail_queries is not None:
            return self.tail_queries
        return _DEFAULT_TAIL_QUERIES.get(self.variant, 0)

    variant: CascadeVariant = "shallow"
    biconf_passes: int = 0
    initial_passes: int = 1
    overlap_queries: int = 0
    tail_queries: int | None = None
    defer_levels: int | None = None
    defer_min_leaves: int | None = None

    def __post_init__(self) -> None:
        if self.variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {self.variant!r}")
        if self.tail_queries is not None and self.tail_queries < 0:
            raise ValueError(f"tail_queries must be >= 0, got {self.tail_queries}")
        if self.biconf_passes < 0:
            raise ValueError(f"biconf_passes must be >= 0, got {self.biconf_passes}")
        if self.initial_passes < 1:
            raise ValueError(f"initial_passes must be >= 1, got {self.initial_passes}")
        if self.overlap_queries < 0:
            raise ValueError(f"overlap_queries must be >= 0, got {self.overlap_queries}")
        if self.defer_levels is not None and self.defer_levels < -1:
            raise ValueError(f"defer_levels must be >= -1 or None, got {self.defer_levels}")
        if self.defer_min_leaves is not None and self.defer_min_leaves < 0:
            raise ValueError(f"defer_min_leaves must be >= 0, got {self.defer_min_leaves}")


@dataclass(frozen=True)
class CascadeResult:
    """Outcome of one Cascade run (Bob's side).

    Attributes:
        corrected_key: Bob's key after correction (uint8 0/1, a new array).
        disclosed_bits: parities Alice disclosed in this run (= bits leaked to Eve).
        round_trips: classical round trips (``ask_parities`` calls) in this run.
        passes: passes run (all passes of the plan).
        corrected_bits: bits Bob flipped.
        plan: the public plan that was announced (seed, block sizes).
    """

    corrected_key: NDArray[np.uint8]
    disclosed_bits: int
    round_trips: int
    passes: int
    corrected_bits: int
    plan: CascadePlan


def _check_qber(qber_estimate: float) -> float:
    q = float(qber_estimate)
    if not math.isfinite(q) or not 0.0 <= q < 0.5:
        raise ValueError(f"qber_estimate must be finite and in [0, 0.5), got {qber_estimate!r}")
    return q


def cascade_block_sizes(
    qber_estimate: float, n_bits: int, parameters: CascadeParameters | None = None
) -> tuple[tuple[int, ...], int]:
    """Block sizes of the permutation passes and the number of half-key passes.

    Returns ``(block_sizes, bipartition_passes)`` for a key of ``n_bits`` bits whose QBER is
    estimated at ``qber_estimate``; every block size is capped at ``n_bits``.

    Raises:
        ValueError: if ``qber_estimate`` is not in ``[0, 0.5)`` or ``n_bits < 1``.
    """
    p = max(_check_qber(qber_estimate), _MIN_QBER)
    if int(n_bits) != n_bits or n_bits < 1:
        raise ValueError(f"n_bits must be a positive integer, got {n_bits!r}")
    params = parameters or CascadeParameters()
    if params.variant == "option8":
        alpha = math.log2(1.0 / p) - 0.5
        sizes = [2 ** math.ceil(alpha), 2 ** math.ceil((alpha + 12.0) / 2.0), 4096]
        halves = 11
    elif params.variant == "option7":
        k1 = 2 ** math.ceil(math.log2(1.0 / p))
        sizes, halves = [k1, 4 * k1], 12
    elif params.variant == "yanetal":
        k1 = math.ceil(0.80 / p)
        sizes, halves = [k1, 5 * k1], 8
    elif params.variant == "lowlatency":
        k1 = math.ceil(0.75 / p)
        sizes, halves = [k1, 2 * k1, 4096], 11
    elif params.variant == "pow2":
        k1 = 2 ** round(math.log2(0.8 / p))
        sizes, halves = [k1, 2 * k1, 4096], 11
    elif params.variant == "shallow":
        sizes, halves = list(_shallow_sizes(p)), 16
    else:  # original
        k1 = math.ceil(0.73 / p)
        sizes, halves = [k1, 2 * k1, 4 * k1, 8 * k1], 0
    capped = tuple(int(max(1, min(k, n_bits))) for k in sizes)
    return capped, halves + params.biconf_passes


def _shallow_sizes(p: float) -> tuple[int, int]:
    """``"shallow"``'s first two block sizes at QBER ``p`` (docs/cascade.md §2).

    ``k1``: ``0.8/p`` rounded down to an integer, but no deeper than ``"pow2"``'s block (a
    power of two within a factor sqrt(2)). ``k2 = c/p`` with ``c = 2.0 - 0.2 max(0, d1 - 5) -
    1.5 (k1 p - 0.64)`` (``d1 = ceil(log2 k1)``; clamped to [1.5, 1.92]), snapped down to the
    power of two below when that is within a factor 1.25.
    """
    x1 = 0.8 / p
    k1 = min(2 ** round(math.log2(x1)), max(1, math.floor(x1)))
    depth1 = math.ceil(math.log2(k1)) if k1 > 1 else 0
    c = min(1.92, max(1.5, 2.0 - 0.2 * max(0, depth1 - 5) - 1.5 * (k1 * p - 0.64)))
    x2 = c / p
    below = 2 ** math.floor(math.log2(x2))
    k2 = below if x2 < 1.25 * below else round(x2)
    return k1, max(k2, k1 + 1)


def plan_cascade(
    n_bits: int,
    qber_estimate: float,
    rng: np.random.Generator,
    parameters: CascadeParameters | None = None,
) -> CascadePlan:
    """Bob's public plan: block sizes from the QBER estimate and a fresh shuffle seed from rng."""
    block_sizes, halves = cascade_block_sizes(qber_estimate, n_bits, parameters)
    seed = int(rng.integers(0, 2**63))
    return CascadePlan(
        n_bits=int(n_bits), seed=seed, block_sizes=block_sizes, bipartition_passes=halves
    )


def reconcile(
    bob_key: NDArray[np.generic],
    qber_estimate: float,
    channel: ParityChannel,
    rng: np.random.Generator,
    parameters: CascadeParameters | None = None,
    ledger: LeakageLedger | None = None,
) -> CascadeResult:
    """Reconcile Bob's key with Alice's over ``channel`` (plan from the QBER estimate, then run).

    Args:
        bob_key: Bob's noisy key, 1-D array of 0/1 (not modified).
        qber_estimate: estimated QBER from parameter estimation, in ``[0, 0.5)``.
        channel: transport to Alice; one ``ask_parities`` call per round trip.
        rng: source of the shuffle seed.
        parameters: Cascade variant and schedule (default: ``CascadeParameters()``, "shallow").
        ledger: if given, every round trip and disclosed parity is also recorded there.

    Raises:
        ValueError: on a malformed key, a QBER estimate outside ``[0, 0.5)``, or a channel answer
            of the wrong shape.
    """
    key = as_key_bits(bob_key, "bob_key")
    plan = plan_cascade(key.size, qber_estimate, rng, parameters)
    return run_cascade(key, plan, channel, parameters, ledger)


def run_cascade(
    bob_key: NDArray[np.generic],
    plan: CascadePlan,
    channel: ParityChannel,
    parameters: CascadeParameters | None = None,
    ledger: LeakageLedger | None = None,
) -> CascadeResult:
    """Run Cascade under an already announced ``plan`` (Bob's side).

    ``parameters`` only matters here through its scheduling fields (``initial_passes``,
    ``overlap_queries``, ``tail_queries``, ``defer_levels``, ``defer_min_leaves``); the block
    sizes are the plan's. Alice must answer under the same plan
    (a network transport sends it to her before the first query).

    Raises:
        ValueError: on a malformed key or one whose length differs from ``plan.n_bits``, or a
            channel answer that is not one 0/1 parity per query.
    """
    key = as_key_bits(bob_key, "bob_key")
    if key.size != plan.n_bits:
        raise ValueError(f"bob_key has {key.size} bits but plan.n_bits is {plan.n_bits}")
    params = parameters or CascadeParameters()
    local = LeakageLedger()

    def ask(queries: ParityQueries) -> NDArray[np.uint8]:
        count = queries.pass_index.size
        answers = np.asarray(channel.ask_parities(plan, queries))
        if answers.shape != (count,):
            raise ValueError(f"channel returned {answers.shape} parities for {count} queries")
        if answers.dtype != np.uint8:
            if answers.size and (answers.min() < 0 or answers.max() > 1):
                raise ValueError("channel returned parities other than 0 and 1")
            answers = answers.astype(np.uint8)
        elif not _all_binary(answers):
            raise ValueError("channel returned parities other than 0 and 1")
        local.record_round_trip(count)
        if ledger is not None:
            ledger.record_round_trip(count)
        return answers

    engine = _BobEngine(
        key.copy(),
        plan,
        params.deferral_levels(plan.block_sizes),
        params.deferral_min_leaves(plan.n_bits),
    )
    top = engine.top_level_queries()
    engine.set_top_level_parities(top, ask(top))
    queries = _NO_QUERIES
    budget = params.wide_split_budget
    next_pass = 0
    while True:
        count = queries.pass_index.size
        if next_pass < plan.n_passes and (
            next_pass < params.initial_passes or count <= params.overlap_queries
        ):
            queries = engine.activate(next_pass, queries)
            next_pass += 1
        elif count:
            if 3 * count <= budget:
                queries = engine.widen(queries, budget)
            queries = engine.step(queries, ask(queries))
        else:
            break
    return CascadeResult(
        corrected_key=engine.bob,
        disclosed_bits=local.disclosed_bits,
        round_trips=local.round_trips,
        passes=plan.n_passes,
        corrected_bits=engine.flips,
        plan=plan,
    )


# --------------------------------------------------------------------------------------------
# Cascade as a Reconciler (classical.reconciliation)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CascadeReconciler(Reconciler):
    """Cascade behind the :class:`~classical.reconciliation.Reconciler` interface.

    Plan ``parameters``: ``(bipartition_passes, block_size_0, block_size_1, ...)`` (the
    :class:`CascadePlan` without its key length and seed). Request ``rows``: ``(3, m)``, the pass
    index, start and end of each parity query; Bob discloses no bits; the reply is Alice's parity
    for each query, in order.
    """

    name: ClassVar[str] = "cascade"
    parameters: CascadeParameters = field(default_factory=CascadeParameters)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CascadeReconciler:
        """From scenario settings: fields of :class:`CascadeParameters` by name."""
        known = [f.name for f in dataclasses.fields(CascadeParameters)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"unknown Cascade setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(known)}")
        for key, value in settings.items():
            if key != "variant" and value is not None and type(value) is not int:
                raise ValueError(f"Cascade setting {key} must be an integer, got {value!r}")
        try:
            return cls(CascadeParameters(**settings))
        except TypeError as e:  # None where a number belongs
            raise ValueError(f"Cascade settings {dict(settings)}: {e}") from None

    def plan(self, key_bits: int, qber_estimate: float,
             rng: np.random.Generator) -> ReconcilePlan:
        plan = plan_cascade(key_bits, qber_estimate, rng, self.parameters)
        return ReconcilePlan(self.name, plan.n_bits, float(qber_estimate), plan.seed,
                             (plan.bipartition_passes, *plan.block_sizes))

    def bob(self, key: NDArray[np.uint8], plan: ReconcilePlan,
            channel: ReconcileChannel) -> BobOutcome:
        result = run_cascade(key, _cascade_plan(plan), _RequestChannel(channel), self.parameters)
        return BobOutcome(result.corrected_key, result.corrected_bits, {"passes": result.passes})

    def alice(self, key: NDArray[np.uint8], plan: ReconcilePlan) -> _AliceSession:
        return _AliceSession(AliceParityOracle(key, _cascade_plan(plan)))


def _cascade_plan(plan: ReconcilePlan) -> CascadePlan:
    """The :class:`CascadePlan` a generic plan carries; ``ValueError`` if it is not one."""
    if plan.method != CascadeReconciler.name:
        raise ValueError(f"not a Cascade plan: method {plan.method!r}")
    if len(plan.parameters) < 2:
        raise ValueError("a Cascade plan needs bipartition_passes and at least one block size, "
                         f"got {len(plan.parameters)} parameters")
    return CascadePlan(plan.key_bits, plan.seed, plan.parameters[1:], plan.parameters[0])


class _RequestChannel:
    """A :class:`ParityChannel` over a :class:`ReconcileChannel`: one batch, one request."""

    def __init__(self, channel: ReconcileChannel) -> None:
        self.channel = channel

    def ask_parities(self, plan: CascadePlan, queries: ParityQueries) -> NDArray[np.uint8]:
        rows = np.empty((3, len(queries)), np.int32)
        rows[0], rows[1], rows[2] = queries.pass_index, queries.start, queries.end
        return self.channel.ask(Request(rows, reply_bits=len(queries)))


class _AliceSession:
    """Alice's Cascade: each request is a batch of :class:`ParityQueries`."""

    def __init__(self, oracle: AliceParityOracle) -> None:
        self.oracle = oracle

    def answer(self, request: Request) -> NDArray[np.uint8]:
        """Alice's parities; ``ValueError`` on a request that is not a batch of valid queries.

        ``rows`` is 2-D int32 (checked by the round), so only the pass index needs a range
        check before its cast to int16; the oracle checks every row against the plan.
        """
        rows = np.ascontiguousarray(request.rows)
        if rows.shape[0] != 3:
            raise ValueError(f"a Cascade request has 3 rows (pass, start, end), got "
                             f"{rows.shape[0]}")
        if request.bits.size:
            raise ValueError(f"Bob discloses no bits in Cascade, got {request.bits.size}")
        passes = rows[0]
        if passes.size and (passes.min() < 0 or passes.max() >= self.oracle.plan.n_passes):
            raise ValueError("queries.pass_index out of range for the plan")
        queries = ParityQueries._trusted(passes.astype(np.int16), rows[1], rows[2])
        return self.oracle.answer(queries)


# --------------------------------------------------------------------------------------------
# Bob's engine: state arrays + numba kernels
#
# Per pass i, ``meta[i] = (kind, top, slot, started)``: kind 0 = permutation (top = block size),
# 1 = bipartition (top = subset size); slot = row block of the position arrays, -1 if none yet.
# Position arrays, for slot s at offset s * n, one row each (named below, compile-time constants
# in the kernels): ints[_ORDER] (position -> key index), ints[_POS] (key index -> position),
# ints[_LEAF] (size of the unsplit known block starting at a position, 0 if none starts there);
# flags[_ODD] (Bob's parity differs from Alice's on that leaf), flags[_QUEUED] (a bisection query
# for that leaf is in flight). Bipartition passes without a slot are
# tracked by ``half_odd[i] = (subset odd, complement odd)`` and their packed ``masks``; a pass's
# ``half_odd`` is computed when it starts, from ``packed`` (Bob's key, bit-packed, kept in step
# by ``_flip``) and Alice's halves.
# --------------------------------------------------------------------------------------------

_I64 = NDArray[np.int64]
_I32 = NDArray[np.int32]
_I16 = NDArray[np.int16]
_U8 = NDArray[np.uint8]
_KIND, _TOP, _SLOT, _STARTED = 0, 1, 2, 3  # columns of meta
_ORDER, _POS, _LEAF = 0, 1, 2  # rows of ints
_ODD, _QUEUED = 0, 1  # rows of flags
_INT_ROWS, _FLAG_ROWS = 3, 2
_PERMUTATION, _BIPARTITION = 0, 1
_NO_QUERIES = ParityQueries(np.empty(0, np.int16), np.empty(0, np.int32), np.empty(0, np.int32))


@njit(cache=True)
def _all_binary(answers: _U8) -> bool:  # pragma: no cover - numba
    """Whether every answer is 0 or 1 (cheaper than ``answers.max()`` for a few hundred)."""
    acc = 0
    for a in answers:
        acc |= a
    return acc <= 1


@njit(cache=True, inline="always")
def _locate_leaf(  # pragma: no cover - numba
    p: int, i: int, n: int, meta: _I64, leaf: _I32, base: int
) -> int:
    """Start of the unsplit known block of pass ``i`` that contains shuffled position ``p``."""
    top = meta[i, _TOP]
    if meta[i, _KIND] == _PERMUTATION:
        s = (p // top) * top
        e = min(s + top, n)
    elif p < top:
        s, e = 0, top
    else:
        s, e = top, n
    while leaf[base + s] != e - s:
        mid = s + (e - s) // 2
        if p < mid:
            e = mid
        else:
            s = mid
    return s


@njit(cache=True)
def _flip(  # pragma: no cover - numba
    x: int,
    n: int,
    n_perm: int,
    bob: _U8,
    meta: _I64,
    ints: _I32,
    flags: _U8,
    masks: _U8,
    half_odd: _U8,
    packed: _U8,
    cp: _I64,
    cs: _I64,
    nc: int,
) -> int:
    """Correct bit ``x``: toggle its leaf in every started pass; append leaves that turned odd.

    A pass not started yet needs nothing here: a bipartition pass's halves are compared with
    Bob's packed key (``packed``, kept in step with ``bob``) when it starts
    (:func:`_bob_half_parities`), so a corrected bit does not update the ~16 later half-key
    passes. (The loop skips unstarted passes rather than stopping at the first, although passes
    start in plan order: in this kernel skipping is the faster of the two.)
    """
    pos = ints[_POS]
    leaf = ints[_LEAF]
    odd = flags[_ODD]
    bob[x] ^= 1
    packed[x >> 3] ^= np.uint8(1 << (x & 7))
    for i in range(meta.shape[0]):
        if meta[i, _STARTED] == 0:
            continue
        sl = meta[i, _SLOT]
        if sl < 0:
            if meta[i, _KIND] == _BIPARTITION:
                half = 1 - ((masks[i - n_perm, x >> 3] >> (x & 7)) & 1)
                half_odd[i, half] ^= 1
                if half_odd[i, half] == 1:
                    cp[nc] = i
                    cs[nc] = 0 if half == 0 else meta[i, _TOP]
                    nc += 1
            continue
        base = sl * n
        s = _locate_leaf(pos[base + x], i, n, meta, leaf, base)
        odd[base + s] ^= 1
        if odd[base + s] == 1:
            cp[nc] = i
            cs[nc] = s
            nc += 1
    return nc


@njit(cache=True)
def _correct_singles(  # pragma: no cover - numba
    j: int,
    m: int,
    cp: _I64,
    cs: _I64,
    nc: int,
    n: int,
    n_perm: int,
    bob: _U8,
    meta: _I64,
    ints: _I32,
    flags: _U8,
    masks: _U8,
    half_odd: _U8,
    packed: _U8,
) -> tuple[int, int, int]:
    """Flip every odd single-bit leaf among candidates ``j..m-1``, appending to ``cp``/``cs``.

    Returns ``(where it stopped, candidates now, flips)``; it stops early only when ``cp``
    might lack room for one more flip's leaves. A loop of its own because the caller swaps
    ``cp`` for a larger array then: numba reference-counts an array variable that a loop may
    reassign, with atomic operations at every iteration, which this sweep must not pay.
    """
    order = ints[_ORDER]
    leaf = ints[_LEAF]
    odd = flags[_ODD]
    flips = 0
    while j < m:
        sl = meta[cp[j], _SLOT]
        at = sl * n + cs[j]
        if sl >= 0 and leaf[at] == 1 and odd[at] == 1:
            if nc + meta.shape[0] > cp.size:
                return j, nc, flips
            nc = _flip(
                order[at], n, n_perm, bob, meta, ints, flags, masks, half_odd, packed, cp, cs, nc
            )
            flips += 1
        j += 1
    return j, nc, flips


@njit(cache=True)
def _grown(a: _I64, used: int, extra: int) -> _I64:  # pragma: no cover - numba
    """The first ``used`` entries of ``a`` in a new array with room for ``extra`` more (element
    copies: numba compiles a slice copy with its shape-error formatting, seconds per kernel)."""
    out = np.empty(used + extra, np.int64)
    for k in range(used):
        out[k] = a[k]
    return out


@njit(cache=True)
def _select(  # pragma: no cover - numba
    cp_in: _I64,
    cs_in: _I64,
    n: int,
    n_perm: int,
    bob: _U8,
    meta: _I64,
    ints: _I32,
    flags: _U8,
    masks: _U8,
    half_odd: _U8,
    packed: _U8,
    defer_levels: int,
    defer_min_leaves: int,
) -> tuple[_I16, _I32, _I32, _I64, int, int]:
    """Correct every odd single-bit leaf, then one bisection query per odd leaf (deduplicated).

    Returns (query pass, start, mid, held, later count, corrections). ``held`` has one
    ``(pass, start)`` row per leaf not queried: first the *later* leaves, held back by the
    deepest-last rule (``defer_levels >= 0`` and at least ``defer_min_leaves`` odd leaves: more
    than ``defer_levels`` bisection levels deeper than the round's shallowest odd leaf), which
    the caller offers again next round; then the *deferred* candidates, leaves of bipartition
    passes that have no position order yet. (One array, not four: each array a kernel returns
    costs about half a microsecond of boxing, and this runs once per round trip.)
    """
    leaf = ints[_LEAF]
    odd = flags[_ODD]
    queued = flags[_QUEUED]
    m = cp_in.size
    # Each flip appends at most one leaf per pass; room for a few flips per candidate, grown
    # by doubling when a round needs more (cheaper than a sweep counting the single-bit leaves).
    cap = 2 * m + 2 * meta.shape[0]
    cp = np.empty(cap, np.int64)
    cs = np.empty(cap, np.int64)
    for k in range(m):  # element copies, as in _grown
        cp[k] = cp_in[k]
        cs[k] = cs_in[k]
    nc = m
    flips = 0
    j = np.int64(0)  # not the literal 0: one compiled version of _correct_singles
    while True:  # flips never create odd single-bit leaves, so one sweep suffices
        j, nc, done = _correct_singles(
            j, m, cp, cs, nc, n, n_perm, bob, meta, ints, flags, masks, half_odd, packed
        )
        flips += done
        if j == m:
            break
        # out of room: grow rather than write past the end (numba checks no bounds)
        cp = _grown(cp, nc, nc + meta.shape[0])
        cs = _grown(cs, nc, nc + meta.shape[0])
    qp = np.empty(nc, np.int16)
    qs = np.empty(nc, np.int32)
    qm = np.empty(nc, np.int32)
    dp = np.empty(nc, np.int64)
    ds = np.empty(nc, np.int64)
    nq = 0
    nd = 0
    max_levels = 1 << 30  # no leaf is deferred
    if defer_levels >= 0:
        shallowest = 1 << 30
        eligible = 0
        for j in range(nc):
            sl = meta[cp[j], _SLOT]
            if sl >= 0:
                at = sl * n + cs[j]
                if leaf[at] > 1 and odd[at] == 1 and queued[at] == 0:
                    eligible += 1
                    shallowest = min(shallowest, _levels(leaf[at]))
        if eligible >= defer_min_leaves:
            max_levels = shallowest + defer_levels
    lp = np.empty(nc, np.int64)
    ls = np.empty(nc, np.int64)
    nl = 0
    for j in range(nc):
        i = cp[j]
        s = cs[j]
        sl = meta[i, _SLOT]
        if sl < 0:
            dp[nd] = i
            ds[nd] = s
            nd += 1
            continue
        at = sl * n + s
        size = leaf[at]
        if size <= 1 or odd[at] == 0 or queued[at] != 0:
            continue
        if _levels(size) > max_levels:
            queued[at] = 2  # marks it taken for this sweep only (deduplication)
            lp[nl] = i
            ls[nl] = s
            nl += 1
            continue
        queued[at] = 1
        qp[nq] = i
        qs[nq] = s
        qm[nq] = s + size // 2
        nq += 1
    for j in range(nl):
        queued[meta[lp[j], _SLOT] * n + ls[j]] = 0
    held = np.empty((nl + nd, 2), np.int64)
    for j in range(nl):
        held[j, 0] = lp[j]
        held[j, 1] = ls[j]
    for j in range(nd):
        held[nl + j, 0] = dp[j]
        held[nl + j, 1] = ds[j]
    return qp[:nq], qs[:nq], qm[:nq], held, nl, flips


@njit(cache=True, inline="always")
def _levels(size: int) -> int:  # pragma: no cover - numba
    """Bisection levels of a ``size``-bit block: ``ceil(log2(size))``."""
    d = 0
    while (1 << d) < size:
        d += 1
    return d


@njit(cache=True)
def _apply(  # pragma: no cover - numba
    qp: _I16, qs: _I32, qm: _I32, alice: _U8, n: int, bob: _U8, meta: _I64, ints: _I32, flags: _U8
) -> tuple[_I64, _I64]:
    """Split each queried leaf at ``mid`` using Alice's left-half parity; return odd children."""
    order = ints[_ORDER]
    leaf = ints[_LEAF]
    odd = flags[_ODD]
    queued = flags[_QUEUED]
    m = qp.size
    cp = np.empty(2 * m, np.int64)
    cs = np.empty(2 * m, np.int64)
    nc = 0
    for j in range(m):
        i = qp[j]
        s = qs[j]
        mid = qm[j]
        base = meta[i, _SLOT] * n
        e = s + leaf[base + s]
        par = 0
        for p in range(base + s, base + mid):
            par ^= bob[order[p]]
        d_left = (alice[j] ^ par) & 1
        d_right = odd[base + s] ^ d_left
        leaf[base + s] = mid - s
        leaf[base + mid] = e - mid
        odd[base + s] = d_left
        odd[base + mid] = d_right
        queued[base + s] = 0
        if d_left == 1:
            cp[nc] = i
            cs[nc] = s
            nc += 1
        if d_right == 1:
            cp[nc] = i
            cs[nc] = mid
            nc += 1
    return cp[:nc], cs[:nc]


@njit(cache=True)
def _widen(  # pragma: no cover - numba
    qp: _I16, qs: _I32, qm: _I32, budget: int, n: int, meta: _I64, ints: _I32
) -> tuple[_I16, _I32, _I32]:
    """Split each queried leaf ``2**m`` ways at once: its binary tree ``m`` levels deep.

    ``m`` is the largest depth with ``len(queries) * (2**m - 1) <= budget``. Each leaf's queries
    are the left halves of the tree's nodes in breadth-first order, parent before child, so
    :func:`_apply`, which splits one leaf per query in order at the same binary midpoints, finds
    every node a leaf when its query comes. Sub-blocks of fewer than two bits are not queried.
    """
    m_leaves = qp.size
    depth = 1
    while m_leaves * ((1 << (depth + 1)) - 1) <= budget:
        depth += 1
    if depth == 1:
        return qp, qs, qm
    per = (1 << depth) - 1
    op = np.empty(m_leaves * per, np.int16)
    os_ = np.empty(m_leaves * per, np.int32)
    om = np.empty(m_leaves * per, np.int32)
    lo = np.empty(2 * per + 1, np.int64)
    hi = np.empty(2 * per + 1, np.int64)
    leaf = ints[_LEAF]
    k = 0
    for j in range(m_leaves):
        i = qp[j]
        s = qs[j]
        lo[0] = s
        hi[0] = s + leaf[meta[i, _SLOT] * n + s]
        head = 0
        tail = 1
        for _ in range(depth):
            level_end = tail
            while head < level_end:
                a = lo[head]
                b = hi[head]
                head += 1
                if b - a < 2:
                    continue
                mid = a + (b - a) // 2
                op[k] = i
                os_[k] = a
                om[k] = mid
                k += 1
                lo[tail] = a
                hi[tail] = mid
                lo[tail + 1] = mid
                hi[tail + 1] = b
                tail += 2
    return op[:k], os_[:k], om[:k]


@njit(cache=True)
def _apply_select(  # pragma: no cover - numba
    qp: _I16,
    qs: _I32,
    qm: _I32,
    alice: _U8,
    n: int,
    n_perm: int,
    bob: _U8,
    meta: _I64,
    ints: _I32,
    flags: _U8,
    masks: _U8,
    half_odd: _U8,
    packed: _U8,
    later: _I64,
    defer_levels: int,
    defer_min_leaves: int,
) -> tuple[_I16, _I32, _I32, _I64, int, int]:
    """One round of Bob's work between two round trips: apply answers, pick the next queries.

    ``later``: ``(pass, start)`` rows of the leaves the previous round held back, offered again.
    """
    cp, cs = _apply(qp, qs, qm, alice, n, bob, meta, ints, flags)
    if later.shape[0]:
        cp = np.concatenate((cp, later[:, 0]))
        cs = np.concatenate((cs, later[:, 1]))
    return _select(
        cp,
        cs,
        n,
        n_perm,
        bob,
        meta,
        ints,
        flags,
        masks,
        half_odd,
        packed,
        defer_levels,
        defer_min_leaves,
    )


@njit(cache=True)
def _requeue(  # pragma: no cover - numba
    qp: _I16, qs: _I32, n: int, meta: _I64, flags: _U8
) -> tuple[_I64, _I64]:
    """Withdraw unsent queries; return their leaves as candidates."""
    cp = np.empty(qp.size, np.int64)
    cs = np.empty(qp.size, np.int64)
    for j in range(qp.size):
        flags[_QUEUED, meta[qp[j], _SLOT] * n + qs[j]] = 0
        cp[j] = qp[j]
        cs[j] = qs[j]
    return cp, cs


@njit(cache=True)
def _start_permutation(  # pragma: no cover - numba
    i: int,
    stream_key: np.uint64,
    alice_top: _U8,
    n: int,
    bob: _U8,
    meta: _I64,
    ints: _I32,
    flags: _U8,
) -> tuple[_I64, _I64]:
    """Shuffle pass ``i``'s order into its slot, install its top-level blocks; return the odd ones.

    One kernel (:func:`~classical.reconciliation_channel.permute_into`) writes the order straight
    into the slot, its inverse into ``pos`` and the suffix XOR of Bob's key, from which every
    top-level block's parity is one XOR.
    """
    leaf = ints[_LEAF]
    odd = flags[_ODD]
    base = meta[i, _SLOT] * n
    suffix = np.empty(n + 1, np.uint8)
    slot = slice(base, base + n)
    permute_into(i, stream_key, ints[_ORDER, slot], bob, suffix, ints[_POS, slot])
    k = meta[i, _TOP]
    n_blocks = (n + k - 1) // k
    cp = np.empty(n_blocks, np.int64)
    cs = np.empty(n_blocks, np.int64)
    nc = 0
    for b in range(n_blocks):
        s = b * k
        e = min(s + k, n)
        d = (suffix[s] ^ suffix[e] ^ alice_top[b]) & 1
        leaf[base + s] = e - s
        odd[base + s] = d
        if d == 1:
            cp[nc] = i
            cs[nc] = s
            nc += 1
    return cp[:nc], cs[:nc]


@njit(cache=True)
def _bob_half_parities(  # pragma: no cover - numba
    packed: _U8, mask: _U8, alice_halves: _U8, half_odd: _U8
) -> bool:
    """``half_odd = alice_halves XOR`` Bob's parities over (subset, complement), from bytes.

    Returns whether either half is odd.
    """
    subset = np.uint8(0)
    total = np.uint8(0)
    for j in range(packed.size):
        subset ^= packed[j] & mask[j]
        total ^= packed[j]
    rest = total ^ subset
    half_odd[0] = alice_halves[0] ^ _byte_parity_nb(subset)
    half_odd[1] = alice_halves[1] ^ _byte_parity_nb(rest)
    return (half_odd[0] | half_odd[1]) != 0


@njit(cache=True, inline="always")
def _byte_parity_nb(b: np.uint8) -> np.uint8:  # pragma: no cover - numba
    """Parity of the 8 bits of ``b``."""
    b ^= b >> np.uint8(4)
    b ^= b >> np.uint8(2)
    b ^= b >> np.uint8(1)
    return b & np.uint8(1)


@njit(cache=True)
def _materialize_bipartition(  # pragma: no cover - numba
    i: int, mask: _U8, n: int, meta: _I64, ints: _I32, flags: _U8, half_odd: _U8
) -> None:
    """Give a bipartition pass its position order: subset ascending, then complement ascending."""
    leaf = ints[_LEAF]
    odd = flags[_ODD]
    base = meta[i, _SLOT] * n
    h = meta[i, _TOP]
    bipartition_into(mask, h, ints[_ORDER, base : base + n], ints[_POS, base : base + n])
    if h > 0:
        leaf[base] = h
        odd[base] = half_odd[i, 0]
    if h < n:
        leaf[base + h] = n - h
        odd[base + h] = half_odd[i, 1]


class _BobEngine:
    """Bob's Cascade state for one frame. Private: :func:`run_cascade` drives it."""

    def __init__(
        self,
        bob: NDArray[np.uint8],
        plan: CascadePlan,
        defer_levels: int = -1,
        defer_min_leaves: int = 0,
    ) -> None:
        n = plan.n_bits
        n_perm = len(plan.block_sizes)
        n_pass = plan.n_passes
        self.bob = bob
        self.plan = plan
        self.n = n
        self.n_perm = n_perm
        self.flips = 0
        self.meta = np.zeros((n_pass, 4), np.int64)
        self.meta[:, _SLOT] = -1
        self.meta[n_perm:, _KIND] = _BIPARTITION
        self.meta[:n_perm, _TOP] = plan.block_sizes
        self.half_odd = np.zeros((n_pass, 2), np.uint8)
        self.alice_halves = np.zeros((n_pass, 2), np.uint8)  # Alice's (subset, complement)
        self.packed = np.packbits(bob, bitorder="little")  # Bob's key, kept in step by _flip
        self.masks = bipartition_masks(plan)
        self.meta[n_perm:, _TOP] = bipartition_sizes(self.masks)
        self.alice_top: list[NDArray[np.uint8]] = []
        self.slots_used = 0
        self.ints = np.zeros((_INT_ROWS, 0), np.int32)
        self.flags = np.zeros((_FLAG_ROWS, 0), np.uint8)
        self.defer_levels = defer_levels
        self.defer_min_leaves = defer_min_leaves
        self.later = np.empty((0, 2), np.int64)  # (pass, start) of odd leaves held back a round

    # -- storage ---------------------------------------------------------------------------

    def _new_slot(self, i: int) -> None:
        """Give pass ``i`` the next slot of the position arrays, its flags cleared."""
        n = self.n
        if self.ints.shape[1] == 0:
            # One slot per pass, allocated once and never grown (growing would copy the live
            # slots into fresh pages, about 6 ms at 10^5 bits).
            # np.empty touches no page, so the slots a frame never uses cost nothing; no row of
            # ``ints`` needs initialising (order and pos are written in full when a slot is
            # installed, and a leaf size is only read at the start of a known block, written
            # when that block became known). The flags are cleared slot by slot below rather
            # than by np.zeros, which zeroes all of them when the allocator reuses memory.
            self.ints = np.empty((_INT_ROWS, self.plan.n_passes * n), np.int32)
            self.flags = np.empty((_FLAG_ROWS, self.plan.n_passes * n), np.uint8)
        base = self.slots_used * n
        self.flags[:, base : base + n] = 0
        self.meta[i, _SLOT] = self.slots_used
        self.slots_used += 1

    # -- round trip 1: every pass's top-level parities -------------------------------------

    def top_level_queries(self) -> ParityQueries:
        """Top-level blocks of all passes, minus those inferable from the whole key's parity.

        Laid out pass by pass: pass 0's blocks, then each later permutation pass's blocks but
        its last, then one row (the subset) per bipartition pass with ``0 < |subset| < n``.
        """
        n = self.n
        passes, starts, ends = [], [], []
        for i, k in enumerate(self.plan.block_sizes):
            s = np.arange(0, n, k, dtype=np.int32)
            if i > 0:
                s = s[:-1]  # last block = total parity XOR the others
            passes.append(np.full(s.size, i, np.int16))
            starts.append(s)
            ends.append(np.minimum(s + k, n).astype(np.int32))
        h = self.meta[self.n_perm :, _TOP]
        asked = np.flatnonzero((h > 0) & (h < n))  # h in {0, n} discloses nothing new
        passes.append((asked + self.n_perm).astype(np.int16))
        starts.append(np.zeros(asked.size, np.int32))
        ends.append(h[asked].astype(np.int32))
        return ParityQueries._trusted(
            np.concatenate(passes), np.concatenate(starts), np.concatenate(ends)
        )

    def set_top_level_parities(self, queries: ParityQueries, answers: NDArray[np.uint8]) -> None:
        """Store Alice's top-level parities (inferring the omitted ones); seed half-key flags.

        ``queries`` is :meth:`top_level_queries`'s batch, so each pass's answers are a slice.
        """
        n = self.n
        at = 0
        total = 0
        for i, k in enumerate(self.plan.block_sizes):
            count = (n + k - 1) // k - (i > 0)
            got = answers[at : at + count]
            at += count
            if i == 0:
                total = _xor_all(got)
                self.alice_top.append(got)
            else:
                self.alice_top.append(np.append(got, np.uint8(total ^ _xor_all(got))))
        h = self.meta[self.n_perm :, _TOP]
        alice_subset = np.where(h == n, total, 0).astype(np.uint8)
        asked = (h > 0) & (h < n)
        alice_subset[asked] = answers[at:]
        self.alice_halves[self.n_perm :, 0] = alice_subset
        self.alice_halves[self.n_perm :, 1] = total ^ alice_subset

    # -- passes and rounds -----------------------------------------------------------------

    def activate(self, i: int, pending: ParityQueries) -> ParityQueries:
        """Start pass ``i``; return the next batch (``pending`` plus the new pass's odd blocks)."""
        self.meta[i, _STARTED] = 1
        if i >= self.n_perm and not _bob_half_parities(
            self.packed, self.masks[i - self.n_perm], self.alice_halves[i], self.half_odd[i]
        ):
            return pending  # a clean half-key pass: nothing to bisect, the batch is unchanged
        cp, cs = _requeue(pending.pass_index, pending.start, self.n, self.meta, self.flags)
        cp, cs = np.concatenate([cp, self.later[:, 0]]), np.concatenate([cs, self.later[:, 1]])
        if i < self.n_perm:
            self._new_slot(i)
            new_p, new_s = _start_permutation(
                i,
                np.uint64(pass_key(self.plan, i)),
                readonly(self.alice_top[i]),
                self.n,
                readonly(self.bob),
                self.meta,
                self.ints,
                self.flags,
            )
        else:
            h = int(self.meta[i, _TOP])
            starts = [s for half, s in ((0, 0), (1, h)) if self.half_odd[i, half]]
            new_p, new_s = np.full(len(starts), i, np.int64), np.array(starts, np.int64)
        return self._select(np.concatenate([cp, new_p]), np.concatenate([cs, new_s]))

    def widen(self, queries: ParityQueries, budget: int) -> ParityQueries:
        """The same leaves, each split ``2**m`` ways (at most ``budget`` queries in all)."""
        qp, qs, qm = _widen(
            queries.pass_index, queries.start, queries.end, budget, self.n, self.meta, self.ints
        )
        return ParityQueries._trusted(qp, qs, qm)

    def step(self, queries: ParityQueries, answers: NDArray[np.uint8]) -> ParityQueries:
        """Apply one round trip's answers; return the next batch of bisection queries."""
        out = _apply_select(
            queries.pass_index,
            queries.start,
            queries.end,
            answers,
            self.n,
            self.n_perm,
            self.bob,
            self.meta,
            self.ints,
            self.flags,
            self.masks,
            self.half_odd,
            self.packed,
            self.later,
            self.defer_levels,
            self.defer_min_leaves,
        )
        return self._finish(out)

    def _select(self, cp: NDArray[np.int64], cs: NDArray[np.int64]) -> ParityQueries:
        out = _select(
            cp,
            cs,
            self.n,
            self.n_perm,
            self.bob,
            self.meta,
            self.ints,
            self.flags,
            self.masks,
            self.half_odd,
            self.packed,
            self.defer_levels,
            self.defer_min_leaves,
        )
        return self._finish(out)

    def _finish(self, out: tuple[_I16, _I32, _I32, _I64, int, int]) -> ParityQueries:
        qp, qs, qm, held, n_later, flips = out
        self.flips += flips
        self.later = held[:n_later]
        if held.shape[0] > n_later:
            dp, ds = held[n_later:, 0], held[n_later:, 1]
            # Odd halves of bipartition passes without a position order: build it, retry.
            for i in np.unique(dp).tolist():
                if self.meta[i, _SLOT] < 0 and self.half_odd[i].any():
                    self._new_slot(i)
                    _materialize_bipartition(
                        i,
                        self.masks[i - self.n_perm],
                        self.n,
                        self.meta,
                        self.ints,
                        self.flags,
                        self.half_odd,
                    )
            keep = self.meta[dp, _SLOT] >= 0
            cp, cs = _requeue(qp, qs, self.n, self.meta, self.flags)
            return self._select(
                np.concatenate([cp, dp[keep], self.later[:, 0]]),
                np.concatenate([cs, ds[keep], self.later[:, 1]]),
            )
        return ParityQueries._trusted(qp, qs, qm)


def _xor_all(bits: NDArray[np.uint8]) -> int:
    return int(np.bitwise_xor.reduce(bits, initial=np.uint8(0)))
