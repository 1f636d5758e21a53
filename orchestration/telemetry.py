"""Telemetry setup per node process: OpenTelemetry tracer providers and exporters.

Default exporter: one JSON-lines file per node in the run directory (``traces/<node>.jsonl``),
one span per line in the SDK's own ``span.to_json()`` form. ``--otlp-endpoint`` adds an OTLP/HTTP
exporter (package ``opentelemetry-exporter-otlp-proto-http``). With tracing off the node gets a
no-op tracer, so instrumentation costs nothing (the e2e benchmark compares the two).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class JsonLinesSpanExporter(SpanExporter):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                self._file.write(span.to_json(indent=None) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def setup_tracing(service_name: str, run_dir: Path, enabled: bool = True,
                  otlp_endpoint: str | None = None) -> tuple[trace.Tracer, Callable[[], None]]:
    """A tracer for one node and the function that flushes and shuts it down."""
    if not enabled:
        return trace.NoOpTracer(), lambda: None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name,
                                                        "service.namespace": "mdiqkd"}))
    provider.add_span_processor(BatchSpanProcessor(
        JsonLinesSpanExporter(run_dir / "traces" / f"{service_name}.jsonl")))
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RuntimeError("--otlp-endpoint needs the package "
                               "opentelemetry-exporter-otlp-proto-http") from e
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    tracer = provider.get_tracer("mdiqkd")

    def shutdown() -> None:
        provider.force_flush()
        provider.shutdown()

    return tracer, shutdown


def otlp_endpoint_problem(endpoint: str, timeout_s: float = 1.0) -> tuple[str, str] | None:
    """Check an ``--otlp-endpoint`` before the run: ``("invalid", why)`` for a URL that is not
    ``http(s)://host[:port]/…``, ``("unreachable", why)`` when nothing accepts a TCP connection
    there (the run still writes its spans to ``traces/``), None when it can be reached."""
    import socket
    from urllib.parse import urlsplit

    try:
        url = urlsplit(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError as e:
        return "invalid", str(e)
    if url.scheme not in ("http", "https") or not url.hostname:
        return "invalid", "expected an http:// or https:// URL with a host"
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return None
    except OSError as e:
        return "unreachable", f"cannot connect to {url.hostname}:{port} ({e.strerror or e})"
