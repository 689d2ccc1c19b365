"""BGAN: the kNN similarity against brute force, the losses against hand-computed values, the ablation
switches, a tiny end-to-end run, and argument checks."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from pgh.methods.bgan import BGAN, beta_schedule, binary_layer, content_loss, quantization_loss, sign_st, weighted_total
from pgh.methods.bgan_similarity import batch_similarity, knn_indices, neighborhood_loss, released_lists
from pgh.methods.pgh_losses import adversarial_d_loss, adversarial_g_loss
from pgh.train import train

TINY = [
    "dataset=digits",
    "method=bgan",
    "features=pixels",
    "bits=16",
    "split.query_per_class=20",
    "split.train_size=128",
    "method.batch_size=32",
    "method.max_epochs=2",
    "method.module.width=8",
    "method.module.hidden=32",
    "method.module.k1=5",
    "method.module.k2=8",
    "method.module.min_shared=2",
    "method.checkpoint_every_n_steps=4",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]  # 128 images / 32 = 4 steps per epoch


# ---------------------------------------------------------------------------------- similarity


def brute_force_knn(points: torch.Tensor, k: int, metric: str) -> list[set[int]]:
    """k nearest neighbours of every point (itself excluded) from the full distance matrix, in float64."""
    p = points.double()
    n = p.shape[0]
    dist = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if metric == "euclidean":
                dist[i][j] = math.sqrt(float(((p[i] - p[j]) ** 2).sum()))
            else:
                dist[i][j] = 1 - float(p[i] @ p[j]) / math.sqrt(float(p[i] @ p[i]) * float(p[j] @ p[j]))
    return [set(sorted((j for j in range(n) if j != i), key=lambda j: dist[i][j])[:k]) for i in range(n)]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_matches_brute_force(metric):
    points = torch.randn(50, 6, generator=torch.Generator().manual_seed(3))
    got = knn_indices(points, 7, metric, chunk_size=9)  # 9 does not divide 50: a short last chunk
    expected = brute_force_knn(points, 7, metric)
    assert got.shape == (50, 7)
    assert [set(row.tolist()) for row in got] == expected
    # rows are sorted nearest first
    p = points if metric == "euclidean" else torch.nn.functional.normalize(points, dim=1)
    d = torch.cdist(p.double(), p.double())
    gathered = d.gather(1, got)
    assert (gathered[:, 1:] >= gathered[:, :-1] - 1e-9).all()


@pytest.mark.parametrize("mode", ["mutual", "either", "shared"])
def test_batch_similarity_matches_dense_definition(mode):
    points = torch.randn(50, 4, generator=torch.Generator().manual_seed(5))
    k1, k2, min_shared = 5, 8, 3
    nn1 = brute_force_knn(points, k1, "cosine")
    nn2 = brute_force_knn(points, k2, "cosine")
    n = 50
    dense = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            a, b = j in nn1[i], i in nn1[j]
            if i == j:
                s = True
            elif mode == "mutual":
                s = a and b
            elif mode == "either":
                s = a or b
            else:
                s = (a or b) and len(nn2[i] & nn2[j]) >= min_shared
            dense[i, j] = float(s)
    assert torch.equal(dense, dense.T) and dense.sum() > n  # some similar pairs
    neighbors = knn_indices(points, k2, "cosine")
    # the whole set, and a batch in a random order with a repeated index
    for index in (torch.arange(n), torch.tensor([7, 3, 41, 3, 0, 19, 22, 48, 11, 30])):
        s = batch_similarity(neighbors, index, k1, mode, k2=k2, min_shared=min_shared)
        assert torch.equal(s, dense[index][:, index])


def test_released_rule_matches_the_authors_loops():
    # create_S.py written out: N'(i) = {i} + its K1 neighbours; the K2 images sharing most of N'(i)
    # (ties by index here; the released code's argsort leaves their order to numpy); S_ij = S_ji = 1
    # for every j in the union of their N'. Diagonal 1, else 0 (the code: -1).
    n, k1, k2 = 40, 4, 5
    points = torch.randn(n, 3, generator=torch.Generator().manual_seed(9))
    neighbors = knn_indices(points, k1, "cosine")
    own = [[i, *neighbors[i].tolist()] for i in range(n)]
    dense = torch.eye(n)
    for i in range(n):
        counts = [len(set(own[i]) & set(own[j])) for j in range(n)]
        top = sorted(range(n), key=lambda j: (-counts[j], j))[:k2]
        for j in {m for t in top for m in own[t]}:
            dense[i, j] = dense[j, i] = 1.0
    lists = released_lists(neighbors, k2)
    assert (lists >= -1).all() and lists.shape[1] <= k2 * (k1 + 1)
    assert dense.sum(1).mean() > 1 + 2 * k1  # wider than the K1 graph
    for index in (torch.arange(n), torch.tensor([7, 3, 31, 3, 0, 19, 22, 38])):
        s = batch_similarity(lists, index, lists.shape[1], "released")
        assert torch.equal(s, dense[index][:, index])
    with pytest.raises(ValueError, match="k2=41 must be in"):
        released_lists(neighbors, 41)


# ---------------------------------------------------------------------------------- losses


def test_neighborhood_loss_hand_computed():
    b = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, -1], [-1, -1, 1, 1]], requires_grad=True)
    s = torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])
    # (1/4) b bᵀ = [[1, .5, 0], [.5, 1, -.5], [0, -.5, 1]];  minus S = [[0, -.5, 0], [-.5, 0, -.5], [0, -.5, 0]]
    # squares sum to 4 * .25 = 1, mean over 9 entries = 1/9
    loss = neighborhood_loss(b, s)
    assert loss.item() == pytest.approx(1 / 9)
    loss.backward()
    assert b.grad is not None and torch.isfinite(b.grad).all()
    # positive_weight = 3: the two S = 1 entries (0,1), (1,0) count 3 * .25 each; (1,2), (2,1) .25 each;
    # the diagonal is 0 -> (1.5 + 0.5) / 9 = 2/9
    assert neighborhood_loss(b, s, positive_weight=3.0).item() == pytest.approx(2 / 9)
    with pytest.raises(ValueError, match="s"):
        neighborhood_loss(b, s[:2])
    with pytest.raises(ValueError, match="positive_weight"):
        neighborhood_loss(b, s, positive_weight=-1.0)


def test_quantization_loss_hand_computed():
    a = math.atanh(0.5)
    # tanh(h) = [.5, -.5, 0] vs sgn(h) = [1, -1, 1] (sgn(0) = +1): squares [.25, .25, 1], mean 0.5
    assert quantization_loss(torch.tensor([a, -a, 0.0])).item() == pytest.approx(0.5)


def test_content_loss_hand_computed():
    fake = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # [1, 1, 2, 2]
    real = torch.zeros_like(fake)
    fake_f, real_f = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    # pixel mse = (0 + 1 + 4 + 9) / 4 = 3.5; feature mse = (1 + 4) / 2 = 2.5; 2 * 3.5 + 0.5 * 2.5 = 8.25
    assert content_loss(fake, real, fake_f, real_f, 2.0, 0.5).item() == pytest.approx(8.25)
    assert content_loss(fake, real, None, None, 1.0, 0.0).item() == pytest.approx(3.5)
    assert content_loss(fake, real, fake_f, real_f, 0.0, 1.0).item() == pytest.approx(2.5)
    # the real features are a target: no gradient reaches them
    real_f = real_f.clone().requires_grad_(True)
    content_loss(fake, real, fake_f.requires_grad_(True), real_f, 1.0, 1.0).backward()
    assert real_f.grad is None


def test_adversarial_losses_hand_computed():
    # logit 0 -> D = 1/2: -log(1/2) = log 2 for each of real-vs-1, fake-vs-0 and G's fake-vs-1
    zero = torch.zeros(3)
    assert adversarial_d_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert adversarial_g_loss(zero).item() == pytest.approx(math.log(2))


def test_binary_layer():
    h = torch.tensor([-2.0, -0.1, 0.0, 0.5], requires_grad=True)
    b = binary_layer(h, "sign_st")
    assert b.tolist() == [-1.0, -1.0, 1.0, 1.0]  # sgn(0) = +1, as the code bit [h >= 0]
    b.sum().backward()  # straight-through: db/dh = 1 - tanh(h)^2
    assert torch.allclose(h.grad, 1 - torch.tanh(h.detach()) ** 2)
    # scaled tanh: tanh(2 * 0.5) = tanh(1) = 0.76159
    assert binary_layer(torch.tensor([0.5]), "scaled_tanh", beta=2.0).item() == pytest.approx(0.761594, abs=1e-6)
    assert sign_st(torch.tensor([0.3, -0.3])).tolist() == [1.0, -1.0]
    # beta_t = 1 * (1 + 0.005 * 100)^0.5 = sqrt(1.5)
    assert beta_schedule(100, 1.0, 0.005, 0.5) == pytest.approx(math.sqrt(1.5))
    with pytest.raises(ValueError, match="binarizer"):
        binary_layer(h, "sigmoid")


def test_zero_weight_switches_a_term_off():
    terms = {"neighborhood": torch.tensor(0.5), "content": torch.tensor(2.0), "adversarial": torch.tensor(float("nan"))}
    weights = {"neighborhood": 2.0, "content": 0.5, "adversarial": 0.0, "quantization": 0.0}
    # 2 * 0.5 + 0.5 * 2 = 2; the NaN adversarial term is ignored
    assert weighted_total(terms, weights).item() == pytest.approx(2.0)
    terms["adversarial"] = torch.tensor(123.0)
    assert weighted_total(terms, weights).item() == pytest.approx(2.0)
    assert weighted_total({"neighborhood": torch.tensor(0.5)}, weights | {"content": 0.0}).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="content"):
        weighted_total({"neighborhood": torch.tensor(0.5)}, weights)  # weight > 0, term missing
    with pytest.raises(ValueError, match="all|every"):
        weighted_total(terms, {"neighborhood": 0.0, "content": 0.0, "adversarial": 0.0})
    with pytest.raises(ValueError, match="unknown"):
        weighted_total(terms, {"perceptual": 1.0})


def test_the_content_loss_trains_the_encoder_through_the_generator(monkeypatch):
    """With only l_C (pixels) on, one training step gives E a gradient through G(b) and moves E; a
    code cut from the graph before G would leave E untouched."""
    torch.manual_seed(0)
    model = BGAN(
        bits=16,
        width=8,
        hidden=32,
        neighborhood_weight=0.0,
        content_weight=1.0,
        adversarial_weight=0.0,
        feature_weight=0.0,  # pixel term only: no D
    )
    assert model.uses_generator and not model.uses_discriminator and not model.uses_neighbors
    optimizers = model.configure_optimizers()
    monkeypatch.setattr(model, "optimizers", lambda: optimizers)  # no Trainer: plain backward, no logging
    monkeypatch.setattr(model, "manual_backward", lambda loss: loss.backward())
    monkeypatch.setattr(model, "log_losses", lambda *args, **kwargs: None)
    before = {k: v.detach().clone() for k, v in model.E.named_parameters()}
    g_before = {k: v.detach().clone() for k, v in model.G.named_parameters()}
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    model.training_step((images, torch.arange(8)), 0)
    grads = [p.grad for p in model.E.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert any(not torch.equal(before[k], v) for k, v in model.E.named_parameters())
    assert any(not torch.equal(g_before[k], v) for k, v in model.G.named_parameters())  # G learns as well


def test_binary_layer_keeps_its_gradient_under_bf16_autocast(monkeypatch):
    """Under bf16-mixed E's logits are bfloat16, and a bfloat16 tanh(β·h) is exactly ±1 from β·h ≈ 3.4
    on, with no gradient; BGAN takes its binary layer in float32 like the nets' own activations."""
    torch.manual_seed(0)
    model = BGAN(
        bits=16, width=8, hidden=32, neighborhood_weight=0.0, content_weight=1.0, adversarial_weight=0.0,
        feature_weight=0.0, quantization_weight=0.0,
    )  # fmt: skip
    last = [m for m in model.E.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(4.0)  # tanh(4) = 0.9993 in float32, exactly 1 in bfloat16
    optimizers = model.configure_optimizers()
    monkeypatch.setattr(model, "optimizers", lambda: optimizers)
    monkeypatch.setattr(model, "manual_backward", lambda loss: loss.backward())
    monkeypatch.setattr(model, "log_losses", lambda *args, **kwargs: None)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.training_step((images, torch.arange(8)), 0)
    assert last.bias.grad is not None and (last.bias.grad != 0).all()


# ---------------------------------------------------------------------------------- end to end


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_metrics_and_finite_losses(make_cfg):
    cfg = make_cfg(*TINY)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert metrics["method"] == "bgan" and metrics["features"] == "pixels" and metrics["bits"] == 16
    assert json.loads((out / "metrics.json").read_text())["method"] == "bgan"
    assert 0 < metrics["map_all"] <= 1 and metrics["num_train"] == 128
    logged = read_rows(out / "csv" / "metrics.csv")
    names = {k for r in logged for k in r if k.startswith("loss/") and any(r[k] for r in logged)}
    logged_terms = {k.removesuffix("_step").removesuffix("_epoch") for k in names}
    assert {"loss/neighborhood", "loss/content", "loss/adversarial", "loss/d", "loss/total"} <= logged_terms
    values = [float(r[k]) for r in logged for k in names if r.get(k)]
    assert values and all(math.isfinite(v) for v in values)
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_a_run_with_the_released_similarity_rule(make_cfg):
    cfg = make_cfg(*TINY, "method.module.similarity=released", "method.module.k2=30")
    metrics = train(cfg)
    assert 0 < metrics["map_all"] <= 1
    logged = read_rows(Path(cfg.paths.output_dir) / "csv" / "metrics.csv")
    shares = [float(r["similar_pairs_epoch"]) for r in logged if r.get("similar_pairs_epoch")]
    assert shares and max(shares) > 0


def test_neighborhood_only_ablation_never_steps_g_or_d(make_cfg):
    """l_C and l_A at weight 0: G and D are neither used nor stepped; only E learns (from l_N)."""
    cfg = make_cfg(
        *TINY,
        "method.max_epochs=1",
        "method.module.content_weight=0",
        "method.module.adversarial_weight=0",
        "logger=none",
    )
    metrics = train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    d_state, g_state, e_state = (o["state"] for o in ckpt["optimizer_states"])  # Adam state appears at the first step
    assert d_state == {} and g_state == {} and len(e_state) > 0
    assert ckpt["global_step"] == 4  # one optimizer step (E's) per batch, 4 batches
    assert 0 < metrics["map_all"] <= 1


def test_resume_from_checkpoint_keeps_the_beta_schedule(make_cfg):
    e_only = ["method.module.content_weight=0", "method.module.adversarial_weight=0", "logger=none"]  # fast
    first = make_cfg(*TINY, *e_only, "method.max_epochs=1")
    train(first)
    ckpt_path = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    assert int(state["train_steps"]) == 4 and "neighbors" not in state  # kNN lists are rebuilt, not saved
    resumed = make_cfg(*TINY, *e_only, f"ckpt_path={ckpt_path}")
    metrics = train(resumed)
    final = torch.load(
        Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert int(final["state_dict"]["train_steps"]) == 8 and 0 < metrics["map_all"] <= 1


# ---------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"binarizer": "sigmoid"}, "binarizer"),
        ({"similarity": "dense"}, "similarity"),
        ({"metric": "manhattan"}, "metric"),
        ({"k1": 0}, "k1"),
        ({"adversarial_weight": -1.0}, "adversarial_weight"),
        ({"neighborhood_weight": 0.0, "content_weight": 0.0, "adversarial_weight": 0.0}, "all 0"),
        ({"content_weight": 1.0, "pixel_weight": 0.0, "feature_weight": 0.0}, "pixel_weight"),
        ({"similarity": "shared", "k2": 8, "min_shared": 9}, "min_shared"),
        ({"bits": 12}, "bits"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BGAN(**({"bits": 16} | kwargs))


def test_bad_knn_settings():
    points = torch.randn(10, 3)
    with pytest.raises(ValueError, match="k="):
        knn_indices(points, 10)
    with pytest.raises(ValueError, match="metric"):
        knn_indices(points, 3, "hamming")
    with pytest.raises(ValueError, match="k1"):
        batch_similarity(knn_indices(points, 3), torch.arange(4), k1=4)
    model = BGAN(bits=16, k1=20)
    with pytest.raises(ValueError, match="k1=20"):
        model.on_before_fit(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), points)


def test_bad_setting_through_the_config(make_cfg):
    with pytest.raises(Exception, match="binarizer"):
        train(make_cfg(*TINY, "method.module.binarizer=round"))
