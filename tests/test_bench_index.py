"""benchmarks/bench_index.py (`make bench-index`) at toy sizes: it writes both collections, times
`encode_files` with every worker count, and writes its table where --out says."""

from __future__ import annotations

from pathlib import Path

from conftest import run_python

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_index.py"


def test_quick_run_times_both_collections_with_every_worker_count(tmp_path):
    done = run_python(str(SCRIPT), "--quick", "--out", str(tmp_path / "index.md"), tmp_path=tmp_path)
    lines = [line for line in (tmp_path / "index.md").read_text().splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("| ").split("|")] for line in lines[1:]]
    assert {row[0] for row in rows} == {"200 PNGs, 28 px", "50 JPEGs, 256 px"}
    assert {row[2] for row in rows} >= {"0", "1", "2"}  # --workers
    assert all(float(row[5].replace(",", "")) > 0 for row in rows)  # images / s
    assert "toy sizes, the numbers mean nothing" in done.stdout
