"""End-to-end `train(cfg)` runs through the composed Hydra config, one per registered method, and
the bad inputs a user hits first."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import METRIC_KEYS
from hydra.errors import ConfigCompositionException, InstantiationException
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf, open_dict

from pgh.data import Split
from pgh.hashing import HASHERS
from pgh.methods.base import DeepHasher
from pgh.retrieval import evaluate_packed
from pgh.train import CONFIG_DIR, train


@pytest.mark.parametrize("method", sorted(HASHERS))
def test_train_every_method_on_digits(make_cfg, method, capsys):
    cfg = make_cfg("dataset=digits", f"method={method}", "features=pixels", "bits=16", "split.query_per_class=20")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= saved.keys() and saved["method"] == method and saved["bits"] == 16
    assert saved["seed"] == 0 and saved["torch_threads"] == torch.get_num_threads()
    assert saved["map_all"] == pytest.approx(metrics["map_all"])
    # well above chance (10 classes -> ~0.1) for every hasher on digits
    assert 0.2 < metrics["map_all"] <= 1.0
    split = Split.load(out / "split.npz")
    assert split.query.numel() == 200 and metrics["num_database"] == 1797 - 200
    db, q = np.load(out / "database_codes.npy"), np.load(out / "query_codes.npy")
    assert db.shape == (1597, 2) and db.dtype == np.uint8
    # the stored codes reproduce the stored numbers
    from pgh.data import load_digits

    labels = load_digits().labels
    again = evaluate_packed(q, labels[split.query], db, labels[split.database], distance=metrics["distance"])
    assert again.metrics["map_all"] == pytest.approx(metrics["map_all"])
    # and with the labels saved beside them, without the dataset
    saved_labels = np.load(out / "query_labels.npy"), np.load(out / "database_labels.npy")
    assert np.array_equal(saved_labels[0], labels[split.query]) and np.array_equal(
        saved_labels[1], labels[split.database]
    )
    lines = (out / "pr_curve.csv").read_text().splitlines()
    assert lines[0] == "hamming_radius,precision,recall" and len(lines) == 18
    at_n = np.loadtxt(out / "precision_at_n.csv", delimiter=",", skiprows=1)
    assert at_n[:, 0].tolist() == [1, 10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    assert at_n[3, 1] == pytest.approx(metrics["precision_at_100"], abs=1e-6)
    assert (out / "precision_at_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pr_curve.png").stat().st_size > 0 and (out / "csv" / "metrics.csv").exists()
    per_class = np.genfromtxt(out / "per_class.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert per_class["label"].tolist() == list(range(10)) and per_class["class"].tolist() == list(range(10))
    assert (per_class["queries"] == 20).all()
    assert per_class["map_all"].mean() == pytest.approx(metrics["map_all"], abs=1e-6)
    with open(out / "csv" / "metrics.csv") as f:
        logged = next(csv.DictReader(f))  # the loggers also get it, one chart group; metrics.json does not
    assert float(logged["per_class/map_all/3"]) == pytest.approx(per_class["map_all"][3], abs=1e-6)
    assert not any(key.startswith("per_class") for key in saved)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"pgh | digits | {method}+pixels | 16 bits")
    if method == "sph":
        assert "map_all_hamming" in metrics and metrics["distance"] == "spherical"


def test_a_database_stored_class_by_class_is_named_and_random_tie_break_is_recorded(make_cfg, tmp_path, caplog):
    from PIL import Image

    from pgh.train import stored_class_by_class

    assert stored_class_by_class(torch.tensor([0, 0, 1, 1, 2])) and stored_class_by_class(torch.tensor([2, 2, 0]))
    assert not stored_class_by_class(torch.tensor([0, 1, 0, 1]))
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "images" / name / f"{i}.png")
    folder = ("dataset=folder", f"dataset.root={tmp_path / 'images'}", "dataset.image_size=8", "dataset.grayscale=true")
    common = (*folder, "method=lsh", "features=pixels", "bits=8", "split.query_per_class=2", "logger=none")
    with caplog.at_level("WARNING"):
        in_order = train(make_cfg(*common))
    assert "database is stored class by class" in caplog.text and "eval.tie_break=random" in caplog.text
    assert in_order["tie_break"] == "database_order"
    caplog.clear()
    cfg = make_cfg(*common, "eval.tie_break=random")
    with caplog.at_level("WARNING"):
        shuffled = train(cfg)
    assert "class by class" not in caplog.text
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["tie_break"] == "random"
    assert shuffled["precision_radius_2"] == in_order["precision_radius_2"]  # radius metrics know no order


@pytest.mark.parametrize(
    "override, message",
    [
        ("eval.tie_break=Random", "eval.tie_break='Random' is not one of"),
        ("eval.map_k=1e3", "eval.map_k must be a whole number >= 1, got 1000.0"),
        ("eval.radius=17", "eval.radius must be a whole number in 0..16"),
    ],
)
def test_bad_eval_options_stop_before_training(make_cfg, override, message):
    # they used to stop the run only when it was scored, after a deep method had trained and saved
    cfg = make_cfg("dataset=digits", "method=dh", "bits=16", "split.query_per_class=20", "logger=none", override)
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_a_resume_keeps_the_runs_evaluation_and_reads_older_runs_as_database_order(make_cfg):
    from omegaconf import OmegaConf

    from pgh.resume import check_resume_matches_run

    for method in ("pgh", "dh"):
        cfg = make_cfg("dataset=digits", f"method={method}", "bits=16")
        out = Path(cfg.paths.output_dir) / method
        out.mkdir(parents=True)
        older = OmegaConf.to_container(cfg, resolve=True)
        del older["eval"]["tie_break"]  # a run made before eval.tie_break existed
        (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(older)))
        with open_dict(cfg):
            cfg.ckpt_path = "last"
        check_resume_matches_run(cfg, out)  # the same evaluation: resumes
        with open_dict(cfg):
            cfg.dataset.download = True  # where the data sits and may come from: not the run's identity
        check_resume_matches_run(cfg, out)
        with open_dict(cfg):
            del cfg.dataset["download"]
        for key, value in (("tie_break", "random"), ("map_k", 100)):
            changed = cfg.copy()
            changed.eval[key] = value
            if method == "pgh":  # rounds.csv's later rows would be scored otherwise
                with pytest.raises(ValueError, match=f"another run \\(eval.{key}: "):
                    check_resume_matches_run(changed, out)
            else:  # DH scores once, at the end: any evaluation may follow
                check_resume_matches_run(changed, out)
        other_radius = cfg.copy()
        other_radius.eval.radius = 0  # no part of rounds.csv
        check_resume_matches_run(other_radius, out)


def test_train_is_deterministic_and_split_is_shared(make_cfg):
    a = train(make_cfg("dataset=digits", "method=itq", "bits=16", "split.query_per_class=20"))
    cfg = make_cfg("dataset=digits", "method=lsh", "bits=16", "split.query_per_class=20")
    b = train(cfg)
    c = train(make_cfg("dataset=digits", "method=itq", "bits=16", "split.query_per_class=20"))
    assert a["map_all"] == c["map_all"]
    assert a["num_queries"] == b["num_queries"] == 200


def test_seed_also_seeds_the_distributed_sampler_of_a_ddp_run(make_cfg, monkeypatch):
    """Lightning gives a DDP run a DistributedSampler seeded from PL_GLOBAL_SEED (0 when unset): the run's
    `seed` must set it, or every seed of a DDP sweep would shuffle the same way."""
    from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
    from torch.utils.data import DataLoader

    import pgh.train as pgh_train

    seen = {}

    def fit_shallow(*args, **kwargs):  # the sampler Lightning would build in the run
        loader = DataLoader(list(range(10)), shuffle=True)
        seen["seed"] = _get_distributed_sampler(loader, shuffle=True, overfit_batches=0, num_replicas=2, rank=0).seed
        return original(*args, **kwargs)

    original = pgh_train.fit_shallow
    monkeypatch.setattr(pgh_train, "fit_shallow", fit_shallow)
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # restored after the test
    train(make_cfg("dataset=digits", "method=lsh", "bits=16", "split.query_per_class=20", "seed=7"))
    assert seen["seed"] == 7 and os.environ["PL_GLOBAL_SEED"] == "0"  # the caller's again afterwards


def test_gist_run_uses_the_feature_cache(make_cfg):
    cfg = make_cfg("dataset=digits", "method=itq", "features=gist", "bits=32", "split.query_per_class=20")
    first = train(cfg)
    cache_files = list(Path(cfg.paths.cache_dir).glob("digits-*.pt"))
    assert len(cache_files) == 1 and first["features"] == "gist"
    second = train(cfg)
    assert second["feature_seconds"] < first["feature_seconds"]
    assert second["map_all"] == first["map_all"]
    # a different feature config is a different cache entry
    train(
        make_cfg(
            "dataset=digits",
            "method=itq",
            "features=gist",
            "features.number_blocks=2",
            "bits=32",
            "split.query_per_class=20",
        )
    )
    assert len(list(Path(cfg.paths.cache_dir).glob("digits-*.pt"))) == 2


@pytest.mark.parametrize("logger", ["tensorboard", "none"])
def test_other_loggers(make_cfg, logger):
    cfg = make_cfg("dataset=digits", "method=lsh", "bits=16", f"logger={logger}", "split.query_per_class=20")
    assert train(cfg)["map_all"] > 0
    if logger == "tensorboard":
        assert list(Path(cfg.paths.output_dir, "tensorboard").rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_wandb_logger_offline(make_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # no name given: the job names its run (the name was a ${hydra:...} interpolation, which train(cfg)
    # from Python could not resolve)
    cfg = make_cfg("dataset=digits", "method=lsh", "bits=16", "logger=wandb", "split.query_per_class=20")
    train(cfg)
    assert list(Path(cfg.paths.output_dir, "wandb").glob("offline-run-*"))


def test_the_wandb_run_is_named_by_the_job_and_takes_an_id(make_cfg):
    """`logger.wandb.id=...` (the README's way to pick the run a resume continues) was not a key of the
    group, so Hydra refused it; a name of the user's wins over the job's."""
    from pgh.logging_utils import instantiate_loggers

    (logger,) = instantiate_loggers(
        make_cfg("logger=wandb", "logger.wandb.id=abc").logger, run_name="digits-lsh-gist-16"
    )
    assert logger._wandb_init["name"] == "digits-lsh-gist-16" and logger._wandb_init["id"] == "abc"
    (logger,) = instantiate_loggers(make_cfg("logger=wandb", "logger.wandb.name=mine").logger, run_name="job")
    assert logger._wandb_init["name"] == "mine"
    assert "anonymous" not in logger._wandb_init  # Lightning's None made W&B warn at every run


@pytest.mark.slow
def test_each_job_of_a_process_gets_its_own_wandb_run(make_cfg, monkeypatch, tmp_path):
    """Two jobs in one process (a multirun on the basic launcher): the second does not log into the
    first's W&B run, which Lightning leaves open."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    runs = []
    for job in ("a", "b"):
        cfg = make_cfg("dataset=digits", "method=lsh", "bits=16", "logger=wandb", f"logger.wandb.name={job}")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / job)
        train(cfg)
        runs += list(Path(cfg.paths.output_dir, "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and runs[0].parent != runs[1].parent


def test_a_sweeps_wandb_runs_are_told_apart_and_described(tmp_path):
    """A sweep's jobs shared one W&B name (`digits-itq-pixels-16` for every seed); the config carried
    the method only as a class path; settings such as bits were charted as metrics of one point."""
    from conftest import run_python

    recorder = ["logger=wandb", "logger.wandb._target_=conftest.RecordingWandbLogger"]
    sweep = ["-m", "pgh.train", "-m", "dataset=digits", "method=itq", "features=pixels", "bits=16", "seed=0,1"]
    run_python(*sweep, *recorder, tmp_path=tmp_path, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    jobs = sorted((tmp_path / "logs" / "train" / "multiruns").glob("*/*_digits_itq_pixels_16_seed=*"))
    assert [job.name for job in jobs] == ["0_digits_itq_pixels_16_seed=0", "1_digits_itq_pixels_16_seed=1"]
    for number, job in enumerate(jobs):
        recorded = [json.loads(line) for line in (job / "recorded.jsonl").read_text().splitlines()]
        assert recorded[0]["init"]["name"] == f"digits-itq-pixels-16-job{number}"
        (hyperparameters,) = [r["hyperparameters"] for r in recorded if "hyperparameters" in r]
        assert hyperparameters["run"] == {
            "dataset": "digits", "method": "itq", "features": "pixels", "bits": 16, "job": number,
            "overrides": f"dataset=digits method=itq features=pixels bits=16 seed={number} {' '.join(recorder)}",
        }  # fmt: skip
        (final,) = [r["metrics"] for r in recorded if "map_all" in r.get("metrics", {})]  # (figures log too)
        assert not {"bits", "seed", "num_train", "dataset"} & set(final)
        (summary,) = [r["summary"] for r in recorded if "summary" in r]  # the settings are in the run's summary
        assert summary["bits"] == 16 and summary["dataset"] == "digits" and summary["seed"] == number


def test_a_wandb_setting_neither_lightning_nor_wandb_takes_is_refused_before_any_work(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("dataset=digits", "method=itq", "logger=wandb", "+logger.wandb.nmae=mine")
    with pytest.raises(ValueError, match=r"`logger.wandb.nmae` is not a setting of .* \(did you mean `name`\?\)"):
        train(cfg)  # was wandb.init's TypeError once the run had started
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "overrides, offline",
    [
        ([], False),
        (["+logger.wandb.offline=true"], True),
        (["+logger.wandb.mode=offline"], True),
        (["+logger.wandb.mode=disabled"], True),
        (["+logger.wandb.mode=online"], False),
        (["+logger.wandb.settings={mode: dryrun}"], True),
    ],
)
def test_a_wandb_logger_set_offline_in_its_own_settings_needs_no_login(make_cfg, overrides, offline):
    """`mode=offline` (a key wandb.init takes) was refused for want of an API key; only offline=true passed."""
    from pgh.logging_utils import logs_offline

    assert logs_offline(make_cfg("logger=wandb", *overrides).logger.wandb) is offline


def test_wandb_charts_the_measurements_and_keeps_the_rest_in_the_summary():
    from pgh.logging_utils import split_for_wandb

    metrics = {"map_all": 0.5, "db_distinct_codes": 12, "bits": 16, "seed": 0, "log_step": 8, "dataset": "digits"}
    metrics |= {"stopped_mid_epoch": False, "image_shape": [1, 8, 8], "init_map_all": 0.4}
    charted, described = split_for_wandb(metrics)
    assert charted == {"map_all": 0.5, "db_distinct_codes": 12.0, "init_map_all": 0.4}
    assert described == {
        "bits": 16, "seed": 0, "log_step": 8, "dataset": "digits", "stopped_mid_epoch": False, "image_shape": [1, 8, 8]
    }  # fmt: skip


@pytest.mark.slow
def test_a_failed_job_closes_its_wandb_run(make_cfg, monkeypatch, tmp_path):
    """A job that failed after its W&B run opened left the run open, and the next job of the process
    (a multirun on the basic launcher) logged into it."""
    import wandb

    import pgh.train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    real_save_npy = pgh.train.save_npy

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    for job in ("failed", "next"):
        cfg = make_cfg("dataset=digits", "method=itq", "bits=16", "logger=wandb", f"logger.wandb.name={job}")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / job)
        monkeypatch.setattr(pgh.train, "save_npy", full_disk if job == "failed" else real_save_npy)
        if job == "failed":
            with pytest.raises(OSError, match="No space left"):
                train(cfg)  # writing the codes, after the W&B run started
            assert wandb.run is None
        else:
            train(cfg)
    runs = [list((tmp_path / job / "wandb").glob("offline-run-*")) for job in ("failed", "next")]
    assert len(runs[0]) == 1 and len(runs[1]) == 1


# ------------------------------------------------------------------------------- bad inputs


def test_unknown_dataset_lists_the_options(make_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("dataset=imagenet")
    assert "dataset/imagenet" in str(err.value)


@pytest.mark.parametrize("bits", [12, 0, -8])
def test_bits_not_a_multiple_of_8(make_cfg, bits):
    with pytest.raises(ValueError, match="multiple of 8"):
        train(make_cfg("dataset=digits", f"bits={bits}"))


def test_missing_dataset_names_the_command(make_cfg, tmp_path):
    cfg = make_cfg("dataset=fashion_mnist", f"dataset.root={tmp_path}/none")
    with pytest.raises(InstantiationException, match="make data"):
        train(cfg)


def test_more_bits_than_feature_dims(make_cfg):
    # digits pixels are 64-d: ITQ's PCA cannot give 72 bits
    with pytest.raises(ValueError, match="feature dimensions"):
        train(make_cfg("dataset=digits", "method=itq", "bits=72"))


@pytest.mark.parametrize("method", ["itq", "sh"])
def test_fewer_training_images_than_bits(make_cfg, method):
    # 10 images span 9 directions: a 32-dimensional PCA would be mostly arbitrary
    with pytest.raises(ValueError, match=r"needs at least 33 training samples, got 10.*split.train_size"):
        train(make_cfg("dataset=digits", f"method={method}", "bits=32", "split.train_size=10"))


def compose_sweep(name: str, *overrides: str):
    """The primary config sweeps/<name>.yaml on top of conf/, with its hydra node (sweeper, launcher)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pgh.train import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(CONFIG_DIR).parent / "sweeps"), version_base="1.3"):
        cfg = compose(name, overrides=[f"hydra.searchpath=[file://{CONFIG_DIR}]", *overrides], return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def test_a_sweep_jobs_directory_name_shows_the_settings_it_sweeps(tmp_path):
    """pgh_jitter's nine jobs were all `<num>_mnist5k_pgh_gist_32`: which shift and rotation a job
    ran was only in its .hydra/overrides.yaml."""
    from omegaconf import OmegaConf

    from pgh.sweep_jobs import settings_in_name

    cfg = compose_sweep("pgh_jitter", f"hydra.sweep.dir={tmp_path}")
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["bits=16,32"]  # `pgh-train -m -cd sweeps -cn pgh_jitter bits=16,32`
        cfg.hydra.runtime.choices.update(dataset="mnist5k", method="pgh", features="gist")
    OmegaConf.save(cfg, tmp_path / "multirun.yaml")  # as Hydra's sweeper writes it before the jobs start
    names = []
    for number, bits in ((0, 16), (2, 16), (17, 32)):
        with open_dict(cfg):
            cfg.hydra.job.num, cfg.bits = number, bits
        names.append(cfg.hydra.sweep.subdir)
    # the swept bits are in every name already; shift, then rotation, then bits, as Hydra numbers the jobs
    assert names == [
        "0_mnist5k_pgh_gist_16_augment_shift=0,augment_degrees=0",
        "2_mnist5k_pgh_gist_16_augment_shift=0,augment_degrees=10",
        "17_mnist5k_pgh_gist_32_augment_shift=3,augment_degrees=15",
    ]
    assert settings_in_name(["+a.lr=1", "b.lr=2", "seed=3", "dataset.root=/data/x"]) == (
        "_a.lr=1,b.lr=2,seed=3,root=_data_x"  # a key named by its last part where that names it alone
    )
    assert len(settings_in_name([f"key{i}=" + "v" * 20 for i in range(9)])) <= 101  # the rest: overrides.yaml
    assert settings_in_name(["method=lsh", "bits=16"]) == ""


def test_sweep_and_slurm_launcher_compose():
    cfg = compose_sweep("baselines", "hydra/launcher=slurm")
    assert cfg.hydra.sweeper.params.method == "lsh,itq,sh,sph"
    assert cfg.task_name == "baselines"
    assert cfg.hydra.launcher._target_ == "hydra_plugins.pgh_submitit.ResumingSlurmLauncher"
    assert cfg.hydra.launcher.max_num_timeout > 0  # a job at its time limit is requeued (and resumes)
    assert compose_sweep("baselines", "hydra/launcher=local").hydra.launcher._target_.endswith("ResumingLocalLauncher")


def test_a_requeued_job_reruns_with_its_overrides_and_ckpt_path_last():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    from hydra_plugins.pgh_submitit import ResumingLocalLauncher, ResumingSlurmLauncher, overrides_that_resume

    # by name: Hydra's scan of the hydra_plugins namespace may import the module a second time
    names = {f"{c.__module__}.{c.__qualname__}" for c in Plugins.instance().discover(Launcher)}
    assert {f"{c.__module__}.{c.__qualname__}" for c in (ResumingSlurmLauncher, ResumingLocalLauncher)} <= names
    given = ["method=pgh", "ckpt_path=/a.ckpt"]
    assert overrides_that_resume(given) == [*given, "requeued=true"]
    assert overrides_that_resume(["bits=32", "requeued=false"]) == ["bits=32", "requeued=true"]
    delayed = ResumingSlurmLauncher().checkpoint(["bits=16"], "hydra.sweep.dir", 3, "job_id_for_3", {})
    assert delayed.args == (["bits=16", "requeued=true"], "hydra.sweep.dir", 3, "job_id_for_3", {})


SWEEPS = sorted(p.stem for p in (Path(__file__).parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_and_sweeps_existing_keys(sweep):
    """Each sweep composes, and every swept key is a key of the composed config (a misspelt
    `method.module.*` would otherwise only fail when the job runs)."""
    from omegaconf import OmegaConf

    cfg = compose_sweep(sweep)
    params = cfg.hydra.sweeper.params
    assert params and cfg.task_name == sweep
    for key in params:
        if key.startswith(("+", "hydra")) or key in ("method", "features", "dataset", "trainer"):
            continue
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", f"{sweep} sweeps unknown key {key}"


def test_fresh_run_refuses_a_directory_with_checkpoints(make_cfg):
    cfg = make_cfg("dataset=digits", "method=dh")
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"an earlier run")
    with pytest.raises(FileExistsError, match="resume it with ckpt_path=last"):
        train(cfg)
    with pytest.raises(FileExistsError, match="itq, a shallow hasher, cannot resume or share it; run it in a new"):
        train(make_cfg("dataset=digits", "method=itq"))
    assert ckpt.read_bytes() == b"an earlier run"


def test_resuming_a_run_directory_without_checkpoints_names_the_problem(make_cfg):
    """ckpt_path=last where there is nothing to resume (a mistyped hydra.run.dir) would train from
    scratch; a single run stops instead (a sweep's job that never started does train from scratch:
    test_pgh's sweep rerun)."""
    cfg = make_cfg("dataset=digits", "method=dh", "ckpt_path=last")
    with pytest.raises(
        FileNotFoundError, match=r"ckpt_path=last but .*checkpoints holds no checkpoint: set hydra.run.dir"
    ):
        train(cfg)
    assert not Path(cfg.paths.output_dir, "metrics.json").exists()
    assert (
        train(make_cfg("dataset=digits", "method=itq", "ckpt_path=last"))["map_all"] > 0
    )  # shallow: nothing to resume


def test_pgh_train_without_the_repository_configs_says_how_to_install(monkeypatch, tmp_path):
    import pgh.train

    monkeypatch.setattr(pgh.train, "CONFIG_DIR", str(tmp_path / "site-packages" / "conf"))
    with pytest.raises(SystemExit, match=r"no configs at .*site-packages/conf.*make install"):
        pgh.train.main()


@pytest.mark.parametrize(
    "method,length",
    [("pgh", r"method.rounds=4 x method.progressive.epochs_per_round=15"), ("dh", r"method.max_epochs=30")],
)
def test_trainer_max_epochs_names_the_methods_own_setting(make_cfg, method, length):
    """A deep method sets the Trainer's max_epochs itself; trainer.max_epochs used to be silently ignored."""
    cfg = make_cfg("dataset=digits", f"method={method}", "trainer.max_epochs=1")
    with pytest.raises(ValueError, match=rf"trainer.max_epochs=1 would be ignored: a deep method's length is {length}"):
        train(cfg)


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    """Two seeds launched together: with whole seconds in the run directory's name both wrote into one
    directory, and the first one's metrics.json, config.yaml and hasher.pt were overwritten."""
    import os
    import subprocess
    import sys

    from conftest import run_python

    run_python("-c", "import pgh.train", tmp_path=tmp_path)  # compiled once, so both start alike
    env = {**os.environ, "PGH_ROOT": str(tmp_path), "PGH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = ["-m", "pgh.train", "dataset=digits", "method=lsh", "bits=16", "split.query_per_class=20"]
    jobs = [
        subprocess.Popen([sys.executable, *args, f"seed={s}"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL)
        for s in (0, 1)
    ]
    assert [job.wait(timeout=300) for job in jobs] == [0, 0]
    runs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2 and {json.loads((r / "metrics.json").read_text())["seed"] for r in runs} == {0, 1}


def test_train_from_python_without_a_run_directory_says_which_override_to_add(make_cfg, caplog):
    """Outside pgh-train, ${hydra:runtime.output_dir} failed as an interpolation error; and a shallow
    method given ckpt_path ignored it without a word."""
    import logging

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["dataset=digits", "method=lsh", "bits=16"])
    with pytest.raises(ValueError, match=r"compose with the override paths.output_dir=<a directory>"):
        train(cfg)
    with caplog.at_level(logging.WARNING, logger="pgh.train"):
        train(make_cfg("dataset=digits", "method=lsh", "bits=16", "split.query_per_class=20", "ckpt_path=last"))
    assert "ckpt_path=last: lsh is a shallow hasher, which has no checkpoint; it is fitted afresh" in caplog.text


def test_lightning_precision_aliases_are_accepted(make_cfg):
    """Lightning's short names (bf16, 32; 16 needs a GPU) worked before the precision check existed."""
    from pgh.config_checks import check_trainer

    for precision in ("bf16", "32", "32-true", "bf16-mixed", "null"):
        cfg = make_cfg("method=pgh", "trainer=cpu", f"trainer.precision={precision}")
        check_trainer(cfg.trainer, cfg.method)


def test_float16_is_refused_where_one_backward_feeds_two_steps_and_allowed_elsewhere(make_cfg):
    """PGH (G and H) and BGAN (E and G) step two optimizers on one backward pass; Lightning's float16
    loss scaler updates its scale after each step, so the second one's gradients would be unscaled by
    the wrong factor. Refused before the GPU check, so that a GPU machine gets the same message."""
    from pgh.config_checks import check_trainer

    for method in ("pgh", "bgan"):
        cfg = make_cfg(f"method={method}", "trainer=cpu", "trainer.precision=16-mixed")
        with pytest.raises(ValueError, match=rf"precision=16-mixed does not suit {method.upper()}: .*bf16-mixed"):
            check_trainer(cfg.trainer, cfg.method)
    cfg = make_cfg("method=dh", "trainer=cpu", "trainer.precision=16")
    with pytest.raises(ValueError, match="16-mixed needs a CUDA device"):  # DH may use it, on a GPU
        check_trainer(cfg.trainer, cfg.method)


def test_a_gan_warmup_as_long_as_a_round_is_refused(make_cfg):
    """H does not train during the GAN warm-up, so a refresh at its end would replace the initial
    codes by an untrained H's (half the bits flipped, at chance)."""
    from pgh.config_checks import check_trainer

    cfg = make_cfg("method=pgh", "trainer=cpu", "method.module.gan_warmup_epochs=15")
    with pytest.raises(ValueError, match=r"gan_warmup_epochs=15 covers the first round \(.*epochs_per_round=15\)"):
        check_trainer(cfg.trainer, cfg.method)
    cfg = make_cfg("method=pgh", "trainer=cpu", "method.module.gan_warmup_epochs=14")
    check_trainer(cfg.trainer, cfg.method)


def test_a_shallow_method_given_a_checkpoint_ignores_it_with_a_warning(make_cfg, tmp_path, caplog):
    """It warned "fitted afresh", then compared the command with the deep run the file belonged to."""
    import logging

    deep = make_cfg("dataset=digits", "method=dh", "bits=16", "split.query_per_class=20", "method.max_epochs=1")
    with open_dict(deep):
        deep.paths.output_dir = str(tmp_path / "deep")
    train(deep)
    ckpt = f"ckpt_path={tmp_path / 'deep' / 'checkpoints' / 'last.ckpt'}"
    with caplog.at_level(logging.WARNING, logger="pgh.train"):
        metrics = train(make_cfg("dataset=digits", "method=itq", "bits=16", "split.query_per_class=20", ckpt))
    assert metrics["method"] == "itq" and "itq is a shallow hasher, which has no checkpoint" in caplog.text


def test_a_resume_on_data_that_changed_stops(make_cfg, tmp_path):
    """Images added to a folder dataset since the run began: the resume continued on another split."""
    from PIL import Image

    root = tmp_path / "images"
    for label in range(3):
        (root / str(label)).mkdir(parents=True)
        for i in range(30):
            Image.new("L", (8, 8), color=label * 80 + i).save(root / str(label) / f"{i}.png")
    args = ["dataset=folder", f"dataset.root={root}", "dataset.image_size=8", "dataset.grayscale=true"]
    args += ["method=dh", "bits=16", "split.query_per_class=5", "method.max_epochs=1", "logger=none"]
    train(make_cfg(*args))
    Image.new("L", (8, 8), color=7).save(root / "2" / "new.png")
    with pytest.raises(
        ValueError, match=r"another split than the run .* \(query 15 -> 15, database 75 -> 76, .*Restore it"
    ):
        train(make_cfg(*args, "method.max_epochs=2", "ckpt_path=last"))


def test_eval_defaults_are_the_configs(make_cfg):
    # what a run's config lacks reads as EVAL_DEFAULTS: they must not drift from conf/config.yaml
    from pgh.retrieval.metrics import EVAL_DEFAULTS

    assert dict(make_cfg().eval) == EVAL_DEFAULTS


def test_a_refused_command_leaves_no_run_directory(tmp_path):
    """Hydra makes the run directory (.hydra/, the job's log) before train()'s checks: a refused command,
    a missing dataset included, left an empty run behind in logs/."""
    from conftest import run_python

    for args, message in (
        (["dataset=digits", "bits=12"], "multiple of 8"),
        (["dataset=fashion_mnist", f"dataset.root={tmp_path}/none"], "make data"),
        # refused after the run's start files (config.yaml, split.npz, csv/hparams.yaml) and the features
        (["dataset=digits", "method=itq", "features=pixels", "bits=128", "logger=csv"], "at least 128 feature"),
    ):
        done = run_python("-m", "pgh.train", *args, f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path, check=False)
        assert done.returncode != 0 and message in done.stderr
        assert not (tmp_path / "run").exists()
        # the message alone, not Hydra's traceback around it
        assert "pgh-train: " in done.stderr and "Traceback" not in done.stderr and "HYDRA_FULL_ERROR=1" in done.stderr
    # an error once training has begun may be a bug: its traceback stays
    kill = [
        "+callbacks.kill._target_=conftest.KillAtEpochStart",
        "+callbacks.kill.epoch=1",
        "+callbacks.kill.kind=ValueError",
    ]
    args = ["dataset=digits", "method=dh", "split.query_per_class=20", "method.max_epochs=2", *kill]
    done = run_python("-m", "pgh.train", *args, f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path, check=False)
    assert (
        done.returncode != 0
        and "Traceback" in done.stderr
        and "ValueError: killed at the start of epoch 1" in done.stderr
    )
    # nor Lightning's notices that ask nothing of the user: its cloud-logger tip, its own pytree deprecation
    assert "litlogger" not in done.stdout + done.stderr and "LeafSpec" not in done.stderr
    assert "smaller than the logging interval" not in done.stderr  # digits' 20-query split: 4 DH batches


def test_train_takes_back_the_start_files_it_made_and_nothing_else(make_cfg, tmp_path):
    """From Python too: a job refused after its start files leaves no run directory; one whose
    directory held a file of the user's keeps that file, and removes only what it made."""
    refused = ("dataset=digits", "method=itq", "features=pixels", "bits=128", "logger=csv")
    with pytest.raises(ValueError, match="128 bits need at least 128 feature dimensions"):
        train(make_cfg(*refused))
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="128 bits need at least 128 feature dimensions"):
        train(make_cfg(*refused))
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]
    (tmp_path / "run" / "notes.txt").unlink()
    (tmp_path / "run" / "config.yaml").write_text("an earlier run's")  # rewritten by the job, then put back
    with pytest.raises(ValueError, match="128 bits need at least 128 feature dimensions"):
        train(make_cfg(*refused))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]
    assert (tmp_path / "run" / "config.yaml").read_text() == "an earlier run's"
    with pytest.raises(ValueError, match="seed='abc' must be a whole number"):
        train(make_cfg("dataset=digits", "seed=abc"))
    with pytest.raises(ValueError, match=r"seed=4294967296 must be a whole number in 0..2\*\*32 - 1"):
        train(make_cfg("dataset=digits", "seed=4294967296"))  # beyond NumPy's and Lightning's seeds
    (tmp_path / "run" / "config.yaml").unlink()
    with pytest.raises(ValueError, match="128 bits need at least 128 feature dimensions"):
        train(make_cfg(*refused[:-1], "logger=tensorboard"))  # its event file and hparams go too
    assert not any((tmp_path / "run").iterdir())
    # a deep method that fails once training has begun keeps everything: its logged losses tell why
    kill = ["+callbacks.kill._target_=conftest.KillAtEpochStart", "+callbacks.kill.epoch=1"]
    with pytest.raises(RuntimeError, match="killed at the start of epoch 1"):
        train(make_cfg("dataset=digits", "method=dh", "split.query_per_class=20", "method.max_epochs=3", *kill))
    assert {"config.yaml", "split.npz", "csv"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert (tmp_path / "run" / "csv" / "metrics.csv").exists()


def test_a_refused_resume_leaves_the_runs_files_as_they_were(make_cfg, tmp_path):
    """The resume's length check ran after the loggers had rewritten csv/hparams.yaml with the refused
    command's settings; a shallow method pointed at a deep run's directory was told to resume it."""
    small = ("dataset=digits", "method=dh", "bits=16", "split.query_per_class=20", "logger=csv")
    train(make_cfg(*small, "method.max_epochs=2"))
    files = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="has begun 2 epochs, more than this run's method.max_epochs=1"):
        train(make_cfg(*small, "method.max_epochs=1", "ckpt_path=last"))
    with pytest.raises(FileExistsError, match="holds a deep run's checkpoints: itq, a shallow hasher, cannot resume"):
        train(make_cfg("dataset=digits", "method=itq", "bits=16", "ckpt_path=last"))
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == files


def test_a_command_refused_in_a_finished_runs_directory_leaves_its_files_as_they_were(make_cfg, tmp_path):
    """A refused command in the directory of a finished run (a typo in hydra.run.dir, a sweep rerun
    with a new setting) rewrote that run's config.yaml and split.npz: reports then listed it with the
    refused settings, and pgh-index coded with them."""
    train(make_cfg("dataset=digits", "method=itq", "bits=16", "split.query_per_class=20"))
    files = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="72 bits need at least 72 feature dimensions"):
        train(make_cfg("dataset=digits", "method=itq", "bits=72", "split.query_per_class=50"))
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == files


def test_a_shallow_job_failing_while_writing_keeps_the_config_of_what_it_wrote(make_cfg, tmp_path, monkeypatch):
    """Refused settings put back an earlier run's files, but a job that fitted its hasher and failed
    writing its results (a full disk) keeps its own config.yaml beside its hasher.pt: pgh-index
    would read the earlier config beside the new hasher."""
    import pgh.train

    train(make_cfg("dataset=digits", "method=itq", "bits=16", "split.query_per_class=20"))

    def full_disk(path, array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pgh.train, "save_npy", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train(make_cfg("dataset=digits", "method=lsh", "bits=32", "split.query_per_class=20"))
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "pgh.hashing.LSH" in config and "bits: 32" in config


def test_metrics_json_is_written_last(make_cfg, tmp_path, monkeypatch):
    """metrics.json marks a run finished for pgh-report and pgh-index: a job that failed while writing
    its curves or codes was listed as a finished run without them."""
    import pgh.train

    real_save_npy = pgh.train.save_npy

    def fail_on_codes(path, array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pgh.train, "save_npy", fail_on_codes)
    with pytest.raises(OSError, match="No space left"):
        train(make_cfg("dataset=digits", "method=lsh", "bits=16", "split.query_per_class=20"))
    assert (tmp_path / "run" / "pr_curve.csv").exists() and not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.setattr(pgh.train, "save_npy", real_save_npy)


def test_a_refused_command_keeps_a_directory_holding_more_than_hydra_files(tmp_path):
    """Only what Hydra writes as a job starts is taken back: a refused resume of a run, or a run
    directory the user pointed at one of their own folders, keeps everything."""
    from conftest import run_python

    from pgh.run_dir import remove_if_only_hydra_files

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"earlier run")
    args = ["-m", "pgh.train", "dataset=digits", "method=pgh", f"hydra.run.dir={run}"]
    done = run_python(*args, tmp_path=tmp_path, check=False)
    assert done.returncode != 0 and "holds checkpoints of an earlier run" in done.stderr
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"earlier run" and (run / ".hydra").is_dir()

    # results written elsewhere (paths.output_dir): Hydra's directory is the run's log, kept
    args = ["-m", "pgh.train", "dataset=digits", "bits=12", f"hydra.run.dir={tmp_path}/hydra"]
    done = run_python(*args, f"paths.output_dir={tmp_path}/out", tmp_path=tmp_path, check=False)
    assert done.returncode != 0 and "multiple of 8" in done.stderr and (tmp_path / "hydra" / ".hydra").is_dir()

    mine = tmp_path / "mine"
    (mine / ".hydra").mkdir(parents=True)
    (mine / ".hydra" / "notes.txt").write_text("not Hydra's")
    assert not remove_if_only_hydra_files(mine, "train.log") and (mine / ".hydra" / "notes.txt").exists()
    (mine / ".hydra" / "notes.txt").unlink()
    (mine / "other.log").write_text("")
    assert not remove_if_only_hydra_files(mine, "train.log")
    (mine / "other.log").unlink()
    (mine / "train.log").write_text("another job's")  # no handler of this process writes it
    assert not remove_if_only_hydra_files(mine, "train.log") and (mine / "train.log").exists()
    (mine / "train.log").unlink()
    assert remove_if_only_hydra_files(mine, "train.log") and not mine.exists()


def test_the_refusal_cleanup_takes_this_process_log_only(tmp_path):
    """The job's log goes with the directory only while this process is its one writer."""
    import logging

    from pgh.run_dir import remove_if_only_hydra_files

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("{}")
    handler = logging.FileHandler(run / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        logging.getLogger().warning("refused")
        with open(run / "train.log", "a") as other:  # a second process appending
            other.write("another job\n")
        assert not remove_if_only_hydra_files(run, "train.log") and handler in logging.getLogger().handlers
        (run / "train.log").write_text("")
        handler.stream.seek(0)
        assert remove_if_only_hydra_files(run, "train.log") and not run.exists()
        assert handler not in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_the_final_metrics_are_logged_at_the_runs_last_step_once(make_cfg, tmp_path):
    """The CSV logger put the final row (mAP and timings) at step 0, before every training row; a
    finished run resumed (a sweep rerun with ckpt_path=last) logged it a second time."""
    import csv

    def final_rows() -> list[dict[str, str]]:
        with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert max(int(row["step"]) for row in rows) == metrics["global_step"]
        return [row for row in rows if row.get("map_all")]

    small = ("dataset=digits", "method=dh", "split.query_per_class=20")
    metrics = train(make_cfg(*small, "method.max_epochs=2"))
    (final,) = final_rows()
    assert int(final["step"]) == metrics["global_step"] > 0
    assert train(make_cfg(*small, "method.max_epochs=2", "ckpt_path=last"))["map_all"] == metrics["map_all"]
    assert len(final_rows()) == 1  # the resume trained nothing: nothing new to log
    metrics = train(make_cfg(*small, "method.max_epochs=3", "ckpt_path=last"))
    assert [int(row["step"]) for row in final_rows()] == [int(final["step"]), metrics["global_step"]]


def test_the_final_figures_reach_tensorboard_at_the_last_step_once(make_cfg, tmp_path):
    """The PR and precision@N figures went to TensorBoard at step 0, and again on every resume of a
    finished run; now at the run's last step, once per step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def figure_steps() -> dict[str, list[int]]:
        events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
        events.Reload()
        return {name: [image.step for image in events.Images(name)] for name in ("pr_curve", "precision_at_n")}

    small = ("dataset=digits", "method=dh", "split.query_per_class=20", "logger=tensorboard")
    first = train(make_cfg(*small, "method.max_epochs=2"))["global_step"]
    assert figure_steps() == {"pr_curve": [first], "precision_at_n": [first]} and first > 0
    train(make_cfg(*small, "method.max_epochs=2", "ckpt_path=last"))  # trains nothing: logs nothing
    assert figure_steps() == {"pr_curve": [first], "precision_at_n": [first]}
    second = train(make_cfg(*small, "method.max_epochs=3", "ckpt_path=last"))["global_step"]
    assert figure_steps() == {"pr_curve": [first, second], "precision_at_n": [first, second]}


def test_a_misspelt_experiment_is_refused_not_ignored(make_cfg):
    """`experiment` was an optional group: experiment=pgh_mnist5kk trained the defaults (ITQ on pixels)."""
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=r"Could not find 'experiment/pgh_mnist5kk'"):
        make_cfg("experiment=pgh_mnist5kk")
    assert make_cfg("experiment=pgh_mnist5k").method.module._target_ == "pgh.methods.PGH"


@pytest.mark.parametrize(
    "override", ["save_codes=no", "features.per_channel=maybe", "trainer.enable_progress_bar=off", "requeued=yes"]
)
def test_switches_take_true_or_false_only(make_cfg, tmp_path, override):
    """save_codes=no was the string 'no', which Python reads as true: the codes were saved."""
    key, value = override.split("=")
    extra = ["features=gist"] if key.startswith("features.") else []
    with pytest.raises(ValueError, match=f"{key}='{value}' must be true or false"):
        train(make_cfg("dataset=digits", "bits=16", *extra, override))
    assert not (tmp_path / "run").exists()


def test_a_damaged_checkpoint_is_named_with_the_fix(make_cfg, tmp_path):
    """A checkpoint cut short or emptied: the file and what to do, not torch's zip-reader error."""
    from PIL import Image

    from pgh.retrieval.cli import main as index_main

    small = ("dataset=digits", "method=dh", "bits=16", "split.query_per_class=20", "method.max_epochs=1")
    train(make_cfg(*small))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    whole = checkpoint.read_bytes()
    for damaged in (whole[: len(whole) // 2], b""):
        checkpoint.write_bytes(damaged)
        with pytest.raises(ValueError, match=r"last.ckpt is not a checkpoint torch can read .* train the run again"):
            train(make_cfg(*small, "method.max_epochs=2", "ckpt_path=last"))
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / "images" / "a.png")
        with pytest.raises(SystemExit, match=r"last.ckpt is not a checkpoint torch can read"):
            index_main(["build", str(tmp_path / "run"), str(tmp_path / "images"), "--out", str(tmp_path / "index")])


def test_a_folder_dataset_without_its_root_says_which_key_to_give(make_cfg, tmp_path):
    """dataset=folder alone ended in OmegaConf's MissingMandatoryValue, raised inside Hydra's instantiate."""
    with pytest.raises(ValueError, match=r"dataset.root must be given on the command line, e.g. dataset.root=/path"):
        train(make_cfg("dataset=folder"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_wandb_without_an_api_key_names_the_ways_out(tmp_path, monkeypatch):
    """logger=wandb online without a key: wandb's UsageError from inside Lightning before."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home"))
    from conftest import run_python

    # in a process of its own: wandb keeps an earlier test's offline settings for the whole process
    args = ["-m", "pgh.train", "dataset=digits", "bits=16", "logger=wandb", f"hydra.run.dir={tmp_path}/run"]
    done = run_python(*args, tmp_path=tmp_path, check=False)
    assert done.returncode != 0
    assert "W&B has no API key here: log in with `wandb login`, or run offline with WANDB_MODE=offline" in done.stderr
    assert not (tmp_path / "run").exists()
    # before any work, and before W&B could ask for a key (in a terminal it waited for an answer)
    assert not (tmp_path / "cache").exists() and "Enter your choice" not in done.stdout
    monkeypatch.setenv("WANDB_MODE", "disabled")  # logs nowhere: needs no key
    done = run_python(*args, tmp_path=tmp_path, check=False)
    assert done.returncode == 0 and "no API key" not in done.stderr


def test_a_code_longer_than_the_features_is_refused_before_they_are_computed(make_cfg, tmp_path):
    """ITQ longer than GIST's width was refused only after the whole dataset's GIST (minutes on
    Fashion-MNIST): the hasher is first fitted on random features of the width one image gives."""
    gist = ("dataset=digits", "features=gist", "features.number_blocks=2")  # 4 scales x 8 x 2 x 2 = 128 wide
    with pytest.raises(ValueError, match="256 bits need at least 256 feature dimensions for PCA, features have 128"):
        train(make_cfg(*gist, "method=itq", "bits=256"))
    with pytest.raises(ValueError, match="256 bits need at least 256 feature dimensions for PCA, features have 128"):
        train(make_cfg(*gist, "method=pgh", "bits=256"))  # PGH's initial ITQ codes
    assert not list((tmp_path / "cache").glob("*.pt"))  # no features were computed, so none cached
    assert train(make_cfg(*gist, "method=lsh", "bits=256"))["bits"] == 256  # LSH needs no PCA


def test_an_empty_dataset_name_is_refused(make_cfg, tmp_path):
    """dataset.name names the run, its report rows and its feature cache: an empty one gave `pgh |  |`."""
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "images" / cls / f"{i}.png")
    folder = ("dataset=folder", f"dataset.root={tmp_path / 'images'}", "split.query_per_class=1")
    with pytest.raises(ValueError, match=r"dataset.name is empty: give the dataset a name"):
        train(make_cfg(*folder, "dataset.name="))
    assert not (tmp_path / "run").exists()


def test_an_evaluation_depth_beyond_the_database_is_named(make_cfg, caplog):
    """eval.map_k=99999 on digits' 797-item database was reported as mAP@99999 without a word."""
    import logging

    with caplog.at_level(logging.WARNING, logger="pgh.train"):
        metrics = train(make_cfg("dataset=digits", "bits=16", "eval.map_k=99999", "eval.precision_k=5000"))
    assert "eval.map_k=99999 is more than the database's 797 items" in caplog.text
    assert "eval.precision_k=5000 is more than the database's 797 items" in caplog.text
    assert metrics["map_at_99999"] == pytest.approx(metrics["map_all"], abs=1e-12)


def test_a_misspelt_split_key_is_named_with_the_settings_there_are(make_cfg, tmp_path):
    with pytest.raises(ValueError, match="split.querry_per_class is not a split setting; the settings are "
                                         "query_per_class, train_size, seed"):  # fmt: skip
        train(make_cfg("dataset=digits", "+split.querry_per_class=5"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["paths.cache_dir", "logger.csv.save_dir"])
def test_a_cache_or_log_folder_that_is_a_file_is_refused_first(make_cfg, tmp_path, key):
    """PGH_CACHE_DIR or a logger's save_dir naming a file (or a path through one) stopped the job at its
    first write with the operating system's 'File exists' / 'Not a directory'."""
    (tmp_path / "a_file").write_text("")
    cfg = make_cfg("dataset=digits")
    OmegaConf.update(cfg, key, str(tmp_path / "a_file" / "below"))
    with pytest.raises(NotADirectoryError, match=f"{key}=.*a_file is a file, not a folder; set {key}=<a folder>"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_split_target_python_cannot_introspect_checks_its_own_keys(make_cfg, tmp_path):
    """The misspelt-key check reads the split function's signature; a callable without one is left to
    itself, and one that cannot be imported is named."""
    from pgh.config_checks import check_split_keys

    check_split_keys(OmegaConf.create({"_target_": "builtins.dict", "_partial_": True, "anything": 1}))
    with pytest.raises(ValueError, match=r"split._target_=nowhere.split: cannot be imported"):
        check_split_keys(OmegaConf.create({"_target_": "nowhere.split"}))


def test_a_null_checkpoint_interval_is_lightnings_zero(make_cfg):
    """method.checkpoint_every_n_steps=null trained before the interval was checked (Lightning reads it
    as 0: only the finished run's checkpoint); it still passes the trainer check."""
    from pgh.config_checks import check_trainer

    cfg = make_cfg("dataset=digits", "method=dh", "method.checkpoint_every_n_steps=null")
    check_trainer(cfg.trainer, cfg.method)
    cfg = make_cfg("dataset=digits", "method=dh", "method.checkpoint_every_n_steps=-5")
    with pytest.raises(ValueError, match="method.checkpoint_every_n_steps=-5 must be a whole number >= 0"):
        check_trainer(cfg.trainer, cfg.method)


def test_help_says_what_pgh_train_does_and_its_examples_compose(tmp_path, make_cfg):
    from conftest import run_python

    done = run_python("-m", "pgh.train", "--help", tmp_path=tmp_path)
    assert done.stdout.startswith("pgh-train: train one hashing method on one dataset")
    assert "method: bgan, deepbit, dh, itq, lsh, pgh, sh, sph" in done.stdout
    assert "Hydra's own options: pgh-train --hydra-help" in done.stdout
    examples = [line.split("#")[0].split()[1:] for line in done.stdout.splitlines() if line.startswith("pgh-train ")]
    assert len(examples) == 5
    for words in examples:
        if "-m" in words:  # a sweep: its config is sweeps/<name>.yaml
            assert (Path(CONFIG_DIR).parent / "sweeps" / f"{words[words.index('-cn') + 1]}.yaml").is_file()
            continue
        overrides = [w for w in words if "=" in w and not w.startswith(("hydra.", "ckpt_path"))]
        make_cfg(*overrides)  # every group and key the example names exists


class SendSigterm(Callback):
    """Sends this process SIGTERM after the training's second batch, as a scheduler's time limit or
    scancel would (outside the submitit launchers, which leave SIGTERM to submitit)."""

    sent = False

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= 2 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_ends_the_job_as_a_failure_that_names_the_resume(make_cfg):
    """Lightning answers SIGTERM with a SystemExit without a code: the job ended as a success (exit
    status 0) without its results."""
    killed = ("dataset=digits", "method=dh", "features=pixels", "bits=16", "method.max_epochs=3",
              "+callbacks.stop._target_=test_train.SendSigterm")  # fmt: skip
    cfg = make_cfg(*killed, "method.checkpoint_every_n_steps=1")
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    assert str(stopped.value.code).startswith("pgh-train: stopped by SIGTERM at step 2")
    assert f"ckpt_path=last and hydra.run.dir={cfg.paths.output_dir}" in str(stopped.value.code)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()
    # killed before its first checkpoint: nothing to resume from, and the message says so
    cfg = make_cfg(*killed, "method.checkpoint_every_n_steps=100", "hydra.run.dir=unused")
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(cfg.paths.output_dir).parent / "early")
    with pytest.raises(SystemExit, match=r"no checkpoint was written yet .*: start again in a new hydra.run.dir"):
        train(cfg)


def test_a_run_killed_in_training_leaves_no_earlier_runs_results_behind(make_cfg):
    """An earlier run's results in the directory (a finished run resumed for more rounds, or another
    method's run in the same hydra.run.dir) stayed beside a killed run's checkpoints and config, so
    pgh-report, pgh-index and the benchmarks took the directory for a finished run of the new one."""
    itq = make_cfg("dataset=digits", "method=itq", "features=pixels", "bits=16")
    out = Path(itq.paths.output_dir)
    train(itq)
    assert {"metrics.json", "hasher.pt", "database_codes.npy", "per_class.csv"} <= {p.name for p in out.iterdir()}
    pgh = make_cfg("dataset=digits", "method=pgh", "features=pixels", "bits=16", "split.train_size=128",
                   "method.batch_size=32", "method.module.width=8", "method.module.hidden=16", "method.rounds=1",
                   "method.progressive.epochs_per_round=1", "method.checkpoint_every_n_steps=0",
                   "+callbacks.stop._target_=test_train.SendSigterm")  # fmt: skip
    with pytest.raises(SystemExit, match="stopped by SIGTERM"):
        train(pgh)
    left = {p.name for p in out.iterdir()}
    assert not {"metrics.json", "hasher.pt", "database_codes.npy", "per_class.csv"} & left
    assert "rounds.csv" in left and (out / "grids").is_dir()  # the killed PGH run's round 0
    train(itq)  # a new run there (no checkpoints to resume): the killed PGH run's rounds are no longer its
    left = {p.name for p in out.iterdir()}
    assert "metrics.json" in left and "rounds.csv" not in left and "grids" not in left


def test_a_finished_run_resumed_and_killed_reads_as_unfinished_and_a_refused_one_keeps_its_results(
    make_cfg, monkeypatch
):
    """A finished run resumed for more rounds kept its metrics.json (the old model's) beside the newer
    last.ckpt when the resume was killed; and the results must survive a resume refused while
    Lightning restores its checkpoint (they were removed before it, for a moment)."""
    from pgh.methods import DH

    small = ("dataset=digits", "method=pgh", "features=pixels", "bits=16", "split.train_size=128",
             "method.batch_size=32", "method.module.width=8", "method.module.hidden=16",
             "method.progressive.epochs_per_round=1", "method.module.distill_epochs=1",
             "method.checkpoint_every_n_steps=1")  # fmt: skip
    out = Path(make_cfg(*small).paths.output_dir)
    train(make_cfg(*small, "method.rounds=1"))
    with pytest.raises(SystemExit, match="stopped by SIGTERM"):
        train(make_cfg(*small, "method.rounds=2", "ckpt_path=last", "+callbacks.stop._target_=test_train.SendSigterm"))
    assert not (out / "metrics.json").exists() and not (out / "database_codes.npy").exists()
    assert [row.split(",")[0] for row in (out / "rounds.csv").read_text().splitlines()[1:]] == ["0", "1"]

    dh = ("dataset=digits", "method=dh", "features=pixels", "bits=16", "method.max_epochs=1")
    dh_out = Path(make_cfg(*dh).paths.output_dir).parent / "dh"
    first = make_cfg(*dh)
    with open_dict(first):
        first.paths.output_dir = str(dh_out)
    train(first)
    before = {p.name for p in dh_out.iterdir()}

    def refuse(self, checkpoint):
        raise RuntimeError("Error(s) in loading state_dict for DH")

    monkeypatch.setattr(DH, "on_load_checkpoint", refuse)
    again = make_cfg(*dh, "ckpt_path=last")
    with open_dict(again):
        again.paths.output_dir = str(dh_out)
    with pytest.raises(RuntimeError, match="loading state_dict"):
        train(again)
    assert {p.name for p in dh_out.iterdir()} >= before and (dh_out / "metrics.json").exists()


def test_ctrl_c_before_training_takes_the_start_files_back(make_cfg, monkeypatch):
    """A KeyboardInterrupt while the features were computed left config.yaml and split.npz behind
    (only an Exception took them back), a directory that looked like a run."""
    import pgh.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pgh.train, "cached_features", interrupted)
    cfg = make_cfg("dataset=digits", "method=itq", "features=pixels", "bits=16")
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


class PressCtrlC(Callback):
    """Raises KeyboardInterrupt after the training's second batch, as Ctrl-C would."""

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= 2:
            raise KeyboardInterrupt


def test_ctrl_c_in_training_names_the_command_that_resumes_it(make_cfg, caplog):
    """Ctrl-C in training ended with Lightning's "attempting graceful shutdown" and exit status 1,
    nothing in train.log, and no word of the resume; the SIGTERM message gave no command."""
    import logging

    cfg = make_cfg("dataset=digits", "method=dh", "features=pixels", "bits=16", "method.max_epochs=3",
                   "method.checkpoint_every_n_steps=1", "+callbacks.stop._target_=test_train.PressCtrlC")  # fmt: skip
    out = Path(cfg.paths.output_dir)
    (out / ".hydra").mkdir(parents=True)
    overrides = ["dataset=digits", "method=dh", "hydra.run.dir=elsewhere", "method.module.hidden=[64, 32]"]
    overrides += ["requeued=true", "+ckpt_path=x"]  # set by the resume itself: kept, Hydra would refuse two ckpt_path
    (out / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))  # what Hydra records
    handler = signal.getsignal(signal.SIGINT)
    try:
        with caplog.at_level(logging.ERROR, logger="pgh.train"), pytest.raises(SystemExit) as stopped:
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    expected = (
        "pgh-train: stopped by Ctrl-C at step 2; resume with: pgh-train dataset=digits method=dh "
        f"'method.module.hidden=[64, 32]' ckpt_path=last hydra.run.dir={out}"
    )
    assert stopped.value.code == expected and expected in caplog.text


def test_the_resume_command_keeps_hydras_own_overrides(tmp_path):
    """A run of one's own method (`hydra.searchpath=[file://…]`) must resume with the search path, or
    `method=mine` does not compose."""
    from conftest import run_python

    args = ["dataset=digits", "method=dh", "features=pixels", "bits=16", "method.max_epochs=3"]
    args += ["method.checkpoint_every_n_steps=1", "+callbacks.stop._target_=test_train.PressCtrlC"]
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    done = run_python(
        "-m", "pgh.train", *args, searchpath, f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path, check=False
    )
    assert done.returncode == 1
    assert f"resume with: pgh-train '{searchpath}' {' '.join(args)} ckpt_path=last hydra.run.dir=" in done.stderr


def test_pghs_closing_line_shows_the_round_0_codes_it_started_from():
    """A short PGH run ends below its ITQ start (its warm-up is not over); the closing line gave only
    the final mAP, so a smoke test read as a broken method."""
    from pgh.train import closing_line

    m = {"dataset": "mnist5k", "method": "pgh", "features": "gist", "bits": 32, "map_all": 0.2451,
         "init_map_all": 0.557, "map_at_1000": 0.3, "precision_at_100": 0.4, "precision_radius_2": 0.5,
         "train_seconds": 18.6}  # fmt: skip
    assert closing_line(m, Path("run")).startswith(
        "pgh | mnist5k | pgh+gist | 32 bits | mAP@all 24.51 (round 0 55.70) |"
    )
    del m["init_map_all"]  # a shallow run
    assert "| mAP@all 24.51 | mAP@1000 30.00 |" in closing_line(m, Path("run"))


def test_a_network_that_turns_colour_grey_or_shrinks_the_images_says_so(make_cfg, tmp_path, caplog):
    """PGH and BGAN read MNIST's 1-channel 28-px images at their config's defaults: a folder of colour
    32-px images trained on grey, shrunk copies without a word."""
    import logging

    from PIL import Image

    for label in range(3):
        (tmp_path / "images" / f"c{label}").mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (32, 32), color=(80 * label, 20 * i, 100)).save(
                tmp_path / "images" / f"c{label}" / f"{i}.png"
            )
    args = ["dataset=folder", f"dataset.root={tmp_path / 'images'}", "split.query_per_class=2", "logger=none"]
    args += ["method=bgan", "bits=16", "method.batch_size=10", "method.max_epochs=1", "method.module.width=4"]
    args += ["method.module.hidden=16", "method.module.k1=3", "method.module.k2=5", "method.module.min_shared=1"]
    args += ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    with caplog.at_level(logging.WARNING, logger="pgh.train"):
        train(make_cfg(*args))
    assert (
        "BGAN's networks read 1-channel 28-px images: it turns the colour images grey and shrinks them from 32x32 "
        "to 28x28 px; set method.module.channels=3 method.module.image_size=32 to train on folder's images as they are"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgh.train"):  # as they are, or only upsampled: nothing lost
        for size in (32, 64):
            cfg = make_cfg(*args, "method.module.channels=3", f"method.module.image_size={size}")
            cfg.paths.output_dir = str(tmp_path / f"run_{size}")
            train(cfg)
    assert "networks read" not in caplog.text


def test_codes_that_collapsed_are_named(make_cfg, tmp_path, caplog):
    """A PGH run collapsed to one code ended with an mAP@all that read as a weak method, not a broken one."""
    import logging

    from PIL import Image

    for label in range(3):  # one image, copied: LSH gives every item the same code
        (tmp_path / "images" / f"c{label}").mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), color=100).save(tmp_path / "images" / f"c{label}" / f"{i}.png")
    folder = ["dataset=folder", f"dataset.root={tmp_path / 'images'}", "dataset.grayscale=true", "dataset.image_size=8"]
    with caplog.at_level(logging.WARNING, logger="pgh.train"):
        metrics = train(make_cfg(*folder, "split.query_per_class=1", "method=lsh", "bits=16", "logger=none"))
    assert metrics["db_distinct_codes"] == 1
    assert (
        "the database's 9 items have 1 distinct code(s), fewer than its 3 classes: the codes collapsed" in caplog.text
    )


def test_a_class_too_small_for_the_split_is_named_by_its_folder(make_cfg, tmp_path):
    from PIL import Image

    for cls, count in (("cats", 6), ("dogs", 2)):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "images" / cls / f"{i}.png")
    folder = ("dataset=folder", f"dataset.root={tmp_path / 'images'}", "dataset.image_size=8")
    with pytest.raises(ValueError, match=r"^class 'dogs' has 2 images, not more than split.query_per_class=2; lower"):
        train(make_cfg(*folder, "split.query_per_class=2"))


def test_a_sweep_job_stopped_in_training_names_the_sweep_command_that_resumes_it(tmp_path):
    """The resume command a stopped sweep job printed lacked the sweep's `-cd sweeps -cn pgh_init`, so it
    composed the defaults (ITQ) and was refused; it resumed one job, not the sweep."""
    from conftest import run_python

    sweeps, sweep_dir = Path(CONFIG_DIR).parent / "sweeps", tmp_path / "sweep"
    args = ["-m", "-cd", str(sweeps), "-cn", "pgh_init", "dataset=digits", "bits=16", "features=pixels"]
    args += ["split.train_size=128", "method.batch_size=32", "method.module.width=8", "method.module.hidden=32"]
    args += ["method.checkpoint_every_n_steps=1", "+callbacks.stop._target_=test_train.PressCtrlC"]
    args += ["method.module.betas=[0.5, 0.999]", "task_name=a|$b"]  # words the shell must get quoted
    done = run_python("-m", "pgh.train", *args, f"hydra.sweep.dir={sweep_dir}", tmp_path=tmp_path, check=False)
    kept = " ".join(args[5:-2]) + " 'method.module.betas=[0.5, 0.999]' 'task_name=a|$b'"
    expected = (
        # PGH's first batch makes 3 optimiser steps; Ctrl-C in it comes before its checkpoint
        "pgh-train: stopped by Ctrl-C at step 3; this job wrote no checkpoint yet (method.checkpoint_every_n_steps); "
        f"resume the sweep with: pgh-train -m -cd {sweeps.resolve()} -cn "
        f"pgh_init {kept} ckpt_path=last hydra.sweep.dir={sweep_dir} (jobs with a checkpoint continue, the others "
        "start afresh)"
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == expected
    # as a shell reads it, the command composes the same sweep: stopped again, it names itself again
    command = expected.split("resume the sweep with: ", 1)[1].split(" (jobs with", 1)[0]
    again = run_python("-m", "pgh.train", *shlex.split(command)[1:], tmp_path=tmp_path, check=False)
    assert again.returncode == 1 and again.stderr.strip().splitlines()[-1] == expected


def test_a_batch_size_that_leaves_out_much_of_each_epoch_is_named(make_cfg, caplog):
    """DH's 256 on 500 folder images trained one batch an epoch and left out 244 without a word."""
    import logging

    args = ("dataset=digits", "method=dh", "bits=16", "split.train_size=500", "method.max_epochs=1", "logger=none")
    with caplog.at_level(logging.WARNING, logger="pgh.train"):
        train(make_cfg(*args, "method.batch_size=256"))
    assert "method.batch_size=256 on 500 training images: each epoch trains on 256 of them and leaves out 244" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgh.train"):
        cfg = make_cfg(*args, "method.batch_size=100")
        cfg.paths.output_dir += "_100"
        train(cfg)
    assert "leaves out" not in caplog.text


def test_the_size_suggested_for_whole_images_is_one_the_networks_take():
    """The warning above suggested the images' own 96 px, which PGH's and BGAN's networks refuse."""
    from pgh.methods.base import DeepHasher, keeping_size
    from pgh.nets.dcgan import SUPPORTED_IMAGE_SIZES

    assert [keeping_size(side, SUPPORTED_IMAGE_SIZES) for side in (8, 28, 30, 32, 48, 64, 96)] == [
        28,
        28,
        32,
        32,
        64,
        64,
        64,
    ]
    assert keeping_size(96, None) == 96  # DeepBit's cnn takes any size

    class OwnImageMethod(DeepHasher):  # a user's own image method, without channels / image_size arguments
        pass

    assert OwnImageMethod().network_input() is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method._target_=no_such_module.PCHA"], r"method._target_=no_such_module.PCHA cannot be imported \(No module "
         r"named 'no_such_module'\): check its spelling, and that its module is on the PYTHONPATH"),
        (["method._target_=pgh.hashing.ITQQ"], r"cannot be imported \(module 'pgh.hashing' has no attribute 'ITQQ'\)"),
        (["method._target_=pgh.methods.DH"], r"pgh.methods.DH is a DeepHasher: its config goes under method.module"),
        (["method=dh", "method.module._target_=pgh.hashing.ITQ"], r"pgh.hashing.ITQ is no pgh.methods.base.DeepHasher"),
        (["method=dh", "method.module._target_=test_train.ReadsText"], r"has input_kind='text', not one of"),
        (["method._target_=torch.nn.Linear"], r"torch.nn.Linear is no pgh.hashing.ShallowHasher, nor a DeepHasher"),
        (["method._target_=pgh.hashing.load_hasher"], r"^method._target_=pgh.hashing.load_hasher is no class$"),
    ],
)  # fmt: skip
def test_a_method_class_that_does_not_import_or_sits_under_the_wrong_key_is_named(
    make_cfg, tmp_path, overrides, message
):
    """A misspelt _target_ gave 35 lines of Hydra's traceback; a DeepHasher written without `module:`
    an unexpected keyword argument 'batch_size'."""
    with pytest.raises(ValueError, match=message):
        train(make_cfg("dataset=digits", *overrides))
    assert not (tmp_path / "run").exists()


def test_codes_come_from_eval_mode_whatever_mode_the_model_is_in():
    """A method of one's own with BatchNorm was scored in training mode: each code depended on the
    other images of its chunk, and pgh-index (eval mode) coded the same images otherwise."""
    from torch import nn

    from pgh.methods.base import DeepHasher

    class WithBatchNorm(DeepHasher):
        input_kind = "features"

        def __init__(self, bits: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(4, bits), nn.BatchNorm1d(bits))

        def encode_inputs(self, inputs, batch_size=512):
            return self.encode_prepared(inputs, lambda x: self.net(x) >= 0, batch_size)

    model = WithBatchNorm()
    model.net[1].running_mean.fill_(0.3)  # running statistics unlike any batch's
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    model.eval()
    expected = model.encode_inputs(x)
    assert not model.training  # an eval-mode model stays in eval mode
    model.train()
    assert torch.equal(model.encode_inputs(x, batch_size=7), expected) and model.training  # its mode restored


class ReadsText(DeepHasher):
    """A deep method of an input kind pgh-train cannot feed (test_a_bad_method_class_is_named)."""

    input_kind = "text"


def test_train_leaves_the_callers_random_streams_and_warning_filters_as_they_were(make_cfg):
    """From a notebook, every train(cfg) re-seeded the caller's torch, NumPy and Python streams (a
    subsample drawn after each run came out the same every time) and left Lightning's notices
    silenced for the rest of the session."""
    import random
    import warnings

    def draws() -> tuple:
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    expected = draws()
    filters = list(warnings.filters)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    train(make_cfg("dataset=digits", "method=dh", "method.max_epochs=1", "bits=16", "seed=7"))
    assert draws() == expected
    assert warnings.filters == filters
    assert "PL_GLOBAL_SEED" not in os.environ


def test_a_config_loaded_from_a_run_does_not_log_into_that_run(make_cfg, tmp_path):
    """A finished run's config.yaml holds its resolved paths: given another paths.output_dir, the CSV
    logger still wrote to the old run and Lightning rewrote its metrics.csv."""
    train(make_cfg("dataset=digits", "method=dh", "method.max_epochs=1", "bits=16"))
    first = tmp_path / "run"
    logged = (first / "csv" / "metrics.csv").read_bytes()
    cfg = OmegaConf.load(first / "config.yaml")
    cfg.paths.output_dir = str(tmp_path / "again")
    with pytest.raises(ValueError, match=rf"^logger.csv.save_dir={first} is in the run directory {first}, not in"):
        train(cfg)
    assert (first / "csv" / "metrics.csv").read_bytes() == logged and not (tmp_path / "again").exists()
    cfg.logger.csv.save_dir = cfg.paths.output_dir  # what the message asks for
    assert train(cfg)["map_all"] > 0 and (tmp_path / "again" / "csv" / "metrics.csv").is_file()


def test_a_second_job_in_a_run_directory_is_refused_while_the_first_runs(make_cfg, tmp_path):
    """Two jobs given one hydra.run.dir both ran: the directory ended with one's metrics.json and
    checkpoint beside the other's config.yaml, and read as a finished run."""
    import fcntl

    from pgh.run_dir import RUN_LOCK

    cfg = make_cfg("dataset=digits", "method=lsh", "bits=16", "split.query_per_class=20")
    out = Path(cfg.paths.output_dir)
    out.mkdir()
    with open(out / RUN_LOCK, "a") as first_job:  # as the job running there holds it
        fcntl.flock(first_job, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FileExistsError, match=rf"^another pgh-train job is running in {out}: give this one a"):
            train(cfg)
        assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK]  # the refused job wrote nothing
    # once it has ended, a job goes ahead; writes that a killed job left half-done are cleared away
    (out / "checkpoints").mkdir()
    killed = [out / ".metrics.json.k1l2.tmp", out / "checkpoints" / ".last.ckpt.k1l2.tmp"]
    for path in killed:
        path.write_bytes(b"half")
    assert train(cfg)["map_all"] > 0 and not any(path.exists() for path in killed)


def test_a_refused_job_leaves_no_run_directory_and_no_lock_behind(make_cfg, tmp_path):
    cfg = make_cfg("dataset=digits", "method=itq", "bits=16", "split.train_size=10")
    with pytest.raises(ValueError, match="needs at least 17 training samples"):
        train(cfg)
    assert not (tmp_path / "run").exists()
