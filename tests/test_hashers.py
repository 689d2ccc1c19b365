"""One parametrised test over every registered shallow hasher: shape, determinism, balance,
out-of-sample encoding, and the errors of misuse."""

from __future__ import annotations

import pytest
import torch

from pgh.hashing import HASHERS, ITQ


@pytest.fixture(scope="module")
def blobs():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 40, generator=gen) * 4
    labels = torch.arange(600) % 6
    return centres[labels] + torch.randn(600, 40, generator=gen), labels


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_hasher_contract(name, blobs):
    x, _ = blobs
    codes = HASHERS[name](bits=16, seed=1).fit(x).encode(x)
    assert codes.dtype == torch.bool and codes.shape == (600, 16)
    again = HASHERS[name](bits=16, seed=1).fit(x).encode(x)
    assert torch.equal(codes, again)
    # no bit is constant, and on average the bits are not far from balanced
    ones = codes.float().mean(0)
    assert (ones > 0).all() and (ones < 1).all()
    assert (ones - 0.5).abs().mean() < 0.3
    # encoding is per sample: a sub-batch gets the same codes
    assert torch.equal(HASHERS[name](bits=16, seed=1).fit(x).encode(x[:7]), codes[:7])


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_hasher_misuse(name, blobs):
    x, _ = blobs
    hasher = HASHERS[name](bits=16)
    with pytest.raises(RuntimeError, match="not fitted"):
        hasher.encode(x)
    with pytest.raises(ValueError, match="multiple of 8"):
        HASHERS[name](bits=10)
    hasher.fit(x)
    with pytest.raises(ValueError, match="40-d"):
        hasher.encode(x[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        hasher.encode(torch.full((2, 40), float("nan")))


def test_itq_rotation_is_orthogonal_and_reduces_quantization_loss(blobs):
    x, _ = blobs
    itq = ITQ(bits=16, iterations=50).fit(x)
    r = itq.rotation
    assert torch.allclose(r @ r.T, torch.eye(16, dtype=r.dtype), atol=1e-10)
    assert itq.quantization_loss[-1] < itq.quantization_loss[0]
    assert all(b <= a + 1e-6 for a, b in zip(itq.quantization_loss, itq.quantization_loss[1:]))
