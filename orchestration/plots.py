"""Plots (matplotlib, headless): the key-rate curve of `mdiqkd keyrate`, and a run's figures per
key round against emulated time for its report (``orchestration.report``).

Text that comes from a scenario (fault names, targets, probe names, titles) is drawn as plain
text (``parse_math=False``): a ``$`` in a name is a dollar sign, never mathtext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

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
        ax.set_title(title, parse_math=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- a run's figures, per key round -------------------------------------------------------------

#: Size of a run figure in inches, and its resolution (880 × 330 pixels).
RUN_FIGSIZE = (8.0, 3.0)
RUN_DPI = 110
FAULT_COLOR = "tab:orange"
ABORT_COLOR = "tab:red"


@dataclass(frozen=True)
class Window:
    """A stretch of emulated time to show on every figure: a fault on ``[start_s, end_s)``
    (shaded), or an action at ``start_s`` (``end_s`` equal: a dashed line)."""

    label: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Rounds:
    """The key rounds drawn: round k covers ``[start_s[k], stop_s[k])`` emulated seconds;
    ``aborted[k]`` whether it was aborted."""

    start_s: np.ndarray
    stop_s: np.ndarray
    aborted: np.ndarray

    @property
    def mid_s(self) -> np.ndarray:
        return (self.start_s + self.stop_s) / 2


@dataclass(frozen=True)
class Curve:
    """One value per round (NaN: the round did not measure it)."""

    label: str
    values: np.ndarray
    color: str


@dataclass(frozen=True)
class Bound:
    """A probe's tolerance bound on a figure's quantity: a dotted horizontal line."""

    label: str
    value: float


def _windows(ax: Axes, windows: Sequence[Window]) -> list[Any]:
    """Shade each fault window and draw each action, labelled at the top of the axes
    (alternating heights, so that neighbours do not overwrite each other); returns the legend's
    entries for them."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for k, w in enumerate(windows):
        if w.end_s > w.start_s:
            ax.axvspan(w.start_s, w.end_s, color=FAULT_COLOR, alpha=0.18, lw=0)
            x = (w.start_s + w.end_s) / 2
        else:
            ax.axvline(w.start_s, color=FAULT_COLOR, ls="--", lw=1)
            x = w.start_s
        ax.text(x, 0.97 - 0.09 * (k % 2), w.label, transform=top, ha="center", va="top",
                fontsize=7, color="saddlebrown", parse_math=False,
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
    entries: list[Any] = []
    if any(w.end_s > w.start_s for w in windows):
        entries.append(Patch(color=FAULT_COLOR, alpha=0.18, label="fault window"))
    if any(w.end_s <= w.start_s for w in windows):
        entries.append(Line2D([], [], color=FAULT_COLOR, ls="--", lw=1, label="action"))
    return entries


def _frame(ax: Axes, run_end_s: float, title: str, ylabel: str, entries: list[Any]) -> None:
    ax.set_xlim(0.0, max(run_end_s, 1e-12))
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel("emulated time (s)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if entries:  # beside the axes, never over the data
        ax.legend(handles=entries, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                  frameon=False)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    # no creation date or version in the file: the same run gives the same bytes
    fig.savefig(path, dpi=RUN_DPI, metadata={"Software": None})
    plt.close(fig)


def _segments(start: np.ndarray, stop: np.ndarray, y: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal segments [start, stop) at y as one polyline broken by NaNs (one path, drawn
    fast for any number of rounds)."""
    xs = np.column_stack([start, stop, np.full(start.shape, np.nan)]).ravel()
    ys = np.column_stack([y, y, np.full(y.shape, np.nan)]).ravel()
    return xs, ys


def plot_rounds(path: Path, rounds: Rounds, curves: Sequence[Curve], title: str, ylabel: str,
                windows: Sequence[Window], run_end_s: float, bounds: Sequence[Bound] = (),
                engineering: bool = False) -> None:
    """Each curve's value per round as a segment over the round's time with a marker in its
    middle (a red cross for an aborted round, at 0 when no curve has a value there); fault
    windows shaded; bounds dotted. ``engineering``: ticks as 500k, 1M."""
    fig, ax = plt.subplots(figsize=RUN_FIGSIZE)
    entries = _windows(ax, windows)
    measured = np.zeros(rounds.aborted.shape, dtype=bool)
    for c in curves:
        ok = np.isfinite(c.values)
        measured |= ok
        ax.plot(*_segments(rounds.start_s[ok], rounds.stop_s[ok], c.values[ok]),
                color=c.color, lw=2)
        good, bad = ok & ~rounds.aborted, ok & rounds.aborted
        ax.plot(rounds.mid_s[good], c.values[good], "o", color=c.color, ms=4)
        ax.plot(rounds.mid_s[bad], c.values[bad], "x", color=ABORT_COLOR, ms=8, mew=2)
        entries.append(Line2D([], [], color=c.color, lw=2, marker="o", ms=4, label=c.label))
    alone = rounds.aborted & ~measured
    ax.plot(rounds.mid_s[alone], np.zeros(int(alone.sum())), "x", color=ABORT_COLOR, ms=8,
            mew=2, clip_on=False)
    if rounds.aborted.any():
        entries.append(Line2D([], [], color=ABORT_COLOR, ls="", marker="x", ms=8, mew=2,
                              label="aborted round"))
    right = blended_transform_factory(ax.transAxes, ax.transData)
    for b in bounds:
        ax.axhline(b.value, color="dimgray", ls=":", lw=1)
        ax.text(0.995, b.value, b.label, transform=right, ha="right", va="bottom", fontsize=7,
                color="dimgray", parse_math=False)
    if bounds:
        entries.append(Line2D([], [], color="dimgray", ls=":", lw=1, label="probe tolerance"))
    values = [v for c in curves for v in c.values[np.isfinite(c.values)]]
    values += [b.value for b in bounds if np.isfinite(b.value)]
    top = max([v for v in values if v > 0], default=1.0)
    ax.set_ylim(0.0, top * 1.3)  # headroom for the fault labels
    if engineering:
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    _frame(ax, run_end_s, title, ylabel, entries)
    _save(fig, path)


def plot_aborts(path: Path, rounds: Rounds, title: str, windows: Sequence[Window],
                run_end_s: float) -> None:
    """Aborted rounds: each marked red along the time axis over its time, and their running
    count (a step at the end of each aborted round)."""
    fig, ax = plt.subplots(figsize=RUN_FIGSIZE)
    entries = _windows(ax, windows)
    starts, stops = rounds.start_s[rounds.aborted], rounds.stop_s[rounds.aborted]
    # one collection for all of them (a patch per round would cost seconds in a long run)
    ax.broken_barh(list(zip(starts, stops - starts, strict=True)), (0.0, 0.05),
                   transform=blended_transform_factory(ax.transData, ax.transAxes),
                   color=ABORT_COLOR, lw=0)
    order = np.argsort(rounds.stop_s)
    t = np.concatenate([[0.0], rounds.stop_s[order]])
    count = np.concatenate([[0], np.cumsum(rounds.aborted[order])])
    ax.step(t, count, where="post", color="black", lw=1.5)
    entries.append(Line2D([], [], color="black", lw=1.5, label="running count"))
    if rounds.aborted.any():
        entries.append(Patch(color=ABORT_COLOR, label="aborted round"))
    ax.set_ylim(bottom=0.0, top=max(1.0, float(count[-1])) * 1.2)
    ax.yaxis.get_major_locator().set_params(integer=True)
    _frame(ax, run_end_s, title, "aborted rounds", entries)
    _save(fig, path)
