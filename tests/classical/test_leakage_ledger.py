"""The ledger's guard on what it is asked to record (survivors of the mutation run on
classical/leakage.py, docs/mutation-testing.md): a negative or fractional disclosure is refused
with its reason, an exchange that disclosed nothing still counts as a round trip."""

from __future__ import annotations

import numpy as np
import pytest

from classical.leakage import LeakageLedger
from classical.reconciliation import Request


@pytest.mark.parametrize("bad", [-1, -0.5, 1.5])
@pytest.mark.parametrize("record", ["record_disclosure", "record_round_trip"])
def test_a_negative_or_fractional_disclosure_is_refused(record, bad):
    ledger = LeakageLedger()
    with pytest.raises(ValueError, match="must be a non-negative integer, got"):
        getattr(ledger, record)(bad)
    assert ledger == LeakageLedger()  # nothing recorded


def test_an_exchange_that_disclosed_nothing_is_still_a_round_trip():
    ledger = LeakageLedger()
    ledger.record_exchange(Request(), np.zeros(0, np.uint8))
    ledger.record_disclosure(0)
    assert (ledger.disclosed_bits, ledger.round_trips) == (0, 1)
