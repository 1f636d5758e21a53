"""``--otlp-endpoint``: every node exports its spans over OTLP/HTTP as well as to JSON lines.

A minimal collector (an HTTP server on 127.0.0.1 that decodes the protobuf bodies with the
OpenTelemetry protocol package) stands in for a real one.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestration.config import DEFAULT_SCENARIO, load_scenario
from orchestration.run import execute, prepare_run_dir
from orchestration.runconfig import HOST
from orchestration.traces import load_spans


class _Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args: object) -> None:
        pass


def test_spans_reach_an_otlp_collector_from_all_four_nodes(tmp_path):
    collector = _Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://{HOST}:{collector.server_address[1]}/v1/traces"
        scenario = load_scenario(DEFAULT_SCENARIO, {"round_frames": 256, "rounds": 1})
        run_dir = prepare_run_dir(scenario, tmp_path / "otlp", otlp_endpoint=endpoint)
        execute(scenario, run_dir)
    finally:
        collector.shutdown()
        collector.server_close()
    received: dict[str, set[bytes]] = {}
    for path, content_type, body in collector.requests:
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            ids = received.setdefault(attrs["service.name"], set())
            for scope in resource_spans.scope_spans:
                ids.update(span.span_id for span in scope.spans)
    assert set(received) == {"alice", "bob", "charles", "nature"}
    # the same spans as the JSON-lines files, none missing
    for node, ids in received.items():
        local = {int(s.span_id, 16).to_bytes(8, "big") for s in load_spans(run_dir)
                 if s.service == node}
        assert local and ids == local
