"""Pixels, VGG16 fc7 (random weights only when asked), the weights-file loading path, and the
feature cache's keying."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch

from pgh.data import ImageDataset
from pgh.features import PixelFeatures, VGG16FC7Features, cached_features
from pgh.features.base import resolve_device


def test_pixels_are_scaled_and_flat():
    images = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    feats = PixelFeatures(batch_size=1)(images.repeat(3, 1, 1, 1))
    assert feats.shape == (3, 4) and feats.dtype == torch.float32
    assert torch.allclose(feats[0], torch.tensor([0.0, 1.0, 0.2, 0.4]))


def test_extractor_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        PixelFeatures()(torch.zeros(2, 1, 4, 4))


def test_extractor_refuses_an_empty_batch_of_images():
    """No images: torch.cat of no batches failed with "expected a non-empty list of Tensors"."""
    with pytest.raises(ValueError, match=r"^no images to extract features from: images has shape \(0, 1, 8, 8\)$"):
        PixelFeatures()(torch.zeros(0, 1, 8, 8, dtype=torch.uint8))


def test_vgg_missing_weights_is_an_error_not_a_random_network(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained=false"):
        VGG16FC7Features(weights=str(tmp_path / "vgg16.pth"))


def test_a_wrong_weights_file_is_named_with_what_is_wrong(tmp_path):
    """A garbage file gave torch's UnpicklingError suggesting weights_only=False, another network's
    weights a list of every missing key, a directory "not found"."""
    from pgh.features.vgg import load_vgg16_weights, vgg16_weights_path

    with pytest.raises(FileNotFoundError, match=r"VGG16 weights is a directory, not a file: .* features.weights=PATH"):
        vgg16_weights_path(str(tmp_path), "features")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))  # stands in for VGG16
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage.pth is not a PyTorch weights file \(\w+\); give torchvision's"):
        load_vgg16_weights(model, tmp_path / "garbage.pth")
    torch.save(torch.nn.Linear(4, 3).state_dict(), tmp_path / "other.pth")
    with pytest.raises(
        ValueError, match=r"other.pth does not hold torchvision's VGG16 weights \(4 of its 4 .*; 2 other"
    ):
        load_vgg16_weights(model, tmp_path / "other.pth")
    torch.save({k: v[:1] for k, v in model.state_dict().items()}, tmp_path / "shapes.pth")
    with pytest.raises(ValueError, match=r"shapes.pth: 4 tensors have other shapes than VGG16's"):
        load_vgg16_weights(model, tmp_path / "shapes.pth")
    torch.save(model.state_dict(), tmp_path / "right.pth")
    load_vgg16_weights(model, tmp_path / "right.pth")


def test_vgg_random_weights_when_asked():
    torch.manual_seed(0)
    extractor = VGG16FC7Features(pretrained=False, image_size=32, device="cpu")
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    feats = extractor(images)
    assert feats.shape == (3, 4096) and torch.isfinite(feats).all() and (feats >= 0).all()  # after ReLU
    # grey input is the same as the grey image repeated over three channels
    assert torch.allclose(extractor(images.repeat(1, 3, 1, 1)), feats, atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        extractor(torch.zeros(1, 2, 28, 28, dtype=torch.uint8))


@pytest.mark.slow
def test_vgg_loads_a_weights_file(tmp_path):
    from torchvision.models import vgg16

    torch.manual_seed(1)
    reference = vgg16(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "vgg16.pth")
    extractor = VGG16FC7Features(weights=str(tmp_path / "vgg16.pth"), image_size=32, device="cpu")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    x = (images.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        h = torch.flatten(reference.avgpool(reference.features(x)), 1)
        expected = reference.classifier[:5](h)
    assert torch.allclose(extractor(images), expected, atol=1e-4)


def test_cache_hits_and_invalidates(tmp_path):
    calls = []

    def extractor(images):
        calls.append(images.shape[0])
        return images.flatten(1).float()

    ds = ImageDataset("tiny", torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8), torch.arange(5))
    a = cached_features(ds, extractor, {"kind": "x", "device": "cpu"}, tmp_path)
    b = cached_features(ds, extractor, {"kind": "x", "device": "cuda"}, tmp_path)  # device is not in the key
    assert torch.equal(a, b) and calls == [5]
    cached_features(ds, extractor, {"kind": "y"}, tmp_path)  # another feature config
    changed = ImageDataset("tiny", ds.images.flip(0), ds.labels)  # same name, other content
    cached_features(changed, extractor, {"kind": "x"}, tmp_path)
    assert calls == [5, 5, 5] and len(list(tmp_path.glob("tiny-*.pt"))) == 3
    # a corrupt cache file is recomputed, not trusted
    for path in tmp_path.glob("tiny-*.pt"):
        path.write_bytes(b"garbage")
    assert torch.equal(cached_features(ds, extractor, {"kind": "x"}, tmp_path), a) and len(calls) == 4


def test_a_long_dataset_name_caches_under_a_file_name_the_file_system_takes(tmp_path):
    """A 300-character `dataset.name` (dataset=folder) made a cache file name over the file system's
    255 bytes: an OSError."""
    calls = []

    def extractor(images):
        calls.append(images.shape[0])
        return images.flatten(1).float()

    images, labels = torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8), torch.arange(5)
    for name in ("x" * 299 + "a", "x" * 299 + "b", "é" * 300):  # the first two differ only at the end
        ds = ImageDataset(name, images, labels)
        first = cached_features(ds, extractor, {"kind": "x"}, tmp_path)
        assert torch.equal(cached_features(ds, extractor, {"kind": "x"}, tmp_path), first)
    assert calls == [5, 5, 5]  # each computed once, then read from its own file
    names = [path.name for path in tmp_path.glob("*.pt")]
    assert len(names) == 3 and all(len(name.encode()) <= 200 for name in names)


def test_a_dataset_name_holding_a_path_caches_in_the_cache_folder_itself(tmp_path):
    """A folder dataset's name, `folder (/data/shoes)`, made the cache file a path into sub-folders."""
    images, labels = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8), torch.arange(3)
    first = cached_features(ImageDataset("folder (/data/shoes)", images, labels), lambda x: x.flatten(1).float(),
                            {"kind": "x"}, tmp_path)  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [
        next(tmp_path.glob("folder (_data_shoes)-*.pt")).name
    ]
    other = cached_features(ImageDataset("folder (_data_shoes)", images * 0, labels), lambda x: x.flatten(1).float(),
                            {"kind": "x"}, tmp_path)  # fmt: skip
    assert not torch.equal(first, other)  # a name that comes out alike keeps its own file


def test_a_cache_file_holding_no_features_matrix_is_recomputed(tmp_path, caplog):
    """A file holding a dict raised AttributeError ('dict' object has no attribute 'shape')."""
    import logging

    def extractor(images):
        return images.flatten(1).float()

    ds = ImageDataset("tiny", torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8), torch.arange(5))
    expected = cached_features(ds, extractor, {"kind": "x"}, tmp_path)
    (path,) = tmp_path.glob("tiny-*.pt")
    for held, said in (({"features": expected}, "it holds dict, not a features matrix"),
                       (expected[0], "it holds a 1-D tensor, not a features matrix")):  # fmt: skip
        torch.save(held, path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pgh.features.cache"):
            assert torch.equal(cached_features(ds, extractor, {"kind": "x"}, tmp_path), expected)
        assert f"ignoring unreadable feature cache {path} ({said})" in caplog.text
        assert torch.equal(torch.load(path, weights_only=True), expected)  # written again
    torch.save(expected[:3], path)  # rows for another dataset's images: recomputed, and said so (it was silent)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgh.features.cache"):
        assert torch.equal(cached_features(ds, extractor, {"kind": "x"}, tmp_path), expected)
    assert f"ignoring feature cache {path}: 3 rows for the dataset's 5 images" in caplog.text


def test_a_cache_that_cannot_be_written_is_a_warning_not_a_failed_run(tmp_path, caplog, monkeypatch):
    """A read-only or full cache folder ended the run after its features were computed."""
    import logging

    def extractor(images):
        return images.flatten(1).float()

    ds = ImageDataset("tiny", torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8), torch.arange(5))
    (tmp_path / "a_file").write_text("")
    unwritable = tmp_path / "a_file" / "cache"  # mkdir fails as it does in a read-only folder, even for root
    with caplog.at_level(logging.WARNING, logger="pgh.features.cache"):
        feats = cached_features(ds, extractor, {"kind": "x"}, unwritable)
    assert torch.equal(feats, ds.images.flatten(1).float())
    assert f"could not write the feature cache {unwritable}/tiny-" in caplog.text
    assert "the features are computed again next time" in caplog.text

    def disk_full(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", disk_full)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgh.features.cache"):
        assert torch.equal(cached_features(ds, extractor, {"kind": "x"}, tmp_path / "full"), feats)
    assert "could not write the feature cache" in caplog.text and "unexpected pos 64" in caplog.text
    left = [path.name for path in (tmp_path / "full").iterdir()]
    assert len(left) == 1 and left[0].endswith(".pt.lock")  # no half-written file left behind, only the lock file


class CountingPixels:
    """Pixel features, each computation recorded in a file and slow enough for another process to overlap it."""

    def __init__(self, record):
        self.record = record

    def __call__(self, images):
        with open(self.record, "a") as f:
            f.write("computed\n")
        time.sleep(0.5)
        return images.flatten(1).float()


def compute_tiny_features(cache_dir, record, start):
    ds = ImageDataset("tiny", torch.arange(80, dtype=torch.uint8).reshape(5, 1, 4, 4), torch.arange(5))
    start.wait()
    feats = cached_features(ds, CountingPixels(record), {"kind": "x"}, cache_dir)
    assert torch.equal(feats, ds.images.flatten(1).float())


def test_processes_that_need_the_same_features_at_once_compute_them_once(tmp_path):
    """A local launcher's sweep starts every job at once: each computed the same features in full."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    jobs = [context.Process(target=compute_tiny_features, args=(tmp_path / "cache", tmp_path / "record", start))
            for _ in range(2)]  # fmt: skip
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    assert [job.exitcode for job in jobs] == [0, 0]
    assert (tmp_path / "record").read_text() == "computed\n"  # the other waited, then read the file
    assert len(list((tmp_path / "cache").glob("tiny-*.pt"))) == 1


def test_temporary_files_of_a_killed_cache_write_are_removed_after_a_day(tmp_path):
    def extractor(images):
        return images.flatten(1).float()

    ds = ImageDataset("tiny", torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8), torch.arange(5))
    cached_features(ds, extractor, {"kind": "x"}, tmp_path)
    (path,) = tmp_path.glob("tiny-*.pt")
    path.unlink()
    stale, recent, other = (tmp_path / f".{path.name}.k1ll3d_x.tmp", tmp_path / f".{path.name}.wr1t1ng.tmp",
                            tmp_path / ".other-1234.pt.k1ll3d_y.tmp")  # fmt: skip
    two_days_ago = time.time() - 2 * 24 * 3600
    for tmp in (stale, recent, other):
        tmp.write_bytes(b"half a file")
    for tmp in (stale, other):
        os.utime(tmp, (two_days_ago, two_days_ago))
    cached_features(ds, extractor, {"kind": "x"}, tmp_path)
    assert path.exists() and not stale.exists()
    assert recent.exists() and other.exists()  # a day old at most, and another cache file's


def test_a_cache_too_narrow_for_the_command_is_refused_without_calling_the_file_unreadable(tmp_path, caplog):
    def extractor(images):
        return images.flatten(1).float()

    def check_width(width):
        raise ValueError(f"72 bits need at least 72 feature dimensions, got {width}")

    ds = ImageDataset("tiny", torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8), torch.arange(5))
    cached_features(ds, extractor, {"kind": "x"}, tmp_path)
    with pytest.raises(ValueError, match="72 bits need at least 72 feature dimensions, got 16"):
        cached_features(ds, extractor, {"kind": "x"}, tmp_path, check_width=check_width)
    assert "unreadable" not in caplog.text


def test_cache_keys_the_extractors_code_version_and_weights_file(tmp_path):
    """The key held the settings only: a weights file replaced under the same path, or a fix of an
    extractor's computation, reused the old features; random VGG16 weights came from the run's seed
    (each seed got seed 0's cached features)."""
    import os

    from pgh.features import GistFeatures

    ds = ImageDataset("tiny", torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8), torch.arange(3))
    config = {"image_size": 32}

    class Gist2(GistFeatures):
        version = 2  # a fix of GIST's computation

    first = cached_features(ds, GistFeatures(device="cpu"), config, tmp_path)
    cached_features(ds, GistFeatures(device="cpu"), config, tmp_path)
    assert len(list(tmp_path.glob("tiny-*.pt"))) == 1
    cached_features(ds, Gist2(device="cpu"), config, tmp_path)
    assert len(list(tmp_path.glob("tiny-*.pt"))) == 2

    vgg_a = VGG16FC7Features(pretrained=False, image_size=32, device="cpu", seed=0)
    assert torch.equal(vgg_a(ds.images), VGG16FC7Features(pretrained=False, image_size=32, device="cpu")(ds.images))
    assert vgg_a.cache_identity()["random_weights_seed"] == 0
    assert VGG16FC7Features(pretrained=False, image_size=32, device="cpu", seed=1).cache_identity() != (
        vgg_a.cache_identity()
    )

    from torchvision.models import vgg16

    weights = tmp_path / "vgg16.pth"
    torch.save(vgg16(weights=None).state_dict(), weights)
    before = VGG16FC7Features(weights=str(weights), image_size=32, device="cpu").cache_identity()
    torch.save(vgg16(weights=None).state_dict(), weights)  # other weights, same path
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    after = VGG16FC7Features(weights=str(weights), image_size=32, device="cpu").cache_identity()
    assert before["weights"] == after["weights"] == str(weights.resolve()) and before != after
    # loading weights draws the network's random initialisation from the caller's generator, as it
    # always did: a deep run with features=vgg16_fc7 keeps its numbers
    torch.manual_seed(3)
    VGG16FC7Features(weights=str(weights), image_size=32, device="cpu")
    drawn = torch.rand(1)
    torch.manual_seed(3)
    vgg16(weights=None)
    assert torch.equal(drawn, torch.rand(1))
    assert first.shape == (3, 512)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device='bogus' is not a device: auto, cpu, cuda or cuda:N"):
        resolve_device("bogus")  # pgh-index --device bogus ended in torch's traceback
