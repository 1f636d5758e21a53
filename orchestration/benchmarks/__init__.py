"""Benchmarks, each figure reported beside a baseline measured in the same run.

One module per thing measured: :mod:`.sampler` (emulated slots/s), :mod:`.cascade`
(reconciliation f, FER, round trips, throughput), :mod:`.postprocess` (Cascade, privacy
amplification, authentication), :mod:`.e2e` (the quick-start scenario with three processes);
:mod:`.results` runs them all and writes the report (``mdiqkd bench report``, by default
``docs/benchmarks.md`` and ``docs/benchmarks.json``).
"""

from orchestration.benchmarks.cascade import bench_cascade
from orchestration.benchmarks.e2e import bench_e2e
from orchestration.benchmarks.postprocess import (
    bench_amplification,
    bench_authentication,
    bench_postprocess,
)
from orchestration.benchmarks.results import render_markdown, run_benchmarks, write_report
from orchestration.benchmarks.sampler import bench_sampler

__all__ = [
    "bench_amplification",
    "bench_authentication",
    "bench_cascade",
    "bench_e2e",
    "bench_postprocess",
    "bench_sampler",
    "render_markdown",
    "run_benchmarks",
    "write_report",
]
