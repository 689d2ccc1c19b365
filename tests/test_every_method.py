"""One parametrised test over every method config in conf/method/: each trains on digits through
the same `train(cfg)` and writes the same metrics.json, so every row of a table is comparable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import METRIC_KEYS, assert_checkpoint_codes_the_database_as_the_run_did

from pgh.train import CONFIG_DIR, train

METHODS = sorted(p.stem for p in (Path(CONFIG_DIR) / "method").glob("*.yaml"))
# a few steps of each deep method (small networks, one or two epochs)
TINY = {
    "pgh": [
        "method.rounds=1",
        "method.progressive.epochs_per_round=1",
        "method.module.width=8",
        "method.module.hidden=16",
        "method.batch_size=64",
    ],
    "dh": ["method.max_epochs=1"],
    "deepbit": ["method.max_epochs=2", "method.module.stage1_epochs=1", "method.module.width=8"],
    "bgan": ["method.max_epochs=1", "method.module.width=8"],
}


def test_every_method_is_covered():
    assert {"lsh", "itq", "sh", "sph", "pgh", "dh", "deepbit", "bgan"} <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_reports_the_same_metrics(make_cfg, method):
    cfg = make_cfg(
        "dataset=digits",
        f"method={method}",
        "bits=16",
        "split.query_per_class=20",
        "split.train_size=300",
        "logger=none",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        *TINY.get(method, []),
    )
    metrics = train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert METRIC_KEYS <= saved.keys() and saved["method"] == method and saved["num_train"] == 300
    assert 0.0 < saved["map_all"] <= 1.0 and saved["map_all"] == pytest.approx(metrics["map_all"])
    if "module" in cfg.method:  # a deep method: its last.ckpt is the model the run evaluated
        assert_checkpoint_codes_the_database_as_the_run_did(cfg)
    else:  # a shallow one: its hasher.pt, fed the run's features, gives the run's database codes
        assert_hasher_codes_the_database_as_the_run_did(cfg)


def assert_hasher_codes_the_database_as_the_run_did(cfg) -> None:
    import numpy as np
    from hydra.utils import instantiate

    from pgh.data import Split
    from pgh.hashing import load_hasher
    from pgh.retrieval import pack_codes

    out = Path(cfg.paths.output_dir)
    dataset, split = instantiate(cfg.dataset), Split.load(out / "split.npz")
    features = instantiate(cfg.features)(dataset.images[split.database])
    coded = pack_codes(load_hasher(out / "hasher.pt").encode(features))
    np.testing.assert_array_equal(coded, np.load(out / "database_codes.npy"))


@pytest.mark.parametrize("method", [m for m in METHODS if m in TINY])
def test_every_deep_method_names_its_architecture_in_its_config(make_cfg, method):
    """`architecture` (what a resume must keep) names constructor arguments the method's config sets,
    so a resume with other network sizes stops with pgh-train's message, not a size mismatch."""
    import inspect

    from hydra.utils import get_class

    module = make_cfg(f"method={method}").method.module
    cls = get_class(module._target_)
    assert cls.architecture, f"{cls.__name__}.architecture is empty"
    assert set(cls.architecture) <= set(inspect.signature(cls.__init__).parameters) & set(module)


@pytest.mark.parametrize("method", [m for m in METHODS if m in TINY])
def test_every_deep_method_codes_numpy_inputs_and_names_wrong_ones(make_cfg, method):
    """Float images in [0, 1] were read as 0..255 and gave other codes without a word; NumPy arrays
    failed inside torch."""
    import numpy as np
    from hydra.utils import instantiate

    cfg = make_cfg(f"method={method}", "bits=16")
    kwargs = {"num_train": 4} if method == "pgh" else {"in_dim": 64} if method == "dh" else {}
    model = instantiate(cfg.method.module, **kwargs).eval()
    if model.input_kind == "images":
        channels, size = model.hparams.get("channels") or 1, model.hparams.get("image_size") or 28
        good = np.random.default_rng(0).integers(0, 256, (3, channels, size, size), dtype=np.uint8)
        bad, message = good / 255.0, r"codes uint8 images \[n, C, H, W\] in 0..255, got torch.float64"
    else:
        good = np.random.default_rng(0).normal(size=(3, 64))
        bad, message = good.astype(np.int64), r"codes float features \[n, dim\] .*got torch.int64"
    codes = model.encode_inputs(good)
    assert codes.dtype == torch.bool and codes.shape == (3, 16)
    with pytest.raises(TypeError, match=message):
        model.encode_inputs(bad)
    if model.input_kind == "images":
        with pytest.raises(ValueError, match=r"looks channels-last: give \[n, C, H, W\]"):
            model.encode_inputs(np.zeros((2, size, size, 3 if channels == 1 else 1), np.uint8))
        # the fix named is the one for these inputs ((x * 255) would wrap whole numbers in 0..255)
        with pytest.raises(TypeError, match=r"got torch.int64 .*e.g. x.to\(torch.uint8\) for whole numbers"):
            model.encode_inputs(good.astype(np.int64))
        with pytest.raises(TypeError, match=r"e.g. add the channel axis, x\[:, None\]"):
            model.encode_inputs(good[:, 0])


@pytest.mark.parametrize("method", [m for m in METHODS if m in TINY])
def test_every_deep_method_resumes_with_the_configured_optimizer_settings(make_cfg, method):
    """The restored optimizers (here: with doubled learning rates) get each method's configured ones
    back from the base class's on_train_start, which no method may shadow."""
    from hydra.utils import instantiate

    from pgh.methods.base import DeepHasher, apply_configured_settings, as_list

    cfg = make_cfg(f"method={method}", "bits=16")
    kwargs = {"num_train": 4} if method == "pgh" else {"in_dim": 64} if method == "dh" else {}
    model = instantiate(cfg.method.module, **kwargs)
    assert type(model).on_train_start is DeepHasher.on_train_start
    saved = as_list(model.configure_optimizers())
    for optimizer in saved:
        for group in optimizer.param_groups:
            group["lr"] *= 2
    restored = as_list(model.configure_optimizers())
    for new, old in zip(restored, saved):
        new.load_state_dict(old.state_dict())
    configured = as_list(model.configure_optimizers())
    apply_configured_settings(restored, configured)
    rates = [[g["lr"] for g in o.param_groups] for o in restored]
    assert rates == [[g["lr"] for g in o.param_groups] for o in configured]
    assert rates != [[g["lr"] for g in o.param_groups] for o in saved]


@pytest.mark.parametrize(
    "method, override, message",
    [
        ("dh", "method.module.init=uniform", r"method.module: init='uniform' is not one of"),
        ("dh", "method.module.hidden=[0]", r"method.module: hidden"),
        ("deepbit", "method.module.latent_init=kmeans", r"method.module: latent_init='kmeans' is not one of"),
        ("deepbit", "method.module.rotations=[]", r"method.module: rotations=\[\] must be a non-empty list"),
        ("bgan", "method.module.binarizer=round", r"method.module: BGAN: binarizer='round' is not one of"),
        ("bgan", "method.module.k1=0", r"method.module: BGAN: k1=0 must be a positive integer"),
        ("bgan", "+method.module.k3=5", r"method.module: .*unexpected keyword argument 'k3'"),
    ],
)
def test_every_deep_method_refuses_bad_arguments_before_any_work(make_cfg, monkeypatch, method, override, message):
    """Each deep method's constructor checks run in `pgh-train`'s own check, before the features (GIST
    of a large dataset takes minutes) are computed."""
    import pgh.train

    monkeypatch.setattr(pgh.train, "cached_features", lambda *a, **k: pytest.fail("features computed first"))
    with pytest.raises(ValueError, match=message):
        train(make_cfg("dataset=digits", f"method={method}", "bits=16", "trainer=cpu", override))


def test_deepbit_missing_vgg16_weights_refused_before_any_work(make_cfg, monkeypatch, tmp_path):
    import pgh.train

    monkeypatch.setattr(pgh.train, "cached_features", lambda *a, **k: pytest.fail("features computed first"))
    missing = tmp_path / "vgg16.pth"
    overrides = ["method.module.backbone=vgg16", f"method.module.weights={missing}"]
    with pytest.raises(FileNotFoundError, match=r"VGG16 weights not found: .*method\.module\.weights=PATH"):
        train(make_cfg("dataset=digits", "method=deepbit", "bits=16", "trainer=cpu", *overrides))
