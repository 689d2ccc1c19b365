"""pgh-train's one-line messages for command lines Hydra cannot compose (pgh/override_errors.py)."""

from __future__ import annotations

import pytest
from conftest import run_python
from hydra.errors import ConfigCompositionException

from pgh.override_errors import explain


def composition_error(make_cfg, *overrides: str) -> ConfigCompositionException:
    with pytest.raises(ConfigCompositionException) as caught:
        make_cfg(*overrides)
    return caught.value


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["metod=itq"], "`metod` is no config group or setting (did you mean `method`?); the config's are bits, "),
        (
            ["method.rounds=2"],
            "`method.rounds` is not a setting of `method`; its settings are bits, iterations, seed; "
            "`rounds` is a setting of method=pgh",
        ),
        (
            ["method=pgh", "method.module.gama=1"],
            "`method.module.gama` is not a setting of `method.module` (did you mean `gamma`?)",
        ),
        (["dataset=folder", "dataset.rot=x"], "is not a setting of `dataset` (did you mean `root`?)"),
        (
            ["method=itqq"],
            "no method `itqq` (did you mean `itq`?); the options of `method` are bgan, deepbit, dh, itq,",
        ),
        (["experiment=pgh_mnst"], "no experiment `pgh_mnst` (did you mean `pgh_mnist` or `pgh_mnist5k`?)"),
        (["logger=[csv,wandbb]"], "no logger `wandbb` (did you mean `wandb`?); the options of `logger` are csv, none,"),
    ],
)
def test_a_misspelt_key_or_option_is_named_with_the_nearest_there_are(make_cfg, overrides, expected):
    message = explain(composition_error(make_cfg, *overrides))
    assert message is not None and expected in message
    assert "\n" not in message and "+" not in message  # Hydra's advice, +key=value, would add the misspelt key


def test_hydras_own_settings_keep_hydras_message(make_cfg):
    assert explain(composition_error(make_cfg, "hydra.foo=1")) is None


def test_pgh_train_says_it_in_one_line(tmp_path):
    """Through the entry point (Hydra's run_and_report, patched while it runs), in a fresh process."""
    done = run_python("-m", "pgh.train", "--multirun", "method=itq,lsh", "bitz=16", tmp_path=tmp_path, check=False)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "pgh-train: `bitz` is no config group or setting (did you mean `bits`?); the config's are bits, callbacks, "
        "ckpt_path, dataset, eval, features, logger, method, paths, requeued, save_codes, seed, split, task_name, "
        "trainer (`pgh-train --help` lists them with their options)"
    ]
    assert not (tmp_path / "logs").exists()  # refused before Hydra made a directory


@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_a_sweep_jobs_refused_setting_is_one_line_after_the_line_naming_the_job(tmp_path, launcher):
    """The sweep's other jobs run; the refused one is named by Hydra, then its message, with no traceback
    (the submitit launcher's printed Hydra's internals around it)."""
    sweep = ("-m", "pgh.train", "-m", f"hydra/launcher={launcher}", "dataset=digits", "method=itq", "features=pixels")
    done = run_python(*sweep, "bits=16,20", tmp_path=tmp_path, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-3:] == [
        "Error executing job with overrides: ['dataset=digits', 'method=itq', 'features=pixels', 'bits=20']",
        "pgh-train: bits=20 is not a positive multiple of 8; use 16, 32, 64 or another multiple of 8",
        "(the job's overrides are on the line above; HYDRA_FULL_ERROR=1 shows where it was raised)",
    ]
    assert len(list((tmp_path / "logs").rglob("metrics.json"))) == 1  # bits=16 ran


def test_a_sweep_jobs_missing_dataset_is_one_line_on_the_submitit_launcher(tmp_path):
    """The dataset's error reaches Hydra inside an InstantiationException, whose __cause__ submitit's
    pickling drops: the job marks the error itself before it leaves the process."""
    missing = ("dataset=fashion_mnist", f"dataset.root={tmp_path}/none", "method=itq")
    done = run_python(
        "-m", "pgh.train", "-m", "hydra/launcher=local", *missing, "bits=16", tmp_path=tmp_path, check=False
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    said = done.stderr.strip().splitlines()[-2]
    assert said.startswith("pgh-train: fashion_mnist: train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] not")


def test_an_error_outside_a_sweeps_jobs_gets_no_hint_about_a_job(tmp_path):
    (tmp_path / "file").write_text("")
    done = run_python(
        "-m", "pgh.train", "dataset=digits", f"hydra.run.dir={tmp_path}/file/run", tmp_path=tmp_path, check=False
    )
    assert done.returncode == 1 and "the job's overrides are on the line above" not in done.stderr


def test_hydra_full_error_keeps_a_sweep_jobs_traceback(tmp_path):
    done = run_python(
        "-m", "pgh.train", "-m", "dataset=digits", "method=itq", "features=pixels", "bits=20",
        tmp_path=tmp_path, check=False, env={"HYDRA_FULL_ERROR": "1"},
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" in done.stderr and "pgh-train:" not in done.stderr
