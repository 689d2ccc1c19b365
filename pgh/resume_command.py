"""The command that resumes a deep run stopped in training (SIGTERM from a scheduler, Ctrl-C):
`pgh-train` prints it with the stop, built from Hydra's record of the command (its config directory
and name, its overrides; for a sweep's job, the sweep's own command)."""

from __future__ import annotations

import shlex
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


def in_a_multirun() -> bool:
    """Whether this job is one of a Hydra multirun's (`pgh-train -m`), as opposed to a single run or
    train(cfg) called from Python."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# set again by the resume command (or by the launcher), not taken from the stopped command
RESUME_SETS = ("ckpt_path=", "hydra.run.dir=", "hydra.sweep.dir=", "requeued=", "hydra.mode=")


def command_line(words: list[str]) -> str:
    """`pgh-train WORDS…`, each word quoted for a POSIX shell where it needs it."""
    return " ".join(["pgh-train", *map(shlex.quote, words)])


def config_words() -> list[str]:
    """`-cd DIR -cn NAME` where this command named its own config directory or config (a sweep's)."""
    if not HydraConfig.initialized():
        return []
    hydra_cfg = HydraConfig.get()
    words = []
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line":
            words += ["-cd", str(Path(source.path).resolve())]
    if hydra_cfg.job.config_name not in (None, "config"):
        words += ["-cn", hydra_cfg.job.config_name]
    return words


def how_to_go_on(out: Path) -> str:
    """After a deep run stopped in training: the command that resumes it (its config and overrides, from
    Hydra's record of them; a sweep's job: the sweep's, where jobs with a checkpoint continue and the
    others start afresh), or, for a single run with no checkpoint yet, where to start again."""
    checkpoint = any((out / "checkpoints").glob("last*.ckpt"))
    if in_a_multirun():
        sweep = Path(HydraConfig.get().sweep.dir).resolve()
        if not (sweep / "multirun.yaml").is_file():
            return f"resume the sweep: its command again with ckpt_path=last and hydra.sweep.dir={sweep}"
        recorded = OmegaConf.load(sweep / "multirun.yaml").hydra.overrides
        kept = [str(o) for o in [*recorded.hydra, *recorded.task] if not str(o).lstrip("+~").startswith(RESUME_SETS)]
        note = "" if checkpoint else "this job wrote no checkpoint yet (method.checkpoint_every_n_steps); "
        command = command_line(["-m", *config_words(), *kept, "ckpt_path=last", f"hydra.sweep.dir={sweep}"])
        return f"{note}resume the sweep with: {command} (jobs with a checkpoint continue, the others start afresh)"
    if not checkpoint:
        return "no checkpoint was written yet (method.checkpoint_every_n_steps): start again in a new hydra.run.dir"
    recorded = out / ".hydra" / "overrides.yaml"  # the task's overrides; Hydra's own come from the running job
    if not recorded.is_file():
        return f"resume from the last checkpoint with the run's settings, ckpt_path=last and hydra.run.dir={out}"
    hydra_overrides = list(HydraConfig.get().overrides.hydra) if HydraConfig.initialized() else []
    overrides = [str(o) for o in [*hydra_overrides, *OmegaConf.load(recorded)]]
    kept = [o for o in overrides if not o.lstrip("+~").startswith(RESUME_SETS)]
    return f"resume with: {command_line([*config_words(), *kept, 'ckpt_path=last', f'hydra.run.dir={out}'])}"
