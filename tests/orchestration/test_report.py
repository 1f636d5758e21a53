"""orchestration/report.py: report.html and plots/*.png of a run directory, from synthetic
records judged by the real verdict (``write_journal``); real runs are checked in
test_gameday_run.py. No statistics here: every expected value is a formula of the records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.report import REPORT_FILE, ReportError, load_run, round_series, write_report
from orchestration.run import prepare_run_dir, write_journal
from tests.orchestration.reportcheck import (
    PLOT_STEMS,
    check_report,
    pixels,
    png_of,
    shade_runs,
)

runner = CliRunner()


def record(k: int, slots: int, aborted: bool = False, **fields):
    """Round ``k`` of ``slots`` slots: a final round with a stored key unless aborted (then it
    stopped at the pre-check, whose qber_z is the prior, not a measurement)."""
    base = {"round": k, "start_slot": k * slots, "stop_slot": (k + 1) * slots,
            "emulated_seconds": slots / 1e9, "announced": 1_000_000 + 1000 * k,
            "sifted": 500_000, "x_bits": 100_000, "qber_x": 0.30 + 0.01 * k,
            "key_bits_raw": 300_000, "aborted": aborted,
            "phase": "precheck" if aborted else "final", "qber_z": 0.01 if aborted else 0.002,
            "abort_reason": "secure length <= 0 (psi+-: -1)" if aborted else None,
            "secure_bits": 0 if aborted else 20_000 + k}
    return {**base, **fields}


def make_run(tmp_path, aborted=(False, True, False), status="completed", **overrides):
    """A run directory as `mdiqkd run` leaves it, without running the nodes: config.json, the
    rounds' records, journal.json by the real verdict; then its report."""
    sc = load_scenario(DEFAULT_SCENARIO, {"runtime": {"rounds": len(aborted)}, **overrides})
    sc = sc.for_run()
    run_dir = prepare_run_dir(sc, tmp_path / "run")
    records = [record(k, sc.round_slots, a) for k, a in enumerate(aborted)]
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_journal(sc, run_dir, status, records, {"wall_seconds": 1.5})
    write_report(run_dir)
    return sc, run_dir, records


LOSS = {"type": "loss", "target": "link/alice-charles", "params": {"extra_db": 3}}
GAME_DAY = {
    "steady_state": {"title": "keys flow", "probes": [
        {"name": "bsm", "metric": "bsm_rate_hz", "tolerance": {"min": 5e5}},
        {"name": "qx", "metric": "qber_x", "tolerance": [0, 0.305], "window": "1s"},
        {"name": "no-mismatch", "metric": "key_mismatches", "tolerance": 0}]},
    "method": [{"at": "1s", "name": "first", "duration": "1s", "fault": LOSS},
               {"at": "4s", "name": "second", "duration": "2s", "fault": LOSS}],
    "rollbacks": [{"name": "clear", "action": {"type": "clear_faults"}}]}


def test_round_series_are_the_records_figures_per_emulated_second():
    clock = 2e9
    records = [record(1, 4000, aborted=True), record(0, 4000, announced=None)]
    s = round_series(records, clock)
    assert s.round.tolist() == [0, 1]  # sorted by slot
    np.testing.assert_array_equal(s.start_s, [0.0, 4000 / clock])
    np.testing.assert_array_equal(s.stop_s, [4000 / clock, 8000 / clock])
    np.testing.assert_allclose(s.key_rate_bps, [20_000 * clock / 4000, 0.0])
    assert np.isnan(s.bsm_rate_hz[0]) and s.bsm_rate_hz[1] == pytest.approx(1_001_000 * clock
                                                                             / 4000)
    # the pre-check's qber_z is the prior: no measurement
    assert s.qber_z[0] == 0.002 and np.isnan(s.qber_z[1])
    np.testing.assert_allclose(s.qber_x, [0.30, 0.31])
    assert s.aborted.tolist() == [False, True]


def test_a_game_day_report_has_its_plots_tables_and_fault_windows(tmp_path):
    sc, run_dir, _ = make_run(tmp_path, **GAME_DAY)
    report = check_report(run_dir)
    journal = json.loads((run_dir / "journal.json").read_text())
    assert journal["deviated"]  # qber_x 0.31 in round 1 is above 0.305
    text = " ".join(report.text)
    assert "DEVIATED" in text
    for d in journal["deviations"]:
        assert d["message"] in text  # which probe, in which phase, by how much
    # the two faults, 1 s and 2 s long and 3 s apart, shaded in proportion on every plot
    for stem in PLOT_STEMS:
        (a0, a1), (b0, b1) = shade_runs(pixels(png_of(report.figures[f"plot-{stem}"])))
        width = a1 - a0 + 1
        assert abs((b1 - b0 + 1) - 2 * width) <= 3, stem
        assert abs((b0 - a0) - 3 * width) <= 3, stem


def test_a_run_without_faults_or_hypothesis_still_gets_a_report(tmp_path):
    _, run_dir, _ = make_run(tmp_path, aborted=(False, False))
    report = check_report(run_dir)
    text = " ".join(report.text)
    assert "The scenario has no steady-state hypothesis." in text
    assert "No fault was injected." in text
    assert "hypothesis" not in report.rows


def test_a_failed_run_s_report_says_so_and_shows_what_alice_recorded(tmp_path):
    sc = load_scenario(DEFAULT_SCENARIO, {"runtime": {"rounds": 4}}).for_run()
    run_dir = prepare_run_dir(sc, tmp_path / "run")
    (run_dir / "alice").mkdir(exist_ok=True)
    records = [record(0, sc.round_slots)]
    (run_dir / "alice" / "rounds.jsonl").write_text(json.dumps(records[0]) + "\n")
    write_journal(sc, run_dir, "failed", records, {"wall_seconds": 1.0})
    write_report(run_dir)
    text = " ".join(check_report(run_dir).text)
    assert "The run FAILED" in text and "1 round Alice recorded, of 4 planned" in text
    assert len(load_run(run_dir).records) == 1


HOSTILE = '<script>alert("x")</script> & "q" \'s'


def test_every_text_from_the_scenario_is_escaped(tmp_path):
    """Titles, names and reasons holding markup stay text: no tag of theirs reaches the page
    (check_report refuses any script, external source or event handler), and each reads back
    exactly. A name with mathtext (``$\\frac{$``) is drawn as text, not parsed."""
    hostile_probe = '"><img src="https://evil.example/p.png" onerror="alert(1)">'
    hostile_fault = "</td></tr></table><script>f()</script>$\\frac{$"
    _, run_dir, records = make_run(
        tmp_path, title=HOSTILE, steady_state={"title": "<b>bold</b>", "probes": [
            {"name": hostile_probe, "metric": "bsm_rate_hz", "tolerance": {"min": 1}}]},
        method=[{"at": "1s", "name": hostile_fault, "duration": "1s", "fault": LOSS}])
    journal_path = run_dir / "journal.json"
    report = check_report(run_dir)
    text = "".join(report.text)
    for s in (HOSTILE, "<b>bold</b>", hostile_probe, hostile_fault):
        assert s in text
    assert [t for t, _ in report.tags].count("img") == len(PLOT_STEMS)
    assert report.rows["hypothesis"][0][0]["data-probe"] == hostile_probe
    # a reason of a round, read from the records
    bad = '<iframe src="http://evil.example/">'
    records[1]["abort_reason"] = bad
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(run_dir)
    report = check_report(run_dir)
    assert bad in "".join(report.text)
    assert json.loads(journal_path.read_text())["title"] == HOSTILE


def test_the_report_is_self_contained(tmp_path):
    _, run_dir, _ = make_run(tmp_path, **GAME_DAY)
    html = (run_dir / REPORT_FILE).read_text()
    assert "default-src 'none'" in html  # nothing may be fetched, even if something slipped in
    assert "<style>" in html and "@import" not in html and "url(" not in html


def test_report_rebuilds_the_report_of_a_run_directory(tmp_path):
    _, run_dir, _ = make_run(tmp_path, **GAME_DAY)
    (run_dir / REPORT_FILE).unlink()
    for stem in PLOT_STEMS:
        (run_dir / "plots" / f"{stem}.png").unlink()
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert f"report: {run_dir / REPORT_FILE}" in result.stdout
    assert "The steady-state hypothesis “keys flow” DEVIATED" in result.stdout
    assert "✗ deviated" in result.stdout and "✓ held" in result.stdout
    check_report(run_dir)
    result = runner.invoke(app, ["report", str(run_dir), "--json"])
    data = json.loads(result.stdout)
    assert data["report"] == str(run_dir / REPORT_FILE) and data["deviated"] is True
    assert sorted(data["plots"]) == sorted(str(run_dir / "plots" / f"{s}.png")
                                           for s in PLOT_STEMS)


def test_report_of_a_directory_without_a_journal_is_one_line_and_status_2(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line == f"error: {tmp_path / 'journal.json'}: no such file (is this a run directory " \
        "of `mdiqkd run`?)"
    (tmp_path / "journal.json").write_text("{}")
    with pytest.raises(ReportError, match="not a journal of format mdiqkd-journal/1"):
        load_run(tmp_path)
