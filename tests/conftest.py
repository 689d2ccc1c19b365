"""Shared fixtures: Hydra configs composed from conf/ (as `pgh-train` would), with run and cache
directories under pytest's tmp_path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, open_dict

from pgh.train import CONFIG_DIR


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `gpu` skip where torch sees no CUDA device (the marker alone skipped nothing)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# keys every run's metrics.json has, shallow or deep
METRIC_KEYS = frozenset(
    {
        "map_all",
        "map_at_1000",
        "precision_at_100",
        "precision_radius_2",
        "train_seconds",
        "encode_seconds",
        "eval_seconds",
        "feature_seconds",
        "dataset",
        "method",
        "features",
        "bits",
        "distance",
        "num_queries",
        "num_database",
        "num_train",
        "seed",
        "db_distinct_codes",
        "db_constant_bits",
        "db_bit_imbalance",
        "db_bit_correlation",
    }
)


def run_python(
    *args: str, tmp_path: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python *args` in tmp_path, with runs, logs and the feature cache under it and one torch thread
    (as a user would start it: a fresh process), and `env` added to the environment. With `check`, a
    non-zero exit fails the test and shows the end of stderr."""
    env = {
        **os.environ,
        "PGH_ROOT": str(tmp_path),
        "PGH_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    # so that configs can name test callbacks (`conftest.…`) in the subprocess too
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def markdown_table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the first table after the markdown heading that starts with `## {heading}`,
    without the header and separator rows."""
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]


@pytest.fixture
def make_cfg(tmp_path: Path):
    """make_cfg(*overrides, out="run") -> the composed config, writing into tmp_path / out."""

    def _make(*overrides: str, out: str = "run") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / out)
            cfg.paths.cache_dir = str(tmp_path / "cache")
            cfg.paths.log_dir = str(tmp_path / "logs")
        return cfg

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


class RecordTrainStart:
    """A Lightning callback (as `+callbacks.probe._target_=conftest.RecordTrainStart`) that records
    the module's round, codes and the trainer's step when training starts or resumes."""

    seen: ClassVar[list[dict]] = []

    def __new__(cls):
        import lightning as L

        class _Probe(L.Callback):
            def on_train_start(self, trainer, pl_module):
                RecordTrainStart.seen.append(
                    {
                        "round": int(pl_module.current_round),
                        "codes": pl_module.codes.detach().cpu().clone(),
                        "global_step": trainer.global_step,
                        "epoch": trainer.current_epoch,
                    }
                )

        return _Probe()


class RecordLearningRates:
    """A Lightning callback (as `+callbacks.lr._target_=conftest.RecordLearningRates`) that records,
    after every batch, the epoch, the batch's index and each optimizer's learning rate."""

    seen: ClassVar[list[tuple[int, int, list[float]]]] = []

    def __new__(cls):
        import lightning as L

        class _Probe(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                rates = [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups]
                RecordLearningRates.seen.append((trainer.current_epoch, batch_idx, rates))

        return _Probe()


class RecordOptimizerStates:
    """A Lightning callback (as `+callbacks.opt._target_=conftest.RecordOptimizerStates`) that records,
    after every epoch's end (the round callback's refresh included), which optimizers hold state."""

    seen: ClassVar[list[tuple[int, list[bool]]]] = []

    def __new__(cls):
        import lightning as L

        class _Probe(L.Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                states = [bool(opt.state) for opt in trainer.optimizers]
                RecordOptimizerStates.seen.append((trainer.current_epoch, states))

        return _Probe()


class RecordingWandbLogger(WandbLogger):
    """Lightning's W&B logger (offline) that also appends what it is given to `<save_dir>/recorded.jsonl`:
    its init arguments, the hyperparameters, each log_metrics call with its step, and the run's summary
    when it closes."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._record({"init": {k: v for k, v in self._wandb_init.items() if isinstance(v, (str, int, type(None)))}})

    def _record(self, entry: dict) -> None:
        with open(Path(self.save_dir) / "recorded.jsonl", "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self._record({"hyperparameters": dict(params)})
        super().log_hyperparams(params, *args, **kwargs)

    def log_metrics(self, metrics, step=None) -> None:
        self._record({"metrics": dict(metrics), "step": step})
        super().log_metrics(metrics, step=step)

    def finalize(self, status: str) -> None:
        summary = self.experiment.summary
        self._record({"summary": {key: summary[key] for key in summary.keys()}})
        super().finalize(status)


class KillAtEpochStart:
    """A Lightning callback (as `+callbacks.kill._target_=conftest.KillAtEpochStart +callbacks.kill.epoch=N`)
    that fails the run as epoch N starts, after the previous epoch's end but before any later
    checkpoint: a job killed between an epoch's last step checkpoint and the next save."""

    def __new__(cls, epoch: int, kind: str = "RuntimeError"):
        import builtins

        import lightning as L

        class _Kill(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch == epoch:
                    raise getattr(builtins, kind)(f"killed at the start of epoch {epoch}")

        return _Kill()


class StopAtBatch:
    """A Lightning callback (as `+callbacks.stop._target_=conftest.StopAtBatch +callbacks.stop.epoch=E
    +callbacks.stop.batch=B`) that stops training after batch B of epoch E, as trainer.max_time or an
    early-stopping callback does: Lightning then ends the epoch early and runs its end hooks."""

    def __new__(cls, epoch: int, batch: int):
        import lightning as L

        class _Stop(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, data, batch_idx):
                if trainer.current_epoch == epoch and batch_idx == batch:
                    trainer.should_stop = True

        return _Stop()


class SignalPreemption:
    """A Lightning callback (as `+callbacks.preempt._target_=conftest.SignalPreemption
    +callbacks.preempt.at_step=N`) that, in a run that did not resume, sends its own process SIGTERM
    once global step N is done and submitit's preemption signal (SIGUSR2) a few batches later: what
    SLURM and submitit do to a job that is preempted (Lightning's own SIGTERM handler used to end the
    training before the requeue signal came)."""

    def __new__(cls, at_step: int):
        import lightning as L

        class _Preempt(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.ckpt_path is None and trainer.global_step >= at_step:
                    step = trainer.global_step
                    if not hasattr(self, "sigterm_step"):
                        self.sigterm_step = step
                        os.kill(os.getpid(), signal.SIGTERM)
                    elif step >= self.sigterm_step + 9:  # 3 batches (D, G and H steps) later
                        os.kill(os.getpid(), signal.SIGUSR2)

        return _Preempt()


def assert_checkpoint_codes_the_database_as_the_run_did(cfg: DictConfig) -> None:
    """README, *Using a trained model*: load the run's checkpoint with the module's class and code
    the database from the inputs it reads (images, or the features group's features)."""
    import numpy as np
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    from pgh.data import Split
    from pgh.features import cached_features
    from pgh.retrieval import pack_codes

    out = Path(cfg.paths.output_dir)
    model = get_class(cfg.method.module._target_).load_from_checkpoint(
        out / "checkpoints" / "last.ckpt", map_location="cpu"
    )
    dataset, split = instantiate(cfg.dataset), Split.load(out / "split.npz")
    if model.input_kind == "images":
        inputs = dataset.images
    else:
        config = OmegaConf.to_container(cfg.features, resolve=True)
        inputs = cached_features(dataset, instantiate(cfg.features), config, cfg.paths.cache_dir)
    codes = pack_codes(model.encode_inputs(inputs[split.database]))
    assert np.array_equal(codes, np.load(out / "database_codes.npy"))
