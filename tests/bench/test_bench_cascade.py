"""Cascade benchmark: every field of a row, at toy size, and the `mdiqkd bench cascade` table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from classical.estimation import binary_entropy
from orchestration.benchmarks.cascade import bench_cascade
from orchestration.cli import app


@pytest.mark.benchmark
def test_bench_reports_every_field_at_toy_size() -> None:
    rows = bench_cascade(
        qbers=(0.03,),
        block_bits=(3_000,),
        frames=2,
        rng=np.random.default_rng(0),
        reference_bits=1_000,
    )
    (row,) = rows
    for key in ("qber", "block_bits", "efficiency", "frame_error_rate", "round_trips",
                "mbit_per_s", "reference_mbit_per_s", "reference_efficiency", "ratio"):
        assert key in row
    # both seeded frames are corrected, and no correct reconciliation discloses less than the
    # Shannon limit of the errors it corrected (below 1 would mean the count misses parities)
    assert row["frame_error_rate"] == 0.0
    assert row["efficiency_empirical"] >= 1.0
    assert row["disclosed_bits"] == pytest.approx(
        row["efficiency"] * 3_000 * binary_entropy(0.03), rel=1e-12)
    assert row["round_trips"] >= 1 and row["mbit_per_s"] > 0 and row["reference_mbit_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["mbit_per_s"] / row["reference_mbit_per_s"])


@pytest.mark.benchmark
def test_without_a_reference_rows_carry_no_ratio() -> None:
    (row,) = bench_cascade(qbers=(0.05,), block_bits=(2_000,), frames=1, reference_bits=0)
    assert "ratio" not in row and not any(k.startswith("reference") for k in row)


@pytest.mark.benchmark
def test_cli_prints_one_row_per_qber_and_size() -> None:
    result = CliRunner().invoke(app, ["bench", "cascade", "--qbers", "0.02,0.05",
                                      "--block-bits", "2000", "--frames", "1",
                                      "--reference-bits", "500", "--variant", "pow2", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["cascade"]
    assert [(r["qber"], r["block_bits"], r["variant"]) for r in rows] == [
        (0.02, 2000, "pow2"), (0.05, 2000, "pow2")]


@pytest.mark.parametrize("args", [["--variant", "nope"], ["--qbers", "0.6"],
                                  ["--block-bits", "x"], ["--frames", "0"]])
def test_cli_rejects_bad_options(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", "cascade", *args])
    assert result.exit_code == 2 and "error:" in result.output
