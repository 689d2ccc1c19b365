"""Every dataset loader on tiny files in the real on-disk format, and the split's invariants."""

from __future__ import annotations

import gzip
import logging
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from pgh.data import (
    DatasetNotFoundError,
    ImageDataset,
    Split,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_folder,
    load_mnist,
    load_mnist5k,
    make_split,
)


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_dir(root, n_train=12, n_test=8, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 4
        write_idx(root / f"{part}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{part}-labels-idx1-ubyte", labels, gz)
        arrays[part] = (images, labels)
    return arrays


def test_mnist5k_is_the_embedded_real_set():
    ds = load_mnist5k()
    assert ds.images.shape == (5000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == [500] * 10
    assert ds.images.float().mean() > 20  # real digits, not blank


def test_digits():
    ds = load_digits()
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.max() == 255
    assert ds.num_classes == 10


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_pool(tmp_path, gz):
    arrays = make_idx_dir(tmp_path / "fm", gz=gz)
    ds = load_fashion_mnist(str(tmp_path / "fm"))
    assert ds.name == "fashion_mnist" and ds.images.shape == (20, 1, 28, 28)
    assert np.array_equal(ds.images[:12, 0].numpy(), arrays["train"][0])
    assert np.array_equal(ds.images[12:, 0].numpy(), arrays["t10k"][0])
    assert ds.labels.tolist() == list(arrays["train"][1]) + list(arrays["t10k"][1])
    assert ds.class_name(0) == "T-shirt/top" and ds.class_name(9) == "Ankle boot"


def test_missing_fashion_mnist_names_the_install_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="make data.*dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path / "nowhere"))


def test_mnist_torchvision_layout(tmp_path):
    make_idx_dir(tmp_path / "MNIST" / "raw", gz=False)
    assert load_mnist(str(tmp_path)).images.shape == (20, 1, 28, 28)
    with pytest.raises(DatasetNotFoundError, match="download=true"):
        load_mnist(str(tmp_path / "empty"))


def test_truncated_idx_is_reported(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(str(tmp_path))


def test_idx_images_that_are_not_uint8_are_refused_not_cast(tmp_path):
    """A float IDX file of pixels in [0, 1] was cast to uint8: every image all zeros, without a word."""
    make_idx_dir(tmp_path, gz=False)
    floats = np.random.default_rng(0).random((12, 28, 28)).astype(">f4")
    header = struct.pack(">BBBB", 0, 0, 0x0D, 3) + b"".join(struct.pack(">I", n) for n in floats.shape)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + floats.tobytes())
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte holds >f4 values, not the uint8 of MNIST-format"):
        load_fashion_mnist(str(tmp_path))


def test_idx_labels_that_are_not_uint8_are_refused_not_cast(tmp_path):
    """The uint8 check covers the labels file too: float labels were cast, 0.7 and 0.2 into class 0."""
    make_idx_dir(tmp_path, gz=False)
    floats = (np.arange(8) % 4 + 0.5).astype(">f4")
    header = struct.pack(">BBBB", 0, 0, 0x0D, 1) + struct.pack(">I", len(floats))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(header + floats.tobytes())
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte holds >f4 values, not the uint8 of MNIST-format"):
        load_fashion_mnist(str(tmp_path))


def test_labels_that_are_not_integers_are_refused():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"labels must be integers \(class indices\), got torch.float32"):
        ImageDataset("mine", images, torch.tensor([0.0, 1.7, 1.2, 0.4]))
    with pytest.raises(ValueError, match=r"labels must be integers \(class indices\), got torch.float64"):
        make_split(torch.arange(20, dtype=torch.float64) % 2, query_per_class=2)


def test_bool_labels_are_refused_by_the_split():
    """Bool labels (a mask passed for the labels) were cast to two classes, 0 and 1."""
    with pytest.raises(ValueError, match=r"^labels must be integers \(class indices\), got torch.bool; map each"):
        make_split(torch.arange(20) % 2 == 0, query_per_class=2)


def test_a_damaged_gzip_idx_file_is_named_with_how_to_replace_it(tmp_path):
    """A .gz cut short raised EOFError, and one that is not gzip BadGzipFile, neither naming the file."""
    for loader, fix in (
        (load_fashion_mnist, r"Reinstall it with apt-get install --reinstall -y dataset-fashion-mnist, or point"),
        (load_mnist, r"Delete it and put a good copy there, or run once online with dataset.download=true"),
    ):
        root = tmp_path / loader.__name__
        make_idx_dir(root)
        path = root / "t10k-labels-idx1-ubyte.gz"
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        with pytest.raises(ValueError, match=rf"t10k-labels-idx1-ubyte.gz is not a whole gzip file \(.+\)\. {fix}"):
            loader(str(root))
        path.write_bytes(b"an HTML page saved as .gz" * 4)
        with pytest.raises(ValueError, match=rf"t10k-labels-idx1-ubyte.gz is not a whole gzip file \(.+\)\. {fix}"):
            loader(str(root))


def test_cifar10_pickle_batches(tmp_path):
    batch_dir = tmp_path / "cifar-10-batches-py"
    batch_dir.mkdir()
    rng = np.random.default_rng(0)
    expected = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        expected.append(data)
        with open(batch_dir / name, "wb") as f:
            pickle.dump({"data": data, "labels": [0, 1, 2]}, f)
    ds = load_cifar10(str(tmp_path))
    assert ds.images.shape == (18, 3, 32, 32)
    # CIFAR rows are channel-major: the first 1024 bytes are the red plane
    assert np.array_equal(ds.images[0, 0].numpy().ravel(), expected[0][0, :1024])
    assert ds.class_name(0) == "airplane" and ds.class_name(9) == "truck"
    (batch_dir / "test_batch").unlink()
    # the archive holds cifar-10-batches-py/: extracted into that folder it nested one inside the other
    with pytest.raises(
        DatasetNotFoundError,
        match=rf"test_batch not found .* tar xzf cifar-10-python.tar.gz -C {re.escape(str(tmp_path))},",
    ):
        load_cifar10(str(tmp_path))


def test_a_damaged_cifar_batch_is_named_with_how_to_replace_it(tmp_path):
    """A cut-short pickle raised UnpicklingError or EOFError without the file's name."""
    batch_dir = tmp_path / "cifar-10-batches-py"
    batch_dir.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(batch_dir / name, "wb") as f:
            pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f)
    whole = (batch_dir / "data_batch_3").read_bytes()
    fix = rf"Extract cifar-10-python.tar.gz again with tar xzf cifar-10-python.tar.gz -C {re.escape(str(tmp_path))}"
    for damaged in (whole[: len(whole) // 2], b"garbage", pickle.dumps({"labels": [0, 1]})):
        (batch_dir / "data_batch_3").write_bytes(damaged)
        with pytest.raises(ValueError, match=rf"cifar10: .*data_batch_3 is not a CIFAR-10 batch \(\w+: .*\)\. {fix}"):
            load_cifar10(str(tmp_path))


def test_folder_dataset_and_corrupt_files(tmp_path):
    for cls, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(tmp_path / cls / f"{i}.png")
    ds = load_folder(str(tmp_path), image_size=16)
    assert ds.images.shape == (6, 3, 16, 16) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.images[0, 0].float().mean() == 255 and ds.images[3, 2].float().mean() == 255
    assert ds.class_names == ("cats", "dogs")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_folder(str(tmp_path))


def test_folder_dataset_checks_its_image_size_and_the_memory_it_needs(tmp_path, monkeypatch):
    """dataset.image_size=100000 read six images into 168 GiB and the machine killed the job."""
    import pgh.data.datasets

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (8, 8)).save(tmp_path / cls / f"{i}.png")
    with pytest.raises(
        ValueError, match=r"6 images of 3 x 100000 x 100000 pixels take 167.6 GiB, more than the 8.0 GiB"
    ):
        monkeypatch.setattr(pgh.data.datasets, "free_memory", lambda: 8 * 2**30)
        load_folder(str(tmp_path), image_size=100000)
    for bad in (0, "abc", 2.5):
        with pytest.raises(ValueError, match=f"dataset.image_size={bad!r} must be a positive whole number"):
            load_folder(str(tmp_path), image_size=bad)
    assert load_folder(str(tmp_path), image_size=16, grayscale=True).images.shape == (6, 1, 16, 16)


def test_free_memory_counts_the_memory_limit_of_this_process_cgroup(tmp_path):
    """Only the machine's MemAvailable was read: under a SLURM --mem or container limit a dataset the
    guard let through was killed for memory instead of refused."""
    from pgh.data.datasets import cgroup_memory_left, free_memory

    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:       67108864 kB\nMemAvailable:   33554432 kB\n")  # 32 GiB
    (proc / "self" / "cgroup").write_text("0::/\n")
    assert free_memory(cgroup, proc) == 32 * 2**30 and cgroup_memory_left(cgroup, proc) is None

    # cgroup v2, the limit on the mount's root (a container): limit less usage, page cache it can drop not used
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{4 * 2**30}\n")
    (cgroup / "memory.current").write_text(f"{3 * 2**30}\n")
    (cgroup / "memory.stat").write_text(f"anon {2 * 2**30}\ninactive_file {2**30}\n")
    assert free_memory(cgroup, proc) == 2 * 2**30
    (cgroup / "memory.max").write_text("max\n")
    assert free_memory(cgroup, proc) == 32 * 2**30
    # the limit of a cgroup between the root and this process's (a SLURM job's, over its step's)
    (proc / "self" / "cgroup").write_text("0::/system.slice/job_7/step_0\n")
    job = cgroup / "system.slice" / "job_7"
    (job / "step_0").mkdir(parents=True)
    (job / "memory.max").write_text(f"{2**30}\n")
    (job / "memory.current").write_text(f"{2**29}\n")
    assert free_memory(cgroup, proc) == 2**29

    # cgroup v1, whose "no limit" is a huge number
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("4:memory:/docker/abc\n0::/\n")  # the host's path: not mounted here
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    assert free_memory(v1, proc) == 32 * 2**30
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{3 * 2**30}\n")
    (v1 / "memory" / "memory.stat").write_text(f"inactive_file 0\ntotal_inactive_file {2**29}\n")
    assert free_memory(v1, proc) == 2 * 2**30 + 2**29
    assert free_memory() is None or free_memory() > 0  # this machine's


def test_folder_images_are_read_into_one_tensor_and_hashed_without_copies(tmp_path, monkeypatch):
    """Reading 1,500 images took 3x their tensor's memory at its peak (every image in a list, then
    stacked) and hashing them for the feature cache 2x (a copy as bytes)."""
    import hashlib
    import tracemalloc

    import pgh.data.files
    from pgh.data.files import ImageFiles, read_images

    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{i:03d}.png" for i in range(120)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(pgh.data.files, "READ_BATCH_BYTES", 8 * 3 * 64 * 64)  # eight images at a time
    tracemalloc.start()
    try:
        images = read_images(paths, channels=3, size=64)
        read_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        dataset = ImageDataset("x", images, torch.arange(120) % 3)
        fingerprint = dataset.fingerprint()
        hash_peak = tracemalloc.get_traced_memory()[1] - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    files = ImageFiles(paths, channels=3, size=64)
    assert torch.equal(images, torch.from_numpy(np.stack([files[i][0] for i in range(len(files))])))  # as before
    size = images.numel()  # bytes
    assert read_peak < size / 2 and hash_peak < size / 10
    # the same digest as before: feature caches stay valid
    old = hashlib.sha1(str(tuple(images.shape)).encode() + images.numpy().tobytes())
    old.update(dataset.labels.numpy().astype(np.int64).tobytes())
    assert fingerprint == old.hexdigest()[:16]


def test_folder_dataset_reads_class_folders_at_any_depth_and_skips_hidden_and_empty_ones(tmp_path, caplog, monkeypatch):
    """A class whose images sat one level deeper was dropped (and the error said "a single class");
    hidden and empty folders took a label, so class_names outnumbered the classes."""
    import logging

    for path in ("cats/indoor/a.png", "cats/b.JPG", "dogs/c.png", ".ipynb_checkpoints/d.png", "dogs/.cache/e.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / path, format="PNG")
    (tmp_path / "zz_empty").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    with caplog.at_level(logging.WARNING, logger="pgh.data.datasets"):
        ds = load_folder(f"~/{tmp_path.name}", image_size=8)  # ~ is the user's home, as in a shell
    assert ds.class_names == ("cats", "dogs") and ds.labels.tolist() == [0, 0, 1]
    assert "1 sub-folder(s) of" in caplog.text and "hold no images and are no class: zz_empty" in caplog.text


def test_folder_dataset_refuses_a_train_test_layout(tmp_path):
    """train/<class>/ and test/<class>/ read at any depth made the split names the two labels."""
    for path in ("train/cat/a.png", "train/dog/b.png", "test/cat/c.png", "test/dog/d.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / path)
    with pytest.raises(
        ValueError, match=r"test, train look like split folders \(test holds sub-folders cat, dog\), whose names"
    ):
        load_folder(str(tmp_path), image_size=8)
    for path in ("kaggle/train/cat/a.png", "kaggle/train/dog/b.png", "kaggle/test/1.png", "kaggle/test/2.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / path)
    with pytest.raises(ValueError, match=r"test, train look like split folders \(train holds sub-folders cat, dog\)"):
        load_folder(str(tmp_path / "kaggle"), image_size=8)  # an unlabelled flat test/ beside train/<class>/
    for path in ("stray/train/cat/a.png", "stray/train/x.png", "stray/test/cat/b.png", "stray/test/y.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / path)
    with pytest.raises(ValueError, match=r"test, train look like split folders"):
        load_folder(str(tmp_path / "stray"), image_size=8)  # a stray image at the top of each split folder
    assert load_folder(str(tmp_path / "train"), image_size=8).class_names == ("cat", "dog")
    # classes whose images sit in sub-folders of the same names are classes
    for path in ("cat/images/a.png", "cat/2020/b.png", "dog/images/c.png", "dog/2020/d.png"):
        (tmp_path / "classes" / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "classes" / path)
    assert load_folder(str(tmp_path / "classes"), image_size=8).class_names == ("cat", "dog")


def test_folder_dataset_refuses_flat_split_folders(tmp_path):
    """root/train/*.jpg beside root/test/*.jpg was read as two classes, "test" and "train"."""
    for path in ("train/a.png", "train/b.png", "test/c.png", "val/d.png", ".git/e.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / path)
    with pytest.raises(
        ValueError,
        match=r"^folder dataset: test, train, val look like split folders \(each holds its images with no class "
        r"sub-folders\), whose names would become the labels\. .*give one sub-folder per class",
    ):
        load_folder(str(tmp_path), image_size=8)
    (tmp_path / "cat").mkdir()  # a class beside them: train, test and val are classes too
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "f.png")
    assert load_folder(str(tmp_path), image_size=8).class_names == ("cat", "test", "train", "val")


def test_dataset_validates_shapes():
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset("x", torch.zeros(2, 1, 4, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        ImageDataset("x", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3))
    with pytest.raises(ValueError, match="labels 0..2 do not all index its 2 class names"):
        ImageDataset("x", torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ("a", "b"))
    assert ImageDataset("x", torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.tensor([3])).class_name(3) == "3"


# ---------------------------------------------------------------------------------------- split


def test_split_invariants(tmp_path):
    labels = torch.arange(1000) % 10
    split = make_split(labels, query_per_class=7, seed=3)
    q, db = set(split.query.tolist()), set(split.database.tolist())
    assert not q & db and len(q | db) == 1000  # disjoint, covering the pool
    assert torch.bincount(labels[split.query]).tolist() == [7] * 10  # balanced
    assert torch.equal(split.train, split.database)
    again = make_split(labels, query_per_class=7, seed=3)
    assert torch.equal(again.query, split.query)  # deterministic
    assert not torch.equal(make_split(labels, query_per_class=7, seed=4).query, split.query)
    split.save(tmp_path / "split.npz")
    loaded = Split.load(tmp_path / "split.npz")
    assert all(
        torch.equal(a, b)
        for a, b in zip((loaded.query, loaded.database, loaded.train), (split.query, split.database, split.train))
    )


def test_split_train_subset_and_errors():
    labels = torch.arange(100) % 5
    split = make_split(labels, query_per_class=2, train_size=30, seed=0)
    assert split.train.numel() == 30 and set(split.train.tolist()) <= set(split.database.tolist())
    with pytest.raises(ValueError, match="train_size"):
        make_split(labels, query_per_class=2, train_size=1000)
    with pytest.raises(ValueError, match="query_per_class"):
        make_split(labels, query_per_class=20)
    # the message names every class too small and the largest setting that works
    uneven = torch.tensor([0] * 10 + [1] * 3 + [2] * 4 + [3] * 8)
    with pytest.raises(
        ValueError,
        match=r"^class 1 has 3 images, class 2 has 4 images, not more than split.query_per_class=4; lower "
        r"split.query_per_class to at most 2$",
    ):
        make_split(uneven, query_per_class=4)
    assert make_split(uneven, query_per_class=2).query.numel() == 8
    # by name where the dataset names its classes (pgh-train passes a folder's sub-folder names)
    with pytest.raises(ValueError, match=r"^class 'digit_1' has 3 images, class 'digit_2' has 4 images, not more"):
        make_split(uneven, query_per_class=4, class_names=[f"digit_{i}" for i in range(4)])
    with pytest.raises(ValueError, match=r"class 1 has 1 image, .*; a class needs two images or more"):
        make_split(torch.tensor([0, 0, 0, 1]), query_per_class=1)
    with pytest.raises(ValueError, match="single class.*every metric 100%.*at least two"):
        make_split(torch.zeros(50, dtype=torch.long), query_per_class=2)
    # types: a slice's TypeError or torch's "manual_seed expected a long" before
    for bad, message in (
        ({"query_per_class": 2.5}, r"split.query_per_class=2.5 must be a whole number"),
        ({"train_size": 10.5}, r"split.train_size=10.5 must be a whole number"),
        ({"seed": "abc"}, r"split.seed='abc' must be a whole number in 0..2\*\*63 - 1"),
        ({"seed": 10**20}, r"split.seed=100000000000000000000 must be a whole number in 0..2\*\*63 - 1"),
    ):
        with pytest.raises(ValueError, match=message):
            make_split(labels, **{"query_per_class": 2, **bad})


def test_split_train_subset_is_a_seeded_random_draw_from_the_database():
    """split.train_size draws its subset at random (seeded) from the whole database: on class-sorted
    labels it covers every class in about equal shares, not the database's first classes."""
    labels = torch.arange(10).repeat_interleave(100)  # class-sorted: 0 x 100, 1 x 100, ...
    trains = []
    for seed in (0, 1, 2):
        split = make_split(labels, query_per_class=5, train_size=100, seed=seed)
        train = split.train
        assert train.numel() == 100 and torch.equal(train, train.unique())  # sorted, no repeats
        assert set(train.tolist()) <= set(split.database.tolist())
        counts = torch.bincount(labels[train], minlength=10)
        assert counts.min() >= 3 and counts.max() <= 20, counts.tolist()  # 10 expected a class (95 of 950 each)
        assert torch.equal(make_split(labels, query_per_class=5, train_size=100, seed=seed).train, train)
        trains.append(train)
    assert not torch.equal(trains[0], trains[1]) and not torch.equal(trains[1], trains[2])


def test_split_with_a_train_subset_round_trips_each_part(tmp_path):
    """Split.save/load keep query, database and train apart (a train subset, so no two parts are equal)."""
    split = make_split(torch.arange(100) % 5, query_per_class=2, train_size=30, seed=1)
    assert split.train.numel() == 30 and split.database.numel() == 90 and split.query.numel() == 10
    split.save(tmp_path / "split.npz")
    loaded = Split.load(tmp_path / "split.npz")
    assert torch.equal(loaded.query, split.query)
    assert torch.equal(loaded.database, split.database)
    assert torch.equal(loaded.train, split.train)
    assert all(t.dtype == torch.int64 for t in (loaded.query, loaded.database, loaded.train))


def test_find_and_read_image_files(tmp_path):
    from pgh.data.files import find_images, read_images

    (tmp_path / "b" / "deep").mkdir(parents=True)
    Image.fromarray(np.full((4, 6), 200, np.uint8)).save(tmp_path / "b" / "deep" / "x.PNG")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    found = find_images(tmp_path)
    assert found == [tmp_path / "a.jpg", tmp_path / "b" / "deep" / "x.PNG"]  # recursive, sorted, by suffix
    assert find_images(found[1]) == [found[1]]
    images = read_images(found, channels=3, size=8)
    assert images.shape == (2, 3, 8, 8) and images.dtype == torch.uint8 and (images[1] == 200).all()
    assert read_images([], channels=1, size=8).shape == (0, 1, 8, 8)
    with pytest.raises(ValueError, match="is not an image"):
        find_images(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="channels must be 1"):
        read_images(found, channels=2, size=8)


def test_worker_processes_read_the_same_images_in_order_and_name_every_unreadable_file(tmp_path):
    from pgh.data.files import iter_image_batches, read_images

    paths = []
    for i in range(40):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(np.full((6, 6), i * 5, np.uint8)).save(paths[-1])
    in_turn = read_images(paths, channels=1, size=4)
    assert torch.equal(read_images(paths, channels=1, size=4, workers=2), in_turn)
    batches = list(iter_image_batches(paths, channels=1, size=4, batch_size=7, workers=2))
    assert [len(b) for b in batches] == [7] * 5 + [5] and torch.equal(torch.cat(batches), in_turn)
    assert [int(b[0, 0, 0, 0]) for b in batches] == [0, 35, 70, 105, 140, 175]  # in the order given

    for i in (3, 30):
        paths[i].write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"2 unreadable image\(s\):\n  .*03.png \(.*\)\n  .*30.png \("):
        list(iter_image_batches(paths, channels=1, size=4, batch_size=7, workers=2))
    with pytest.raises(ValueError, match="workers must be >= 0"):
        read_images(paths, channels=1, size=4, workers=-1)


def test_sixteen_bit_images_are_scaled_rotated_photos_upright_and_32_bit_ones_refused(tmp_path, monkeypatch):
    """Pillow's convert clips 16-bit grey at 255 (a ramp read as nearly all white); EXIF orientation was
    ignored; 32-bit integer or float pixels have no range to scale from."""
    from PIL import Image

    from pgh.data.files import read_images

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    assert Image.open(tmp_path / "ramp16.png").mode.startswith("I")
    expected = torch.from_numpy((ramp.astype(np.uint32) // 257).astype(np.uint8))
    for channels in (1, 3):
        assert torch.equal(read_images([tmp_path / "ramp16.png"], channels, 8)[0, 0], expected)
    # Pillow before 10.3 opened 16-bit grey PNGs in mode I (32-bit): read as 16-bit all the same
    real_open = Image.open

    def open_as_old_pillow(path, *args, **kwargs):
        image = real_open(path, *args, **kwargs).convert("I")
        image.format = "PNG"
        return image

    monkeypatch.setattr(Image, "open", open_as_old_pillow)
    assert torch.equal(read_images([tmp_path / "ramp16.png"], 1, 8)[0, 0], expected)
    monkeypatch.setattr(Image, "open", real_open)

    wide = np.zeros((4, 8), np.uint8)
    wide[:, :4] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(wide).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    image = read_images([tmp_path / "rotated.jpg"], 1, 8)[0, 0].float()
    assert image[:4].mean() > 200 and image[4:].mean() < 50  # the white half is on top once shown upright

    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match=r"float.tiff \(32-bit float pixels have no fixed range: save it with 8 or 16"):
        read_images([tmp_path / "float.tiff"], 1, 8)


def test_images_under_symbolic_links_to_folders_are_found_once_and_broken_links_named(tmp_path, caplog):
    """rglob did not descend into a linked sub-folder: its images were lost, and a class holding only
    a link to its images was "empty"; a broken link vanished without a word."""
    from pgh.data.files import find_images

    for path in ("data/cats/a.png", "elsewhere/more_cats/b.png", "elsewhere/birds/c.png", "data/dogs/d.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / path)
    root = tmp_path / "data"
    (root / "cats" / "more").symlink_to(tmp_path / "elsewhere" / "more_cats", target_is_directory=True)
    (root / "cats" / "again").symlink_to(tmp_path / "elsewhere" / "more_cats", target_is_directory=True)
    (tmp_path / "elsewhere" / "more_cats" / "up").symlink_to(root / "cats", target_is_directory=True)  # a loop
    (root / "cats" / "gone.png").symlink_to(tmp_path / "deleted.png")
    (root / "birds").mkdir()
    (root / "birds" / "photos").symlink_to(tmp_path / "elsewhere" / "birds", target_is_directory=True)
    (root / "fish").symlink_to(tmp_path / "unmounted", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="pgh.data.files"):
        found = find_images(root / "cats")
    # the folder two links lead to is read once (through the first link, in name order); the loop not at all
    assert found == [root / "cats" / "a.png", root / "cats" / "again" / "b.png"]
    assert f"1 broken symbolic link(s) under {root / 'cats'}, left out" in caplog.text
    assert f"{root / 'cats' / 'gone.png'} -> {tmp_path / 'deleted.png'}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgh.data"):
        ds = load_folder(str(root), image_size=8)
    assert ds.class_names == ("birds", "cats", "dogs") and ds.labels.tolist() == [0, 1, 1, 2]
    assert f"{root / 'fish'} -> {tmp_path / 'unmounted'}" in caplog.text
    assert f"{root / 'cats' / 'gone.png'} -> " in caplog.text
    # a link to a folder that is below the root anyway: the folder is read by its own path, wherever the
    # link sorts (its images kept their paths, so the split and the caches of earlier runs hold)
    (root / "cats" / "0_link").symlink_to(root / "cats" / "z_real", target_is_directory=True)
    (root / "cats" / "z_real").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cats" / "z_real" / "e.png")
    (root / "birds" / "to_dogs").symlink_to(root / "dogs", target_is_directory=True)  # another class's folder
    assert root / "cats" / "z_real" / "e.png" in find_images(root / "cats")
    assert not any("0_link" in str(p) for p in find_images(root / "cats"))
    assert find_images(root) == sorted(find_images(root))
    assert load_folder(str(root), image_size=8).labels.tolist() == [0, 1, 1, 1, 2]  # d.png in dogs only


@pytest.mark.parametrize("workers", [0, 2])
def test_every_unreadable_file_is_named_with_its_reason_and_the_fix(tmp_path, monkeypatch, workers):
    """Only the error's type was shown (OSError, not "image file is truncated"); a decompression bomb
    and a ValueError (a mode Pillow cannot convert) escaped without the file's name."""
    from PIL import Image

    from pgh.data.files import read_images

    Image.new("RGB", (64, 64)).save(tmp_path / "a_good.png")
    whole = (tmp_path / "a_good.png").read_bytes()
    (tmp_path / "b_truncated.png").write_bytes(whole[: len(whole) // 2])
    Image.new("LAB", (8, 8)).save(tmp_path / "c_lab.tif")
    Image.new("L", (120, 120)).save(tmp_path / "d_huge.png")
    (tmp_path / "e_text.jpg").write_text("not an image")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # refused over twice that: 14,400 pixels are
    paths = sorted(tmp_path.iterdir())
    with pytest.raises(ValueError) as error:
        read_images(paths, channels=1, size=8, workers=workers)
    lines = str(error.value).splitlines()
    assert lines[0] == "4 unreadable image(s):"
    assert lines[1] == f"  {tmp_path / 'b_truncated.png'} (OSError: image file is truncated)"
    assert lines[2].startswith(f"  {tmp_path / 'c_lab.tif'} (ValueError: conversion from LAB to")
    assert re.fullmatch(
        rf"  {re.escape(str(tmp_path / 'd_huge.png'))} \(Image size \(14400 pixels\) exceeds limit of 10000 "
        r"pixels.*: larger than Pillow's limit for an image; shrink it, or move it out of the folder that is read\)",
        lines[3],
    )
    assert lines[4] == f"  {tmp_path / 'e_text.jpg'} (not an image file Pillow can read)"
    assert lines[5] == "repair or remove them, or move them out of the folder that is read"


@pytest.mark.parametrize("workers", [0, 2])
def test_the_training_loader_shuffles_as_torchs_and_resumes_an_epoch_where_it_stopped(workers):
    """Its order is RandomSampler's for the same global generator state (the published runs' batches);
    loaded with a state from 3 batches into an epoch, it gives that epoch's other batches, in order,
    and draws nothing from the global generator (the checkpoint's state was saved after the epoch's draws)."""
    from torch.utils.data import DataLoader, TensorDataset

    from pgh.data.loader import training_loader

    data = TensorDataset(torch.arange(50))
    torch.manual_seed(7)
    torchs = DataLoader(data, batch_size=8, shuffle=True, drop_last=True, num_workers=workers)
    reference = [b[0].tolist() for b in torchs]
    torch.manual_seed(7)
    loader = training_loader(data, batch_size=8, drop_last=True, num_workers=workers)
    batches = iter(loader)
    first = [next(batches)[0].tolist() for _ in range(3)]
    state, after = loader.state_dict(), torch.get_rng_state()
    assert first == reference[:3] and state["batches"] == 3
    assert [b[0].tolist() for b in batches] == reference[3:]

    resumed = training_loader(data, batch_size=8, drop_last=True, num_workers=workers)
    resumed.load_state_dict(state)
    torch.set_rng_state(after)
    assert [b[0].tolist() for b in resumed] == reference[3:] and len(resumed) == len(reference) == 6
    assert torch.equal(torch.get_rng_state(), after)
    assert resumed.state_dict()["batches"] == 6
    resumed.load_state_dict(resumed.state_dict())  # an epoch's end: the next one starts afresh
    assert len([b for b in resumed]) == 6
