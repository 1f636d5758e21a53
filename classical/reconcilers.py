"""The reconcilers by name: what ``RoundConfig`` and a scenario's ``postprocessing.reconciliation``
choose from. A new method is a module with a :class:`~classical.reconciliation.Reconciler` and
one entry here; its questions must depend on the keys only through their difference (what keeps
them free of leakage charge, ``classical.leakage``), which tests/classical/test_leakage.py checks
for every entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from classical.cascade import CascadeReconciler
from classical.reconciliation import Reconciler

RECONCILERS: dict[str, type[Reconciler]] = {cls.name: cls for cls in (CascadeReconciler,)}
DEFAULT_METHOD = CascadeReconciler.name


def get_reconciler(method: str, settings: Mapping[str, Any] | None = None) -> Reconciler:
    """The reconciler ``method`` with ``settings`` (its parameters by name).

    Raises:
        ValueError: for an unknown method, or settings the method refuses (the message says
            which).
    """
    cls = RECONCILERS.get(method)
    if cls is None:
        raise ValueError(f"unknown reconciliation method {method!r}; choose one of "
                         f"{', '.join(sorted(RECONCILERS))}")
    return cls.from_settings(settings or {})


def default_reconciler() -> Reconciler:
    """The default method with its default parameters (Cascade, ``"shallow"``)."""
    return get_reconciler(DEFAULT_METHOD)
