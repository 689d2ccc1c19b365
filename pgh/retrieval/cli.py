"""`pgh-index`: code a collection of images with a finished run, index the codes, search them.

  pgh-index build RUN IMAGES --out INDEX_DIR                  # exact search (FAISS IndexBinaryFlat)
  pgh-index build RUN IMAGES --out INDEX_DIR --nlist 1024     # IVF, for collections too large to scan
  pgh-index update INDEX_DIR                                  # after files in IMAGES were added, changed or removed
  pgh-index search INDEX_DIR QUERY [QUERY ...] -k 10 [--out neighbours.csv]
  pgh-index search INDEX_DIR QUERY [QUERY ...] --radius 2     # every indexed image within Hamming distance 2

build: every image file under IMAGES (recursively; sorted paths), coded by RUN's model (a deep
run's checkpoints/last.ckpt, or stopped.ckpt for one stopped in mid-epoch, a shallow run's hasher.pt; fed as in
training) a chunk at a time, into
INDEX_DIR: index.faissindex, codes.npy (the packed codes), stamps.npy (each file's modification time
and size), paths.txt (each indexed file relative to IMAGES, in index order) and index.json (the run,
the images folder, bits, count, IVF settings, the codes' SHA-1; written last). update: re-scans IMAGES, codes only the
files added or changed since, drops the ones gone, and rewrites the index as build would. search:
codes the query images (files or folders) with the index's run and prints each one's k nearest
indexed images, or with --radius all within that distance (rank, Hamming distance, path); --out
writes the same rows as CSV. Every file is
written atomically.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from pgh.data.files import find_images, iter_image_batches
from pgh.io import file_lock, fsync_folder, save_npy, unwritable_reason, write_json, write_text
from pgh.retrieval.codes import pack_codes
from pgh.retrieval.index import BinaryIndex
from pgh.retrieval.run_encoder import RunEncoder

IVF_TRAIN_SAMPLE = 100_000
PROGRESS_SECONDS = 10
# the CPUs this process may run on (a SLURM job's share, not the node's), at most 8
DEFAULT_WORKERS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def encode_files(encoder: RunEncoder, paths: list[Path], chunk: int, workers: int, verbose: bool = True) -> np.ndarray:
    """Packed codes uint8 [n, bits/8] of the image files, `chunk` files read and coded at a time;
    `workers` processes read the next chunks while this one is coded. Progress goes to stderr."""
    packed, done, last_report = [], 0, time.perf_counter()
    workers = workers if len(paths) > chunk else 0  # one chunk: nothing to read ahead
    for images in iter_image_batches(paths, encoder.channels, encoder.size, chunk, workers):
        packed.append(pack_codes(encoder.code_images(images)))
        done += len(images)
        if verbose and (time.perf_counter() - last_report > PROGRESS_SECONDS or done == len(paths)):
            print(f"coded {done:,} / {len(paths):,} images", file=sys.stderr, flush=True)
            last_report = time.perf_counter()
    return np.concatenate(packed) if packed else np.zeros((0, encoder.bits // 8), np.uint8)


def warn_if_unlike_training(encoder: RunEncoder, path: Path) -> None:
    """Images are converted and resized to the run's shape, which codes anything; a collection in
    colour for a run trained on grey images, or at more than twice or less than half its size, gets
    codes from a model that never saw such images. Judged from the first file; a warning, not a refusal."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            colour = image.mode not in ("1", "L", "LA", "I", "I;16", "F") and not _grey_rgb(image)
    except (OSError, SyntaxError, Image.DecompressionBombError):
        return  # unreadable: the coding names it with the others
    unlike = []
    if colour and encoder.channels == 1:
        unlike.append("in colour (read as grey)")
    if max(width, height) > 2 * encoder.size or max(width, height) < encoder.size / 2:
        unlike.append(f"{width}x{height} (resized to {encoder.size}x{encoder.size})")
    if unlike:
        print(
            f"pgh-index: warning: the images (e.g. {path.name}) are {' and '.join(unlike)}, unlike the "
            f"{encoder.channels}-channel {encoder.size}x{encoder.size} images ({encoder.dataset}) the run was "
            "trained on: their codes come from a model that never saw such images",
            file=sys.stderr,
        )


def _grey_rgb(image: Image.Image) -> bool:
    """Whether the image's three channels are equal (a grey image stored as RGB or a palette), judged
    on a copy at most 256 pixels a side (a large photo is not copied whole)."""
    scale = min(1.0, 256 / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.resize(size, Image.Resampling.NEAREST)  # nearest: no mixing of channels' values
    pixels = np.asarray(small.convert("RGB"), dtype=np.int16)
    return bool((pixels == pixels[..., :1]).all())


def build(args: argparse.Namespace) -> None:
    images_root, out = Path(args.images).resolve(), Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: name a directory for the index")
    if reason := unwritable_reason(out):  # before the coding, which can take hours
        raise ValueError(f"cannot write --out {out}: {reason}: choose a writable --out or fix its permissions")
    paths = find_images(images_root)
    if not paths:
        raise ValueError(f"no image files under {images_root}")
    relative = [p.relative_to(images_root).as_posix() if images_root.is_dir() else p.name for p in paths]
    check_names(relative, images_root)
    encoder = RunEncoder(args.run, device=args.device)
    warn_if_unlike_training(encoder, paths[0])
    # settings checked before the coding, which can take hours on a large collection
    index = new_index(encoder.bits, args.nlist, args.nprobe, len(paths), "--nlist")
    info = {"run": str(Path(args.run).resolve()), "images": str(images_root), "bits": encoder.bits}
    info["model_sha256"] = file_sha256(encoder.model_file)  # the model the codes come from
    stamps = file_stamps(paths)
    t0 = time.perf_counter()
    codes = encode_files(encoder, paths, args.chunk, args.workers)
    coded = time.perf_counter() - t0
    with writer_lock(out, create=True):
        write_index(out, index, codes, stamps, relative, info, coded)
    kind = f"IVF, nlist {index.nlist}, nprobe {index.nprobe}" if index.nlist else "exact"
    print(f"pgh-index | {len(paths):,} images | {encoder.bits} bits | {kind} | coded in {coded:.1f}s | {out}")


def update(args: argparse.Namespace) -> None:
    """Bring an index up to date with its folder: code the files added or changed since, drop the
    ones gone. Holds the writer lock from the start: two updates would both code the same files."""
    out = Path(args.index)
    with writer_lock(out, create=False):
        update_locked(args, out)


def update_locked(args: argparse.Namespace, out: Path) -> None:
    info = read_index_info(out, finish_write=True, keys=UPDATE_KEYS)
    if not (out / "codes.npy").exists() or not (out / "stamps.npy").exists():
        raise FileNotFoundError(
            f"{out} predates codes.npy and stamps.npy, which update needs: build it again with pgh-index build"
        )
    images_root = Path(info["images"])
    if not images_root.is_dir():
        raise FileNotFoundError(
            f"{images_root} is not a folder (gone, or {out} was built from a single file): update re-scans the "
            "folder an index was built from; build the index again"
        )
    encoder = index_encoder(out, info, args.device)
    indexed = read_indexed_names(out)
    try:
        old_codes, old_stamps = np.load(out / "codes.npy"), np.load(out / "stamps.npy")
    except (OSError, ValueError) as error:
        raise ValueError(f"{out}: codes.npy or stamps.npy is unreadable ({error}): build the index again") from None
    count, width = info["count"], info["bits"] // 8
    for name, array, dtype, shape in (
        ("codes.npy", old_codes, np.uint8, (count, width)),
        ("stamps.npy", old_stamps, np.int64, (count, 2)),
    ):
        if array.dtype != dtype or array.shape != shape:
            raise ValueError(
                f"{out / name} holds {array.dtype} {list(array.shape)}, not the {np.dtype(dtype)} {list(shape)} of "
                f"index.json's {count:,} codes of {info['bits']} bits: build the index again"
            )
    if len(indexed) != count:
        raise ValueError(
            f"{out / 'paths.txt'} lists {len(indexed):,} files, index.json {count:,}: build the index again"
        )
    if "codes_sha1" in info and codes_sha1(old_codes) != info["codes_sha1"]:
        raise ValueError(
            f"{out / 'codes.npy'} holds other codes than the index was built with (index.json's codes_sha1): "
            "build the index again"
        )
    row = {path: i for i, path in enumerate(indexed)}
    paths = find_images(images_root)
    relative = [p.relative_to(images_root).as_posix() for p in paths]
    if not relative:
        raise ValueError(f"no image files left under {images_root}: nothing to index (add images, or delete {out})")
    check_names(relative, images_root)
    stamps = file_stamps(paths)  # before reading: a file changed while it is read is re-coded next time
    changed = [name in row and bool((old_stamps[row[name]] != stamp).any()) for name, stamp in zip(relative, stamps)]
    to_code = [p for p, name, c in zip(paths, relative, changed) if c or name not in row]
    new, gone = sum(name not in row for name in relative), len(set(row) - set(relative))
    if not to_code and not gone:
        print(f"pgh-index | {out} is up to date ({len(indexed):,} images)")
        return
    index = new_index(info["bits"], info["nlist"], info["nprobe"], len(relative), "the index's nlist")
    t0 = time.perf_counter()
    coded_codes = iter(encode_files(encoder, to_code, args.chunk, args.workers))
    coded = time.perf_counter() - t0
    # in the folder's sorted order, as a build over it would give them
    codes = np.stack(
        [next(coded_codes) if c or name not in row else old_codes[row[name]] for name, c in zip(relative, changed)]
    )
    write_index(out, index, codes, stamps, relative, info, info.get("coding_seconds", 0) + coded)
    counts = f"{new:,} new, {sum(changed):,} changed, {gone:,} gone"
    print(f"pgh-index | {out} | {counts} | {len(relative):,} images | coded in {coded:.1f}s")


def new_index(bits: int, nlist: int | None, nprobe: int | None, count: int, nlist_name: str) -> BinaryIndex:
    """An empty index with these settings, for `count` codes; bad settings stop here."""
    if nlist and count < nlist:
        raise ValueError(
            f"{count:,} images for {nlist_name}={nlist} IVF centroids: build with a smaller --nlist (at most the "
            "number of images; FAISS suggests 39 images per centroid) or an exact index (no --nlist)"
        )
    return BinaryIndex(bits, nlist=nlist, nprobe=nprobe)


def check_names(relative: list[str], images_root: str | Path) -> None:
    """Names paths.txt (UTF-8, one name a line) cannot hold, refused before any coding: a line break
    would shift every name after it (and a \r end a row of search's CSV), and bytes that are not UTF-8
    (kept by Python as surrogates) fail only when paths.txt is written, after the index was replaced."""

    def unlistable(name: str) -> bool:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return "\n" in name or "\r" in name

    broken = [name for name in relative if unlistable(name)]
    if broken:
        shown = ", ".join(repr(name) for name in broken[:5]) + (
            f" and {len(broken) - 5} more" if len(broken) > 5 else ""
        )
        raise ValueError(
            f"{len(broken)} file name(s) under {images_root} hold a line break or bytes that are not UTF-8, which an "
            f"index cannot list: {shown}; rename them (or move them out of the folder)"
        )


def read_indexed_names(out: Path) -> list[str]:
    """paths.txt's names, split at "\n" only (str.splitlines would also split names at \x1c … \u2029)."""
    try:
        with open(out / "paths.txt", encoding="utf-8") as f:
            return f.read().split("\n")[:-1]
    except FileNotFoundError:
        raise FileNotFoundError(f"{out / 'paths.txt'} is missing: build the index again") from None
    except (OSError, ValueError) as error:  # e.g. not UTF-8
        raise ValueError(f"{out / 'paths.txt'} is unreadable ({error}): build the index again") from None


def file_stamps(paths: list[Path]) -> np.ndarray:
    """int64 [n, 2]: each file's modification time (ns) and size, which tell update a changed file."""
    stats = [path.stat() for path in paths]
    return np.array([[st.st_mtime_ns, st.st_size] for st in stats], dtype=np.int64).reshape(len(paths), 2)


def codes_sha1(packed: np.ndarray) -> str:
    """The packed codes' checksum in index.json, which tells a search that index.faissindex holds them."""
    return hashlib.sha1(np.ascontiguousarray(packed).tobytes()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


STAGING = ".staging"  # the next set of files, moved into place once it is whole
LOCK = ".lock"  # held by the one build or update writing the folder
SWAP_LOCK = ".swap.lock"  # exclusive while a writer moves its files into place, shared while a search reads them
INDEX_FILES = ("index.faissindex", "codes.npy", "stamps.npy", "paths.txt")  # then index.json, the finished mark


def write_index(
    out: Path, index: BinaryIndex, codes: np.ndarray, stamps: np.ndarray, relative: list[str], info: dict, coded: float
) -> None:
    """The codes into `index` (an IVF one trained on a sample first), then index.faissindex, codes.npy
    and stamps.npy (for update), paths.txt and, last, index.json (the finished mark). All are written
    into INDEX_DIR/.staging first and moved into place once whole: a write that fails (a full disk, a
    kill) leaves the previous index as it was, and one stopped while moving is finished by the next
    build or update. The caller holds the writer lock."""
    if index.nlist:
        sample = np.random.default_rng(0).permutation(len(codes))[:IVF_TRAIN_SAMPLE]
        index.train(codes[np.sort(sample)])
    index.add(codes)
    staging = out / STAGING
    if staging.exists():  # an earlier write that did not finish staging
        shutil.rmtree(staging)
    index.save(staging / "index.faissindex")
    save_npy(staging / "codes.npy", codes)
    save_npy(staging / "stamps.npy", stamps)
    write_text(staging / "paths.txt", "".join(f"{name}\n" for name in relative))
    info = {**info, "count": len(relative), "nlist": index.nlist, "nprobe": index.nprobe, "coding_seconds": coded}
    info["codes_sha1"] = codes_sha1(codes)
    write_json(staging / "index.json", info)
    move_staged_index(out)


def move_staged_index(out: Path) -> None:
    """Move a whole staged set (its index.json is written last) into place, index.json last; run
    again after a stop midway, it moves what is left."""
    staging = out / STAGING
    with swap_lock(out, exclusive=True):
        (out / "index.json").unlink(missing_ok=True)  # gone until all the files are new
        for name in INDEX_FILES:
            if (staging / name).exists():
                os.replace(staging / name, out / name)
        os.replace(staging / "index.json", out / "index.json")
        staging.rmdir()
        fsync_folder(out)  # the renames reach the disk


@contextmanager
def swap_lock(out: Path, exclusive: bool) -> Iterator[None]:
    """Waits for, then holds, the lock that keeps a search from reading index.json, paths.txt and
    index.faissindex from two different writes (a writer moves them one by one; old names beside a new
    index would name the wrong files). A search reads without it a folder that holds no index (its
    error follows, and no lock file is left there) and one this user cannot write (read-only)."""
    if not exclusive and not any((out / name).exists() for name in ("index.json", STAGING)):
        yield
        return
    try:
        lock = open(out / SWAP_LOCK, "a")
    except OSError:
        if exclusive:
            raise
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def writer_lock(out: Path, create: bool) -> Iterator[None]:
    """The index folder to this process alone among pgh-index's writers (build, update) while it
    writes; `create`: make the folder first (build)."""
    if create:
        out.mkdir(parents=True, exist_ok=True)
    elif not out.is_dir():
        raise FileNotFoundError(f"{out} does not exist: build an index there with pgh-index build")
    elif not any((folder / "index.json").exists() for folder in (out, out / STAGING)):
        # not an index folder (an images folder, a run): refused before the lock file is made there
        raise FileNotFoundError(f"{out} holds no finished index (no index.json): build one with pgh-index build")
    if reason := unwritable_reason(out):
        raise ValueError(f"cannot write {out}: {reason}: fix its permissions, or build the index in a writable --out")

    def busy() -> ValueError:
        return ValueError(f"another pgh-index build or update is writing {out}: let it finish first")

    def unlockable(error: OSError) -> None:
        print(f"pgh-index: cannot lock {out} ({error}): not refusing other writers there", file=sys.stderr)

    with file_lock(out / LOCK, wait_s=0.0, on_busy=busy, on_unlockable=unlockable):
        yield


SEARCH_KEYS = {"bits": int, "run": str, "images": str}  # index.json's keys a search needs, and their types
UPDATE_KEYS = {**SEARCH_KEYS, "count": int, "nlist": (int, type(None)), "nprobe": (int, type(None))}


def read_index_info(out: Path, finish_write: bool = False, keys: dict = SEARCH_KEYS) -> dict:
    """index.json's record, checked to hold `keys` of their types. A write stopped while it moved its
    whole new set into place (`.staging` holds the set's index.json) is finished here with
    `finish_write` (build and update, which hold the writer lock); a search, which may run beside a
    writer, leaves the folder as it is."""
    if not out.exists():
        raise FileNotFoundError(f"{out} does not exist: build an index there with pgh-index build")
    if (out / STAGING / "index.json").exists() and finish_write:
        print(
            f"pgh-index: {out}: finishing a write that was stopped while it moved its files into place",
            file=sys.stderr,
        )
        move_staged_index(out)
    if not (out / "index.json").exists():
        if (out / STAGING / "index.json").exists():
            raise FileNotFoundError(
                f"{out}: a build or update was stopped while it moved its files into place: "
                f"pgh-index update {out} finishes it"
            )
        raise FileNotFoundError(f"{out} holds no finished index (no index.json): build one with pgh-index build")
    try:
        info = json.loads((out / "index.json").read_text())
    except ValueError as error:
        raise ValueError(f"{out / 'index.json'} is not valid JSON ({error}): build the index again") from None
    missing = [key for key in keys if not isinstance(info, dict) or key not in info]
    if missing:
        raise ValueError(f"{out / 'index.json'} lacks {', '.join(missing)}: build the index again")
    wrong = [
        f"{key}={info[key]!r}"
        for key, kind in keys.items()
        if not isinstance(info[key], kind) or isinstance(info[key], bool)
    ]
    if wrong:
        raise ValueError(f"{out / 'index.json'} holds {', '.join(wrong)} of the wrong type: build the index again")
    return info


def index_encoder(out: Path, info: dict, device: str) -> RunEncoder:
    """The run that coded the index, checked to hold the same model as then."""
    run = Path(info["run"])
    if not run.exists():
        raise FileNotFoundError(
            f"the run {run}, which {out / 'index.json'} names, does not exist (moved or deleted?): put it back, "
            "or edit index.json's run to where it is now"
        )
    encoder = RunEncoder(run, device=device)
    if "model_sha256" in info and file_sha256(encoder.model_file) != info["model_sha256"]:
        raise ValueError(
            f"{encoder.model_file} changed since {out} was built (the run was resumed or retrained): its codes "
            "would not match the index's; build the index again with pgh-index build"
        )
    return encoder


def search(args: argparse.Namespace) -> None:
    out = Path(args.index)
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder: name a file for the CSV")
    if args.out and (reason := unwritable_reason(Path(args.out).parent)):
        raise ValueError(f"cannot write --out {args.out}: {reason}: choose a writable --out or fix its permissions")
    with swap_lock(out, exclusive=False):  # the three files of one write, not of two
        info = read_index_info(out)
        indexed = read_indexed_names(out)
        index = BinaryIndex.load(out / "index.faissindex")
    if index.ntotal != len(indexed) or index.bits != info["bits"]:
        raise ValueError(
            f"{out / 'index.faissindex'} holds {index.ntotal:,} codes of {index.bits} bits, but paths.txt lists "
            f"{len(indexed):,} files and index.json says {info['bits']} bits: build the index again"
        )
    if "codes_sha1" in info and codes_sha1(index.codes()) != info["codes_sha1"]:
        raise ValueError(
            f"{out / 'index.faissindex'} holds other codes than the index was built with (index.json's codes_sha1; "
            "another index's?): build the index again"
        )
    if args.nprobe is not None:
        if not index.nlist:
            raise ValueError(f"{out} is an exact index: --nprobe is for IVF ones (pgh-index build ... --nlist N)")
        if args.nprobe > index.nlist:
            raise ValueError(f"--nprobe {args.nprobe} must be in 1..{index.nlist} (the index's nlist)")
        index.nprobe = args.nprobe
    # each file once, in the order given (a file named beside its folder is not searched twice)
    queries = list(dict.fromkeys(path for query in args.queries for path in find_images(query)))
    if not queries:
        raise ValueError(f"no image files in {' '.join(args.queries)}")
    check_names([str(query) for query in queries], " ".join(args.queries))  # they head the rows of the CSV
    if args.radius is not None and not 0 <= args.radius <= index.bits:
        raise ValueError(f"--radius {args.radius} must be in 0..{index.bits} (the codes' bits)")
    encoder = index_encoder(out, info, args.device)
    codes = encode_files(encoder, queries, args.chunk, args.workers, verbose=False)
    if args.radius is not None:  # every indexed image within the radius
        lims, found_d, found_i = index.search_radius(codes, args.radius)
        distances = [found_d[a:b] for a, b in zip(lims[:-1], lims[1:])]
        ids = [found_i[a:b] for a, b in zip(lims[:-1], lims[1:])]
        for query, hits in zip(queries, ids):
            if len(hits) == 0:
                where = ""
                if index.nlist and index.nprobe < index.nlist:
                    where = f" in the {index.nprobe} probed lists of {index.nlist} (--nprobe scans more)"
                print(
                    f"pgh-index: no indexed image within Hamming distance {args.radius} of {query}{where}",
                    file=sys.stderr,
                )
    else:
        k = min(args.k, index.ntotal)
        if k < args.k:
            print(f"pgh-index: {out} holds {index.ntotal:,} images: {k:,} neighbours a query", file=sys.stderr)
        distances, ids = index.search(codes, k)
        short = int((ids < 0).any(axis=1).sum())  # IVF: the probed lists held fewer than k codes
        if short:
            print(
                f"pgh-index: {short:,} of {len(queries):,} queries got fewer than {k:,} neighbours: the "
                f"{index.nprobe} probed lists of {index.nlist} held fewer (--nprobe scans more)",
                file=sys.stderr,
            )
    rows = [
        [str(query), rank, int(d), indexed[i]]
        for query, row_d, row_i in zip(queries, distances, ids)
        for rank, (d, i) in enumerate(((d, i) for d, i in zip(row_d, row_i) if i >= 0), start=1)
    ]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerows([["query", "rank", "hamming_distance", "path"], *rows])
    if args.out:
        write_text(args.out, text.getvalue())
    print(text.getvalue(), end="")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="pgh-index", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="code every image under a folder with a run and index the codes")
    b.add_argument("run", help="a finished pgh-train run directory (PGH, DH, DeepBit, BGAN, LSH, ITQ, SH, SpH)")
    b.add_argument("images", help="a folder of image files (searched recursively)")
    b.add_argument("--out", required=True, help="the index directory to write")
    b.add_argument("--nlist", type=int, help="IVF centroids (none: exact search, on the GPU with faiss-gpu)")
    b.add_argument("--nprobe", type=int, help="IVF: centroids a query scans (default 16, or nlist if fewer)")
    u = commands.add_parser("update", help="code the files added to or changed in an index's folder, drop the gone")
    u.add_argument("index", help="an index directory written by pgh-index build")
    s = commands.add_parser("search", help="the k nearest indexed images of query images, or those within a radius")
    s.add_argument("index", help="an index directory written by pgh-index build")
    s.add_argument("queries", nargs="+", help="query image files or folders")
    how_many = s.add_mutually_exclusive_group()
    how_many.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    how_many.add_argument(
        "--radius", type=int, help="instead of -k: every indexed image within this Hamming distance (inclusive)"
    )
    s.add_argument("--nprobe", type=int, help="IVF: centroids to scan (default: the index's)")
    s.add_argument("--out", help="also write the neighbours as CSV to this file")
    for p in (b, u, s):
        p.add_argument("--device", default="auto", help="where the run's model codes images: auto, cpu, cuda")
        p.add_argument("--chunk", type=int, default=512, help="images read and coded at a time (default 512)")
        p.add_argument(
            "--workers",
            type=int,
            default=DEFAULT_WORKERS,
            help=f"processes reading image files ahead of the coding (default {DEFAULT_WORKERS}; 0: read in turn)",
        )
    args = parser.parse_args(argv)
    if args.chunk < 1:
        parser.error(f"--chunk must be >= 1, got {args.chunk}")
    if args.command == "search" and args.radius is None and args.k < 1:
        parser.error(f"-k must be >= 1, got {args.k}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if args.command == "build" and args.nprobe is not None and args.nlist is None:
        parser.error("--nprobe is for an IVF index: give --nlist too")
    if args.command == "build" and args.nlist is not None and args.nlist < 1:
        parser.error(f"--nlist must be >= 1 (IVF centroids; none: exact search), got {args.nlist}")
    if args.command in ("build", "search") and args.nprobe is not None and args.nprobe < 1:
        parser.error(f"--nprobe must be >= 1, got {args.nprobe}")
    if args.command == "build" and args.nprobe is not None and args.nprobe > args.nlist:
        parser.error(f"--nprobe {args.nprobe} must be at most --nlist {args.nlist}")
    try:
        {"build": build, "update": update, "search": search}[args.command](args)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"pgh-index: {error}")


if __name__ == "__main__":
    main()
