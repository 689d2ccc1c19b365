"""`make bench-deep`: DH (on GIST), DeepBit (on images) and BGAN (on images, kNN graph from GIST) on
mnist5k at 16/32/64 bits, beside the shallow baselines of `make bench-baselines` and the paper's
MNIST rows, with the wall time of every run. Writes benchmarks/deep.md and the README table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import initialize_config_dir

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, markdown_table, run_timed, wall_seconds  # noqa: E402

from pgh.io import write_text
from pgh.report import paper
from pgh.report.tables import NAMES, load_metrics, map_table, replace_between
from pgh.train import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "logs" / "bench" / "deep"
START, END = "<!-- deep:start -->", "<!-- deep:end -->"
METHODS = {"dh": "gist", "deepbit": "pixels", "bgan": "gist"}  # method -> features group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--force", action="store_true", help="train again even where a finished run exists")
    args = parser.parse_args()

    walls: dict[tuple[str, int], float] = {}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for method in args.methods:
            for bits in args.bits:
                out = RUNS / f"{args.dataset}_{method}_{bits}"
                if args.force or not (out / "metrics.json").exists():
                    run_timed(
                        [
                            f"dataset={args.dataset}",
                            f"method={method}",
                            f"features={METHODS[method]}",
                            f"bits={bits}",
                            "logger=none",
                            "trainer=cpu",
                            "trainer.enable_progress_bar=false",
                        ],
                        out,
                    )
                if wall_seconds(out) is not None:
                    walls[(method, bits)] = wall_seconds(out)

    deep = load_metrics(RUNS / f"{args.dataset}_{m}_{b}" for m in args.methods for b in args.bits)
    shallow = load_metrics((ROOT / "logs" / "bench" / "baselines").glob(f"{args.dataset}_*"))
    table = map_table(deep + shallow, [args.dataset], args.bits, paper=paper.MNIST, paper_label="paper MNIST")
    wall_rows = [
        [f"{NAMES[m]}+{NAMES[METHODS[m]]}"] + [f"{walls[(m, b)]:.0f}" if (m, b) in walls else "–" for b in args.bits]
        for m in args.methods
    ]
    wall_table = markdown_table(["wall seconds"] + [f"{b} bits" for b in args.bits], wall_rows)
    note = (
        f"mAP@all (%) on {args.dataset}, protocol split (1,000 queries); deep rows from `make bench-deep`, "
        f"shallow rows from `make bench-baselines`. Machine: {machine()}\n"
    )
    body = note + "\n" + table + "\n" + wall_table
    write_text(ROOT / "benchmarks" / "deep.md", "# Deep baselines (`make bench-deep`)\n\n" + body)
    readme = ROOT / "README.md"
    if START in readme.read_text():
        write_text(readme, replace_between(readme.read_text(), START, END, body))
    print(body)


if __name__ == "__main__":
    main()
