"""A run's report (issue 12, item 7): ``report.html`` and ``plots/*.png`` in its run directory,
from what the run left there (``journal.json``, the rounds' records, ``config.json``, and
``summary.json`` when the run got that far); docs/run-directory.md describes both.

The plots show each key round's QBER per basis, secure key rate and Bell-measurement rate, and
the aborted rounds, against emulated time (a round covers its slots / ``clock_rate_hz``), with
every fault of the journal's timeline shaded. ``report.html`` is one self-contained file: the
plots are embedded as ``data:`` URIs, the style is inline, nothing is fetched (a
Content-Security-Policy forbids it), so it opens from disk with no network. Every text that comes
from the scenario or the run (titles, names, targets, reasons, notes) is HTML-escaped.

The report only reads: the same run directory always gives the same report.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
#: The plots, in the order the report shows them: file stem, heading, what it shows.
PLOTS = (
    ("qber", "QBER per basis",
     "Z: error rate of the key bits after reconciliation (rounds aborted before it measured "
     "none); X: error rate of the X-basis test bits."),
    ("key_rate", "Secure key rate",
     "Key bits stored per emulated second of each round (0 for an aborted round)."),
    ("bsm_rate", "Bell-measurement rate",
     "Slots the relay announced as a successful Bell-state measurement, per emulated second."),
    ("aborts", "Aborted rounds", "Each aborted round, and their running count."),
)
#: The plot that shows a probe's metric (its tolerance is drawn there).
PLOT_OF_METRIC = {"qber_z": "qber", "qber_x": "qber", "secure_key_rate_bps": "key_rate",
                  "bsm_rate_hz": "bsm_rate"}


class ReportError(ValueError):
    """The run directory lacks what a report needs; the message names the file."""


# --- what the run left -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    """A finished run as the report reads it: its journal, the rounds' records (every round
    recorded), the clock rate, and ``summary.json`` (None when the run failed before it)."""

    run_dir: Path
    journal: dict[str, Any]
    records: list[dict[str, Any]]
    clock_rate_hz: float
    summary: dict[str, Any] | None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (is this a run directory of `mdiqkd run`?)"
                          ) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{path}: cannot be read as JSON ({e})") from None


def load_run(run_dir: Path) -> RunData:
    """Read a run directory: ``journal.json`` and ``config.json`` must be there; the records are
    ``rounds.jsonl`` (written once the nodes are done) or, for a run that failed before,
    ``alice/rounds.jsonl``."""
    from orchestration.run import _read_jsonl

    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory")
    journal = _json(run_dir / "journal.json")
    if not isinstance(journal, dict) or journal.get("format") != "mdiqkd-journal/1":
        raise ReportError(f"{run_dir / 'journal.json'}: not a journal of format mdiqkd-journal/1")
    config = _json(run_dir / "config.json")
    try:
        clock_rate_hz = float(config["scenario"]["clock_rate_hz"])
    except (KeyError, TypeError, ValueError):
        raise ReportError(f"{run_dir / 'config.json'}: no scenario.clock_rate_hz") from None
    if not clock_rate_hz > 0:
        raise ReportError(f"{run_dir / 'config.json'}: scenario.clock_rate_hz must be positive")
    path = run_dir / "rounds.jsonl"
    records = _read_jsonl(path if path.is_file() else run_dir / "alice" / "rounds.jsonl")
    summary_path = run_dir / "summary.json"
    summary = _json(summary_path) if summary_path.is_file() else None
    return RunData(run_dir, journal, records, clock_rate_hz, summary)


@dataclass(frozen=True)
class RoundSeries:
    """One entry per recorded round, sorted by slot: its number, its time ``[start_s,
    stop_s)`` (slots / clock rate), ``qber_z`` (of rounds that reached reconciliation, else NaN:
    the pre-check's value is the scenario's prior, not a measurement), ``qber_x``,
    ``key_rate_bps`` (stored key bits / the round's seconds), ``bsm_rate_hz`` (announced slots /
    the round's seconds; NaN without an announcement) and ``aborted``."""

    round: np.ndarray
    start_s: np.ndarray
    stop_s: np.ndarray
    qber_z: np.ndarray
    qber_x: np.ndarray
    key_rate_bps: np.ndarray
    bsm_rate_hz: np.ndarray
    aborted: np.ndarray


def _column(records: Sequence[dict[str, Any]], key: str,
            keep: Iterable[bool] | None = None) -> np.ndarray:
    flags = keep if keep is not None else (True for _ in records)
    return np.array([float(r[key]) if ok and r.get(key) is not None else np.nan
                     for r, ok in zip(records, flags, strict=False)], dtype=float)


def round_series(records: Sequence[dict[str, Any]], clock_rate_hz: float) -> RoundSeries:
    """The records' figures per round (``RoundSeries``)."""
    rs = sorted(records, key=lambda r: int(r["start_slot"]))
    start = np.array([int(r["start_slot"]) for r in rs], dtype=float) / clock_rate_hz
    stop = np.array([int(r["stop_slot"]) for r in rs], dtype=float) / clock_rate_hz
    seconds = stop - start
    with np.errstate(divide="ignore", invalid="ignore"):
        key_rate = np.array([float(r.get("secure_bits") or 0) for r in rs]) / seconds
        bsm = _column(rs, "announced") / seconds
    return RoundSeries(
        np.array([int(r.get("round", k)) for k, r in enumerate(rs)], dtype=int), start, stop,
        _column(rs, "qber_z", (r.get("phase") == "final" for r in rs)), _column(rs, "qber_x"),
        key_rate, bsm, np.array([bool(r.get("aborted")) for r in rs], dtype=bool))


# --- the plots ----------------------------------------------------------------------------------


def fault_windows(journal: dict[str, Any]) -> list[tuple[str, float, float]]:
    """What the plots shade: each fault that took effect (``label``, ``start_s``, ``end_s``) and
    each action reached (start equal to end), from the journal's timeline."""
    out = []
    for s in journal.get("timeline", []):
        if not s.get("reached", True):
            continue
        if s["kind"] == "fault" and s["end_s"] <= s["start_s"]:
            continue  # shorter than a settings frame: it covered no slot
        out.append((f"{s['name']} ({s['type']})", float(s["start_s"]), float(s["end_s"])))
    return out


def run_end_s(data: RunData) -> float:
    """Where the plots' time axis ends: the end of the run as judged, or of the last round
    recorded, whichever is later (the planned end when there is neither)."""
    run = data.journal.get("run", {})
    last = max((int(r["stop_slot"]) for r in data.records), default=0) / data.clock_rate_hz
    end = max(float(run.get("emulated_seconds_recorded") or 0.0), last)
    return end or float(run.get("emulated_seconds_planned") or 0.0)


def write_plots(data: RunData, directory: Path) -> dict[str, Path]:
    """Render ``PLOTS`` as PNG files in ``directory``; returns each plot's path by stem."""
    from orchestration.plots import Bound, Curve, Rounds, Window, plot_aborts, plot_rounds

    directory.mkdir(exist_ok=True)
    s = round_series(data.records, data.clock_rate_hz)
    rounds = Rounds(s.start_s, s.stop_s, s.aborted)
    windows = [Window(*w) for w in fault_windows(data.journal)]
    end = run_end_s(data)
    bounds: dict[str, list[Bound]] = {}
    for p in data.journal.get("hypothesis", {}).get("probes", []):
        plot = PLOT_OF_METRIC.get(p["metric"])
        for side in ("min", "max"):
            value = p["tolerance"].get(side)
            if plot is not None and value is not None and not (side == "min" and value == 0):
                bounds.setdefault(plot, []).append(Bound(f"{p['name']} {side}", float(value)))
    paths = {stem: directory / f"{stem}.png" for stem, _, _ in PLOTS}
    title = {stem: heading for stem, heading, _ in PLOTS}
    plot_rounds(paths["qber"], rounds, [Curve("QBER Z", s.qber_z, "tab:blue"),
                                        Curve("QBER X", s.qber_x, "tab:green")],
                title["qber"], "error rate", windows, end, bounds.get("qber", []))
    plot_rounds(paths["key_rate"], rounds, [Curve("key rate", s.key_rate_bps, "tab:blue")],
                title["key_rate"], "bits per emulated s", windows, end,
                bounds.get("key_rate", []), engineering=True)
    plot_rounds(paths["bsm_rate"], rounds, [Curve("BSM rate", s.bsm_rate_hz, "tab:purple")],
                title["bsm_rate"], "per emulated s", windows, end,
                bounds.get("bsm_rate", []), engineering=True)
    plot_aborts(paths["aborts"], rounds, title["aborts"], windows, end)
    return paths


# --- text ---------------------------------------------------------------------------------------


def tolerance_text(t: dict[str, Any]) -> str:
    """A probe's tolerance: ``= 0``, ``[0, 0.03]``, ``≥ 5e+05``, ``≤ 1.5``."""
    lo, hi = t["min"], t["max"]
    if lo is not None and hi is not None:
        return f"= {lo:g}" if lo == hi else f"[{lo:g}, {hi:g}]"
    return f"≥ {lo:g}" if lo is not None else f"≤ {hi:g}"


def measured_text(windows: list[dict[str, Any]]) -> str:
    """A result's measured value: one window's, or the range over its windows."""
    values = [w["value"] for w in windows if w["value"] is not None]
    if not values:
        return ""
    if len(windows) == 1:
        return f"{values[0]:.4g}"
    return f"{min(values):.4g} … {max(values):.4g} ({len(windows)} windows)"


def phase_text(result: dict[str, Any]) -> str:
    """``before``, ``during FAULT`` or ``after``."""
    return f"during {result['segment']}" if result["phase"] == "during" else result["phase"]


def worst_by(result: dict[str, Any]) -> float | None:
    """How far the result's worst window is outside its tolerance (None: inside, or no value)."""
    bys = [w["by"] for w in result.get("windows", []) if w.get("holds") is False
           and w.get("by") is not None]
    return max(bys) if bys else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary_lines(data: RunData) -> list[str]:
    """The report's short human summary: how the run ended, what it delivered, the verdict
    (each deviation: which probe, in which phase, by how much) and the faults."""
    j, run = data.journal, data.journal.get("run", {})
    recorded, planned = run.get("rounds_recorded", len(data.records)), run.get("rounds_planned")
    status, by = j.get("status"), j.get("interrupted_by")
    seconds = float(run.get("emulated_seconds_recorded") or 0.0)
    if status == "completed":
        lines = [f"The run completed: {_plural(recorded, 'key round')} of {planned}, "
                 f"{seconds:.4g} emulated seconds."]
    elif status == "failed":
        lines = [f"The run FAILED (a node failed; its log is in logs/): the report shows the "
                 f"{_plural(len(data.records), 'round')} Alice recorded, of {planned} planned."]
    elif by == "fail_fast":
        lines = [f"runtime.fail_fast stopped the run at round {run.get('fail_fast_round')}: "
                 f"the verdict judges {recorded} of {planned} rounds."]
    else:
        lines = [f"The run was interrupted ({by}) after {_plural(recorded, 'round')} of "
                 f"{planned}."]
    aborted = [r for r in data.records if r.get("aborted")]
    bits = sum(int(r.get("secure_bits") or 0) for r in data.records)
    match = run.get("keys_match")
    keys = {True: "the users' stored keys match", False: "the users' stored keys DIFFER",
            None: "the key stores were not compared"}[match]
    lines.append(f"{_plural(len(aborted), 'round')} aborted of {len(data.records)} recorded; "
                 f"{bits} key bits stored; {keys}.")
    probes = j.get("hypothesis", {}).get("probes", [])
    title = j.get("hypothesis", {}).get("title")
    if not probes:
        lines.append("The scenario has no steady-state hypothesis.")
    else:
        counts = Counter(r["status"] for p in probes for r in p["results"])
        tally = ", ".join(f"{counts[s]} {s}" for s in ("held", "deviated", "no data",
                                                        "not measured", "not applicable")
                          if counts[s])
        verdict = "DEVIATED" if j.get("deviated") else "held"
        lines.append(f"The steady-state hypothesis “{title}” {verdict} ({tally}).")
        lines += [d["message"] for d in j.get("deviations", [])]
    faults = [s for s in j.get("timeline", []) if s["kind"] == "fault"]
    if not faults:
        lines.append("No fault was injected.")
    for s in faults:
        where = f" on {s['target']}" if s.get("target") else ""
        if not s.get("reached", True):
            lines.append(f"Fault {s['name']} ({s['type']}{where}) never took effect: it was "
                         "to start after the run's end.")
        else:
            lines.append(f"Fault {s['name']} ({s['type']}{where}) from {s['start_s']:.4g} s to "
                         f"{s['end_s']:.4g} s of emulated time, ended by {s['ended_by']}.")
    return lines


# --- report.html --------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Any value as HTML text, quotes escaped (for attributes too)."""
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return _e(value)
    if isinstance(value, float):
        return _e(f"{value:.4g}")
    return _e(value)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:1.5rem auto;max-width:1400px;padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:1.6rem;
border-bottom:1px solid #ddd}.sub{color:#666;font-size:.9rem}
.verdict{display:inline-block;padding:.15rem .6rem;border-radius:.3rem;font-weight:bold;
color:#fff}.v-held{background:#2e7d32}.v-deviated{background:#c62828}.v-none{background:#757575}
.summary{background:#f6f6f6;border-left:4px solid #999;padding:.5rem 1rem}
.summary li{margin:.2rem 0}.summary .dev{color:#b71c1c;font-weight:bold}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1rem}
figure{margin:0}figure img{width:100%;height:auto;border:1px solid #e0e0e0}
figcaption{font-size:.85rem;color:#555}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.s-held td.status{color:#2e7d32;font-weight:bold}
tr.s-deviated td.status,tr.s-no-data td.status{color:#c62828;font-weight:bold}
tr.s-not-measured td.status{color:#9a6700}tr.s-not-applicable{color:#888}
"""


def _table(headers: Sequence[str], rows: Iterable[str], cls: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>' + "".join(rows) + \
        "</tbody></table>"


def _hypothesis_rows(journal: dict[str, Any]) -> list[str]:
    rows = []
    for p in journal.get("hypothesis", {}).get("probes", []):
        for r in p["results"]:
            by = worst_by(r)
            note = r.get("note") or "; ".join(dict.fromkeys(
                w["note"] for w in r.get("windows", []) if w.get("note")))
            window = "" if p.get("window_s") is None else f"{p['window_s']:g} s"
            rows.append(
                f'<tr class="s-{_e(r["status"].replace(" ", "-"))}" data-probe="{_e(p["name"])}"'
                f' data-phase="{_e(r["phase"])}" data-segment="{_e(r["segment"])}">'
                f"<td>{_e(p['name'])}</td><td>{_e(p['metric'])}</td>"
                f"<td>{_e(tolerance_text(p['tolerance']))}</td><td>{_e(window)}</td>"
                f"<td>{_e(phase_text(r))}</td>"
                f"<td class=\"num\">{_num(r['start_s'])} – {_num(r['end_s'])}</td>"
                f"<td class=\"num measured\">{_e(measured_text(r.get('windows', [])))}</td>"
                f"<td class=\"status\">{_e(r['status'])}</td>"
                f"<td class=\"num\">{_num(by)}</td><td>{_e(note)}</td></tr>")
    return rows


def _timeline_rows(journal: dict[str, Any]) -> list[str]:
    rows = []
    for s in journal.get("timeline", []):
        params = ", ".join(f"{k}={v}" for k, v in (s.get("params") or {}).items())
        rows.append(
            f'<tr data-name="{_e(s["name"])}"><td>{_e(s["name"])}</td><td>{_e(s["kind"])}</td>'
            f"<td>{_e(s['type'])}</td><td>{_e(s.get('target') or 'every active fault')}</td>"
            f"<td>{_e(params)}</td><td class=\"num\">{_num(s['at_s'])}</td>"
            f"<td class=\"num start\">{_num(s['start_s'])}</td>"
            f"<td class=\"num end\">{_num(s['end_s'])}</td>"
            f"<td>{_e(s['ended_by'])}</td><td>{_e('yes' if s.get('reached', True) else 'no')}"
            "</td></tr>")
    for r in journal.get("rollbacks", []):
        rows.append(
            f'<tr data-name="{_e(r["name"])}"><td>{_e(r["name"])}</td><td>rollback</td>'
            f"<td>{_e(r['type'])}</td><td>{_e(r.get('target') or 'every active fault')}</td>"
            f"<td>{_e(', '.join(f'{k}={v}' for k, v in (r.get('params') or {}).items()))}</td>"
            f"<td class=\"num\">{_num(r['at_s'])}</td><td class=\"num start\">"
            f"{_num(r['at_s'])}</td><td class=\"num end\">{_num(r['at_s'])}</td>"
            f"<td>{_e('ended ' + (', '.join(r['ended']) or 'nothing'))}</td>"
            f"<td>{_e('yes' if r.get('executed') else 'no (the run stopped early)')}</td></tr>")
    return rows


def _facts_rows(data: RunData) -> list[str]:
    j, run = data.journal, data.journal.get("run", {})
    facts: list[tuple[str, Any]] = [
        ("status", j.get("status")), ("interrupted by", j.get("interrupted_by")),
        ("seed", j.get("seed")), ("entropy", j.get("entropy")),
        ("rounds planned / recorded / judged",
         f"{run.get('rounds_planned')} / {len(data.records)} / {run.get('rounds_recorded')}"),
        ("emulated seconds per round", run.get("seconds_per_round")),
        ("emulated seconds judged", run.get("emulated_seconds_recorded")),
        ("keys match", run.get("keys_match")),
        ("rounds whose keys differ", _rounds_text(run.get("mismatched_rounds")))]
    if data.summary is not None:
        sm = data.summary
        facts += [("secure bits (summary.json)", sm.get("secure_bits")),
                  ("key rate per emulated s", sm.get("key_rate_bps_emulated")),
                  ("mean QBER Z / X", " / ".join(
                      _num(v) for v in (sm.get("qber") or {}).values()))]
    facts.append(("wall seconds", (j.get("wall_clock") or {}).get("wall_seconds")))
    reasons = Counter(str(r.get("abort_reason")) for r in data.records if r.get("aborted"))
    facts += [(f"abort reason ({_plural(n, 'round')})", reason)
              for reason, n in sorted(reasons.items())]
    return [f"<tr><th>{_e(k)}</th><td>"
            f"{v if k.startswith('mean QBER') else '—' if v is None else _num(v)}</td></tr>"
            for k, v in facts]


def _rounds_text(rounds: list[int] | None) -> str | None:
    if rounds is None:
        return "not known (a key store is missing)"
    return ", ".join(map(str, rounds)) or "none"


def render_html(data: RunData, plots: dict[str, Path]) -> str:
    """``report.html``'s text: the plots (``plots``: PNG paths by stem) embedded as data URIs."""
    j = data.journal
    probes = j.get("hypothesis", {}).get("probes", [])
    if not probes:
        badge = '<span class="verdict v-none">no hypothesis</span>'
    elif j.get("deviated"):
        badge = '<span class="verdict v-deviated">hypothesis DEVIATED</span>'
    else:
        badge = '<span class="verdict v-held">hypothesis held</span>'
    deviations = {d["message"] for d in j.get("deviations", [])}
    items = "".join(f'<li class="dev">{_e(x)}</li>' if x in deviations else f"<li>{_e(x)}</li>"
                    for x in summary_lines(data))
    figures = []
    for stem, heading, caption in PLOTS:
        png = base64.b64encode(plots[stem].read_bytes()).decode("ascii")
        figures.append(
            f'<figure id="plot-{stem}"><img alt="{_e(heading)} against emulated time" '
            f'src="data:image/png;base64,{png}"><figcaption><b>{_e(heading)}</b>: '
            f"{_e(caption)} Fault windows are shaded; aborted rounds are red crosses."
            "</figcaption></figure>")
    hypothesis = _table(("probe", "metric", "tolerance", "window", "phase", "phase time (s)",
                         "measured", "status", "by", "note"), _hypothesis_rows(j),
                        "hypothesis") if probes else "<p>The scenario has no steady-state " \
        "hypothesis.</p>"
    timeline = _table(("name", "kind", "type", "target", "params", "at (s)", "start (s)",
                       "end (s)", "ended by", "reached"), _timeline_rows(j), "timeline") \
        if j.get("timeline") or j.get("rollbacks") else "<p>No fault and no action.</p>"
    hyp_title = j.get("hypothesis", {}).get("title")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(j.get('title'))} — mdiqkd run report</title><style>{_CSS}</style></head>"
        f"<body><h1>{_e(j.get('title'))}</h1>"
        f'<p class="sub">mdiqkd run report · {_e(data.run_dir.name)} · {badge}</p>'
        f'<section id="summary"><h2>Summary</h2><ul class="summary">{items}</ul></section>'
        f'<section id="plots"><h2>Against emulated time</h2><div class="plots">'
        f"{''.join(figures)}</div></section>"
        f'<section id="hypothesis"><h2>Steady-state hypothesis'
        f"{': ' + _e(hyp_title) if hyp_title else ''}</h2>{hypothesis}</section>"
        f'<section id="timeline"><h2>Faults and actions (emulated time)</h2>{timeline}'
        "</section>"
        f'<section id="run"><h2>The run</h2><table class="facts"><tbody>'
        f"{''.join(_facts_rows(data))}</tbody></table></section>"
        "<p class=\"sub\">Written by <code>mdiqkd run</code> (rebuild it with <code>mdiqkd "
        "report RUN_DIR</code>) from journal.json and rounds.jsonl of this run directory.</p>"
        "</body></html>\n")


def write_report(run_dir: Path, data: RunData | None = None) -> Path:
    """Write ``plots/*.png`` and ``report.html`` in ``run_dir`` (from ``data`` when given, else
    from what ``load_run`` reads); returns the report's path. ReportError when the directory
    lacks ``journal.json`` or ``config.json``."""
    data = data if data is not None else load_run(run_dir)
    plots = write_plots(data, run_dir / PLOTS_DIR)
    path = run_dir / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(data, plots), encoding="utf-8")
    tmp.replace(path)
    return path
