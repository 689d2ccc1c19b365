"""Markdown tables of mAP@all (%) from runs' metrics, beside the paper's rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

NAMES = {
    "lsh": "LSH",
    "itq": "ITQ",
    "sh": "SH",
    "sph": "SpH",
    "dh": "DH",
    "deepbit": "DeepBit",
    "bgan": "BGAN",
    "pgh": "PGH",
    "pixels": "PIXEL",
    "gist": "GIST",
    "vgg16_fc7": "VGG",
}


FEATURE_ORDER = ["pixels", "gist", "vgg16_fc7"]


def load_metrics(run_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    return [json.loads((Path(d) / "metrics.json").read_text()) for d in run_dirs if (Path(d) / "metrics.json").exists()]


def row_name(method: str, features: str, variant: str = "") -> str:
    """A table row's label, e.g. `PGH+GIST`, or `PGH+GIST (method.init_hash=lsh)` for a variant."""
    # a method or features of the user's own (named by its lower-cased class) in capitals, as the paper's
    name = f"{NAMES.get(method, method.upper())}+{NAMES.get(features, features.upper())}"
    return name + (f" ({variant})" if variant else "")


def row_order(method: str, features: str, variant: str = "") -> tuple:
    """Where a row goes in every table: by features, then method (the paper's order), then settings."""
    names = list(NAMES)
    return (
        FEATURE_ORDER.index(features) if features in FEATURE_ORDER else 99,
        names.index(method) if method in names else 99,
        variant,
    )


def map_table(
    results: list[dict[str, Any]],
    datasets: list[str],
    bits: list[int],
    paper: dict[tuple[str, str], dict[int, float]] | None = None,
    paper_label: str = "paper MNIST",
) -> str:
    """One row per (method, features[, variant]), one column per (dataset, bits) that some result has;
    mAP@all in %.

    A result's optional `variant` (settings that tell runs of one method+features apart, from
    pgh-report) splits its row; an optional `map_all_std` is shown as ± after the mean, and an optional
    `map_all_runs` as (n=…) after it."""
    by_key = {(r["dataset"], r["method"], r["features"], r.get("variant", ""), int(r["bits"])): r for r in results}
    rows = {(r["method"], r["features"], r.get("variant", "")) for r in results}
    rows = sorted(rows, key=lambda row: row_order(*row))
    # a (dataset, bits) pair no result has would be a column of dashes (e.g. a folder run beside MNIST runs)
    present = {(r["dataset"], int(r["bits"])) for r in results}
    columns = [(d, b) for d in datasets for b in bits if (d, b) in present]
    header = ["method"] + [f"{d} {b}" for d, b in columns]
    if paper is not None:
        header += [f"{paper_label} {b}" for b in bits]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method, features, variant in rows:
        cells = []
        for d, b in columns:
            r = by_key.get((d, method, features, variant, b))
            cell = f"{100 * r['map_all']:.2f}" if r else "–"
            if r and "map_all_std" in r:
                cell += f" ± {100 * r['map_all_std']:.2f}"
                cell += f" (n={r['map_all_runs']})" if "map_all_runs" in r else ""
            cells.append(cell)
        if paper is not None:
            ref = paper.get((method, features), {})
            cells += [f"{ref[b]:.2f}" if b in ref else "–" for b in bits]
        lines.append(f"| {row_name(method, features, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_between(text: str, start_marker: str, end_marker: str, body: str) -> str:
    """Replace what lies between two marker lines (the markers stay)."""
    start, end = text.index(start_marker) + len(start_marker), text.index(end_marker)
    return text[:start] + "\n" + body + text[end:]
