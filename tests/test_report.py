"""pgh-report: the mAP table (variants told apart by their settings, seeds averaged), the run list,
PGH's progressive curves, and its errors — on hand-written run directories and on a real run."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import markdown_table_rows, run_python

from pgh.report.cli import build_report, main, out_folder_lock, remove_stale_figures
from pgh.report.collect import missing_sweep_jobs
from pgh.retrieval import pack_codes
from pgh.train import train

PGH_CONFIG = {
    "seed": 0,
    "bits": 32,
    "paths": {"output_dir": "somewhere"},
    "method": {"init_hash": "itq", "rounds": 4, "module": {"bits": 32, "gamma": 0.5}},
}


def write_run(path: Path, map_all: float, seed: int = 0, init_hash: str | None = "itq", rounds=None, **metrics) -> Path:
    """A run directory as pgh-train leaves it: metrics.json, config.yaml and, for PGH, rounds.csv."""
    path.mkdir(parents=True)
    record = {"dataset": "mnist5k", "method": "pgh", "features": "gist", "bits": 32, "map_all": map_all}
    record.update(seed=seed, map_at_1000=map_all + 0.01, precision_at_100=map_all + 0.02, train_seconds=12.5)
    if init_hash:
        record.update(init_hash=init_hash, init_map_all=0.5)
    record.update(metrics)
    (path / "metrics.json").write_text(json.dumps(record))
    config = json.loads(json.dumps(PGH_CONFIG))
    config["seed"], config["paths"]["output_dir"] = seed, str(path)  # differ per run, never a setting
    if init_hash:
        config["method"]["init_hash"] = init_hash
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    if rounds:
        lines = ["round,bit_change,map_all,map_at_1000"] + [f"{t},0.1,{v},{v}" for t, v in enumerate(rounds)]
        (path / "rounds.csv").write_text("\n".join(lines) + "\n")
    # a precision-recall curve over radii 0..32 whose precision at radius 0 is map_all (to tell runs apart)
    lines = ["hamming_radius,precision,recall"] + [f"{r},{map_all if r == 0 else 0.1},{r / 32}" for r in range(33)]
    (path / "pr_curve.csv").write_text("\n".join(lines) + "\n")
    # and a precision@N curve at 1 and 100 whose value at N = 100 is map_all
    (path / "precision_at_n.csv").write_text(f"n,precision\n1,1.0\n100,{map_all}\n")
    # and two classes: "Coat, long" at map_all, Shirt at half of it
    rows = [f'4,"Coat, long",100,{map_all},0,0', f"6,Shirt,100,{map_all / 2},0,0"]
    (path / "per_class.csv").write_text("\n".join(["label,class,queries,map_all,map_at_1000,precision_at_100", *rows]))
    return path


def table_rows(text: str, heading: str) -> dict[str, list[str]]:
    """The table after the heading, keyed by its first column."""
    return {row[0]: row[1:] for row in markdown_table_rows(text, heading)}


def test_sweep_report_separates_settings_and_averages_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0_itq", 0.80, seed=0, rounds=[0.55, 0.70, 0.80])
    write_run(sweep / "1_itq", 0.84, seed=1, rounds=[0.55, 0.75, 0.84])
    stats = {"db_distinct_codes": 1234, "db_constant_bits": 2, "db_bit_correlation": 0.2468}  # 0_itq, 1_itq: none
    write_run(sweep / "2_lsh", 0.70, seed=0, init_hash="lsh", rounds=[0.35, 0.60, 0.70], **stats)
    report = build_report([sweep])
    text, curves = report.text, report.rounds

    maps = table_rows(text, "mAP@all (%)")
    # the most common init hash (itq) is the plain row; its two seeds: mean 82.00, stdev sqrt(8) = 2.83
    assert maps == {"PGH+GIST": ["82.00 ± 2.83 (n=2)", "66.95"], "PGH+GIST (method.init_hash=lsh)": ["70.00", "66.95"]}
    runs = table_rows(text, "Runs")
    assert list(runs) == ["0_itq", "1_itq", "2_lsh"]
    assert runs["2_lsh"] == ["mnist5k", "PGH+GIST", "method.init_hash=lsh", "32", "0", "LSH+GIST 50.00", "70.00"] + [
        "71.00",
        "72.00",
        "1,234",
        "2",
        "0.25",
        "12.5",
    ]
    assert runs["0_itq"][-4:] == ["–", "–", "–", "12.5"]
    assert curves == {
        "ITQ+GIST, 32 bits, seed 0": pytest.approx([55.0, 70.0, 80.0]),
        "ITQ+GIST, 32 bits, seed 1": pytest.approx([55.0, 75.0, 84.0]),
        "LSH+GIST, 32 bits, seed 0": pytest.approx([35.0, 60.0, 70.0]),
    }
    assert table_rows(text, "PGH: mAP@all (%) by round")["LSH+GIST, 32 bits, seed 0"] == ["35.00", "60.00", "70.00"]
    assert "| method | Coat, long | Shirt |" in text  # the classes' names head the per-class table
    per_class = table_rows(text, "mnist5k, 32 bits")
    assert per_class == {"PGH+GIST": ["82.00", "41.00"], "PGH+GIST (method.init_hash=lsh)": ["70.00", "35.00"]}
    # one PR figure for (mnist5k, 32 bits), a curve per row, the itq row the mean of its two seeds
    (pr,) = report.pr_curves.values()
    assert list(report.pr_curves) == [("mnist5k", 32)] and sorted(pr) == sorted(maps)
    assert pr["PGH+GIST"][0].tolist() == pytest.approx([0, 0.82, 0]) and pr["PGH+GIST"].shape == (33, 3)
    (at_n,) = report.precision_at_n.values()
    assert at_n["PGH+GIST"].ravel().tolist() == pytest.approx([1, 1.0, 100, 0.82]) and sorted(at_n) == sorted(maps)


def test_tied_settings_label_every_row(tmp_path):
    """Two initial hashes, one run each: neither row may read as the plain (default) one."""
    write_run(tmp_path / "0_lsh", 0.70, init_hash="lsh")
    write_run(tmp_path / "1_itq", 0.80, init_hash="itq")
    rows = table_rows(build_report([tmp_path]).text, "mAP@all (%)")
    assert rows == {
        "PGH+GIST (method.init_hash=lsh)": ["70.00", "66.95"],
        "PGH+GIST (method.init_hash=itq)": ["80.00", "66.95"],
    }


def test_runs_from_other_initial_features_name_their_round_0_codes(tmp_path):
    """method.init_features=pixels beside features=gist: round 0 was ITQ+PIXEL, and the curve says so."""
    write_run(tmp_path / "0_gist", 0.80, rounds=[0.5, 0.8])
    pixels = write_run(tmp_path / "1_pixels", 0.70, rounds=[0.5, 0.7], init_features="pixels")
    config = yaml.safe_load((pixels / "config.yaml").read_text())
    config["method"]["init_features"] = "pixels"
    (pixels / "config.yaml").write_text(yaml.safe_dump(config))
    report = build_report([tmp_path])
    runs = table_rows(report.text, "Runs")
    assert (runs["0_gist"][5], runs["1_pixels"][5]) == ("ITQ+GIST 50.00", "ITQ+PIXEL 50.00")
    assert set(report.rounds) == {"ITQ+GIST, 32 bits", "ITQ+PIXEL, 32 bits"}


def test_runs_without_metrics_are_named_as_left_out_and_bad_numbers_refused(tmp_path, capsys):
    """pgh-report left unfinished runs out without a word, and a metrics.json whose map_all is no
    number ended in a TypeError."""
    write_run(tmp_path / "done", 0.80)
    (tmp_path / "training" / ".hydra").mkdir(parents=True)
    (tmp_path / "training" / "config.yaml").write_text("bits: 32\n")
    (tmp_path / "training" / ".hydra" / "config.yaml").write_text("bits: 32\n")  # Hydra's copy: no run
    (tmp_path / "done" / "wandb" / "run-1" / "files").mkdir(parents=True)
    (tmp_path / "done" / "wandb" / "run-1" / "files" / "config.yaml").write_text("{}\n")  # W&B's copy
    main([str(tmp_path)])
    printed = capsys.readouterr()
    assert "# pgh report: 1 run" in printed.out
    assert (
        f"left out 1 run(s) without metrics.json (training, stopped or failed): {tmp_path / 'training'}" in printed.err
    )
    bad = write_run(tmp_path / "bad", 0.5)
    record = json.loads((bad / "metrics.json").read_text())
    (bad / "metrics.json").write_text(json.dumps({**record, "map_all": "high"}))
    with pytest.raises(SystemExit, match=r"metrics.json: map_all='high' is no number: not written by pgh-train"):
        main([str(bad)])
    gap = write_run(tmp_path / "gap", 0.6, rounds=[0.5, 0.6])
    (gap / "rounds.csv").write_text("round,bit_change,map_all,map_at_1000\n1,0.1,0.6,0.6\n")  # no round 0
    with pytest.raises(SystemExit, match=r"gap/rounds.csv: the rows are not rounds 0, 1, 2, ... in order"):
        main([str(gap)])


def test_only_dataset_and_bits_pairs_with_runs_get_a_column(tmp_path):
    write_run(tmp_path / "a", 0.80)
    other = write_run(tmp_path / "b", 0.60)
    record = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**record, "dataset": "digits", "bits": 16}))
    text = build_report([tmp_path]).text
    assert "| method | digits 16 | mnist5k 32 |" in text  # no "digits 32" or "mnist5k 16" of dashes


def test_a_resumed_or_requeued_run_is_a_repeat_not_a_variant(tmp_path):
    write_run(tmp_path / "a", 0.80, seed=0)
    resumed = write_run(tmp_path / "b", 0.84, seed=1)
    config = yaml.safe_load((resumed / "config.yaml").read_text())
    config.update(ckpt_path="last", requeued=True)  # how a SLURM requeue reruns a job
    (resumed / "config.yaml").write_text(yaml.safe_dump(config))
    assert table_rows(build_report([tmp_path]).text, "mAP@all (%)") == {"PGH+GIST": ["82.00 ± 2.83 (n=2)", "66.95"]}


def test_settings_of_the_features_tell_runs_apart_but_where_they_sit_does_not(tmp_path):
    """Two GIST grids were averaged as repeats of one row; another data root or batch size is a repeat."""

    def with_config(run: Path, **sections) -> None:
        config = yaml.safe_load((run / "config.yaml").read_text())
        config.update(sections)
        (run / "config.yaml").write_text(yaml.safe_dump(config))

    gist = {"_target_": "pgh.features.GistFeatures", "number_blocks": 4, "batch_size": 512, "device": "auto"}
    with_config(write_run(tmp_path / "a", 0.80, seed=0), features=gist, dataset={"root": "/data/a"})
    with_config(write_run(tmp_path / "b", 0.84, seed=1), features={**gist, "batch_size": 64}, dataset={"root": "/b"})
    with_config(write_run(tmp_path / "c", 0.60, seed=0), features={**gist, "number_blocks": 2}, dataset={"root": "/b"})
    rows = table_rows(build_report([tmp_path]).text, "mAP@all (%)")
    assert rows == {
        "PGH+GIST": ["82.00 ± 2.83 (n=2)", "66.95"],
        "PGH+GIST (features.number_blocks=2)": ["60.00", "66.95"],
    }


def test_a_datasets_own_settings_are_compared_only_within_that_dataset(tmp_path):
    """A folder run's dataset.image_size labelled both rows against a digits run ("absent")."""
    write_run(tmp_path / "a", 0.80)
    folder = write_run(tmp_path / "b", 0.60)
    record = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**record, "dataset": "folder"}))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["dataset"] = {"_target_": "pgh.data.load_folder", "root": "/x", "image_size": 8, "grayscale": True}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert table_rows(build_report([tmp_path]).text, "mAP@all (%)") == {"PGH+GIST": ["60.00", "80.00"]}


def test_query_set_sizes_are_compared_only_within_a_dataset(tmp_path):
    """digits with 50 queries a class beside mnist5k at the default 100 labelled both as variants."""
    for name, dataset, per_class, value in (("a", "mnist5k", 100, 0.8), ("b", "digits", 50, 0.6)):
        run = write_run(tmp_path / name, value)
        record = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**record, "dataset": dataset}))
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["split"] = {"query_per_class": per_class, "seed": 0}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert table_rows(build_report([tmp_path]).text, "mAP@all (%)") == {"PGH+GIST": ["60.00", "80.00"]}


def test_a_run_made_before_eval_tie_break_reads_as_the_protocols_order(tmp_path):
    old = write_run(tmp_path / "old", 0.80)  # no eval.tie_break in its config
    config = yaml.safe_load((old / "config.yaml").read_text())
    (old / "config.yaml").write_text(yaml.safe_dump({**config, "trainer": {"max_epochs": 10}}))
    for name, tie_break, value, seed in (("new", "database_order", 0.82, 1), ("shuffled", "random", 0.70, 0)):
        run = write_run(tmp_path / name, value, seed=seed)  # "new": another seed of "old"
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["eval"] = {"tie_break": tie_break}
        # newer keys that are no setting: the older runs held max_epochs 10, which the method overrode
        config["trainer"] = {"max_epochs": None}
        config["method"]["module"]["distill_min_agreement"] = 0.8
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = table_rows(build_report([tmp_path]).text, "mAP@all (%)")
    # the 66.95: the paper column
    assert rows == {"PGH+GIST": ["81.00 ± 1.41 (n=2)", "66.95"], "PGH+GIST (eval.tie_break=random)": ["70.00", "66.95"]}


def test_cli_writes_the_report_and_the_curves(tmp_path, capsys):
    write_run(tmp_path / "runs" / "a", 0.8, rounds=[0.5, 0.8])
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    printed = capsys.readouterr().out
    written, figures = (tmp_path / "report" / "report.md").read_text(), []
    for figure in ("rounds.png", "pr_mnist5k_32.png", "precision_at_n_mnist5k_32.png"):
        assert (tmp_path / "report" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        figures.append(f"![{figure}]({figure})\n\n")
    assert written == printed + "\n## Figures\n\n" + "".join(figures)  # the printed report, and its figures


def test_a_real_run_without_paper_numbers(make_cfg, tmp_path):
    cfg = make_cfg("dataset=digits", "method=itq", "features=pixels", "bits=16", "split.query_per_class=20")
    metrics = train(cfg)
    report = build_report([cfg.paths.output_dir])
    # digits is neither MNIST nor CIFAR-10: no paper column; a shallow run has no rounds
    assert table_rows(report.text, "mAP@all (%)") == {"ITQ+PIXEL": [f"{100 * metrics['map_all']:.2f}"]}
    assert report.rounds == {} and "by round" not in report.text
    assert report.pr_curves[("digits", 16)]["ITQ+PIXEL"].shape == (17, 3)
    assert report.precision_at_n[("digits", 16)]["ITQ+PIXEL"].shape == (13, 2)
    per_class = table_rows(report.text, "digits, 16 bits")["ITQ+PIXEL"]
    assert len(per_class) == 10 and sum(map(float, per_class)) / 10 == pytest.approx(100 * metrics["map_all"], abs=0.01)


def test_missing_or_empty_paths_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit, match="does not exist"):
        main([str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no metrics.json at or below .*unfinished or failed runs have none"):
        main([str(tmp_path / "empty")])
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "metrics.json").write_text(json.dumps({"map_all": 0.5}))
    with pytest.raises(SystemExit, match="has no 'dataset': not written by pgh-train"):
        main([str(tmp_path / "odd")])
    (tmp_path / "cut" / "metrics.json").parent.mkdir()
    (tmp_path / "cut" / "metrics.json").write_text('{"map_all": 0.')
    with pytest.raises(SystemExit, match=r"cut/metrics.json is not JSON \(.*\): not written by pgh-train"):
        main([str(tmp_path / "cut")])
    (tmp_path / "cut" / "metrics.json").write_bytes(b"\xff\xfe")
    with pytest.raises(SystemExit, match=r"cut/metrics.json is not JSON \(.*codec.*\)"):
        main([str(tmp_path / "cut")])
    (tmp_path / "cut" / "metrics.json").write_text("NaN")
    with pytest.raises(SystemExit, match=r"cut/metrics.json holds a float, not an object"):
        main([str(tmp_path / "cut")])
    (tmp_path / "report.md").write_text("")
    with pytest.raises(SystemExit, match=r"--out .*report.md is a file: give a directory"):
        main([str(tmp_path / "odd"), "--out", str(tmp_path / "report.md")])


def test_report_of_a_real_multirun(tmp_path):
    """`pgh-train -m` over methods × seeds, then pgh-report on the sweep directory: one row per
    method, each cell the mean ± stdev of its two seeds' mAP@all."""
    import statistics

    from pgh.train import CONFIG_DIR

    sweep = tmp_path / "sweep"
    command = ["-m", "pgh.train", "-m", "-cd", str(Path(CONFIG_DIR).parent / "sweeps"), "-cn", "baselines"]
    command += ["dataset=digits", "features=pixels", "method=lsh,itq", "bits=16", "seed=0,1"]
    command += ["split.query_per_class=20", "logger=none", f"hydra.sweep.dir={sweep}"]
    run_python(*command, tmp_path=tmp_path)

    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(jobs) == 4
    text = build_report([sweep]).text
    expected = {}
    for method, name in (("lsh", "LSH+PIXEL"), ("itq", "ITQ+PIXEL")):
        values = [100 * j["map_all"] for j in jobs if j["method"] == method]
        expected[name] = [f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (n=2)"]
    assert table_rows(text, "mAP@all (%)") == expected
    assert len(table_rows(text, "Runs")) == 4


@pytest.mark.parametrize("plot", ["pr", "precision_at_n", "rounds"])
def test_legend_of_many_long_rows_sits_below_the_curves_and_stays_in_the_png(tmp_path, plot):
    import numpy as np
    from PIL import Image

    from pgh.report.plots import matplotlib_close, plot_pr_curves, plot_precision_at_n, plot_rounds, save_figure

    labels = [f"PGH+GIST (method.module.anchor_weight=0.{i} method.progressive.vote_neighbors={i})" for i in range(12)]
    curve = np.linspace(0, 1, 33)[:, None].repeat(3, axis=1)
    fig = {
        "pr": lambda: plot_pr_curves({label: curve for label in labels}),
        "precision_at_n": lambda: plot_precision_at_n({label: curve[:, :2] for label in labels}),
        "rounds": lambda: plot_rounds({label: [50.0, 60.0, 70.0] for label in labels}),
    }[plot]()
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y1 <= axes_box.y0  # entirely under the axes (their tick labels sit in between)
    save_figure(fig, tmp_path / "plot.png")
    matplotlib_close(fig)
    height = Image.open(tmp_path / "plot.png").size[1]
    assert height >= axes_box.height + legend.height  # the tight bounding box kept the legend


def test_runs_on_different_query_sets_are_named_and_tables_keep_one_row_order(tmp_path):
    import torch

    from pgh.data import Split

    sweep = tmp_path / "sweep"
    for job, method, features, queries in [
        ("10_itq", "itq", "gist", range(0, 10)),
        ("2_lsh", "lsh", "pixels", range(0, 10)),
        ("1_itq", "itq", "pixels", range(5, 15)),  # another split.seed: other queries
    ]:
        run = write_run(sweep / job, 0.5, init_hash=None, method=method, features=features)
        query = torch.tensor(list(queries))
        Split(query, torch.arange(20, 30), torch.arange(20, 30)).save(run / "split.npz")
    text = build_report([sweep]).text
    assert "**Not one query set.** The mnist5k runs were scored on 2 different query sets" in text
    assert "2 runs on 10 queries (e.g. 2_lsh)" in text and "1 run on 10 queries (e.g. 1_itq)" in text
    assert list(table_rows(text, "Runs")) == ["1_itq", "2_lsh", "10_itq"]  # numbers as numbers
    # the per-class table lists its rows in the mAP table's order (features, then method)
    assert list(table_rows(text, "mAP@all (%) per class")) == list(table_rows(text, "mAP@all (%)"))


def test_table_rows_go_by_features_then_method_in_the_papers_order(tmp_path):
    """Rows sort by features (PIXEL before GIST), then method (DH before BGAN): the paper's order, which
    neither the alphabet nor a method-first sort gives."""
    for job, method, features in [
        ("a", "bgan", "gist"),
        ("b", "dh", "pixels"),
        ("c", "dh", "gist"),
        ("d", "bgan", "pixels"),
    ]:
        write_run(tmp_path / job, 0.5, init_hash=None, method=method, features=features)
    text = build_report([tmp_path]).text
    expected = ["DH+PIXEL", "BGAN+PIXEL", "DH+GIST", "BGAN+GIST"]
    assert list(table_rows(text, "mAP@all (%)")) == expected
    assert list(table_rows(text, "mAP@all (%) per class")) == expected


def test_cifar10_runs_at_64_bits_show_the_papers_progressive_curves(tmp_path):
    """The paper shows mAP@all by round for CIFAR-10 at 64 bits only: those curves join the rounds
    table and figure when every run with rounds is such a run, and no others."""
    run = write_run(tmp_path / "cifar", 0.33, rounds=[0.18, 0.30, 0.33], dataset="cifar10", bits=64)
    curves = build_report([run]).rounds
    assert curves["paper: ITQ+GIST"] == [17.58, 27.04, 30.49, 31.81, 32.40] and "paper: ITQ+VGG" in curves
    write_run(tmp_path / "mnist", 0.8, rounds=[0.55, 0.8])
    assert not any(label.startswith("paper") for label in build_report([tmp_path]).rounds)


def test_a_run_without_config_yaml_is_a_row_of_its_own(tmp_path):
    """It made every other run's settings differ from it: each got a label of every key."""
    write_run(tmp_path / "a", 0.80, seed=0)
    write_run(tmp_path / "b", 0.84, seed=1)
    write_run(tmp_path / "c", 0.70, seed=2)
    (tmp_path / "c" / "config.yaml").unlink()
    rows = table_rows(build_report([tmp_path]).text, "mAP@all (%)")
    assert set(rows) == {"PGH+GIST", "PGH+GIST (no config.yaml)"}


def edit_config(run: Path, **sections) -> Path:
    config = yaml.safe_load((run / "config.yaml").read_text())
    config.update(sections)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_a_repeated_seed_counts_once_and_is_named(tmp_path):
    """`make train` beside a sweep's job with the same settings and seed: the same experiment twice,
    which counted as two seeds gave a ± of 0 (or weighed one seed double)."""
    write_run(tmp_path / "a", 0.80, seed=0)
    write_run(tmp_path / "b", 0.84, seed=1)
    write_run(tmp_path / "c", 0.80, seed=0)  # a repeat of a
    write_run(tmp_path / "e", 0.79, seed=1)  # a repeat of b that scored otherwise (e.g. resumed mid-round)
    edit_config(write_run(tmp_path / "d", 0.70, seed=0), split={"seed": 1})  # another split: another experiment
    text = build_report([tmp_path]).text
    # 80, 84, 70: mean 78.00, sample stdev 7.21
    assert table_rows(text, "mAP@all (%)") == {"PGH+GIST": ["78.00 ± 7.21 (n=3)", "66.95"]}
    assert (
        "**Repeated seeds.**" in text
        and "count them once (the rounds table shows each run's curve): c (as a); e (as b; mAP@all 79.00 there, "
        "84.00 counted)."
        in text
    )
    assert list(table_rows(text, "Runs")) == ["a", "b", "c", "d", "e"]  # every run still listed


def test_a_sweeps_whole_numbers_and_the_configs_floats_are_one_setting(tmp_path):
    """A sweep's grid `augment_shift: 0,2,3` gives ints where conf/method/pgh.yaml's default is 2.0."""
    for name, shift, seed in (("default", 2.0, 0), ("swept", 2, 1), ("off", 0, 2), ("off2", 0.0, 3)):
        run = write_run(tmp_path / name, 0.80 if shift else 0.60, seed=seed)
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["method"]["module"]["augment_shift"] = shift
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = table_rows(build_report([tmp_path]).text, "mAP@all (%)")
    assert rows == {
        "PGH+GIST (method.module.augment_shift=2)": ["80.00 ± 0.00 (n=2)", "66.95"],
        "PGH+GIST (method.module.augment_shift=0)": ["60.00 ± 0.00 (n=2)", "66.95"],
    }


def test_runs_on_different_image_folders_are_different_datasets(tmp_path):
    """`dataset=folder` runs all report the dataset `folder`: two folders were averaged as seeds of
    one (or, with databases of other sizes, the curves crashed the report)."""
    folder = {"_target_": "pgh.data.load_folder", "image_size": 32, "name": "folder"}
    for name, root, value, seed in (
        ("a", "/data/shoes", 0.8, 0),
        ("b", "/data/bags", 0.6, 2),
        ("c", "/data/shoes", 0.7, 1),
    ):
        run = write_run(tmp_path / name, value, seed=seed, dataset="folder")
        edit_config(run, dataset={**folder, "root": root})
    (tmp_path / "b" / "precision_at_n.csv").write_text("n,precision\n1,1.0\n100,0.6\n1000,0.5\n")  # a larger database
    report = build_report([tmp_path])
    assert table_rows(report.text, "mAP@all (%)") == {"PGH+GIST": ["60.00", "75.00 ± 7.07 (n=2)"]}
    assert "| method | folder (/data/bags) 32 | folder (/data/shoes) 32 |" in report.text
    assert sorted(report.precision_at_n) == [("folder (/data/bags)", 32), ("folder (/data/shoes)", 32)]
    main([str(tmp_path), "--out", str(tmp_path / "out")])  # the folders' figures: flat file names, no sub-folders
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".png") == [
        "pr_folder_data_bags_32.png", "pr_folder_data_shoes_32.png",
        "precision_at_n_folder_data_bags_32.png", "precision_at_n_folder_data_shoes_32.png",
    ]  # fmt: skip
    assert all(p.is_file() for p in (tmp_path / "out").iterdir())
    for name in ("b", "c"):  # one folder: its plain name
        edit_config(tmp_path / name, dataset={**folder, "root": "/data/shoes"})
    with pytest.raises(ValueError, match=r"precision_at_n.csv of one table cell's runs differ in length .*b: 3 rows"):
        build_report([tmp_path])
    (tmp_path / "b" / "precision_at_n.csv").write_text("n,precision\n1,1.0\n100,0.6\n")
    assert "| method | folder 32 |" in build_report([tmp_path]).text


def test_long_dataset_names_get_figure_names_of_their_own_the_file_system_takes(tmp_path):
    """A 300-character `dataset.name` made figure names over the file system's 255 bytes: an OSError."""
    long_names = ("x" * 299 + "a", "x" * 299 + "b")  # differ only at the end
    for name in long_names:
        write_run(tmp_path / "runs" / name[-1], 0.8, dataset=name)
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    figures = [p.name for p in (tmp_path / "out").glob("pr_*.png")]
    assert len(figures) == 2 and all(len(name.encode()) <= 200 for name in figures)


def test_dataset_names_that_differ_only_in_punctuation_get_figures_of_their_own(tmp_path):
    """`a/b` and `a_b` both became `a_b`: one dataset's PR figure overwrote the other's."""
    for run, name in (("x", "shoes/2024"), ("y", "shoes_2024"), ("z", "mnist5k")):
        write_run(tmp_path / "runs" / run, 0.8, dataset=name)
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    figures = sorted(p.name for p in (tmp_path / "out").glob("pr_*.png"))
    assert len(figures) == 3 and "pr_mnist5k_32.png" in figures  # a name of its own keeps its plain figure name
    assert all(re.fullmatch(r"pr_shoes_2024-[0-9a-f]{8}_32\.png", name) for name in figures if "shoes" in name)


def test_an_out_that_is_a_symbolic_link_to_nothing_is_refused_before_the_report(tmp_path):
    """A broken link passed the writability check (the folder above it is writable), then mkdir failed."""
    write_run(tmp_path / "runs" / "a", 0.8)
    (tmp_path / "report").symlink_to(tmp_path / "gone")
    with pytest.raises(SystemExit, match=r"report is a symbolic link to .*gone, which does not exist"):
        main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")])


def test_an_image_folder_read_through_a_symbolic_link_is_the_same_dataset(tmp_path):
    """A run given `dataset.root=<link>` and one given the folder it points to read the same images:
    they had been two datasets, `folder (<link>)` and `folder (<folder>)`."""
    folder = {"_target_": "pgh.data.load_folder", "image_size": 32, "name": "folder"}
    (tmp_path / "shoes").mkdir()
    (tmp_path / "bags").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "shoes")
    for name, root, value, seed in (("a", "link", 0.8, 0), ("b", "shoes", 0.6, 1)):
        run = write_run(tmp_path / "runs" / name, value, seed=seed, dataset="folder")
        edit_config(run, dataset={**folder, "root": str(tmp_path / root) + "/"})
    assert table_rows(build_report([tmp_path / "runs"]).text, "mAP@all (%)") == {"PGH+GIST": ["70.00 ± 14.14 (n=2)"]}
    edit_config(
        write_run(tmp_path / "runs" / "c", 0.5, dataset="folder"), dataset={**folder, "root": str(tmp_path / "bags")}
    )
    text = build_report([tmp_path / "runs"]).text
    bags, shoes = (os.path.realpath(tmp_path / name) for name in ("bags", "shoes"))
    assert f"| method | folder ({bags}) 32 | folder ({shoes}) 32 |" in text


def test_an_out_folder_that_cannot_be_written_is_refused_before_the_report(tmp_path, monkeypatch):
    """A read-only --out had ended in a traceback once the report was made. Tests run as root, who
    writes anywhere: a file above --out, and an os.access that says no, stand for a read-only folder."""
    write_run(tmp_path / "runs" / "a", 0.8)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit, match=r"^pgh-report: cannot write --out .*a_file/report: .*a_file is a file, not"):
        main([str(tmp_path / "runs"), "--out", str(tmp_path / "a_file" / "report")])
    read_only, real_access = tmp_path / "read_only", os.access
    read_only.mkdir()
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: Path(path) != read_only and real_access(path, mode, **kw)
    )
    with pytest.raises(SystemExit, match=r"read_only is not writable: choose a writable --out or fix its permissions$"):
        main([str(tmp_path / "runs"), "--out", str(read_only / "report")])
    assert not any(read_only.iterdir())


def test_a_metrics_file_as_the_path_reports_its_run(tmp_path, capsys):
    run = write_run(tmp_path / "run", 0.8)
    main([str(run / "metrics.json")])
    assert "# pgh report: 1 run" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"config.yaml is a file: give a run directory"):
        main([str(run / "config.yaml")])


def test_figures_an_earlier_report_left_in_out_are_removed(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    for name in ("pr_mnist5k_64.png", "precision_at_n_cifar10_16.png", "rounds.png", "mine.png"):
        (out / name).write_bytes(b"old")
    write_run(tmp_path / "runs" / "a", 0.8)  # no rounds.csv: no rounds.png now
    main([str(tmp_path / "runs"), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == [
        ".pgh-report.lock", "mine.png", "pr_mnist5k_32.png", "precision_at_n_mnist5k_32.png", "report.md",
    ]  # fmt: skip


def test_a_stale_figure_deleted_meanwhile_is_no_error(tmp_path, monkeypatch):
    """Between listing the --out folder and deleting a stale figure, another process may delete it."""
    (tmp_path / "pr_old_32.png").write_bytes(b"old")
    listed = [tmp_path / "pr_old_32.png", tmp_path / "pr_gone_32.png"]  # the second deleted meanwhile
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter(listed))
    remove_stale_figures(tmp_path, {"pr_new_32.png"})
    assert not (tmp_path / "pr_old_32.png").exists()


def test_reports_into_one_out_folder_take_turns(tmp_path, capsys):
    """Two `pgh-report --out DIR` at once: one's removal of stale figures deleted the other's new ones
    (or failed on a figure the other had deleted). A second report waits for the first's lock."""
    write_run(tmp_path / "runs" / "a", 0.8)
    out = tmp_path / "out"
    with out_folder_lock(out):
        report = threading.Thread(target=main, args=([str(tmp_path / "runs"), "--out", str(out)],))
        report.start()
        printed, deadline = "", time.monotonic() + 60
        while "waiting for it" not in printed and time.monotonic() < deadline:
            time.sleep(0.05)
            printed += capsys.readouterr().err
        assert f"pgh-report: another pgh-report is writing {out}: waiting for it" in printed
        assert sorted(p.name for p in out.iterdir()) == [".pgh-report.lock"]  # nothing written meanwhile
    report.join(60)
    assert not report.is_alive() and (out / "report.md").exists() and (out / "pr_mnist5k_32.png").exists()


def test_jobs_of_a_sweep_without_a_directory_are_named(tmp_path, capsys):
    """A job refused before it wrote anything (its directory is removed) or still queued left no
    trace: the report read as complete."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    multirun = {
        "hydra": {
            "sweep": {"subdir": "${hydra.job.num}_${hydra.runtime.choices.dataset}_${bits}"},
            "sweeper": {"params": {"method": "lsh,itq", "bits": "16,32"}},
            "overrides": {"task": ["dataset=digits", "bits=16,32,64", "seed=0"]},  # the command's bits win
        }
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun, sort_keys=False))  # as Hydra writes it
    for job in (0, 2, 5):
        write_run(sweep / f"{job}_digits_16", 0.8, seed=job)
    (sweep / "3_digits_32").mkdir()  # still training: named as left out, not as missing
    (sweep / "3_digits_32" / "config.yaml").write_text("bits: 32\n")
    main([str(tmp_path)])
    err = capsys.readouterr().err
    # 2 methods x 3 bits, the jobs named by their swept settings: method first, as Hydra numbers them
    missing = f"{sweep} has no directory for job(s) 1 (method=lsh bits=32), 4 (method=itq bits=32) of its sweep"
    assert f"pgh-report: {missing}" in err
    target = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    optuna = {"hydra": {**multirun["hydra"], "sweeper": {"_target_": target, "params": {"method": "choice(lsh,itq)"}}}}
    (tmp_path / "optuna").mkdir()
    (tmp_path / "optuna" / "multirun.yaml").write_text(yaml.safe_dump(optuna, sort_keys=False))
    assert missing_sweep_jobs([tmp_path / "optuna"]) == {}  # another sweeper draws its own jobs
    assert "left out 1 run(s) without metrics.json" in err
    main([str(tmp_path), "--out", str(tmp_path / "report")])  # report.md keeps both notes, and shows its figures
    written = (tmp_path / "report" / "report.md").read_text()
    assert "## Not in this report\n\n- 1 run(s) without metrics.json (training, stopped or failed): " in written
    assert f"- {missing}" in written and "![pr_mnist5k_32.png](pr_mnist5k_32.png)" in written
    assert f"pgh-report: wrote report.md and 2 figure(s) to {tmp_path / 'report'}" in capsys.readouterr().err
    (sweep / "0_digits_16" / "metrics.json").unlink()
    for job in (2, 5):
        (sweep / f"{job}_digits_16" / "metrics.json").unlink()
    with pytest.raises(SystemExit, match="no metrics.json"):  # and when none has finished, named all the same
        main([str(tmp_path)])
    assert "has no directory for job(s) 1 (method=lsh bits=32), 4" in capsys.readouterr().err


def write_codes(run: Path, labels: np.ndarray, flip: float, seed: int = 0) -> None:
    """32-bit database codes and their labels: class c's codes are its own random code with a share
    `flip` of the bits flipped, as pgh-train saves them."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (labels.max() + 1, 32)).astype(bool)
    codes = centres[labels] ^ (rng.random((len(labels), 32)) < flip)
    np.save(run / "database_codes.npy", pack_codes(codes))
    np.save(run / "database_labels.npy", labels)


def test_code_maps_draw_each_rows_codes_by_class(tmp_path, capsys):
    """The paper's *Semantic discovery* figure (the classes' spread in code space, per method) had no
    counterpart: `--code-maps` draws a t-SNE map per table row."""
    from pgh.report.code_maps import class_names, embed

    labels = np.repeat(np.arange(2), 60)
    write_codes(write_run(tmp_path / "runs" / "a", 0.9), labels, flip=0.05)
    write_run(tmp_path / "runs" / "b", 0.4, init_hash="lsh")  # saved no codes: named, not drawn
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--code-maps", "100"])
    err = capsys.readouterr().err
    assert "1 run(s) in no code map: no database_codes.npy and database_labels.npy" in err
    assert (tmp_path / "report" / "code_map_mnist5k_32.png").is_file()
    assert "![code_map_mnist5k_32.png](code_map_mnist5k_32.png)" in (tmp_path / "report" / "report.md").read_text()
    assert class_names(tmp_path / "runs" / "a") == {4: "Coat, long", 6: "Shirt"}  # a name with a comma
    # two random class codes (about 16 bits apart), 5 % of bits flipped: each point's nearest one is of its class
    codes = np.unpackbits(np.load(tmp_path / "runs" / "a" / "database_codes.npy"), axis=1, bitorder="little")
    xy, items = embed(codes.astype(bool), 100)
    assert len(items) == 100 and len(set(items)) == 100
    distances = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.diag(np.full(100, np.inf))
    assert (labels[items][distances.argmin(1)] == labels[items]).all()
    for argv, message in (([], "--code-maps draws figures: give --out <dir> too"), (["--out", "r"], "needs N >= 10")):
        with pytest.raises(SystemExit, match=message):
            main([str(tmp_path / "runs"), *argv, "--code-maps", "5" if argv else "100"])


def test_a_method_or_features_of_ones_own_is_named_in_capitals_as_the_papers():
    from pgh.report.tables import row_name

    assert row_name("mine", "gist") == "MINE+GIST" and row_name("pgh", "myfeatures", "x=1") == "PGH+MYFEATURES (x=1)"
    assert row_name("sph", "vgg16_fc7") == "SpH+VGG"
