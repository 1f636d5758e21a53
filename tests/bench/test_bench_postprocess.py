"""Post-processing benchmark: it runs and reports each part beside its reference.

Not timed assertions: the figures are read from `mdiqkd bench postprocess` / `mdiqkd bench report`.
"""

from __future__ import annotations

import pytest

from orchestration.benchmarks.postprocess import bench_postprocess


@pytest.mark.benchmark
def test_bench_postprocess_reports_each_part_beside_its_reference():
    data = bench_postprocess(cascade_frames=2, quick=True)
    assert {r["qber"] for r in data["cascade"]} == {0.01, 0.02, 0.05}
    for row in data["cascade"]:
        # seeded frames, all corrected; at or above the Shannon limit of the errors corrected
        assert row["frame_error_rate"] == 0.0 and row["efficiency_empirical"] >= 1.0
        assert row["ratio"] == pytest.approx(row["mbit_per_s"] / row["reference_mbit_per_s"])
    for row in data["amplification"] + data["authentication"]:
        assert row["ratio"] == pytest.approx(row["mbit_per_s"] / row["reference_mbit_per_s"])
    print(data)
