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
out of the second). report.md also shows the figures and names what is not in it: runs without
metrics.json, and a sweep's jobs without a directory (with their swept settings).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf

from pgh.config_checks import flat_config
from pgh.data import Split
from pgh.io import write_text
from pgh.report import paper
from pgh.report.plots import matplotlib_close, plot_pr_curves, plot_precision_at_n, plot_rounds, save_figure
from pgh.report.tables import map_table, row_name, row_order
from pgh.retrieval.metrics import LATER_DEFAULTS, metric_key

MNIST_DATASETS = {"mnist", "mnist5k"}
FIGURE_NAME = re.compile(r"^(rounds|pr_.+_\d+|precision_at_n_.+_\d+)\.png$")  # what --out writes


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories (holding metrics.json) at or below `paths`, each once, in path order (numbers
    in names compared as numbers)."""
    runs: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_file():
            if path.name != "metrics.json":
                raise FileNotFoundError(
                    f"{path} is a file: give a run directory, a sweep directory or a folder above them"
                )
            path = path.parent
        for metrics in sorted(path.rglob("metrics.json"), key=natural_order):
            runs[metrics.parent.resolve()] = None
    if not runs:
        raise FileNotFoundError(
            f"no metrics.json at or below {', '.join(map(str, paths))}: a run writes it when it finishes, "
            "so unfinished or failed runs have none"
        )
    return list(runs)


def unfinished_runs(paths: list[str | Path]) -> list[Path]:
    """pgh-train run directories (a config.yaml beside no metrics.json) at or below `paths`: runs still
    training, stopped or failed, which the report leaves out."""
    found = {
        config.parent.resolve()
        for path in map(Path, paths)
        for config in path.rglob("config.yaml")
        # not Hydra's copy (.hydra/) nor W&B's (wandb/run-*/files/)
        if not {".hydra", "wandb"} & set(config.parts) and not (config.parent / "metrics.json").exists()
    }
    return sorted(found, key=natural_order)


def missing_sweep_jobs(paths: list[str | Path]) -> dict[Path, list[str]]:
    """sweep directory -> its jobs that have no directory, each as `<num> (<its swept settings>)`, for
    every Hydra sweep (a multirun.yaml) at or below `paths` whose job directories start with the job
    number (pgh-train's `<num>_<dataset>_…`): jobs refused before they wrote anything (their directory
    is removed) or not started yet (a SLURM queue). Sweeps whose grid Hydra's basic sweeper cannot
    expand are skipped."""
    missing = {}
    for path in map(Path, paths):
        for saved in sorted(path.rglob("multirun.yaml"), key=natural_order) if path.is_dir() else []:
            jobs = sweep_jobs(saved)
            if jobs is None:
                continue
            numbers = {int(m.group(1)) for d in saved.parent.iterdir() if d.is_dir() and (m := JOB_DIR.match(d.name))}
            absent = [f"{num} ({' '.join(settings)})" for num, settings in enumerate(jobs) if num not in numbers]
            if absent:
                missing[saved.parent] = absent
    return missing


JOB_DIR = re.compile(r"^(\d+)_")


def sweep_jobs(multirun_yaml: Path) -> list[list[str]] | None:
    """The swept settings of each job of the sweep saved in `multirun_yaml`, in job-number order (its
    sweeper's params and the command's overrides, expanded by Hydra's basic sweeper), or None when
    that cannot be told."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra = yaml.safe_load(multirun_yaml.read_text(encoding="utf-8"))["hydra"]  # as written: unresolved
        sweeper = hydra.get("sweeper") or {}
        if not str(hydra["sweep"]["subdir"]).startswith("${hydra.job.num}_") or sweeper.get("_target_") not in (
            None,
            f"{BasicSweeper.__module__}.{BasicSweeper.__name__}",
        ):  # another sweeper (Optuna, Ax …) draws its own jobs
            return None
        arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        arguments += list(hydra.get("overrides", {}).get("task") or [])
        overrides = OverridesParser.create().parse_overrides(arguments)
        swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
        # the last override of a key wins (the command's over the sweep file's), in the key's first place
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        return [[o for o in job if o.split("=", 1)[0] in swept] for job in jobs]
    except Exception:  # another sweeper's syntax, a glob, a hand-edited file: nothing to compare against
        return None


def natural_order(path: Path) -> list:
    """A sort key that puts a sweep's job 2_… before 10_… (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def load_run(run: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{run / 'metrics.json'} is not JSON ({error}): not written by pgh-train") from None
    if not isinstance(metrics, dict):
        raise ValueError(
            f"{run / 'metrics.json'} holds a {type(metrics).__name__}, not an object: not written by pgh-train"
        )
    for key in ("dataset", "method", "features", "bits", "map_all"):
        if key not in metrics:
            raise ValueError(f"{run / 'metrics.json'} has no {key!r}: not written by pgh-train")
    for key, kinds in (("bits", int), ("map_all", (int, float))):
        if isinstance(metrics[key], bool) or not isinstance(metrics[key], kinds):
            raise ValueError(f"{run / 'metrics.json'}: {key}={metrics[key]!r} is no number: not written by pgh-train")
    path = run / "config.yaml"  # read once: the settings, the folder and the split seed all come from it
    config = OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else None
    return {**metrics, "run": run, "config": config}


# config keys that are a table axis, a seed, or do not change the result: never what tells runs apart
NOT_SETTINGS = (
    "paths", "logger", "hydra", "callbacks", "task_name", "ckpt_path", "requeued",
    # the dataset and the features are table axes; where they sit and how features are batched are not
    # settings, but e.g. features.number_blocks or dataset.image_size are
    "dataset._target_", "dataset.root", "dataset.download", "dataset.name",
    "features._target_", "features.batch_size", "features.device", "features.weights",
    "save_codes", "seed", "split.seed", "bits", "trainer.default_root_dir", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.log_every_n_steps", "method.num_workers",
    "method.checkpoint_every_n_steps",
    # the method's length decides (older configs held a trainer.max_epochs it overrode), and a threshold
    # that only decides whether a warning is printed
    "trainer.max_epochs", "method.module.distill_min_agreement",
)  # fmt: skip


def settings(config: dict[str, Any] | None) -> dict[str, Any]:
    """A run's config.yaml (`load_run`'s "config") as dotted keys, without NOT_SETTINGS, a
    LATER_DEFAULTS key it lacks at the value it had ({} when it has no config.yaml)."""
    if config is None:
        return {}
    flat = {**LATER_DEFAULTS, **flat_config(config)}
    return {k: canonical(v) for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_SETTINGS)}


def canonical(value: Any) -> Any:
    """A whole float as an int (in lists too): a sweep's grid `0,2,3` gives the ints 2 and 3 where the
    config's default is the float 2.0, and the two must read as one setting."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def most_common_unless_tied(values: list[str]) -> str | None:
    """The value most runs share, or None when two values tie (then no run's label may omit it: an
    unlabelled row would read as the defaults whichever run it was)."""
    counts = Counter(values).most_common(2)
    return None if len(counts) > 1 and counts[0][1] == counts[1][1] else counts[0][0]


def tell_folders_apart(results: list[dict[str, Any]]) -> None:
    """Runs on image folders (`dataset=folder`) report the dataset by its `dataset.name`, `folder` unless
    set: where runs of one name read different folders, each such run's dataset becomes
    `<name> (<dataset.root>)`, so no column averages or plots two datasets together."""
    roots: dict[int, str] = {}
    for i, r in enumerate(results):
        dataset = (r["config"] or {}).get("dataset")
        if isinstance(dataset, dict) and str(dataset.get("_target_", "")).endswith("load_folder"):
            roots[i] = os.path.normpath(os.path.expanduser(str(dataset.get("root"))))  # /data/x/ is /data/x
    names: dict[str, set[str]] = defaultdict(set)
    for i, root in roots.items():
        names[results[i]["dataset"]].add(root)
    for i, root in roots.items():
        if len(names[results[i]["dataset"]]) > 1:
            results[i]["dataset"] = f"{results[i]['dataset']} ({root})"


def label_variants(results: list[dict[str, Any]]) -> None:
    """Set each result's `variant`: among the runs of its method+features, the settings where its
    value is not the most common one (e.g. `method.init_hash=lsh` in a sweep over initial hashes,
    where the most common value gets no label; when values tie, every run is labelled with its own).
    A key that a run's config lacks (a run made before the key existed) counts as the value
    `absent`; keys that only mirror the bit length or the seed (`method.module.bits`, `method.seed`)
    do not count. Distinct settings always get distinct variants, and runs with the same variant in
    the same cell are repeats (seeds), which the table averages. A run without config.yaml is the
    variant `no config.yaml` and takes no part in the others' comparison."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["config"] is not None:
            groups[(r["method"], r["features"])].append(r)
        else:  # nothing to compare its settings by: a row of its own, apart from every other run's
            r["settings"], r["variant"] = {}, "no config.yaml"
    for group in groups.values():
        configs = [settings(r["config"]) for r in group]
        for r in group:
            r["settings"] = {}
        # the dataset is the table's column: its own settings (a folder's image_size) and the sizes of its
        # query and training sets are compared only among runs of one dataset, or every run of another
        # dataset (digits with 50 queries a class beside mnist5k with 100) would read as a variant
        label_differing(group, configs, lambda key: not per_dataset(key))
        for name in sorted({r["dataset"] for r in group}):
            same = [i for i, r in enumerate(group) if r["dataset"] == name]
            label_differing([group[i] for i in same], [configs[i] for i in same], per_dataset)
        for r in group:
            r["variant"] = ", ".join(f"{key}={value}" for key, value in sorted(r["settings"].items()))


def per_dataset(key: str) -> bool:
    """Settings compared only among runs of one dataset."""
    return key.startswith("dataset.") or key in ("split.query_per_class", "split.train_size")


def label_differing(runs: list[dict[str, Any]], configs: list[dict[str, Any]], considered) -> None:
    """Add to each run's `settings` the `considered` keys whose values differ among `runs` where its
    value is not the most common one (see `label_variants`)."""
    keys = {key for c in configs for key in c if considered(key)}
    differing = sorted(
        key
        for key in keys
        if len({repr(c.get(key, "absent")) for c in configs}) > 1
        and not any(
            all(c.get(key) == r.get(axis) for c, r in zip(configs, runs, strict=True)) for axis in ("bits", "seed")
        )
    )
    values = [{key: c.get(key, "absent") for key in differing} for c in configs]
    common = {key: most_common_unless_tied([repr(v[key]) for v in values]) for key in differing}
    for r, v in zip(runs, values, strict=True):
        r["settings"].update({key: value for key, value in v.items() if repr(value) != common[key]})


def by_cell(results: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The results grouped by table cell: (dataset, method, features, variant, bits), in the tables'
    row order (so per-class rows and figure legends follow the mAP table)."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(results, key=lambda r: row_order(r["method"], r["features"], r.get("variant", ""))):
        cells[(r["dataset"], r["method"], r["features"], r.get("variant", ""), int(r["bits"]))].append(r)
    return cells


def split_repeated_seeds(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[dict, dict]]]:
    """(the runs the tables count, [(run, the earlier run of its cell it repeats)]): a run with the same
    settings, seed and split seed as an earlier one of its cell (e.g. `make train` beside a sweep's job
    with the defaults) is the same experiment again, not another seed; counted twice it would narrow
    the ± and weigh its seed double. Runs without config.yaml are never taken for repeats."""
    counted, repeated = [], []
    for group in by_cell(results).values():
        first: dict[tuple, dict[str, Any]] = {}
        for r in group:
            if r["config"] is None:
                counted.append(r)
                continue
            key = (r.get("seed"), (r["config"].get("split") or {}).get("seed", 0))
            if key in first:
                repeated.append((r, first[key]))
            else:
                first[key] = r
                counted.append(r)
    return counted, repeated


def mean_per_cell(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per table cell: mAP@all averaged over its runs, with the sample standard deviation as
    `map_all_std` and the number of runs as `map_all_runs` where there are several."""
    merged = []
    for group in by_cell(results).values():
        values = [r["map_all"] for r in group]
        cell = {**group[0], "map_all": statistics.fmean(values)}
        if len(values) > 1:
            cell["map_all_std"] = statistics.stdev(values)
            cell["map_all_runs"] = len(values)
        merged.append(cell)
    return merged


def paper_reference(datasets: set[str]) -> tuple[dict | None, str]:
    if datasets <= MNIST_DATASETS:
        return paper.MNIST, "paper MNIST"
    if datasets == {"cifar10"}:
        return paper.CIFAR10, "paper CIFAR-10"
    return None, ""


def read_rounds(run: Path) -> list[float]:
    """mAP@all (%) at rounds 0, 1, ... from the run's rounds.csv ([] when it has none)."""
    path = run / "rounds.csv"
    if not path.exists():
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    # the list's position is the round: a table with a round missing or repeated would shift the curve
    if [row.get("round") for row in rows] != [str(r) for r in range(len(rows))]:
        raise ValueError(f"{path}: the rows are not rounds 0, 1, 2, ... in order; it is not a pgh-train rounds table")
    return [100 * float(row["map_all"]) for row in rows]


def run_names(runs: list[Path]) -> dict[Path, str]:
    """Each run's path relative to what all of them share (its folder name when alone)."""
    if len(runs) == 1:
        return {runs[0]: runs[0].name}
    common = Path(os.path.commonpath(runs))
    return {run: str(run.relative_to(common)) for run in runs}


def pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


@dataclass
class Report:
    text: str  # markdown
    rounds: dict[str, list[float]]  # PGH's progressive curves: label -> mAP@all % by round
    pr_curves: dict[tuple[str, int], dict[str, np.ndarray]]  # (dataset, bits) -> row -> [bits + 1, 3]
    precision_at_n: dict[tuple[str, int], dict[str, np.ndarray]]  # (dataset, bits) -> row -> [m, 2]


def read_curve(run: Path, filename: str) -> np.ndarray | None:
    """The table in the run's csv `filename` (pr_curve.csv: Hamming radius, precision, recall;
    precision_at_n.csv: N, precision), if the run has it."""
    path = run / filename
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2) if path.exists() else None


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


def read_per_class(run: Path) -> dict[str, float]:
    """class name -> mAP@all (%) over that class's queries, from the run's per_class.csv ({} if none)."""
    path = run / "per_class.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {row["class"]: 100 * float(row["map_all"]) for row in csv.DictReader(f)}


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
        text, curves, curves_per_cell(counted, "pr_curve.csv"), curves_per_cell(counted, "precision_at_n.csv")
    )


def file_part(dataset: str) -> str:
    """A dataset's name as part of a file name: `folder (/data/shoes)` -> `folder_data_shoes`."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", dataset).strip("_") or "dataset"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="pgh-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", help="run directories, sweep directories, or folders holding them")
    parser.add_argument("--out", type=Path, help="also write report.md and the figures into this directory")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        sys.exit(f"pgh-report: --out {args.out} is a file: give a directory (it is created if missing)")
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
        for (dataset, b), curves in sorted(report.pr_curves.items()):
            figures[f"pr_{file_part(dataset)}_{b}.png"] = plot_pr_curves(curves, f"{dataset}, {b} bits")
        for (dataset, b), curves in sorted(report.precision_at_n.items()):
            figures[f"precision_at_n_{file_part(dataset)}_{b}.png"] = plot_precision_at_n(
                curves, f"{dataset}, {b} bits"
            )
        for name, fig in figures.items():
            save_figure(fig, args.out / name)
            matplotlib_close(fig)
        for stale in args.out.glob("*.png"):  # an earlier report's figures this one does not redraw
            if stale.name not in figures and FIGURE_NAME.match(stale.name):
                stale.unlink()
        text = report.text
        if notes:
            text += "\n## Not in this report\n\n" + "".join(f"- {note}\n" for note in notes)
        if figures:
            text += "\n## Figures\n\n" + "".join(f"![{name}]({name})\n\n" for name in figures)
        write_text(args.out / "report.md", text)
        print(f"pgh-report: wrote report.md and {len(figures)} figure(s) to {args.out}", file=sys.stderr)
    print(report.text, end="")


if __name__ == "__main__":
    main()
