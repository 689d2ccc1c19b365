"""GistFeatures against an independent NumPy port of Torralba's LMgist.m, plus basic properties."""

import numpy as np
import pytest
import torch

from pgh.features.gist import GistFeatures


def _images(n, c=1, size=(28, 28), seed=0):
    return torch.randint(0, 256, (n, c, *size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ---- reference: plain NumPy, float64, written from the MATLAB code ----------------------------
def ref_create_gabor(ors, n):
    params = [[0.35, 0.3 / 1.85**i, 16 * o**2 / 32**2, np.pi / o * j] for i, o in enumerate(ors) for j in range(o)]
    fx, fy = np.meshgrid(np.arange(n) - n / 2, np.arange(n) - n / 2)  # -n/2:n/2-1
    fr = np.fft.fftshift(np.sqrt(fx**2 + fy**2))
    t = np.fft.fftshift(np.angle(fx + 1j * fy))
    G = []
    for p in params:
        tr = t + p[3]
        tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
        G.append(np.exp(-10 * p[0] * (fr / n / p[1] - 1) ** 2 - 2 * p[2] * np.pi * tr**2))
    return G


def ref_imresizecrop(img, m):  # MATLAB imresize 'bilinear' (antialiased when shrinking), crop
    def weights(n, m):
        sc = m / n
        k = min(sc, 1)
        a = np.zeros((m, n))
        for i in range(m):
            u = (i + 1) / sc + 0.5 * (1 - 1 / sc)
            left = np.floor(u - 1 / k)
            for j in left + np.arange(int(np.ceil(2 / k)) + 2):
                jj = int(j - 1) % (2 * n)  # out-of-range taps mirrored ('symmetric')
                a[i, jj if jj < n else 2 * n - 1 - jj] += k * max(0, 1 - abs(k * (u - j)))
        return a / a.sum(1, keepdims=True)

    sc = max(m / img.shape[0], m / img.shape[1])
    nr, nc = (int(np.floor(d * sc + 0.5)) for d in img.shape)
    img = weights(img.shape[0], nr) @ img @ weights(img.shape[1], nc).T
    return img[(nr - m) // 2 : (nr - m) // 2 + m, (nc - m) // 2 : (nc - m) // 2 + m]


def ref_prefilt(img, fc=4):
    w, s1 = 5, fc / np.sqrt(np.log(2))
    img = np.pad(np.log(img + 1), w, mode="symmetric")
    sn = img.shape[0]
    n = sn + sn % 2
    img = np.pad(img, ((0, n - sn), (0, n - sn)), mode="symmetric")
    fx, fy = np.meshgrid(np.arange(-n // 2, n // 2), np.arange(-n // 2, n // 2))
    gf = np.fft.fftshift(np.exp(-(fx**2 + fy**2) / s1**2))
    out = img - np.real(np.fft.ifft2(np.fft.fft2(img) * gf))
    localstd = np.sqrt(np.abs(np.fft.ifft2(np.fft.fft2(out**2) * gf)))
    out = out / (0.2 + localstd)
    return out[w : sn - w, w : sn - w]


def ref_gist(img, size=32, ors=(8, 8, 8, 8), nblocks=4, be=32):
    img = img.astype(np.float64)
    if img.shape != (size, size):
        img = ref_imresizecrop(img, size)
    img = img - img.min()
    img = 255 * img / img.max()
    out = ref_prefilt(img)
    G = ref_create_gabor(ors, size + 2 * be)
    spec = np.fft.fft2(np.pad(out, be, mode="symmetric"))
    edges = np.fix(np.linspace(0, size, nblocks + 1)).astype(int)
    g = []
    for filt in G:
        ig = np.abs(np.fft.ifft2(spec * filt))[be : be + size, be : be + size]
        v = np.zeros((nblocks, nblocks))
        for xx in range(nblocks):
            for yy in range(nblocks):
                v[xx, yy] = ig[edges[xx] : edges[xx + 1], edges[yy] : edges[yy + 1]].mean()
        g.extend(v.flatten(order="F"))  # MATLAB v(:)
    return np.array(g)


# ---- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size,image_size,nblocks",
    [((28, 28), 32, 4), ((45, 45), 32, 4), ((27, 27), 27, 3), ((24, 41), 30, 4)],
)
def test_matches_numpy_reference(size, image_size, nblocks):
    imgs = _images(2, size=size, seed=size[1])
    gist = GistFeatures(image_size=image_size, number_blocks=nblocks, device="cpu")(imgs).numpy()
    for i in range(2):
        ref = ref_gist(imgs[i, 0].numpy(), size=image_size, nblocks=nblocks)
        np.testing.assert_allclose(gist[i], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_shape_dtype_finite():
    g = GistFeatures(device="cpu")
    assert g.dim == 512
    f = g(_images(5))
    assert f.shape == (5, 512) and f.dtype == torch.float32 and torch.isfinite(f).all()
    const = torch.full((2, 1, 28, 28), 7, dtype=torch.uint8)  # constant image: zeros, not NaN
    assert torch.equal(g(const), torch.zeros(2, 512))
    edge = torch.full((1, 1, 32, 48), 7, dtype=torch.uint8)
    edge[..., 0] = 200  # varies only in a column the centre crop to 32 x 32 cuts off: zeros too (was NaN)
    assert torch.equal(GistFeatures(image_size=32, device="cpu")(edge), torch.zeros(1, 512))


def test_batch_equals_single():
    imgs = _images(6, c=3, seed=1)
    g = GistFeatures(device="cpu", batch_size=4)
    batch = g(imgs)
    for i in range(6):
        single = g(imgs[i : i + 1])[0]
        torch.testing.assert_close(batch[i], single, rtol=1e-4, atol=1e-4 * batch[i].abs().max())


def test_colour_is_gist_of_channel_mean():
    grey = torch.randint(20, 236, (3, 1, 28, 28), generator=torch.Generator().manual_seed(2))
    d = torch.randint(-20, 21, (3, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    colour = torch.cat([grey + d, grey - d, grey], dim=1)  # mean over channels == grey exactly
    g = GistFeatures(device="cpu")
    torch.testing.assert_close(g(colour.to(torch.uint8)), g(grey.to(torch.uint8)), rtol=1e-4, atol=1e-5)


def test_per_channel():
    colour = _images(2, c=3, seed=4)
    pc = GistFeatures(per_channel=True, device="cpu")
    grey = GistFeatures(device="cpu")
    assert pc.dim == 1536
    f = pc(colour)
    assert f.shape == (2, 1536)
    for c in range(3):
        torch.testing.assert_close(f[:, 512 * c : 512 * (c + 1)], grey(colour[:, c : c + 1]))
    f1 = pc(colour[:, :1])  # grey input: its grey GIST repeated for R, G, B
    torch.testing.assert_close(f1, grey(colour[:, :1]).repeat(1, 3))


def test_horizontal_stripes_one_orientation():
    rows = 128 + 100 * np.sin(2 * np.pi * np.arange(32) / 8)
    img = torch.tensor(np.tile(rows[:, None], (1, 32)), dtype=torch.uint8)[None, None]
    f = GistFeatures(device="cpu")(img).reshape(4, 8, 16)  # scale, orientation, block
    energy = f.sum(dim=(0, 2))
    assert energy.argmax() == 4  # fy-only spectrum: the filter with orientation pi/2
    assert energy[4] > 2 * energy[[0, 1, 2, 3, 5, 6, 7]].max()


def test_invalid_inputs():
    with pytest.raises(ValueError, match="at least 8x8"):
        GistFeatures(device="cpu")(_images(1, size=(6, 28)))
    with pytest.raises(ValueError, match="orientations_per_scale"):
        GistFeatures(orientations_per_scale=[8, 0], device="cpu")
    with pytest.raises(ValueError, match="number_blocks"):
        GistFeatures(number_blocks=0, device="cpu")
    with pytest.raises(ValueError, match="per_channel"):
        GistFeatures(per_channel=True, device="cpu")(_images(1, c=4))
    with pytest.raises(ValueError, match=r"no images to extract features from: images has shape \(0, 1, 28, 28\)"):
        GistFeatures(device="cpu")(_images(1)[:0])
