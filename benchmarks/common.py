"""Helpers shared by the benchmark scripts: machine description, table writing, timed runs and the
protocol's data as `pgh-train` composes it."""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}; "
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}; {date.today()}"
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def previous_cells(table_file: Path) -> dict[str, dict[tuple[str, str, int], str]]:
    """The grid cells of the markdown tables in `table_file` (a benchmark's last output): the first
    header cell (e.g. `method`, `wall seconds`) -> {(row label, dataset, bits): cell} over the columns
    named `<dataset> <bits>` (not the paper's). Empty when the file is missing."""
    if not table_file.exists():
        return {}
    tables: dict[str, dict[tuple[str, str, int], str]] = {}
    header: list[str] | None = None
    for line in table_file.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header, cells_of = cells, tables.setdefault(cells[0], {})
        elif not set(cells[0]) <= set("-:"):  # not the |---| line
            for name, cell in zip(header[1:], cells[1:]):
                dataset, _, bits = name.rpartition(" ")
                if dataset and not dataset.startswith("paper") and bits.isdigit():
                    cells_of[(cells[0], dataset, int(bits))] = cell
    return tables


def run_state(out: Path) -> tuple[dict | None, str | None]:
    """(its metrics, None) for a finished run in `out`, else (None, why a table leaves it out, as the
    scripts name it): no metrics.json, or one from a run stopped in mid-epoch (e.g. by
    `+trainer.max_time`), which did not train its whole schedule."""
    path = out / "metrics.json"
    if not path.exists():
        return None, "did not finish (no metrics.json)"
    metrics = json.loads(path.read_text())
    if metrics.get("stopped_mid_epoch"):
        return None, "stopped in mid-epoch (metrics.json has stopped_mid_epoch)"
    return metrics, None


def unfinished(out: Path) -> str | None:
    """Why the run in `out` is left out of a table, or None where it finished (`run_state`)."""
    return run_state(out)[1]


def finished_metrics(dirs) -> list[dict]:
    """The metrics.json of each run directory of `dirs` whose run finished."""
    return [metrics for d in dirs if (metrics := run_state(Path(d))[0]) is not None]


def run_dirs(runs: Path) -> list[Path]:
    """The run directories under `runs` (a benchmark's logs/bench/...), by name."""
    return sorted(out for out in runs.iterdir() if out.is_dir()) if runs.is_dir() else []


def finished_runs(runs: Path) -> list[tuple[Path, dict]]:
    """(run directory, its metrics) of every finished run under `runs`: what a table shows besides its
    grid's runs (e.g. a bit length an earlier command chose)."""
    return [(out, metrics) for out in run_dirs(runs) if (metrics := run_state(out)[0]) is not None]


def name_unfinished(runs: Path, retrain: str = "") -> None:
    """Print each run under `runs` that a table leaves out (`unfinished`), and why."""
    for out in run_dirs(runs):
        if reason := unfinished(out):
            print(f"{out} {reason}: left out of the table{retrain}")


def refuse_overrides(parser, args, options: list[str]) -> None:
    """A script without Hydra overrides: a KEY=VALUE among the values of list options `options` (e.g.
    `--datasets mnist5k seed=1`) is refused before anything runs, not taken for a name."""
    given = [value for option in options for value in getattr(args, option) or [] if "=" in str(value)]
    if given:
        parser.error(f"this script takes no Hydra overrides ({' '.join(given)}); leave them out of ARGS")


def kept_results(cells: dict[tuple[str, str, int], str], on_disk: list[dict], run_here) -> list[dict]:
    """Results for the cells of a previous `map_table` (mAP@all %) whose run is not on this machine
    (a fresh clone has no logs/): what the table showed stays, instead of the row or column vanishing.
    `run_here(dataset, method, features, bits)` says whether that run's directory is here: one that
    did not finish is left out, not shown with the old number."""
    from pgh.report.tables import NAMES

    key_of = {name: key for key, name in NAMES.items()}
    have = {(r["dataset"], r["method"], r["features"], int(r["bits"])) for r in on_disk if not r.get("variant")}
    kept = []
    for (label, dataset, bits), cell in cells.items():
        method, _, features = label.partition("+")
        method, features = key_of.get(method), key_of.get(features)
        try:
            value = float(cell)
        except ValueError:  # "–", a mean ± std, a label with settings
            continue
        key = (dataset, method, features, bits)
        if method and features and key not in have and not run_here(*key):
            kept.append(dict(dataset=dataset, method=method, features=features, bits=bits, map_all=value / 100))
    return kept


def with_kept_columns(kept: list[dict], datasets: list[str], bits: list[int]) -> tuple[list[str], list[int]]:
    """The grid's datasets and bit lengths, and those of the kept cells (a column a former run made)."""
    datasets = [*datasets, *dict.fromkeys(r["dataset"] for r in kept if r["dataset"] not in datasets)]
    return datasets, sorted({*bits, *(r["bits"] for r in kept)})


def run_timed(overrides: list[str], out: Path) -> dict:
    """Compose conf/ with `overrides`, train into `out`, and record the wall time in
    out/wall_seconds.txt (needs an active `initialize_config_dir(CONFIG_DIR)`)."""
    from hydra import compose
    from omegaconf import open_dict

    from pgh.io import write_text
    from pgh.train import train

    cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    started = time.perf_counter()
    metrics = train(cfg)
    write_text(out / "wall_seconds.txt", f"{time.perf_counter() - started:.1f}\n")
    return metrics


def table_columns(results: list[dict], datasets: list[str], bits: list[int]) -> tuple[list[str], list[int]]:
    """The datasets and bit lengths of a grid table that have runs among `results` (all of them when
    none has): a table over every finished run shows no empty columns."""
    with_runs = [d for d in datasets if any(r["dataset"] == d for r in results)] or datasets
    return with_runs, [b for b in bits if any(r["bits"] == b for r in results)] or bits


def wall_seconds(out: Path) -> float | None:
    path = out / "wall_seconds.txt"
    return float(path.read_text()) if path.exists() else None


def add_protocol_arguments(parser, dataset: str) -> None:
    """--dataset (default `dataset`), --features, --bits, --train-size, --override: what `compose_protocol`
    reads."""
    parser.add_argument("--dataset", default=dataset)
    parser.add_argument("--features", default="gist")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--train-size", type=int, help="split.train_size (e.g. 10000 for fashion_mnist)")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="a further conf/ override, e.g. features.number_blocks=8 (repeatable)",
    )  # fmt: skip


def compose_protocol(args):
    """(cfg, dataset, split) from conf/ composed with the `add_protocol_arguments` options in `args`,
    as `pgh-train` builds them."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from pgh.train import CONFIG_DIR

    overrides = [f"dataset={args.dataset}", f"features={args.features}", f"bits={args.bits}"]
    overrides += [f"split.train_size={args.train_size}"] if args.train_size else []
    overrides += getattr(args, "override", [])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dataset = instantiate(cfg.dataset)
    return cfg, dataset, instantiate(cfg.split)(dataset.labels)


def protocol_features(cfg, dataset) -> torch.Tensor:
    """The `features` group's features of every image of `dataset` (through the feature cache)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from pgh.features import cached_features

    config = OmegaConf.to_container(cfg.features, resolve=True)
    return cached_features(dataset, instantiate(cfg.features), config, cfg.paths.cache_dir)


def timed_faiss_search(db: np.ndarray, queries: np.ndarray, bits: int, use_gpu: bool, k: int = 100):
    """(index build seconds, search seconds, distances [q, k]) of a FAISS binary index over packed
    codes `db`, on the GPU or the CPU. The build includes one warm-up search of 10 queries: the GPU copy
    of the index is made there, at the first search."""
    from pgh.retrieval import BinaryIndex

    t0 = time.perf_counter()
    index = BinaryIndex(bits, use_gpu=use_gpu).add(db)
    index.search(queries[:10], k)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    distances = index.search(queries, k)[0]
    return build, time.perf_counter() - t0, distances
