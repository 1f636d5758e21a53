"""What every report.html must hold, checked by parsing it (html.parser): used by the tests of
orchestration/report.py and by the tests that make a real run (test_gameday_run.py)."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

PLOT_STEMS = ("qber", "key_rate", "bsm_rate", "aborts")
#: Smallest size of a plot worth the name, in pixels and bytes.
MIN_SIZE_PX = (400, 200)
MIN_PNG_BYTES = 5_000
#: How the plots paint a fault window (tab:orange at alpha 0.18 over white) and an aborted round
#: (tab:red); ``shade_runs`` matches within this many levels per channel.
FAULT_SHADE_RGB = np.array([255, 255, 255]) * 0.82 + np.array([255, 127, 14]) * 0.18
ABORT_RGB = np.array([214, 39, 40])
COLOR_TOLERANCE = 3


class Parsed(HTMLParser):
    """The parts of a report the tests look at: every start tag with its attributes, each
    figure's image source by figure id, each table's body rows (attributes, cell texts) by the
    table's class, and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.figures: dict[str, str] = {}
        self.rows: dict[str, list[tuple[dict[str, str | None], list[str]]]] = {}
        self.text: list[str] = []
        self._figure: str | None = None
        self._table: str | None = None
        self._head = False
        self._row: tuple[dict[str, str | None], list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "figure":
            self._figure = a.get("id")
        elif tag == "img" and self._figure is not None:
            self.figures[self._figure] = a.get("src") or ""
        elif tag == "table":
            self._table = a.get("class") or ""
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and self._table is not None and not self._head:
            self._row = (a, [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        elif tag == "table":
            self._table = None
        elif tag == "thead":
            self._head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.rows.setdefault(self._table, []).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Parsed:
    p = Parsed()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def png_of(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    return base64.b64decode(src[len(prefix):], validate=True)


def pixels(png: bytes) -> np.ndarray:
    """The PNG's RGB pixels; it must decode and be of a plot's size."""
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    assert image.size[0] >= MIN_SIZE_PX[0] and image.size[1] >= MIN_SIZE_PX[1], image.size
    assert len(png) >= MIN_PNG_BYTES, len(png)
    return np.asarray(image.convert("RGB"), dtype=float)


def colored(rgb: np.ndarray, color: np.ndarray) -> np.ndarray:
    return (np.abs(rgb - color) <= COLOR_TOLERANCE).all(axis=-1)


def shade_runs(rgb: np.ndarray, gap_px: int = 4) -> list[tuple[int, int]]:
    """The column ranges [first, last] painted as a fault window along the image's middle row
    (grid lines cross a window: gaps up to ``gap_px`` columns join)."""
    cols = np.flatnonzero(colored(rgb[rgb.shape[0] // 2], FAULT_SHADE_RGB))
    runs: list[tuple[int, int]] = []
    for c in cols:
        if runs and c - runs[-1][1] <= gap_px:
            runs[-1] = (runs[-1][0], int(c))
        else:
            runs.append((int(c), int(c)))
    return runs


def _number(value: float) -> str:
    return f"{value:.4g}"


def check_report(run_dir: Path) -> Parsed:
    """Check ``run_dir``'s report against its journal: self-contained, the four plots (PNG, of a
    plot's size, also as files in plots/, fault windows shaded when the journal has faults, red
    marks when a round aborted), one hypothesis row per probe and phase segment with the
    journal's status and value, and one timeline row per fault and action with its times."""
    journal = json.loads((run_dir / "journal.json").read_text())
    report = parse(run_dir / "report.html")
    for tag, attrs in report.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base"), tag
        for name in ("src", "href", "srcset", "action", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:"), (tag, name, value)
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)

    faults = [s for s in journal["timeline"] if s["kind"] == "fault" and s["reached"]
              and s["end_s"] > s["start_s"]]
    path = run_dir / "rounds.jsonl"  # written once the nodes are done; else Alice's
    path = path if path.exists() else run_dir / "alice" / "rounds.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    any_aborted = any(r.get("aborted") for r in records)
    assert sorted(report.figures) == sorted(f"plot-{s}" for s in PLOT_STEMS)
    for stem in PLOT_STEMS:
        png = png_of(report.figures[f"plot-{stem}"])
        assert png == (run_dir / "plots" / f"{stem}.png").read_bytes()
        rgb = pixels(png)
        runs = shade_runs(rgb)
        assert len(runs) == len(faults), (stem, runs)
        assert colored(rgb, ABORT_RGB).any() == any_aborted, stem

    rows = report.rows.get("hypothesis", [])
    expected = [(p, r) for p in journal["hypothesis"]["probes"] for r in p["results"]]
    assert len(rows) == len(expected)
    for (attrs, cells), (p, r) in zip(rows, expected, strict=True):
        assert (attrs["data-probe"], attrs["data-phase"], attrs["data-segment"]) == (
            p["name"], r["phase"], r["segment"])
        assert cells[0] == p["name"] and cells[1] == p["metric"] and cells[7] == r["status"]
        values = [w["value"] for w in r["windows"] if w["value"] is not None]
        if len(r["windows"]) == 1 and values:
            assert cells[6] == _number(values[0])
        elif values:
            assert cells[6] == (f"{_number(min(values))} … {_number(max(values))} "
                                f"({len(r['windows'])} windows)")
        else:
            assert cells[6] == ""

    timeline = report.rows.get("timeline", [])
    entries = journal["timeline"] + journal["rollbacks"]
    assert len(timeline) == len(entries)
    for (attrs, cells), s in zip(timeline, journal["timeline"], strict=False):
        assert attrs["data-name"] == cells[0] == s["name"]
        assert (cells[6], cells[7]) == (_number(s["start_s"]), _number(s["end_s"]))
    return report
