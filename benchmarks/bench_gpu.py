"""`make bench-gpu`: what only a GPU shows, in one script of a few minutes on one CUDA device.

1. PGH training throughput: Lightning fits PGH's training step (a D, a G and an H optimiser step per
   batch) on random images, at the sizes of conf/experiment/ (the CPU-sized mnist5k one and the
   paper-scale MNIST and CIFAR-10 ones, CIFAR-10 also at 64 px), in 32-true and bf16-mixed precision:
   images per second after a warm-up, and the peak GPU memory.
2. End to end: `experiment=pgh_mnist5k trainer=gpu` (the `make train` job on the GPU) in bf16-mixed and
   the same in 32-true; then one round of it through `trainer=ddp` (NCCL, one rank: `pgh-train
   trainer=ddp` is the multi-GPU run) — mAP@all and wall time next to the CPU's.
3. FAISS top-100 over 1,000,000 random 64-bit codes on the CPU and, with faiss-gpu (`make
   install-gpu`), on the GPU; the GPU's distances are checked against the CPU's.
4. pgh-index's coding of image files with H on the GPU (`make bench-index`'s collections: 20,000
   PNGs and 3,000 JPEGs), by the number of worker processes reading ahead: with coding on the GPU,
   reading is what is left to parallelise.

Writes benchmarks/gpu.md (--out), again after each part, so what was measured survives a later part's
failure; a part that fails becomes a section naming the error, and the others still run.
`--device cpu --quick` runs every part on the CPU at toy sizes in seconds (the test suite does), so the
script is known to work before a GPU is at hand; `--device cpu` prints its tables and writes a file
only when --out names one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, markdown_table, run_timed, timed_faiss_search, wall_seconds
from hydra import compose, initialize_config_dir

from pgh.io import write_text
from pgh.train import CONFIG_DIR

# (row name, overrides composing the size) — the network sizes come from the experiment configs
SIZES = {
    "mnist5k (CPU-sized)": ["experiment=pgh_mnist5k"],
    "MNIST, paper scale": ["experiment=pgh_mnist"],
    "CIFAR-10, paper scale": ["experiment=pgh_cifar10"],
    "CIFAR-10 at 64 px": ["experiment=pgh_cifar10", "method.module.image_size=64"],
}
PRECISIONS = ("32-true", "bf16-mixed")
# --quick: toy networks, two batches timed, digits for the end-to-end rows
QUICK_MODULE = ["method.module.width=8", "method.module.hidden=32", "method.module.z_dim=16", "method.batch_size=16"]
QUICK_RUN = [
    "dataset=digits",
    "features=pixels",
    "split.query_per_class=10",
    "split.train_size=96",
    "method.rounds=1",
    "method.progressive.epochs_per_round=2",
    "method.progressive.vote_neighbors=4",
    "method.module.distill_epochs=1",
    *QUICK_MODULE,
]
CPU_MNIST5K_MAP = "87.18 to 87.66 (2 threads, `make train`; by CPU)"  # README's headline runs
# training images of each experiment's dataset under the protocol (database = training set = all
# images but the 1,000 queries), for the estimated training time of its rounds
TRAIN_IMAGES = {"pgh.data.load_mnist5k": 4_000, "pgh.data.load_mnist": 69_000, "pgh.data.load_cifar10": 59_000}


class StepTimer(Callback):
    """Wall time from the start of batch `first` to the end of batch `last` (synchronising the GPU at
    those two points only, so the batches in between queue their kernels as in training)."""

    def __init__(self, first: int, last: int, device: torch.device) -> None:
        self.first, self.last, self.device = first, last, device
        self.started = self.seconds = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.first:
            self._sync()
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.last:
            self._sync()
            self.seconds = time.perf_counter() - self.started


def throughput(overrides: list[str], precision: str, device: torch.device, warmup: int, steps: int) -> list[str]:
    """One row: the composed PGH's images/s over `steps` batches after `warmup` batches."""
    import lightning as L
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader, TensorDataset

    cfg = compose("config", overrides=overrides)
    module, batch = cfg.method.module, int(cfg.method.batch_size)
    n = batch * (warmup + steps)
    torch.manual_seed(0)
    model = instantiate(module, num_train=n)
    model.set_codes(torch.randint(0, 2, (n, cfg.bits)), initial=True)
    images = torch.randint(0, 256, (n, module.channels, module.image_size, module.image_size), dtype=torch.uint8)
    timer = StepTimer(warmup, warmup + steps - 1, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    L.Trainer(
        accelerator=device.type if device.type == "cpu" else "gpu",
        devices=1,
        precision=precision,
        max_epochs=1,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, DataLoader(TensorDataset(images, torch.arange(n)), batch_size=batch, shuffle=True))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "–"
    size = f"{module.channels}×{module.image_size}², width {module.width}, hidden {module.hidden}, batch {batch}"
    rate, per_batch = steps * batch / timer.seconds, 1000 * timer.seconds / steps
    epochs = cfg.method.rounds * cfg.method.progressive.epochs_per_round
    minutes = epochs * TRAIN_IMAGES[cfg.dataset._target_] / rate / 60
    estimate = f"{minutes:,.1f} ({cfg.method.rounds} × {cfg.method.progressive.epochs_per_round} epochs)"
    return [size, precision, f"{params:.1f}", f"{rate:,.0f}", f"{per_batch:.1f}", memory, estimate]


def end_to_end(overrides: list[str], what: str, out: Path) -> list[str]:
    """One row: a full `train(cfg)` run of PGH into `out` (afresh: a reused --run-dir holds the last
    invocation's checkpoints, which pgh-train would refuse), its mAP and wall time."""
    if out.exists():
        shutil.rmtree(out)
    metrics = run_timed(overrides, out)
    return [
        what,
        f"{100 * metrics['init_map_all']:.2f}",
        f"{100 * metrics['map_all']:.2f}",
        f"{100 * metrics['map_at_1000']:.2f}",
        str(metrics["rounds_completed"]),
        f"{metrics['train_seconds']:.0f}",
        f"{metrics['feature_seconds']:.0f}",
        f"{wall_seconds(out):.0f}",
    ]


def faiss_search(n_db: int, n_q: int, device: torch.device, bits: int = 64) -> list[list[str]]:
    """Rows: top-100 Hamming search over n_db random codes on the CPU and, with faiss-gpu and a CUDA
    `device`, the GPU."""
    from pgh.retrieval.index import gpu_available, gpu_unusable

    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, (n_db, bits // 8), dtype=np.uint8)
    q = rng.integers(0, 256, (n_q, bits // 8), dtype=np.uint8)
    rows, results = [], {}
    for use_gpu in [False] + ([True] if device.type == "cuda" and gpu_available() else []):
        _, seconds, results[use_gpu] = timed_faiss_search(db, q, bits, use_gpu)
        note = ""
        if use_gpu:
            same = np.array_equal(results[True], results[False])
            note = "distances identical to the CPU's" if same else "DISTANCES DIFFER from the CPU's"
        where = "GPU" if use_gpu else "CPU"
        rows.append([f"FAISS IndexBinaryFlat ({where})", f"{seconds:.3f}", f"{n_q / seconds:,.0f}", note])
    if True not in results and device.type == "cuda":
        rows.append(["FAISS IndexBinaryFlat (GPU)", "–", "–", f"not run: {gpu_unusable()}"])
    return rows


def measure(args: argparse.Namespace, device: torch.device, publish: Callable[[list[str]], None]) -> list[str]:
    """The markdown sections of the parts not in --skip (needs an active initialize_config_dir), handed
    to `publish` after each part. A part that raises becomes a section naming the error (its traceback
    printed) and the next part runs: GPU time is scarce, and a late failure must not lose the rest."""
    parts = {
        "throughput": ("PGH training throughput", throughput_section),
        "e2e": ("PGH end to end", end_to_end_section),
        "index": (f"pgh-index coding on the {where(device)}", index_section),
        "faiss": ("FAISS search", faiss_section),
    }
    sections = []
    for name, (title, part) in parts.items():
        if name in args.skip and (name != "e2e" or "ddp" in args.skip):
            continue
        try:
            sections.append(part(args, device))
        except Exception as error:
            traceback.print_exc()
            sections.append(f"## {title}\n\nFailed: {type(error).__name__}: {error}\n")
        publish(sections)
    return sections


def where(device: torch.device) -> str:
    return "GPU" if device.type == "cuda" else "CPU"


def batches(args: argparse.Namespace) -> tuple[int, int]:
    """(timed, warm-up) batches per throughput row."""
    steps = args.steps if args.steps is not None else (2 if args.quick else 100)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 20)
    return steps, warmup


def throughput_section(args: argparse.Namespace, device: torch.device) -> str:
    steps, warmup = batches(args)
    rows = []
    for name, overrides in SIZES.items():
        for precision in PRECISIONS:
            row = throughput(overrides + (QUICK_MODULE if args.quick else []), precision, device, warmup, steps)
            rows.append([name, *row])
            print(rows[-1], flush=True)
    header = ["config", "networks", "precision", "params (M)", "images / s", "ms / batch", "peak GPU GiB"]
    header += ["training min (est.)"]
    return (
        f"## PGH training throughput\n\nOne batch = a D, a G and an H optimiser step (Lightning, manual "
        f"optimisation) on random images; {steps} batches timed after {warmup}. The estimate is the "
        "experiment's epochs over its training set (mnist5k 4,000 images, MNIST 69,000, CIFAR-10 59,000) "
        "at this rate, without the rounds' code refresh and evaluation.\n\n" + markdown_table(header, rows)
    )


def end_to_end_section(args: argparse.Namespace, device: torch.device) -> str:
    trainer = ["trainer=cpu"] if device.type == "cpu" else ["trainer=gpu"]
    run_root = args.run_dir or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    base = ["experiment=pgh_mnist5k", "logger=none", "trainer.enable_progress_bar=false"]
    base += QUICK_RUN if args.quick else []
    runs = []
    if "e2e" not in args.skip:
        runs += [(f"{trainer[0]} (bf16-mixed)", [*trainer, "trainer.precision=bf16-mixed"], "bf16")]
        runs += [(f"{trainer[0]} (32-true)", [*trainer, "trainer.precision=32-true"], "fp32")]
    if "ddp" not in args.skip:
        # one rank: Lightning starts further ranks by re-running this script, which would repeat the
        # whole benchmark in each; `pgh-train trainer=ddp` is the multi-GPU run
        ddp = ["trainer=ddp", "trainer.devices=1", "method.rounds=1"]
        ddp += ["trainer.accelerator=cpu", "trainer.sync_batchnorm=false"] if device.type == "cpu" else []
        runs += [(f"trainer=ddp, 1 rank ({'gloo' if device.type == 'cpu' else 'NCCL'}), 1 round", ddp, "ddp")]
    rows = []
    for what, overrides, name in runs:
        try:
            rows.append(end_to_end(base + overrides, what, run_root / name))
        except Exception as error:  # the other runs' rows still count: a row saying why this one failed
            traceback.print_exc()
            rows.append([what, f"failed: {type(error).__name__}: {error}", *["–"] * 6])
        finally:
            # Lightning leaves DDP's process group open until the interpreter exits; under NCCL a later
            # collective on CPU tensors (a module built afterwards) would fail
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        print(rows[-1], flush=True)
    header = ["trainer", "round 0 mAP@all", "mAP@all", "mAP@1000", "rounds", "train s", "features s", "wall s"]
    return (
        "## PGH end to end\n\n`pgh-train experiment=pgh_mnist5k` (ITQ+GIST, 32 bits, 4 rounds × 15 epochs, "
        f"batch 64) on this machine; on 2 CPU cores it reaches {CPU_MNIST5K_MAP} in 6 to 10 minutes. The wall "
        "time includes the features: the first row computes GIST, the others read it from the cache. "
        "Run directories: `" + str(run_root) + "`.\n\n" + markdown_table(header, rows)
    )


def index_section(args: argparse.Namespace, device: torch.device) -> str:
    title = f"## pgh-index coding on the {where(device)}\n\n"
    try:
        from bench_index import index_rows  # reads image files through Pillow
    except ImportError as error:
        return f"{title}Not run: {error} (pip install pillow).\n"
    rows = index_rows(device, quick=args.quick, threads=[torch.get_num_threads()])
    header = ["files", "torch threads", "--workers", "reading alone (s)", "reading + coding (s)"]
    return (
        f"{title}`encode_files` (what `pgh-index build` runs) with PGH's CPU-sized H (random weights) on "
        "this device; worker processes read the next chunks while this one is coded.\n\n"
        + markdown_table([*header, "images / s"], rows)
    )


def faiss_section(args: argparse.Namespace, device: torch.device) -> str:
    n_db, n_q = (20_000, 100) if args.quick else (1_000_000, 1_000)
    rows = faiss_search(n_db, n_q, device)
    return (
        f"## FAISS search\n\nTop-100 of {n_q:,} queries over {n_db:,} random 64-bit codes (after one "
        "warm-up search).\n\n" + markdown_table(["index", "seconds", "queries / s", "note"], rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks the script, measures nothing")
    parser.add_argument("--steps", type=int, help="timed batches per throughput row (default 100; --quick: 2)")
    parser.add_argument("--warmup", type=int, help="untimed batches before them (default 20; --quick: 1)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "e2e", "ddp", "faiss", "index"])
    parser.add_argument(
        "--out", type=Path, help="default: benchmarks/gpu.md on CUDA (not with --quick); else only printed"
    )
    parser.add_argument("--run-dir", type=Path, help="where the end-to-end runs write (default: a temporary dir)")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1 or args.warmup is not None and args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "bench-gpu measures the GPU paths and no CUDA device is visible to torch; run it on a CUDA "
            "machine, or check the script on the CPU with `python benchmarks/bench_gpu.py --device cpu --quick`"
        )
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU only"
    # a measurement on CUDA replaces benchmarks/gpu.md; --quick's toy numbers never do
    out = args.out or (Path(__file__).parent / "gpu.md" if device.type == "cuda" and not args.quick else None)

    def report(sections: list[str]) -> str:
        return (
            "# GPU benchmark (`make bench-gpu`)\n\n"
            + ("**`--quick`: toy sizes, the numbers mean nothing.**\n\n" if args.quick else "")
            + f"Machine: {machine()}; device: {gpu}\n\n"
            + "\n".join(sections)
        )

    def publish(sections: list[str]) -> None:
        if out is not None:
            write_text(out, report(sections))

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        sections = measure(args, device, publish)
    print(report(sections))


if __name__ == "__main__":
    main()
