"""Checks that a resume (`ckpt_path=last`, or a checkpoint file) continues the run it names: the
same data, split, codes and networks, and a length no shorter than what its checkpoint has trained.
`pgh-train` runs them before anything in the run directory is rewritten."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from pgh.callbacks.progressive import check_same_scoring
from pgh.config_checks import CONFIG_DIR, feature_configs, flat_config
from pgh.data import Split
from pgh.io import read_checkpoint
from pgh.retrieval.metrics import EVAL_DEFAULTS, LATER_DEFAULTS

log = logging.getLogger(__name__)

# what a resumed run must share with the run it continues: its data, split, codes and their length
# (a resume changes only how long or how it trains, e.g. method.rounds or method.max_epochs)
RUN_IDENTITY = (
    "bits",
    "seed",
    "dataset",
    "features",
    "split",
    "method._target_",
    "method.module._target_",
    "method.init_hash",  # PGH: the round-0 codes (metrics.json's init_map_all, rounds.csv's round 0)
    "method.init_features",  # ... and the features they come from
    "method.progressive.epochs_per_round",  # PGH: where the rounds end, counted from the run's start
)
# within those, keys that may differ: where the data sits (and whether it may be downloaded), how features are
# batched and where computed
RESUME_MAY_DIFFER = {"dataset": ("root", "download"), "features": ("batch_size", "device")}


def check_checkpoint_within_length(cfg: DictConfig, out: Path) -> None:
    """A resume whose run is shorter than what its checkpoint has trained: Lightning says so naming
    trainer.max_epochs, which pgh-train sets from the method's length."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return
    m = cfg.method
    max_epochs = m.rounds * m.progressive.epochs_per_round if "progressive" in m else m.max_epochs
    path = out / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.is_file():
        return  # Lightning resolves "last" among other names, and says what is missing
    state = read_checkpoint(path)
    # epochs begun: a checkpoint from the middle of an epoch has trained part of one more than `epoch` says
    progress = state.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    trained = int(progress.get("started", state["epoch"]))
    if trained > max_epochs:
        if "progressive" in m:
            length = f"method.rounds={m.rounds} x {m.progressive.epochs_per_round} epochs"
        else:
            length = f"method.max_epochs={m.max_epochs}"
        raise ValueError(
            f"{path} has begun {trained} epochs, more than this run's {length}: resume with at least "
            "that length (a finished run: the length it was run with), or start a new run from it in a new directory"
        )


def check_same_split(before: Split, now: Split, out: Path) -> None:
    """A resume whose data gives another split than the run's (images added to or removed from a folder
    dataset): the checkpoint's codes and the database positions would no longer belong together."""
    parts = ("query", "database", "train")
    if any(not torch.equal(getattr(before, p), getattr(now, p)) for p in parts):
        sizes = ", ".join(f"{p} {getattr(before, p).numel():,} -> {getattr(now, p).numel():,}" for p in parts)
        raise ValueError(
            f"the data gives another split than the run in {out} was trained on ({sizes}): the dataset changed "
            "since (files added, removed or renamed?). Restore it, or train a new run on the data as it is now"
        )


def checkpoint_run(path: Path) -> Path | None:
    """The run directory a checkpoint file belongs to (`<run>/checkpoints/<file>`, or a file copied to
    the top of `<run>`), recognised by its config.yaml; None for a file elsewhere."""
    folder = path.resolve().parent
    for run in (folder.parent, folder) if folder.name == "checkpoints" else (folder,):
        if (run / "config.yaml").exists():
            return run
    return None


def check_foreign_checkpoint(cfg: DictConfig, path: Path, run: Path | None) -> None:
    """`ckpt_path` names a file outside this run's checkpoints/: compare the command with `run`, the run
    the file belongs to (by its config.yaml), or, for a file outside any run, with what the checkpoint
    itself records (bits and network sizes; seed, data and split are not in it)."""
    if run is not None:
        check_resume_matches_run(cfg, run, foreign=True)
        return
    state = read_checkpoint(path)
    hparams = state.get("hyper_parameters", {})
    rounds = state.get("callbacks", {}).get("ProgressiveRounds")
    if rounds is not None:  # Lightning would meet it only while restoring, after the run's first files
        check_same_scoring(rounds, {k: cfg.eval.get(k, v) for k, v in EVAL_DEFAULTS.items()})
    names = ("bits", *get_class(cfg.method.module._target_).architecture)
    module = OmegaConf.to_container(cfg.method.module, resolve=True)
    differing = [
        f"method.module.{k}: {hparams[k]} there, {module[k]} here"
        for k in names
        if k in hparams and module.get(k) is not None and hparams[k] != module[k]
    ]
    if differing:
        raise ValueError(
            f"ckpt_path={path} holds another network than this command describes ({'; '.join(differing)}): "
            "give the settings it was trained with"
        )
    log.warning("ckpt_path=%s has no run's config.yaml beside it (<run>/checkpoints/): its seed, data and split "
                "cannot be compared with this command's", path)  # fmt: skip


def round0_features(cfg: DictConfig) -> str | None:
    """PGH's method.init_features, or None where the round-0 codes come from the features group: the
    key is null, or names the group's file as it stands and the group is that file unchanged."""
    name = OmegaConf.select(cfg, "method.init_features")
    if name is None or name not in feature_configs():
        return name
    as_it_stands = OmegaConf.load(Path(CONFIG_DIR) / "features" / f"{name}.yaml")
    ignored = RESUME_MAY_DIFFER["features"]
    same = {k: v for k, v in OmegaConf.to_container(as_it_stands).items() if k not in ignored}
    group = {k: v for k, v in OmegaConf.to_container(cfg.features, resolve=True).items() if k not in ignored}
    return None if same == group else name


def check_resume_matches_run(cfg: DictConfig, out: Path, foreign: bool = False) -> None:
    """Stop a resume whose command describes another run than the one in `out` (the run the checkpoint
    belongs to, by its config.yaml), before anything is rewritten: Lightning would fail on the
    checkpoint only after config.yaml and split.npz had been replaced by the new command's, or, where
    the shapes fit, continue another experiment (another seed or split: a model trained on the
    new split's queries)."""
    saved = out / "config.yaml"
    if not saved.exists():
        return
    before = OmegaConf.load(saved)
    for key, value in LATER_DEFAULTS.items():
        if OmegaConf.select(before, key) is None:
            OmegaConf.update(before, key, value, force_add=True)
    keys = RUN_IDENTITY
    if "progressive" in cfg.method:  # PGH scores every round: a resume would score rounds.csv's later rows otherwise
        keys += ("eval.map_k", "eval.tie_break")
    module_defaults = {}
    if "module" in cfg.method:  # and the networks' sizes, which Lightning would only meet as a size mismatch
        module_class = get_class(cfg.method.module._target_)
        keys += tuple(f"method.module.{name}" for name in module_class.architecture)
        # an argument added after the run was made: the run had its default
        signature = inspect.signature(module_class.__init__).parameters.items()
        module_defaults = {f"method.module.{k}": p.default for k, p in signature if p.default is not p.empty}
    differing = []
    for key in keys:
        old, new = (OmegaConf.select(c, key, default=module_defaults.get(key)) for c in (before, cfg))
        if key == "method.init_features" and round0_features(before) == round0_features(cfg):
            continue  # gist with features=gist as it stands is null: the same round-0 codes
        old, new = (OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v for v in (old, new))
        for ignored in RESUME_MAY_DIFFER.get(key, ()):
            for value in (old, new):
                if isinstance(value, dict):
                    value.pop(ignored, None)
        if old != new:
            differing.append(f"{key}: {old} there, {new} here")
    if differing:
        what = f"belongs to the run in {out}" if foreign else f"resumes the run in {out}"
        fix = f"give that run's settings (its {saved.name})"
        fix += "" if foreign else ", or start a new run directory"
        raise ValueError(
            f"ckpt_path={cfg.ckpt_path} {what}, but this command describes another run ({'; '.join(differing)}): {fix}"
        )


# keys whose change on a resume is no change of the experiment: where things go and how they are shown
NOT_EXPERIMENT = ("paths", "hydra", "logger", "ckpt_path", "requeued", "task_name", "callbacks", "trainer.enable_")


def log_changed_settings(cfg: DictConfig, out: Path) -> None:
    """Warn of every setting this resume changes from the run's config.yaml (its loss weights, jitter,
    vote, length ...), once the resume is known to go ahead: the resumed run trains on with the new
    values, and its config.yaml, replaced once it has trained, records only those, for the whole run."""
    if not (out / "config.yaml").is_file():
        return
    before = OmegaConf.load(out / "config.yaml")

    def flat(config: DictConfig) -> dict[str, Any]:
        values = flat_config(OmegaConf.to_container(config, resolve=True))
        return {k: v for k, v in values.items() if not any(k == n or k.startswith(n) for n in NOT_EXPERIMENT)}

    old, new = flat(before), flat(cfg)
    # a key the run's config lacks was added to pgh later: the run had its default
    changed = [f"{k}: {old[k]} -> {new.get(k, 'absent')}" for k in sorted(old) if old[k] != new.get(k, "absent")]
    if changed:
        log.warning(
            "resuming %s with settings changed from its config.yaml (the rest of the run trains with the new ones, "
            "and config.yaml will record only those): %s",
            out,
            "; ".join(changed),
        )
