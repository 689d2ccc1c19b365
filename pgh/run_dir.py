"""A run directory's housekeeping: which files mark a run finished and go when training begins
(`RESULT_FILES`), and what a job refused or failed before training takes back or puts back, so
that a refused command leaves no run behind and an earlier run's files as they were."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from pgh.io import atomic_path, file_lock


def read_json(path: Path) -> dict[str, Any]:
    """The file's JSON object, or {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# what a run writes once it has its model, each from that model: left by an earlier run in the directory
# (or by the finished run a resume trains further), they would describe another model until rewritten,
# and metrics.json marks a run finished for pgh-report, pgh-index and the benchmarks
RESULT_FILES = (
    "metrics.json", "pr_curve.csv", "precision_at_n.csv", "per_class.csv", "database_codes.npy", "query_codes.npy",
    "database_labels.npy", "query_labels.npy", "hasher.pt", "pr_curve.png", "precision_at_n.png",
)  # fmt: skip


def remove_results(out: Path) -> None:
    """Remove RESULT_FILES as training begins: a run killed in training then reads as unfinished."""
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)


def remove_rounds(out: Path) -> None:
    """Remove an earlier run's PGH rounds.csv and grids/ (not when continuing a checkpoint, which
    rewrites rounds.csv from its own rows; an earlier round's grid stays that round's)."""
    (out / "rounds.csv").unlink(missing_ok=True)
    shutil.rmtree(out / "grids", ignore_errors=True)


class RemoveResultsAtStart(Callback):
    """`remove_results` once training starts, i.e. after Lightning restored the checkpoint a resume
    continues: a resume refused while restoring it (another network) keeps the run's results."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            remove_results(self.out)


log = logging.getLogger(__name__)

RUN_LOCK = ".pgh-train.lock"  # held by the one job running in a run directory (pgh-train's rank 0)


@contextmanager
def run_directory_lock(out: Path, wait_s: float = 0.0) -> Iterator[None]:
    """`out` to this job alone while it runs: a second pgh-train job given the same directory (the same
    hydra.run.dir, a sweep launched twice into one hydra.sweep.dir, a resume typed while SLURM requeued
    the job) is refused instead of mixing its files with the first one's. The lock is the system's
    (flock on `out/.pgh-train.lock`), released when the job ends, however it ends; `wait_s`: how long
    to wait for it (a requeued job: on NFS a killed job's lock lasts until its lease expires). Where
    the file system has no locks, nothing is held. Once held, the temporary files of writes that a
    killed job left (`atomic_path`'s `.<name>.*.tmp`) are removed."""
    out.mkdir(parents=True, exist_ok=True)

    def busy() -> FileExistsError:
        return FileExistsError(
            f"another pgh-train job is running in {out}: give this one a directory of its own "
            "(hydra.run.dir, or hydra.sweep.dir for a sweep), or wait until that one has ended"
        )

    def unlockable(error: OSError) -> None:
        log.warning("cannot lock %s (%s): a second job in this directory would not be refused", out, error)

    with file_lock(out / RUN_LOCK, wait_s=wait_s, on_busy=busy, on_unlockable=unlockable) as held:
        if held:
            remove_killed_writes(out)
        yield


def remove_killed_writes(out: Path) -> None:
    """Delete what `atomic_path` writes of a killed job left in the run directory (`.<name>.*.tmp`
    beside its results, checkpoints and grids); called under the run's lock, when no write is under way."""
    for folder in (out, out / "checkpoints", out / "grids"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)


def take_back_start_files(out: Path, started: list[Path], existing: set[str]) -> None:
    """After a job failed before it made anything but its start files (config.yaml, split.npz, the CSV
    and TensorBoard loggers' hparams; those in `started` did not exist before it) and before a deep
    method began training, remove those: a refused setting (an ITQ longer than its features, a
    missing weights file, ...) leaves no run behind. When the job made anything else (a checkpoint,
    a fitted hasher, results), everything stays; what was in `out` before (`existing` names) always
    stays."""
    try:
        made = {entry.name for entry in out.iterdir()} - existing - {".hydra", RUN_LOCK}
        made = {name for name in made if not name.endswith(".log")}
        if not made <= {path.name for path in started if path != out}:
            return
        for path in started:
            if path == out:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if RUN_LOCK not in existing:
            (out / RUN_LOCK).unlink(missing_ok=True)  # the job's own, released
        if out in started:
            if not any(out.iterdir()):
                out.rmdir()
    except OSError:  # the job's own error is the one to show
        pass


def restore_files(out: Path, contents: dict[str, bytes]) -> None:
    """Put back these files of `out` (relative name -> bytes) where a failed job changed them."""
    for name, content in contents.items():
        path = out / name
        try:
            if not path.is_file() or path.read_bytes() != content:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(content)
        except OSError:  # the job's own error is the one to show
            pass


HYDRA_START_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def own_log_handler(log_file: Path) -> logging.FileHandler | None:
    """The root logger's handler writing `log_file` when that file is this process's own (the same
    file, and nothing appended by another process), else None."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == os.path.abspath(log_file):
            stream = handler.stream
            if stream is None or stream.closed:
                return None
            stream.flush()
            on_disk, open_here = os.stat(log_file), os.fstat(stream.fileno())
            same = (on_disk.st_dev, on_disk.st_ino) == (open_here.st_dev, open_here.st_ino)
            return handler if same and on_disk.st_size == stream.tell() else None
    return None


def remove_if_only_hydra_files(out: Path, job_log: str) -> bool:
    """Remove `out` when it holds nothing but what Hydra wrote as this job started (.hydra/ and this
    process's own log), so that a command train() refuses leaves no empty run behind; a directory
    holding anything else (an earlier run's results or checkpoints, a file of the user's, another
    job's log) is kept. Whether it was removed."""
    if not out.is_dir() or out.is_symlink():
        return False
    for entry in out.iterdir():
        if entry.name == ".hydra" and entry.is_dir() and not entry.is_symlink():
            if not all(f.is_file() and not f.is_symlink() and f.name in HYDRA_START_FILES for f in entry.iterdir()):
                return False
        elif not (entry.name in (job_log, RUN_LOCK) and entry.is_file() and not entry.is_symlink()):
            return False
    if (out / job_log).exists():
        handler = own_log_handler(out / job_log)
        if handler is None:
            return False
        logging.getLogger().removeHandler(handler)  # the log goes with the directory
        handler.close()
    shutil.rmtree(out, ignore_errors=True)
    return not out.exists()
