"""A Hydra sweep's jobs and the settings each one sweeps, read from the sweep's `multirun.yaml`:
pgh-report names a sweep's missing jobs by them, and each job's directory name ends with them
(`3_mnist5k_pgh_gist_32_augment_shift=2,augment_degrees=10`) through the `pgh_swept` resolver in
conf/hydra/default.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

# already in a job directory's name (<num>_<dataset>_<method>_<features>_<bits>)
NAMED_KEYS = ("dataset", "method", "features", "bits")
# a job directory's name shows swept settings up to this many characters; the rest are in the job's
# .hydra/overrides.yaml and in pgh-report's tables
MAX_SETTINGS_CHARS = 100


def sweep_jobs(multirun_yaml: Path) -> list[list[str]] | None:
    """The swept settings of each job of the sweep saved in `multirun_yaml`, in job-number order (its
    sweeper's params and the command's overrides, expanded by Hydra's basic sweeper), or None when
    that cannot be told."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra = yaml.safe_load(multirun_yaml.read_text(encoding="utf-8"))["hydra"]  # as written: unresolved
        sweeper = hydra.get("sweeper") or {}
        if not str(hydra["sweep"]["subdir"]).startswith("${hydra.job.num}_") or sweeper.get("_target_") not in (
            None,
            f"{BasicSweeper.__module__}.{BasicSweeper.__name__}",
        ):  # another sweeper (Optuna, Ax …) draws its own jobs
            return None
        arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        arguments += list(hydra.get("overrides", {}).get("task") or [])
        overrides = OverridesParser.create().parse_overrides(arguments)
        swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
        # the last override of a key wins (the command's over the sweep file's), in the key's first place
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        return [[o for o in job if o.split("=", 1)[0] in swept] for job in jobs]
    except Exception:  # another sweeper's syntax, a glob, a hand-edited file: nothing to compare against
        return None


def settings_in_name(settings: list[str]) -> str:
    """`_<key>=<value>,…` for a job directory's name: the swept settings its name does not already
    show, each key by its last part where that names it alone (`augment_shift`, not
    `method.module.augment_shift`), `/` read as `_`; '' when none."""
    pairs = [s.split("=", 1) for s in settings]
    pairs = [(key.lstrip("+~"), value) for key, value in pairs if key.lstrip("+~") not in NAMED_KEYS]
    last_parts = [key.rsplit(".", 1)[-1] for key, _ in pairs]
    shown = ""
    for (key, value), last in zip(pairs, last_parts):
        name = last if last_parts.count(last) == 1 else key
        item = f"{name}={value}".replace("/", "_")
        if len(shown) + len(item) + 1 > MAX_SETTINGS_CHARS:
            break
        shown += ("," if shown else "") + item
    return f"_{shown}" if shown else ""


def swept_in_name(*, _root_: Any) -> str:
    """The `pgh_swept` resolver: a sweep job's `settings_in_name`, from its sweep's multirun.yaml and
    its job number; '' outside a sweep or where the sweep's grid cannot be told (another sweeper)."""
    hydra = _root_.get("hydra")
    try:
        number = int(hydra.job.num)
        jobs = sweep_jobs(Path(hydra.sweep.dir) / "multirun.yaml")
    except Exception:  # no hydra node, no job number (a single run): nothing is swept
        return ""
    return settings_in_name(jobs[number]) if jobs and number < len(jobs) else ""


if not OmegaConf.has_resolver("pgh_swept"):
    OmegaConf.register_new_resolver("pgh_swept", swept_in_name)
