"""DeepBit: each loss against a hand-computed value, the rotation term on invariant and non-invariant
networks, the latent-layer initialisation, a short two-stage run end to end, the VGG16 backbone with
random weights, and the errors of misuse."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pgh.methods.deepbit import (
    DeepBit,
    balance_loss,
    quantization_loss,
    rotate_batch,
    rotation_costs,
    rotation_invariance_loss,
)
from pgh.train import train

H = torch.tensor([[0.2, 0.7], [0.5, 0.4]])  # 2 images x 2 bits; b = (h >= 0.5) = [[0, 1], [1, 0]]
TINY = {"width": 4, "hidden": 16}  # small nets: these tests check wiring, not capacity

SMALL = [
    "dataset=digits",
    "method=deepbit",
    "features=pixels",
    "bits=16",
    "split.query_per_class=20",
    "split.train_size=128",
    "method.batch_size=32",
    "method.max_epochs=2",
    "method.module.stage1_epochs=1",
    "method.module.width=4",
    "method.module.hidden=32",
    "method.module.rotations=[-10,10]",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]  # 128 images / 32 = 4 steps per epoch; epoch 0 is stage 1, epoch 1 stage 2


def test_quantization_loss_by_hand():
    # (b - h)^2 = [[0.04, 0.09], [0.25, 0.16]]; per image 0.13 and 0.41; mean = 0.27
    h = H.clone().requires_grad_(True)
    loss = quantization_loss(h)
    assert loss.item() == pytest.approx(0.27)
    # b is detached: d/dh mean_i sum_k (b - h)^2 = 2 (h - b) / B = (h - b) with B = 2
    loss.backward()
    assert torch.allclose(h.grad, torch.tensor([[0.2, -0.3], [-0.5, 0.4]]))


def test_balance_loss_by_hand():
    # mu = [(0.2 + 0.5) / 2, (0.7 + 0.4) / 2] = [0.35, 0.55]; (-0.15)^2 + 0.05^2 = 0.0225 + 0.0025 = 0.025
    assert balance_loss(H).item() == pytest.approx(0.025)
    assert balance_loss(torch.tensor([[0.0, 1.0], [1.0, 0.0]])).item() == 0.0  # every bit half on


def test_rotation_invariance_loss_by_hand():
    h_rotated = torch.tensor(
        [
            [[0.3, 0.7], [0.5, 0.2]],  # diffs^2 per image: 0.01 and 0.04 -> mean 0.025
            [[0.2, 0.5], [0.1, 0.4]],  # 0.04 and 0.16 -> mean 0.1
        ]
    )
    # C = [1.0, 0.5]: 1.0 * 0.025 + 0.5 * 0.1 = 0.075
    assert rotation_invariance_loss(H, h_rotated, torch.tensor([1.0, 0.5])).item() == pytest.approx(0.075)
    assert rotation_invariance_loss(H, H.expand(3, -1, -1), torch.ones(3)).item() == 0.0


def test_rotation_costs():
    # exp(-pi/180 * 10) = exp(-0.1745329) = 0.8398; exp(-pi/180 * 5) = exp(-0.0872665) = 0.9164
    assert rotation_costs([-10, 5], math.pi / 180).tolist() == pytest.approx([0.83985, 0.91644], abs=1e-5)
    assert rotation_costs([-10], 1.0).item() == pytest.approx(math.exp(-10))  # exp(-|theta|), degrees
    with pytest.raises(ValueError, match="decay"):
        rotation_costs([5], -1.0)


def test_rotate_batch_is_angle_major_and_exact_for_quarter_turns():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    out = rotate_batch(x, [90, 0, -10])
    assert out.shape == (6, 1, 4, 4)
    assert torch.allclose(out[:2], torch.rot90(x, 1, dims=(2, 3)), atol=1e-4)  # counter-clockwise
    assert torch.allclose(out[2:4], x)
    assert not torch.allclose(out[4:], x)


class Constant(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 8), 0.3)


class MeanIntensity(nn.Module):
    """Rotation invariant for quarter turns: sigmoid of the image mean, repeated."""

    def forward(self, x):
        return torch.sigmoid(x.mean((1, 2, 3))).unsqueeze(1).expand(-1, 8)


def test_rotation_term_is_zero_only_for_invariant_networks():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    model = DeepBit(bits=8, rotations=[-10, -5, 5, 10], **TINY)
    assert model.compute_losses(x, rotation=True)["rotation"].item() > 0  # a random CNN is not invariant
    assert model.compute_losses(x, rotation=False)["rotation"].item() == 0.0  # stage 1: no L3
    model.net.trunk, model.net.latent = nn.Identity(), Constant()
    assert model.compute_losses(x, rotation=True)["rotation"].item() == 0.0
    quarter = DeepBit(bits=8, rotations=[90, 180, 270], **TINY)
    quarter.net.trunk, quarter.net.latent = nn.Identity(), MeanIntensity()
    assert quarter.compute_losses(x, rotation=True)["rotation"].item() == pytest.approx(0.0, abs=1e-10)


def test_latent_init_reproduces_the_shallow_codes():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    model = DeepBit(bits=8, latent_init="pca", **TINY)
    model.on_before_fit(images, torch.zeros(64, 1))
    from pgh.hashing.base import pca

    f = model.trunk_features(images).double()
    mean, w, _ = pca(f, 8)
    # sigmoid(scale * v / std) >= 0.5 <=> v >= 0, up to float32 rounding of projections next to 0
    agree = (model.encode_inputs(images) == ((f - mean) @ w >= 0)).float().mean()
    assert agree >= 0.99
    codes = DeepBit(bits=8, latent_init="itq", **TINY)
    codes.on_before_fit(images, torch.zeros(64, 1))
    mu = codes.encode_inputs(images).float().mean(0)
    assert ((mu > 0.2) & (mu < 0.8)).all()  # centred projections: balanced bits from the start


def test_training_step_weights_each_term_by_its_own_weight(monkeypatch):
    """The stage-2 loss (returned and logged) is α·L1 + β·L2 + γ·L3 with α, β, γ each the term's own
    weight: deliberately different weights, so a term scaled by another's weight shows."""
    torch.manual_seed(0)
    weights = {"quantization": 0.7, "balance": 3.0, "rotation": 50.0}  # L3 of a random net is ~1e-4
    model = DeepBit(
        bits=8,
        stage1_epochs=0,  # no trainer: current_epoch 0 is stage 2
        quantization_weight=weights["quantization"],
        balance_weight=weights["balance"],
        rotation_weight=weights["rotation"],
        rotations=[-10, 10],
        latent_init="random",
        **TINY,
    )
    logged = {}
    monkeypatch.setattr(model, "log_losses", lambda values, *args, **kwargs: logged.update(values))
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    loss = model.training_step((images, torch.arange(4)), 0)
    terms = model.compute_losses(model.prepare(images), rotation=True)  # no BatchNorm or dropout: the same values
    assert all(w * terms[k].item() > 1e-3 for k, w in weights.items())  # each term counts
    expected = sum(w * terms[k].item() for k, w in weights.items())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logged["loss/total"].item() == pytest.approx(expected, rel=1e-5)
    for k in weights:
        assert logged[f"loss/{k}"].item() == pytest.approx(terms[k].item(), rel=1e-5)


def test_frozen_trunk_gets_no_gradient_and_no_optimizer_state():
    """backbone_lr_scale=0 (the authors' frozen VGG16): only the latent layer is optimised, and no
    backward runs through the trunk's weights; any other scale trains both."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    frozen = DeepBit(bits=8, backbone_lr_scale=0.0, weight_decay=0.1, latent_init="random", **TINY)
    # frozen from the start: DDP wraps the module before configure_optimizers, and without
    # find_unused_parameters fails on weights that stop getting gradients after it
    assert not any(p.requires_grad for p in frozen.net.trunk.parameters())
    optimizer = frozen.configure_optimizers()
    trunk = list(frozen.net.trunk.parameters())
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.0, 1e-4])  # the groups a resume expects
    before = [p.detach().clone() for p in trunk]
    loss = sum(frozen.compute_losses(frozen.prepare(images), rotation=True).values())
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in trunk) and all(torch.equal(a, p) for a, p in zip(before, trunk))
    assert all(p not in optimizer.state for p in trunk)
    assert frozen.net.latent.weight.grad is not None and frozen.net.latent.weight in optimizer.state
    trained = DeepBit(bits=8, backbone_lr_scale=0.1, latent_init="random", **TINY)
    groups = trained.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-5, 1e-4])
    assert all(p.requires_grad for p in trained.net.trunk.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_latent_init_runs_on_the_given_device(monkeypatch):
    """on_before_fit computes the trunk's features on `device` (the rank's GPU) and leaves the
    module where it was, for the trainer to move."""
    model = DeepBit(bits=8, latent_init="pca", **TINY)
    seen = []
    features = model.trunk_features
    monkeypatch.setattr(model, "trunk_features", lambda images: seen.append(model.device) or features(images))
    model.on_before_fit(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), torch.zeros(64, 1), device="cuda")
    assert seen[0].type == "cuda" and model.device.type == "cpu"


def test_two_stages_end_to_end(make_cfg):
    cfg = make_cfg(*SMALL)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "metrics.json").read_text())["method"] == "deepbit"
    assert metrics["method"] == "deepbit" and 0 < metrics["map_all"] <= 1
    with open(out / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("stage")]
    assert [float(r["stage"]) for r in rows] == [1.0, 2.0]
    assert float(rows[0]["loss/rotation_epoch"]) == 0.0 and float(rows[1]["loss/rotation_epoch"]) > 0
    for r in rows:
        for key in ("loss/total_epoch", "loss/quantization_epoch", "loss/balance_epoch"):
            assert math.isfinite(float(r[key]))
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_stage1_longer_than_training_is_an_error(make_cfg, tmp_path):
    """Refused before any work (it was refused as training began, leaving a half-made run)."""
    with pytest.raises(ValueError, match="stage1_epochs=3 is more than method.max_epochs=2"):
        train(make_cfg(*SMALL, "method.module.stage1_epochs=3"))
    assert not (tmp_path / "run").exists()


def test_vgg16_backbone_with_random_weights_encodes():
    model = DeepBit(bits=16, backbone="vgg16", pretrained=False, image_size=32, latent_init="random")
    assert model.channels == 3
    codes = model.encode_inputs(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8))
    assert codes.shape == (2, 16) and codes.dtype == torch.bool


def test_a_vgg16_run_codes_images_without_the_imagenet_weights_file(tmp_path):
    """pgh-index reloads a run's checkpoint: a DeepBit trained on VGG16 re-read (and required) the
    ImageNet file, although the checkpoint holds every weight."""
    import lightning as L

    from pgh.retrieval.run_encoder import load_deep_model

    model = DeepBit(bits=16, backbone="vgg16", pretrained=False, image_size=32, latent_init="random")
    hparams = {**model.hparams, "pretrained": True, "weights": str(tmp_path / "gone.pth")}  # as trained
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": hparams}
    torch.save({**checkpoint, "pytorch-lightning_version": L.__version__}, tmp_path / "last.ckpt")
    loaded = load_deep_model(DeepBit, tmp_path / "last.ckpt").eval()
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(loaded.encode_inputs(images), model.eval().encode_inputs(images))


def test_vgg16_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"method\.module\.weights=PATH.*pretrained=false"):
        DeepBit(bits=16, backbone="vgg16", weights=str(tmp_path / "missing.pth"), image_size=32)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"backbone": "resnet"}, "backbone"),
        ({"bits": 12}, "12"),
        ({"stage1_epochs": -1}, "stage1_epochs"),
        ({"rotations": []}, "rotations"),
        ({"rotations": ["a"]}, "rotations"),
        ({"lr": 0.0}, "lr"),
        ({"quantization_weight": -1.0}, "quantization_weight"),
        ({"balance_weight": float("nan")}, "balance_weight"),
        ({"rotation_decay": -0.1}, "rotation_decay"),
        ({"latent_init": "kmeans"}, "latent_init"),
        ({"latent_init_scale": 0.0}, "latent_init_scale"),
        ({"width": 0}, "width"),
        ({"hidden": -1}, "hidden"),
        ({"bits": 32, "hidden": 16}, "hidden"),  # itq needs >= bits trunk features
        ({"image_size": 2}, "image_size"),
        ({"channels": 2}, "channels"),
        ({"backbone": "vgg16", "channels": 1, "pretrained": False}, "channels"),
        ({"backbone": "vgg16", "image_size": 16, "pretrained": False}, "image_size"),
    ],
)
def test_bad_arguments(kwargs, name):
    kwargs = {"bits": 16, **TINY, **kwargs}
    with pytest.raises(ValueError, match=name):
        DeepBit(**kwargs)
