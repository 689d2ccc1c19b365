"""Figures: the precision-recall curve over Hamming radii."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def plot_pr_curves(curves: dict[str, np.ndarray], title: str = "") -> Figure:
    """curves: label -> [bits + 1, 3] (hamming radius, precision, recall)."""
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=120)
    for label, pr in curves.items():
        ax.plot(pr[:, 2], pr[:, 1], marker=".", markersize=3, label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    if len(curves) > 1 or any(curves):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def matplotlib_close(fig: Figure) -> None:
    plt.close(fig)
