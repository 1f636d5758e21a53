"""OpenTelemetry at the nodes' edge (API only; providers and exporters are set up by
``orchestration.telemetry``). Stage spans carry the round's numbers, never a secret."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def link_to(traceparent: str | None) -> Link | None:
    ctx = context_from(traceparent)
    if ctx is None:
        return None
    span_context = trace.get_current_span(ctx).get_span_context()
    return Link(span_context) if span_context.is_valid else None


def _attr(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class SpanStage:
    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def set(self, **attributes: Any) -> None:
        for k, v in attributes.items():
            if v is not None:  # unknown: absent from the span (OpenTelemetry has no null)
                self.span.set_attribute(f"mdiqkd.{k}", _attr(v))


class SpanObserver:
    """``classical.rounds.Observer`` as OpenTelemetry spans (one per stage), plus a report."""

    def __init__(self, tracer: trace.Tracer, round_id: int) -> None:
        self.tracer, self.round_id = tracer, round_id
        self._report: dict[str, Any] = {"timings_s": {}}

    def report(self) -> dict[str, Any]:
        return dict(self._report)

    @contextmanager
    def stage(self, name: str) -> Iterator[SpanStage]:
        with self.tracer.start_as_current_span(name) as span:
            span.set_attribute("mdiqkd.round", self.round_id)
            stage = _ReportingStage(span, self._report)
            t0 = time.perf_counter()
            try:
                yield stage
            finally:
                timings = self._report["timings_s"]
                timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 6)


class _ReportingStage(SpanStage):
    def __init__(self, span: trace.Span, report: dict[str, Any]) -> None:
        super().__init__(span)
        self.report = report

    def set(self, **attributes: Any) -> None:
        super().set(**attributes)
        self.report.update({k: None if v is None else _attr(v) for k, v in attributes.items()})


__all__ = ["SpanKind", "SpanObserver", "context_from", "current_traceparent", "link_to"]
