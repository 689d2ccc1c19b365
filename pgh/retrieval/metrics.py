"""Exact retrieval metrics over a full ranking of the database: mAP@all, mAP@K, precision@K,
precision within a Hamming radius, the precision-recall curve over Hamming radii, and the
precision@N curve over the top N retrieved (N = 1 … 1,000).

Ranking is by distance with ties broken by database order (a stable sort), as the protocol says,
or, with `tie_break="random"`, in one fixed random order of the database (seed 0): a database stored
class by class (mnist5k, a folder dataset) otherwise hands every tie to the lower label.
Each query is a handful of whole-array numpy passes over the database (popcount, a radix argsort of
the small-integer distances, a gather); queries run on a thread pool, since numpy releases the GIL
in all of those passes. There is no Python loop over database items.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pgh.retrieval.codes import pack_codes, to_numpy, warn_if_unpacked
from pgh.retrieval.hamming import as_words

if TYPE_CHECKING:
    import torch

DISTANCES = ("hamming", "spherical")
TIE_BREAKS = ("database_order", "random")
# conf/config.yaml's `eval` group; what a run's config lacks reads as these (pgh-train, round callback)
EVAL_DEFAULTS = {"map_k": 1000, "precision_k": 100, "radius": 2, "tie_break": "database_order"}
# run-config keys added after runs were made, with the value those runs had (resume checks, pgh-report)
LATER_DEFAULTS = {"eval.tie_break": "database_order"}
TIE_BREAK_SEED = 0
# where the precision@N curve is evaluated (those up to the database size): hashing papers' top-N plots
TOP_N = (1, 10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)


@dataclass
class RetrievalResult:
    """What `evaluate_packed` / `evaluate_codes` measured: `metrics` {'map_all', 'map_at_<K>',
    'precision_at_<K>', 'precision_radius_<r>'} as fractions, and the arrays below (pgh-train writes
    them as pr_curve.csv, precision_at_n.csv and per_class.csv)."""

    metrics: dict[str, float]
    pr_curve: np.ndarray  # [bits + 1, 3]: hamming radius, precision, recall (averaged over queries)
    average_precision: np.ndarray  # [num_queries] float: each query's AP over the whole database (mAP@all's terms)
    precision_at_n: np.ndarray  # [len(TOP_N) or fewer, 2]: N, precision of the top N (averaged over queries)
    # [query classes, 5]: label, queries, mAP@all, mAP@K, precision@K over the queries of that label
    per_class: np.ndarray

    def pr_curve_csv(self) -> str:
        lines = ["hamming_radius,precision,recall"]
        lines += [f"{int(r)},{p:.6f},{rc:.6f}" for r, p, rc in self.pr_curve]
        return "\n".join(lines) + "\n"

    def precision_at_n_csv(self) -> str:
        lines = ["n,precision"] + [f"{int(n)},{p:.6f}" for n, p in self.precision_at_n]
        return "\n".join(lines) + "\n"

    def per_class_csv(self, class_name: Callable[[int], str] = str) -> str:
        """label,class,queries,map_all,<mAP@K>,<precision@K>: one row per query label, the metrics
        averaged over that label's queries; `class_name` names a label (e.g. ImageDataset.class_name)."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        k_keys = [metric_key(self.metrics, prefix) for prefix in ("map_at_", "precision_at_")]
        writer.writerow(["label", "class", "queries", "map_all", *k_keys])
        for label, queries, *values in self.per_class:
            writer.writerow([int(label), class_name(int(label)), int(queries)] + [f"{v:.6f}" for v in values])
        return text.getvalue()


def metric_key(metrics: dict, prefix: str) -> str | None:
    """The key of mAP@K (prefix `map_at_`), precision@K (`precision_at_`) or the radius precision
    (`precision_radius_`) in a metrics dict, whatever the run's eval.map_k, precision_k and radius were
    (e.g. map_at_1000); SpH's plain-Hamming copies (`…_hamming`) aside. None when it has none."""
    return next((k for k in metrics if k.startswith(prefix) and not k.endswith("_hamming")), None)


def as_labels(labels: torch.Tensor | np.ndarray, codes: np.ndarray, side: str) -> np.ndarray:
    """int64 class ids [n], one per code, or a ValueError naming the side: labels that are not whole
    numbers would be cast (0.7 and 0.2 both to class 0, a float label to another class)."""
    array = to_numpy(labels)
    if array.shape != (len(codes),):
        raise ValueError(
            f"{side} labels have shape {array.shape} for {side} codes of shape {codes.shape}: give one label per code"
        )
    if array.dtype.kind == "f":  # whole, and within int64 (1e20 and 2e20 would both cast to its minimum)
        bad = array[~(np.isfinite(array) & (array == np.round(array)) & (np.abs(array) < 2.0**63))]
    elif array.dtype.kind == "u":
        bad = array[array >= 2**63]  # would wrap to negative ids
    else:
        bad = array[:0] if array.dtype.kind in "bi" else array
    if len(bad):
        raise ValueError(
            f"{side} labels must be whole numbers (class ids), got {array.dtype} values such as {bad[:3].tolist()}: "
            "map the classes to integer ids, the same for query and database"
        )
    return array.astype(np.int64)


SPHERICAL_TABLE_MAX_BITS = 1024  # up to here one rank table per evaluation ((bits + 1)² entries)


def exact_ranks(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """int64 ranks of the fractions numerator / denominator (positive denominators up to about 10⁶):
    equal fractions get equal ranks, which floating point does not promise (7 / 2.1 and 17 / 5.1)."""
    order = np.argsort(numerator / denominator, kind="stable")
    n, d = numerator[order], denominator[order]
    # distinct fractions with such denominators are far more than a float64 rounding apart, so equal
    # ones end up next to each other: compare neighbours exactly
    starts = np.concatenate([[True], n[1:] * d[:-1] != n[:-1] * d[1:]])
    ranks = np.empty_like(order)
    ranks[order] = np.cumsum(starts) - 1
    return ranks


def spherical_ranks(bits: int) -> np.ndarray:
    """int64 [bits + 1, bits + 1]: the exact rank of the spherical Hamming distance
    |a xor b| / (|a and b| + 0.1) for each pair of counts (|a xor b|, |a and b|). The + 0.1 is the
    authors' code's (Compute_SHD): codes sharing no 1-bit rank by 10x their Hamming distance, and two
    identical codes without a 1-bit are at distance 0."""
    xor, both = np.divmod(np.arange((bits + 1) ** 2, dtype=np.int64), bits + 1)
    return exact_ranks(10 * xor, 10 * both + 1).reshape(bits + 1, bits + 1)


class _QueryKernel:
    """Everything one query needs, computed from its distances to the whole database."""

    def __init__(self, db_words, db_labels, bits, distance, map_k, precision_k, top_n):
        self.db_words, self.db_labels, self.bits = db_words, db_labels, bits
        self.distance, self.map_k, self.precision_k = distance, map_k, precision_k
        self.top_n = top_n
        table = distance == "spherical" and bits <= SPHERICAL_TABLE_MAX_BITS
        self.spherical_rank = spherical_ranks(bits) if table else None

    def hamming(self, q_words: np.ndarray) -> np.ndarray:
        dtype = np.uint8 if self.bits <= 255 else np.uint16
        ham = np.bitwise_count(np.bitwise_xor(self.db_words[:, 0], q_words[0])).astype(dtype, copy=False)
        for w in range(1, self.db_words.shape[1]):
            ham += np.bitwise_count(np.bitwise_xor(self.db_words[:, w], q_words[w]))
        return ham

    def ranking_distance(self, q_words: np.ndarray, ham: np.ndarray) -> np.ndarray:
        if self.distance == "hamming":
            return ham
        both = np.bitwise_count(np.bitwise_and(self.db_words, q_words[None, :])).sum(axis=1, dtype=np.int64)
        if self.spherical_rank is not None:
            return self.spherical_rank[ham, both]
        pairs, which = np.unique(ham.astype(np.int64) * (self.bits + 1) + both, return_inverse=True)
        xor, shared = np.divmod(pairs, self.bits + 1)  # longer codes: rank this query's pairs alone
        return exact_ranks(10 * xor, 10 * shared + 1)[which]

    def __call__(self, q_words: np.ndarray, q_label: int) -> tuple[float, float, float, np.ndarray, ...]:
        """(AP@all, AP@map_k, precision@precision_k, precision and recall by radius, precision@N)."""
        ham = self.hamming(q_words)
        relevant = self.db_labels == q_label
        num_relevant = int(relevant.sum())
        order = np.argsort(self.ranking_distance(q_words, ham), kind="stable")
        ranks = np.flatnonzero(relevant[order]) + 1.0  # 1-based ranks of the relevant items
        precision_at_hits = np.arange(1, ranks.size + 1) / ranks
        ap_all = precision_at_hits.sum() / num_relevant if num_relevant else 0.0
        in_k = ranks <= self.map_k
        ap_k = precision_at_hits[in_k].mean() if in_k.any() else 0.0
        prec_k = np.count_nonzero(ranks <= self.precision_k) / min(self.precision_k, ham.size)
        prec_n = np.searchsorted(ranks, self.top_n, side="right") / self.top_n  # relevant in the top n, / n
        hist_all = np.bincount(ham, minlength=self.bits + 1).cumsum()
        hist_rel = np.bincount(ham[relevant], minlength=self.bits + 1).cumsum()
        pr_precision = hist_rel / np.maximum(hist_all, 1)
        pr_recall = hist_rel / max(num_relevant, 1)
        return ap_all, ap_k, prec_k, pr_precision, pr_recall, prec_n


def check_eval_options(bits: int, *, map_k: int, precision_k: int, radius: int, tie_break: str) -> None:
    """The evaluation's options for `bits`-bit codes, or a ValueError naming the bad one (pgh-train
    checks them before training, evaluate_packed on every call)."""
    for name, value, low, high in (
        ("map_k", map_k, 1, None),
        ("precision_k", precision_k, 1, None),
        ("radius", radius, 0, bits),
    ):
        whole = not isinstance(value, bool) and isinstance(value, (int, np.integer))
        if not whole or value < low or (high is not None and value > high):
            allowed = f"in {low}..{high}" if high is not None else f">= {low}"
            raise ValueError(f"{name} must be a whole number {allowed}, got {value!r}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break={tie_break!r} is not one of {TIE_BREAKS}")


def evaluate_packed(
    query_packed: np.ndarray,
    query_labels: torch.Tensor | np.ndarray,
    db_packed: np.ndarray,
    db_labels: torch.Tensor | np.ndarray,
    *,
    distance: str = "hamming",
    map_k: int = 1000,
    precision_k: int = 100,
    radius: int = 2,
    tie_break: str = "database_order",
    num_threads: int | None = None,
) -> RetrievalResult:
    """Evaluate packed uint8 codes [n, bits/8]; relevance is "same label".

    Items at the same distance from a query rank in database order (`tie_break="database_order"`, the
    protocol's rule) or in one fixed random order of the database (`"random"`, seed 0; the same for
    every query and every run, so a table's rows still see the same order).

    `distance="spherical"` ranks by the spherical Hamming distance |a xor b| / (|a and b| + 0.1)
    (SpH; the 0.1 as in the authors' code, for codes that share no 1-bit);
    the radius precision and the PR curve always use plain Hamming radii.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not one of {DISTANCES}")
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1
    ):
        raise ValueError(f"num_threads={num_threads!r} must be a whole number >= 1, or None for the machine's cores")
    query_packed, db_packed = to_numpy(query_packed), to_numpy(db_packed)
    for name, codes in (("query", query_packed), ("database", db_packed)):
        if codes.dtype != np.uint8 or codes.ndim != 2:
            raise ValueError(
                f"{name} codes must be packed uint8 [n, bits/8], got {codes.dtype} {list(codes.shape)}: "
                "bool or 0/1 codes [n, bits] go to evaluate_codes (or through pack_codes)"
            )
        warn_if_unpacked(codes, f"{name} codes")
    if query_packed.shape[1] != db_packed.shape[1]:
        raise ValueError(f"query codes have {8 * query_packed.shape[1]} bits, database codes {8 * db_packed.shape[1]}")
    q_labels, db_labels = as_labels(query_labels, query_packed, "query"), as_labels(db_labels, db_packed, "database")
    if db_packed.shape[0] == 0 or query_packed.shape[0] == 0:
        raise ValueError("need at least one query and one database item")
    if db_packed.shape[1] == 0:
        raise ValueError("the codes have 0 bytes: packed codes are [n, bits/8] with bits >= 8")
    bits = 8 * db_packed.shape[1]
    check_eval_options(bits, map_k=map_k, precision_k=precision_k, radius=radius, tie_break=tie_break)
    if tie_break == "random":  # a stable ranking of the shuffled database breaks ties in that order
        shuffle = np.random.default_rng(TIE_BREAK_SEED).permutation(db_packed.shape[0])
        db_packed, db_labels = db_packed[shuffle], db_labels[shuffle]
    top_n = np.array([n for n in TOP_N if n <= db_packed.shape[0]])
    kernel = _QueryKernel(as_words(db_packed), db_labels, bits, distance, map_k, precision_k, top_n)
    q_words = as_words(query_packed)

    def run(rows: range) -> list:
        return [kernel(q_words[i], q_labels[i]) for i in rows]

    n_q = q_words.shape[0]
    workers = num_threads or min(os.cpu_count() or 1, 8)
    step = max(1, -(-n_q // (4 * workers)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_query = [
            r for part in pool.map(run, [range(s, min(s + step, n_q)) for s in range(0, n_q, step)]) for r in part
        ]
    ap_all, ap_k, prec_k, pr_p, pr_r, prec_n = (np.asarray(v) for v in zip(*per_query))
    pr = np.stack([np.arange(bits + 1), pr_p.mean(0), pr_r.mean(0)], axis=1)
    metrics = {
        "map_all": float(ap_all.mean()),
        f"map_at_{map_k}": float(ap_k.mean()),
        f"precision_at_{precision_k}": float(prec_k.mean()),
        f"precision_radius_{radius}": float(pr_p[:, radius].mean()),
    }
    at_n = np.stack([top_n, prec_n.mean(0)], axis=1)
    classes, class_of_query, queries = np.unique(q_labels, return_inverse=True, return_counts=True)
    per_class = np.stack(
        [classes, queries] + [np.bincount(class_of_query, weights=v) / queries for v in (ap_all, ap_k, prec_k)], axis=1
    )
    return RetrievalResult(
        metrics=metrics, pr_curve=pr, average_precision=ap_all, precision_at_n=at_n, per_class=per_class
    )


def evaluate_codes(
    query_codes: torch.Tensor | np.ndarray,
    query_labels: torch.Tensor | np.ndarray,
    db_codes: torch.Tensor | np.ndarray,
    db_labels: torch.Tensor | np.ndarray,
    **kwargs,
) -> RetrievalResult:
    """Evaluate bool (or 0/1) codes [n, bits]; see `evaluate_packed` for the options."""
    return evaluate_packed(pack_codes(query_codes), query_labels, pack_codes(db_codes), db_labels, **kwargs)
