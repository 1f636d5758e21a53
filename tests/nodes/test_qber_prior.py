"""The QBER prior a round passes on to the next (nodes.users.next_qber_prior): only measured
error rates raise it, and a pre-check that stopped on the prior itself starts the next round
from the configured one, so a bad spell cannot stop every later round once the link heals."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.calibration import Measurement, measured_qber_z
from nodes.users import MAX_QBER_PRIOR, next_qber_prior

CONFIGURED = 0.01


@pytest.mark.parametrize("report, expected", [
    ({"phase": "final", "qber_z": 0.03, "key_bits_raw": 1000, "corrected_bits": 30}, 0.03),
    ({"phase": "final", "key_bits_raw": 1000, "corrected_bits": 1}, CONFIGURED),  # floored
    ({"phase": "final", "key_bits_raw": 1000, "corrected_bits": 400}, MAX_QBER_PRIOR),  # capped
    # a final estimate that aborted keeps the pre-check's qber_z (the prior): the corrected
    # count is the measurement
    ({"phase": "final", "qber_z": 0.005, "key_bits_raw": 1000, "corrected_bits": 20}, 0.02),
    # a round that reconciled, then failed verification: Bob's report has the bits his
    # Cascade corrected, Alice's not; the prior stays as it was on both sides
    ({"phase": "precheck", "qber_z": 0.05, "reconciler": "cascade", "key_bits_raw": 1000,
      "corrected_bits": 40}, 0.07),
    ({"phase": "precheck", "qber_z": 0.05, "reconciler": "cascade"}, 0.07),
    # a round the pre-check stopped, that disclosed its key bits (the polarization loop runs)
    ({"phase": "precheck", "qber_z": 0.05, "disclosed_key_bits": 2000,
      "disclosed_z_errors": 50}, 0.025),
    # stopped on the prior itself, nothing measured: start again from the configured prior
    ({"phase": "precheck", "qber_z": 0.05}, CONFIGURED),
    # stopped before any estimate (no announcement, a refused sifting): nothing learnt
    ({}, 0.07),
    ({"aborted": True, "abort_reason": "no announcement from charles"}, 0.07),
])
def test_the_next_prior_comes_from_what_was_measured(report, expected):
    assert next_qber_prior(report, CONFIGURED, 0.07) == pytest.approx(expected)


def test_a_bad_spell_does_not_stop_the_rounds_after_it():
    # a keyed round at 5 %, then rounds the pre-check stops without a measurement: the second
    # is back at the configured prior, so a healed link gives key again
    prior = next_qber_prior({"phase": "final", "qber_z": 0.05, "key_bits_raw": 100,
                             "corrected_bits": 5}, CONFIGURED, CONFIGURED)
    assert prior == pytest.approx(0.05)
    assert next_qber_prior({"phase": "precheck", "qber_z": prior}, CONFIGURED,
                           prior) == CONFIGURED


@pytest.mark.parametrize("report", [
    {"phase": "final", "key_bits_raw": np.int64(1000), "corrected_bits": np.int64(30)},
    {"phase": "precheck", "disclosed_key_bits": 2000, "disclosed_z_errors": 50},
    {"phase": "precheck", "disclosed_key_bits": 2000, "disclosed_z_errors": 2001},  # refused
    {"phase": "final", "key_bits_raw": 1000, "corrected_bits": True},  # a bool is no count
    {"phase": "final", "key_bits_raw": 1000, "corrected_bits": 30.0},  # nor is a float
    {"phase": "precheck", "qber_z": 0.05},
])
def test_the_next_prior_and_the_calibration_read_the_same_measurement(report):
    # one rule (nodes.calibration.measured_qber_z) for both: the two users' searches and
    # pre-checks move together only if each reads a round the same way
    measured = measured_qber_z(report)
    m = Measurement.from_report({**report, "x_bits": 100, "qber_x": 0.2})
    assert m is not None
    if measured is None:
        assert m.qber_z is None and m.n_z == 0
    else:
        assert (m.qber_z, m.n_z) == measured
        assert next_qber_prior(report, 0.001, 0.07) == pytest.approx(measured[0])
