"""Code maps (`pgh-report --code-maps`): a t-SNE map of a sample of each method's database codes under
the Hamming distance, coloured by class, one panel per row of the mAP table: how the classes spread
over the code space, the kind of figure the paper's *Semantic discovery* slide shows (the
distribution of 10 classes for ITQ, DeepBit and PGH)."""

from __future__ import annotations

import csv
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pgh.report.collect import natural_order
from pgh.report.tables import row_name, row_order
from pgh.report.variants import by_cell
from pgh.retrieval.codes import unpack_codes

SAMPLE_SEED = 0
MIN_CODES = 10  # fewer make no map


def read_codes_and_labels(run: Path, bits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's database codes (bool [n, bits]) and their labels, or None where the run did not save
    them (save_codes=false, or a run from before database_labels.npy)."""
    codes_file, labels_file = run / "database_codes.npy", run / "database_labels.npy"
    if not (codes_file.is_file() and labels_file.is_file()):
        return None
    codes, labels = unpack_codes(np.load(codes_file), bits), np.load(labels_file)
    if labels.shape != (len(codes),):
        raise ValueError(f"{labels_file} holds {labels.shape} labels for {len(codes)} codes: not written by pgh-train")
    return codes, labels


def class_names(run: Path) -> dict[int, str]:
    """label -> class name, from the run's per_class.csv ({} without one)."""
    path = run / "per_class.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return {int(row[0]): row[1] for row in rows if len(row) > 1 and row[0].lstrip("-").isdigit()}


def embed(codes: np.ndarray, sample: int) -> tuple[np.ndarray, np.ndarray]:
    """(2-D t-SNE coordinates [m, 2] of `sample` codes drawn with a fixed seed (all of them when fewer),
    which items those are [m]) under the Hamming distance."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(SAMPLE_SEED)
    items = np.sort(rng.choice(len(codes), size=min(sample, len(codes)), replace=False))
    chosen = codes[items].astype(np.float32)
    perplexity = min(30.0, (len(items) - 1) / 3)  # t-SNE needs more points than 3 x the perplexity
    tsne = TSNE(2, metric="hamming", init="pca", perplexity=perplexity, random_state=SAMPLE_SEED)
    return tsne.fit_transform(chosen), items


def code_maps(results: list[dict[str, Any]], sample: int) -> tuple[dict[tuple[str, int], dict], list[Path]]:
    """(dataset, bits) -> table row -> (coordinates [m, 2], labels [m], class names, mAP@all), from the
    first run (in directory order) of each table cell that saved its codes and labels (and at least
    MIN_CODES of them); and the runs of cells where none did."""
    maps: dict[tuple[str, int], dict] = defaultdict(dict)
    without: list[Path] = []
    cells = sorted(by_cell(results).items(), key=lambda cell: row_order(*cell[0][1:4]))  # the tables' row order
    for (dataset, method, features, variant, bits), group in cells:
        for r in sorted(group, key=lambda r: natural_order(Path(r["run"]))):
            read = read_codes_and_labels(Path(r["run"]), int(bits))
            if read is not None and len(read[0]) >= MIN_CODES:
                xy, items = embed(read[0], sample)
                name = row_name(method, features, variant)
                maps[(dataset, int(bits))][name] = (xy, read[1][items], class_names(Path(r["run"])), r["map_all"])
                break
        else:
            without += [Path(r["run"]) for r in group]
    return dict(maps), without


def plot_code_maps(panels: dict[str, tuple], title: str) -> Figure:
    """One scatter per table row (up to 4 a line), points coloured by class, one legend for all."""
    import matplotlib.pyplot as plt

    columns = min(4, len(panels))
    lines = -(-len(panels) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 3.4 * lines), dpi=120, squeeze=False)
    labels = sorted({int(label) for _, y, _, _ in panels.values() for label in y})
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    names: dict[int, str] = {}
    for ax, (row, (xy, y, row_names, map_all)) in zip(axes.flat, panels.items()):
        names.update(row_names)
        for i, label in enumerate(labels):
            mine = y == label
            ax.scatter(xy[mine, 0], xy[mine, 1], s=3, color=colours(i % colours.N), label=str(label), linewidths=0)
        ax.set_title(textwrap.fill(f"{row} (mAP@all {100 * map_all:.2f})", 40), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=colours(i % colours.N), label=names.get(label, str(label)))
        for i, label in enumerate(labels)
    ]
    fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), 10), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig
