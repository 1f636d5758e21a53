"""The round report names every ε of a finite-key round, as plain scalars: it becomes a line of
rounds.jsonl (JSON) and the attributes of the estimate span (OpenTelemetry takes scalars only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from classical.estimation import Estimate
from classical.rounds import epsilon_attributes
from nodes.tracing import SpanObserver
from tests.metro import shared_metro_20km_round

EPSILON_NAMES = {"eps_sec", "eps_cor", "eps_correctness", "eps_prime", "eps_smoothing",
                 "eps_privacy_amplification", "eps_parameter_estimation_per_count",
                 "eps_parameter_estimation_psi+-", "eps_beta_psi+-", "chernoff_counts_psi+-"}


@pytest.fixture(scope="module")
def finite_round():
    # the metro round on 2 x 20 km: the three-intensity analytic bounds give it a finite key of
    # about 2·10⁵ bits, far from the abort at zero (analytic: the ε count below is its own)
    return shared_metro_20km_round()


def test_the_final_report_names_every_epsilon_as_a_plain_number(finite_round):
    cfg, result = finite_round
    assert result.keys_match
    for outcome in (result.alice, result.bob):
        report = outcome.report
        assert report["method"] == "finite-chernoff"
        assert EPSILON_NAMES <= set(report)
        for name in EPSILON_NAMES:
            assert type(report[name]) in (float, int), (name, report[name])
        sec = cfg.security
        assert report["eps_cor"] == sec.epsilon_correctness  # one block (ψ± reconciled together)
        assert report["eps_parameter_estimation_psi+-"] == pytest.approx(
            report["chernoff_counts_psi+-"] * sec.epsilon_pe)
        assert report["eps_beta_psi+-"] == sec.epsilon_beta
        assert report["eps_sec"] == pytest.approx(
            2 * (sec.epsilon_prime + 2 * report["eps_parameter_estimation_psi+-"]
                 + sec.epsilon_smoothing) + report["eps_beta_psi+-"] + sec.epsilon_pa)
        assert json.loads(json.dumps(report))["eps_sec"] == report["eps_sec"]


def test_epsilons_reach_the_span_as_numbers_not_strings(finite_round):
    # the round's ε attributes through the span observer the nodes use (nodes.tracing)
    _, result = finite_round
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = SpanObserver(provider.get_tracer("test"), round_id=7)
    attributes = {k: v for k, v in result.bob.report.items() if k in EPSILON_NAMES}
    with observer.stage("estimate") as st:
        st.set(**attributes)
    (span,) = exporter.get_finished_spans()
    for name, value in attributes.items():
        assert span.attributes[f"mdiqkd.{name}"] == value
        assert observer.report()[name] == value


def test_an_unknown_value_is_null_in_the_report_and_absent_from_the_span():
    # OpenTelemetry has no null: a value the round could not measure (qber_x without X bits)
    # stays out of the span and reads null in rounds.jsonl, never 0
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = SpanObserver(provider.get_tracer("test"), round_id=7)
    with observer.stage("sift") as st:
        st.set(x_bits=0, qber_x=None)
    (span,) = exporter.get_finished_spans()
    assert "mdiqkd.qber_x" not in span.attributes and span.attributes["mdiqkd.x_bits"] == 0
    assert json.loads(json.dumps(observer.report()))["qber_x"] is None


def test_the_asymptotic_mode_claims_no_epsilon():
    estimate = Estimate("asymptotic", 10, 20.0, 0.05, 0.01, 0.2, 100, 5.0, ())
    assert epsilon_attributes(estimate) == {}


def test_the_outcome_carries_the_public_counts_with_the_reconciled_key_errors(finite_round):
    # the users' monitors (nodes.calibration) read them: both users hold the same public counts,
    # and the key class's Z errors are the bits reconciliation corrected
    cfg, result = finite_round
    a, b = result.alice.observations, result.bob.observations
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.pairs, b.pairs)
    np.testing.assert_array_equal(a.detections, b.detections)
    np.testing.assert_array_equal(a.errors, b.errors)
    key = (*a.key_intensity, 0)
    assert a.errors[key].sum() == pytest.approx(result.bob.report["corrected_bits"])
    assert a.errors[key].sum() > 0
