"""The neighbourhood vote (pgh.hashing.vote): kNN against a brute-force reference, the majority by
hand, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgh.hashing.vote import majority_vote, nearest_neighbors, own_neighbors


def test_nearest_neighbors_match_a_brute_force_sort():
    gen = torch.Generator().manual_seed(0)
    points, queries = torch.randn(300, 7, generator=gen), torch.randn(40, 7, generator=gen)
    distances = ((queries.numpy()[:, None, :] - points.numpy()[None]) ** 2).sum(-1)
    expected = np.argsort(distances, axis=1, kind="stable")[:, :5]
    assert np.array_equal(nearest_neighbors(queries, points, 5, chunk=16).numpy(), expected)
    own = nearest_neighbors(points, points, 3, chunk=64)
    assert own.dtype == torch.int64 and torch.equal(own[:, 0], torch.arange(300))  # itself first


def test_own_neighbors_put_each_point_first_then_its_nearest_others():
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(200, 5, generator=gen)
    distances = ((points.numpy()[:, None, :] - points.numpy()[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, -1)
    expected = np.argsort(distances, axis=1, kind="stable")[:, :4]
    assert np.array_equal(own_neighbors(points, 3, chunk=32).numpy(), expected)
    # exact duplicates (blank images): plain kNN may put another copy first and leave the point out
    copies = torch.zeros(5, 3)
    assert not all(i in row for i, row in enumerate(nearest_neighbors(copies, copies, 3).tolist()))
    assert own_neighbors(copies, 2)[:, 0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"k=5 must be in 1\.\.4 \(the number of other points\)"):
        own_neighbors(copies, 5)


def test_majority_vote_by_hand():
    codes = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    neighbors = torch.tensor([[0, 1, 2], [1, 0, 3], [2, 3, 1], [3, 2, 0]])
    once = majority_vote(codes, neighbors)
    # row 0 votes over codes 0, 1, 2: bits (1+1+0, 0+1+1, 1+0+0) of 3 -> 1, 1, 0
    expected = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert torch.equal(once, expected)
    assert torch.equal(majority_vote(codes, neighbors, iterations=2), majority_vote(once, neighbors))
    # an even number of voters: a tie gives 1
    assert majority_vote(codes[:2], torch.tensor([[0, 1], [1, 0]])).tolist() == [[True, True, True]] * 2


def test_vote_errors():
    codes = torch.zeros(4, 8, dtype=torch.bool)
    assert majority_vote(codes, torch.zeros(3, 2, dtype=torch.long)).shape == (3, 8)  # new items' neighbours
    with pytest.raises(ValueError, match="needs the codes' own graph: neighbors has 3 rows for 4 codes"):
        majority_vote(codes, torch.zeros(3, 2, dtype=torch.long), iterations=2)
    with pytest.raises(ValueError, match=r"neighbors \[m, k\]"):
        majority_vote(codes, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        majority_vote(codes, torch.zeros(4, 2, dtype=torch.long), iterations=0)
    with pytest.raises(ValueError, match=r"k=5 must be in 1\.\.4"):
        nearest_neighbors(torch.randn(2, 3), torch.randn(4, 3), 5)
    with pytest.raises(ValueError, match="must be \\[n, d\\] and \\[m, d\\]"):
        nearest_neighbors(torch.randn(2, 3), torch.randn(4, 2), 1)
