"""What `pgh-train` says when Hydra cannot compose its command line, or a sweep's job refuses its
settings: a misspelt key or group option becomes one `pgh-train:` line naming the nearest names there
are, where Hydra prints several lines that end by suggesting `+key=value`, which would only add the
misspelt key; a job's refused setting or missing file becomes its message, after Hydra's line naming
the job, where Hydra (and the submitit launchers) print a traceback around it."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from pgh.config_checks import CONFIG_DIR


def nearest(name: str, names: list[str]) -> str:
    """' (did you mean `x`?)' for the names spelt most like `name`, or ''."""
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(f'`{c}`' for c in close)}?)" if close else ""


def group_options(group: str) -> dict[str, dict]:
    """conf/<group>/<option>.yaml as plain dicts (interpolations unresolved) by option name; {} for a
    key that is no config group."""
    folder = Path(CONFIG_DIR) / group
    if not folder.is_dir():
        return {}
    return {
        path.stem: OmegaConf.to_container(OmegaConf.load(path), resolve=False) for path in sorted(folder.glob("*.yaml"))
    }


def has_key(node: Any, keys: list[str]) -> bool:
    """Whether the nested dict `node` has the path `keys`."""
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def unknown_key(full_key: str, parent: Any) -> str | None:
    """The message for overriding `full_key`, which the composed config does not have."""
    *path, key = full_key.split(".")
    if path[:1] == ["hydra"] or not isinstance(parent, DictConfig):
        return None  # Hydra's own settings: its message names them
    settings = sorted(k for k in parent.keys() if isinstance(k, str) and not k.startswith("_") and k != "hydra")
    if not path:
        return (
            f"`{key}` is no config group or setting{nearest(key, settings)}; the config's are "
            f"{', '.join(settings)} (`pgh-train --help` lists them with their options)"
        )
    where, group = ".".join(path), path[0]
    options = group_options(group)
    listed = f"its settings are {', '.join(settings)}" if settings else "it takes no settings"
    message = f"`{full_key}` is not a setting of `{where}`{nearest(key, settings)}; {listed}"
    elsewhere = [name for name, conf in options.items() if has_key(conf, [*path[1:], key])]
    if elsewhere:
        message += f"; `{key}` is a setting of {' and '.join(f'{group}={name}' for name in elsewhere)}"
    return message


def missing_option(error: MissingConfigException) -> str | None:
    """The message for a group option that has no file, e.g. method=itqq."""
    options, missing = error.options, error.missing_cfg_file or ""
    if "/" not in missing:
        return None
    group, option = missing.rsplit("/", 1)
    # an option in a list (logger=[csv,wandbb]): Hydra gives no options, conf/<group>/ has them
    options = options or sorted(group_options(group))
    if not options:
        return None
    return (
        f"no {group} `{option}`{nearest(option, options)}; the options of `{group}` are {', '.join(options)} (one of "
        f"your own: a folder holding {group}/{option}.yaml, added with hydra.searchpath=[file:///abs/folder]; README: "
        "Adding a method)"
    )


def explain(error: ConfigCompositionException) -> str | None:
    """One line for a misspelt key or group option; None for anything else (Hydra's message stays)."""
    if isinstance(error, MissingConfigException):
        return missing_option(error)
    cause = error.__cause__
    # a key the config lacks (not a value of the wrong type, which Hydra's message already says)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and isinstance(cause.full_key, str):
        return unknown_key(cause.full_key, cause.parent_node)
    return None


# what a command's bad settings or missing files raise: pgh-train shows them as one message
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def user_error(error: BaseException) -> BaseException | None:
    """The refused setting or missing file `error` stands for (a config group's constructor's own
    error inside Hydra's InstantiationException), or None for anything else: an error raised once
    training had started (`raised_while_training`) may be a bug, and keeps its traceback."""
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, USER_ERRORS):
        error = error.__cause__  # a config group's constructor refused its settings (a missing dataset)
    if isinstance(error, USER_ERRORS) and not getattr(error, "raised_while_training", False):
        return error
    return None


@contextmanager
def concise_override_errors() -> Iterator[None]:
    """While Hydra composes and runs the command, a composition error that `explain` knows ends it
    with `pgh-train: <message>`, and so does a sweep job's `user_error`, which hydra_main marks
    `refused_sweep_job` (Hydra has named the job on the line before). HYDRA_FULL_ERROR=1 keeps Hydra's
    report and traceback."""
    import hydra._internal.utils as hydra_utils  # _run_hydra calls its run_and_report by this name

    original: Callable[[Callable[[], Any]], Any] = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def explained() -> Any:
            try:
                return func()
            except ConfigCompositionException as error:
                message = explain(error)
                if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                raise SystemExit(f"pgh-train: {message}") from None
            except Exception as error:
                # a sweep job's refused setting (hydra_main marks it), re-raised by the sweeper after
                # Hydra's "Error executing job with overrides: [...]"; a single run's ended in hydra_main
                if not getattr(error, "refused_sweep_job", False):
                    raise
                hint = "(the job's overrides are on the line above; HYDRA_FULL_ERROR=1 shows where it was raised)"
                raise SystemExit(f"pgh-train: {error}\n{hint}") from None

        return original(explained)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original
