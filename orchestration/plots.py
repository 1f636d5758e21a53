"""Plots (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from orchestration.keyrate import KeyRatePoint  # noqa: E402


def plot_key_rate(points: Sequence[KeyRatePoint], path: Path, title: str | None = None) -> None:
    d = [p.distance_km for p in points]
    r = [p.key_rate_per_pulse if p.key_rate_per_pulse > 0 else float("nan") for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(d, r, marker="o")
    ax.set_xlabel("total distance (km)")
    ax.set_ylabel("key rate per pulse pair")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
