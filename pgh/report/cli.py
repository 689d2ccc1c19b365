"""`pgh-report`: one markdown report, and PGH's progressive curves, from finished runs — single runs,
sweeps (multirun directories) or any folder that holds them.

  pgh-report logs/pgh_init/multiruns/2026-11-30_12-00-00-123456     # prints the report
  pgh-report logs/bench/pgh/mnist5k_gist_32* --out reports/mnist5k   # also writes report.md and figures

Every directory at or below the arguments that holds a metrics.json is a run. The report has
1. mAP@all (%) per method+features (rows) and dataset × bits (columns), mean ± standard deviation
   where several runs share a cell (seeds), beside the paper's numbers when every run is on MNIST
   (`mnist`, `mnist5k`) or every run is on CIFAR-10;
2. every run: where it is, its settings, seed, initial codes, mAP@all, mAP@1000, P@100, how its
   database codes use their bits (distinct codes, constant bits, mean |bit correlation|), training
   seconds;
3. mAP@all per class (over each class's queries), a table per dataset and bit length;
4. for the runs with a rounds.csv (PGH): mAP@all by round, the paper's progressive curve, as a table
   and as rounds.png, beside the paper's own curves when every such run is CIFAR-10 at 64 bits;
and, with --out, the precision-recall curves over Hamming radii and the precision@N curves of every
row, one figure each per dataset and bit length (pr_<dataset>_<bits>.png,
precision_at_n_<dataset>_<bits>.png; repeats averaged; runs that predate precision_at_n.csv are left
out of the second); with --code-maps, a t-SNE map of each row's database codes by class
(code_map_<dataset>_<bits>.png). report.md also shows the figures and names what is not in it: runs
without metrics.json, a sweep's jobs without a directory (with their swept settings), and runs in no
code map.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pgh.data import Split
from pgh.io import file_lock, unwritable_reason, write_text
from pgh.report import paper
from pgh.report.code_maps import MIN_CODES, code_maps, plot_code_maps
from pgh.report.collect import (
    find_runs,
    load_run,
    missing_sweep_jobs,
    read_curve,
    read_per_class,
    read_rounds,
    run_names,
    unfinished_runs,
)
from pgh.report.plots import matplotlib_close, plot_pr_curves, plot_precision_at_n, plot_rounds, save_figure
from pgh.report.tables import map_table, row_name
from pgh.report.variants import by_cell, label_variants, mean_per_cell, split_repeated_seeds, tell_folders_apart
from pgh.retrieval.metrics import metric_key

MNIST_DATASETS = {"mnist", "mnist5k"}
FIGURE_NAME = re.compile(r"^(rounds|pr_.+_\d+|precision_at_n_.+_\d+|code_map_.+_\d+)\.png$")  # what --out writes


def paper_reference(datasets: set[str]) -> tuple[dict | None, str]:
    if datasets <= MNIST_DATASETS:
        return paper.MNIST, "paper MNIST"
    if datasets == {"cifar10"}:
        return paper.CIFAR10, "paper CIFAR-10"
    return None, ""


def pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


@dataclass
class Report:
    text: str  # markdown
    rounds: dict[str, list[float]]  # PGH's progressive curves: label -> mAP@all % by round
    pr_curves: dict[tuple[str, int], dict[str, np.ndarray]]  # (dataset, bits) -> row -> [bits + 1, 3]
    precision_at_n: dict[tuple[str, int], dict[str, np.ndarray]]  # (dataset, bits) -> row -> [m, 2]
    counted: list[dict[str, Any]]  # the runs the tables count (a repeated seed once), their rows labelled


def runs_table(results: list[dict[str, Any]]) -> str:
    names = run_names([r["run"] for r in results])
    header = ["run", "dataset", "method", "settings", "bits", "seed", "initial codes", "mAP@all", "mAP@1000", "P@100"]
    # of the database codes: a collapse shows as few distinct codes, constant bits or correlated bits
    header += ["distinct codes", "constant bits", "bit corr.", "train s"]
    text = "| " + " | ".join(header) + " |\n|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    for r in results:
        initial = ""
        if "init_hash" in r:
            initial = f"{row_name(r['init_hash'], r.get('init_features', r['features']))} {pct(r.get('init_map_all'))}"
        cells = [names[r["run"]], r["dataset"], row_name(r["method"], r["features"]), r["variant"], str(r["bits"])]
        cells += [str(r.get("seed", "")), initial, pct(r["map_all"])]
        for prefix, default in (("map_at_", "map_at_1000"), ("precision_at_", "precision_at_100")):
            # a run with another eval.map_k / precision_k shows its own K beside the value
            key = metric_key(r, prefix) or default
            cells.append(pct(r.get(key)) + ("" if key == default else f" (@{key[len(prefix) :]})"))
        cells.append(f"{r['db_distinct_codes']:,}" if "db_distinct_codes" in r else "–")
        cells.append(str(r["db_constant_bits"]) if "db_constant_bits" in r else "–")
        correlation = r.get("db_bit_correlation")
        cells.append(f"{correlation:.2f}" if correlation is not None else "–")
        cells.append(f"{r['train_seconds']:.1f}" if "train_seconds" in r else "–")
        text += "| " + " | ".join(cells) + " |\n"
    return text


def progressive_curves(results: list[dict[str, Any]]) -> dict[str, list[float]]:
    """label -> mAP@all % by round, for the runs with a rounds.csv; the label names the initial codes,
    bits and the run's settings, and the dataset and seed where those vary."""
    names = run_names([r["run"] for r in results])
    several_datasets = len({r["dataset"] for r in results}) > 1
    several_seeds = len({r.get("seed") for r in results}) > 1
    curves: dict[str, list[float]] = {}
    for r in results:
        values = read_rounds(r["run"])
        if not values:
            continue
        curve = row_name(r.get("init_hash", "?"), r.get("init_features", r["features"])) + f", {r['bits']} bits"
        initial = ("method.init_hash", "method.init_features")  # named by the label's start
        curve += "".join(f", {k}={v}" for k, v in r["settings"].items() if k not in initial)
        curve += f", {r['dataset']}" if several_datasets else ""
        curve += f", seed {r.get('seed')}" if several_seeds else ""
        curves[curve if curve not in curves else f"{curve} ({names[r['run']]})"] = values
    return curves


def rounds_table(curves: dict[str, list[float]]) -> str:
    rounds = max(map(len, curves.values()))
    text = "| initial codes | " + " | ".join(f"t = {t}" for t in range(rounds)) + " |\n"
    text += "|---|" + "---:|" * rounds + "\n"
    for curve, values in curves.items():
        cells = [f"{v:.2f}" for v in values] + ["–"] * (rounds - len(values))
        text += f"| {curve} | " + " | ".join(cells) + " |\n"
    return text


def curves_per_cell(results: list[dict[str, Any]], filename: str) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """(dataset, bits) -> table row -> the mean of its runs' curves in `filename` (pr_curve.csv,
    precision_at_n.csv)."""
    figures: dict[tuple[str, int], dict[str, np.ndarray]] = defaultdict(dict)
    for (dataset, method, features, variant, bits), group in by_cell(results).items():
        read = [(r, read_curve(r["run"], filename)) for r in group]
        curves = [c for _, c in read if c is not None]
        if len({c.shape for c in curves}) > 1:
            shapes = "; ".join(f"{r['run']}: {c.shape[0]} rows" for r, c in read if c is not None)
            raise ValueError(
                f"the {filename} of one table cell's runs differ in length ({shapes}): runs with the same "
                "dataset name, bits and settings but another database; report them separately"
            )
        if curves:
            name = row_name(method, features, variant)
            figures[(dataset, bits)][name] = np.mean(curves, axis=0)
    return dict(figures)


def query_set_note(results: list[dict[str, Any]]) -> str:
    """A warning where runs of one dataset were scored on different query sets (another
    split.query_per_class or split.seed): their mAP values are not comparable, whatever the table's
    labels (seeds are never a label)."""
    names = run_names([r["run"] for r in results])
    by_dataset: dict[str, dict[bytes, list[tuple[dict[str, Any], int]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if (r["run"] / "split.npz").exists():
            query = Split.load(r["run"] / "split.npz").query.numpy()
            by_dataset[r["dataset"]][query.tobytes()].append((r, len(query)))
    text = ""
    for dataset, query_sets in sorted(by_dataset.items()):
        if len(query_sets) > 1:
            described = "; ".join(
                f"{len(runs)} run{'s' if len(runs) > 1 else ''} on {count:,} queries (e.g. {names[first['run']]})"
                for runs in query_sets.values()
                for first, count in runs[:1]
            )
            text += (
                f"\n**Not one query set.** The {dataset} runs were scored on {len(query_sets)} different query "
                f"sets (another `split.query_per_class` or `split.seed`): {described}. mAP values from "
                "different query sets are not comparable.\n"
            )
    return text


def per_class_tables(results: list[dict[str, Any]]) -> str:
    """Per dataset and bit length, mAP@all (%) of each table row over each class's queries (repeats
    averaged); runs from before per_class.csv existed are left out."""
    cells: dict[tuple[str, int], dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for (dataset, method, features, variant, bits), group in by_cell(results).items():
        name = row_name(method, features, variant)
        cells[(dataset, bits)][name] += [c for c in map(read_per_class, (r["run"] for r in group)) if c]
    text = ""
    for (dataset, bits), rows in sorted(cells.items()):
        rows = {name: runs for name, runs in rows.items() if runs}
        if not rows:
            continue
        classes = list(dict.fromkeys(c for runs in rows.values() for run in runs for c in run))
        header = " | ".join(c.replace("|", "\\|") for c in classes)  # a class name must not split the cell
        text += f"\n### {dataset}, {bits} bits\n\n| method | {header} |\n"
        text += "|---|" + "---:|" * len(classes) + "\n"
        for name, runs in rows.items():
            values = [[run[c] for run in runs if c in run] for c in classes]
            text += f"| {name} | " + " | ".join(f"{statistics.fmean(v):.2f}" if v else "–" for v in values) + " |\n"
    return text


def build_report(paths: list[str | Path]) -> Report:
    results = [load_run(run) for run in find_runs(paths)]
    tell_folders_apart(results)
    label_variants(results)
    counted, repeated = split_repeated_seeds(results)
    datasets = sorted({r["dataset"] for r in results})
    bits = sorted({int(r["bits"]) for r in results})
    reference, label = paper_reference(set(datasets))

    text = f"# pgh report: {len(results)} run{'' if len(results) == 1 else 's'}\n\n## mAP@all (%)\n\n"
    text += map_table(mean_per_cell(counted), datasets, bits, paper=reference, paper_label=label)
    if any(len(group) > 1 for group in by_cell(counted).values()):
        text += "\nCells with several runs show mean ± sample standard deviation over them (n: how many).\n"
    if repeated:
        names = run_names([r["run"] for r in results])

        def pair(r: dict[str, Any], first: dict[str, Any]) -> str:
            # a repeat that scored otherwise (a resumed run reshuffles, another machine rounds otherwise) says so
            mine, theirs = pct(r["map_all"]), pct(first["map_all"])
            differs = f"; mAP@all {mine} there, {theirs} counted" if mine != theirs else ""
            return f"{names[r['run']]} (as {names[first['run']]}{differs})"

        pairs = "; ".join(pair(r, first) for r, first in repeated)
        text += (
            f"\n**Repeated seeds.** These runs have the settings, seed and split seed of an earlier run of "
            "their cell, so the mAP and per-class tables and the PR and precision@N figures count them once "
            f"(the rounds table shows each run's curve): {pairs}.\n"
        )
    text += query_set_note(results)
    text += "\n## Runs\n\n" + runs_table(results)
    classes = per_class_tables(counted)
    if classes:
        text += "\n## mAP@all (%) per class (over each class's queries)\n" + classes
    curves = progressive_curves(results)
    with_rounds = {(r["dataset"], int(r["bits"])) for r in results if (Path(r["run"]) / "rounds.csv").exists()}
    if with_rounds == {("cifar10", 64)}:  # the paper's progressive curves are CIFAR-10's at 64 bits
        for key, values in paper.CIFAR10_ROUNDS_64.items():
            curves[f"paper: {row_name(*key.split('+'))}"] = values
    if curves:
        text += "\n## PGH: mAP@all (%) by round (round 0: the initial codes)\n\n" + rounds_table(curves)
    return Report(
        text,
        curves,
        curves_per_cell(counted, "pr_curve.csv"),
        curves_per_cell(counted, "precision_at_n.csv"),
        counted,
    )


FILE_PART_CHARS = 100  # a figure's name, and atomic_path's temporary beside it, well within 255 bytes


def file_parts(datasets: Iterable[str]) -> dict[str, str]:
    """Each dataset's name as part of a file name: `folder (/data/shoes)` -> `folder_data_shoes`. A name
    longer than FILE_PART_CHARS is cut, and names that come out alike (`a/b` and `a_b`) or are cut end in
    a hash of the whole name, so that no figure overwrites another's."""
    readable = {name: re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_") or "dataset" for name in set(datasets)}
    taken = Counter(readable.values())
    parts = {}
    for name, part in readable.items():
        if taken[part] > 1 or len(part) > FILE_PART_CHARS:
            digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
            part = f"{part[: FILE_PART_CHARS - 9]}-{digest}"
        parts[name] = part
    return parts


REPORT_LOCK = ".pgh-report.lock"  # in --out, held while a report writes there


@contextmanager
def out_folder_lock(out: Path) -> Iterator[None]:
    """`out` to this report alone while it writes its figures and report.md: a second pgh-report given
    the same --out waits for the first (else its removal of stale figures deletes the first's new ones,
    and report.md names figures of the other). The lock is the system's (flock on
    `out/.pgh-report.lock`, left there); where the file system has no locks, nothing is held."""
    out.mkdir(parents=True, exist_ok=True)

    def waiting() -> None:
        print(f"pgh-report: another pgh-report is writing {out}: waiting for it", file=sys.stderr)

    def unlockable(error: OSError) -> None:  # ENOLCK
        print(f"pgh-report: cannot lock {out} ({error}): not waiting for other reports", file=sys.stderr)

    with file_lock(out / REPORT_LOCK, on_wait=waiting, on_unlockable=unlockable):
        yield


def remove_stale_figures(out: Path, drawn: set[str]) -> None:
    """Delete the figures an earlier report left in `out` that this one did not draw (`drawn`); one
    deleted meanwhile (by a report without the lock: a file system without locks) is no error."""
    for stale in out.glob("*.png"):
        if stale.name not in drawn and FIGURE_NAME.match(stale.name):
            stale.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="pgh-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", help="run directories, sweep directories, or folders holding them")
    parser.add_argument("--out", type=Path, help="also write report.md and the figures into this directory")
    parser.add_argument(
        "--code-maps", type=int, nargs="?", const=1000, default=None, metavar="N",
        help="with --out: also a t-SNE map of N (1000) database codes of each table row, coloured by class "
        "(code_map_<dataset>_<bits>.png; seconds to a minute a row)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        sys.exit(f"pgh-report: --out {args.out} is a file: give a directory (it is created if missing)")
    if args.out is not None and (reason := unwritable_reason(args.out)):  # before the work, not after it
        sys.exit(f"pgh-report: cannot write --out {args.out}: {reason}: choose a writable --out or fix its permissions")
    if args.code_maps is not None and (args.out is None or args.code_maps < MIN_CODES):
        problem = "draws figures: give --out <dir> too" if args.out is None else f"needs N >= {MIN_CODES} codes"
        sys.exit(f"pgh-report: --code-maps {problem}")
    # named first: also when no run has finished, which ends the command below
    paths = [p for p in map(Path, args.paths) if p.exists()]
    left_out = unfinished_runs(paths)
    if left_out:
        shown = ", ".join(map(str, left_out[:5])) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        print(f"pgh-report: left out {len(left_out)} run(s) without metrics.json (training, stopped or failed): "
              f"{shown}", file=sys.stderr)  # fmt: skip
    notes = []  # also in report.md, which outlives the terminal
    if left_out:
        notes.append(f"{len(left_out)} run(s) without metrics.json (training, stopped or failed): {shown}")
    for sweep, jobs in missing_sweep_jobs(paths).items():
        where = " (their logs: .submitit/ there)" if (sweep / ".submitit").is_dir() else ""
        notes.append(f"{sweep} has no directory for job(s) {', '.join(jobs)} of its sweep: refused before writing "
                     f"anything, or not started yet{where}")  # fmt: skip
        print(f"pgh-report: {notes[-1]}", file=sys.stderr)
    try:
        report = build_report(args.paths)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"pgh-report: {error}")
    if args.out is not None:
        figures = {"rounds.png": plot_rounds(report.rounds, "PGH: mAP@all by round")} if report.rounds else {}
        maps, without = code_maps(report.counted, args.code_maps) if args.code_maps is not None else ({}, [])
        file_part = file_parts(dataset for dataset, _ in [*report.pr_curves, *report.precision_at_n, *maps]).get
        for (dataset, b), curves in sorted(report.pr_curves.items()):
            figures[f"pr_{file_part(dataset)}_{b}.png"] = plot_pr_curves(curves, f"{dataset}, {b} bits")
        for (dataset, b), curves in sorted(report.precision_at_n.items()):
            figures[f"precision_at_n_{file_part(dataset)}_{b}.png"] = plot_precision_at_n(
                curves, f"{dataset}, {b} bits"
            )
        for (dataset, b), panels in sorted(maps.items()):
            title = f"{dataset}, {b} bits: t-SNE of {args.code_maps:,} database codes (Hamming), by class"
            figures[f"code_map_{file_part(dataset)}_{b}.png"] = plot_code_maps(panels, title)
        if without:
            shown = ", ".join(map(str, without[:5])) + (f" and {len(without) - 5} more" if len(without) > 5 else "")
            notes.append(f"{len(without)} run(s) in no code map: no database_codes.npy and database_labels.npy "
                         f"(save_codes=false, or a run from before the labels were saved): {shown}")  # fmt: skip
            print(f"pgh-report: {notes[-1]}", file=sys.stderr)
        text = report.text
        if notes:
            text += "\n## Not in this report\n\n" + "".join(f"- {note}\n" for note in notes)
        if figures:
            text += "\n## Figures\n\n" + "".join(f"![{name}]({name})\n\n" for name in figures)
        with out_folder_lock(args.out):
            for name, fig in figures.items():
                save_figure(fig, args.out / name)
                matplotlib_close(fig)
            remove_stale_figures(args.out, set(figures))
            write_text(args.out / "report.md", text)
        print(f"pgh-report: wrote report.md and {len(figures)} figure(s) to {args.out}", file=sys.stderr)
    print(report.text, end="")


if __name__ == "__main__":
    main()
