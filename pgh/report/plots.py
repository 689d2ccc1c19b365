"""Figures: the precision-recall curve over Hamming radii, the precision@N curve, and PGH's progressive
curve (mAP by round)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from pgh.io import atomic_path


def _distinct_colors(ax, n: int) -> None:
    """More than the default cycle's 10 curves: take them from tab20 so that no two share a colour."""
    if n > 10:
        ax.set_prop_cycle(color=plt.get_cmap("tab20")(np.arange(n) % 20))


def _legend_below(ax, curves: dict, fontsize: int) -> None:
    """The legend under the axes, never over the curves: a report has a dozen rows with long labels
    (a sweep's settings); save_figure's bbox_inches="tight" keeps it in the picture."""
    if curves:
        short = all(len(label) <= 25 for label in curves)
        columns = 2 if short and len(curves) > 6 else 1
        ax.legend(fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=columns)


def _plot_curves(
    curves: dict[str, np.ndarray], x: int, y: int, labels: tuple[str, str], title: str, xlim=None
) -> Figure:
    """One line per label through columns x and y of its array; the y axis (a precision) runs 0 to 1."""
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=120)
    _distinct_colors(ax, len(curves))
    for label, table in curves.items():
        ax.plot(table[:, x], table[:, y], marker=".", markersize=3, label=textwrap.fill(label, 50))
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_xlim(xlim)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    _legend_below(ax, curves, fontsize=8)
    return fig


def plot_pr_curves(curves: dict[str, np.ndarray], title: str = "") -> Figure:
    """curves: label -> [bits + 1, 3] (hamming radius, precision, recall)."""
    return _plot_curves(curves, 2, 1, ("recall", "precision"), title, xlim=(0, 1))


def plot_precision_at_n(curves: dict[str, np.ndarray], title: str = "") -> Figure:
    """curves: label -> [m, 2] (N, precision of the top N retrieved)."""
    return _plot_curves(curves, 0, 1, ("number of top retrieved images N", "precision@N"), title)


def plot_rounds(curves: dict[str, list[float]], title: str = "") -> Figure:
    """curves: label -> mAP@all (%) at rounds 0, 1, ... (round 0: the initial codes)."""
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=120)
    _distinct_colors(ax, len(curves))
    for label, values in curves.items():
        ax.plot(range(len(values)), values, marker="o", markersize=4, label=textwrap.fill(label, 60))
    ax.set_xlabel("round t (0: initial codes)")
    ax.set_ylabel("mAP@all (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    _legend_below(ax, curves, fontsize=7)
    return fig


def save_figure(fig: Figure, path: str | Path) -> None:
    """The figure as a PNG at `path`, written atomically; bbox_inches="tight" keeps the legend, which
    sits below the axes, in the picture."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def matplotlib_close(fig: Figure) -> None:
    plt.close(fig)
