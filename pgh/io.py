"""Atomic file writes (a crash never leaves a half-written result, index or checkpoint behind) and
the file lock that keeps two processes from writing one folder at once."""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once, at import: os.umask can only be read by setting it, which would briefly make the files
# other threads (Lightning's, the loggers') create meanwhile world-writable
_UMASK = _read_umask()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: str | os.PathLike) -> None:
    """The folder's entries (a rename into it) to the disk, where the file system can say so (some
    network and FUSE mounts cannot: EINVAL, ENOTSUP)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written into `folder` (made where missing), or None when they can: the
    nearest existing entry on its path is a file, a symbolic link to nothing, or a folder not writable
    (permissions, a read-only mount)."""
    existing = Path(folder).absolute()
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not os.path.exists(existing):
        return f"{existing} is a symbolic link to {os.readlink(existing)}, which does not exist"
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


LOCK_POLL_S = 5.0  # how often a wait with a deadline tries the lock again


@contextmanager
def file_lock(
    path: str | os.PathLike,
    *,
    wait_s: float = math.inf,
    on_wait: Callable[[], None] | None = None,
    on_busy: Callable[[], Exception] | None = None,
    on_unlockable: Callable[[OSError], None] | None = None,
) -> Iterator[bool]:
    """Holds the system's exclusive lock on `path` (flock; the file is made where missing and left
    behind) for the `with` block, released however the block ends; yields whether it is held.
    Held by another process: `on_wait()` is called, then the lock is waited for, up to `wait_s`
    seconds (`math.inf`: as long as it takes), after which `on_busy()`'s exception is raised.
    Nothing is held where the lock file cannot be opened (a read-only folder without one: the block's
    own writes will say so) or the file system has no locks (ENOLCK; `on_unlockable(error)` is called)."""
    if wait_s != math.inf and on_busy is None:
        raise ValueError("file_lock: a wait with a deadline (wait_s) needs on_busy, the error to raise after it")
    try:
        try:  # NFS emulates flock with fcntl locks, and an exclusive one needs a file open for writing
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # a lock file another user made: flock takes it read-only on local disks
            fd = os.open(path, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        yield _acquire(fd, wait_s, on_wait, on_busy, on_unlockable)
    finally:
        os.close(fd)  # releases the lock


def _acquire(
    fd: int,
    wait_s: float,
    on_wait: Callable[[], None] | None,
    on_busy: Callable[[], Exception] | None,
    on_unlockable: Callable[[OSError], None] | None,
) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    except OSError as error:  # no locks on this file system (ENOLCK)
        if on_unlockable is not None:
            on_unlockable(error)
        return False
    if on_wait is not None:
        on_wait()
    if wait_s == math.inf:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(LOCK_POLL_S, left))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
    raise on_busy()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    The data reaches the disk before the rename and the rename before we return, so neither a crash
    of the process nor one of the machine leaves an empty or half-written file under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        fsync_folder(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A Lightning checkpoint's dict (tensors memory-mapped), or a ValueError naming the file when torch
    cannot read it (cut short, emptied, not a checkpoint)."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} is not a checkpoint torch can read ({reason[:200]}): a file cut short or replaced? Resume "
            "from another checkpoint file (ckpt_path=<file>) or train the run again"
        ) from None
