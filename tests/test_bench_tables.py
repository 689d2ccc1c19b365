"""The benchmark scripts that write README tables (`make bench-pgh`, `bench-deep`, `bench-baselines`)
keep every finished run of their grid in the table: choosing what trains (--datasets, --runs,
--methods, --bits) deleted the other finished rows from README.md and benchmarks/*.md. Runs here are
fake finished run directories under a temporary root; nothing trains."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def load(name: str, root: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", root)
    monkeypatch.setattr(module, "RUNS", root / "logs" / "bench" / name.removeprefix("bench_"))
    (root / "benchmarks").mkdir(parents=True, exist_ok=True)
    return module


def fake_run(out: Path, **metrics) -> None:
    out.mkdir(parents=True)
    base = {"map_all": 0.5, "train_seconds": 60.0, "encode_seconds": 1.0, "eval_seconds": 1.0, "feature_seconds": 0.0}
    (out / "metrics.json").write_text(json.dumps({**base, **metrics}))
    (out / "wall_seconds.txt").write_text("61.0\n")


def readme_with(root: Path, start: str, end: str) -> Path:
    readme = root / "README.md"
    readme.write_text(f"# title\n\n{start}\nold\n{end}\n\nrest\n")
    return readme


def test_bench_pgh_keeps_every_finished_run_and_shows_the_runs_extra_overrides(tmp_path, monkeypatch):
    bench = load("bench_pgh", tmp_path, monkeypatch)
    readme = readme_with(tmp_path, bench.START, bench.END)
    pgh = {"init_hash": "itq", "num_train": 4000, "init_map_all": 0.55, "dataset": "mnist5k", "bits": 32}
    for name, dataset, map_all in (
        ("mnist5k_gist_32", "mnist5k", 0.8766),
        ("fashion_mnist_gist_32", "fashion_mnist", 0.5595),
    ):
        fake_run(bench.RUNS / name, **{**pgh, "dataset": dataset, "map_all": map_all})
        (bench.RUNS / name / "rounds.csv").write_text(f"round,map_all\n0,0.55\n1,{map_all}\n")
    (bench.RUNS / "mnist5k_gist_32" / bench.EXTRA_OVERRIDES).write_text("seed=1\n")
    monkeypatch.setattr(sys, "argv", ["bench_pgh.py", "--from-runs", "--datasets", "mnist5k"])
    bench.main()
    text = readme.read_text()
    assert "| 87.66 |" in text and "| 55.95 |" in text  # the fashion row stays though only mnist5k was chosen
    assert "| seed=1 |" in text and text.endswith("rest\n")
    assert (tmp_path / "benchmarks" / "pgh.md").read_text().count("| mnist5k |") == 1
    assert "| mnist5k_gist_32 | mnist5k | ITQ+GIST |" in text  # each row names its run (--runs NAME)

    # on another machine (a fresh clone has no logs/) the rows of runs not there stay as they were
    import shutil

    shutil.rmtree(bench.RUNS / "fashion_mnist_gist_32")
    fake_run(bench.RUNS / "mnist5k_gist_64", **{**pgh, "bits": 64, "map_all": 0.8096})
    (bench.RUNS / "mnist5k_gist_64" / "rounds.csv").write_text("round,map_all\n0,0.57\n1,0.8096\n")
    bench.main()
    text = (tmp_path / "benchmarks" / "pgh.md").read_text()
    assert [row.split(" | ")[0] for row in text.splitlines() if row.startswith("| ") and "_" in row[:20]] == [
        "| mnist5k_gist_32",
        "| mnist5k_gist_64",
        "| fashion_mnist_gist_32",
    ]
    assert "| 55.95 |" in text and "| 80.96 |" in text and "kept from the previous table" in text
    assert readme.read_text().count("| fashion_mnist_gist_32 |") == 1
    # a run here that did not finish is not shown with the old table's numbers
    (bench.RUNS / "fashion_mnist_gist_32" / "checkpoints").mkdir(parents=True)
    bench.main()
    assert "| 55.95 |" not in (tmp_path / "benchmarks" / "pgh.md").read_text()


def test_bench_pgh_shows_the_kept_rows_best_shallow_where_the_baselines_did_not_run_here(tmp_path, monkeypatch):
    bench = load("bench_pgh", tmp_path, monkeypatch)
    readme_with(tmp_path, bench.START, bench.END)
    header = "| run | dataset | initial codes | bits | settings | train images | round 0 mAP@all | PGH mAP@all"
    (tmp_path / "benchmarks" / "pgh.md").write_text(
        f"{header} | mAP@all by round | best shallow | wall min |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| fashion_mnist_gist_32 | fashion_mnist | ITQ+GIST | 32 | defaults | 10000 | 54.51 | 55.95 | 54.51 → 55.95 "
        "| 55.81 (ITQ+gist) | 30.9 |\n"
    )
    run = {"init_hash": "itq", "num_train": 10000, "init_map_all": 0.5451, "dataset": "fashion_mnist", "bits": 32}
    fake_run(bench.RUNS / "fashion_mnist_gist_32_best", **run, map_all=0.6141)
    (bench.RUNS / "fashion_mnist_gist_32_best" / "rounds.csv").write_text("round,map_all\n0,0.5451\n1,0.6141\n")
    monkeypatch.setattr(sys, "argv", ["bench_pgh.py", "--from-runs"])
    bench.main()
    rows = [line for line in (tmp_path / "benchmarks" / "pgh.md").read_text().splitlines() if "fashion_mnist_" in line]
    assert len(rows) == 2 and all("| 55.81 (ITQ+gist) |" in row for row in rows)
    assert "| 61.41 |" in rows[1]


def test_bench_deep_and_baselines_keep_every_finished_run(tmp_path, monkeypatch):
    deep = load("bench_deep", tmp_path, monkeypatch)
    readme = readme_with(tmp_path, deep.START, deep.END)
    fake_run(deep.RUNS / "mnist5k_dh_32", method="dh", features="gist", dataset="mnist5k", bits=32, map_all=0.6)
    fake_run(deep.RUNS / "fashion_mnist_dh_32", method="dh", features="gist", dataset="fashion_mnist", bits=32)
    monkeypatch.setattr(deep, "run_timed", lambda *a, **k: pytest.fail("a finished run trained again"))
    monkeypatch.setattr(sys, "argv", ["bench_deep.py", "--datasets", "mnist5k", "--methods", "dh", "--bits", "32"])
    deep.main()
    assert "fashion_mnist 32" in readme.read_text() and "mnist5k 32" in readme.read_text()
    # on a machine without the fashion run (a fresh clone) its cells stay as the last table showed them
    import shutil

    shutil.rmtree(deep.RUNS / "fashion_mnist_dh_32")
    deep.main()
    text = (tmp_path / "benchmarks" / "deep.md").read_text()
    assert "| DH+GIST | 60.00 | 50.00 |" in text and "| DH+GIST | 61 | 61 |" in text
    assert "kept from the previous table" in text and readme.read_text().count("| DH+GIST |") == 2
    # a run here that did not finish is left out, not shown with the old table's numbers
    (deep.RUNS / "fashion_mnist_dh_32").mkdir()
    deep.main()
    assert "| DH+GIST | 60.00 | 50.00 |" not in (tmp_path / "benchmarks" / "deep.md").read_text()
    (deep.RUNS / "fashion_mnist_dh_32").rmdir()
    # a column of the previous table outside this command's grid (another bit length) stays too
    fake_run(deep.RUNS / "mnist5k_dh_128", method="dh", features="gist", dataset="mnist5k", bits=128, map_all=0.7)
    monkeypatch.setattr(sys, "argv", ["bench_deep.py", "--datasets", "mnist5k", "--methods", "dh", "--bits", "128"])
    deep.main()
    shutil.rmtree(deep.RUNS / "mnist5k_dh_128")
    monkeypatch.setattr(sys, "argv", ["bench_deep.py", "--datasets", "mnist5k", "--methods", "dh", "--bits", "32"])
    deep.main()
    assert "| mnist5k 32 | mnist5k 128 |" in readme.read_text() and "| 70.00 |" in readme.read_text()
    (tmp_path / "benchmarks" / "deep.md").unlink()  # nothing to keep from: the column goes
    deep.main()
    assert "fashion_mnist 32" not in readme.read_text()

    baselines = load("bench_baselines", tmp_path, monkeypatch)
    readme = readme_with(tmp_path, baselines.START, baselines.END)
    for dataset in ("mnist5k", "fashion_mnist"):
        fake_run(baselines.run_dir(dataset, "itq", "gist", 32), method="itq", features="gist", dataset=dataset, bits=32)
    monkeypatch.setattr(sys, "argv", ["bench_baselines.py", "--from-runs", "--datasets", "mnist5k"])
    baselines.main()
    header = next(line for line in readme.read_text().splitlines() if line.startswith("| method"))
    assert "fashion_mnist" in header and "mnist5k" in header
    shutil.rmtree(baselines.run_dir("fashion_mnist", "itq", "gist", 32))
    baselines.main()
    text = (tmp_path / "benchmarks" / "baselines.md").read_text()
    assert "| ITQ+GIST | 50.00 | 50.00 |" in text and "kept from the previous table" in text
