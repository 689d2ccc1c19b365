"""Neighbourhood vote: refine binary codes along the k-nearest-neighbour graph of their images'
features, each code becoming the bitwise majority of its own and its neighbours' codes.

PGH's code refresh can apply it (`method.progressive.vote_neighbors`), and
`benchmarks/diag_pgh_ceilings.py smooth` measures what it does to shallow codes alone.
"""

from __future__ import annotations

import torch


def nearest_neighbors(queries: torch.Tensor, points: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Indices int64 [n, k] of each query's k nearest points (Euclidean), nearest first.

    A query that is also among the points finds itself first unless an exact duplicate of it comes
    first (`own_neighbors` keeps each point first). Computed `chunk` queries at a time on the points'
    device, in float32.
    """
    if queries.ndim != 2 or points.ndim != 2 or queries.shape[1] != points.shape[1]:
        raise ValueError(
            f"queries and points must be [n, d] and [m, d], got {tuple(queries.shape)}, {tuple(points.shape)}"
        )
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"k={k} must be in 1..{points.shape[0]} (the number of points)")
    points = points.float()
    queries = queries.to(points.device, torch.float32)
    return torch.cat([torch.cdist(q, points).topk(k, largest=False).indices for q in queries.split(chunk)]).cpu()


def own_neighbors(points: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Indices int64 [n, k + 1]: each point itself, then its k nearest other points (Euclidean),
    nearest first: the vote's graph, in which every code keeps its own say. (`nearest_neighbors` of
    the points among themselves may put an exact duplicate first and leave the point out.)"""
    if points.ndim != 2:
        raise ValueError(f"points must be [n, d], got {tuple(points.shape)}")
    if not 1 <= k < points.shape[0]:
        raise ValueError(f"k={k} must be in 1..{points.shape[0] - 1} (the number of other points)")
    points = points.float()
    rows = []
    for start in range(0, points.shape[0], chunk):
        distances = torch.cdist(points[start : start + chunk], points)
        own = torch.arange(distances.shape[0], device=points.device)
        distances[own, own + start] = -1.0  # below every distance: itself first, whatever its duplicates
        rows.append(distances.topk(k + 1, largest=False).indices)
    return torch.cat(rows).cpu()


def majority_vote(codes: torch.Tensor, neighbors: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """bool codes [m, bits]: row i := the bitwise majority of codes[neighbors[i]] (a tie gives 1).

    `neighbors` [m, k] indexes rows of `codes` [n, bits]: the codes' own graph (m = n; include i
    itself to keep its say), which `iterations` > 1 applies repeatedly, or new items' neighbours
    among them (any m), which codes the new items.
    """
    if codes.ndim != 2 or neighbors.ndim != 2:
        raise ValueError(
            f"codes must be [n, bits] and neighbors [m, k], got {tuple(codes.shape)}, {tuple(neighbors.shape)}"
        )
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if iterations > 1 and neighbors.shape[0] != codes.shape[0]:
        raise ValueError(
            f"iterations > 1 needs the codes' own graph: neighbors has {neighbors.shape[0]} rows for "
            f"{codes.shape[0]} codes"
        )
    votes = codes.bool()
    for _ in range(iterations):
        votes = votes[neighbors].float().mean(1) >= 0.5
    return votes
