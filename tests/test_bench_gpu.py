"""benchmarks/bench_gpu.py (`make bench-gpu`) runs every part on the CPU at toy sizes (`--quick`), so
the GPU session that runs it for real finds a working script; without CUDA it stops with the fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from conftest import markdown_table_rows, run_python

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_gpu.py"


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return run_python(str(SCRIPT), *args, tmp_path=tmp_path, check=False)


def test_quick_cpu_run_prints_every_table(tmp_path):
    committed = SCRIPT.parent / "gpu.md"  # the GPU's results: a CPU run must not overwrite them
    before = committed.stat().st_mtime_ns if committed.exists() else None
    done = run("--device", "cpu", "--quick", "--run-dir", str(tmp_path / "runs"), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before
    text = done.stdout
    assert "toy sizes, the numbers mean nothing" in text

    throughput = markdown_table_rows(text, "PGH training throughput")
    assert [row[0] for row in throughput[::2]] == [
        "mnist5k (CPU-sized)",
        "MNIST, paper scale",
        "CIFAR-10, paper scale",
        "CIFAR-10 at 64 px",
    ]
    assert [row[2] for row in throughput] == ["32-true", "bf16-mixed"] * 4
    assert throughput[-1][1].startswith("3×64²")  # the 64-px override reaches the networks
    assert all(float(row[4].replace(",", "")) > 0 for row in throughput)  # images / s

    runs = markdown_table_rows(text, "PGH end to end")
    assert [row[0] for row in runs] == [
        "trainer=cpu (bf16-mixed)",
        "trainer=cpu (32-true)",
        "trainer=ddp, 1 rank (gloo), 1 round",
    ]
    assert all(0 < float(row[2]) <= 100 and row[4] == "1" for row in runs)
    assert all((tmp_path / "runs" / name / "metrics.json").exists() for name in ("bf16", "fp32", "ddp"))
    # the same --run-dir again: the end-to-end runs start afresh (pgh-train refused the old checkpoints)
    again = run("--device", "cpu", "--quick", "--skip", "throughput", "ddp", "faiss", "index",
                "--run-dir", str(tmp_path / "runs"), tmp_path=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(markdown_table_rows(again.stdout, "PGH end to end")) == 2

    coding = markdown_table_rows(text, "pgh-index coding on the CPU")
    assert {row[0] for row in coding} == {"200 PNGs, 28 px", "50 JPEGs, 256 px"}
    assert all(float(row[5].replace(",", "")) > 0 for row in coding)

    search = markdown_table_rows(text, "FAISS search")
    assert search[0][0] == "FAISS IndexBinaryFlat (CPU)" and float(search[0][1]) > 0
    assert len(search) == 1  # --device cpu: FAISS on the CPU only, faiss-gpu or not


def test_a_failing_part_is_recorded_and_the_others_still_run_and_are_written(tmp_path, monkeypatch):
    """GPU time is scarce: every part's section is written as soon as it is measured, and a part that
    fails (the index part once crashed after the DDP run) is a section naming the error."""
    import argparse
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    bench_gpu = importlib.import_module("bench_gpu")
    written = []

    def broken(args, device):
        raise RuntimeError("No backend type associated with device type cpu")

    monkeypatch.setattr(bench_gpu, "index_section", broken)
    monkeypatch.setattr(bench_gpu, "faiss_section", lambda args, device: "## FAISS search\n\nmeasured\n")
    args = argparse.Namespace(skip=["throughput", "e2e", "ddp"], quick=True)
    sections = bench_gpu.measure(args, torch.device("cpu"), lambda done: written.append(list(done)))
    assert sections == [
        "## pgh-index coding on the CPU\n\nFailed: RuntimeError: No backend type associated with device type cpu\n",
        "## FAISS search\n\nmeasured\n",
    ]
    assert written == [sections[:1], sections]
    sys.modules.pop("bench_gpu", None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a CUDA device")
def test_without_cuda_it_stops_and_names_the_cpu_check(tmp_path):
    done = run("--out", str(tmp_path / "gpu.md"), tmp_path=tmp_path)
    assert done.returncode != 0 and "no CUDA device" in done.stderr and "--device cpu --quick" in done.stderr
    assert not (tmp_path / "gpu.md").exists()


def test_bad_batch_counts_stop_before_any_work(tmp_path):
    done = run("--device", "cpu", "--quick", "--steps", "0", tmp_path=tmp_path)
    assert done.returncode == 2 and "--steps must be >= 1 and --warmup >= 0, got 0 and None" in done.stderr


def test_a_failing_end_to_end_run_is_a_row_and_the_others_are_kept(tmp_path, monkeypatch):
    import argparse
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    bench_gpu = importlib.import_module("bench_gpu")

    def end_to_end(overrides, what, out):
        if "trainer=ddp" in overrides:
            raise RuntimeError("NCCL error")
        return [what, "50.00", "80.00", "81.00", "1", "10", "2", "12"]

    monkeypatch.setattr(bench_gpu, "end_to_end", end_to_end)
    args = argparse.Namespace(skip=[], quick=True, run_dir=tmp_path)
    section = bench_gpu.end_to_end_section(args, torch.device("cpu"))
    rows = markdown_table_rows(section, "PGH end to end")
    assert [row[0] for row in rows] == [
        "trainer=cpu (bf16-mixed)", "trainer=cpu (32-true)", "trainer=ddp, 1 rank (gloo), 1 round",
    ]  # fmt: skip
    assert rows[1][2] == "80.00" and rows[2][1] == "failed: RuntimeError: NCCL error"
    sys.modules.pop("bench_gpu", None)
