"""Reading a run's traces back: one key round as a span tree across the three nodes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class SpanRecord:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    start: datetime
    end: datetime
    attributes: dict[str, Any]
    links: list[str]
    children: list[SpanRecord] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1e3


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def load_spans(run_dir: Path) -> list[SpanRecord]:
    """Every span of a run; a missing run directory, a run without traces (tracing: false) and
    a run whose traces hold no span each raise a message that says which."""
    run_dir = Path(run_dir)
    trace_dir = run_dir / "traces"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    if not trace_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no traces/ directory (not a run directory, or a "
                                "run with tracing: false)")
    spans = []
    files = sorted(trace_dir.glob("*.jsonl"))
    if not files:
        raise ValueError(f"{trace_dir}: no trace files (*.jsonl) in it")
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                d = json.loads(line)
                spans.append(SpanRecord(
                    d["name"], d["resource"]["attributes"].get("service.name", path.stem),
                    d["context"]["trace_id"], d["context"]["span_id"], d.get("parent_id"),
                    d.get("kind", "").removeprefix("SpanKind."), _time(d["start_time"]),
                    _time(d["end_time"]), d.get("attributes", {}),
                    [lk["context"]["span_id"] for lk in d.get("links", [])]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: not an OpenTelemetry span ({e})") from None
    if not spans:
        raise ValueError(f"{trace_dir}: the trace files hold no span (did the run stop before "
                         "its first round ended?)")
    return spans


def round_trees(spans: list[SpanRecord]) -> dict[int, list[SpanRecord]]:
    """Root spans (with children attached) per round number."""
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        s.children.clear()
    roots: list[SpanRecord] = []
    for s in sorted(spans, key=lambda s: s.start):
        parent = by_id.get(s.parent_id) if s.parent_id else None
        if parent is None:
            roots.append(s)
        else:
            parent.children.append(s)
    rounds: dict[int, list[SpanRecord]] = {}
    for r in roots:
        rounds.setdefault(int(r.attributes.get("mdiqkd.round", -1)), []).append(r)
    return rounds
