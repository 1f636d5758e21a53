"""nodes.metrics: Prometheus naming and labels, the round records' updates, the endpoint."""

from __future__ import annotations

import re
import urllib.request

import pytest

from nodes.metrics import (
    ABORT_REASONS,
    METRICS,
    REJECTED_FRAME_REASONS,
    NodeMetrics,
    abort_class,
    charles_metric_names,
    charles_round_observations,
    counter_metric_name,
    metrics_json_series,
    parse_exposition,
    user_round_observations,
)
from nodes.transport import Counters
from orchestration.runconfig import HOST, free_ports

#: base units (Prometheus conventions) a metric name may end with, before ``_total``
UNITS = ("ratio", "seconds", "bits", "hertz", "bits_per_second", "")
LABELS = {"basis", "detector", "reason", "peer", "loop", "action", "classes", "stage"}

RECORD = {"round": 3, "emulated_seconds": 3.145728, "announced": 3208435, "aborted": False,
          "abort_reason": None, "secure_bits": 164674, "sifted": 1866155,
          "key_bits_raw": 1127624, "qber_x": 0.3037834788220246, "qber_z": 0.0027216518981504475,
          "s11_z_lower": 465814.6118581274, "e11_x_upper": 0.11783391301930643,
          "leakage_bits": 43248.0, "round_trips": 24, "corrected_bits": 3069,
          "key_id": "r3-c0568fdebf27"}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_follows_prometheus_naming(name):
    spec = METRICS[name]
    assert re.fullmatch(r"mdiqkd_[a-z0-9_]+", name)
    assert name.endswith("_total") == (spec.kind == "counter")
    stem = name.removesuffix("_total")
    if spec.unit:
        assert stem.endswith("_" + spec.unit) or f"_{spec.unit}_" in stem, (name, spec.unit)
    assert spec.unit in UNITS
    assert set(spec.labels) <= LABELS
    assert spec.nodes and spec.help


def test_plain_counters_map_to_snake_case_total_counters():
    assert counter_metric_name("rounds_total") == "mdiqkd_rounds_total"
    assert counter_metric_name("pulse_batches_dropped_stale") == \
        "mdiqkd_pulse_batches_dropped_stale_total"
    # an error class in a counter's name (classical.peer counts rejected frames so)
    assert counter_metric_name("classical_frames_rejected_AuthenticationError") == \
        "mdiqkd_classical_frames_rejected_authentication_error_total"
    assert counter_metric_name("rounds-total") == "mdiqkd_rounds_total"


def test_every_counter_name_a_node_may_use_is_exported_and_never_raises():
    """A tampered frame is counted as ``classical_frames_rejected_AuthenticationError``: the
    metric must follow, never end the node (it once raised inside the peer's receive path)."""
    m = NodeMetrics("alice")
    c = Counters()
    c.attach_sink(m.count)
    c.add("classical_frames_rejected_AuthenticationError")
    c.add("mdiqkd_qber_ratio_total")  # nonsense: clashes with nothing, still no exception
    for key, value in c.values.items():
        name, labels, expected = metrics_json_series(key, value)
        assert _series(m, name, **labels) == expected
    m._instrument = None  # a broken exporter: said on stderr, the count goes on
    c.add("rounds_total")
    assert c.values["rounds_total"] == 1


def test_abort_reasons_become_a_small_fixed_set_never_the_message():
    assert abort_class("no announcement from charles (timed out after 10 s)") == "announcement"
    assert abort_class("announcement refused (slots out of range)") == "announcement"
    assert abort_class("key r4-abcdef not confirmed by Bob (ProtocolError: x)") == "key_discarded"
    assert abort_class("node stopped before Bob confirmed the key") == "stopped"
    assert abort_class(None) == "other" and abort_class("something new") == "other"
    for text in ("QBER 0.2 above threshold", "too few counts", "verification hash mismatch",
                 "r9-0123456789ab xyz"):
        assert abort_class(text) in ABORT_REASONS


def _series(m: NodeMetrics, name: str, **labels: str) -> float:
    hits = [v for lab, v in parse_exposition(m.exposition()).get(name, [])
            if all(lab.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def test_a_round_record_sets_qber_key_bits_and_rate_exactly():
    m = NodeMetrics("alice")
    m.apply(user_round_observations(RECORD))
    assert _series(m, "mdiqkd_qber_ratio", basis="Z", node="alice", link="alice-bob") == \
        RECORD["qber_z"]
    assert _series(m, "mdiqkd_qber_ratio", basis="X") == RECORD["qber_x"]
    assert _series(m, "mdiqkd_round_secure_key_bits") == RECORD["secure_bits"]
    assert _series(m, "mdiqkd_secure_key_rate_bits_per_second") == \
        RECORD["secure_bits"] / RECORD["emulated_seconds"]
    assert _series(m, "mdiqkd_ec_leakage_bits_total") == RECORD["leakage_bits"]
    assert _series(m, "mdiqkd_last_round") == RECORD["round"]
    m.apply(user_round_observations({**RECORD, "leakage_bits": 10.0}))
    assert _series(m, "mdiqkd_ec_leakage_bits_total") == RECORD["leakage_bits"] + 10
    assert "mdiqkd_rounds_aborted_total" not in parse_exposition(m.exposition())
    text = m.exposition()
    assert RECORD["key_id"] not in text  # a key's ID is never a label or a value


def test_each_stage_of_a_round_is_one_observation_of_the_stage_histogram():
    # the record's timings_s (the same clock as the stage spans): one observation per stage,
    # in the stage's own buckets (a 1 ms verification and a 10 s sifting apart)
    m = NodeMetrics("alice")
    timings = {"sift": 0.592756, "estimate": 0.563875, "reconcile": 0.296833,
               "verify": 0.001097, "amplify": 0.017783, "commit": 0.029844}
    m.apply(user_round_observations({**RECORD, "timings_s": timings}))
    m.apply(user_round_observations({**RECORD, "timings_s": {"sift": 7.5, "future": 1.0,
                                                             "verify": -1.0}}))
    series = parse_exposition(m.exposition())
    counts = {lab["stage"]: v for lab, v in series["mdiqkd_round_stage_duration_seconds_count"]}
    sums = {lab["stage"]: v for lab, v in series["mdiqkd_round_stage_duration_seconds_sum"]}
    assert counts == {**dict.fromkeys(timings, 1.0), "sift": 2.0}  # no unknown, no negative
    assert sums == pytest.approx({**timings, "sift": timings["sift"] + 7.5}, rel=1e-12)
    verify = {float(lab["le"]): v for lab, v in series["mdiqkd_round_stage_duration_seconds_bucket"]
              if lab["stage"] == "verify"}
    assert verify[0.001] == 0 and verify[0.005] == 1  # 1.097 ms lies in (1 ms, 5 ms]
    sift = {float(lab["le"]): v for lab, v in series["mdiqkd_round_stage_duration_seconds_bucket"]
            if lab["stage"] == "sift"}
    assert (sift[0.5], sift[1.0], sift[5.0], sift[10.0]) == (0, 1, 1, 2)


def test_an_aborted_round_counts_by_reason_and_a_superseding_line_counts_once():
    m = NodeMetrics("bob")
    aborted = {"round": 0, "emulated_seconds": 1.0, "aborted": True, "secure_bits": 0,
               "abort_reason": "no announcement from charles (timed out)"}
    m.apply(user_round_observations(aborted))
    assert _series(m, "mdiqkd_rounds_aborted_total", reason="announcement") == 1
    pending = {**RECORD, "key_status": "pending"}
    m.apply(user_round_observations(pending))
    m.apply(user_round_observations({**pending, "settled_late": True, "aborted": True,
                                     "abort_reason": "Alice discarded r3: gone"}))
    assert _series(m, "mdiqkd_rounds_aborted_total", reason="key_discarded") == 1
    assert _series(m, "mdiqkd_sifted_bits_total") == RECORD["sifted"]  # counted once


def test_counters_are_mirrored_from_before_and_after_attachment_and_agree_with_json():
    m = NodeMetrics("nature")
    c = Counters()
    c.add("pulse_batches_received_total", 3)
    c.add("warm_up_ms", 1500)
    c.attach_sink(m.count)
    c.add("pulse_batches_received_total", 2)
    c.add("pulse_batches_dropped_stale")
    assert _series(m, "mdiqkd_pulse_batches_received_total") == 5
    assert _series(m, "mdiqkd_warm_up_seconds") == 1.5
    for key, value in c.values.items():
        name, labels, expected = metrics_json_series(key, value)
        assert _series(m, name, **labels) == expected


def test_charles_exports_only_what_his_software_sees():
    names = charles_metric_names()
    assert "mdiqkd_bell_success_rate_hertz" in names
    for name in names:
        assert not re.search(r"qber|basis|intensity|decoy|key_bits|secure|phase", name), name
        # ``detector``: his own detectors, whose click times are in every record he receives
        assert "basis" not in METRICS[name].labels, name
    m = NodeMetrics("charles")
    with pytest.raises(ValueError, match="charles does not export mdiqkd_qber_ratio"):
        m.update("mdiqkd_qber_ratio", 0.1, {"basis": "Z"})
    m.apply(charles_round_observations(7, 1000, 5000, 0, 10**9, 1e9))
    assert _series(m, "mdiqkd_last_round") == 7
    assert _series(m, "mdiqkd_bell_success_rate_hertz") == 1000.0
    assert _series(m, "mdiqkd_coincidences_total") == 5000


def test_node_labels_cannot_be_overridden():
    m = NodeMetrics("alice")
    with pytest.raises(ValueError, match="set by the node"):
        m.update("mdiqkd_qber_ratio", 0.1, {"basis": "Z", "node": "bob"})


def test_the_endpoint_serves_prometheus_text_on_127_0_0_1():
    m = NodeMetrics("alice")
    address = f"{HOST}:{free_ports(1)[0]}"
    m.serve(address)
    try:
        m.apply(user_round_observations(RECORD))
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
            text = r.read().decode()
        series = parse_exposition(text)
        assert [v for lab, v in series["mdiqkd_qber_ratio"] if lab["basis"] == "Z"] == \
            [RECORD["qber_z"]]
    finally:
        m.close()
    with pytest.raises(ValueError, match="not host:port"):
        NodeMetrics("bob").serve("9090")


class _Opener:
    skipped = 2


class _Link:
    def __init__(self, rejected):
        self.rejected, self.opener, self.keys = rejected, _Opener(), None


def test_link_counters_are_read_at_scrape_time_every_reason_from_zero():
    m = NodeMetrics("charles")
    links = {"alice": _Link({}), "bob": _Link({"AuthenticationError": 3})}
    m.observe_links(links)
    assert _series(m, "mdiqkd_frames_rejected_total", peer="alice",
                   reason="AuthenticationError") == 0
    assert _series(m, "mdiqkd_frames_rejected_total", peer="bob",
                   reason="AuthenticationError") == 3
    assert _series(m, "mdiqkd_authentication_failures_total", peer="bob") == 3
    links["alice"].rejected["ReplayError"] = 1  # counted by the link after registration
    assert _series(m, "mdiqkd_frames_rejected_total", peer="alice", reason="ReplayError") == 1
    assert _series(m, "mdiqkd_frames_skipped_total", peer="alice") == 2
    reasons = {lab["reason"] for lab, _ in
               parse_exposition(m.exposition())["mdiqkd_frames_rejected_total"]}
    assert reasons == set(REJECTED_FRAME_REASONS)


def test_every_metric_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    for name in METRICS:
        assert f"`{name}`" in doc, name


def test_metrics_are_pushed_over_otlp_when_an_endpoint_is_given():
    """A minimal OTLP/HTTP collector on 127.0.0.1 receives the same series, pushed on close."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    bodies: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            bodies.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        m = NodeMetrics("alice", otlp_endpoint=f"http://{HOST}:{server.server_address[1]}"
                        "/v1/metrics", otlp_interval_s=60.0)
        m.apply(user_round_observations(RECORD))
        m.close()  # the last push
    finally:
        server.shutdown()
        server.server_close()
    assert bodies and all(path == "/v1/metrics" for path, _ in bodies)
    qber = {}
    for _, body in bodies:
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "mdiqkd_qber_ratio":
                        for p in metric.gauge.data_points:
                            attrs = {a.key: a.value.string_value for a in p.attributes}
                            qber[attrs["basis"]] = p.as_double
    assert qber == {"Z": RECORD["qber_z"], "X": RECORD["qber_x"]}


def test_decoy_counts_are_the_rounds_public_counts_per_class_pair_and_basis():
    from nodes.metrics import class_count_observations
    from tests.metro import shared_metro_20km_round

    _, result = shared_metro_20km_round()
    obs = result.alice.observations
    updates = class_count_observations(obs, ("mu", "nu", "omega"), ("mu", "nu", "omega"))
    pairs = {(u[2]["classes"], u[2]["basis"]): u[1] for u in updates
             if u[0] == "mdiqkd_decoy_pulse_pairs_total"}
    dets = {(u[2]["classes"], u[2]["basis"]): u[1] for u in updates
            if u[0] == "mdiqkd_decoy_detections_total"}
    assert len(pairs) == len(dets) == 18  # 3 × 3 classes × 2 bases
    assert pairs["mu,nu", "X"] == obs.pairs[0, 1, 1]
    assert dets["omega,mu", "Z"] == obs.detections[2, 0, 0].sum()
    assert sum(dets.values()) == obs.detections.sum() > 0
    assert class_count_observations(None, ("a",), ("b",)) == []
