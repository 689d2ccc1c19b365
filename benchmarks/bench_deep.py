"""`make bench-deep`: DH (on GIST), DeepBit (on images) and BGAN (on images, kNN graph from GIST) on
mnist5k and fashion_mnist at 16/32/64 bits, beside the shallow baselines of `make bench-baselines`
and the paper's MNIST rows, with the wall time of every run. Writes benchmarks/deep.md and the
README table.

fashion_mnist trains on a random 10,000 of its 69,000 database images (`split.train_size=10000`),
as PGH's Fashion-MNIST rows do (`make bench-pgh`); the shallow rows are fitted on the whole database."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from hydra import initialize_config_dir

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    finished_metrics,
    finished_runs,
    kept_results,
    machine,
    markdown_table,
    name_unfinished,
    previous_cells,
    refuse_overrides,
    run_timed,
    table_columns,
    unfinished,
    wall_seconds,
    with_kept_columns,
)

from pgh.io import write_text
from pgh.report import paper
from pgh.report.tables import NAMES, load_metrics, map_table, replace_between
from pgh.train import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "logs" / "bench" / "deep"
START, END = "<!-- deep:start -->", "<!-- deep:end -->"
METHODS = {"dh": "gist", "deepbit": "pixels", "bgan": "gist"}  # method -> features group
TRAIN_SIZE = {"fashion_mnist": ["split.train_size=10000"]}  # dataset -> extra overrides
DATASETS, BITS = ["mnist5k", "fashion_mnist"], [16, 32, 64]  # the grid (with METHODS) the table shows


def run_dir(dataset: str, method: str, bits: int) -> Path:
    return RUNS / f"{dataset}_{method}_{bits}"


def baseline_dir(dataset: str, method: str, features: str, bits: int) -> Path:
    """A shallow row's run, as `make bench-baselines` writes it."""
    return RUNS.parent / "baselines" / f"{dataset}_{method}_{features}_{bits}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=DATASETS, help="what trains; the table keeps every run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="what trains")
    parser.add_argument("--bits", nargs="+", type=int, default=BITS, help="what trains")
    parser.add_argument("--force", action="store_true", help="train again even where a finished run exists")
    args = parser.parse_args()
    refuse_overrides(parser, args, ["datasets"])

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for dataset in args.datasets:
            for method in args.methods:
                for bits in args.bits:
                    out = run_dir(dataset, method, bits)
                    if args.force or unfinished(out):
                        if out.exists():  # a retrain starts afresh (pgh-train refuses a directory with checkpoints)
                            shutil.rmtree(out)
                        run_timed(
                            [
                                f"dataset={dataset}",
                                f"method={method}",
                                f"features={METHODS[method]}",
                                f"bits={bits}",
                                "logger=none",
                                "trainer=cpu",
                                "trainer.enable_progress_bar=false",
                                *TRAIN_SIZE.get(dataset, []),
                            ],
                            out,
                        )

    # the table holds every finished run of the grid, not only those chosen to train this time, and every
    # other finished run here (e.g. of a bit length an earlier command chose)
    on_disk = [((r["dataset"], r["method"], int(r["bits"])), out) for out, r in finished_runs(RUNS)]
    here = [key for key, out in on_disk if run_dir(*key) == out]  # the runs this script names so
    datasets = list(dict.fromkeys([*DATASETS, *args.datasets, *(d for d, _, _ in here)]))
    bit_lengths = sorted({*BITS, *args.bits, *(b for _, _, b in here)})
    methods = list(METHODS)
    grid = [(d, m, b) for d in datasets for m in methods for b in bit_lengths]
    finished = [key for key in grid if not unfinished(run_dir(*key))]
    walls = {key: seconds for key in finished if (seconds := wall_seconds(run_dir(*key))) is not None}
    deep = load_metrics(run_dir(*key) for key in finished)
    shallow = finished_metrics(run for d in datasets for run in (RUNS.parent / "baselines").glob(f"{d}_*"))
    # cells of runs not on this machine (a fresh clone has no logs/) stay as the last table showed them
    previous = previous_cells(ROOT / "benchmarks" / "deep.md")

    def run_here(dataset: str, method: str, features: str, bits: int) -> bool:
        deep_run = method in METHODS and features == METHODS[method]
        return (run_dir(dataset, method, bits) if deep_run else baseline_dir(dataset, method, features, bits)).exists()

    kept = kept_results(previous.get("method", {}), deep + shallow, run_here)
    label_of = {f"{NAMES[m]}+{NAMES[METHODS[m]]}": m for m in methods}
    kept_walls = {
        (d, label_of[label], b): float(cell)
        for (label, d, b), cell in previous.get("wall seconds", {}).items()
        if label in label_of and not run_dir(d, label_of[label], b).exists() and cell.replace(".", "").isdigit()
    }
    walls.update(kept_walls)
    name_unfinished(RUNS, "; --force retrains it")
    datasets, bit_lengths = with_kept_columns(kept, datasets, bit_lengths)
    datasets, bit_lengths = table_columns(deep + shallow + kept, datasets, bit_lengths)
    table = map_table(deep + shallow + kept, datasets, bit_lengths, paper=paper.MNIST, paper_label="paper MNIST")
    # the columns that have a wall time (a column of dashes only would read as runs that took none)
    columns = [(d, b) for d in datasets for b in bit_lengths if any((d, m, b) in walls for m in methods)]
    columns = columns or [(d, b) for d in datasets for b in bit_lengths]
    wall_rows = [
        [f"{NAMES[m]}+{NAMES[METHODS[m]]}"]
        + [f"{walls[(d, m, b)]:.0f}" if (d, m, b) in walls else "–" for d, b in columns]
        for m in methods
    ]
    wall_header = ["wall seconds"] + [f"{d} {b}" for d, b in columns]
    wall_table = markdown_table(wall_header, wall_rows)
    trained_on = "; ".join(
        f"{d} trains on a random 10,000 of its database images, as PGH's rows do (shallow rows: the whole database)"
        for d in datasets
        if d in TRAIN_SIZE
    )
    note = (
        f"mAP@all (%), protocol split (1,000 queries); deep rows from `make bench-deep`, shallow rows from "
        f"`make bench-baselines`{'; ' + trained_on if trained_on else ''}. Machine: {machine()}\n"
    )
    if kept or kept_walls:
        note += "Cells whose run is not under logs/bench/ here are kept from the previous table.\n"
    body = note + "\n" + table + "\n" + wall_table
    write_text(ROOT / "benchmarks" / "deep.md", "# Deep baselines (`make bench-deep`)\n\n" + body)
    readme = ROOT / "README.md"
    if START in readme.read_text():
        write_text(readme, replace_between(readme.read_text(), START, END, body))
    print(body)


if __name__ == "__main__":
    main()
