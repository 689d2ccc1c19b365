"""`make bench-index`: how fast `pgh-index build` reads and codes a folder of image files, with the
files read in turn (`--workers 0`) or ahead of the coding by worker processes, and torch coding on
one thread or on all. Two collections: 20,000 28-px PNGs (mnist5k's digits, repeated) and 3,000
256-px JPEGs (the same digits enlarged, in colour: decoding a photo costs more), coded by PGH's
CPU-sized H (random weights: the speed does not depend on training). Times `encode_files`, the
function pgh-index runs, and reading alone. Writes benchmarks/index.md (`--quick`: toy sizes, printed)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, markdown_table

from pgh.data import load_mnist5k
from pgh.data.files import find_images, iter_image_batches
from pgh.io import write_text
from pgh.methods import PGH
from pgh.retrieval.cli import DEFAULT_WORKERS, encode_files

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 512


def write_collections(folder: Path, pngs: int, jpegs: int) -> dict[str, Path]:
    """The two collections as files under `folder`."""
    digits = load_mnist5k().images[:, 0].numpy()
    collections = {f"{pngs:,} PNGs, 28 px": folder / "png", f"{jpegs:,} JPEGs, 256 px": folder / "jpeg"}
    png, jpeg = collections.values()
    for i in range(pngs):
        (png / f"{i // 1000:03d}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits[i % len(digits)]).save(png / f"{i // 1000:03d}" / f"{i:06d}.png")
    jpeg.mkdir(parents=True)
    for i in range(jpegs):
        image = Image.fromarray(digits[i % len(digits)]).convert("RGB").resize((256, 256), Image.BILINEAR)
        image.save(jpeg / f"{i:06d}.jpg", quality=90)
    return collections


def timed_read_and_build(encoder, paths: list[Path], workers: int) -> tuple[float, float]:
    """Seconds to read the files alone, then to read and code them (`encode_files`)."""
    started = time.perf_counter()
    for _ in iter_image_batches(paths, encoder.channels, encoder.size, CHUNK, workers):
        pass
    read = time.perf_counter() - started
    started = time.perf_counter()
    encode_files(encoder, paths, CHUNK, workers, verbose=False)
    return read, time.perf_counter() - started


def index_rows(device: torch.device, quick: bool, threads: list[int]) -> list[list[str]]:
    """One row per collection x torch thread count x worker count: seconds to read alone, to read
    and code, and images per second (bench-gpu runs it on the GPU)."""
    workers = sorted({0, 1, 2, DEFAULT_WORKERS})
    model = PGH(bits=32, num_train=2, width=32, hidden=256).to(device).eval()  # conf/method/pgh.yaml's CPU size
    encoder = SimpleNamespace(channels=1, size=28, bits=32, code_images=model.encode_inputs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        collections = write_collections(Path(tmp), *((200, 50) if quick else (20_000, 3_000)))
        for name, folder in collections.items():
            paths = find_images(folder)
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                for n_workers in workers:
                    read, build = timed_read_and_build(encoder, paths, n_workers)
                    rate = f"{len(paths) / build:,.0f}"
                    rows.append([name, n_threads, n_workers, f"{read:.2f}", f"{build:.2f}", rate])
                    print(" | ".join(str(c) for c in rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy sizes (200 and 50 files); prints, writes nothing")
    parser.add_argument("--out", help="write the table here (default: benchmarks/index.md unless --quick)")
    args = parser.parse_args()
    # one thread and every core, whatever OMP_NUM_THREADS says (under it torch's default is that count)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = index_rows(torch.device("cpu"), args.quick, threads=sorted({1, cores}))
    header = ["files", "torch threads", "--workers", "reading alone (s)", "reading + coding (s)", "images / s"]
    note = "toy sizes, the numbers mean nothing\n\n" if args.quick else ""
    text = (
        "# pgh-index reading and coding (`make bench-index`)\n\n"
        f"{note}`encode_files` (what `pgh-index build` runs before indexing) over each collection, "
        f"{CHUNK} files a chunk, coded by PGH's CPU-sized H at 32 bits; worker processes read the next "
        f"chunks while this one is coded. Machine: {machine()}\n\n" + markdown_table(header, rows)
    )
    print(text)
    out = args.out or (None if args.quick else ROOT / "benchmarks" / "index.md")
    if out:
        write_text(out, text)


if __name__ == "__main__":
    main()
