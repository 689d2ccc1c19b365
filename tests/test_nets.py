"""G, D and H: shapes for every supported image size and channel count, output ranges,
conditioning on the code, DCGAN initialisation, batched encoding, and the errors of misuse."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgh.nets import SUPPORTED_IMAGE_SIZES, Discriminator, Generator, HashNet, dcgan_init

BITS, Z, WIDTH = 16, 8, 8  # small nets: these tests check wiring, not capacity


def codes(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (batch, BITS), generator=torch.Generator().manual_seed(seed)).bool()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SUPPORTED_IMAGE_SIZES)
def test_shapes_and_ranges(size, channels):
    g = Generator(BITS, z_dim=Z, channels=channels, image_size=size, width=WIDTH)
    d = Discriminator(BITS, channels=channels, image_size=size, width=WIDTH)
    h = HashNet(BITS, channels=channels, image_size=size, width=WIDTH, hidden=32)
    b = codes(3)
    x = g(torch.randn(3, Z), b)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    logits = d(x, b)
    assert logits.shape == (3,)
    assert d.features(x).shape == (3, d.feature_dim)
    probs = h(x)
    assert probs.shape == (3, BITS) and (probs > 0).all() and (probs < 1).all()
    # everything is differentiable end to end
    (logits.sum() + probs.sum()).backward()
    assert all(p.grad is not None for p in g.parameters())


@pytest.mark.parametrize("norm", ["batch", "spectral"])
def test_discriminator_depends_on_the_code(norm):
    d = Discriminator(BITS, image_size=28, width=WIDTH, norm=norm).eval()
    x = torch.randn(4, 1, 28, 28)
    b = codes(4)
    flipped = b.clone()
    flipped[:, 0] = ~flipped[:, 0]
    with torch.no_grad():
        assert not torch.allclose(d(x, b), d(x, flipped))


def test_generator_depends_on_the_code_and_accepts_float_codes():
    g = Generator(BITS, z_dim=Z, image_size=28, width=WIDTH).eval()
    z, b = torch.randn(2, Z), codes(2)
    with torch.no_grad():
        assert torch.equal(g(z, b), g(z, b.float()))
        assert not torch.allclose(g(z, b), g(z, ~b))


def test_dcgan_init():
    torch.manual_seed(0)
    g = Generator(BITS, image_size=64, width=16)
    convs = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(convs.mean()) < 0.002 and abs(convs.std() - 0.02) < 0.002
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean() - 1) < 0.01 and abs(bn.std() - 0.02) < 0.01
    layer = dcgan_init(nn.Conv2d(3, 4, 3))
    assert torch.equal(layer.bias, torch.zeros(4))
    # re-initialising a spectral-norm discriminator reaches the unnormalised weights
    d = Discriminator(BITS, width=WIDTH, norm="spectral")
    before = d.linear.parametrizations.weight.original.clone()
    dcgan_init(d)
    assert not torch.equal(before, d.linear.parametrizations.weight.original)
    # under DDP (trainer=ddp's sync_batchnorm) the batch norms are SyncBatchNorm: re-initialised too,
    # running statistics included (reset_gan_each_round left them as trained)
    g = nn.SyncBatchNorm.convert_sync_batchnorm(Generator(BITS, width=WIDTH))
    norms = [m for m in g.modules() if isinstance(m, nn.SyncBatchNorm)]
    for m in norms:
        m.weight.data.fill_(7.0), m.running_mean.fill_(3.0), m.num_batches_tracked.fill_(5)
    dcgan_init(g)
    assert all(abs(m.weight.mean() - 1) < 0.1 and not m.running_mean.any() for m in norms)
    assert all(m.num_batches_tracked == 0 for m in norms)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Generator(BITS, image_size=48),
        lambda: Discriminator(BITS, image_size=16),
        lambda: HashNet(BITS, image_size=224),
    ],
)
def test_bad_image_size_names_the_supported_ones(make):
    with pytest.raises(ValueError, match=r"image_size=.*\(28, 32, 64\)"):
        make()


def test_misuse_errors():
    with pytest.raises(ValueError, match="channels"):
        Generator(BITS, channels=2)
    with pytest.raises(ValueError, match="norm"):
        Discriminator(BITS, norm="layer")
    with pytest.raises(ValueError, match="bits"):
        HashNet(0)
    d = Discriminator(BITS, width=WIDTH)
    with pytest.raises(ValueError, match=r"code b must have shape \[2, 16\]"):
        d(torch.zeros(2, 1, 28, 28), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        d(torch.zeros(2, 3, 28, 28), codes(2))
    with pytest.raises(ValueError, match="z must have shape"):
        Generator(BITS, z_dim=Z, width=WIDTH)(torch.zeros(2, Z + 1), codes(2))


def test_encode_is_bool_batched_consistent_and_restores_mode():
    h = HashNet(BITS, image_size=28, width=WIDTH, hidden=32)
    x = torch.randn(10, 1, 28, 28)
    with torch.no_grad():
        h(x)  # one training-mode pass moves the BatchNorm running statistics off their defaults
    whole = h.encode(x, batch_size=100)
    assert whole.dtype == torch.bool and whole.shape == (10, BITS)
    assert torch.equal(whole, h.encode(x, batch_size=3))
    assert h.training  # encode ran in eval mode and put the network back
    with torch.no_grad():
        assert torch.equal(whole, h.eval()(x) >= 0.5)
    assert h.encode(x[:0]).shape == (0, BITS)


def last_linear(net: nn.Module) -> nn.Linear:
    return [m for m in net.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("name", ["HashNet", "DeepBitNet", "HashMLP"])
def test_last_activation_keeps_its_gradient_under_bf16_autocast(name):
    """Under bf16-mixed the last linear layer gives bfloat16 logits; a bfloat16 sigmoid is exactly 1
    from a logit of about 5.6 on (tanh: ±1 from 3.4), with no gradient, so the nets take it in float32."""
    from pgh.nets import DeepBitCNN, DeepBitNet, HashMLP

    torch.manual_seed(0)
    images = torch.rand(4, 1, 28, 28)
    if name == "HashNet":
        net, x, saturating = HashNet(BITS, channels=1, image_size=28, width=WIDTH, hidden=16), images, 8.0
    elif name == "DeepBitNet":
        net, x, saturating = DeepBitNet(DeepBitCNN(), DeepBitCNN().feature_dim, BITS), images, 8.0
    else:
        net, x, saturating = HashMLP(10, [16], BITS), torch.randn(4, 10), 4.0
    layer = last_linear(net)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(saturating)  # every bit's logit: where the bfloat16 activation is flat
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = net(x)
    assert h.dtype == torch.float32
    expected = torch.sigmoid(torch.tensor(saturating)) if name != "HashMLP" else torch.tanh(torch.tensor(saturating))
    assert torch.allclose(h, expected.expand_as(h)) and (h < 1).all()
    h.sum().backward()
    assert (layer.bias.grad > 0).all()
