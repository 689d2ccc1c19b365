"""One parametrised test over every registered shallow hasher: shape, determinism, balance,
out-of-sample encoding, and the errors of misuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgh.hashing import HASHERS, ITQ, LSH


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
    # torch's "can't convert np.ndarray of type numpy.str_" / "manual_seed expected a long" before
    with pytest.raises(TypeError, match=r"^features must be numbers \(a float \[n, dim\] array or tensor\), got <U"):
        hasher.encode(x.numpy().astype(str))
    for seed in (None, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"^seed={seed!r} must be a whole number in 0..2\*\*32 - 1"):
            HASHERS[name](bits=16, seed=seed)
    assert torch.equal(hasher.encode(x.numpy().tolist()), hasher.encode(x))  # lists and arrays of numbers


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_codes_do_not_move_with_the_features_origin(name, blobs):
    """Every hasher centres its features (LSH's and ITQ's projections, SH's and SpH's geometry): the
    same data shifted by a constant gets the same codes (but for rounding: ITQ's 50 iterations move
    5 of the 9,600 bits)."""
    x = blobs[0].double()
    codes = HASHERS[name](bits=16, seed=1).fit(x).encode(x)
    assert (HASHERS[name](bits=16, seed=1).fit(x + 50).encode(x + 50) == codes).float().mean() > 0.999


def test_itq_rotation_is_orthogonal_and_reduces_quantization_loss(blobs):
    x, _ = blobs
    itq = ITQ(bits=16, iterations=50).fit(x)
    r = itq.rotation
    assert torch.allclose(r @ r.T, torch.eye(16, dtype=r.dtype), atol=1e-10)
    assert itq.quantization_loss[-1] < itq.quantization_loss[0]
    assert all(b <= a + 1e-6 for a, b in zip(itq.quantization_loss, itq.quantization_loss[1:]))
    # the codes are the signs of the rotated PCA projections (numpy's PCA: the same subspace), the
    # codes whose quantisation loss the fit drove down
    centred = (x - x.mean(0)).double().numpy()
    top = np.linalg.eigh(np.cov(centred, rowvar=False))[1][:, ::-1][:, :16]
    pcs = itq.pcs.numpy()
    assert np.allclose(pcs @ pcs.T, top @ top.T, atol=1e-5)  # float32 features
    rotated = centred @ pcs @ r.numpy()
    signs = np.where(itq.encode(x).numpy(), 1.0, -1.0)
    assert np.array_equal(signs, np.where(rotated >= 0, 1.0, -1.0))
    assert ((signs - rotated) ** 2).sum() <= itq.quantization_loss[-1] * (1 + 1e-6)


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_a_saved_hasher_codes_new_features_exactly_as_the_fitted_one(name, blobs, tmp_path):
    from pgh.hashing import load_hasher

    x, _ = blobs
    fitted = HASHERS[name](bits=16, seed=1).fit(x[:400])
    fitted.save(tmp_path / "hasher.pt")
    loaded = load_hasher(tmp_path / "hasher.pt")
    assert type(loaded) is type(fitted) and (loaded.bits, loaded.seed, loaded.dim) == (16, 1, 40)
    assert torch.equal(loaded.encode(x[400:]), fitted.encode(x[400:]))  # features it never saw
    assert loaded.distance == fitted.distance
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left


def test_saved_hasher_errors(blobs, tmp_path):
    from pgh.hashing import LSH, load_hasher

    x, _ = blobs
    with pytest.raises(RuntimeError, match="ITQ is not fitted: there is no state to save"):
        ITQ(bits=16).save(tmp_path / "unfitted.pt")
    state = ITQ(bits=16).fit(x).state_dict()
    with pytest.raises(ValueError, match="the state was saved by ITQ, not by LSH"):
        LSH(bits=16).load_state_dict(state)
    with pytest.raises(ValueError, match="the state has 16 bits, this ITQ has 32"):
        ITQ(bits=32).load_state_dict(state)
    del state["tensors"]["rotation"]
    with pytest.raises(ValueError, match="the ITQ state lacks rotation"):
        ITQ(bits=16).load_state_dict(state)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a saved shallow hasher"):
        load_hasher(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a hasher")  # torch's own error was KeyError: 101
    with pytest.raises(ValueError, match=r"text.pt is not a saved shallow hasher \(not a PyTorch file: \w+\)"):
        load_hasher(tmp_path / "text.pt")
    # a hasher of one's own is found by the module its file names, or named when that does not import
    state = LSH(bits=16).fit(x).state_dict()
    torch.save({**state, "hasher": "MyLSH", "module": "no_such_module"}, tmp_path / "mine.pt")
    with pytest.raises(ValueError, match=r"mine.pt holds a no_such_module.MyLSH, which cannot be imported here"):
        load_hasher(tmp_path / "mine.pt")
    torch.save({**state, "hasher": "BlobsLSH", "module": __name__}, tmp_path / "mine.pt")
    assert torch.equal(load_hasher(tmp_path / "mine.pt").encode(x), LSH(bits=16).fit(x).encode(x))


def test_a_saved_state_naming_a_class_that_is_no_hasher_is_refused(blobs, tmp_path):
    """The module a file names is imported, but only a ShallowHasher it holds is built: any other class
    (here pathlib.Path) was called with the state's bits and seed."""
    from pgh.hashing import load_hasher

    state = LSH(bits=16).fit(blobs[0]).state_dict()
    torch.save({**state, "hasher": "Path", "module": "pathlib"}, tmp_path / "path.pt")
    with pytest.raises(ValueError, match=r"path.pt is not a saved shallow hasher \(one of .*, or a ShallowHasher's\)"):
        load_hasher(tmp_path / "path.pt")


class BlobsLSH(LSH):
    """A hasher defined outside pgh (here: in this test module)."""


@pytest.mark.parametrize("iterations", [2.5, -1, True])
def test_itq_iterations_are_a_whole_number(iterations):
    # 2.5 passed the old `< 0` check and failed in range() after the features were computed
    with pytest.raises(ValueError, match=rf"iterations must be a whole number >= 0, got {iterations!r}"):
        ITQ(bits=16, iterations=iterations)
