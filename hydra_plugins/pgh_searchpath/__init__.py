"""`PGH_CONFIG_PATH`: folders of one's own config groups (`method/`, `dataset/`, `features/`, ...)
that every `pgh-train` command searches after the repository's `conf/`, as `hydra.searchpath` would,
and that `pgh-train --help` lists too (Hydra's help lists only the groups of the search path it
started with, so a `hydra.searchpath` override's methods were missing there). Hydra loads search
path plugins only from the `hydra_plugins` package, hence this module's home."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV_VAR = "PGH_CONFIG_PATH"


def config_folders(value: str) -> list[Path]:
    """The folders of a `PGH_CONFIG_PATH` value (separated by `os.pathsep`, empty entries skipped),
    absolute; a folder that does not exist is refused by name."""
    folders = [Path(entry).expanduser().absolute() for entry in value.split(os.pathsep) if entry.strip()]
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(
                f"{ENV_VAR}={value}: {folder} is no folder; give folders holding config groups "
                f"(e.g. my_conf with my_conf/method/<name>.yaml), separated by '{os.pathsep}', or unset {ENV_VAR}"
            )
    return folders


def check_config_path(own_conf: Path) -> None:
    """Refuse a `PGH_CONFIG_PATH` folder that does not exist, or a config in one that has the name of
    one of `own_conf`'s (the repository's conf/), which Hydra would take instead without a word."""
    for folder in config_folders(os.environ.get(ENV_VAR, "")):
        for config in sorted(folder.rglob("*.yaml")):
            relative = config.relative_to(folder)
            if len(relative.parts) > 1 and (own_conf / relative).is_file():
                raise ValueError(
                    f"{config} has the name of pgh's own conf/{relative.as_posix()}, which comes first in the "
                    f"search path: give it another name (e.g. {relative.parent.as_posix()}/my_{relative.name})"
                )


class PghConfigPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for folder in config_folders(os.environ.get(ENV_VAR, "")):
            search_path.append(provider=ENV_VAR, path=f"file://{folder}")
