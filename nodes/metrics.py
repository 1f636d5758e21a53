"""Live metrics of one node: OpenTelemetry metrics-SDK instruments, served in Prometheus's text
format on ``http://HOST:PORT/metrics`` while the node runs (every metric: docs/metrics.md).

Every series carries the labels ``link`` and ``node``; a few carry ``basis``, ``detector``,
``reason``, ``peer``, ``classes`` (a pair of the scenario's intensity-class names), or ``loop``
and ``action`` (the calibration loops'), all from small fixed sets (never a key, a bit, a slot
or a free-text message). Instruments are updated once per round or per batch, never per pulse.

Two kinds of metric:

* the node's plain counters (``nodes.transport.Counters``, what ``metrics.json`` holds) are
  mirrored one for one: ``Counters.add`` feeds the instrument of ``counter_metric_name(name)``, so
  the endpoint and ``metrics.json`` count the same events (``metrics_json_series`` maps a
  ``metrics.json`` entry to its series; a test checks that they agree after a run);
* the service-level indicators of ``METRICS`` (QBER per basis, Bell rate, key bits, …), set from
  the round records by pure functions (``user_round_observations``,
  ``charles_round_observations``).

Charles's endpoint exports only what his software sees (detection records, announcements, his
links): ``CHARLES_METRICS`` lists them, and nothing there is labelled or valued by a user's
setting (docs/trust-boundaries.md).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from channel.relay import N_DETECTORS
from classical.secure import REJECTED_FRAME_ERRORS
from nodes.link_estimates import visibility_lower
from nodes.relay_timing import DetectorTiming

#: The ``link`` label of a run's series (one link per run: Alice–Bob through Charles).
DEFAULT_LINK = "alice-bob"

#: ``reason`` label values of ``mdiqkd_rounds_aborted_total``: a small fixed set, so that a
#: free-text abort message (which may name a key ID) never becomes a label.
ABORT_REASONS = ("announcement", "statistics", "qber", "verification", "authentication",
                 "peer", "key_discarded", "stopped", "other")

#: ``reason`` label values of ``mdiqkd_frames_rejected_total`` (each exported from 0): the
#: error classes ``classical.secure.SecureLink.unpack`` counts.
REJECTED_FRAME_REASONS = tuple(e.__name__ for e in REJECTED_FRAME_ERRORS)

#: How often metrics are pushed over OTLP when an endpoint is given.
OTLP_INTERVAL_S = 5.0

#: Histogram buckets of the key-provisioning latency (seconds of wall time).
LATENCY_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
#: Histogram buckets of one post-processing stage of a round (seconds of wall time): from a
#: verification's ~1 ms to a large round's sifting or reconciliation of tens of seconds.
STAGE_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: The ``stage`` label values of ``mdiqkd_round_stage_duration_seconds``: the stages of a key
#: round (``classical.rounds``; the spans of its trace have the same names).
ROUND_STAGES = ("sift", "disclose", "estimate", "reconcile", "verify", "amplify", "commit")


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # counter | gauge | histogram
    unit: str  # Prometheus base unit as in the name ("" for a plain count)
    labels: tuple[str, ...]  # beyond link and node
    nodes: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS_S  # a histogram's bucket boundaries


USERS, CHARLES, NATURE = ("alice", "bob"), ("charles",), ("nature",)
ALL = USERS + CHARLES + NATURE

#: The service-level indicators, by Prometheus name (counters end ``_total``).
METRICS: dict[str, MetricSpec] = {
    "mdiqkd_qber_ratio": MetricSpec(
        "gauge", "ratio", ("basis",), USERS,
        "quantum bit error rate of the last key round that measured it, per basis (Z: key, "
        "X: phase-error test)"),
    "mdiqkd_phase_error_upper_ratio": MetricSpec(
        "gauge", "ratio", (), USERS,
        "upper bound on the single-photon phase-error rate of the last key round"),
    "mdiqkd_single_photon_z_bits_lower": MetricSpec(
        "gauge", "bits", (), USERS,
        "lower bound on the single-photon Z-basis bits of the last key round"),
    "mdiqkd_sifted_bits_total": MetricSpec("counter", "bits", (), USERS,
                                           "sifted bits (both bases)"),
    "mdiqkd_raw_key_bits_total": MetricSpec("counter", "bits", (), USERS,
                                            "Z-basis bits entering error correction"),
    "mdiqkd_corrected_bits_total": MetricSpec("counter", "bits", (), USERS,
                                              "bit errors corrected by reconciliation"),
    "mdiqkd_ec_leakage_bits_total": MetricSpec(
        "counter", "bits", (), USERS, "bits disclosed by error correction (leakage ledger)"),
    "mdiqkd_round_trips_total": MetricSpec("counter", "", (), USERS,
                                           "classical round trips of reconciliation"),
    "mdiqkd_emulated_seconds_total": MetricSpec(
        "counter", "seconds", (), USERS + CHARLES,
        "emulated time of the rounds finished (users) or announced (Charles)"),
    "mdiqkd_round_secure_key_bits": MetricSpec(
        "gauge", "bits", (), USERS, "net secure bits of the last key round (0 if it aborted)"),
    "mdiqkd_secure_key_rate_bits_per_second": MetricSpec(
        "gauge", "bits_per_second", (), USERS,
        "net secure bits of the last key round per emulated second"),
    "mdiqkd_secure_key_bits_total": MetricSpec(
        "counter", "bits", (), USERS, "net secure bits committed to the key store"),
    "mdiqkd_rounds_aborted_total": MetricSpec(
        "counter", "", ("reason",), USERS,
        f"key rounds that produced no key, by reason class ({', '.join(ABORT_REASONS)})"),
    "mdiqkd_key_store_bits": MetricSpec("gauge", "bits", (), USERS,
                                        "secure bits held in the key store (its depth)"),
    "mdiqkd_key_provisioning_latency_seconds": MetricSpec(
        "histogram", "seconds", (), USERS,
        "wall time from the emission of a round's first pulse to its key being stored"),
    "mdiqkd_round_stage_duration_seconds": MetricSpec(
        "histogram", "seconds", ("stage",), USERS,
        "wall time of one post-processing stage of a key round (stage: "
        f"{', '.join(ROUND_STAGES)}; the spans of the round's trace)", STAGE_BUCKETS_S),
    "mdiqkd_auth_key_consumed_bits_total": MetricSpec(
        "counter", "bits", ("peer",), USERS,
        "pre-shared authentication key consumed on the link with a peer (Wegman-Carter)"),
    "mdiqkd_frames_rejected_total": MetricSpec(
        "counter", "", ("peer", "reason"), USERS + CHARLES,
        "classical frames from a peer refused (reason: the error class)"),
    "mdiqkd_authentication_failures_total": MetricSpec(
        "counter", "", ("peer",), USERS + CHARLES,
        "classical frames from a peer whose authentication tag did not verify"),
    "mdiqkd_frames_skipped_total": MetricSpec(
        "counter", "", ("peer",), USERS + CHARLES,
        "sequence numbers skipped on a link with a peer (frames lost or refused on the way)"),
    "mdiqkd_bell_successes_total": MetricSpec(
        "counter", "", (), CHARLES, "successful Bell-state measurements announced"),
    "mdiqkd_coincidences_total": MetricSpec(
        "counter", "", (), CHARLES, "coincidence records (two or more clicks) received"),
    "mdiqkd_bell_success_rate_hertz": MetricSpec(
        "gauge", "hertz", (), CHARLES,
        "Bell successes per emulated second of the last round announced"),
    "mdiqkd_relay_click_offset_seconds": MetricSpec(
        "gauge", "seconds", ("detector",), CHARLES,
        "mean click time on the relay's own slot grid (time tag minus slot x slot period) of "
        "a detector's clicks in the last round announced"),
    "mdiqkd_relay_click_jitter_seconds": MetricSpec(
        "gauge", "seconds", ("detector",), CHARLES,
        "rms spread of a detector's click times about their mean offset in the last round "
        "announced"),
    "mdiqkd_visibility_lower_ratio": MetricSpec(
        "gauge", "ratio", (), USERS,
        "lower bound on the two-photon interference visibility of single-photon pairs, "
        "1 - 2 e11_x_upper, of the last key round that bounded e11"),
    "mdiqkd_vacuum_pairs_total": MetricSpec(
        "counter", "", (), USERS,
        "pulse pairs with matching bases in which both users sent vacuum (intensity 0)"),
    "mdiqkd_vacuum_detections_total": MetricSpec(
        "counter", "", (), USERS,
        "Bell detections announced in vacuum-vacuum pulse pairs: background clicks only"),
    "mdiqkd_dark_count_rate_hertz": MetricSpec(
        "gauge", "hertz", (), USERS,
        "background (dark) clicks per emulated second, all four detectors, estimated from the "
        "last key round's vacuum-vacuum detections (four alike detectors, every slot gated)"),
    "mdiqkd_detector_clicks_total": MetricSpec(
        "counter", "", ("detector",), NATURE, "clicks per detector (singles, coincidences "
        "included), as the relay's electronics count them"),
    "mdiqkd_last_round": MetricSpec(
        "gauge", "", (), USERS + CHARLES,
        "ID of the last key round logged (users) or announced (Charles): the N of "
        "`mdiqkd trace show RUN_DIR --round N` for the points beside it"),
    "mdiqkd_decoy_pulse_pairs_total": MetricSpec(
        "counter", "", ("classes", "basis"), USERS,
        "pulse pairs sent with matching bases per (Alice's, Bob's) intensity class (classes "
        "'mu,nu': Alice's mu with Bob's nu), as both users count them in sifting"),
    "mdiqkd_decoy_detections_total": MetricSpec(
        "counter", "", ("classes", "basis"), USERS,
        "Bell detections kept per (Alice's, Bob's) intensity class and basis: the decoy "
        "counts the estimation reads"),
    "mdiqkd_calibration_actions_total": MetricSpec(
        "counter", "", ("loop", "action"), USERS,
        "what the calibration loops did (nodes.calibration): loop polarization, clock, search or "
        "intensity; action started, moved, converged, failed or flagged"),
    "mdiqkd_warm_up_seconds": MetricSpec(
        "gauge", "seconds", (), ALL, "wall time of the node's kernel warm-up"),
}

#: The (loop, action) pairs of ``mdiqkd_calibration_actions_total`` (``nodes.calibration``,
#: ``nodes.intensity_monitor``), each exported from 0.
CALIBRATION_SERIES = (("search", "started"), ("search", "converged"), ("search", "failed"),
                      ("polarization", "moved"), ("clock", "moved"), ("intensity", "flagged"))

#: Counters (``nodes.transport.Counters``) not mirrored one for one: written as a labelled or
#: renamed series by the node itself (see ``metrics_json_series``).
_SPECIAL_COUNTERS = {"rounds_aborted_total", "warm_up_ms", "secure_bits_total",
                     "calibration_actions_total"}

#: Plain counters started at 0 per node (``NodeMetrics.initialise``).
_INITIAL_COUNTERS = {"alice": ("rounds_total", "keys_committed_total"),
                     "bob": ("rounds_total", "keys_committed_total"),
                     "charles": ("rounds_announced_total",),
                     "nature": ("coincidence_records_total",)}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_NAME = re.compile(r"[^a-z0-9_]")


def counter_metric_name(name: str) -> str:
    """The Prometheus counter that mirrors the plain counter ``name``: snake case (an error
    class's name such as ``AuthenticationError`` becomes ``authentication_error``), anything
    but ``[a-z0-9_]`` replaced by ``_``, ``_total`` at the end."""
    snake = _NOT_NAME.sub("_", _CAMEL.sub("_", name).lower())
    return f"mdiqkd_{snake.removesuffix('_total')}_total"


def charles_metric_names() -> set[str]:
    return {n for n, s in METRICS.items() if "charles" in s.nodes}


def abort_class(reason: str | None) -> str:
    """The ``reason`` label of an abort message (one of ``ABORT_REASONS``)."""
    text = (reason or "").lower()
    rules = (("stopped", "stopped"), ("announcement", "announcement"),
             ("discard", "key_discarded"), ("not confirmed", "key_discarded"),
             ("authentic", "authentication"), ("tag", "authentication"),
             ("qber", "qber"), ("phase error", "qber"), ("error rate", "qber"),
             ("verif", "verification"), ("hash", "verification"), ("mismatch", "verification"),
             ("too few", "statistics"), ("no key", "statistics"), ("counts", "statistics"),
             ("length", "statistics"), ("short", "statistics"),
             ("peer", "peer"), ("aborted", "peer"), ("alice", "peer"), ("bob", "peer"))
    return next((cls for word, cls in rules if word in text), "other")


#: One update: (metric name, value, extra labels).
Update = tuple[str, float, dict[str, str]]


def _number(record: dict[str, Any], key: str) -> float | None:
    v = record.get(key)
    return None if v is None or isinstance(v, bool) else float(v)


def user_round_observations(record: dict[str, Any]) -> list[Update]:
    """What one line of a user's ``rounds.jsonl`` (``nodes.users``) sets: gauges of the last
    round, increments of counters. A line that supersedes a pending one (``settled_late``) only
    counts a discarded key as aborted: the rest was counted when the round was logged."""
    if record.get("settled_late"):
        if record.get("aborted"):
            return [("mdiqkd_rounds_aborted_total", 1.0,
                     {"reason": abort_class(record.get("abort_reason"))})]
        return []
    out: list[Update] = [("mdiqkd_last_round", float(record["round"]), {})]
    for basis in ("z", "x"):
        q = _number(record, f"qber_{basis}")
        if q is not None:
            out.append(("mdiqkd_qber_ratio", q, {"basis": basis.upper()}))
    for key, name in (("e11_x_upper", "mdiqkd_phase_error_upper_ratio"),
                      ("s11_z_lower", "mdiqkd_single_photon_z_bits_lower")):
        v = _number(record, key)
        if v is not None:
            out.append((name, v, {}))
    for key, name in (("sifted", "mdiqkd_sifted_bits_total"),
                      ("key_bits_raw", "mdiqkd_raw_key_bits_total"),
                      ("corrected_bits", "mdiqkd_corrected_bits_total"),
                      ("leakage_bits", "mdiqkd_ec_leakage_bits_total"),
                      ("round_trips", "mdiqkd_round_trips_total"),
                      ("emulated_seconds", "mdiqkd_emulated_seconds_total")):
        v = _number(record, key)
        if v is not None:
            out.append((name, v, {}))
    visibility = visibility_lower(_number(record, "e11_x_upper"))
    if visibility is not None:
        out.append(("mdiqkd_visibility_lower_ratio", visibility, {}))
    for key, name in (("vacuum_pairs", "mdiqkd_vacuum_pairs_total"),
                      ("vacuum_detections", "mdiqkd_vacuum_detections_total")):
        v = _number(record, key)
        if v is not None:
            out.append((name, v, {}))
    dark, seconds = _number(record, "dark_count_probability"), _number(record, "emulated_seconds")
    if dark is not None and seconds and "start_slot" in record and "stop_slot" in record:
        clock_rate_hz = (int(record["stop_slot"]) - int(record["start_slot"])) / seconds
        out.append(("mdiqkd_dark_count_rate_hertz", N_DETECTORS * dark * clock_rate_hz, {}))
    timings = record.get("timings_s")
    if isinstance(timings, dict):
        for stage in ROUND_STAGES:
            v = _number(timings, stage)
            if v is not None and v >= 0:
                out.append(("mdiqkd_round_stage_duration_seconds", v, {"stage": stage}))
    bits = float(record.get("secure_bits") or 0)
    out.append(("mdiqkd_round_secure_key_bits", bits, {}))
    seconds = _number(record, "emulated_seconds")
    if seconds:
        out.append(("mdiqkd_secure_key_rate_bits_per_second", bits / seconds, {}))
    if record.get("aborted"):
        out.append(("mdiqkd_rounds_aborted_total", 1.0,
                    {"reason": abort_class(record.get("abort_reason"))}))
    return out


def class_count_observations(observations: Any, names_a: Sequence[str],
                             names_b: Sequence[str]) -> list[Update]:
    """A round's public per-class counts (``classical.estimation.DecoyObservations``) as
    increments of the decoy-count counters, one series per (Alice's class, Bob's class, basis)."""
    out: list[Update] = []
    if observations is None:
        return out
    pairs, det = observations.pairs, observations.detections
    for i, a in enumerate(names_a[:pairs.shape[0]]):
        for j, b in enumerate(names_b[:pairs.shape[1]]):
            for k, basis in enumerate(("Z", "X")):
                labels = {"classes": f"{a},{b}", "basis": basis}
                out.append(("mdiqkd_decoy_pulse_pairs_total", float(pairs[i, j, k]), labels))
                out.append(("mdiqkd_decoy_detections_total", float(det[i, j, k].sum()), labels))
    return out


def charles_round_observations(round_id: int, successes: int, coincidences: int,
                               start_slot: int, stop_slot: int,
                               clock_rate_hz: float | None,
                               timing: Iterable[DetectorTiming] = ()) -> list[Update]:
    """What one announced round sets at Charles: only his own measurement's numbers, and the
    click timing of his detectors (``nodes.relay_timing``; a detector with no click in the
    round keeps its last values)."""
    out: list[Update] = [("mdiqkd_last_round", float(round_id), {}),
                         ("mdiqkd_bell_successes_total", float(successes), {}),
                         ("mdiqkd_coincidences_total", float(coincidences), {})]
    for t in timing:
        if t.offset_ps is not None and t.jitter_ps is not None:
            out += [("mdiqkd_relay_click_offset_seconds", t.offset_ps * 1e-12,
                     {"detector": t.detector}),
                    ("mdiqkd_relay_click_jitter_seconds", t.jitter_ps * 1e-12,
                     {"detector": t.detector})]
    if clock_rate_hz:
        seconds = (stop_slot - start_slot) / clock_rate_hz
        out.append(("mdiqkd_emulated_seconds_total", seconds, {}))
        if seconds > 0:
            out.append(("mdiqkd_bell_success_rate_hertz", successes / seconds, {}))
    return out


def metrics_json_series(key: str, value: float) -> tuple[str, dict[str, str], float] | None:
    """The series (name, extra labels, value) that a ``metrics.json`` entry agrees with; None
    for entries with no series of their own (``rounds_aborted_total``: the sum over ``reason``;
    ``secure_bits_stored``: ``mdiqkd_key_store_bits``'s value)."""
    if key == "warm_up_ms":
        return "mdiqkd_warm_up_seconds", {}, value / 1e3
    if key == "secure_bits_total":
        return "mdiqkd_secure_key_bits_total", {}, value
    if key == "secure_bits_stored":
        return "mdiqkd_key_store_bits", {}, value
    if key in ("rounds_aborted_total", "calibration_actions_total"):
        return None  # sums over a label
    m = re.fullmatch(r"singles_(\w+)_total", key)
    if m:
        return "mdiqkd_detector_clicks_total", {"detector": m.group(1)}, value
    m = re.fullmatch(r"frames_skipped_from_(\w+)", key)
    if m:
        return "mdiqkd_frames_skipped_total", {"peer": m.group(1)}, value
    m = re.fullmatch(r"rejected_from_(alice|bob|charles)_(\w+)", key)
    if m:
        return "mdiqkd_frames_rejected_total", {"peer": m.group(1), "reason": m.group(2)}, value
    return counter_metric_name(key), {}, value


class NodeMetrics:
    """One node's meter provider, its Prometheus registry and (once ``serve``d) its endpoint."""

    def __init__(self, node: str, link: str = DEFAULT_LINK, otlp_endpoint: str | None = None,
                 otlp_interval_s: float = OTLP_INTERVAL_S) -> None:
        """``otlp_endpoint``: also push every ``otlp_interval_s`` (and once more on ``close``)
        over OTLP/HTTP to this URL (e.g. ``http://127.0.0.1:4318/v1/metrics``)."""
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        self.node, self.labels = node, {"link": link, "node": node}
        self.registry = CollectorRegistry()
        self._reader = PrometheusMetricReader(disable_target_info=True, registry=self.registry)
        readers: list[Any] = [self._reader]
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=otlp_endpoint),
                export_interval_millis=1e3 * otlp_interval_s))
        self.provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": node, "service.namespace": "mdiqkd"}))
        self.meter = self.provider.get_meter("mdiqkd")
        self._instruments: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._failed: set[str] = set()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: str | None = None

    # --- instruments ---------------------------------------------------------------------------

    def _instrument(self, name: str) -> Any:
        with self._lock:
            inst = self._instruments.get(name)
            if inst is not None:
                return inst
            spec = METRICS.get(name)
            kind = spec.kind if spec is not None else "counter"
            if spec is None and not name.endswith("_total"):
                raise ValueError(f"{name!r} is neither a declared metric nor a counter")
            if spec is not None and self.node not in spec.nodes:
                raise ValueError(f"{self.node} does not export {name}")
            description = spec.help if spec is not None else "node counter (metrics.json)"
            if kind == "counter":
                inst = self.meter.create_counter(name, description=description)
            elif kind == "gauge":
                inst = self.meter.create_gauge(name, description=description)
            else:
                inst = self.meter.create_histogram(
                    name, description=description,
                    explicit_bucket_boundaries_advisory=list(
                        spec.buckets if spec is not None else LATENCY_BUCKETS_S))
            self._instruments[name] = inst
            return inst

    def _attrs(self, labels: dict[str, str]) -> dict[str, str]:
        name_clash = set(labels) & set(self.labels)
        if name_clash:
            raise ValueError(f"labels {sorted(name_clash)} are set by the node")
        return {**self.labels, **labels}

    def update(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        inst = self._instrument(name)
        attrs = self._attrs(labels or {})
        spec = METRICS.get(name)
        kind = spec.kind if spec is not None else "counter"
        if kind == "counter":
            inst.add(value, attrs)
        elif kind == "gauge":
            inst.set(value, attrs)
        else:
            inst.record(value, attrs)

    def apply(self, updates: Iterable[Update]) -> None:
        for name, value, labels in updates:
            self.update(name, value, labels)

    def count(self, name: str, n: int) -> None:
        """``Counters.add``'s sink: the mirrored counter of a plain counter. Never raises: a
        metric must not take a node down (a failure is said once per counter, on stderr)."""
        try:
            self._count(name, n)
        except Exception as e:  # noqa: BLE001 - reported, and the node goes on
            if name not in self._failed:
                self._failed.add(name)
                print(f"{self.node}: metric for counter {name!r} not exported "
                      f"({type(e).__name__}: {e})", file=sys.stderr, flush=True)

    def _count(self, name: str, n: int) -> None:
        if name in _SPECIAL_COUNTERS:
            if name == "warm_up_ms":
                self.update("mdiqkd_warm_up_seconds", n / 1e3)
            elif name == "secure_bits_total":
                self.update("mdiqkd_secure_key_bits_total", n)
            return  # rounds_aborted_total: by reason, from the round records
        self.update(counter_metric_name(name), n)

    def observe_links(self, links: dict[str, Any]) -> None:
        """Observable counters read from the authenticated links at each scrape: frames
        rejected and skipped, authentication failures, authentication key consumed."""

        def rejected(_: CallbackOptions) -> Iterable[Observation]:
            for peer, link in links.items():
                counts = dict.fromkeys(REJECTED_FRAME_REASONS, 0) | dict(link.rejected)
                for kind, n in counts.items():
                    yield Observation(n, self._attrs({"peer": peer, "reason": kind}))

        def auth_failures(_: CallbackOptions) -> Iterable[Observation]:
            for peer, link in links.items():
                yield Observation(link.rejected.get("AuthenticationError", 0),
                                  self._attrs({"peer": peer}))

        def skipped(_: CallbackOptions) -> Iterable[Observation]:
            for peer, link in links.items():
                yield Observation(link.opener.skipped, self._attrs({"peer": peer}))

        def consumed(_: CallbackOptions) -> Iterable[Observation]:
            for peer, link in links.items():
                if link.keys is not None:
                    yield Observation(8 * link.keys.consumed_bytes(),
                                      self._attrs({"peer": peer}))

        callbacks: list[tuple[str, Callable[[CallbackOptions], Iterable[Observation]]]] = [
            ("mdiqkd_frames_rejected_total", rejected),
            ("mdiqkd_authentication_failures_total", auth_failures),
            ("mdiqkd_frames_skipped_total", skipped)]
        if self.node in USERS:
            callbacks.append(("mdiqkd_auth_key_consumed_bits_total", consumed))
        for name, cb in callbacks:
            self.meter.create_observable_counter(name, callbacks=[cb],
                                                 description=METRICS[name].help)

    def initialise(self) -> None:
        """Start the node's unlabelled counters at 0, so that ``rate()`` and ``increase()``
        see their first increment (a series that appears at 1 has no increase)."""
        for name, spec in METRICS.items():
            if spec.kind == "counter" and not spec.labels and self.node in spec.nodes:
                self.update(name, 0.0)
        for plain in _INITIAL_COUNTERS.get(self.node, ()):
            self.update(counter_metric_name(plain), 0.0)
        if self.node in METRICS["mdiqkd_calibration_actions_total"].nodes:
            for loop, action in CALIBRATION_SERIES:
                self.update("mdiqkd_calibration_actions_total", 0.0,
                            {"loop": loop, "action": action})

    # --- exposition ----------------------------------------------------------------------------

    def exposition(self) -> str:
        """The Prometheus text format, as the endpoint serves it."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def serve(self, address: str) -> None:
        """Serve ``/metrics`` on ``host:port`` (a thread of this process)."""
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"metrics address {address!r} is not host:port")
        self._server, self._thread = start_http_server(int(port), addr=host,
                                                       registry=self.registry)
        self.address = address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.provider.shutdown()


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Series of a Prometheus text exposition by metric name (for tests and ``observe``):
    ``{name: [(labels, value), …]}``, histogram series under their ``_bucket``/``_sum``/
    ``_count`` names."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out
