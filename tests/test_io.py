"""Atomic writes: a finished write replaces the file whole, with plain-open permissions; a failed one
leaves the previous file as it was and no temporary file beside it."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time

import numpy as np
import pytest

from pgh.io import atomic_path, file_lock, save_npy, save_npz, write_json, write_text


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_finished_write_replaces_the_file_and_leaves_only_it(tmp_path):
    """The temporary file sits beside the target (a hidden `.name.*.tmp`), is renamed over it, and the
    result has the permissions open() would give (mkstemp's are 0600)."""
    path = tmp_path / "sub" / "result.json"
    write_text(path, "old")
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".result.json.") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
        assert path.read_text() == "old"  # not replaced until the block ends
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    """An error inside the block: the previous content stays under the name, the half-written
    temporary file is deleted, and the error reaches the caller."""
    path = tmp_path / "result.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(path) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.txt"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    """No file before, an error inside the block: neither the file nor a temporary one appears."""
    path = tmp_path / "result.txt"
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def unpicklable() -> np.ndarray:
    """An object array whose pickling fails after NumPy has begun writing the file."""
    array = np.empty(2, dtype=object)
    array[:] = [1, lambda: None]
    return array


def test_failed_saves_keep_the_old_arrays_and_leave_no_temporary(tmp_path):
    """save_npy and save_npz that fail part-way (an unpicklable object) keep the previous file whole."""
    npy, npz = tmp_path / "codes.npy", tmp_path / "split.npz"
    save_npy(npy, np.arange(5))
    save_npz(npz, query=np.arange(3), train=np.arange(4))
    with pytest.raises(Exception, match="pickle|lambda"):
        save_npy(npy, unpicklable())
    with pytest.raises(Exception, match="pickle|lambda"):
        save_npz(npz, query=np.arange(7), train=unpicklable())
    assert np.array_equal(np.load(npy), np.arange(5))
    with np.load(npz) as f:
        assert sorted(f.files) == ["query", "train"]
        assert np.array_equal(f["query"], np.arange(3)) and np.array_equal(f["train"], np.arange(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npy", "split.npz"]


def test_write_json_round_trips_and_a_failed_one_keeps_the_old_file(tmp_path):
    """write_json writes indented JSON ending in a newline; an unserialisable object changes nothing."""
    path = tmp_path / "metrics.json"
    write_json(path, {"map_all": 0.5, "bits": [16, 32]})
    text = path.read_text()
    assert json.loads(text) == {"map_all": 0.5, "bits": [16, 32]} and text.endswith("\n") and "\n  " in text
    with pytest.raises(TypeError):
        write_json(path, {"map_all": object()})
    assert path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_file_lock_refuses_a_second_holder_with_the_callers_error_and_frees_on_exit(tmp_path):
    lock = tmp_path / ".lock"
    busy = lambda: ValueError("busy here")  # noqa: E731
    with file_lock(lock) as held:
        assert held
        with pytest.raises(ValueError, match="busy here"), file_lock(lock, wait_s=0.0, on_busy=busy):
            pass
    with file_lock(lock, wait_s=0.0, on_busy=busy) as held:  # released when the first block ended
        assert held
    assert lock.exists()  # left behind for the next holder


def test_file_lock_waits_for_the_holder_and_says_so_once(tmp_path, monkeypatch):
    lock, order, said = tmp_path / ".lock", [], []
    monkeypatch.setattr("pgh.io.LOCK_POLL_S", 0.05)
    with file_lock(lock):

        def second():
            with file_lock(lock, wait_s=30.0, on_wait=lambda: said.append(1), on_busy=lambda: AssertionError()):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first ends")
    thread.join(10)
    assert order == ["first ends", "second"] and said == [1]


def test_file_lock_gives_up_after_its_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr("pgh.io.LOCK_POLL_S", 0.05)
    with file_lock(tmp_path / ".lock"):
        started = time.monotonic()
        with pytest.raises(FileExistsError), file_lock(tmp_path / ".lock", wait_s=0.2, on_busy=FileExistsError):
            pass
        assert 0.2 <= time.monotonic() - started < 5


def test_file_lock_without_locks_on_the_file_system_runs_the_block_unlocked_and_says_why(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("pgh.io.fcntl.flock", no_locks)
    errors = []
    with file_lock(tmp_path / ".lock", wait_s=0.0, on_busy=AssertionError, on_unlockable=errors.append) as held:
        assert not held
    assert [e.errno for e in errors] == [errno.ENOLCK]
    with file_lock(tmp_path / "missing" / ".lock") as held:  # cannot be made: nothing held, no error
        assert not held


def test_file_lock_with_a_deadline_needs_the_error_to_raise():
    with pytest.raises(ValueError, match="needs on_busy"), file_lock("unused", wait_s=1.0):
        pass
