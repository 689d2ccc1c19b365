"""`train(cfg) -> metrics`: one run of one method on one dataset, evaluated by the protocol.

`main` is the `pgh-train` Hydra entry point; tests and sweeps call `train` directly on a composed
config. The modules below take typed arguments: the config groups are instantiated here, in the
checks before any work (`pgh.config_checks`, which also builds the hasher to test its width, and,
for a resume, `pgh.resume`) and by the logger factory (`pgh.logging_utils`); `pgh-index` rebuilds a
finished run from its config.yaml (`pgh.retrieval.run_encoder`).
A shallow method (`method` is a hasher config) is fitted on features; a deep method (`method` has a
`module` LightningModule config) is trained with a Lightning Trainer.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError

import pgh.sweep_jobs  # noqa: F401  (the `pgh_swept` resolver of a sweep job's directory name)
from hydra_plugins.pgh_searchpath import check_config_path
from pgh.callbacks.checkpointing import STOPPED_CHECKPOINT, reached_last_batch
from pgh.config_checks import (
    CONFIG_DIR,
    check_code_fits,
    check_directories,
    check_init_codes,
    check_method_class,
    check_module_arguments,
    check_split_keys,
    check_switches,
    check_trainer,
)
from pgh.data import ImageDataset, Split
from pgh.data.loader import training_loader
from pgh.features import cached_features
from pgh.hashing import HASHERS, ShallowHasher
from pgh.io import save_npy, write_json, write_text
from pgh.logging_utils import (
    WANDB_NO_KEY,
    check_wandb,
    close_failed_wandb_run,
    finish,
    instantiate_loggers,
    log_figure,
    logger_step,
    print_and_log_to_files,
    quiet_lightning_notices,
)
from pgh.override_errors import concise_override_errors, user_error
from pgh.report.plots import matplotlib_close, plot_pr_curves, plot_precision_at_n, save_figure
from pgh.resume import (
    check_checkpoint_within_length,
    check_foreign_checkpoint,
    check_resume_matches_run,
    check_same_split,
    checkpoint_run,
    log_changed_settings,
)
from pgh.resume_command import how_to_go_on, in_a_multirun
from pgh.retrieval import check_bits, code_statistics, evaluate_packed, pack_codes
from pgh.retrieval.metrics import EVAL_DEFAULTS, check_eval_options, metric_key
from pgh.run_dir import (
    RemoveResultsAtStart,
    read_json,
    remove_if_only_hydra_files,
    remove_results,
    remove_rounds,
    restore_files,
    run_directory_lock,
    take_back_start_files,
)

log = logging.getLogger(__name__)
# how long a requeued job waits for its run directory's lock (on NFS a killed job's lock outlives it until its
# lease expires, about 90 s)
REQUEUED_LOCK_WAIT_S = 300.0


def feature_name(cfg: DictConfig) -> str:
    target = cfg.features._target_.rsplit(".", 1)[-1]
    return {"PixelFeatures": "pixels", "GistFeatures": "gist", "VGG16FC7Features": "vgg16_fc7"}.get(target, target)


def method_name(cfg: DictConfig) -> str:
    target = cfg.method.module._target_ if "module" in cfg.method else cfg.method._target_
    return target.rsplit(".", 1)[-1].lower()


def fit_shallow(
    hasher: ShallowHasher, features: torch.Tensor, split: Split
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Fit on the training set, encode queries and database; returns packed codes and timings."""
    t0 = time.perf_counter()
    hasher.fit(features[split.train])
    t1 = time.perf_counter()
    query = pack_codes(hasher.encode(features[split.query]))
    database = pack_codes(hasher.encode(features[split.database]))
    t2 = time.perf_counter()
    return query, database, {"train_seconds": t1 - t0, "encode_seconds": t2 - t1}


def train_deep(
    cfg: DictConfig,
    dataset: ImageDataset,
    split: Split,
    features: torch.Tensor,
    loggers: list,
    out: Path,
    eval_opts: dict[str, Any],
    progress: JobProgress,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """Fit the method's LightningModule (`method.module`) with a Lightning Trainer, then encode.
    Returns None on the ranks other than 0 of a multi-process run (DDP), which have nothing to write.

    Methods conditioned on initial shallow codes (`method.init_hash`, PGH) get those codes first;
    methods trained in progressive rounds (`method.progressive`) get the round callback and
    `rounds * epochs_per_round` epochs, the others `method.max_epochs`.
    """
    from torch.utils.data import TensorDataset

    from pgh.callbacks import (
        AtomicCheckpointIO,
        RandomState,
        StepCheckpoint,
        SubmititSignals,
        TrainingClock,
        under_submitit,
    )
    from pgh.methods.base import keeping_size, lossy_conversion

    m, labels, n_train = cfg.method, dataset.labels, int(split.train.numel())
    train_features = features[split.train]
    run_info: dict[str, Any] = {}
    module_kwargs: dict[str, Any] = {}
    init_codes = init_metrics = None
    if "init_hash" in m:
        source = features
        if m.get("init_features") is not None:  # round-0 codes from other features than the features group's
            config = OmegaConf.load(Path(CONFIG_DIR) / "features" / f"{m.init_features}.yaml")
            source = cached_features(
                dataset,
                instantiate(config),
                OmegaConf.to_container(config, resolve=True),
                cfg.paths.cache_dir,
                check_width=partial(check_code_fits, cfg, True),
            )
        init = HASHERS[m.init_hash](bits=cfg.bits, seed=cfg.seed).fit(source[split.train])
        init_db = pack_codes(init.encode(source[split.database]))
        init_query = pack_codes(init.encode(source[split.query]))
        init_metrics = evaluate_packed(init_query, labels[split.query], init_db, labels[split.database], **eval_opts)
        init_metrics = {**init_metrics.metrics, **{f"db_{k}": v for k, v in code_statistics(init_db, cfg.bits).items()}}
        init_codes = init.encode(source[split.train])
        module_kwargs["num_train"] = n_train
        init_features = m.get("init_features") or feature_name(cfg)
        run_info.update(init_map_all=init_metrics["map_all"], init_hash=m.init_hash, init_features=init_features)

    model = instantiate(m.module, **module_kwargs)  # its class checked by check_method_class
    if init_codes is not None:
        model.set_codes(init_codes, initial=True)
    if (read_as := model.network_input()) is not None:
        side = max(dataset.images.shape[2:])
        channels, size = dataset.images.shape[1], keeping_size(side, model.image_sizes)
        lost = lossy_conversion(tuple(dataset.images.shape[1:]), *read_as)
        if lost:  # a choice (the config's defaults are MNIST's 1 x 28 px), but not one to make unawares
            keep = "as they are" if size >= side else "as whole as its networks take them"
            log.warning(
                "%s's networks read %d-channel %d-px images: it %s; set method.module.channels=%d "
                "method.module.image_size=%d to train on %s's images %s",
                type(model).__name__, *read_as, " and ".join(lost), channels, size, dataset.name, keep,
            )  # fmt: skip
    inputs = dataset.images if model.input_kind == "images" else features
    train_inputs = inputs[split.train]

    callbacks: list = []
    if "progressive" in m:
        rounds = instantiate(m.progressive)(
            train_images=train_inputs,
            query_images=inputs[split.query],
            query_labels=labels[split.query],
            db_images=inputs[split.database],
            db_labels=labels[split.database],
            output_dir=out,
            initial_metrics=init_metrics,
            eval_kwargs=eval_opts,
            train_features=train_features,
        )
        callbacks.append(rounds)
        max_epochs = m.rounds * rounds.epochs_per_round
    else:
        max_epochs = m.max_epochs
    quiet_lightning_notices()
    # no last-v1.ckpt: a run resumed in a copied or moved directory (Lightning sees another dirpath
    # in the checkpoint) must replace last.ckpt, which pgh-index and RunEncoder load
    checkpointing = StepCheckpoint(
        dirpath=out / "checkpoints",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=m.checkpoint_every_n_steps,
        enable_version_counter=False,
    )
    clock = TrainingClock()
    callbacks += [checkpointing, RandomState(), clock, RemoveResultsAtStart(out)]
    if under_submitit():  # hydra/launcher=slurm|local: a SIGTERM must not end the job before its requeue
        callbacks.append(SubmititSignals())
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    trainer = instantiate(
        cfg.trainer, max_epochs=max_epochs, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    model.on_before_fit(train_inputs, train_features, device=trainer.strategy.root_device)  # a rank's own GPU
    per_rank = math.ceil(n_train / trainer.world_size)  # DDP's sampler gives each rank this many images
    left_out = per_rank % m.batch_size if per_rank > m.batch_size else 0
    if left_out > per_rank / 4:  # a shuffled epoch leaves out a different remainder each time, but this much?
        log.warning(
            "method.batch_size=%d on %d training images%s: each epoch trains on %d of them and leaves out %d "
            "(the last, partial batch is dropped); a batch size that divides them better uses them all",
            m.batch_size, per_rank, " a rank" if trainer.world_size > 1 else "", per_rank - left_out, left_out,
        )  # fmt: skip
    loader = training_loader(
        TensorDataset(train_inputs, torch.arange(n_train)),
        batch_size=m.batch_size,
        drop_last=per_rank > m.batch_size,  # else a rank with fewer images than a batch would run no step
        num_workers=m.num_workers,
    )
    if trainer.is_global_zero and cfg.get("ckpt_path") is None:  # a new run: no checkpoint to refuse first
        remove_rounds(out)
    progress.training_started = True  # from here a failure keeps the run's files (logs, curves): they tell why
    try:
        trainer.fit(model, train_dataloaders=loader, ckpt_path=cfg.get("ckpt_path"))
    except SystemExit as stop:
        # SIGTERM: Lightning's SIGTERMException, a SystemExit without a code (the job would end as a success);
        # Ctrl-C: Lightning's sys.exit(1) after its shutdown. Either way: how to go on, in train.log too
        if isinstance(stop, SIGTERMException):
            why = f"SIGTERM at step {trainer.global_step} (a scheduler's time limit, scancel, kill)"
        elif isinstance(stop.__context__, KeyboardInterrupt):
            why = f"Ctrl-C at step {trainer.global_step}"
        else:
            raise
        close_failed_wandb_run()
        message = f"pgh-train: stopped by {why}; {how_to_go_on(out)}"
        log.error(message)
        raise SystemExit(message) from None
    # the step-interval checkpoint can predate the last steps and the last round's code refresh, so
    # save the model that is evaluated below; not after a stop in mid-epoch (trainer.max_steps or
    # max_time, a callback's should_stop), where Lightning would record the epoch as finished and a
    # resume would skip its remaining batches
    train_seconds = clock.seconds  # every attempt's: the checkpoint below carries it to a later resume
    stopped_model = out / "checkpoints" / STOPPED_CHECKPOINT
    finished_epoch = reached_last_batch(trainer)
    if finished_epoch:
        trainer.save_checkpoint(checkpointing.last_model_path or out / "checkpoints" / "last.ckpt", weights_only=False)
        if trainer.is_global_zero:
            stopped_model.unlink(missing_ok=True)  # a resume finished what an earlier attempt stopped
    else:  # the model evaluated below, which no resumable checkpoint holds; pgh-index codes with it
        trainer.save_checkpoint(stopped_model, weights_only=True)
    run_info["stopped_mid_epoch"] = not finished_epoch
    if not trainer.is_global_zero:
        return None  # under DDP every rank runs train(); rank 0 alone encodes, evaluates and writes
    t1 = time.perf_counter()
    model.eval()  # a method of one's own whose encode_inputs keeps the training mode (BatchNorm's batch statistics)
    query = pack_codes(model.encode_inputs(inputs[split.query]))
    database = pack_codes(model.encode_inputs(inputs[split.database]))
    t2 = time.perf_counter()
    if hasattr(model, "current_round"):
        run_info["rounds_completed"] = int(model.current_round)
    run_info["global_step"] = int(trainer.global_step)  # Lightning's optimizer steps, over every attempt
    run_info["log_step"] = logger_step(trainer)  # the losses' x-axis: where the loggers get the final metrics
    return query, database, {"train_seconds": train_seconds, "encode_seconds": t2 - t1, **run_info}


def closing_line(m: dict[str, Any], out: Path) -> str:
    """One line with the headline numbers and where the run wrote its results; K and r are the run's
    eval.map_k, precision_k and radius."""
    map_k, precision_k, radius = (metric_key(m, p) for p in ("map_at_", "precision_at_", "precision_radius_"))
    # PGH: beside its round 0, the codes it started from (a short run can end below them)
    start = f" (round 0 {100 * m['init_map_all']:.2f})" if isinstance(m.get("init_map_all"), float) else ""
    return (
        f"pgh | {m['dataset']} | {m['method']}+{m['features']} | {m['bits']} bits | "
        f"mAP@all {100 * m['map_all']:.2f}{start} | mAP@{map_k.removeprefix('map_at_')} {100 * m[map_k]:.2f} | "
        f"P@{precision_k.removeprefix('precision_at_')} {100 * m[precision_k]:.2f} | "
        f"P@r{radius.removeprefix('precision_radius_')} {100 * m[radius]:.2f} | "
        f"train {m['train_seconds']:.1f}s | {out}"
    )


def stored_class_by_class(labels: torch.Tensor) -> bool:
    """Whether each label's items sit in one block (mnist5k, a folder dataset), not interleaved."""
    classes = labels.unique().numel()
    return classes > 1 and int((labels[1:] != labels[:-1]).sum()) == classes - 1


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run the composed job into `cfg.paths.output_dir` and return its metrics (the dict written to
    metrics.json). Under DDP every rank runs it; ranks other than 0 return {} and write no results.

    From Python, compose with `paths.output_dir=<a directory>` (pgh-train's Hydra sets it otherwise).
    The run seeds Python's, NumPy's and torch's random streams with `cfg.seed` and silences some of
    Lightning's notices; both are as they were when it returns."""
    bits = check_bits(cfg.bits)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise ValueError(f"seed={cfg.seed!r} must be a whole number in 0..2**32 - 1")  # NumPy's and Lightning's range
    try:
        out = Path(cfg.paths.output_dir)
    except InterpolationResolutionError:
        raise ValueError(
            "cfg.paths.output_dir is ${hydra:runtime.output_dir}, which only a Hydra app (pgh-train) sets: "
            "compose with the override paths.output_dir=<a directory> to call train(cfg) from Python"
        ) from None
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
    except InterpolationResolutionError:  # another unresolvable value: its own use says which
        missing = []
    if missing:  # e.g. dataset=folder's root
        example = "dataset.root=/path/to/images (one sub-folder per class)" if "dataset.root" in missing else ""
        raise ValueError(
            f"{', '.join(missing)} must be given on the command line" + (f", e.g. {example}" if example else "")
        )
    check_switches(cfg)
    check_method_class(cfg.method)
    check_split_keys(cfg.split)
    check_directories(cfg)
    if cfg.get("ckpt_path") is not None and "module" not in cfg.method:
        if not in_a_multirun():  # a sweep's resume reruns its shallow jobs with the same command
            log.warning("ckpt_path=%s: %s is a shallow hasher, which has no checkpoint; it is fitted afresh",
                        cfg.ckpt_path, method_name(cfg))  # fmt: skip
        with open_dict(cfg):
            cfg.ckpt_path = None
    checkpoints = out / "checkpoints"
    has_checkpoints = any(checkpoints.glob("last*.ckpt"))  # what a resume continues from
    fresh = "hydra.sweep.dir" if in_a_multirun() else "hydra.run.dir"
    if not has_checkpoints and (checkpoints / STOPPED_CHECKPOINT).exists() and not cfg.get("requeued"):
        # weights only: ckpt_path=last would find nothing to load and train from scratch as if resumed
        raise FileExistsError(
            f"{checkpoints} holds only {STOPPED_CHECKPOINT}, the model of an earlier run stopped in mid-epoch before "
            f"its first step checkpoint (method.checkpoint_every_n_steps): nothing to resume from; start afresh in "
            f"a new {fresh} (or delete {out})"
        )
    if cfg.get("requeued") and has_checkpoints:
        # a SLURM/submitit job rerun after a preemption or its time limit (hydra/launcher=slurm|local set
        # `requeued`): continue from its own checkpoint; one stopped before its first checkpoint
        # starts again as configured (a given ckpt_path included)
        with open_dict(cfg):
            cfg.ckpt_path = "last"
    if cfg.get("ckpt_path") is None and has_checkpoints:
        # Lightning would write the new run's checkpoints beside the old ones as last-v1.ckpt, and
        # checkpoints/last.ckpt would silently stay the earlier run's model
        if "module" not in cfg.method:
            raise FileExistsError(
                f"{out} holds a deep run's checkpoints: {method_name(cfg)}, a shallow hasher, cannot resume or "
                f"share it; run it in a new {fresh}"
            )
        raise FileExistsError(
            f"{out / 'checkpoints'} holds checkpoints of an earlier run: resume it with ckpt_path=last, "
            f"or start afresh in a new {fresh} (or delete {out})"
        )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not isinstance(ckpt_path, str):
        raise ValueError(f"ckpt_path={ckpt_path!r} must be `last` or a checkpoint file's path")
    if ckpt_path not in (None, "last") and Path(ckpt_path).name == STOPPED_CHECKPOINT:
        raise ValueError(
            f"ckpt_path={ckpt_path}: {STOPPED_CHECKPOINT} holds only the weights of a run stopped in mid-epoch (what "
            "it evaluated), nothing to resume training from; give that run's checkpoints/last.ckpt, or ckpt_path=last"
        )
    if ckpt_path not in (None, "last") and not Path(ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no such checkpoint file; give a run's checkpoints/last.ckpt, or "
            "ckpt_path=last with hydra.run.dir set to the run to resume"
        )
    resuming = ckpt_path is not None and has_checkpoints
    foreign = ckpt_path not in (None, "last") and Path(ckpt_path).resolve().parent != (out / "checkpoints").resolve()
    # the runs whose settings and split the command must match: this one, when it resumes, and the run
    # another checkpoint file comes from
    source = checkpoint_run(Path(ckpt_path)) if foreign else None
    if resuming:
        check_resume_matches_run(cfg, out)
    if foreign:
        check_foreign_checkpoint(cfg, Path(ckpt_path), source)
    if "module" in cfg.method and cfg.get("ckpt_path") == "last" and not has_checkpoints:
        if not in_a_multirun():  # a mistyped hydra.run.dir would otherwise mean a silent retrain from scratch
            raise FileNotFoundError(
                f"ckpt_path=last but {out / 'checkpoints'} holds no checkpoint: set hydra.run.dir to the run to "
                "resume, or leave ckpt_path out to train from scratch"
            )
        log.warning(
            "ckpt_path=last: %s holds no checkpoint (a job that never started, or stopped before its first "
            "checkpoint): training from scratch", out,
        )  # fmt: skip
        with open_dict(cfg):
            cfg.ckpt_path = None
    if "module" in cfg.method:
        check_trainer(cfg.trainer, cfg.method)
        check_init_codes(cfg.method)
        check_checkpoint_within_length(cfg, out)
    if resuming:  # the resume goes ahead (as far as the checks tell): what it changes
        log_changed_settings(cfg, out)
    eval_opts = {k: cfg.eval.get(k, v) for k, v in EVAL_DEFAULTS.items()}
    try:  # before any training: a typo there would otherwise stop the run only when it is scored
        check_eval_options(cfg.bits, **eval_opts)
    except ValueError as error:
        raise ValueError(f"eval.{error}") from None
    # before the run's first file: a missing dataset is the most common refusal (datasets draw no random numbers)
    dataset: ImageDataset = instantiate(cfg.dataset)
    if not str(dataset.name).strip():  # it names the run, its rows in reports and its feature cache
        raise ValueError("dataset.name is empty: give the dataset a name (dataset.name=<name>)")
    existing = {entry.name for entry in out.iterdir()} if out.is_dir() else set()
    start_files = ("config.yaml", "split.npz", "csv", "tensorboard", "wandb")  # the loggers' hparams, W&B's run
    started = [path for path in (*(out / name for name in start_files), out) if not os.path.lexists(path)]
    # a command refused in the directory of an earlier run (a sweep's rerun, a typo in hydra.run.dir)
    # gives that run's files back as they were
    rewritten = ("config.yaml", "split.npz", "csv/hparams.yaml", "csv/metrics.csv")
    before = {name: (out / name).read_bytes() for name in rewritten if (out / name).is_file()}
    progress = JobProgress()
    try:
        # Lightning's notices silenced for the run only, and the seeding undone: train(cfg) from a
        # notebook leaves the caller's warning filters and random streams as they were
        # one job at a time in a run directory (rank 0 holds it for a DDP run's ranks)
        lock = run_directory_lock(out, REQUEUED_LOCK_WAIT_S if cfg.get("requeued") else 0.0)
        with lock if rank_zero_only.rank == 0 else nullcontext(), warnings.catch_warnings(), callers_random_state():
            return run_job(cfg, out, dataset, bits, resuming, source, eval_opts, progress)
    except BaseException as error:  # Ctrl-C too: stopped while computing features, it leaves nothing either
        close_failed_wandb_run()
        if progress.training_started:
            error.raised_while_training = True  # pgh-train shows its traceback: it may be a bug, not a setting
        else:
            take_back_start_files(out, started, existing)
            restore_files(out, before)
        raise


@contextmanager
def callers_random_state() -> Iterator[None]:
    """Python's, NumPy's and torch's global random states (CUDA's too once initialised) and Lightning's
    seed variables as they were before the block, which seeds them all (`seed_everything`)."""
    saved_env = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class JobProgress:
    """How far a job got: once a deep method has begun training, or a shallow one has been fitted and
    writes its results, a failure keeps what it wrote (and the run's config.yaml that goes with it)."""

    training_started: bool = False


def run_description(cfg: DictConfig, dataset: ImageDataset, bits: int) -> dict[str, Any]:
    """What the loggers' config shows beside the composed one, to group and filter runs by on a
    dashboard: the names the run is known by, and in a sweep the job's number and its overrides."""
    description: dict[str, Any] = {
        "dataset": dataset.name, "method": method_name(cfg), "features": feature_name(cfg), "bits": bits,
    }  # fmt: skip
    if HydraConfig.initialized():
        job = HydraConfig.get()
        description["overrides"] = " ".join(job.overrides.task)
        if job.mode == RunMode.MULTIRUN:
            description["job"] = int(job.job.num)
    return description


def run_job(
    cfg: DictConfig,
    out: Path,
    dataset: ImageDataset,
    bits: int,
    resuming: bool,
    source: Path | None,
    eval_opts: dict[str, Any],
    progress: JobProgress,
) -> dict[str, Any]:
    """train()'s work once the command was checked: the run's files, features, fit, evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    # the step a finished run resumed here had logged its final metrics at (its metrics.json goes when training begins)
    logged_step = read_json(out / "metrics.json").get("global_step") if resuming else None
    # torch's generator, and PL_GLOBAL_SEED: the seed of the DistributedSampler Lightning gives a DDP run
    # (without it every DDP seed would shuffle the same way)
    seed_everything(cfg.seed, verbose=False)
    if not resuming:  # a resume's config replaces the run's once it has trained (a failed one leaves it)
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    make_split = instantiate(cfg.split)
    named = {}  # a user's own split function need not take the class names its errors could use
    if dataset.class_names is not None and "class_names" in inspect.signature(make_split).parameters:
        named["class_names"] = dataset.class_names
    split: Split = make_split(dataset.labels, **named)
    for run in ([out] if resuming else []) + ([source] if source is not None else []):
        if (run / "split.npz").exists():
            check_same_split(Split.load(run / "split.npz"), split, run)
        else:
            log.warning("%s has no split.npz: whether the data still gives its split cannot be checked", run)
    split.save(out / "split.npz")
    for key in ("map_k", "precision_k"):
        if eval_opts[key] > split.database.numel():
            log.warning(
                "eval.%s=%d is more than the database's %d items: it counts the whole database (mAP@K is then "
                "mAP@all, precision@K the database's precision)", key, eval_opts[key], split.database.numel(),
            )  # fmt: skip
    if "module" in cfg.method:  # before the features and initial codes: a bad setting is refused at once
        check_module_arguments(cfg.method, int(split.train.numel()))
    check_wandb(cfg.get("logger"))  # before any work: W&B would ask for a key in a terminal, and wait

    t0 = time.perf_counter()
    features = cached_features(
        dataset,
        instantiate(cfg.features),
        OmegaConf.to_container(cfg.features, resolve=True),
        cfg.paths.cache_dir,
        check_width=partial(check_code_fits, cfg, "init_hash" in cfg.method and not cfg.method.get("init_features")),
    )
    feature_seconds = time.perf_counter() - t0
    # after the checks that need the features' width: a refused job starts no W&B run
    run_name = f"{dataset.name}-{method_name(cfg)}-{feature_name(cfg)}-{bits}"
    if in_a_multirun():  # a sweep's jobs often share those four: W&B would list them under one name
        run_name += f"-job{HydraConfig.get().job.num}"
    loggers = instantiate_loggers(cfg.get("logger"), resume=resuming, run_name=run_name)
    hyperparameters = {**OmegaConf.to_container(cfg, resolve=True), "run": run_description(cfg, dataset, bits)}
    for logger in loggers:
        try:  # W&B starts its run here
            logger.log_hyperparams(hyperparameters)
        except Exception as error:
            if type(error).__module__.startswith("wandb") and "api key" in str(error).lower():
                raise ValueError(WANDB_NO_KEY) from None
            raise
    tie_break = eval_opts["tie_break"]
    labels = dataset.labels
    if tie_break == "database_order" and stored_class_by_class(labels[split.database]):
        log.warning(
            "%s's database is stored class by class: items at the same distance rank in that order, which "
            "favours the lower labels (0 to 3 mAP points on mnist5k's runs, 10 for a collapse to one code); "
            "eval.tie_break=random ranks them in a fixed random order (README: Protocol)",
            dataset.name,
        )

    if "module" in cfg.method:
        distance = "hamming"
        trained = train_deep(cfg, dataset, split, features, loggers, out, eval_opts, progress)
        if trained is None:
            return {}
        query_codes, db_codes, run_info = trained
        if resuming:
            write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    else:
        hasher: ShallowHasher = instantiate(cfg.method)  # its class checked by check_method_class
        distance = hasher.distance
        query_codes, db_codes, run_info = fit_shallow(hasher, features, split)
        remove_results(out)
        remove_rounds(out)
        progress.training_started = True  # from here it writes its results: a failure keeps them and its config
        hasher.save(out / "hasher.pt")  # what pgh-index codes new images with

    t0 = time.perf_counter()
    result = evaluate_packed(
        query_codes, labels[split.query], db_codes, labels[split.database], distance=distance, **eval_opts
    )
    extra = {}
    if distance != "hamming":
        plain = evaluate_packed(query_codes, labels[split.query], db_codes, labels[split.database], **eval_opts)
        extra = {f"{k}_hamming": v for k, v in plain.metrics.items()}
    eval_seconds = time.perf_counter() - t0

    metrics: dict[str, Any] = {
        **result.metrics,
        **extra,
        # how the database codes use their bits: a collapse shows as few distinct codes, correlated bits
        **{f"db_{k}": v for k, v in code_statistics(db_codes, bits).items()},
        **run_info,
        "feature_seconds": feature_seconds,
        "eval_seconds": eval_seconds,
        "tie_break": eval_opts["tie_break"],
        "dataset": dataset.name,
        "method": method_name(cfg),
        "features": feature_name(cfg),
        "bits": bits,
        "distance": distance,
        "num_queries": int(split.query.numel()),
        "num_database": int(split.database.numel()),
        "num_train": int(split.train.numel()),
        "image_shape": list(dataset.images.shape[1:]),  # [C, H, W]: how pgh-index reads new images
        "seed": int(cfg.seed),
        # deep runs are deterministic for a seed and this thread count; another count changes the floating point
        "torch_threads": torch.get_num_threads(),
    }
    classes = int(labels[split.database].unique().numel())
    if metrics["db_distinct_codes"] < classes:  # mAP@all alone reads like a weak method, not a broken one
        log.warning(
            "the database's %d items have %d distinct code(s), fewer than its %d classes: the codes collapsed "
            "(deep methods: train longer or on more images; see db_* in metrics.json)",
            metrics["num_database"], metrics["db_distinct_codes"], classes,
        )  # fmt: skip
    write_text(out / "pr_curve.csv", result.pr_curve_csv())
    write_text(out / "precision_at_n.csv", result.precision_at_n_csv())
    write_text(out / "per_class.csv", result.per_class_csv(dataset.class_name))
    if cfg.get("save_codes", True):
        save_npy(out / "database_codes.npy", db_codes)
        save_npy(out / "query_codes.npy", query_codes)
        # their labels: the run's codes score (evaluate_packed) and plot (pgh-report --code-maps) without its dataset
        save_npy(out / "database_labels.npy", labels[split.database].numpy())
        save_npy(out / "query_labels.npy", labels[split.query].numpy())
    # a resume that trained nothing (a finished run, e.g. a sweep rerun) already gave the loggers these
    logged_before = resuming and metrics.get("global_step") is not None and logged_step == metrics["global_step"]
    step = metrics.get("log_step")
    label, title = f"{metrics['method']}+{metrics['features']}", f"{dataset.name}, {bits} bits"
    for name, fig in (
        ("pr_curve", plot_pr_curves({label: result.pr_curve}, title)),
        ("precision_at_n", plot_precision_at_n({label: result.precision_at_n}, title)),
    ):
        save_figure(fig, out / f"{name}.png")
        if not logged_before:
            log_figure(loggers, name, fig, out / f"{name}.png", step or 0)
        matplotlib_close(fig)
    write_json(out / "metrics.json", metrics)  # last: it marks the run finished (pgh-report, pgh-index)
    # per-class mAP@all as one chart group (W&B section / TensorBoard folder `per_class`), not in metrics.json
    per_class = {f"per_class/map_all/{dataset.class_name(int(row[0]))}": float(row[2]) for row in result.per_class}
    finish(loggers, {} if logged_before else {**metrics, **per_class}, step=step or 0)
    print_and_log_to_files(log, closing_line(metrics, out))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    runtime = HydraConfig.get()
    try:
        # {} on a DDP rank other than 0, whose return value no sweeper reads
        return train(cfg).get("map_all", float("nan"))
    except Exception as error:
        # Hydra made the run directory before train()'s checks: a refused command takes it back. Not
        # when the results go elsewhere (paths.output_dir): there Hydra's directory holds only its
        # files whatever happened, and its log is the run's.
        try:
            hydra_dir = Path(runtime.runtime.output_dir)
            if Path(cfg.paths.output_dir).resolve() == hydra_dir.resolve():
                remove_if_only_hydra_files(hydra_dir, f"{runtime.job.name}.log")
        except Exception:  # noqa: BLE001 - the command's own error is the one to show
            pass
        # a refused setting, a missing file: its message, without the traceback Hydra would print around
        # it. A sweep's job raises it on, marked (a mark, unlike __cause__, survives the submitit
        # launchers' pickling), for Hydra to name the job and concise_override_errors to show it in one line
        concise = user_error(error)
        if concise is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if not in_a_multirun():
            hint = "(HYDRA_FULL_ERROR=1 pgh-train ... shows where it was raised)"
            raise SystemExit(f"pgh-train: {concise}\n{hint}") from None
        concise.refused_sweep_job = True
        if concise is error:
            raise
        raise concise from None


def main() -> None:
    """`pgh-train`: the configs stay in the repository's conf/, which only an editable install sees."""
    if not Path(CONFIG_DIR).is_dir():
        raise SystemExit(
            f"pgh-train: no configs at {CONFIG_DIR}: they live in the repository's conf/, which a "
            "non-editable install does not carry; clone the repository and install it with `make install` "
            "(pip install -e .)"
        )
    try:
        check_config_path(Path(CONFIG_DIR))
    except ValueError as error:
        raise SystemExit(f"pgh-train: {error}") from None
    with concise_override_errors():
        hydra_main()


if __name__ == "__main__":
    main()
