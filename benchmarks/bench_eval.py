"""`make bench-eval`: exact mAP@all of 1,000 queries over 1,000,000 random 64-bit codes, and FAISS
top-100 search over the same codes, timed. Writes benchmarks/eval.md."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, markdown_table, timed_faiss_search

from pgh.io import write_text
from pgh.retrieval import evaluate_packed
from pgh.retrieval.index import gpu_available

N_DB, N_Q, BITS, CLASSES, TARGET_S = 1_000_000, 1_000, 64, 10, 10.0


def main() -> None:
    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, (N_DB, BITS // 8), dtype=np.uint8)
    q = rng.integers(0, 256, (N_Q, BITS // 8), dtype=np.uint8)
    db_labels, q_labels = rng.integers(0, CLASSES, N_DB), rng.integers(0, CLASSES, N_Q)

    rows = []
    t0 = time.perf_counter()
    result = evaluate_packed(q, q_labels, db, db_labels)
    exact = time.perf_counter() - t0
    verdict = "meets" if exact <= TARGET_S else "MISSES"
    rows.append(
        [
            "exact mAP@all + mAP@1000 + P@100 + P@r2 + PR curve (numpy, all cores)",
            f"{exact:.2f}",
            f"{verdict} the {TARGET_S:.0f} s target; mAP@all {result.metrics['map_all']:.4f} (chance 0.1)",
        ]
    )

    for use_gpu in [False] + ([True] if gpu_available() else []):
        build, search, _ = timed_faiss_search(db, q, BITS, use_gpu)
        where = "GPU" if use_gpu else "CPU"
        rows.append([f"FAISS IndexBinaryFlat top-100 search ({where})", f"{search:.2f}", f"index build {build:.2f} s"])

    text = (
        "# Evaluation benchmark (`make bench-eval`)\n\n"
        f"{N_Q:,} queries over {N_DB:,} random {BITS}-bit database codes, {CLASSES} random labels.\n\n"
        f"Machine: {machine()}\n\n" + markdown_table(["what", "seconds", "note"], rows)
    )
    out = Path(__file__).parent / "eval.md"
    write_text(out, text)
    print(text)


if __name__ == "__main__":
    main()
