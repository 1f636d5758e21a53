"""The warm-up compiles what a key round runs: after it, a real round's kernels need no compile."""

from __future__ import annotations

import numpy as np
import pytest

from classical import amplification, cascade, reconciliation_channel, verification
from classical.reconcilers import default_reconciler
from classical.warmup import warm_up_postprocessing


def _kernels():
    for module in (amplification, cascade, reconciliation_channel, verification):
        for name, obj in vars(module).items():
            if hasattr(obj, "signatures") and hasattr(obj, "py_func"):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize(("key_bits", "qber"), [(1_200_000, 0.003), (300_000, 0.05), (4000, 0.1)])
def test_warm_up_compiles_every_kernel_a_round_runs(key_bits, qber):
    """A quick-start round reconciles about 1.1e6 bits at 0.3 %; others are smaller or noisier."""
    warm_up_postprocessing(default_reconciler(), seed=1)
    before = {name: len(k.signatures) for name, k in _kernels()}
    warm_up_postprocessing(default_reconciler(), key_bits=key_bits, qber=qber, seed=2)
    after = {name: len(k.signatures) for name, k in _kernels()}
    assert after == before
    assert sum(before.values()) > 10  # it did reach the kernels


def test_warm_up_leaves_the_random_state_alone():
    state = np.random.get_state()[1].copy()
    warm_up_postprocessing(default_reconciler(), key_bits=5000)
    assert np.array_equal(np.random.get_state()[1], state)
