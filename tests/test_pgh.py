"""PGH end to end on a small digits subset: two progressive rounds, the artefacts they write, and
a resume from a checkpoint taken in the middle of a round (same round and codes; the epoch's remaining
batches reshuffled), and bit-exact resumes at round ends."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import RecordLearningRates, RecordTrainStart, assert_checkpoint_codes_the_database_as_the_run_did
from omegaconf import open_dict
from torch.utils.data import DataLoader, TensorDataset

from pgh.train import train

SMALL = [
    "dataset=digits",
    "method=pgh",
    "features=pixels",
    "bits=16",
    "split.query_per_class=20",
    "split.train_size=128",
    "method.batch_size=32",
    "method.rounds=2",
    "method.progressive.epochs_per_round=2",
    "method.module.width=8",
    "method.module.hidden=32",
    "method.module.z_dim=16",
    "method.module.distill_epochs=1",  # both phases: distillation in epoch 0, the protocol's losses after
    "method.checkpoint_every_n_steps=1",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]  # 128 images / 32 = 4 steps per epoch, 8 per round


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_two_rounds_write_everything(make_cfg):
    cfg = make_cfg(*SMALL)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert metrics["method"] == "pgh" and metrics["rounds_completed"] == 2 and 0 < metrics["map_all"] <= 1
    assert json.loads((out / "metrics.json").read_text())["init_hash"] == "itq"

    rows = read_rows(out / "rounds.csv")
    assert [r["round"] for r in rows] == ["0", "1", "2"]
    assert float(rows[0]["map_all"]) == pytest.approx(metrics["init_map_all"], abs=1e-6)
    assert all(0 < float(r["bit_change"]) <= 1 for r in rows[1:])  # codes change between rounds
    assert all(0 < float(r["map_all"]) <= 1 for r in rows)
    # the last round's codes are the ones evaluated at the end
    assert float(rows[-1]["map_all"]) == pytest.approx(metrics["map_all"], abs=1e-6)
    assert int(rows[-1]["db_distinct_codes"]) == metrics["db_distinct_codes"]
    assert float(rows[-1]["db_bit_correlation"]) == pytest.approx(metrics["db_bit_correlation"], abs=1e-6)
    assert 1 <= int(rows[0]["db_distinct_codes"]) <= metrics["num_database"]  # the initial codes' too

    for t in range(3):
        assert (out / "grids" / f"round_{t}.png").stat().st_size > 0
    logged = read_rows(out / "csv" / "metrics.csv")
    losses = [float(r[k]) for r in logged for k in r if k.startswith("loss/") and r[k]]
    assert losses and all(math.isfinite(v) for v in losses)
    final = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert int(final["state_dict"]["current_round"]) == 2  # the evaluated model, after the last refresh
    assert [r["round"] for r in final["callbacks"]["ProgressiveRounds"]["rows"]] == [0, 1, 2]

    assert_checkpoint_codes_the_database_as_the_run_did(cfg)  # the README's "Using a trained model"


def test_rounds_reach_the_dashboards(make_cfg):
    """logger=tensorboard: every round's grid (round 0 included) and metrics, and the final PR and
    precision@N figures, land in the event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg(*SMALL, "logger=tensorboard")
    train(cfg)
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    grids = events.Images("rounds/grid")
    # at the losses' steps, batches: 8 a round (not Lightning's global_step, 3 optimizer steps a batch)
    assert [g.step for g in grids] == [0, 8, 16]
    assert all(g.width > g.height > 0 for g in grids)  # two rows of grid_size images
    assert [s.step for s in events.Scalars("rounds/map_all")] == [0, 8, 16]  # round 0 starts the curve
    assert [s.step for s in events.Scalars("rounds/bit_change")] == [8, 16]  # round 0 has none
    assert [s.step for s in events.Scalars("loss/d_epoch")] == [3, 7, 11, 15]  # each epoch's last batch
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert (metrics["global_step"], metrics["log_step"]) == (48, 16)
    assert [s.step for s in events.Scalars("map_all")] == [16]
    assert {"pr_curve", "precision_at_n"} <= set(events.Tags()["images"])  # the final figures
    per_class = [tag for tag in events.Tags()["scalars"] if tag.startswith("per_class/map_all/")]
    assert sorted(per_class) == [f"per_class/map_all/{label}" for label in range(10)]  # digits: labels as names


@pytest.mark.slow
def test_rounds_reach_wandb_offline(make_cfg, monkeypatch):
    """logger=wandb (offline): the run's media holds one grid image per round, round 0 included."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(*SMALL, "logger=wandb", "logger.wandb.name=test")
    train(cfg)
    (run,) = Path(cfg.paths.output_dir, "wandb").glob("offline-run-*")
    assert len(list(run.rglob("media/images/rounds/grid_*.png"))) == 3
    assert len(list(run.rglob("media/images/precision_at_n_*.png"))) == 1


def test_vote_refines_the_refreshed_codes_along_the_feature_neighbourhoods(make_cfg):
    """vote_neighbors=k: the conditioning codes after a refresh are the neighbourhood vote of H's
    codes over the k nearest training images in the features group's space (here pixels)."""
    from hydra.utils import instantiate

    from pgh.data import Split
    from pgh.hashing.vote import majority_vote, own_neighbors
    from pgh.methods import PGH

    cfg = make_cfg(*SMALL, "method.progressive.vote_neighbors=4", "method.progressive.vote_iterations=2")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert metrics["rounds_completed"] == 2 and len(read_rows(out / "rounds.csv")) == 3
    model = PGH.load_from_checkpoint(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    dataset, split = instantiate(cfg.dataset), Split.load(out / "split.npz")
    features = instantiate(cfg.features)(dataset.images[split.train])
    h_codes = model.encode_inputs(dataset.images[split.train])
    voted = majority_vote(h_codes, own_neighbors(features, 4), iterations=2)
    assert torch.equal(model.codes.bool(), voted) and not torch.equal(voted, h_codes)


def test_vote_and_learning_rate_settings_are_checked(tmp_path, caplog):
    from pgh.callbacks import ProgressiveRounds

    images, labels = torch.zeros(6, 1, 8, 8, dtype=torch.uint8), torch.zeros(6, dtype=torch.long)
    common = dict(query_images=images, query_labels=labels, db_images=images, db_labels=labels)
    common.update(train_images=images, output_dir=tmp_path, epochs_per_round=1)
    with pytest.raises(ValueError, match="vote_neighbors=-1 must be a whole number >= 0"):
        ProgressiveRounds(**common, vote_neighbors=-1)
    with pytest.raises(ValueError, match=r"vote_neighbors=6 must be below the number of training images \(6\)"):
        ProgressiveRounds(**common, vote_neighbors=6, train_features=torch.zeros(6, 3))
    with pytest.raises(ValueError, match=r"vote_neighbors=3 is odd: .* the bit to 1; use an even k \(2 or 4\)"):
        ProgressiveRounds(**common, vote_neighbors=3, train_features=torch.zeros(6, 3))
    with pytest.raises(ValueError, match="needs train_features"):
        ProgressiveRounds(**common, vote_neighbors=2)
    with pytest.raises(ValueError, match="train_features has 5 rows for 6 training images"):
        ProgressiveRounds(**common, vote_neighbors=2, train_features=torch.zeros(5, 3))
    with pytest.raises(
        ValueError, match="lr_schedule must be one of constant, cosine, cosine_after_warmup, got 'linear'"
    ):
        ProgressiveRounds(**common, lr_schedule="linear")
    with pytest.raises(ValueError, match=r"lr_min_factor must be a fraction in \[0, 1\]"):
        ProgressiveRounds(**common, lr_schedule="cosine", lr_min_factor=1.5)
    assert ProgressiveRounds(**common, grid_size=10).grid_size == 6
    assert "grid_size=10 is more than the 6 training images: the grids show 6 a row" in caplog.text


def test_cosine_schedule_falls_within_each_round_restarts_and_survives_a_resume(make_cfg):
    """Every optimizer's rate is lr * (m + (1 - m) * (1 + cos(pi * p)) / 2) at the batch a fraction p
    into its round (here 2 epochs of 4 batches), written out by hand; a run stopped mid-round and
    resumed goes on with the rates it would have had, from the configured ones the checkpoint keeps."""
    cosine = [*SMALL, "method.progressive.lr_schedule=cosine", "method.progressive.lr_min_factor=0.1"]
    cosine += ["method.module.lr_d=4e-4", "method.module.lr_g=2e-4", "method.module.lr_h=1e-4"]
    probe = "+callbacks.lr._target_=conftest.RecordLearningRates"
    RecordLearningRates.seen.clear()
    train(make_cfg(*cosine, probe, "+trainer.max_steps=33"))  # stops 3 batches into round 2
    stopped = len(RecordLearningRates.seen)
    train(make_cfg(*cosine, probe, "ckpt_path=last"))
    seen = RecordLearningRates.seen
    assert stopped == 11 and [(e, b) for e, b, _ in seen] == [(e, b) for e in range(4) for b in range(4)]
    for epoch, batch, rates in seen:
        factor = 0.1 + 0.9 * (1 + math.cos(math.pi * ((epoch % 2) * 4 + batch) / 8)) / 2
        assert rates == pytest.approx([4e-4 * factor, 2e-4 * factor, 1e-4 * factor], rel=1e-12)
    assert seen[0][2] == pytest.approx([4e-4, 2e-4, 1e-4]) and seen[8][2] == seen[0][2]  # each round restarts


def test_cosine_after_warmup_holds_the_rates_through_the_warm_up_then_falls_to_the_round_end(make_cfg):
    """With the 1-epoch distillation warm-up of 2-epoch rounds: epoch 0 at the configured rates, the
    half cosine over epoch 1 alone (4 batches), then round 2 (epochs 2-3) as plain cosine (8 batches)."""
    schedule = [*SMALL, "method.progressive.lr_schedule=cosine_after_warmup", "method.progressive.lr_min_factor=0.1"]
    RecordLearningRates.seen.clear()
    train(make_cfg(*schedule, "method.module.lr_h=1e-4", "+callbacks.lr._target_=conftest.RecordLearningRates"))
    seen = RecordLearningRates.seen
    assert [(e, b) for e, b, _ in seen] == [(e, b) for e in range(4) for b in range(4)]
    for epoch, batch, rates in seen:
        progress = {0: 0.0, 1: batch / 4}.get(epoch, ((epoch - 2) * 4 + batch) / 8)
        factor = 0.1 + 0.9 * (1 + math.cos(math.pi * progress)) / 2
        assert rates == pytest.approx([2e-4 * factor, 2e-4 * factor, 1e-4 * factor], rel=1e-12)


def test_cosine_after_warmup_counts_the_longer_warm_up_and_holds_a_round_inside_it(tmp_path):
    from types import SimpleNamespace

    from pgh.callbacks import ProgressiveRounds
    from pgh.methods import PGH

    images, labels = torch.zeros(6, 1, 8, 8, dtype=torch.uint8), torch.zeros(6, dtype=torch.long)
    common = dict(query_images=images, query_labels=labels, db_images=images, db_labels=labels)
    callback = ProgressiveRounds(
        **common, train_images=images, output_dir=tmp_path, epochs_per_round=3, lr_schedule="cosine_after_warmup"
    )
    module = PGH(bits=8, num_train=6, width=8, hidden=16, z_dim=8, distill_epochs=4, gan_warmup_epochs=2)
    assert module.warmup_epochs == 4
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    expected = {
        0: 1.0,
        2: 1.0,
        3: 1.0,
        4: 1.0,
        5: (1 + math.cos(math.pi * 3 / 4)) / 2,
        6: 1.0,
        7: (1 + math.cos(math.pi / 3)) / 2,
    }
    for epoch, factor in expected.items():  # round 1 (epochs 0-2) inside the warm-up; round 2 decays over epoch 5
        trainer = SimpleNamespace(optimizers=[optimizer], num_training_batches=2, current_epoch=epoch)
        callback.on_train_batch_start(trainer, module, None, 1 if epoch == 5 else 0)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * factor), epoch


def test_a_cosine_run_resumed_as_constant_goes_back_to_the_configured_rates(tmp_path):
    """The optimizer state restored from a cosine run holds the rate it stopped at: a constant
    schedule puts the configured rate (kept beside it) back instead of training on at that rate."""
    from types import SimpleNamespace

    from pgh.callbacks import ProgressiveRounds

    images, labels = torch.zeros(6, 1, 8, 8, dtype=torch.uint8), torch.zeros(6, dtype=torch.long)
    common = dict(query_images=images, query_labels=labels, db_images=images, db_labels=labels)
    common.update(train_images=images, output_dir=tmp_path, epochs_per_round=2)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    trainer = SimpleNamespace(optimizers=[optimizer], num_training_batches=4, current_epoch=1)
    ProgressiveRounds(**common, lr_schedule="cosine").on_train_batch_start(trainer, None, None, 2)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 6 / 8)) / 2)
    resumed = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    resumed.load_state_dict(optimizer.state_dict())
    trainer.optimizers = [resumed]
    ProgressiveRounds(**common).on_train_batch_start(trainer, None, None, 3)
    assert resumed.param_groups[0]["lr"] == 1e-3


def test_a_resume_takes_the_commands_optimizer_settings_and_a_schedules_configured_rate(caplog):
    """The restored param_groups give way to the configured ones; under a per-round schedule the
    restored `lr` is where the cosine had got to, so the configured rate is compared with the
    `initial_lr` kept beside it (no change, nothing logged) and the schedule re-reads `lr`."""
    from pgh.methods.base import apply_configured_settings

    weights = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
    saved = [torch.optim.Adam([w], lr=2e-4, betas=(0.5, 0.999)) for w in weights]
    saved[0].param_groups[0].update(lr=5e-5, initial_lr=2e-4)  # D's rate a quarter into a cosine round
    restored = [torch.optim.Adam([w], lr=1.0) for w in weights]
    for old, new in zip(saved, restored):
        new.load_state_dict(old.state_dict())
    configured = [torch.optim.Adam([w], lr=2e-4, betas=betas) for w, betas in zip(weights, ((0.5, 0.999), (0.9, 0.99)))]
    with caplog.at_level("INFO", logger="pgh.methods.base"):
        apply_configured_settings(restored, configured)
    assert [o.param_groups[0]["lr"] for o in restored] == [2e-4, 2e-4]
    assert "initial_lr" not in restored[0].param_groups[0]
    assert [tuple(o.param_groups[0]["betas"]) for o in restored] == [(0.5, 0.999), (0.9, 0.99)]
    assert caplog.text.count("from this command") == 1
    changed = "optimizer 1, group 0: betas=(0.9, 0.99) from this command (the checkpoint trained with (0.5, 0.999))"
    assert changed in caplog.text
    with pytest.raises(ValueError, match="restored 2 optimizers, this run configures 1"):
        apply_configured_settings(restored, configured[:1])


def test_restored_rounds_must_have_been_scored_as_this_run_scores(tmp_path):
    # a checkpoint file outside any run has no config.yaml to compare: the rounds it carries say how
    # they were scored (a different eval.map_k crashed the rounds writer, a tie order mixed silently)
    from pgh.callbacks import ProgressiveRounds

    images, labels = torch.zeros(6, 1, 8, 8, dtype=torch.uint8), torch.zeros(6, dtype=torch.long)
    common = dict(query_images=images, query_labels=labels, db_images=images, db_labels=labels)
    common.update(train_images=images, output_dir=tmp_path, epochs_per_round=1)
    scoring = {"map_k": 1000, "precision_k": 100, "radius": 2, "tie_break": "database_order"}
    saved = ProgressiveRounds(**common, eval_kwargs=scoring, initial_metrics={"map_all": 0.5, "map_at_1000": 0.6})
    state = saved.state_dict()
    ProgressiveRounds(**common, eval_kwargs=scoring).load_state_dict(state)
    older = {"rows": state["rows"]}  # a checkpoint from before the scoring was saved: its tie order is unknown
    for tie_break in ("database_order", "random"):
        ProgressiveRounds(**common, eval_kwargs={**scoring, "tie_break": tie_break}).load_state_dict(older)
    ProgressiveRounds(**common, eval_kwargs={**scoring, "radius": 0}).load_state_dict(state)  # not in rounds.csv
    for changed, what in (({"tie_break": "random"}, "tie_break='database_order' there, 'random' here"),
                          ({"map_k": 500}, "map_k=1000 there, 500 here")):  # fmt: skip
        with pytest.raises(ValueError, match=f"other evaluation settings \\({what}.*resume with the checkpoint's eval"):
            ProgressiveRounds(**common, eval_kwargs={**scoring, **changed}).load_state_dict(state)
    with pytest.raises(ValueError, match="rounds scored with map_at_1000, here map_at_500"):
        ProgressiveRounds(**common, eval_kwargs={**scoring, "map_k": 500}).load_state_dict(older)


def test_resume_mid_round_continues_the_same_round_with_the_same_codes(make_cfg, tmp_path):
    """Stopped 3 batches into round 2 and resumed, the run goes on with round 2's codes and that
    epoch's remaining batches (the loader's position and seed are in the checkpoint), and ends with
    the uninterrupted run's rounds and numbers bit for bit."""
    straight = make_cfg(*SMALL, out="straight")
    expected = train(straight)
    RecordTrainStart.seen.clear()
    probe = "+callbacks.probe._target_=conftest.RecordTrainStart"
    # stop ("kill") 3 batches into round 2; Lightning counts one global step per optimizer step,
    # so a batch is 3 global steps (D, G, H): batch 8 + 3 = global step 33
    first = make_cfg(*SMALL, probe, "+trainer.max_steps=33")
    partial = train(first)
    assert partial["rounds_completed"] == 1
    ckpt_path = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 33 and int(ckpt["state_dict"]["current_round"]) == 1
    rows_before = read_rows(Path(first.paths.output_dir) / "rounds.csv")

    resumed = make_cfg(*SMALL, probe, "ckpt_path=last")  # same run dir: Lightning finds last.ckpt
    final = train(resumed)
    start = RecordTrainStart.seen[-1]
    assert start["round"] == 1 and start["global_step"] == 33 and start["epoch"] == 2
    assert torch.equal(start["codes"], ckpt["state_dict"]["codes"])
    assert final["rounds_completed"] == 2
    rows = read_rows(Path(resumed.paths.output_dir) / "rounds.csv")
    assert [r["round"] for r in rows] == ["0", "1", "2"] and rows[:2] == rows_before
    assert rows == read_rows(tmp_path / "straight" / "rounds.csv") and final["map_all"] == expected["map_all"]


def test_a_resume_in_round_0_does_not_log_round_0_again(make_cfg, tmp_path):
    """Round 0's metrics start the curves once, at step 0: a run stopped inside round 0 and resumed
    logged them again at the resume's step, a second point of round 0 in csv/metrics.csv."""
    straight = make_cfg(*SMALL, out="straight")
    train(straight)
    train(make_cfg(*SMALL, "+trainer.max_steps=15"))  # 5 batches of 3 steps: epoch 1 of round 0
    train(make_cfg(*SMALL, "ckpt_path=last"))

    def map_steps(run: Path) -> list[str]:
        return [r["step"] for r in read_rows(run / "csv" / "metrics.csv") if r.get("rounds/map_all")]

    assert map_steps(tmp_path / "straight") == ["0", "8", "16"]
    assert map_steps(tmp_path / "run") == map_steps(tmp_path / "straight")


def test_resume_at_a_round_boundary_repeats_the_uninterrupted_run(make_cfg, tmp_path):
    """The checkpoint holds the random generators' states: a run stopped after round 1 and resumed
    to round 2 draws the same batches, noise and jitter as one run of two rounds, bit for bit, also
    after a resume in between that trained nothing (it saved the generator Lightning's data setup
    had drawn from, and the extension came out different)."""
    straight = make_cfg(*SMALL, out="straight")
    expected = train(straight)

    first = train(make_cfg(*SMALL, "method.rounds=1"))
    assert train(make_cfg(*SMALL, "method.rounds=1", "ckpt_path=last"))["map_all"] == first["map_all"]
    resumed = train(make_cfg(*SMALL, "ckpt_path=last"))
    assert resumed["rounds_completed"] == 2
    assert read_rows(tmp_path / "run" / "rounds.csv") == read_rows(tmp_path / "straight" / "rounds.csv")
    assert resumed["map_all"] == expected["map_all"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert set(ckpt["callbacks"]["RandomState"]) == {"torch", "cuda", "numpy", "python"}


def test_a_run_resumed_in_a_copied_directory_replaces_its_last_checkpoint(make_cfg, tmp_path):
    """Lightning saw another dirpath in the checkpoint and wrote last-v1.ckpt beside the copied
    last.ckpt, which pgh-index and RunEncoder load: they coded with the earlier model."""
    import shutil

    train(make_cfg(*SMALL, "method.rounds=1"))
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    resumed = make_cfg(*SMALL, "ckpt_path=last")
    with open_dict(resumed):
        resumed.paths.output_dir = str(tmp_path / "copy")
    assert train(resumed)["rounds_completed"] == 2
    assert sorted(p.name for p in (tmp_path / "copy" / "checkpoints").iterdir()) == ["last.ckpt"]
    assert_checkpoint_codes_the_database_as_the_run_did(resumed)


def test_a_resume_that_describes_another_run_stops_before_rewriting_it(make_cfg, tmp_path):
    """ckpt_path=last with another bits (or data, split, seed, method) than the run's: Lightning failed
    on the checkpoint only after config.yaml and split.npz had been replaced by the new command's."""
    train(make_cfg(*SMALL, "method.rounds=1"))
    run = tmp_path / "run"
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "split.npz", "metrics.json")}
    with pytest.raises(ValueError, match=r"resumes the run in .*run, but this command describes another run \(bits: "
                       r"16 there, 32 here; split: .*query_per_class.*\): give that run's settings"):  # fmt: skip
        train(make_cfg(*SMALL, "bits=32", "split.query_per_class=10", "ckpt_path=last"))
    assert {name: (run / name).read_bytes() for name in before} == before
    with pytest.raises(ValueError, match=r"another run \(method.module.width: 8 there, 16 here\)"):  # network sizes
        train(make_cfg(*SMALL, "method.module.width=16", "ckpt_path=last"))
    assert {name: (run / name).read_bytes() for name in before} == before
    # what a resume may change: the length of training, where the data sits, how features are batched
    resumed = train(make_cfg(*SMALL, "ckpt_path=last", "features.batch_size=7"))
    assert resumed["rounds_completed"] == 2


def test_a_requeued_run_resumes_its_own_checkpoint_else_starts_as_configured(make_cfg, tmp_path):
    """requeued=true (what hydra/launcher=slurm|local add to a rerun after a preemption): with
    checkpoints in the run directory it continues from them; without, it starts as configured, here
    from another run's checkpoint given as ckpt_path (a fine-tuning job preempted early)."""
    RecordTrainStart.seen.clear()
    probe = "+callbacks.probe._target_=conftest.RecordTrainStart"
    train(make_cfg(*SMALL, "method.rounds=1"))  # tmp_path/run: one round, checkpoints
    resumed = train(make_cfg(*SMALL, probe, "requeued=true"))
    assert (RecordTrainStart.seen[-1]["round"], RecordTrainStart.seen[-1]["global_step"]) == (1, 24)
    assert resumed["rounds_completed"] == 2

    given = f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"  # the two-round model
    fresh = make_cfg(*SMALL, probe, "requeued=true", given, "method.rounds=3")
    with open_dict(fresh):
        fresh.paths.output_dir = str(tmp_path / "finetune")  # no checkpoints of its own yet
    assert train(fresh)["rounds_completed"] == 3
    assert (RecordTrainStart.seen[-1]["round"], RecordTrainStart.seen[-1]["global_step"]) == (2, 48)


@pytest.mark.parametrize("threshold", [1.0, 0.0])
def test_a_warm_up_that_ends_before_h_carries_the_codes_is_named(make_cfg, caplog, threshold):
    """codes/agreement (the share of real images' bits H gives as their condition) is logged every
    epoch; below distill_min_agreement at the warm-up's end, a warning names the fix."""
    import logging

    cfg = make_cfg(*SMALL, "method.rounds=1", f"method.module.distill_min_agreement={threshold}")
    with caplog.at_level(logging.WARNING, logger="pgh.methods.pgh"):
        train(cfg)
    logged = read_rows(Path(cfg.paths.output_dir) / "csv" / "metrics.csv")
    by_epoch = [float(r["codes/agreement_epoch"]) for r in logged if r.get("codes/agreement_epoch")]
    assert len(by_epoch) == 2 and all(0 < a < 1 for a in by_epoch)
    warnings = [r.getMessage() for r in caplog.records if "distillation warm-up's last epoch" in r.getMessage()]
    if threshold == 0.0:
        assert warnings == []
    else:  # epoch 0 is the whole warm-up: 4 batches of 32 images
        (warning,) = warnings
        assert f"ends with H giving only {100 * by_epoch[0]:.1f}% of the training images' bits" in warning
        assert "(epoch 0, counting from 0)" in warning
        assert "Raise method.module.distill_epochs (4 batches so far)" in warning


def test_a_run_that_ends_inside_the_warm_up_is_checked_at_its_last_epoch(make_cfg, caplog):
    import logging

    cfg = make_cfg(*SMALL, "method.rounds=1", "method.module.distill_epochs=5", "method.module.distill_min_agreement=1")
    with caplog.at_level(logging.WARNING, logger="pgh.methods.pgh"):
        train(cfg)  # 2 epochs, both in the warm-up
    (warning,) = [r.getMessage() for r in caplog.records if "warm-up's last epoch" in r.getMessage()]
    assert "(epoch 1, counting from 0)" in warning
    assert "The run (2 epochs) ends inside the warm-up (distill_epochs=5): train longer" in warning


def test_init_features_give_the_round_0_codes_and_the_features_group_the_neighbourhoods(make_cfg, tmp_path):
    """method.init_features=pixels with features=gist: round 0 is ITQ on pixels (what pgh-train's own
    ITQ+pixels run scores on the same split and seed), the vote's neighbours come from GIST."""
    from hydra.utils import instantiate

    from pgh.data import Split
    from pgh.hashing.vote import majority_vote, own_neighbors
    from pgh.methods import PGH

    def at(cfg, name: str):
        cfg.paths.output_dir = str(tmp_path / name)
        return cfg

    gist = [o for o in SMALL if not o.startswith("features=")] + ["features=gist", "method.rounds=1"]
    gist += ["method.progressive.vote_neighbors=4", "method.progressive.vote_iterations=2"]
    cfg = make_cfg(*gist, "method.init_features=pixels")
    run = train(cfg)
    assert (run["init_features"], run["features"]) == ("pixels", "gist")
    itq = ("dataset=digits", "features=pixels", "method=itq", "bits=16", "split.query_per_class=20")
    itq += ("split.train_size=128",)
    assert run["init_map_all"] == pytest.approx(train(at(make_cfg(*itq), "itq"))["map_all"], abs=1e-12)

    out = Path(cfg.paths.output_dir)
    model = PGH.load_from_checkpoint(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    dataset, split = instantiate(cfg.dataset), Split.load(out / "split.npz")
    features = instantiate(cfg.features)(dataset.images[split.train])  # GIST
    h_codes = model.encode_inputs(dataset.images[split.train])
    assert torch.equal(model.codes.bool(), majority_vote(h_codes, own_neighbors(features, 4), 2))

    assert train(at(make_cfg(*SMALL, "method.rounds=1"), "px"))["init_features"] == "pixels"  # null: the group's
    with pytest.raises(ValueError, match=r"method.init_features='hog' is not one of \['gist', 'pixels', 'vgg16_fc7'\]"):
        train(at(make_cfg(*gist, "method.init_features=hog"), "bad"))
    assert not (tmp_path / "bad").exists()  # refused before any file
    with pytest.raises(ValueError, match=r"method.init_features: pixels there, None here"):
        train(make_cfg(*gist, "method.rounds=2", "ckpt_path=last"))
    # naming the features group's own file, as it stands, is the same run as null: it resumes
    resumed = train(at(make_cfg(*SMALL, "method.rounds=2", "method.init_features=pixels", "ckpt_path=last"), "px"))
    assert resumed["rounds_completed"] == 2


@pytest.mark.parametrize("reset", [True, False])
def test_reset_gan_each_round_clears_d_and_g_optimizers_but_not_hs(make_cfg, reset):
    """reset_gan_each_round: at a round's end G and D start afresh, so their Adam moments go too;
    H, which carries the codes from round to round, keeps its own."""
    from conftest import RecordOptimizerStates

    RecordOptimizerStates.seen.clear()
    probe = "+callbacks.opt._target_=conftest.RecordOptimizerStates"
    train(make_cfg(*SMALL, f"method.progressive.reset_gan_each_round={reset}", probe))
    # epochs 1 and 3 end the two rounds; optimizers in the order D, G, H
    expected = [False, False, True] if reset else [True, True, True]
    assert RecordOptimizerStates.seen == [(0, [True] * 3), (1, expected), (2, [True] * 3), (3, expected)]


def test_converge_bit_change_stops_below_it_not_at_it(make_cfg):
    """converge_bit_change=c stops when fewer than c of the bits changed: with 0, a round that changed
    no bit does not stop the run (nothing changes fewer than no bits)."""
    run = train(make_cfg(*SMALL, "method.progressive.converge_bit_change=0", "method.module.lr_h=0",
                         "method.progressive.vote_neighbors=0", "method.rounds=3"))  # fmt: skip
    assert run["rounds_completed"] == 3


@pytest.mark.parametrize(
    "override,message",
    [
        ("method.module.lam=-1", r"method.module: lam=-1 must be a finite number >= 0"),
        ("method.module.quantization_weight=-1", r"quantization_weight=-1 must be a finite number >= 0"),
        ("method.module.gamma=-0.5", r"gamma=-0.5 must be a finite number >= 0"),
        ("method.module.lr_g=-0.001", r"lr_g=-0.001 must be a finite number >= 0"),
        ("method.module.betas=[1.5,0.9]", r"betas=\[1.5, 0.9\] must each be in \[0, 1\)"),
        ("method.module.betas=[0.5]", r"betas=\[0.5\] must be two numbers"),
        ("method.module.betas_h=[0.9,1.0]", r"betas_h=\[0.9, 1.0\] must each be in \[0, 1\)"),
        ("method.batch_size=1", r"method.batch_size=1 must be a whole number of images, at least 2"),
        ("method.progressive.epochs_per_round=0", r"progressive: epochs_per_round=0 must be a whole number >= 1"),
        ("method.progressive.grid_size=0", r"method.progressive: grid_size=0 must be a whole number >= 1"),
        ("method.progressive.vote_neighbors=2.0", r"progressive: vote_neighbors=2.0 must be a whole number >= 0"),
        ("method.progressive.vote_neighbors=3", r"method.progressive: vote_neighbors=3 is odd"),
        ("method.progressive.vote_iterations=2.5", r"vote_iterations=2.5 must be a whole number >= 1"),
        ("method.progressive.converge_bit_change=5", r"converge_bit_change must be a fraction in \[0, 1\], got 5"),
        ("method.module.gan_warmup_epochs=null", r"gan_warmup_epochs=None must be a whole number >= 0 of epochs"),
        ("method.progressive.lr_schedule=linear", r"method.progressive: lr_schedule must be one of constant, cosine"),
        ("method.progressive.lr_min_factor=2", r"method.progressive: lr_min_factor must be a fraction in \[0, 1\]"),
        ("method.num_workers=-1", r"method.num_workers=-1 must be a whole number >= 0 of data-loading processes"),
        ("method.checkpoint_every_n_steps=-1", r"method.checkpoint_every_n_steps=-1 must be a whole number >= 0"),
        ("method.module.h_ema_decay=1.0", r"h_ema_decay must be in \[0, 1\) \(0: off\), got 1.0"),
        ("method.module.distill_epochs=2.5", r"distill_epochs=2.5 must be a whole number >= 0 of epochs"),
    ],
)
def test_bad_pgh_settings_are_refused_before_any_work(make_cfg, tmp_path, monkeypatch, override, message):
    """Refused before the features and the initial codes, naming the key (some were accepted: a
    negative λ; others failed in the first step, in torch's words, or divided by zero)."""
    import pgh.train

    monkeypatch.setattr(pgh.train, "cached_features", lambda *a, **k: pytest.fail("features computed first"))
    with pytest.raises(ValueError, match=message):
        train(make_cfg(*SMALL, override))
    assert not (tmp_path / "run").exists()


def test_bad_pgh_settings(make_cfg):
    with pytest.raises(ValueError, match="init_hash"):
        train(make_cfg(*SMALL, "method.init_hash=pca"))
    with pytest.raises(Exception, match=r"distill_min_agreement must be in \[0, 1\], got 80"):
        train(make_cfg(*SMALL, "method.module.distill_min_agreement=80"))
    with pytest.raises(Exception, match="negative"):
        train(make_cfg(*SMALL, "method.module.negative=nearest"))


def test_a_bool_epochs_per_round_is_refused_not_taken_as_one(make_cfg, tmp_path, monkeypatch):
    """epochs_per_round=true is a bool, which Python counts as the int 1: without the bool check it
    passed as rounds of one epoch."""
    import pgh.train

    monkeypatch.setattr(pgh.train, "cached_features", lambda *a, **k: pytest.fail("features computed first"))
    with pytest.raises(
        ValueError, match=r"method.progressive: epochs_per_round=True must be a whole number >= 1 of epochs"
    ):
        train(make_cfg(*SMALL, "method.progressive.epochs_per_round=true"))
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a CUDA device")
def test_gpu_trainer_without_cuda_fails_first_and_names_the_fix(make_cfg):
    cfg = make_cfg(*SMALL, "trainer=gpu")
    with pytest.raises(ValueError, match="no CUDA device.*add trainer=cpu"):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()  # before anything is computed or written


def test_bf16_mixed_precision_runs_the_same_job(make_cfg):
    """trainer.precision=bf16-mixed (CPU autocast here; an option on the GPU) trains, refreshes
    and evaluates like full precision."""
    metrics = train(make_cfg(*SMALL, "trainer.precision=bf16-mixed"))
    assert metrics["rounds_completed"] == 2 and 0 < metrics["map_all"] <= 1


def fit_tiny(model, epochs: int, precision: str = "32-true") -> None:
    """Fit a PGH built for 32 training images on random 28-px images and codes, 2 batches an epoch."""
    torch.manual_seed(0)
    model.set_codes(torch.randint(0, 2, (32, model.hparams.bits)))
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, torch.arange(32)), batch_size=16)
    L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, loader)


def test_gan_warmup_leaves_h_untouched():
    from pgh.methods import PGH

    model = PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8, gan_warmup_epochs=1)
    h_before = {k: v.clone() for k, v in model.H.named_parameters()}
    g_before = next(model.G.parameters()).clone()
    fit_tiny(model, epochs=1)
    h_after = dict(model.H.named_parameters())
    assert all(torch.equal(v, h_after[k]) for k, v in h_before.items())  # H not stepped in the warm-up
    assert not torch.equal(g_before, next(model.G.parameters()))  # G was
    with pytest.raises(ValueError, match="gan_warmup_epochs"):
        PGH(bits=8, num_train=32, gan_warmup_epochs=-1)
    # the distillation counts from epoch 0 too: inside the GAN's warm-up, where H does not train, it never ran
    with pytest.raises(ValueError, match=r"distill_epochs=10 ends inside gan_warmup_epochs=15.*above 15.*or 0"):
        PGH(bits=8, num_train=32, gan_warmup_epochs=15)
    PGH(bits=8, num_train=32, gan_warmup_epochs=15, distill_epochs=0)


def test_distill_epochs_pull_h_towards_the_conditioning_codes_first(monkeypatch):
    """The first `distill_epochs` epochs use the conditioning codes as H's quantisation target, the
    later ones the protocol's own binarisation."""
    import pgh.methods.pgh as pgh_module
    from pgh.methods import PGH

    calls: list[tuple[str, int]] = []
    model = PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8, distill_epochs=1)
    for name in ("code_target_loss", "quantization_loss"):
        original = getattr(pgh_module, name)

        def spy(*args, _name=name, _original=original):
            calls.append((_name, model.current_epoch))
            return _original(*args)

        monkeypatch.setattr(pgh_module, name, spy)
    fit_tiny(model, epochs=2)
    assert calls == [("code_target_loss", 0)] * 2 + [("quantization_loss", 1)] * 2
    with pytest.raises(ValueError, match="distill_epochs"):
        PGH(bits=8, num_train=32, distill_epochs=-2)


@pytest.mark.parametrize("distill_epochs", [1, 0])
def test_each_network_and_loss_gets_the_protocols_tensors(monkeypatch, distill_epochs):
    """One training step, wired as PROTOCOL.md writes it: G draws x̄_i = G(z|b_i) and x̄_j = G(z'|b_j)
    with b_j another image's code; D scores (x_i, b_i) against (x̄_i, b_i) and G's adversarial loss
    D(x̄_i, b_i); H codes [x_i, x̄_i, x̄_j] and the triplet gets (anchor, positive, negative) in that
    order; the distillation targets are (b_i, b_i, b_j). The jitter is off, so H sees the images."""
    import pgh.methods.pgh as pgh_module
    from pgh.methods import PGH

    model = PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8, distill_epochs=distill_epochs,
                augment_shift=0.0, augment_degrees=0.0)  # fmt: skip
    seen: dict[str, list] = {"G": [], "D": [], "H": [], "batch": [], "triplet": [], "targets": []}
    model.G.register_forward_hook(lambda m, args, out: seen["G"].append((args[1].detach().clone(), out.detach())))
    model.D.register_forward_hook(lambda m, args, out: seen["D"].append((args[0].detach(), args[1].detach().clone())))
    model.H.register_forward_hook(lambda m, args, out: seen["H"].append((args[0].detach(), out.detach())))
    step = model.training_step

    def record_step(batch, batch_idx):
        seen["batch"].append(batch[1].clone())
        return step(batch, batch_idx)

    monkeypatch.setattr(model, "training_step", record_step)
    triplet, targets = pgh_module.triplet_loss, pgh_module.code_target_loss

    def spy_triplet(*args):
        seen["triplet"].append([a.detach() for a in args[:3]])
        return triplet(*args)

    def spy_targets(pairs):
        seen["targets"].append([target.detach().clone() for _, target in pairs])
        return targets(pairs)

    monkeypatch.setattr(pgh_module, "triplet_loss", spy_triplet)
    monkeypatch.setattr(pgh_module, "code_target_loss", spy_targets)
    fit_tiny(model, epochs=1)

    codes = model.codes.float()  # no refresh in this run: the codes it trained on
    index = seen["batch"][0]
    b_i = codes[index]
    (cond_same, fake_same), (cond_other, fake_other) = seen["G"][:2]
    assert torch.equal(cond_same, b_i)
    assert not torch.equal(cond_other, b_i)
    assert all(any(torch.equal(row, b) for b in b_i) for row in cond_other)  # codes of the batch's other images
    (real, d_real), (fake_for_d, d_fake), (fake_for_g, d_g) = seen["D"][:3]
    assert torch.equal(d_real, b_i) and torch.equal(d_fake, b_i) and torch.equal(d_g, b_i)
    assert torch.equal(fake_for_d, fake_same) and torch.equal(fake_for_g, fake_same)
    h_input, h_out = seen["H"][0]
    n = index.numel()
    assert torch.equal(h_input[:n], real) and torch.equal(h_input[n : 2 * n], fake_same)
    assert torch.equal(h_input[2 * n :], fake_other)
    anchor, positive, negative = seen["triplet"][0]
    assert torch.equal(anchor, h_out[:n].float()) and torch.equal(positive, h_out[n : 2 * n].float())
    assert torch.equal(negative, h_out[2 * n :].float())
    if distill_epochs:
        wanted = (b_i, b_i, cond_other)
        assert all(torch.equal(t.float(), want) for t, want in zip(seen["targets"][0], wanted, strict=True))
    else:
        assert not seen["targets"]  # the protocol's own binarisation from the first step


def test_losses_on_h_run_in_float32_under_bf16_mixed(monkeypatch):
    """Under bf16-mixed H's sigmoids come out in bfloat16; the triplet and quantisation losses get
    them in float32 (a bfloat16 L1 sum over the bits steps by 0.125 or more near the margin)."""
    import pgh.methods.pgh as pgh_module
    from pgh.methods import PGH

    seen: list[torch.dtype] = []
    for name in ("triplet_loss", "quantization_loss", "code_target_loss"):
        original = getattr(pgh_module, name)

        def spy(*args, _original=original):
            # triplet / quantisation: the h tensors themselves; code_target_loss: a list of (h, target)
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            tensors += [h for a in args if isinstance(a, list) for h, _ in a]
            seen.extend(t.dtype for t in tensors)
            return _original(*args)

        monkeypatch.setattr(pgh_module, name, spy)
    fit_tiny(PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8, distill_epochs=1), epochs=2, precision="bf16-mixed")
    assert seen and set(seen) == {torch.float32}


def test_augment_jitters_what_h_trains_on_but_not_what_it_encodes(monkeypatch):
    """augment_* reach the jitter of H's training batch (real, same-code and other-code images in one
    call); encoding the database never jitters."""
    import pgh.methods.pgh as pgh_module
    from pgh.methods import PGH

    calls: list[tuple] = []
    affine, contrast = pgh_module.random_affine, pgh_module.random_contrast

    def spy_affine(x, *args):
        calls.append(("affine", x.shape[0], *args))
        return affine(x, *args)

    def spy_contrast(x, *args):
        calls.append(("contrast", x.shape[0], *args))
        return contrast(x, *args)

    monkeypatch.setattr(pgh_module, "random_affine", spy_affine)
    monkeypatch.setattr(pgh_module, "random_contrast", spy_contrast)
    model = PGH(
        bits=8, num_train=32, width=8, hidden=16, z_dim=8, augment_shift=2.0, augment_degrees=10.0,
        augment_scale=0.1, augment_flip=True, augment_contrast=0.3,
    )  # fmt: skip
    fit_tiny(model, epochs=1)
    # 2 batches of 16 real + 16 + 16 synthetic images
    assert calls == [("affine", 48, 2.0, 10.0, 0.1, True), ("contrast", 48, 0.3)] * 2
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    codes = model.encode_inputs(images)
    assert len(calls) == 4 and torch.equal(codes, model.encode_inputs(images))
    for name, value, message in (
        ("augment_shift", -1.0, ">= 0"),
        ("augment_scale", 1.0, r"in \[0, 1\)"),
        ("augment_contrast", -0.1, ">= 0"),
    ):
        with pytest.raises(ValueError, match=f"{name}(=\\S+)? must be (a finite number )?{message}"):
            PGH(bits=8, num_train=32, **{name: value})


def test_neighborhood_term_scores_real_images_and_their_neighbours_after_the_warm_up(monkeypatch):
    """neighborhood_weight > 0: after the distillation epochs H also reads one K1 neighbour of each real
    image, and BGAN's l_N runs over the 2n codes with the released rule's S for those indices."""
    import pgh.methods.pgh as pgh_module
    from pgh.methods import PGH
    from pgh.methods.bgan_similarity import batch_similarity as reference_similarity
    from pgh.methods.bgan_similarity import knn_indices, released_lists

    model = PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8, distill_epochs=1, neighborhood_weight=2.0,
                neighborhood_k1=3, neighborhood_k2=4)  # fmt: skip
    features = torch.randn(32, 5, generator=torch.Generator().manual_seed(2))
    calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    original = pgh_module.neighborhood_loss

    def spy(codes, s, positive_weight):
        calls.append((model.current_epoch, codes.detach(), s))
        assert positive_weight == 10.0 and codes.min() >= -1 and codes.max() <= 1
        assert not torch.is_autocast_enabled("cpu")  # float32 inner products under bf16-mixed too
        return original(codes, s, positive_weight)

    monkeypatch.setattr(pgh_module, "neighborhood_loss", spy)
    with pytest.raises(RuntimeError, match="needs on_before_fit"):
        fit_tiny(model, epochs=2)
    calls.clear()
    model.on_before_fit(torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8), features)
    fit_tiny(model, epochs=2)
    assert [epoch for epoch, _, _ in calls] == [1, 1]  # not in the warm-up epoch
    bf16 = PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8, distill_epochs=0, neighborhood_weight=2.0,
               neighborhood_k1=3, neighborhood_k2=4)  # fmt: skip
    bf16.on_before_fit(torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8), features)
    model = bf16  # the spy reads model.current_epoch
    fit_tiny(bf16, epochs=1, precision="bf16-mixed")
    assert len(calls) == 4
    assert all(codes.shape == (32, 8) and s.shape == (32, 32) for _, codes, s in calls)
    similar = released_lists(knn_indices(features, 3, "cosine"), 4)
    everything = reference_similarity(similar, torch.arange(32), similar.shape[1], "released")
    for _, _, s in calls:  # S of the batch's 16 images and their 16 neighbours: a block of the full S
        assert torch.equal(s[:16, :16], everything[:16, :16]) or torch.equal(s[:16, :16], everything[16:, 16:])
        assert s[16:, 16:].diagonal().eq(1).all() and s[:16, 16:].sum() >= 16  # each neighbour is similar
    PGH(bits=8, num_train=2, neighborhood_k1=20)  # the term off: no neighbours needed
    bad_settings = [
        ({"neighborhood_k1": 32, "neighborhood_weight": 1.0}, "neighborhood_k1=32 must be a whole number in 1..31"),
        ({"neighborhood_k2": 0}, "neighborhood_k2=0 must be a whole number"),
        ({"neighborhood_weight": -1.0}, "neighborhood_weight=-1.0 must be a finite number >= 0"),
    ]
    for bad, message in bad_settings:
        with pytest.raises(ValueError, match=message):
            PGH(bits=8, num_train=32, **bad)


def test_anchor_pulls_real_codes_towards_the_round_0_codes_after_the_warm_up(monkeypatch):
    """anchor_weight > 0: after the distillation epochs, one more code_target_loss term pulls H(x_i)
    towards the codes given with set_codes(initial=True), which later set_codes calls leave alone."""
    import pgh.methods.pgh as pgh_module
    from pgh.methods import PGH

    model = PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8, distill_epochs=1, anchor_weight=0.5)
    initial = torch.randint(0, 2, (32, 8), generator=torch.Generator().manual_seed(1))
    model.set_codes(initial, initial=True)
    model.set_codes(1 - initial)  # a later round's codes
    assert torch.equal(model.initial_codes, initial.float()) and torch.equal(model.codes, 1 - initial.float())

    targets: list[tuple[int, torch.Tensor]] = []
    original = pgh_module.code_target_loss

    def spy(pairs):
        targets.append((model.current_epoch, torch.cat([b for _, b in pairs])))
        return original(pairs)

    monkeypatch.setattr(pgh_module, "code_target_loss", spy)
    fit_tiny(model, epochs=2)  # its own random conditioning codes; the anchor stays `initial`
    # epoch 0: the distillation target (b_i, b_i, b_j) of each batch; epoch 1: the anchor alone
    assert [epoch for epoch, _ in targets] == [0, 0, 1, 1]
    assert [t.shape[0] for _, t in targets] == [48, 48, 16, 16]
    torch.testing.assert_close(torch.cat([t for _, t in targets[2:]]), initial.float())
    assert "initial_codes" in model.state_dict()
    with pytest.raises(ValueError, match="anchor_weight=.* must be a finite number >= 0"):
        PGH(bits=8, num_train=32, anchor_weight=-1.0)


def test_checkpoint_from_before_the_anchor_loads_without_one(tmp_path):
    """A checkpoint without `initial_codes` (written before anchor_weight existed) loads, with its
    conditioning codes in that buffer's place; with an anchor asked for, it fails and says why."""
    from pgh.methods import PGH

    model = PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8)
    model.set_codes(torch.randint(0, 2, (32, 8), generator=torch.Generator().manual_seed(1)))
    state = {k: v for k, v in model.state_dict().items() if k != "initial_codes"}
    path = tmp_path / "old.ckpt"
    hparams, version = dict(model.hparams), {"pytorch-lightning_version": L.__version__}
    torch.save({"state_dict": state, "hyper_parameters": hparams, **version}, path)
    loaded = PGH.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    assert torch.equal(loaded.codes, model.codes) and torch.equal(loaded.initial_codes, model.codes)
    torch.save({"state_dict": state, "hyper_parameters": {**hparams, "anchor_weight": 0.3}, **version}, path)
    with pytest.raises(ValueError, match="resume it with method.module.anchor_weight=0"):
        PGH.load_from_checkpoint(path, map_location="cpu", weights_only=False)


def test_h_weight_average_follows_h_and_gives_the_codes():
    """h_ema_decay = d: at the t-th H step every floating-point tensor of H_ema's state (weights and
    BatchNorm statistics) becomes d_t·H_ema + (1 − d_t)·H, d_t = min(d, (1 + t)/(10 + t)), the batch
    counter is copied, and the codes come from H_ema, not from H."""
    from pgh.methods import PGH

    model = PGH(bits=8, num_train=32, width=8, hidden=16, z_dim=8, h_ema_decay=0.75)
    assert not any(p.requires_grad for p in model.H_ema.parameters())
    assert {id(p) for p in model.configure_optimizers()[2].param_groups[0]["params"]} == {
        id(p) for p in model.H.parameters()
    }
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    model.H.train()
    model.H(model.prepare(images))  # BatchNorm statistics and counter move in H only
    with torch.no_grad():
        for p in model.H.parameters():
            p.add_(torch.randn_like(p))
    for t, decay in [(0, 0.1), (1, 2 / 11), (2, 0.25), (3, 4 / 13), (4, 5 / 14), (100, 0.75)]:
        model.h_ema_updates.fill_(t)
        before = {k: v.clone() for k, v in model.H_ema.state_dict().items()}
        model.update_h_ema()
        assert int(model.h_ema_updates) == t + 1
        for key, value in model.H_ema.state_dict().items():
            current = model.H.state_dict()[key]
            expected = decay * before[key] + (1 - decay) * current if value.is_floating_point() else current
            assert torch.allclose(value, expected), (t, key)
    codes = model.encode_inputs(images)
    assert torch.equal(codes, model.H_ema.encode(model.prepare(images)))
    with torch.no_grad():
        for p in model.H.parameters():
            p.mul_(-1)  # H alone changes: the codes do not
    assert torch.equal(model.encode_inputs(images), codes)


def test_a_run_with_h_weight_average_resumes_exactly_and_only_with_it(make_cfg, tmp_path):
    """H_ema is in the checkpoint: a run stopped after round 1 and resumed repeats the straight run
    bit for bit; a resume that switches it on or off is another run, refused before anything is
    rewritten, while a run from before the key existed (no h_ema_decay in its config.yaml) resumes."""
    ema = [*SMALL, "method.module.h_ema_decay=0.5"]
    straight = make_cfg(*ema, out="straight")
    expected = train(straight)
    train(make_cfg(*ema, "method.rounds=1"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("H_ema.") for k in ckpt["state_dict"]) and int(ckpt["state_dict"]["h_ema_updates"]) > 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"method.module.h_ema_decay: 0.5 there, 0.0 here"):
        train(make_cfg(*SMALL, "ckpt_path=last"))
    assert (tmp_path / "run" / "config.yaml").read_text() == config
    assert train(make_cfg(*ema, "ckpt_path=last"))["map_all"] == expected["map_all"]
    assert read_rows(tmp_path / "run" / "rounds.csv") == read_rows(tmp_path / "straight" / "rounds.csv")

    def in_old(*overrides):
        cfg = make_cfg(*overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "old")
        return cfg

    train(in_old(*SMALL, "method.rounds=1"))
    saved = tmp_path / "old" / "config.yaml"
    saved.write_text("\n".join(line for line in saved.read_text().splitlines() if "h_ema_decay" not in line))
    assert train(in_old(*SMALL, "ckpt_path=last"))["rounds_completed"] == 2


EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_builds_its_pgh(make_cfg, experiment):
    from hydra.utils import instantiate

    from pgh.methods import PGH

    cfg = make_cfg(f"experiment={experiment}")
    model = instantiate(cfg.method.module, num_train=64)  # above the neighbourhood term's K1 where it is on
    assert isinstance(model, PGH) and model.codes.shape == (64, cfg.bits)
    assert cfg.method.module.distill_epochs < cfg.method.progressive.epochs_per_round  # round 1 is not all warm-up


def test_random_state_round_trip_and_a_checkpoint_with_a_cuda_state():
    """Every generator comes back; the CUDA state is this process's device's alone (under DDP rank 0
    saves it and each rank loads it into its own device), and without CUDA it warns."""
    import random

    from pgh.callbacks import RandomState

    saved = RandomState().state_dict()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()  # move every generator on
    RandomState().load_state_dict(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1]) and again[2] == expected[2]

    if torch.cuda.is_available():
        assert len(saved["cuda"]) == 1
        expected_cuda = torch.rand(3, device="cuda")
        torch.rand(5, device="cuda")
        RandomState().load_state_dict(saved)
        assert torch.equal(torch.rand(3, device="cuda"), expected_cuda)
    else:
        assert saved["cuda"] == []
        with_cuda = {**saved, "cuda": [torch.zeros(16, dtype=torch.uint8)]}
        with pytest.warns(UserWarning, match="holds a CUDA generator state and this machine has no CUDA device"):
            RandomState().load_state_dict(with_cuda)


@pytest.mark.slow
def test_a_sweep_rerun_with_ckpt_path_last_finishes_what_is_missing(tmp_path):
    """The README's way to resume a sweep: the same command, the same hydra.sweep.dir, plus
    ckpt_path=last. A finished job reloads its final checkpoint and reports the same numbers; a job
    that never ran (its directory removed here) runs from scratch."""
    import json
    import shutil

    from conftest import run_python

    sweep = tmp_path / "sweep"
    command = ["-m", "pgh.train", "-m", *SMALL, "logger=none", "method.rounds=1"]
    command += ["method.module.quantization_weight=0.3,0.1", f"hydra.sweep.dir={sweep}"]

    def run_sweep(*extra: str) -> dict[str, float]:
        run_python(*command, *extra, tmp_path=tmp_path)
        return {p.parent.name: json.loads(p.read_text())["map_all"] for p in sorted(sweep.glob("*/metrics.json"))}

    first = run_sweep()
    assert len(first) == 2
    for job in (d for d in sweep.iterdir() if d.name[0].isdigit()):  # the closing line is in each job's log too
        closing = [line for line in (job / "train.log").read_text().splitlines() if "pgh | digits | pgh+" in line]
        assert len(closing) == 1 and "mAP@all" in closing[0]
    again = run_python(*command, tmp_path=tmp_path, check=False)  # without ckpt_path: refused, naming the sweep dir
    assert again.returncode != 0 and "or start afresh in a new hydra.sweep.dir" in again.stderr
    (never_ran,) = [d for d in sweep.iterdir() if d.name.startswith("1_")]
    shutil.rmtree(never_ran)
    assert run_sweep("ckpt_path=last") == first


def test_a_preempted_sweep_job_is_requeued_and_resumes_from_its_last_checkpoint(tmp_path):
    """hydra/launcher=local (submitit subprocesses, requeued as on SLURM): job 0 is sent the
    preemption signal 3 batches into round 2, submitit requeues it, and the rerun resumes from its
    last checkpoint (requeued=true added by the launcher) instead of failing beside it. Job 1, not
    preempted, is its twin: the rounds before the preemption match."""
    from conftest import run_python

    sweep = tmp_path / "sweep"
    command = ["-m", "pgh.train", "-m", *SMALL, "logger=none", "hydra/launcher=local", f"hydra.sweep.dir={sweep}"]
    command += ["+callbacks.preempt._target_=conftest.SignalPreemption", "+callbacks.preempt.at_step=33,1000"]
    run_python(*command, tmp_path=tmp_path)

    preempted, twin = sorted(d for d in sweep.iterdir() if d.name[0].isdigit())
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in logs and f"Restoring states from the checkpoint path at {preempted}" in logs
    assert "requeued: true\n" in (preempted / "config.yaml").read_text()
    assert "ckpt_path: last" in (preempted / "config.yaml").read_text()
    assert "requeued: false\n" in (twin / "config.yaml").read_text()
    assert not (sweep / ".submitit" / "%j").exists()  # submitit's empty folder under the literal name
    for run in (preempted, twin):
        assert json.loads((run / "metrics.json").read_text())["rounds_completed"] == 2
    assert read_rows(preempted / "rounds.csv")[:2] == read_rows(twin / "rounds.csv")[:2]


def test_other_eval_settings_name_their_k_everywhere(make_cfg, capsys):
    """eval.map_k / precision_k / radius away from 1000 / 100 / 2: the metrics, rounds.csv, the closing
    line and pgh-report carry the run's own K and r (the closing line used to fail on a KeyError)."""
    from pgh.report.cli import build_report

    cfg = make_cfg(*SMALL, "method.rounds=1", "eval.map_k=50", "eval.precision_k=20", "eval.radius=3")
    metrics = train(cfg)
    assert {"map_at_50", "precision_at_20", "precision_radius_3"} <= metrics.keys()
    assert "map_at_1000" not in metrics
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"mAP@50 {100 * metrics['map_at_50']:.2f} | P@20 " in closing and " | P@r3 " in closing
    assert closing.endswith(f"s | {cfg.paths.output_dir}")  # where the results are
    rows = read_rows(Path(cfg.paths.output_dir) / "rounds.csv")
    assert list(rows[0]) == ["round", "bit_change", "map_all", "map_at_50", "db_distinct_codes", "db_bit_correlation"]
    assert float(rows[1]["map_at_50"]) == pytest.approx(metrics["map_at_50"], abs=1e-6)
    runs = build_report([cfg.paths.output_dir]).text.split("## Runs", 1)[1]
    assert f"{100 * metrics['map_at_50']:.2f} (@50)" in runs and f"{100 * metrics['precision_at_20']:.2f} (@20)" in runs


def test_training_stops_when_few_bits_change_and_a_resume_keeps_it_stopped(make_cfg, tmp_path):
    """converge_bit_change=1.0: every round changes fewer than all bits, so the run stops after round 1
    of 3. Resumed with the same command it reports the same numbers instead of training round 2; a
    lower converge_bit_change trains on."""
    converging = [*SMALL, "method.rounds=3", "method.progressive.converge_bit_change=1.0"]
    first = train(make_cfg(*converging))
    assert first["rounds_completed"] == 1
    rows = read_rows(tmp_path / "run" / "rounds.csv")
    assert [r["round"] for r in rows] == ["0", "1"] and 0 < float(rows[1]["bit_change"]) < 1

    again = train(make_cfg(*converging, "ckpt_path=last"))
    assert again["rounds_completed"] == 1 and again["map_all"] == first["map_all"]
    assert read_rows(tmp_path / "run" / "rounds.csv") == rows

    on = train(make_cfg(*SMALL, "method.rounds=3", "method.progressive.converge_bit_change=0", "ckpt_path=last"))
    assert on["rounds_completed"] == 3


def test_a_resume_that_would_change_the_rounds_or_their_length_stops_with_the_keys_to_fix(make_cfg, tmp_path):
    """Another init_hash (the round-0 codes) or epochs_per_round (where rounds end) is another run;
    fewer rounds than the checkpoint has trained names method.rounds, not Lightning's max_epochs."""
    train(make_cfg(*SMALL))
    with pytest.raises(ValueError, match=r"method.init_hash: itq there, lsh here"):
        train(make_cfg(*SMALL, "method.init_hash=lsh", "ckpt_path=last"))
    with pytest.raises(ValueError, match=r"method.progressive.epochs_per_round: 2 there, 3 here"):
        train(make_cfg(*SMALL, "method.progressive.epochs_per_round=3", "ckpt_path=last"))
    with pytest.raises(ValueError, match=r"has begun 4 epochs, more than this run's method.rounds=1 x 2 epochs"):
        train(make_cfg(*SMALL, "method.rounds=1", "ckpt_path=last"))
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*typo.ckpt: no such checkpoint file"):
        train(make_cfg(*SMALL, f"ckpt_path={tmp_path / 'typo.ckpt'}"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.rounds=0", r"method.rounds=0 must be a positive whole number of rounds"),
        ("method.rounds=-1", r"method.rounds=-1 must be a positive whole number of rounds"),
        ("trainer.precision=64-true", r"trainer.precision=64-true is not supported: .* use one of 32-true"),
        ("trainer.precision=bf16-true", r"trainer.precision=bf16-true is not supported"),
        ("trainer.precision=16-mixed", r"16-mixed does not suit PGH: one backward .* use trainer.precision=bf16-mixed"),
    ],
)
def test_settings_pgh_cannot_train_with_stop_before_any_work(make_cfg, tmp_path, override, message):
    """method.rounds=-1 trained forever (Lightning: no epoch limit), 0 evaluated an untrained H; the
    true half and double precisions crashed on float32 inputs; 16-mixed became bf16 on the CPU."""
    with pytest.raises(ValueError, match=message):
        train(make_cfg(*SMALL, override))
    assert not (tmp_path / "run").exists()


def test_a_run_killed_after_a_rounds_last_step_checkpoint_still_refreshes_that_rounds_codes(make_cfg, tmp_path):
    """Every step is checkpointed; the kill comes after round 1's end, before the next batch. The last
    step checkpoint was taken on the round's last batch, which Lightning resumes as a finished epoch
    without its end: round 1's code refresh was lost (one refresh fewer than the uninterrupted run).
    That save is now made at the epoch's end, after the refresh: the resume repeats the straight run."""
    straight = make_cfg(*SMALL, out="straight")
    expected = train(straight)
    kill = ["+callbacks.kill._target_=conftest.KillAtEpochStart", "+callbacks.kill.epoch=2"]
    with pytest.raises(RuntimeError, match="killed at the start of epoch 2"):
        train(make_cfg(*SMALL, *kill))
    resumed = train(make_cfg(*SMALL, "ckpt_path=last"))
    assert resumed["rounds_completed"] == 2 and resumed["map_all"] == expected["map_all"]
    assert read_rows(tmp_path / "run" / "rounds.csv") == read_rows(tmp_path / "straight" / "rounds.csv")


def test_a_stop_in_mid_epoch_neither_ends_the_round_nor_saves_the_epoch_as_finished(make_cfg, tmp_path):
    """A stop after batch 1 of round 1's last epoch (as trainer.max_time stops): Lightning ran the
    epoch's end (a refresh of a round half trained went into rounds.csv) and saved last.ckpt with the
    epoch counted as finished, so the resume skipped its remaining batches."""
    stop = ["+callbacks.stop._target_=conftest.StopAtBatch", "+callbacks.stop.epoch=1", "+callbacks.stop.batch=1"]
    stopped = train(make_cfg(*SMALL, *stop))
    assert stopped["rounds_completed"] == 0
    assert [r["round"] for r in read_rows(tmp_path / "run" / "rounds.csv")] == ["0"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 18  # the step save after batch 1 of epoch 1 (3 steps a batch), not a finished epoch
    assert ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1
    # the evaluated model is not last.ckpt's: pgh-index's RunEncoder codes with stopped.ckpt, as the run did
    assert stopped["stopped_mid_epoch"]
    assert coded_by_run_encoder(tmp_path / "run", "stopped.ckpt")
    resumed = train(make_cfg(*SMALL, "ckpt_path=last"))
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["rounds_completed"] == 2 and final["global_step"] == 48  # 4 epochs x 4 batches x 3 steps
    assert [r["round"] for r in read_rows(tmp_path / "run" / "rounds.csv")] == ["0", "1", "2"]
    assert not resumed["stopped_mid_epoch"] and not (tmp_path / "run" / "checkpoints" / "stopped.ckpt").exists()
    assert coded_by_run_encoder(tmp_path / "run", "last.ckpt")


def coded_by_run_encoder(run: Path, model_file: str) -> bool:
    """Whether RunEncoder loads checkpoints/`model_file` of `run` and codes the database as the run did."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from pgh.data import Split
    from pgh.retrieval import pack_codes
    from pgh.retrieval.run_encoder import RunEncoder

    encoder = RunEncoder(run, device="cpu")
    images = instantiate(OmegaConf.load(run / "config.yaml").dataset).images[Split.load(run / "split.npz").database]
    same = np.array_equal(pack_codes(encoder.code_images(images)), np.load(run / "database_codes.npy"))
    return encoder.model_file == run / "checkpoints" / model_file and same


@pytest.mark.parametrize("betas_h, expected_h", [(None, (0.5, 0.999)), ([0.9, 0.99], (0.9, 0.99))])
def test_betas_h_sets_h_optimizer_only(betas_h, expected_h):
    """H's Adam takes betas_h (null: the GAN's betas); D's and G's keep betas."""
    from pgh.methods import PGH

    model = PGH(bits=8, num_train=4, width=8, hidden=16, z_dim=8, betas=(0.5, 0.999), betas_h=betas_h)
    d, g, h = model.configure_optimizers()
    assert [o.param_groups[0]["betas"] for o in (d, g, h)] == [(0.5, 0.999), (0.5, 0.999), expected_h]


@pytest.mark.parametrize(
    "trainer", ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_train_builds_the_neighbour_lists_on_the_trainers_device(make_cfg, monkeypatch, trainer):
    """on_before_fit gets the trainer's root device: each DDP rank's own GPU (it used to be "cuda", GPU 0
    for every rank), and the CPU for trainer=cpu on a machine with a GPU."""
    from pgh.methods import PGH

    class Called(Exception):
        pass

    def record(self, train_inputs, train_features, device="cpu"):
        raise Called(torch.device(device))

    monkeypatch.setattr(PGH, "on_before_fit", record)
    with pytest.raises(Called) as called:
        train(make_cfg(*SMALL, f"trainer={trainer}"))
    assert called.value.args[0].type == trainer.replace("gpu", "cuda")


def test_step_checkpoints_come_every_n_steps_whatever_a_batch_adds(make_cfg, monkeypatch):
    """A PGH batch makes 3 optimiser steps (2 in the GAN warm-up): checkpoints came only where
    global_step hit a multiple of n exactly, i.e. every lcm(n, 3) steps, and after a warm-up of an odd
    number of batches never again. Now one comes at each batch that reaches or passes a multiple of n
    (at the epoch's end when that batch is the epoch's last)."""
    from pgh.callbacks.checkpointing import StepCheckpoint

    saved = []
    original = StepCheckpoint._save_last_checkpoint

    def record(self, trainer, candidates):
        saved.append(trainer.global_step)
        original(self, trainer, candidates)

    monkeypatch.setattr(StepCheckpoint, "_save_last_checkpoint", record)
    overrides = ["method.module.gan_warmup_epochs=1", "method.module.distill_epochs=2"]
    train(make_cfg(*SMALL, *overrides, "method.checkpoint_every_n_steps=6", "method.progressive.converge_bit_change=0"))
    # epoch 0: steps 2, 4, 6, 8; then 11, 14, 17, 20 | 23, 26, 29, 32 | 35, 38, 41, 44 (epochs end at 20, 32, 44)
    assert saved == [6, 14, 20, 26, 32, 38, 44]


def test_a_resume_names_every_setting_it_changes(make_cfg, caplog):
    """A resume trained on with changed loss weights, jitter or vote without a word, and config.yaml
    (replaced once it has trained) then recorded the new values as the whole run's."""
    import logging

    train(make_cfg(*SMALL))
    with caplog.at_level(logging.WARNING, logger="pgh.resume"):
        train(make_cfg(*SMALL, "ckpt_path=last"))  # the same settings: nothing to say
    assert "settings changed" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="pgh.resume"):
        train(make_cfg(*SMALL, "ckpt_path=last", "method.rounds=3", "method.module.lam=0.5"))
    assert "settings changed from its config.yaml" in caplog.text
    assert "method.module.lam: 1.0 -> 0.5; method.rounds: 2 -> 3" in caplog.text
    caplog.clear()  # a resume refused (shorter than its checkpoint) is not announced as going ahead
    with caplog.at_level(logging.WARNING, logger="pgh.resume"), pytest.raises(ValueError, match="has begun"):
        train(make_cfg(*SMALL, "ckpt_path=last", "method.rounds=1"))
    assert "settings changed" not in caplog.text


def test_a_loose_checkpoint_scored_otherwise_is_refused_before_any_file(make_cfg, tmp_path):
    """A checkpoint file outside any run, resumed with another eval.map_k: refused only while Lightning
    restored it, with a traceback, after the new run's config.yaml and split.npz were written."""
    import shutil

    first = make_cfg(*SMALL)
    train(first)
    loose = tmp_path / "loose" / "x.ckpt"
    loose.parent.mkdir()
    shutil.copy(Path(first.paths.output_dir) / "checkpoints" / "last.ckpt", loose)
    other = make_cfg(*SMALL, f"ckpt_path={loose}", "eval.map_k=500")
    with open_dict(other):
        other.paths.output_dir = str(tmp_path / "new")
    with pytest.raises(ValueError, match=r"scored with other evaluation settings \(map_k=1000 there, 500 here\)"):
        train(other)
    assert not (tmp_path / "new").exists()
