"""BGAN's similarity S between training images and its neighbourhood loss l_N, which BGAN
(`bgan.py`, whose docstring defines the rules) and PGH's neighbourhood term share: the kNN lists of
the training features, the `released` rule's neighbourhoods E(i), a batch's block of S looked up
from those lists (never an n x n matrix), and l_N over a batch's codes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIMILARITY_MODES = ("mutual", "either", "shared", "released")
METRICS = ("cosine", "euclidean")


def knn_indices(features: torch.Tensor, k: int, metric: str = "cosine", chunk_size: int = 1024) -> torch.Tensor:
    """The k nearest neighbours of every row of `features` [n, D] among the other rows: long [n, k],
    each row sorted by increasing distance, the row itself excluded.

    metric "cosine": d(i, j) = 1 − <x_i, x_j> / (‖x_i‖ ‖x_j‖);  "euclidean": d(i, j) = ‖x_i − x_j‖₂
    (ranked by ‖x_i‖² + ‖x_j‖² − 2<x_i, x_j>). Computed `chunk_size` query rows at a time on the
    features' device in float32, so memory is O(chunk_size · n), never O(n²).
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {METRICS}")
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D [n, D], got shape {tuple(features.shape)}")
    n = features.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k={k!r} nearest neighbours need 1 <= k < n = {n} (the number of training images)")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    x = features.float()
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    sq = x.pow(2).sum(1)
    out = torch.empty(n, k, dtype=torch.long, device=x.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        dot = x[start:stop] @ x.T
        d = -dot if metric == "cosine" else sq[start:stop, None] + sq[None, :] - 2 * dot
        rows = torch.arange(stop - start, device=x.device)
        d[rows, rows + start] = float("inf")
        out[start:stop] = d.topk(k, dim=1, largest=False, sorted=True).indices
    return out


def _membership(lists: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """bool [B, B]: M[a, b] = index[b] ∈ lists[a]  (lists [B, K])."""
    return (lists[:, None, :] == index[None, :, None]).any(-1)


def _shared_counts(lists: torch.Tensor) -> torch.Tensor:
    """long [B, B]: C[a, b] = |lists[a] ∩ lists[b]| for rows of distinct entries (lists [B, K])."""
    batch, k = lists.shape
    ordered = lists.sort(dim=1).values
    queries = lists[None, :, :].expand(batch, batch, k).reshape(batch, batch * k).contiguous()
    pos = torch.searchsorted(ordered, queries).clamp_(max=k - 1)
    hit = ordered.gather(1, pos) == queries
    return hit.view(batch, batch, k).sum(-1)


def released_lists(neighbors: torch.Tensor, k2: int) -> torch.Tensor:
    """E(i) of the `released` rule for every training image, as rows of indices padded with −1
    (long [n, L], L the largest |E(i)|), from its K1 lists `neighbors` [n, K1] (self excluded)."""
    import numpy as np
    from scipy.sparse import csr_matrix

    n, k1 = neighbors.shape
    if isinstance(k2, bool) or not isinstance(k2, int) or not 1 <= k2 <= n:
        raise ValueError(f"k2={k2!r} must be in [1, {n}] (the training images)")
    own = torch.cat([torch.arange(n, device=neighbors.device)[:, None], neighbors], 1).cpu().numpy()  # N'(i)
    members = csr_matrix((np.ones(own.size, np.int32), own.ravel(), np.arange(0, own.size + 1, k1 + 1)), (n, n))
    shared = (members @ members.T).tocsr()  # |N'(i) ∩ N'(j)|, nonzero only within two hops
    top = np.empty((n, k2), np.int64)
    for i in range(n):
        row = slice(shared.indptr[i], shared.indptr[i + 1])
        columns, counts = shared.indices[row], shared.data[row]
        order = np.lexsort((columns, -counts))[:k2]  # most shared first, ties by index
        picked = columns[order]
        if picked.size < k2:  # fewer than K2 images share any neighbour: the lowest indices with none
            rest = np.setdiff1d(np.arange(n), picked, assume_unique=True)[: k2 - picked.size]
            picked = np.concatenate([picked, rest])
        top[i] = picked
    union = torch.from_numpy(own[top].reshape(n, -1)).sort(dim=1).values
    union[:, 1:][union[:, 1:] == union[:, :-1]] = -1  # duplicates out
    union = union.sort(dim=1, descending=True).values
    width = int((union >= 0).sum(1).max())
    return union[:, :width].contiguous().to(neighbors.device)


def batch_similarity(
    neighbors: torch.Tensor,
    index: torch.Tensor,
    k1: int,
    mode: str = "mutual",
    k2: int | None = None,
    min_shared: int = 1,
) -> torch.Tensor:
    """The block S[index][:, index] (float 0/1 [B, B], symmetric, diagonal 1) of the similarity matrix
    defined by the kNN lists `neighbors` [n, K] (rows sorted nearest first, self excluded):

      mutual  S_ij = [j ∈ N_K1(i)] ∧ [i ∈ N_K1(j)]
      either  S_ij = [j ∈ N_K1(i)] ∨ [i ∈ N_K1(j)]
      shared  S_ij = ([j ∈ N_K1(i)] ∨ [i ∈ N_K1(j)]) ∧ [|N_K2(i) ∩ N_K2(j)| >= min_shared]
      S_ii = 1  (also for a repeated index in the batch).

    N_K(i) = neighbors[i, :K]. Cost O(B²·K1) comparisons (+ O(B²·K2·log K2) for "shared"). For
    "released", `neighbors` are the
    `released_lists` and `k1` their width (S_ij = [j ∈ E(i)] ∨ [i ∈ E(j)]).
    """
    if mode not in SIMILARITY_MODES:
        raise ValueError(f"similarity mode={mode!r} is not one of {SIMILARITY_MODES}")
    if neighbors.ndim != 2 or index.ndim != 1:
        raise ValueError(
            f"neighbors must be [n, K] and index [B], got {tuple(neighbors.shape)} and {tuple(index.shape)}"
        )
    if isinstance(k1, bool) or not isinstance(k1, int) or not 1 <= k1 <= neighbors.shape[1]:
        raise ValueError(f"k1={k1!r} must be in [1, {neighbors.shape[1]}] (the stored neighbours per image)")
    index = index.to(neighbors.device)
    forward = _membership(neighbors[index, :k1], index)  # j ∈ N_K1(i)
    if mode == "mutual":
        s = forward & forward.T
    else:
        s = forward | forward.T
    if mode == "shared":
        if k2 is None or isinstance(k2, bool) or not isinstance(k2, int) or not 1 <= k2 <= neighbors.shape[1]:
            raise ValueError(f"k2={k2!r} must be in [1, {neighbors.shape[1]}] (the stored neighbours per image)")
        if isinstance(min_shared, bool) or not isinstance(min_shared, int) or not 0 <= min_shared <= k2:
            raise ValueError(f"min_shared={min_shared!r} must be an integer in [0, k2={k2}]")
        s = s & (_shared_counts(neighbors[index, :k2]) >= min_shared)
    s = s | (index[:, None] == index[None, :])
    return s.float()


def neighborhood_loss(b: torch.Tensor, s: torch.Tensor, positive_weight: float = 1.0) -> torch.Tensor:
    """l_N = (1/B²) Σ_ij W_ij ((1/k)·<b_i, b_j> − S_ij)²  for codes b [B, k] in [-1, 1] and S [B, B] in
    {0, 1}, with W_ij = `positive_weight` where S_ij = 1 (the diagonal included) and 1 elsewhere.

    With positive_weight = 1 this is the paper's ‖(1/k)·B Bᵀ − S‖² averaged over the B² entries.
    With ±1 codes, (1/k)·<b_i, b_j> = 1 − 2·hamming(b_i, b_j)/k: S_ij = 1 asks for equal codes,
    S_ij = 0 for codes that differ in half of the bits. Similar pairs are a small fraction of a batch
    (about 1 % of the entries with `neighbor_pairs`), hence `positive_weight` > 1 (our choice).
    """
    if b.ndim != 2 or s.shape != (b.shape[0], b.shape[0]):
        raise ValueError(f"b must be [B, k] and s [B, B], got {tuple(b.shape)} and {tuple(s.shape)}")
    if not positive_weight >= 0:
        raise ValueError(f"positive_weight={positive_weight!r} must be >= 0")
    s = s.to(b.dtype)
    squared = (b @ b.T / b.shape[1] - s).pow(2)
    if positive_weight != 1:
        squared = squared * (1 + (positive_weight - 1) * s)
    return squared.mean()
