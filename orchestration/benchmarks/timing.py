"""Wall-clock timing shared by the benchmarks: the best of a few repetitions."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_seconds(action: Callable[[], object], repeats: int) -> float:
    """The shortest wall time (s) of ``repeats`` calls of ``action``: the least disturbed one."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best
