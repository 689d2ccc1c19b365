"""What pgh-report reads: the finished runs at or below its arguments, the unfinished ones, a sweep's
jobs without a directory, and each run's metrics.json, config.yaml, rounds.csv and curves."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from pgh.sweep_jobs import sweep_jobs


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


def read_curve(run: Path, filename: str) -> np.ndarray | None:
    """The table in the run's csv `filename` (pr_curve.csv: Hamming radius, precision, recall;
    precision_at_n.csv: N, precision), if the run has it."""
    path = run / filename
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2) if path.exists() else None


def read_per_class(run: Path) -> dict[str, float]:
    """class name -> mAP@all (%) over that class's queries, from the run's per_class.csv ({} if none)."""
    path = run / "per_class.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {row["class"]: 100 * float(row["map_all"]) for row in csv.DictReader(f)}
