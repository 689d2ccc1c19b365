"""How much the order that breaks Hamming ties moves finished runs' numbers: each run's saved codes
scored with ties in database order (the protocol and the default: what metrics.json holds unless
the run was made with eval.tie_break=random) and with `eval.tie_break=random` (one fixed random
order of the database).

  python benchmarks/diag_tie_order.py logs/bench/baselines/mnist5k_* logs/bench/pgh/mnist5k_*

mnist5k (and a folder dataset) stores its images class by class, so in database order every tie goes
to the lower label; Fashion-MNIST's and MNIST's own order is already mixed. Prints a markdown table;
writes nothing. Needs runs made with save_codes=true (the default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table  # noqa: E402

from pgh.data import Split
from pgh.retrieval import evaluate_packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    args = parser.parse_args()
    labels: dict[str, np.ndarray] = {}
    rows = []
    for run in args.runs:
        needed = [
            run / name for name in ("config.yaml", "metrics.json", "split.npz", "query_codes.npy", "database_codes.npy")
        ]
        if missing := [p.name for p in needed if not p.exists()]:
            raise SystemExit(f"{run}: no {', '.join(missing)} (a finished pgh-train run with save_codes=true?)")
        cfg, metrics = OmegaConf.load(run / "config.yaml"), json.loads((run / "metrics.json").read_text())
        key = OmegaConf.to_yaml(cfg.dataset)
        if key not in labels:
            labels[key] = instantiate(cfg.dataset).labels.numpy()
        split = Split.load(run / "split.npz")
        query, database = np.load(run / "query_codes.npy"), np.load(run / "database_codes.npy")
        query_labels, db_labels = labels[key][split.query.numpy()], labels[key][split.database.numpy()]
        scores = [
            100 * evaluate_packed(query, query_labels, database, db_labels, distance=metrics.get("distance", "hamming"),
                                  tie_break=tie_break).metrics["map_all"]
            for tie_break in ("database_order", "random")
        ]  # fmt: skip
        rows.append([run.name, f"{scores[0]:.2f}", f"{scores[1]:.2f}", f"{scores[1] - scores[0]:+.2f}"])
    print(markdown_table(["run", "database order", "eval.tie_break=random", "difference"], rows))


if __name__ == "__main__":
    main()
