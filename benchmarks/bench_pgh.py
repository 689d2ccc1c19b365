"""`make bench-pgh`: PGH on mnist5k (32 and 64 bits; ITQ+GIST and ITQ+pixels initial codes) and on
fashion_mnist (32 bits; ITQ+GIST and ITQ+pixels) at the defaults (H's jitter and the neighbourhood
vote at the code refresh), without the vote, and without the vote and the jitter (the protocol as
written), plus Fashion-MNIST with the anchor to the round-0 codes over 8 rounds, with a wider vote
and the anchor, and at its best setting (experiment=pgh_fashion_mnist) from ITQ+GIST and from
ITQ+PIXEL codes, and mnist5k from LSH, SH and SpH initial codes, with the per-round mAP@all and the
wall time of each run, beside the best shallow baseline on the same split. Writes benchmarks/pgh.md
and the README table; a row whose run is not under logs/bench/pgh/ (trained on another machine)
is kept from the previous benchmarks/pgh.md (one here that did not finish, or stopped in mid-epoch,
is left out)."""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

from hydra import initialize_config_dir

sys.path.insert(0, str(Path(__file__).parent))
from common import finished_metrics, machine, markdown_table, run_timed, unfinished, wall_seconds  # noqa: E402

from pgh.io import write_text
from pgh.report.tables import replace_between
from pgh.train import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "logs" / "bench" / "pgh"
START, END = "<!-- pgh:start -->", "<!-- pgh:end -->"
TITLE = "# PGH (`make bench-pgh`)\n\n"
# Fashion-MNIST trains on a random 10,000 of its 69,000 database images (the protocol allows a
# training subset); queries and the whole database are encoded.
# The defaults (ours) jitter H's inputs and refine the codes at each refresh by a neighbourhood vote.
# The NOVOTE rows switch the vote off; the NOAUG rows switch the jitter off as well: the protocol as written.
NOVOTE = ["method.progressive.vote_neighbors=0"]
NOAUG = ["method.module.augment_shift=0", "method.module.augment_degrees=0", *NOVOTE]
# The ANCHOR8 row adds the anchor to the round-0 codes (ours, off by default) and runs 8 rounds, without the vote.
ANCHOR8 = [*NOVOTE, "method.module.anchor_weight=0.3", "method.rounds=8"]
# The best Fashion-MNIST setting found: a wider vote (50 voters, 5 passes) with the anchor, up to 8
# rounds (the bit-change rule stops it earlier).
VOTE50_ANCHOR = [
    "method.progressive.vote_neighbors=50",
    "method.progressive.vote_iterations=5",
    "method.module.anchor_weight=0.3",
    "method.rounds=8",
]
FASHION_TRAIN = ["split.train_size=10000"]
# Fashion-MNIST's best setting (conf/experiment/pgh_fashion_mnist.yaml: BGAN's neighbourhood term on H
# besides the wide vote and the anchor, 4 rounds), from ITQ+GIST codes and from ITQ+PIXEL codes refined
# along GIST's neighbourhoods
FASHION_BEST = ["experiment=pgh_fashion_mnist"]
MNIST5K = [("gist", 32), ("gist", 64), ("pixels", 32), ("pixels", 64)]


def mnist5k_rows(extra: list[str], suffix: str) -> list[tuple]:
    """The four mnist5k settings (GIST / pixels x 32 / 64 bits) with the same extra overrides."""
    return [("mnist5k", features, bits, extra, suffix) for features, bits in MNIST5K]


# (dataset, features, bits, extra overrides, run-name suffix), in the table's order
GRID = [
    *mnist5k_rows([], ""),
    ("fashion_mnist", "gist", 32, FASHION_TRAIN, ""),
    ("fashion_mnist", "pixels", 32, FASHION_TRAIN, ""),
    ("fashion_mnist", "gist", 32, FASHION_TRAIN + VOTE50_ANCHOR, "_vote50_anchor"),
    ("fashion_mnist", "gist", 32, FASHION_BEST, "_best"),
    ("fashion_mnist", "gist", 32, [*FASHION_BEST, "method.init_features=pixels"], "_best_initpix"),
    *mnist5k_rows(NOVOTE, "_novote"),
    ("fashion_mnist", "gist", 32, FASHION_TRAIN + NOVOTE, "_novote"),
    ("fashion_mnist", "pixels", 32, FASHION_TRAIN + NOVOTE, "_novote"),
    ("fashion_mnist", "gist", 32, FASHION_TRAIN + ANCHOR8, "_anchor8"),
    *mnist5k_rows(NOAUG, "_noaug"),
    ("fashion_mnist", "gist", 32, FASHION_TRAIN + NOAUG, "_noaug"),
    # the paper's claim that the initial hash matters little to where the rounds end
    ("mnist5k", "gist", 32, ["method.init_hash=lsh"], "_lsh"),
    ("mnist5k", "gist", 64, ["method.init_hash=lsh"], "_lsh"),
    ("mnist5k", "gist", 32, ["method.init_hash=sh"], "_sh"),
    ("mnist5k", "gist", 32, ["method.init_hash=sph"], "_sph"),
]


def settings(extra: list[str]) -> str:
    """The extra overrides as the table shows them, e.g. "augment_shift=0 augment_degrees=0"."""
    shown = []
    for override in extra:
        key, value = override.split("=", 1)
        shown.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join(shown) or "defaults"


TRAIN_ONLY = "(train)"  # marks a wall min that is metrics.json's train_seconds (the run has no wall_seconds.txt)
EXTRA_OVERRIDES = "extra_overrides.txt"  # a run's overrides given on bench-pgh's command line (ARGS=...)


def recorded_overrides(out: Path) -> list[str]:
    path = out / EXTRA_OVERRIDES
    return path.read_text().splitlines() if path.exists() else []


def initial_codes(metrics: dict, features: str) -> str:
    """The run's round-0 codes as the paper names them, e.g. ITQ+GIST or ITQ+PIXEL."""
    features = metrics.get("init_features", features)  # runs made before init_features: the group's
    return f"{metrics['init_hash'].upper()}+{'PIXEL' if features == 'pixels' else features.upper()}"


def best_shallow(dataset: str, bits: int, kept: dict[str, list[str]]) -> str:
    """The best shallow baseline's mAP@all on the same split: the best of the finished runs in
    logs/bench/baselines/ and of what the previous table's rows (`kept`) showed for the same dataset and
    bits, for baselines that have no run here (not on this machine, or since lost: a run here replaces
    the old number of its own baseline, lower or not); a run here wins a tie."""
    runs = finished_metrics((ROOT / "logs" / "bench" / "baselines").glob(f"{dataset}_*_{bits}"))
    shown = [(100 * r["map_all"], f"{100 * r['map_all']:.2f} ({r['method'].upper()}+{r['features']})") for r in runs]
    here = {cell.split(" ", 1)[1] for _, cell in shown}  # e.g. "(ITQ+gist)"
    for row in kept.values():
        if len(row) > 9 and row[1] == dataset and row[3] == str(bits):
            try:  # e.g. "55.81 (ITQ+gist)"; not "– (run make bench-baselines)"
                value, baseline = row[9].split(" ", 1)
                if baseline not in here:
                    shown.append((float(value), row[9]))
            except ValueError:
                continue
    return max(shown, key=lambda value_cell: round(value_cell[0], 2))[1] if shown else "– (run make bench-baselines)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from-runs", action="store_true", help="rebuild the table from finished runs")
    parser.add_argument("--force", action="store_true", help="train again even where a finished run exists")
    parser.add_argument("--datasets", nargs="+", default=["mnist5k", "fashion_mnist"])
    parser.add_argument(
        "--runs",
        nargs="+",
        help="train only these, e.g. mnist5k_gist_32 (default: all of --datasets); the table keeps every finished run",
    )
    parser.add_argument(
        "overrides", nargs="*", help="extra Hydra overrides for the runs that train (the table's settings show them)"
    )
    args = parser.parse_args()
    check_choices(parser, args)
    rows = []
    kept = previous_rows()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for dataset, features, bits, extra, suffix in GRID:
            name = f"{dataset}_{features}_{bits}{suffix}"
            out = RUNS / name
            # --datasets and --runs pick what trains; the table keeps every finished run of the grid
            chosen = dataset in args.datasets and (not args.runs or name in args.runs)
            finished = not unfinished(out) and not (args.force and chosen)
            if chosen and not args.from_runs and not finished:
                if out.exists():  # a stale last.ckpt would make Lightning version the new one (last-v1.ckpt)
                    shutil.rmtree(out)
                if args.overrides:  # what the table's settings column shows for this run from now on
                    write_text(out / EXTRA_OVERRIDES, "".join(f"{o}\n" for o in args.overrides))
                run_timed(
                    [
                        f"dataset={dataset}",
                        "method=pgh",
                        f"features={features}",
                        f"bits={bits}",
                        "trainer=cpu",
                        "trainer.enable_progress_bar=false",
                        *extra,
                        *args.overrides,
                    ],
                    out,
                )
            metrics = finished_metrics([out])
            if not metrics:
                if name in kept and not out.exists():  # trained elsewhere (a fresh clone has no logs/): the row stays
                    rows.append(kept[name])
                elif out.exists():  # a run here that did not finish: not the old result in its place
                    print(f"{out} {unfinished(out)}: left out of the table; --force retrains it")
                continue
            m = metrics[0]
            with open(out / "rounds.csv") as f:
                curve = " → ".join(f"{100 * float(r['map_all']):.2f}" for r in csv.DictReader(f))
            wall = wall_seconds(out)  # none for a run bench-pgh did not train (e.g. make train's): its training time
            wall_cell = f"{wall / 60:.1f}" if wall is not None else f"{m['train_seconds'] / 60:.1f} {TRAIN_ONLY}"
            rows.append(
                [
                    name,
                    dataset,
                    initial_codes(m, features),
                    bits,
                    settings(extra + recorded_overrides(out)),
                    m["num_train"],
                    f"{100 * m['init_map_all']:.2f}",
                    f"{100 * m['map_all']:.2f}",
                    curve,
                    best_shallow(dataset, bits, kept),
                    wall_cell,
                ]
            )
    if all(row in kept.values() for row in rows):  # e.g. --from-runs on a fresh clone: nothing would change
        print(f"no finished run under {RUNS}: benchmarks/pgh.md and the README stay as they are")
        return
    table = markdown_table(
        [
            "run",
            "dataset",
            "initial codes",
            "bits",
            "settings",
            "train images",
            "round 0 mAP@all",
            "PGH mAP@all",
            "mAP@all by round",
            "best shallow",
            "wall min",
        ],
        rows,
    )
    note = f"mAP@all (%), protocol split (1,000 queries). Machine: {machine()}\n"
    if any(row in kept.values() for row in rows):
        note += "Rows whose run is not under logs/bench/pgh/ here are kept from the previous table.\n"
    if any(str(row[-1]).endswith(TRAIN_ONLY) for row in rows):
        note += (
            f"A wall min marked {TRAIN_ONLY} is the run's training time: bench-pgh did not train it (no wall time).\n"
        )
    write_text(ROOT / "benchmarks" / "pgh.md", TITLE + note + "\n" + table)
    readme = ROOT / "README.md"
    if START in readme.read_text():
        write_text(readme, replace_between(readme.read_text(), START, END, note + "\n" + table))
    write_rounds_figure()
    print(table)


def check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Hydra overrides after --runs or --datasets (`--runs NAME seed=1`: nargs="+" takes them) go to the
    overrides; a run name not in the grid, a dataset it has no run on, or a run on a dataset that
    --datasets leaves out is refused, with the valid names."""
    dataset_of = {f"{dataset}_{features}_{bits}{suffix}": dataset for dataset, features, bits, _, suffix in GRID}
    datasets = list(dict.fromkeys(dataset_of.values()))
    for option, example in (("runs", next(iter(dataset_of))), ("datasets", datasets[0])):
        values = getattr(args, option)
        if values is None:
            continue
        args.overrides += [value for value in values if "=" in value]
        setattr(args, option, [value for value in values if "=" not in value])
        if not getattr(args, option):
            parser.error(f"--{option} {' '.join(values)}: no name, only overrides; name one, e.g. --{option} {example}")
    if unknown := [dataset for dataset in args.datasets if dataset not in datasets]:
        parser.error(f"--datasets {' '.join(unknown)}: the grid has no run on it; its datasets: {' '.join(datasets)}")
    if unknown := [name for name in args.runs or [] if name not in dataset_of]:
        parser.error(
            f"--runs {' '.join(unknown)}: not a run of the grid; its runs (the table's run column): "
            + " ".join(dataset_of)
        )
    if outside := [name for name in args.runs or [] if dataset_of[name] not in args.datasets]:
        parser.error(f"--runs {' '.join(outside)}: on a dataset --datasets leaves out; add it there or drop --datasets")


def previous_rows() -> dict[str, list[str]]:
    """Run name -> its row in the last benchmarks/pgh.md, for the runs that are not on this machine."""
    table = ROOT / "benchmarks" / "pgh.md"
    if not table.exists():
        return {}
    lines = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    if not lines or lines[0].split("|")[1].strip() != "run":  # a table from before the run column
        return {}
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[1:]]
    return {row[0]: row for row in rows}


def write_rounds_figure() -> None:
    """The README's progressive curves (docs/pgh_rounds_mnist5k.png): mnist5k, GIST, 32 bits, from
    ITQ (the default row), LSH, SH and SpH codes, as `pgh-report ... --out` draws them."""
    from pgh.report.cli import build_report
    from pgh.report.plots import matplotlib_close, plot_rounds, save_figure

    runs = [RUNS / f"mnist5k_gist_32{suffix}" for suffix in ("", "_lsh", "_sh", "_sph")]
    if not all((run / "rounds.csv").exists() for run in runs):
        return
    fig = plot_rounds(build_report(runs).rounds, "PGH: mAP@all by round")
    save_figure(fig, ROOT / "docs" / "pgh_rounds_mnist5k.png")
    matplotlib_close(fig)


if __name__ == "__main__":
    main()
