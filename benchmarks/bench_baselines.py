"""`make bench-baselines`: LSH/ITQ/SH/SpH x pixels/GIST x 16/32/64 bits on mnist5k and
fashion_mnist, mAP@all, beside the paper's MNIST rows. Writes benchmarks/baselines.md and the
table in README.md (between the baselines markers). Runs share one feature cache."""

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
    name_unfinished,
    previous_cells,
    refuse_overrides,
    run_timed,
    table_columns,
    with_kept_columns,
)

from pgh.hashing import HASHERS
from pgh.io import write_text
from pgh.report import paper
from pgh.report.tables import map_table, replace_between
from pgh.train import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "logs" / "bench" / "baselines"
START, END = "<!-- baselines:start -->", "<!-- baselines:end -->"
DATASETS, METHODS, FEATURES, BITS = (
    ["mnist5k", "fashion_mnist"],
    ["lsh", "itq", "sh", "sph"],
    ["pixels", "gist"],
    [16, 32, 64],
)


def run_dir(dataset: str, method: str, features: str, bits: int) -> Path:
    return RUNS / f"{dataset}_{method}_{features}_{bits}"


def retrain(overrides: list[str], out: Path) -> None:
    """Train into `out` afresh. The run there before is moved aside meanwhile and put back if the new
    one fails or is stopped (a refused command, e.g. a dataset not installed, or Ctrl-C): neither its
    metrics.json beside the new run's config, nor a finished run lost to a retrain that never ran."""
    previous = out.with_name(out.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if out.exists():
        out.rename(previous)
    try:
        run_timed(overrides, out)
    except BaseException:
        if previous.exists():
            shutil.rmtree(out, ignore_errors=True)
            previous.rename(out)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=DATASETS, help="what runs; the table keeps every run")
    # the shallow hashers and the feature options there are: a misspelt name is refused before any run
    features = sorted(path.stem for path in (Path(CONFIG_DIR) / "features").glob("*.yaml"))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=sorted(HASHERS), help="what runs")
    parser.add_argument("--features", nargs="+", default=FEATURES, choices=features, help="what runs")
    parser.add_argument("--bits", nargs="+", type=int, default=BITS, help="what runs")
    parser.add_argument(
        "--from-runs", action="store_true", help="rebuild the tables from the runs' metrics.json without training again"
    )
    args = parser.parse_args()
    refuse_overrides(parser, args, ["datasets"])

    chosen = [(d, m, f, b) for d in args.datasets for f in args.features for m in args.methods for b in args.bits]
    if not args.from_runs:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            for dataset, method, features, bits in chosen:
                overrides = [f"dataset={dataset}", f"features={features}", f"method={method}", f"bits={bits}"]
                out = run_dir(dataset, method, features, bits)
                retrain([*overrides, "logger=none"], out)
    # the table holds every finished run of the whole grid, not only those chosen to run this time, and
    # every other finished run here (e.g. of a bit length an earlier command chose)
    on_disk = [((r["dataset"], r["method"], r["features"], int(r["bits"])), out) for out, r in finished_runs(RUNS)]
    here = [key for key, out in on_disk if run_dir(*key) == out]  # the runs this script names so
    datasets = list(dict.fromkeys([*DATASETS, *args.datasets, *(d for d, _, _, _ in here)]))
    bit_lengths = sorted({*BITS, *args.bits, *(b for _, _, _, b in here)})
    grid = [
        (d, m, f, b)
        for d in datasets
        for f in dict.fromkeys([*FEATURES, *args.features, *(f for _, _, f, _ in here)])
        for m in dict.fromkeys([*METHODS, *args.methods, *(m for _, m, _, _ in here)])
        for b in bit_lengths
    ]
    results = finished_metrics(run_dir(*key) for key in grid)
    if not results:  # e.g. --from-runs on a fresh clone: no timing to give, and no cell would change
        name_unfinished(RUNS)
        print(f"no finished run under {RUNS}: benchmarks/baselines.md and the README stay as they are")
        return
    # cells of runs not on this machine (a fresh clone has no logs/) stay as the last table showed them
    previous = previous_cells(ROOT / "benchmarks" / "baselines.md").get("method", {})
    kept = kept_results(previous, results, lambda *key: run_dir(*key).exists())
    name_unfinished(RUNS)
    datasets, bit_lengths = with_kept_columns(kept, datasets, bit_lengths)
    datasets, bit_lengths = table_columns(results + kept, datasets, bit_lengths)
    table = map_table(results + kept, datasets, bit_lengths, paper=paper.MNIST, paper_label="paper MNIST")
    wall = sum(r["feature_seconds"] + r["train_seconds"] + r["encode_seconds"] + r["eval_seconds"] for r in results)
    times = {d: sum(r["train_seconds"] + r["encode_seconds"] for r in results if r["dataset"] == d) for d in datasets}
    times = {d: seconds for d, seconds in times.items() if any(r["dataset"] == d for r in results)}
    note = (
        f"mAP@all (%), 1,000 queries (100 per class, split seed 0), database = the rest, training set = "
        f"the database. Regenerate with `make bench-baselines` ({wall / 60:.1f} min of computing over the "
        f"runs{' on this machine' if kept else ''}, features included; fitting + encoding: "
        + ", ".join(f"{d} {s:.0f} s" for d, s in times.items())
        + ").\n"
        f"Machine: {machine()}\n"
    )
    if kept:
        note += "Cells whose run is not under logs/bench/baselines/ here are kept from the previous table.\n"
    write_text(ROOT / "benchmarks" / "baselines.md", "# Shallow baselines\n\n" + note + "\n" + table)
    readme = ROOT / "README.md"
    if readme.exists() and START in readme.read_text():
        write_text(readme, replace_between(readme.read_text(), START, END, note + "\n" + table))
    print(table)


if __name__ == "__main__":
    main()
