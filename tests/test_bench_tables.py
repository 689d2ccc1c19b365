"""The benchmark scripts that write README tables (`make bench-pgh`, `bench-deep`, `bench-baselines`)
keep every finished run of their grid in the table: choosing what trains (--datasets, --runs,
--methods, --bits) deleted the other finished rows from README.md and benchmarks/*.md. Also what they
train (overrides after --runs, names outside the grid, a cleared directory), what they leave out (runs
stopped in mid-epoch), and the model diag_pgh_ceilings.py loads from a run. Runs here are fake finished
run directories under a temporary root; nothing trains."""

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
    out.mkdir(parents=True, exist_ok=True)
    base = {"map_all": 0.5, "train_seconds": 60.0, "encode_seconds": 1.0, "eval_seconds": 1.0, "feature_seconds": 0.0}
    (out / "metrics.json").write_text(json.dumps({**base, **metrics}))
    (out / "wall_seconds.txt").write_text("61.0\n")


PGH_RUN = {"init_hash": "itq", "num_train": 4000, "init_map_all": 0.55, "dataset": "mnist5k", "bits": 32}


def fake_pgh_run(out: Path, **metrics) -> None:
    """A finished bench-pgh run (metrics.json, rounds.csv, wall_seconds.txt of 61 s) in `out`."""
    fake_run(out, **{**PGH_RUN, **metrics})
    (out / "rounds.csv").write_text(f"round,map_all\n0,0.55\n1,{metrics.get('map_all', 0.5)}\n")


def table_rows(table_file: Path) -> dict[str, str]:
    """Run name -> its line in a bench-pgh table."""
    rows = [line for line in table_file.read_text().splitlines() if line.startswith("| ") and "_" in line[:20]]
    return {row.split(" | ")[0].removeprefix("| "): row for row in rows}


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
    previous_pgh_table(tmp_path, "| fashion_mnist_gist_32 | fashion_mnist | ITQ+GIST | 32 | defaults | 10000 | 54.51 "
                       "| 55.95 | 54.51 → 55.95 | 55.81 (ITQ+gist) | 30.9 |")  # fmt: skip
    run = {"init_hash": "itq", "num_train": 10000, "init_map_all": 0.5451, "dataset": "fashion_mnist", "bits": 32}
    fake_run(bench.RUNS / "fashion_mnist_gist_32_best", **run, map_all=0.6141)
    (bench.RUNS / "fashion_mnist_gist_32_best" / "rounds.csv").write_text("round,map_all\n0,0.5451\n1,0.6141\n")
    monkeypatch.setattr(sys, "argv", ["bench_pgh.py", "--from-runs"])
    bench.main()
    rows = [line for line in (tmp_path / "benchmarks" / "pgh.md").read_text().splitlines() if "fashion_mnist_" in line]
    assert len(rows) == 2 and all("| 55.81 (ITQ+gist) |" in row for row in rows)
    assert "| 61.41 |" in rows[1]


def test_bench_deep_times_only_the_columns_with_deep_runs(tmp_path, monkeypatch):
    """A column only the shallow rows fill (a baseline at 64 bits) showed a wall-time column of dashes."""
    deep = load("bench_deep", tmp_path, monkeypatch)
    readme = readme_with(tmp_path, deep.START, deep.END)
    fake_run(deep.RUNS / "mnist5k_dh_32", method="dh", features="gist", dataset="mnist5k", bits=32, map_all=0.6)
    shallow = deep.RUNS.parent / "baselines" / "mnist5k_itq_gist_64"
    fake_run(shallow, method="itq", features="gist", dataset="mnist5k", bits=64)
    monkeypatch.setattr(deep, "run_timed", lambda *a, **k: pytest.fail("a finished run trained again"))
    monkeypatch.setattr(sys, "argv", ["bench_deep.py", "--datasets", "mnist5k", "--methods", "dh", "--bits", "32"])
    deep.main()
    lines = readme.read_text().splitlines()
    map_header = next(line for line in lines if line.startswith("| ") and "mnist5k 32" in line)
    wall_header = next(line for line in lines if line.startswith("| wall seconds"))
    assert "mnist5k 64" in map_header and wall_header == "| wall seconds | mnist5k 32 |"


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
    # a finished run here outside this command's grid stays, read from its run directory
    (tmp_path / "benchmarks" / "deep.md").unlink()
    monkeypatch.setattr(sys, "argv", ["bench_deep.py", "--datasets", "mnist5k", "--methods", "dh", "--bits", "32"])
    deep.main()
    assert "| mnist5k 32 | mnist5k 128 |" in readme.read_text() and "| 70.00 |" in readme.read_text()
    assert "kept from the previous table" not in readme.read_text()
    deep.main()  # and with the previous table there too, it is not shown twice
    assert readme.read_text().count("| 70.00 |") == 1
    shutil.rmtree(deep.RUNS / "mnist5k_dh_128")
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
    # a finished run here outside the grid (a bit length an earlier command chose) stays, from its directory
    fake_run(
        baselines.run_dir("mnist5k", "itq", "gist", 128), method="itq", features="gist", dataset="mnist5k", bits=128
    )
    (tmp_path / "benchmarks" / "baselines.md").unlink()
    baselines.main()
    assert "| mnist5k 32 | mnist5k 128 |" in readme.read_text()


def test_bench_pgh_takes_the_overrides_after_runs_and_refuses_names_outside_its_grid(tmp_path, monkeypatch, capsys):
    bench = load("bench_pgh", tmp_path, monkeypatch)
    readme_with(tmp_path, bench.START, bench.END)
    trained = {}

    def run_timed(overrides: list[str], out: Path) -> None:
        trained[out.name] = overrides
        fake_pgh_run(out, map_all=0.8766)

    monkeypatch.setattr(bench, "run_timed", run_timed)
    # `make bench-pgh ARGS="--runs NAME seed=1"`: nargs="+" took seed=1 for a run name, and the run trained without it
    monkeypatch.setattr(sys, "argv", ["bench_pgh.py", "--runs", "mnist5k_gist_32", "seed=1"])
    bench.main()
    assert list(trained) == ["mnist5k_gist_32"] and trained["mnist5k_gist_32"][-1] == "seed=1"
    assert "| seed=1 |" in table_rows(tmp_path / "benchmarks" / "pgh.md")["mnist5k_gist_32"]
    monkeypatch.setattr(
        sys, "argv", ["bench_pgh.py", "--force", "--datasets", "mnist5k", "seed=2", "--runs", "mnist5k_gist_32"]
    )
    bench.main()
    assert trained["mnist5k_gist_32"][-1] == "seed=2"
    # a name outside the grid trained nothing, silently; now it is refused with the valid names
    for args, wrong, valid in (
        (["--runs", "mnist5k_gist_31"], "--runs mnist5k_gist_31", "mnist5k_gist_32_sph"),
        (["--datasets", "mnist"], "--datasets mnist", "mnist5k fashion_mnist"),
        (["--runs", "seed=1"], "--runs seed=1", "--runs mnist5k_gist_32"),
        (["--datasets", "mnist5k", "--runs", "fashion_mnist_gist_32"], "--runs fashion_mnist_gist_32", "--datasets"),
    ):
        trained.clear()
        monkeypatch.setattr(sys, "argv", ["bench_pgh.py", "--force", *args])
        with pytest.raises(SystemExit):
            bench.main()
        error = capsys.readouterr().err
        assert wrong in error and valid in error and not trained

    # bench-deep and bench-baselines take no overrides: one among a list option's values is refused, not a name
    for name, args in (
        ("bench_deep", ["--datasets", "mnist5k", "seed=1"]),
        ("bench_baselines", ["--datasets", "mnist5k", "seed=1"]),
    ):
        script = load(name, tmp_path, monkeypatch)
        monkeypatch.setattr(script, "run_timed", lambda *a, **k: pytest.fail("trained despite the override"))
        monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
        with pytest.raises(SystemExit):
            script.main()
        assert "takes no Hydra overrides (seed=1)" in capsys.readouterr().err
    # a misspelt method or features name: argparse's one line, not Hydra's traceback from the first run
    script = load("bench_baselines", tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "argv", ["bench_baselines.py", "--methods", "itqq"])
    with pytest.raises(SystemExit):
        script.main()
    assert "invalid choice: 'itqq' (choose from 'itq', 'lsh', 'sh', 'sph')" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["bench_baselines", "bench_pgh"])
def test_from_runs_without_any_run_here_leaves_the_tables_as_they_are(name, tmp_path, monkeypatch, capsys):
    """On a fresh clone --from-runs rewrote the note with no timings ("fitting + encoding: ).") and a new
    date over the previous table's cells."""
    script = load(name, tmp_path, monkeypatch)
    readme_with(tmp_path, script.START, script.END)
    before = (tmp_path / "README.md").read_text()
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--from-runs"])
    script.main()
    assert "stay as they are" in capsys.readouterr().out
    assert (tmp_path / "README.md").read_text() == before


def test_bench_baselines_retrains_afresh_and_puts_the_run_back_if_the_retrain_stops(tmp_path, monkeypatch):
    baselines = load("bench_baselines", tmp_path, monkeypatch)
    readme_with(tmp_path, baselines.START, baselines.END)
    out = baselines.run_dir("mnist5k", "itq", "gist", 32)
    fake_run(out, method="itq", features="gist", dataset="mnist5k", bits=32, map_all=0.4)

    def interrupted(overrides: list[str], out: Path) -> None:  # pgh-train writes its config, then is stopped
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text("bits: 32\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(baselines, "run_timed", interrupted)
    argv = ["bench_baselines.py", "--datasets", "mnist5k", "--methods", "itq", "--features", "gist", "--bits", "32"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(KeyboardInterrupt):
        baselines.main()
    # the stopped retrain's files are gone and the finished run is back as it was (not its metrics.json
    # beside the new run's config, nor lost to a retrain that never ran)
    assert not (out / "config.yaml").exists() and json.loads((out / "metrics.json").read_text())["map_all"] == 0.4
    assert not out.with_name(out.name + ".previous").exists()

    def finished(overrides: list[str], out: Path) -> None:
        fake_run(out, method="itq", features="gist", dataset="mnist5k", bits=32, map_all=0.5)

    monkeypatch.setattr(baselines, "run_timed", finished)
    baselines.main()
    assert json.loads((out / "metrics.json").read_text())["map_all"] == 0.5
    assert not out.with_name(out.name + ".previous").exists()


def test_runs_stopped_in_mid_epoch_are_left_out_and_named(tmp_path, monkeypatch, capsys):
    bench = load("bench_pgh", tmp_path, monkeypatch)
    readme_with(tmp_path, bench.START, bench.END)
    fake_pgh_run(bench.RUNS / "mnist5k_gist_32", map_all=0.8766, stopped_mid_epoch=True)  # e.g. +trainer.max_time
    fake_pgh_run(bench.RUNS / "mnist5k_gist_64", map_all=0.8096, bits=64, stopped_mid_epoch=False)
    monkeypatch.setattr(sys, "argv", ["bench_pgh.py", "--from-runs"])
    bench.main()
    assert list(table_rows(tmp_path / "benchmarks" / "pgh.md")) == ["mnist5k_gist_64"]
    stopped = "stopped in mid-epoch (metrics.json has stopped_mid_epoch): left out of the table; --force retrains it"
    assert f"{bench.RUNS / 'mnist5k_gist_32'} {stopped}" in capsys.readouterr().out

    deep = load("bench_deep", tmp_path, monkeypatch)
    readme = readme_with(tmp_path, deep.START, deep.END)
    fake_run(deep.RUNS / "mnist5k_dh_16", method="dh", features="gist", dataset="mnist5k", bits=16, map_all=0.55)
    run = dict(method="dh", features="gist", dataset="mnist5k", bits=32, map_all=0.6, stopped_mid_epoch=True)
    fake_run(deep.RUNS / "mnist5k_dh_32", **run)
    monkeypatch.setattr(deep, "run_timed", lambda *a, **k: pytest.fail("a finished run trained again"))
    monkeypatch.setattr(sys, "argv", ["bench_deep.py", "--datasets", "mnist5k", "--methods", "dh", "--bits", "16"])
    deep.main()
    assert "| 55.00 |" in readme.read_text() and "60.00" not in readme.read_text()
    assert "mnist5k 32" not in readme.read_text()  # nor its wall time
    assert f"{deep.RUNS / 'mnist5k_dh_32'} {stopped}" in capsys.readouterr().out
    # chosen to train, it trains again, as a run that did not finish does
    trained = []
    monkeypatch.setattr(deep, "run_timed", lambda overrides, out: trained.append(out.name) or fake_run(out, **run))
    monkeypatch.setattr(sys, "argv", ["bench_deep.py", "--datasets", "mnist5k", "--methods", "dh", "--bits", "32"])
    deep.main()
    assert trained == ["mnist5k_dh_32"]


def test_bench_pgh_marks_a_training_time_shown_for_want_of_a_wall_time(tmp_path, monkeypatch):
    bench = load("bench_pgh", tmp_path, monkeypatch)
    readme = readme_with(tmp_path, bench.START, bench.END)
    fake_pgh_run(bench.RUNS / "mnist5k_gist_32", map_all=0.8766, train_seconds=372.0)  # e.g. make train's run
    (bench.RUNS / "mnist5k_gist_32" / "wall_seconds.txt").unlink()
    fake_pgh_run(bench.RUNS / "mnist5k_gist_64", map_all=0.8096, bits=64)
    monkeypatch.setattr(sys, "argv", ["bench_pgh.py", "--from-runs"])
    bench.main()
    rows = table_rows(tmp_path / "benchmarks" / "pgh.md")
    assert rows["mnist5k_gist_32"].endswith("| 6.2 (train) |") and rows["mnist5k_gist_64"].endswith("| 1.0 |")
    assert "A wall min marked (train) is the run's training time" in readme.read_text()


def previous_pgh_table(tmp_path: Path, row: str) -> None:
    """benchmarks/pgh.md as an earlier `make bench-pgh` left it, with one row."""
    header = "| run | dataset | initial codes | bits | settings | train images | round 0 mAP@all | PGH mAP@all"
    (tmp_path / "benchmarks" / "pgh.md").write_text(
        f"{header} | mAP@all by round | best shallow | wall min |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{row}\n"
    )


def test_bench_pgh_best_shallow_is_the_best_of_the_runs_here_and_the_previous_table(tmp_path, monkeypatch):
    bench = load("bench_pgh", tmp_path, monkeypatch)
    readme_with(tmp_path, bench.START, bench.END)
    previous_pgh_table(tmp_path, "| mnist5k_gist_32 | mnist5k | ITQ+GIST | 32 | defaults | 4000 | 55.00 | 87.66 "
                       "| 55.00 → 87.66 | 55.70 (ITQ+gist) | 6.2 |")  # fmt: skip
    fake_pgh_run(bench.RUNS / "mnist5k_gist_32", map_all=0.8766)
    baselines = tmp_path / "logs" / "bench" / "baselines"
    fake_run(baselines / "mnist5k_lsh_gist_32", method="lsh", features="gist", dataset="mnist5k", bits=32, map_all=0.3)
    monkeypatch.setattr(sys, "argv", ["bench_pgh.py", "--from-runs"])
    bench.main()  # only some baselines ran here: the previous table's higher cell stays
    assert "| 55.70 (ITQ+gist) |" in table_rows(tmp_path / "benchmarks" / "pgh.md")["mnist5k_gist_32"]
    fake_run(baselines / "mnist5k_sph_gist_32", method="sph", features="gist", dataset="mnist5k", bits=32, map_all=0.6)
    bench.main()
    assert "| 60.00 (SPH+gist) |" in table_rows(tmp_path / "benchmarks" / "pgh.md")["mnist5k_gist_32"]
    # a baseline rerun here replaces its own old number, lower or not (after a fix, say)
    fake_run(baselines / "mnist5k_sph_gist_32", method="sph", features="gist", dataset="mnist5k", bits=32, map_all=0.5)
    fake_run(baselines / "mnist5k_itq_gist_32", method="itq", features="gist", dataset="mnist5k", bits=32, map_all=0.5)
    bench.main()
    assert "| 50.00 (ITQ+gist) |" in table_rows(tmp_path / "benchmarks" / "pgh.md")["mnist5k_gist_32"]


def test_diag_pgh_ceilings_loads_the_model_a_run_stopped_in_mid_epoch_was_evaluated_on(tmp_path, monkeypatch):
    import lightning
    import torch

    from pgh.data import load_digits
    from pgh.data.split import make_split
    from pgh.methods import PGH

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model = PGH(bits=8, num_train=6, width=8, hidden=16, z_dim=8)
    for name, bias in (("stopped.ckpt", 1.0), ("last.ckpt", 0.0)):  # last.ckpt: its last step checkpoint, newer
        torch.nn.init.constant_(model.H.head[-1].bias, bias)
        checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
        torch.save({**checkpoint, "pytorch-lightning_version": lightning.__version__}, run / "checkpoints" / name)
    (run / "config.yaml").write_text(
        "method:\n  module:\n    _target_: pgh.methods.PGH\ndataset:\n  _target_: pgh.data.load_digits\n"
    )
    (run / "metrics.json").write_text(json.dumps({"stopped_mid_epoch": True, "image_shape": [1, 28, 28]}))
    make_split(load_digits().labels, query_per_class=10).save(run / "split.npz")

    class Loaded(Exception):
        pass

    load_from_checkpoint = PGH.load_from_checkpoint

    def loaded(path, **kwargs):  # the model the script goes on with, and from which file
        raise Loaded(Path(path).name, load_from_checkpoint(path, **kwargs))

    monkeypatch.setattr(PGH, "load_from_checkpoint", loaded)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("_diag_pgh_ceilings", BENCHMARKS / "diag_pgh_ceilings.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    monkeypatch.setattr(sys, "argv", ["diag_pgh_ceilings.py", "rehash", "--run", str(run)])
    with pytest.raises(Loaded) as caught:
        diag.main()
    name, model = caught.value.args
    assert name == "stopped.ckpt" and torch.equal(model.H.head[-1].bias, torch.ones(8))
