"""PGH's losses against hand-computed values, their gradients, and the choice of negative codes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pgh.methods.pgh_losses import (
    adversarial_d_loss,
    adversarial_g_loss,
    binarize,
    negative_codes,
    quantization_loss,
    triplet_loss,
)

# 2 samples x 4 bits
H_REAL = [[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.5, 0.6]]
H_SAME = [[0.7, 0.2, 0.8, 0.1], [0.2, 0.9, 0.4, 0.6]]
H_OTHER = [[0.1, 0.9, 0.3, 0.6], [0.3, 0.6, 0.5, 0.5]]


def t(rows, grad=False):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


def test_binarize_maps_one_half_to_one():
    assert torch.equal(binarize(torch.tensor([0.0, 0.49, 0.5, 0.51, 1.0])), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))


def test_triplet_hand_computed():
    # k = 4, gamma = 0.5 -> margin gamma*k = 2
    # sample 0: |real-same|_1 = .2+.1+0+.2 = 0.5;  |real-other|_1 = .8+.8+.5+.3 = 2.4
    #           max(0, 2 - 2.4 + 0.5) = 0.1
    # sample 1: |real-same|_1 = 0+.2+.1+0 = 0.3;   |real-other|_1 = .1+.1+0+.1 = 0.3
    #           max(0, 2 - 0.3 + 0.3) = 2.0
    # mean = (0.1 + 2.0) / 2 = 1.05
    loss = triplet_loss(t(H_REAL), t(H_SAME), t(H_OTHER), gamma=0.5)
    assert loss.item() == pytest.approx(1.05)
    # gamma = 0.25 -> margin 1: sample 0: max(0, 1 - 2.4 + 0.5) = 0; sample 1: 1.0 -> mean 0.5
    assert triplet_loss(t(H_REAL), t(H_SAME), t(H_OTHER), gamma=0.25).item() == pytest.approx(0.5)


def test_triplet_is_zero_when_the_margin_is_satisfied():
    real = t([[1.0, 0.0, 1.0, 0.0]])
    # positive identical, negative the complement: 0 - 4 + 0 + gamma*4 <= 0 for every gamma <= 1
    for gamma in (0.0, 0.5, 1.0):
        assert triplet_loss(real, real.clone(), 1 - real, gamma).item() == 0.0


def test_triplet_gradients_reach_all_three_inputs():
    real, same, other = t(H_REAL, True), t(H_SAME, True), t(H_OTHER, True)
    triplet_loss(real, same, other, gamma=0.5).backward()
    for x in (real, same, other):
        assert x.grad is not None and x.grad.abs().sum() > 0
    # sample 0 is active (loss 0.1 > 0):
    # d/d same = sign(same - real) / B,  d/d other = -sign(other - real) / B
    assert torch.allclose(same.grad[0], t([-0.5, 0.5, 0.0, -0.5]))
    assert torch.allclose(other.grad[0], t([0.5, -0.5, 0.5, -0.5]))


def test_triplet_errors():
    with pytest.raises(ValueError, match="gamma"):
        triplet_loss(t(H_REAL), t(H_SAME), t(H_OTHER), gamma=-0.1)
    with pytest.raises(ValueError, match="h_other"):
        triplet_loss(t(H_REAL), t(H_SAME), t(H_OTHER)[:, :3], gamma=0.5)


def test_quantization_hand_computed():
    # H_REAL: binarize -> [[1,0,1,0],[0,1,1,1]]
    #   sample 0: .1^2+.1^2+.2^2+.3^2 = .01+.01+.04+.09 = 0.15
    #   sample 1: .2^2+.3^2+.5^2+.4^2 = .04+.09+.25+.16 = 0.54   -> mean 0.345
    # H_SAME: binarize -> [[1,0,1,0],[0,1,0,1]]
    #   sample 0: .09+.04+.04+.01 = 0.18;  sample 1: .04+.01+.16+.16 = 0.37 -> mean 0.275
    assert quantization_loss(t(H_REAL)).item() == pytest.approx(0.345)
    assert quantization_loss(t(H_REAL), t(H_SAME)).item() == pytest.approx(0.345 + 0.275)
    h = t(H_REAL, True)
    quantization_loss(h).backward()
    # d/dh mean_i sum_j (h - b)^2 = 2 (h - b) / B = (h - b) for B = 2: towards the nearer end
    assert torch.allclose(h.grad, t(H_REAL) - binarize(t(H_REAL)))
    with pytest.raises(ValueError, match="at least one"):
        quantization_loss()


def test_adversarial_losses_match_bce():
    real = torch.tensor([2.0, -1.0, 0.0])
    fake = torch.tensor([-3.0, 0.5])
    expected_d = F.binary_cross_entropy(torch.sigmoid(real), torch.ones(3)) + F.binary_cross_entropy(
        torch.sigmoid(fake), torch.zeros(2)
    )
    assert adversarial_d_loss(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    # by hand: -mean(log sigmoid(-3), log sigmoid(0.5)) = mean(softplus(3), softplus(-0.5))
    by_hand = (math.log1p(math.exp(3.0)) + math.log1p(math.exp(-0.5))) / 2
    assert adversarial_g_loss(fake).item() == pytest.approx(by_hand, rel=1e-6)


def test_negative_codes_random_is_a_seeded_derangement():
    codes = torch.zeros(7, 8, dtype=torch.bool)  # identical codes: still never j == i
    for seed in range(20):
        index = negative_codes(codes, "random", torch.Generator().manual_seed(seed))
        assert (index != torch.arange(7)).all()
        assert torch.equal(index.sort().values, torch.arange(7))  # a permutation
    a = negative_codes(codes, "random", torch.Generator().manual_seed(3))
    b = negative_codes(codes, "random", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(negative_codes(codes[:2], "random"), torch.tensor([1, 0]))


def test_negative_codes_farthest():
    codes = torch.tensor(
        [
            [0, 0, 0, 0],  # distances to 1..3: 4, 1, 2        -> 1
            [1, 1, 1, 1],  # distances: 4, -, 3, 2             -> 0
            [1, 0, 0, 0],  # distances: 1, 3, -, 1             -> 1
            [0, 0, 1, 1],  # distances: 2, 2, 3, -             -> 2
        ],
        dtype=torch.bool,
    )
    assert torch.equal(negative_codes(codes, "farthest"), torch.tensor([1, 0, 1, 2]))
    # ties go to the lowest index other than self
    assert torch.equal(negative_codes(torch.zeros(3, 4), "farthest"), torch.tensor([1, 0, 0]))


def test_negative_codes_errors():
    with pytest.raises(ValueError, match=r"'random', 'farthest'"):
        negative_codes(torch.zeros(4, 8), "nearest")
    for mode in ("random", "farthest"):
        with pytest.raises(ValueError, match="at least 2"):
            negative_codes(torch.zeros(1, 8), mode)


def test_code_target_loss_hand_computed():
    from pgh.methods.pgh_losses import code_target_loss

    h = torch.tensor([[0.9, 0.2], [0.4, 0.6]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # row 0: 0.1² + 0.2² = 0.05; row 1: 0.6² + 0.4² = 0.52; mean 0.285; two identical pairs -> 0.57
    assert code_target_loss([(h, b), (h, b)]).item() == pytest.approx(0.57)
    with pytest.raises(ValueError, match="target shape"):
        code_target_loss([(h, b[:1])])
