"""What the users can say about the link from a round's public counts: background (dark)
clicks and two-photon interference visibility.

Neither can be measured by Charles: a dark click is timed and recorded like a photon's, and he
does not know which slots carried no light; visibility needs the users' bases and bits. After
sifting, both users hold the same public per-class counts (``DecoyObservations``) and the
round's decoy bounds, so both compute the same numbers here, pure functions of them:

* **Dark counts** from the vacuum–vacuum class (both users' intensity 0): no light leaves
  either source, so every Bell detection of that class is two background clicks in one of the
  four Bell patterns. For four alike detectors, each clicking with probability p per slot,
  Y₀₀ = 4 p² (1 − p)² per pulse pair (docs/physics.md §5 with no light), so
  p̂ = √Y₀₀ / (1 + √(1 − 2√Y₀₀)) inverts the observed Y₀₀ = detections / pairs (p ≤ 1/2).
  With unlike detectors p̂ is the p of four alike ones that would give the same Y₀₀. Background
  means everything that clicks without the users' light: dark counts, afterpulses, stray light
  (or light a relay injects). At the usual p ~ 10⁻⁶ a round sees none (p̂ = 0): the windowed
  counts (``vacuum_detections``, ``vacuum_pairs``) are what an alert reads.
* **Visibility**: for single-photon pairs the X-basis error rate is
  e₁₁ = [(1 − V) S/2 + N/2] / (S + N) (S: the two-photon term of Y₁₁, N: its dark-count terms,
  V the two-photon interference visibility, |γ|² for a mode overlap γ, lowered further by
  polarization misalignment), so 1 − 2 e₁₁ = V · S/(S + N) ≤ V, and with the round's upper
  bound e₁₁^{X,U} ≥ e₁₁, ``visibility_lower(e11_x_upper)`` = 1 − 2 e₁₁^{X,U} is a lower bound on
  V (as tight as the decoy bound: first order in the weak decoy's intensity).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Bell patterns of two background clicks among four detectors (ψ⁺: cH&cV, dH&dV; ψ⁻: cH&dV,
#: cV&dH): Y₀₀ = BELL_PAIRS · p² (1 − p)² for alike detectors.
BELL_PAIRS = 4


def vacuum_counts(observations: Any) -> dict[str, float]:
    """``{"vacuum_pairs", "vacuum_detections"}`` of the class where both users sent intensity 0
    (pulse pairs with matching bases and their kept detections, both bases and Bell states);
    ``{}`` when either user has no vacuum intensity or ``observations`` is None (a round that
    stopped before sifting). ``observations``: a ``classical.estimation.DecoyObservations``."""
    if observations is None:
        return {}
    a = [i for i, mu in enumerate(observations.intensities_a) if mu == 0.0]
    b = [j for j, mu in enumerate(observations.intensities_b) if mu == 0.0]
    if not a or not b:
        return {}
    i, j = a[0], b[0]
    return {"vacuum_pairs": float(np.sum(observations.pairs[i, j])),
            "vacuum_detections": float(np.sum(observations.detections[i, j]))}


def dark_count_probability(detections: float, pairs: float) -> float | None:
    """p̂ per detector per slot from the vacuum class's Bell detections and pulse pairs (None
    without pairs, or for negative or non-finite counts); 1/2 when the yield reaches its
    largest value 1/4 (or more: detections above the expected pairs)."""
    if not (pairs > 0 and math.isfinite(pairs)) or not (detections >= 0
                                                        and math.isfinite(detections)):
        return None  # no pairs, or counts no honest round gives (a peer's word): no estimate
    # pairs is an expected count (from both users' sent counts), so detections may exceed it
    # by chance or by a peer's or the relay's doing: the yield is then saturated
    root = math.sqrt(min(detections / pairs, 1.0))  # √Y₀₀ = 2 p (1 − p)
    if root >= 0.5:
        return 0.5
    return root / (1.0 + math.sqrt(1.0 - 2.0 * root))


def vacuum_yield(p: float) -> float:
    """Y₀₀ of four alike detectors clicking with probability ``p`` per slot."""
    return BELL_PAIRS * p * p * (1.0 - p) ** 2


def visibility_lower(e11_x_upper: float | None) -> float | None:
    """1 − 2 e₁₁^{X,U}, clipped to [0, 1]: a lower bound on the two-photon interference
    visibility of single-photon pairs (None without a bound)."""
    if e11_x_upper is None or not math.isfinite(e11_x_upper):
        return None
    return min(max(1.0 - 2.0 * float(e11_x_upper), 0.0), 1.0)


def round_link_estimates(observations: Any) -> dict[str, float]:
    """The fields a user adds to its round record (``rounds.jsonl``) from the round's public
    counts: ``vacuum_pairs``, ``vacuum_detections`` and ``dark_count_probability`` (p̂ of this
    round alone), or nothing without a vacuum–vacuum class."""
    counts = vacuum_counts(observations)
    if not counts:
        return {}
    p = dark_count_probability(counts["vacuum_detections"], counts["vacuum_pairs"])
    return counts if p is None else {**counts, "dark_count_probability": p}
