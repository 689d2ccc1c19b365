"""DH (Liong et al., CVPR 2015): each loss term against hand-computed values, the tanh MLP, and a short
end-to-end run on digits whose checkpoint rebuilds the same network."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from pgh.data import Split
from pgh.features import cached_features
from pgh.methods.dh import (
    DH,
    dh_balance_loss,
    dh_orthogonality_loss,
    dh_quantization_loss,
    dh_sign,
    dh_weight_decay,
)
from pgh.nets.mlp import HashMLP
from pgh.retrieval import pack_codes
from pgh.train import train

SMALL = [
    "dataset=digits",
    "method=dh",
    "features=pixels",
    "bits=16",
    "split.query_per_class=20",
    "split.train_size=128",
    "method.batch_size=32",
    "method.max_epochs=2",
    "method.module.hidden=[32]",
    "method.checkpoint_every_n_steps=1",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]  # 128 feature vectors / 32 = 4 steps per epoch

# two samples, two bits
H = torch.tensor([[0.5, -0.25], [0.0, 1.0]])


# ------------------------------------------------------------------------------ loss terms


def test_sign_maps_zero_to_plus_one_without_gradient():
    h = torch.tensor([[-0.1, 0.0, 0.3]], requires_grad=True)
    b = dh_sign(h)
    assert b.tolist() == [[-1.0, 1.0, 1.0]] and not b.requires_grad


def test_quantization_loss_by_hand():
    # B = sgn(H) = [[1, -1], [1, 1]] (0 -> +1); B - H = [[0.5, -0.75], [1, 0]]
    # squares 0.25 + 0.5625 + 1 + 0 = 1.8125; ½ · 1.8125 / n(=2) = 0.453125
    h = H.clone().requires_grad_(True)
    loss = dh_quantization_loss(h)
    assert loss.item() == pytest.approx(0.453125)
    # B is held fixed: d/dh ½(b - h)²/n = (h - b)/n -> [[(0.5-1)/2, (-0.25+1)/2], [(0-1)/2, (1-1)/2]]
    loss.backward()
    assert torch.allclose(h.grad, torch.tensor([[-0.25, 0.375], [-0.5, 0.0]]))


def test_balance_loss_by_hand():
    # bit means: (0.5 + 0)/2 = 0.25, (-0.25 + 1)/2 = 0.375
    # centred squares: bit 0: 0.25² · 2 = 0.125; bit 1: 0.625² · 2 = 0.78125; sum 0.90625
    # -½ · 0.90625 / 2 = -0.2265625
    assert dh_balance_loss(H).item() == pytest.approx(-0.2265625)
    # uncentred (the paper's -tr(HHᵀ)/(2n)): 0.25 + 0.0625 + 0 + 1 = 1.3125; -½ · 1.3125 / 2 = -0.328125
    assert dh_balance_loss(H, centered=False).item() == pytest.approx(-0.328125)
    # a constant bit has no variance, however saturated
    assert dh_balance_loss(torch.ones(4, 3)).item() == 0.0


def test_orthogonality_loss_by_hand():
    w_wide = torch.tensor([[1.0, 2.0, 0.0]])  # [1, 3]: W Wᵀ = [5], (5 - 1)² = 16
    w_tall = torch.tensor([[1.0], [1.0]])  # [2, 1]: Wᵀ W = [2], (2 - 1)² = 1
    w_square = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # W Wᵀ = diag(1, 4): (4 - 1)² = 9
    # ½ · (16 + 1 + 9) = 13
    assert dh_orthogonality_loss([w_wide, w_tall, w_square]).item() == pytest.approx(13.0)
    q, _ = torch.linalg.qr(torch.randn(5, 3))  # orthonormal columns: Wᵀ W = I
    assert dh_orthogonality_loss([q, q.T]).item() == pytest.approx(0.0, abs=1e-10)


def test_weight_decay_by_hand():
    w1, c1 = torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([1.0, -1.0])  # 1 + 4 + 9 = 14; 1 + 1 = 2
    w2, c2 = torch.tensor([[0.5]]), torch.tensor([0.0])  # 0.25; 0
    # ½ · (14 + 2 + 0.25 + 0) = 8.125
    assert dh_weight_decay([w1, w2], [c1, c2]).item() == pytest.approx(8.125)


def test_objective_weights_the_terms():
    model = DH(
        bits=8,
        in_dim=3,
        hidden=[],
        quantization_weight=1.0,
        balance_weight=0.5,
        orthogonality_weight=0.1,
        weight_decay=0.01,
    )
    terms = {
        k: torch.tensor(v)
        for k, v in {"quantization": 1.0, "balance": 2.0, "orthogonality": 3.0, "weight_decay": 4.0}.items()
    }
    # 1·1 + 0.5·2 + 0.1·3 + 0.01·4 = 2.34
    assert model.objective(terms).item() == pytest.approx(2.34)


def test_the_modules_weight_decay_term_covers_weights_and_biases():
    """DH.losses' weight decay is ½Σ‖p‖² over every weight AND bias of the network (the orthogonal
    init zeroes the biases, so they are set here, or a term without them would read the same)."""
    torch.manual_seed(0)
    model = DH(bits=8, in_dim=5, hidden=[6])
    with torch.no_grad():
        for layer in model.net.layers:
            layer.bias.copy_(torch.randn_like(layer.bias))
    params = list(model.net.parameters())
    assert len(params) == 4  # two layers, a weight and a bias each
    expected = 0.5 * sum(float(p.detach().double().pow(2).sum()) for p in params)
    biases = 0.5 * sum(float(layer.bias.detach().double().pow(2).sum()) for layer in model.net.layers)
    assert biases > 0.5  # the biases' share is far above the tolerance
    assert model.losses(H)["weight_decay"].item() == pytest.approx(expected, rel=1e-6)


def test_the_modules_balance_term_follows_balance_centered():
    """DH(balance_centered=...) picks the balance term: centred on the bit means by default, the
    paper's uncentred −tr(HHᵀ)/(2n) with False (hand-computed in test_balance_loss_by_hand)."""
    centred = DH(bits=8, in_dim=3, hidden=[]).losses(H)["balance"]
    uncentred = DH(bits=8, in_dim=3, hidden=[], balance_centered=False).losses(H)["balance"]
    assert centred.item() == pytest.approx(-0.2265625)
    assert uncentred.item() == pytest.approx(-0.328125)


def test_loss_shape_errors():
    with pytest.raises(ValueError, match="h must be 2-D"):
        dh_quantization_loss(torch.zeros(3))
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        dh_orthogonality_loss([torch.zeros(3)])


# ------------------------------------------------------------------------------ network


def test_hash_mlp_outputs_standardisation_and_codes():
    torch.manual_seed(0)
    net = HashMLP(6, [10, 4], 8)
    assert [tuple(w.shape) for w in net.weights()] == [(10, 6), (4, 10), (8, 4)]
    assert dh_orthogonality_loss(net.weights()).item() == pytest.approx(0.0, abs=1e-9)  # orthogonal init
    x = torch.randn(50, 6) * torch.arange(1, 7) + 3.0
    net.set_input_stats(x, mode="dim")
    z = (x - net.mean) / net.std
    assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-5) and torch.allclose(z.std(0), torch.ones(6), atol=1e-5)
    net.set_input_stats(x, mode="global", rms_norm=2.0)
    z = (x - net.mean) / net.std
    assert torch.unique(net.std).numel() == 1  # one scale for every dimension
    assert z.pow(2).sum(1).mean().item() == pytest.approx(4.0 * 49 / 50, rel=1e-4)  # RMS norm 2 (unbiased var)
    h = net(x)
    assert h.shape == (50, 8) and h.abs().max() < 1
    codes = net.encode(x, batch_size=7)
    assert codes.dtype == torch.bool and codes.shape == (50, 8) and torch.equal(codes, h >= 0)
    with pytest.raises(ValueError, match=r"x must be \[B, 6\]"):
        net(torch.zeros(2, 5))


# ------------------------------------------------------------------------------ module


def test_bad_arguments_name_themselves():
    for key, value, name in [
        ("bits", 12, "bits"),
        ("in_dim", 0, "in_dim"),
        ("hidden", [16, 0], r"hidden\[1\]"),
        ("hidden", "16", "hidden"),
        ("lr", 0.0, "lr"),
        ("balance_weight", -1.0, "balance_weight"),
        ("quantization_weight", float("nan"), "quantization_weight"),
        ("orthogonality_weight", -1e-3, "orthogonality_weight"),
        ("weight_decay", -1.0, "weight_decay"),
        ("input_norm", "pca", "input_norm"),
        ("input_rms", 0.0, "input_rms"),
        ("init", "xavier", "init"),
    ]:
        with pytest.raises(ValueError, match=name):
            DH(**{"bits": 16, key: value})


def test_lazy_network_and_explicit_in_dim():
    model = DH(bits=16, hidden=[8])
    with pytest.raises(RuntimeError, match="no network yet"):
        model.encode_inputs(torch.zeros(2, 5))
    x = torch.randn(20, 5)
    model.on_before_fit(x, x)
    assert model.hparams.in_dim == 5 and model.net.in_dim == 5
    codes = model.encode_inputs(x, batch_size=6)
    assert codes.dtype == torch.bool and codes.shape == (20, 16)
    with pytest.raises(ValueError, match="in_dim=4"):
        DH(bits=16, in_dim=4).on_before_fit(x, x)


def test_training_run_on_digits(make_cfg):
    cfg = make_cfg(*SMALL)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert metrics["method"] == "dh" and metrics["features"] == "pixels" and 0 < metrics["map_all"] <= 1
    assert json.loads((out / "metrics.json").read_text())["method"] == "dh"
    with open(out / "csv" / "metrics.csv") as f:
        losses = [float(r[k]) for r in csv.DictReader(f) for k in r if k.startswith("loss/") and r[k]]
    assert losses and all(math.isfinite(v) for v in losses)

    # the checkpoint records the lazily found in_dim and rebuilds the trained network
    ckpt = out / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["in_dim"] == 64
    model = DH.load_from_checkpoint(ckpt, map_location="cpu")
    dataset = instantiate(cfg.dataset)
    split = Split.load(out / "split.npz")
    features = cached_features(
        dataset, instantiate(cfg.features), OmegaConf.to_container(cfg.features, resolve=True), cfg.paths.cache_dir
    )
    codes = model.encode_inputs(features[split.database])
    assert codes.dtype == torch.bool and codes.shape == (split.database.numel(), 16)
    assert np.array_equal(pack_codes(codes), np.load(out / "database_codes.npy"))


def test_bad_setting_through_the_config(make_cfg):
    with pytest.raises(Exception, match="balance_weight"):
        train(make_cfg(*SMALL, "method.module.balance_weight=-1"))


def test_resume_from_last_checkpoint(make_cfg):
    first = make_cfg(*SMALL)
    first_seconds = train(first)["train_seconds"]
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 8  # 2 epochs x 4 steps
    assert state["callbacks"]["TrainingClock"]["seconds"] >= first_seconds > 0
    resumed = make_cfg(*SMALL, "method.max_epochs=3", f"ckpt_path={ckpt}")
    metrics = train(resumed)
    assert metrics["method"] == "dh"
    # train_seconds counts both attempts: the first's from the checkpoint, then the third epoch
    assert metrics["train_seconds"] > first_seconds
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 12  # one more epoch of 4 steps


def test_a_resumed_run_continues_its_csv_and_wandb_logs(make_cfg, monkeypatch):
    """Lightning's CSVLogger deleted metrics.csv when a run resumed, and W&B started a new run: the
    resumed run's logs now hold every epoch, in one metrics.csv and under one W&B run id."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = make_cfg(*SMALL)
    train(first)
    resumed = make_cfg(*SMALL, "method.max_epochs=3", "ckpt_path=last")
    train(resumed)
    out = Path(first.paths.output_dir)
    with open(out / "csv" / "metrics.csv") as f:
        epochs = {float(row["epoch"]) for row in csv.DictReader(f) if row["epoch"]}
    assert epochs == {0, 1, 2}

    train(make_cfg(*SMALL, "method.max_epochs=4", "ckpt_path=last", "logger=wandb", "logger.wandb.name=test"))
    train(make_cfg(*SMALL, "method.max_epochs=5", "ckpt_path=last", "logger=wandb", "logger.wandb.name=test"))
    runs = sorted(out.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and len({record.name for run in runs for record in run.glob("run-*.wandb")}) == 1


def test_another_runs_checkpoint_continued_in_a_new_directory_must_describe_that_run(make_cfg, tmp_path):
    """ckpt_path=<file> from a fresh directory was not compared with anything: another seed and split
    continued the seed-0 model (trained on the new split's queries), other bits failed in Lightning."""
    first = make_cfg(*SMALL)
    train(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    other = make_cfg(*SMALL, "seed=3", "split.seed=1", "method.max_epochs=3", f"ckpt_path={ckpt}")
    with open_dict(other):
        other.paths.output_dir = str(tmp_path / "elsewhere")
    with pytest.raises(
        ValueError, match=r"belongs to the run in .*run, but this command describes another run \(seed: "
    ):
        train(other)
    same = make_cfg(*SMALL, "method.max_epochs=3", f"ckpt_path={ckpt}")  # the same run, trained longer elsewhere
    with open_dict(same):
        same.paths.output_dir = str(tmp_path / "elsewhere")
    assert train(same)["method"] == "dh"

    # a copy of the file outside any run: compared with what the checkpoint records (bits, sizes)
    import shutil

    loose = tmp_path / "loose" / "x.ckpt"
    loose.parent.mkdir()
    shutil.copy(ckpt, loose)
    wider = make_cfg(*SMALL, "method.max_epochs=3", "method.module.hidden=[64]", f"ckpt_path={loose}")
    with open_dict(wider):
        wider.paths.output_dir = str(tmp_path / "wider")
    with pytest.raises(ValueError, match=r"holds another network .*method.module.hidden: \[32\] there, \[64\] here"):
        train(wider)

    # another run's checkpoint given to a run directory with checkpoints of its own: both runs must match
    # (only the file's run was compared, and the seed-3 model took over the seed-0 run's directory)
    seeded = make_cfg(*SMALL, "seed=3")
    with open_dict(seeded):
        seeded.paths.output_dir = str(tmp_path / "seed3")
    train(seeded)
    takeover = make_cfg(
        *SMALL, "seed=3", "method.max_epochs=3", f"ckpt_path={tmp_path / 'seed3' / 'checkpoints' / 'last.ckpt'}"
    )
    before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(
        ValueError, match=r"ckpt_path=.*seed3.* resumes the run in .*run, but .*\(seed: 0 there, 3 here\)"
    ):
        train(takeover)
    assert (tmp_path / "run" / "config.yaml").read_text() == before


def test_a_resume_shorter_than_a_mid_epoch_checkpoint_stops(make_cfg):
    """A checkpoint from inside epoch 1 (6 steps of 4 a epoch) has begun 2 epochs: max_epochs=1
    was accepted, trained nothing and recorded max_epochs: 1 for a model trained longer."""
    train(make_cfg(*SMALL, "method.max_epochs=3", "+trainer.max_steps=6"))
    with pytest.raises(ValueError, match=r"has begun 2 epochs, more than this run's method.max_epochs=1"):
        train(make_cfg(*SMALL, "method.max_epochs=1", "ckpt_path=last"))
    assert train(make_cfg(*SMALL, "method.max_epochs=2", "ckpt_path=last"))["method"] == "dh"


def test_a_run_resumed_in_mid_epoch_gives_the_uninterrupted_runs_numbers(make_cfg, tmp_path):
    """The training loader's position and shuffling seed go into the checkpoint: stopped 2 batches
    into epoch 1 and resumed, the run trains that epoch's last 2 batches, the ones the uninterrupted
    run trained, and ends with its codes bit for bit (a resume once trained on a fresh shuffle)."""
    straight = make_cfg(*SMALL, out="straight")
    expected = train(straight)
    train(make_cfg(*SMALL, "+trainer.max_steps=6"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 2
    resumed = train(make_cfg(*SMALL, "ckpt_path=last"))
    assert resumed["map_all"] == expected["map_all"]
    for codes in ("database_codes.npy", "query_codes.npy"):
        assert np.array_equal(np.load(tmp_path / "run" / codes), np.load(tmp_path / "straight" / codes))


def test_a_run_stopped_before_its_first_step_checkpoint_is_not_resumed_from_nothing(make_cfg):
    """Stopped in mid-epoch before any step checkpoint, a run holds only stopped.ckpt (weights only):
    ckpt_path=last found no last.ckpt, Lightning loaded nothing, and the run trained afresh as if resumed."""
    stopped = [*SMALL, "method.checkpoint_every_n_steps=200", "+trainer.max_steps=5"]
    metrics = train(make_cfg(*stopped))
    checkpoints = Path(make_cfg(*SMALL).paths.output_dir) / "checkpoints"
    assert metrics["stopped_mid_epoch"] and [p.name for p in checkpoints.iterdir()] == ["stopped.ckpt"]
    for again in ([], ["ckpt_path=last"]):
        with pytest.raises(FileExistsError, match=r"holds only stopped.ckpt, .* nothing to resume from; start afresh"):
            train(make_cfg(*SMALL, *again))
    # given as the checkpoint of another run directory: Lightning's KeyError, with a traceback, after the
    # new directory's config.yaml and split.npz were written
    elsewhere = make_cfg(*SMALL, f"ckpt_path={checkpoints / 'stopped.ckpt'}")
    with open_dict(elsewhere):
        elsewhere.paths.output_dir = str(checkpoints.parent.parent / "elsewhere")
    with pytest.raises(ValueError, match=r"stopped.ckpt holds only the weights .* give that run's checkpoints/last"):
        train(elsewhere)
    assert not (checkpoints.parent.parent / "elsewhere").exists()
    with open_dict(elsewhere):
        elsewhere.ckpt_path = True  # `ckpt_path=true` on the command line
    with pytest.raises(ValueError, match=r"ckpt_path=True must be `last` or a checkpoint file's path"):
        train(elsewhere)


def test_a_resume_trains_with_the_commands_learning_rate_and_keeps_the_moments(make_cfg, caplog):
    """Lightning restores the optimizers' param_groups: a resume with another learning rate trained on
    at the checkpoint's rate without a word. Now the command's rate applies (and is logged), and
    Adam's moment estimates carry over."""
    first = make_cfg(*SMALL)
    train(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    before = torch.load(ckpt, map_location="cpu", weights_only=True)["optimizer_states"][0]
    assert before["param_groups"][0]["lr"] == 1e-3
    with caplog.at_level("INFO", logger="pgh.methods.base"):
        train(make_cfg(*SMALL, "method.max_epochs=3", "method.module.lr=5e-4", f"ckpt_path={ckpt}"))
    after = torch.load(ckpt, map_location="cpu", weights_only=True)["optimizer_states"][0]
    assert after["param_groups"][0]["lr"] == 5e-4
    assert all(after["state"][i]["step"] == before["state"][i]["step"] + 4 for i in before["state"])
    assert "lr=0.0005 from this command (the checkpoint trained with 0.001)" in caplog.text
