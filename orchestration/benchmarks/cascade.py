"""Cascade reconciliation: efficiency, frame error rate, round trips and throughput.

:func:`bench_cascade` reconciles random frames with i.i.d. errors through the in-memory channel
and returns one row per (QBER, frame size); it prints nothing (``mdiqkd bench cascade`` and
``mdiqkd bench report`` show the rows). f, FER and round trips are deterministic given the seed;
throughput depends on the machine and its load, so compare it only through ``ratio``.

* ``efficiency`` -- ``f = disclosed_bits / (n h(qber))`` with the *nominal* QBER (the BSC
  crossover probability used to draw the errors; the usual convention), averaged over frames;
  ``efficiency_empirical`` uses each frame's actual error fraction, ``efficiency_max`` is the
  worst frame.
* ``frame_error_rate`` -- fraction of frames whose corrected key still differs from Alice's
  (verification discards those later).
* ``round_trips`` -- mean ``ask_parities`` calls per frame (``round_trips_max`` the worst frame).
* ``mbit_per_s`` -- frame bits per second of wall time (total bits / total time) for the whole
  dialogue on one core: Bob's side, Alice's answers and the in-memory transport, in one thread.
  ``bob_mbit_per_s`` excludes the time spent inside the channel (Alice's side).
* ``reference_*`` -- the baseline, measured in the same run at the same QBER: textbook Cascade
  (Brassard-Salvail block sizes, 4 passes) written the straightforward way in pure Python, one
  parity per round trip, on one ``reference_bits``-bit frame. Its cost per bit is roughly
  size-independent (``O(n log n)`` work), so its Mbit/s stands for every frame size;
  ``ratio = mbit_per_s / reference_mbit_per_s``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from classical.cascade import CascadeParameters, reconcile
from classical.estimation import binary_entropy
from classical.reconciliation_channel import CascadePlan, InMemoryParityChannel, ParityQueries

__all__ = ["bench_cascade"]

Row = dict[str, float | int | str]


class _TimedChannel:
    """In-memory channel that also measures the time spent on Alice's side."""

    def __init__(self, alice_key: NDArray[np.uint8]) -> None:
        self._inner = InMemoryParityChannel(alice_key)
        self.seconds = 0.0

    def ask_parities(self, plan: CascadePlan, queries: ParityQueries) -> NDArray[np.uint8]:
        t0 = time.perf_counter()
        answers = self._inner.ask_parities(plan, queries)
        self.seconds += time.perf_counter() - t0
        return answers


def _frame(rng: np.random.Generator, n: int, qber: float) -> tuple[NDArray[np.uint8], ...]:
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    return alice, alice ^ (rng.random(n) < qber).astype(np.uint8)


def _reference_cascade(
    alice: list[int], bob: list[int], qber: float, rng: random.Random
) -> tuple[list[int], int, int]:
    """Textbook Cascade, the straightforward way: pure Python, one parity per round trip.

    Returns (Bob's corrected key, disclosed parities, round trips).
    """
    n = len(bob)
    bob = list(bob)
    k1 = max(1, math.ceil(0.73 / qber))
    disclosed = 0

    def ask(indices: list[int]) -> int:  # one question, one round trip
        nonlocal disclosed
        disclosed += 1
        return sum(alice[i] for i in indices) & 1

    def parity(indices: list[int]) -> int:
        return sum(bob[i] for i in indices) & 1

    def binary(indices: list[int]) -> int:
        while len(indices) > 1:
            left = indices[: len(indices) // 2]
            indices = left if ask(left) != parity(left) else indices[len(indices) // 2 :]
        bob[indices[0]] ^= 1
        return indices[0]

    passes: list[tuple[list[list[int]], list[int], list[int]]] = []
    for pass_index in range(4):
        order = list(range(n))
        rng.shuffle(order)
        size = min(n, k1 << pass_index)
        blocks = [order[s : s + size] for s in range(0, n, size)]
        block_of = [0] * n
        for b, block in enumerate(blocks):
            for i in block:
                block_of[i] = b
        alice_parity = [ask(block) for block in blocks]
        passes.append((blocks, block_of, alice_parity))
        todo = [(pass_index, b) for b in range(len(blocks)) if alice_parity[b] != parity(blocks[b])]
        while todo:
            p, b = todo.pop()
            blocks_p, _, alice_p = passes[p]
            if alice_p[b] == parity(blocks_p[b]):
                continue
            x = binary(blocks_p[b])
            for q in range(pass_index + 1):  # cascade: re-check blocks containing x
                blocks_q, block_of_q, alice_q = passes[q]
                bq = block_of_q[x]
                if alice_q[bq] != parity(blocks_q[bq]):
                    todo.append((q, bq))
    return bob, disclosed, disclosed


def _reference_row(qber: float, reference_bits: int, rng: np.random.Generator) -> Row:
    alice, bob = _frame(rng, reference_bits, qber)
    shuffle_rng = random.Random(int(rng.integers(2**63)))
    t0 = time.perf_counter()
    corrected, disclosed, round_trips = _reference_cascade(
        alice.tolist(), bob.tolist(), qber, shuffle_rng
    )
    seconds = time.perf_counter() - t0
    return {
        "reference_mbit_per_s": reference_bits / seconds / 1e6,
        "reference_efficiency": disclosed / (reference_bits * binary_entropy(qber)),
        "reference_round_trips": round_trips,
        "reference_frame_error": int(corrected != alice.tolist()),
        "reference_block_bits": reference_bits,
        "reference_note": (
            f"pure-Python textbook Cascade (k1=0.73/p, 4 passes, one parity per round trip), "
            f"one {reference_bits}-bit frame; Mbit/s taken as size-independent"
        ),
    }


def bench_cascade(
    qbers: Sequence[float] = (0.01, 0.02, 0.05),
    block_bits: Sequence[int] = (10**5, 10**6),
    frames: int | Mapping[int, int] = 10,
    rng: np.random.Generator | None = None,
    parameters: CascadeParameters | None = None,
    reference_bits: int = 20_000,
) -> list[Row]:
    """Measure Cascade on random frames with i.i.d. errors; one row per (QBER, frame size).

    Args:
        qbers: QBERs to simulate; each is also given to Cascade as its estimate.
        block_bits: frame sizes (bits).
        frames: frames per row, or a mapping ``{block_bits: frames}``.
        rng: randomness for keys, errors and shuffle seeds (default: a fixed seed, 2024).
        parameters: Cascade variant and schedule (default: :class:`CascadeParameters()`).
        reference_bits: frame size for the pure-Python baseline (0 skips it).

    Returns:
        Rows with keys ``qber, block_bits, frames, variant, efficiency, efficiency_empirical,
        efficiency_max, frame_error_rate, round_trips, round_trips_max, disclosed_bits,
        mbit_per_s, bob_mbit_per_s`` and, unless ``reference_bits`` is 0, the ``reference_*``
        fields and ``ratio`` described in the module docstring.
    """
    gen = rng if rng is not None else np.random.default_rng(2024)
    params = parameters or CascadeParameters()
    # Load/compile every numba kernel outside the timing. A too-low estimate leaves errors for
    # the half-key passes, which exercises their lazily built orders on both sides.
    warm_alice, warm_bob = _frame(gen, 2_000, 0.05)
    for estimate in (0.05, 0.002):
        reconcile(warm_bob, estimate, InMemoryParityChannel(warm_alice), gen, params)
    references = {q: _reference_row(q, reference_bits, gen) for q in qbers if reference_bits}
    rows: list[Row] = []
    for n in block_bits:
        count = frames[n] if isinstance(frames, Mapping) else frames
        for qber in qbers:
            eff, eff_emp, rts, disclosed, failures = [], [], [], [], 0
            wall = alice_side = 0.0
            for _ in range(count):
                alice, bob = _frame(gen, n, qber)
                errors = int(np.count_nonzero(alice != bob))
                channel = _TimedChannel(alice)
                t0 = time.perf_counter()
                result = reconcile(bob, qber, channel, gen, params)
                wall += time.perf_counter() - t0
                alice_side += channel.seconds
                failures += not np.array_equal(result.corrected_key, alice)
                eff.append(result.disclosed_bits / (n * binary_entropy(qber)))
                h_actual = binary_entropy(errors / n)
                eff_emp.append(result.disclosed_bits / (n * h_actual) if h_actual else math.nan)
                rts.append(result.round_trips)
                disclosed.append(result.disclosed_bits)
            row: Row = {
                "qber": qber,
                "block_bits": n,
                "frames": count,
                "variant": params.variant,
                "efficiency": float(np.mean(eff)),
                "efficiency_empirical": float(np.mean(eff_emp)),
                "efficiency_max": float(np.max(eff)),
                "frame_error_rate": failures / count,
                "round_trips": float(np.mean(rts)),
                "round_trips_max": int(np.max(rts)),
                "disclosed_bits": float(np.mean(disclosed)),
                "mbit_per_s": n * count / wall / 1e6,
                "bob_mbit_per_s": n * count / (wall - alice_side) / 1e6,
            }
            if qber in references:
                row.update(references[qber])
                row["ratio"] = row["mbit_per_s"] / references[qber]["reference_mbit_per_s"]
            rows.append(row)
    return rows
