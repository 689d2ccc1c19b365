"""Checks of a composed config that `pgh-train` runs before any work (features, initial codes,
training): each refuses a setting this machine or method cannot run with a message naming the key to
fix, where torch, Lightning or Hydra would only fail later, in their own words."""

from __future__ import annotations

import importlib
import inspect
import os
import re
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from pgh.hashing import HASHERS

# the configs live at the repository top level (conf/), beside the package
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

SUPPORTED_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
PRECISION_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}  # Lightning's short names


def flat_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A config's leaves (a plain container: OmegaConf.to_container) as dotted keys, e.g.
    {"method.module.lam": 1.0, ...}; lists are leaves."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in flat_config(value, f"{prefix}{key}.").items()}


def feature_configs() -> list[str]:
    """The features group's choices (conf/features/<name>.yaml), e.g. for method.init_features."""
    return sorted(path.stem for path in (Path(CONFIG_DIR) / "features").glob("*.yaml"))


def check_method_class(method: DictConfig) -> None:
    """The method's class imports and is of the kind its config says: a ShallowHasher at
    `method._target_`, a DeepHasher at `method.module._target_` (Hydra would say so only in a
    traceback, or as an unexpected keyword argument)."""
    from pgh.hashing import ShallowHasher
    from pgh.methods.base import INPUT_KINDS, DeepHasher

    key = "method.module._target_" if "module" in method else "method._target_"
    target = OmegaConf.select(method, key.removeprefix("method."))
    if not isinstance(target, str):
        raise ValueError(f"{key} must name a class, e.g. pgh.hashing.ITQ (README: Adding a method)")
    module_name, _, name = target.rpartition(".")
    try:  # not hydra.utils.get_class, which logs an error of its own before raising
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        reason = str(error) if module_name else "not a dotted module.Class path"
        raise ValueError(
            f"{key}={target} cannot be imported ({reason}): check its spelling, and that its module is on the "
            "PYTHONPATH (README: Adding a method)"
        ) from None
    if not isinstance(cls, type):
        raise ValueError(f"{key}={target} is no class")
    if "module" in method:
        if not issubclass(cls, DeepHasher):
            raise ValueError(f"{key}={target} is no pgh.methods.base.DeepHasher (a shallow hasher is method._target_)")
        if cls.input_kind not in INPUT_KINDS:
            raise ValueError(f"{key}={target} has input_kind={cls.input_kind!r}, not one of {INPUT_KINDS}")
    elif issubclass(cls, DeepHasher):
        raise ValueError(
            f"{key}={target} is a DeepHasher: its config goes under method.module, beside max_epochs, batch_size, "
            "num_workers and checkpoint_every_n_steps (README: Adding a method)"
        )
    elif not issubclass(cls, ShallowHasher):
        raise ValueError(f"{key}={target} is no pgh.hashing.ShallowHasher, nor a DeepHasher under method.module")


def check_init_codes(method: DictConfig) -> None:
    """PGH's round-0 codes: a hasher and features that exist, caught before any features are computed."""
    if "init_hash" in method and method.init_hash not in HASHERS:
        raise ValueError(f"method.init_hash={method.init_hash!r} is not one of {sorted(HASHERS)}")
    name = method.get("init_features")
    if name is not None and name not in feature_configs():
        raise ValueError(
            f"method.init_features={name!r} is not one of {feature_configs()} (conf/features/); null: the "
            "round-0 codes come from the features group"
        )


def check_module_arguments(method: DictConfig, num_train: int) -> None:
    """The deep method's own check of its constructor arguments (`DeepHasher.check_arguments`), with
    the key to fix named."""
    kwargs = {k: v for k, v in OmegaConf.to_container(method.module, resolve=True).items() if not k.startswith("_")}
    if "init_hash" in method:
        kwargs["num_train"] = num_train
    try:
        get_class(method.module._target_).check_arguments(**kwargs)
    except (ValueError, TypeError) as error:
        raise ValueError(f"method.module: {error}") from None
    stage1 = method.module.get("stage1_epochs")  # DeepBit: its on_fit_start would refuse it once training began
    if isinstance(stage1, int) and "max_epochs" in method and stage1 > method.max_epochs:
        raise ValueError(
            f"method.module.stage1_epochs={stage1} is more than method.max_epochs={method.max_epochs}: stage 2 "
            "runs the epochs after stage 1; set stage1_epochs <= max_epochs"
        )


def check_trainer(trainer: DictConfig, method: DictConfig) -> None:
    """Trainer settings this machine cannot run, or that the method overrides, caught before any work:
    Lightning and torch only say so after the features and initial codes, in their own words."""
    if trainer.get("max_epochs") is not None:
        length = f"method.max_epochs={method.get('max_epochs')}"
        if "progressive" in method:  # PGH
            length = f"method.rounds={method.rounds} x method.progressive.epochs_per_round="
            length += str(method.progressive.epochs_per_round)
        raise ValueError(
            f"trainer.max_epochs={trainer.max_epochs} would be ignored: a deep method's length is {length}; "
            "set that instead"
        )
    name, unit = ("rounds", "rounds") if "progressive" in method else ("max_epochs", "epochs")
    value = method.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"method.{name}={value} must be a positive whole number of {unit}")
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        fix = "trainer=cpu (the paper-scale experiment configs pick trainer=gpu)"
        if trainer.get("strategy") is not None:  # trainer=ddp: keep DDP, on gloo
            fix = "trainer.accelerator=cpu trainer.devices=2 trainer.sync_batchnorm=false for DDP on the CPU (gloo)"
        raise ValueError(
            f"trainer.accelerator={accelerator} but torch sees no CUDA device; run on a GPU machine, or add {fix}"
        )
    warmup, progressive = method.module.get("gan_warmup_epochs", 0), method.get("progressive")
    if progressive is not None:
        from pgh.callbacks.progressive import check_round_settings

        checked = inspect.signature(check_round_settings).parameters
        try:
            check_round_settings(**{k: v for k, v in progressive.items() if k in checked})
        except ValueError as error:
            raise ValueError(f"method.progressive: {error}") from None
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"method.module.gan_warmup_epochs={warmup!r} must be a whole number >= 0 of epochs")
    for key, smallest_value, what in (
        ("num_workers", 0, "data-loading processes (0: load in the training process)"),
        ("checkpoint_every_n_steps", 0, "Lightning global steps (0: none while training, only the finished run's)"),
    ):
        value = method.get(key, smallest_value)
        if key == "checkpoint_every_n_steps" and value is None:  # Lightning reads null as 0
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest_value:
            raise ValueError(f"method.{key}={value!r} must be a whole number >= {smallest_value} of {what}")
    batch_size, smallest = method.get("batch_size"), 2 if progressive is not None else 1  # PGH: b_j is another image's
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < smallest:
        raise ValueError(f"method.batch_size={batch_size} must be a whole number of images, at least {smallest}")
    if progressive is not None and warmup >= progressive.epochs_per_round:
        raise ValueError(
            f"method.module.gan_warmup_epochs={warmup} covers the first round (method.progressive.epochs_per_round="
            f"{progressive.epochs_per_round}): H would not have trained when the round's end replaces the initial "
            "codes by H's; use fewer warm-up epochs than epochs_per_round"
        )
    precision = str(trainer.get("precision") or "32-true")  # Lightning reads None as 32-true
    precision = PRECISION_ALIASES.get(precision, precision)
    if precision not in SUPPORTED_PRECISIONS:
        raise ValueError(
            f"trainer.precision={precision} is not supported: the networks take float32 inputs and train "
            f"in float32 or under autocast; use one of {', '.join(SUPPORTED_PRECISIONS)}"
        )
    module_class = get_class(method.module._target_)
    if precision.startswith("16") and getattr(module_class, "two_steps_per_backward", False):
        raise ValueError(
            f"trainer.precision={precision} does not suit {module_class.__name__}: one backward pass feeds two "
            "optimizer steps, and the float16 loss scaler would change its scale between them (the second "
            "network's gradients unscaled by the wrong factor); use trainer.precision=bf16-mixed (no scaler)"
        )
    if precision.startswith("16") and (accelerator == "cpu" or not torch.cuda.is_available()):
        raise ValueError(
            f"trainer.precision={precision} needs a CUDA device (on the CPU Lightning would switch to bf16-mixed); "
            "use trainer.precision=bf16-mixed"
        )
    if accelerator == "cpu" and trainer.get("sync_batchnorm"):
        raise ValueError(
            "trainer.sync_batchnorm=true needs GPUs (SyncBatchNorm does not run on the CPU); for DDP on the "
            "CPU (gloo) add trainer.sync_batchnorm=false"
        )
    check_slurm_tasks(trainer, accelerator)


def check_slurm_tasks(trainer: DictConfig, accelerator: str) -> None:
    """Inside a SLURM job step, Lightning makes each SLURM task one DDP rank, so a node must run one task
    per device; it says so only after the features and initial codes, and hints at trainer.devices=1."""
    tasks_per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
    if tasks_per_node is None or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return  # not a batch job step (Lightning does not treat interactive sessions as SLURM either)
    tasks = int(re.match(r"\d+", tasks_per_node).group())  # SLURM writes e.g. "4" or "4(x2)"
    devices = trainer.get("devices", 1)
    if devices == -1 and accelerator in ("gpu", "cuda"):
        devices = torch.cuda.device_count()
    if isinstance(devices, int) and devices > 0 and devices != tasks:
        raise ValueError(
            f"this SLURM job runs {tasks} task(s) per node but trainer.devices resolves to {devices}: Lightning "
            f"makes each task one DDP rank. Add hydra.launcher.tasks_per_node={devices} (with "
            f"hydra.launcher.gpus_per_node={devices}), or trainer.devices={tasks}"
        )


# settings that are true or false: `save_codes=no` is a string, which Python would read as true
SWITCHES = (
    "save_codes",
    "requeued",
    "dataset.grayscale",
    "dataset.download",
    "features.per_channel",
    "features.pretrained",
    "method.module.augment_flip",
    "method.module.balance_centered",
    "method.module.pretrained",
    "method.module.neighbor_pairs",
    "method.progressive.reset_gan_each_round",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.sync_batchnorm",
)  # fmt: skip (not logger.wandb.log_model, which also takes "all")


def check_switches(cfg: DictConfig) -> None:
    """Each of SWITCHES that is set must be a boolean, not a string such as `no`."""
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{key}={value!r} must be true or false")


def check_split_keys(split: DictConfig) -> None:
    """A misspelt split key (`+split.querry_per_class=5`) is named with the keys there are, before the
    dataset loads (the split function would refuse it as an unexpected keyword argument)."""
    try:
        known = inspect.signature(get_method(split._target_)).parameters
    except (TypeError, ValueError):  # a callable whose signature Python cannot read: it checks its own keys
        return
    except ImportError as error:
        raise ValueError(f"split._target_={split._target_}: cannot be imported ({error})") from None
    unknown = [key for key in split if not key.startswith("_") and key not in known]
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in known.values()):
        keys = [name for name in known if name not in ("labels", "class_names")]  # pgh-train passes those
        raise ValueError(f"split.{unknown[0]} is not a split setting; the settings are {', '.join(keys)}")


def check_directories(cfg: DictConfig) -> None:
    """The feature cache and the loggers' folders must be folders: one naming a file (or a path through
    one) would stop the job only when it first writes there, in the operating system's words. A
    logger's folder must not be in another run's directory (see `other_run_around`)."""
    places = {"paths.cache_dir": cfg.paths.get("cache_dir")}
    for name, entry in (cfg.get("logger") or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            places[f"logger.{name}.save_dir"] = entry.get("save_dir")
    for key, place in places.items():
        if place is None:
            continue
        path = Path(place)
        while not path.exists() and path != path.parent:  # the deepest part that exists must be a folder
            path = path.parent
        if not path.is_dir():
            fix = f"set {key}=<a folder>"
            if key == "paths.cache_dir" and os.environ.get("PGH_CACHE_DIR"):
                fix = "point PGH_CACHE_DIR at a folder (or unset it)"
            raise NotADirectoryError(f"{key}={place}: {path} is a file, not a folder; {fix}")
        other = other_run_around(Path(place), Path(cfg.paths.output_dir)) if key.startswith("logger.") else None
        if other is not None:
            raise ValueError(
                f"{key}={place} is in the run directory {other}, not in this run's paths.output_dir="
                f"{cfg.paths.output_dir}: this run's logs would overwrite that run's. A config.yaml loaded from a "
                f"run keeps its resolved paths: set {key} as well, or compose the config anew"
            )


def other_run_around(place: Path, out: Path) -> Path | None:
    """The run directory (one with a run's config.yaml and split.npz) that holds `place` or is `place`,
    when that is not this run's `out` nor inside it: where a config.yaml loaded from a finished run
    (its paths resolved) would send this run's logs (Lightning's CSV logger rewrites metrics.csv there)."""
    place, out = place.resolve(), out.resolve()
    if place == out or out in place.parents:
        return None
    for folder in (place, *place.parents):
        if (folder / "config.yaml").is_file() and (folder / "split.npz").is_file():
            return folder
    return None


def check_code_fits(cfg: DictConfig, initial: bool, width: int) -> None:
    """The hasher fitted on features of this width (the run's shallow method, or with `initial` PGH's
    initial hash) accepts its code length (ITQ projects onto `bits` principal directions): refused
    before the whole dataset's features are computed (minutes of GIST on Fashion-MNIST)."""
    if initial:
        HASHERS[cfg.method.init_hash](bits=cfg.bits, seed=cfg.seed).check_width(width)
    elif "module" not in cfg.method:
        instantiate(cfg.method).check_width(width)
