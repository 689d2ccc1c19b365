"""PGH under DDP on two CPU processes (gloo): the end-of-round code refresh encodes one shard per
rank and all-gathers them, so every rank ends with the same codes, each shard the one its rank's H
gives. Also: conf/trainer/ddp.yaml's strategy is one PGH's manual-optimisation step can run with."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader, TensorDataset

from pgh.callbacks import ProgressiveRounds
from pgh.methods import PGH

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

N, BITS = 37, 8  # an odd count: the last rank's shard is padded and the padding cut off after the gather


class SaveCodes(L.Callback):
    """Each rank saves its conditioning codes and its own H's codes of the whole training set."""

    def __init__(self, out: Path, images: torch.Tensor) -> None:
        self.out, self.images = out, images

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank = trainer.global_rank
        torch.save(pl_module.codes.cpu(), self.out / f"codes_rank{rank}.pt")
        torch.save(pl_module.encode_inputs(self.images), self.out / f"own_rank{rank}.pt")


def two_cpu_ranks(max_epochs: int, callbacks: list) -> L.Trainer:
    """A trainer of two gloo processes on the CPU, as conf/trainer/ddp.yaml: no buffer broadcast, so the
    refresh alone must keep the codes equal."""
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(find_unused_parameters=True, broadcast_buffers=False, start_method="spawn"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def loader(images: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(images, torch.arange(len(images))), batch_size=8, shuffle=True)


def test_code_refresh_gathers_the_same_codes_on_every_rank(tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(N) % 4
    model = PGH(bits=BITS, num_train=N, width=8, hidden=16, z_dim=8, distill_epochs=1)
    initial = torch.randint(0, 2, (N, BITS))
    model.set_codes(initial)
    rounds = ProgressiveRounds(images, images[:8], labels[:8], images, labels, tmp_path, epochs_per_round=1)
    two_cpu_ranks(2, [rounds, SaveCodes(tmp_path, images)]).fit(model, loader(images))

    rank0, rank1 = (torch.load(tmp_path / f"codes_rank{r}.pt") for r in (0, 1))
    assert torch.equal(rank0, rank1)
    assert not torch.equal(rank0, initial.float())  # the rounds did refresh them
    # rank r encoded rows [19 r, 19 r + 19) with its own H (BatchNorm statistics are per rank on CPU,
    # where SyncBatchNorm does not run), and the gather put them back in place
    own0, own1 = (torch.load(tmp_path / f"own_rank{r}.pt") for r in (0, 1))
    assert torch.equal(rank0[:19].bool(), own0[:19]) and torch.equal(rank0[19:].bool(), own1[19:])
    assert (tmp_path / "rounds.csv").read_text().count("\n") == 3  # header + rounds 1 and 2


class RankSeeds(L.Callback):
    """Each rank its own random stream, as a resumed DDP run's ranks have (they all load rank 0's)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(100 + trainer.global_rank)


class SaveGAN(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        weights = {k: v.cpu() for k, v in [*pl_module.G.named_parameters(), *pl_module.D.named_parameters()]}
        torch.save(weights, self.out / f"gan_rank{trainer.global_rank}.pt")


def test_reset_gan_each_round_gives_every_rank_rank_0s_new_weights(tmp_path):
    """DDP copies the weights from rank 0 only when it starts: a reset drawn on each rank from its own
    random stream left the ranks training different G and D from the first reset on."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8)
    model = PGH(bits=BITS, num_train=N, width=8, hidden=16, z_dim=8, distill_epochs=1)
    model.set_codes(torch.randint(0, 2, (N, BITS)))
    rounds = ProgressiveRounds(
        images, images[:8], torch.arange(8) % 4, images, torch.arange(N) % 4, tmp_path,
        epochs_per_round=1, reset_gan_each_round=True, converge_bit_change=0.0,
    )  # fmt: skip
    before = {k: v.clone() for k, v in model.G.named_parameters()}
    # one epoch: the run ends with round 1's refresh and reset
    two_cpu_ranks(1, [RankSeeds(), rounds, SaveGAN(tmp_path)]).fit(model, loader(images))
    rank0, rank1 = (torch.load(tmp_path / f"gan_rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not torch.equal(rank0["project.weight"], before["project.weight"])  # it was reset


def test_the_ddp_trainer_config_finds_unused_parameters_and_broadcasts_no_buffers():
    from hydra.utils import instantiate

    config = OmegaConf.load(Path(__file__).parents[1] / "conf" / "trainer" / "ddp.yaml")
    strategy = instantiate(config.strategy)
    assert isinstance(strategy, DDPStrategy) and config.sync_batchnorm
    assert strategy._ddp_kwargs == {"find_unused_parameters": True, "broadcast_buffers": False}


# pgh-train on digits, PGH at toy sizes, one round, DDP over two CPU processes (gloo)
TINY_DDP_RUN = [
    *("-m", "pgh.train", "dataset=digits", "method=pgh", "features=pixels", "bits=16"),
    *("split.query_per_class=20", "split.train_size=128", "method.batch_size=32", "method.rounds=1"),
    *("method.progressive.epochs_per_round=2", "method.module.width=8", "method.module.hidden=32"),
    *("method.module.z_dim=16", "method.module.distill_epochs=1", "method.progressive.vote_neighbors=4"),
    *("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"),
    *("trainer.enable_progress_bar=false", "logger=none"),
]


def test_pgh_train_under_ddp_writes_the_results_once(tmp_path):
    """`pgh-train trainer=ddp` on two CPU processes (Lightning re-launches the Hydra app for rank 1):
    rank 0 alone encodes, evaluates and writes metrics.json, the run prints one closing line, and
    the logged epoch losses are synced across the ranks."""
    import json

    from conftest import run_python

    out = tmp_path / "run"
    done = run_python(*TINY_DDP_RUN, f"hydra.run.dir={out}", tmp_path=tmp_path)
    closing = [line for line in done.stdout.splitlines() if line.startswith("pgh | digits | pgh+pixels")]
    assert len(closing) == 1
    assert (out / "train.log").read_text().count(closing[0]) == 1  # both ranks log to it, rank 0 alone closes
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"mAP@all {100 * metrics['map_all']:.2f}" in closing[0] and metrics["rounds_completed"] == 1
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "database_codes.npy").exists()
    # epoch losses are means over both ranks (Lightning warned five times that they were rank 0's)
    assert "sync_dist" not in done.stderr


def test_ddp_with_fewer_images_a_rank_than_a_batch_still_trains(tmp_path):
    """40 training images, batches of 32, two ranks: each rank's sampler holds 20. The loader dropped
    incomplete batches because 40 > 32, so no rank ran a step and an untrained H was scored."""
    import json

    from conftest import run_python

    out = tmp_path / "run"
    small = [a for a in TINY_DDP_RUN if not a.startswith(("split.train_size", "method.progressive.epochs_per_round"))]
    run_python(*small, "split.train_size=40", "method.progressive.epochs_per_round=1", f"hydra.run.dir={out}",
               tmp_path=tmp_path)  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["rounds_completed"] == 1


def test_a_ddp_run_resumed_at_a_rounds_end_or_in_mid_epoch_gives_the_uninterrupted_runs_numbers(tmp_path):
    """Every rank seeds torch with `seed`, so the ranks draw the same noise and jitter streams (on their
    own shards), and a resume loads rank 0's saved streams on every rank: the same streams again. Two
    rounds in one go, one round resumed to two, and a run preempted inside an epoch (2 batches of 32 a
    rank and epoch; stopped after the first batch of epoch 1) and resumed, each rank then training the
    batch of its DistributedSampler shard that the uninterrupted run trained next (the loader's
    position is in the checkpoint), give the same rounds and the same codes. (One test: each run is
    two processes that start torch, Lightning and Hydra.)"""
    import json

    import numpy as np
    from conftest import run_python

    run = [a for a in TINY_DDP_RUN if not a.startswith("method.rounds")]
    run += ["method.progressive.converge_bit_change=0", "method.checkpoint_every_n_steps=1"]
    whole, at_round_end, mid_epoch = tmp_path / "whole", tmp_path / "at_round_end", tmp_path / "mid_epoch"
    run_python(*run, "method.rounds=2", f"hydra.run.dir={whole}", tmp_path=tmp_path)
    run_python(*run, "method.rounds=1", f"hydra.run.dir={at_round_end}", tmp_path=tmp_path)
    run_python(*run, "method.rounds=2", "+trainer.max_steps=9", f"hydra.run.dir={mid_epoch}", tmp_path=tmp_path)
    ckpt = torch.load(mid_epoch / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 1
    for resumed in (at_round_end, mid_epoch):
        run_python(*run, "method.rounds=2", f"hydra.run.dir={resumed}", "ckpt_path=last", tmp_path=tmp_path)
        assert (whole / "rounds.csv").read_text() == (resumed / "rounds.csv").read_text()
        assert np.array_equal(np.load(whole / "database_codes.npy"), np.load(resumed / "database_codes.npy"))
        metrics = [json.loads((d / "metrics.json").read_text()) for d in (whole, resumed)]
        assert metrics[0]["map_all"] == metrics[1]["map_all"] and metrics[1]["rounds_completed"] == 2
    assert (whole / "rounds.csv").read_text().count("\n") == 4  # header + rounds 0, 1 and 2


def slurm_task_env(tmp_path: Path, rank: int, tasks: int, port: int) -> dict[str, str]:
    """The environment srun gives task `rank` of a one-node job step with `tasks` tasks per node."""
    import os

    env = {**os.environ, "PGH_ROOT": str(tmp_path), "PGH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.update(SLURM_JOB_ID="4242", SLURM_JOB_NAME="pgh", SLURM_NODELIST="127.0.0.1", SLURM_NNODES="1")
    env.update(SLURM_NTASKS=str(tasks), SLURM_NTASKS_PER_NODE=str(tasks), SLURM_NODEID="0", MASTER_PORT=str(port))
    env.update(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
    return env


def test_pgh_train_as_the_tasks_of_a_slurm_job_step(tmp_path):
    """Multi-GPU DDP on SLURM (hydra/launcher=slurm with tasks_per_node = gpus_per_node = devices) starts
    pgh-train once per task, and Lightning makes the tasks the DDP ranks. Two CPU processes with the
    environment srun gives its tasks train as one run: the results are written once, and they equal
    those of the same run under Lightning's own process launch (the previous test's)."""
    import json
    import socket
    import subprocess
    import sys

    from conftest import run_python

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "slurm"
    tasks = [
        subprocess.Popen(
            [sys.executable, *TINY_DDP_RUN, f"hydra.run.dir={out}"],
            env=slurm_task_env(tmp_path, rank, 2, port),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    finished = [task.communicate(timeout=600) for task in tasks]
    for task, (_, stderr) in zip(tasks, finished, strict=True):
        assert task.returncode == 0, stderr[-3000:]
    closing = [line for stdout, _ in finished for line in stdout.splitlines() if line.startswith("pgh | digits")]
    assert len(closing) == 1 and "GLOBAL_RANK: 1, MEMBER: 2/2" in finished[1][1]
    launched = tmp_path / "launched"
    run_python(*TINY_DDP_RUN, f"hydra.run.dir={launched}", tmp_path=tmp_path)
    slurm, reference = (json.loads((d / "metrics.json").read_text()) for d in (out, launched))
    assert slurm["map_all"] == reference["map_all"] and slurm["num_train"] == 128


def test_a_slurm_job_with_fewer_tasks_than_devices_names_the_launcher_fix(make_cfg, monkeypatch):
    from pgh.train import train

    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "pgh")
    cfg = make_cfg("dataset=digits", "method=pgh", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    with open_dict(cfg):
        cfg.trainer.sync_batchnorm = False
    with pytest.raises(ValueError, match=r"1 task\(s\) per node but trainer.devices resolves to 2.*tasks_per_node=2"):
        train(cfg)
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # salloc + a shell: not a job step, Lightning runs as usual
    from pgh.config_checks import check_trainer

    check_trainer(cfg.trainer, cfg.method)


def test_ddp_on_the_cpu_with_sync_batchnorm_names_the_fix(make_cfg):
    from pgh.train import train

    cfg = make_cfg("dataset=digits", "method=pgh", "trainer=ddp", "trainer.accelerator=cpu")
    with pytest.raises(ValueError, match="add trainer.sync_batchnorm=false"):
        train(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the hint is for machines without a GPU")
def test_ddp_without_a_gpu_names_the_whole_cpu_fix(make_cfg):
    """The hint lacked trainer.devices, so following it failed in Lightning (devices: -1 on the CPU)."""
    from pgh.config_checks import check_trainer
    from pgh.train import train

    fix = "trainer.accelerator=cpu trainer.devices=2 trainer.sync_batchnorm=false"
    with pytest.raises(ValueError, match=f"or add {fix} for DDP on the CPU"):
        train(make_cfg("dataset=digits", "method=pgh", "trainer=ddp"))
    check_trainer(make_cfg("method=pgh", "trainer=ddp", *fix.split()).trainer, make_cfg("method=pgh").method)
