"""FAISS binary index over packed codes: exact top-k Hamming search, on the GPU when faiss-gpu and
CUDA are present (and k fits the GPU kernel's limit), or an inverted file over Hamming centroids for
databases too large to scan (CPU); saved and loaded atomically.

faiss-cpu (a dependency) and faiss-gpu (the `gpu` extra) are two wheels that write the same `faiss`
folder: whichever pip installed last is the one imported, and uninstalling either deletes files the
other needs. Both cases are caught here and named, with the command that repairs them. A faiss-gpu
without kernels for this GPU returns wrong distances and raises nothing (seen on an H200 with
faiss-gpu-cu12 1.14.1, built for sm_70/sm_80 only), so its GPU search is checked against the CPU's
once, on a small problem, before any index uses it.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from importlib import metadata
from pathlib import Path

import faiss
import numpy as np

from pgh.io import atomic_path
from pgh.retrieval.codes import check_bits, to_numpy, warn_if_unpacked

log = logging.getLogger(__name__)
GPU_MAX_K = 2048
GPU_WHEELS = ("faiss-gpu", "faiss-gpu-cu12")
REINSTALL_GPU = "pip install --force-reinstall --no-deps 'faiss-gpu>=1.8'  (or `make install-gpu`)"
GPU_ARCH_FIX = (
    "install PyPI's faiss-gpu (1.15.1 has kernels for compute capability 7.0 to 9.0, PTX for newer): "
    f"pip uninstall faiss-gpu-cu12 && {REINSTALL_GPU}; or build faiss with CMAKE_CUDA_ARCHITECTURES naming "
    "this GPU; or search with use_gpu=False"
)

if not hasattr(faiss, "IndexBinaryFlat"):
    raise ImportError(
        f"the `faiss` package at {list(getattr(faiss, '__path__', []))} is incomplete: faiss-cpu and faiss-gpu "
        "share that folder, and uninstalling one deletes the other's files. Reinstall the one you use: "
        f"{REINSTALL_GPU} on a CUDA machine, else pip install --force-reinstall --no-deps faiss-cpu"
    )


def gpu_wheel_shadowed() -> bool:
    """True when a faiss-gpu wheel is installed but the imported `faiss` is faiss-cpu's build
    (faiss-cpu was installed after it and overwrote the shared folder)."""
    if hasattr(faiss, "StandardGpuResources"):
        return False
    for name in GPU_WHEELS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return True
    return False


@functools.cache
def gpu_search_problem() -> str | None:
    """Why faiss's GPU binary search is wrong here, or None when it gives the CPU's top-10 distances on
    512 random 64-bit codes. Once per process: a build without kernels for this GPU launches nothing
    and leaves garbage in the results, with no error raised."""
    rng = np.random.default_rng(0)
    database = rng.integers(0, 256, (512, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (16, 8), dtype=np.uint8)
    cpu_index = faiss.IndexBinaryFlat(64)
    cpu_index.add(database)
    expected = cpu_index.search(queries, 10)[0]
    try:
        got = faiss.GpuIndexBinaryFlat(faiss.StandardGpuResources(), cpu_index).search(queries, 10)[0]
    except Exception as error:  # faiss raises RuntimeError on CUDA errors; any failure means "not usable"
        return f"faiss's GPU search fails on {gpu_name()} ({type(error).__name__}: {error}); {GPU_ARCH_FIX}"
    if np.array_equal(got, expected):
        return None
    return (
        f"faiss's GPU search returns wrong distances on {gpu_name()} (checked against the CPU on 512 codes): "
        f"this faiss build has no kernels for that GPU; {GPU_ARCH_FIX}"
    )


def gpu_name() -> str:
    """'NVIDIA H200 (compute capability 9.0)', or 'GPU 0' where torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return "GPU 0"
    major, minor = torch.cuda.get_device_capability(0)
    return f"{torch.cuda.get_device_name(0)} (compute capability {major}.{minor})"


def gpu_unusable() -> str | None:
    """Why BinaryIndex cannot search on the GPU here ('<problem>; <fix>'), or None when it can."""
    if gpu_wheel_shadowed():
        return f"faiss-gpu is installed but faiss-cpu's files replaced it; {REINSTALL_GPU}"
    if not hasattr(faiss, "StandardGpuResources"):
        return f"faiss has no GPU support here; pip install -e '.[gpu]' && {REINSTALL_GPU}"
    if faiss.get_num_gpus() == 0:
        return "faiss sees no GPU; run on a machine with a CUDA device, or use_gpu=False"
    return gpu_search_problem()


def gpu_available() -> bool:
    """faiss has GPU support, sees a GPU, and its search there gives the CPU's distances. Warns when a
    faiss-gpu is installed but cannot be used (shadowed by faiss-cpu, or wrong on this GPU): search then
    runs on the CPU."""
    reason = gpu_unusable()
    if reason and (gpu_wheel_shadowed() or hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        warnings.warn(f"{reason} (searching on the CPU)", stacklevel=2)
    return reason is None


class BinaryIndex:
    """Top-k Hamming search over packed uint8 codes [n, bits/8].

    By default exact (`IndexBinaryFlat`): every query is compared with every code, on the GPU when
    faiss-gpu sees one. With `nlist`, an inverted file (`IndexBinaryIVF`, CPU only: FAISS has no GPU
    binary IVF): `train` clusters a sample of the codes into `nlist` Hamming centroids, `add` files
    each code under its nearest centroid, and a query scans the codes of its `nprobe` nearest
    centroids only (nprobe=None: 16, or nlist if fewer). Approximate: nprobe = nlist gives the exact
    distances; ids are -1 where the scanned codes were fewer than k. Rows come nearest first, ties by
    id, as the exact index's; but which of the codes tied at the k-th distance fill the last places
    follows the order the lists were scanned in, not the ids, even with nprobe = nlist.
    """

    def __init__(
        self, bits: int, use_gpu: bool | None = None, nlist: int | None = None, nprobe: int | None = None
    ) -> None:
        self.bits = check_bits(bits)
        if nlist is None:
            if nprobe is not None:
                raise ValueError(f"nprobe={nprobe} needs an IVF index: give nlist too (nprobe=None: exact search)")
            self.cpu_index = faiss.IndexBinaryFlat(self.bits)
        else:
            if isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or nlist < 1:
                raise ValueError(f"nlist={nlist!r} must be a whole number of centroids >= 1 (or None: exact search)")
            if use_gpu:
                raise ValueError("use_gpu=True with nlist: FAISS has no GPU binary IVF index; nlist=None (exact, GPU)")
            use_gpu = False
            self._quantizer = faiss.IndexBinaryFlat(self.bits)  # the IVF index does not own it
            self.cpu_index = faiss.IndexBinaryIVF(self._quantizer, self.bits, int(nlist))
            self.nprobe = min(16, nlist) if nprobe is None else nprobe
        self.use_gpu = gpu_available() if use_gpu is None else use_gpu
        if self.use_gpu and (reason := gpu_unusable()):
            raise RuntimeError(f"use_gpu=True but {reason}")
        self._gpu_index = None
        self._gpu_resources = None
        self._said_cpu_for_large_k = False

    @property
    def nlist(self) -> int | None:
        """Number of IVF centroids, None for the exact index."""
        return self.cpu_index.nlist if isinstance(self.cpu_index, faiss.IndexBinaryIVF) else None

    @property
    def nprobe(self) -> int | None:
        """Centroids whose codes a query scans (IVF), None for the exact index."""
        return self.cpu_index.nprobe if self.nlist else None

    @nprobe.setter
    def nprobe(self, nprobe: int) -> None:
        if not self.nlist:
            raise ValueError("nprobe is for an IVF index (BinaryIndex(bits, nlist=...)); the exact one scans all")
        if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or not 1 <= nprobe <= self.nlist:
            raise ValueError(f"nprobe={nprobe!r} must be a whole number in 1..nlist={self.nlist}")
        self.cpu_index.nprobe = int(nprobe)

    def train(self, packed: np.ndarray) -> BinaryIndex:
        """IVF: cluster these codes (the database or a sample of it) into the nlist centroids. The
        exact index needs no training and returns at once."""
        packed = self._check(packed)
        if self.nlist:
            if len(packed) < self.nlist:
                raise ValueError(
                    f"{len(packed)} training codes for nlist={self.nlist} centroids: train on at least nlist "
                    f"codes (FAISS suggests 39 x nlist = {39 * self.nlist}), or lower nlist"
                )
            self.cpu_index.train(packed)
        return self

    @property
    def ntotal(self) -> int:
        return self.cpu_index.ntotal

    def _check(self, packed: np.ndarray) -> np.ndarray:
        packed = to_numpy(packed)
        if packed.dtype != np.uint8:  # a cast would wrap or truncate other values into other codes
            raise ValueError(
                f"expected packed uint8 codes [n, {self.bits // 8}], got {packed.dtype}: bool or 0/1 codes "
                "[n, bits] go through pack_codes first"
            )
        packed = np.ascontiguousarray(packed)
        if packed.ndim != 2 or packed.shape[1] * 8 != self.bits:
            raise ValueError(f"expected packed codes [n, {self.bits // 8}] (uint8), got shape {packed.shape}")
        warn_if_unpacked(packed)
        return packed

    def add(self, packed: np.ndarray) -> BinaryIndex:
        """Append packed codes uint8 [n, bits/8]; their ids continue from `ntotal` (0, 1, ... for the
        first add). An IVF index needs `train` first. Returns self."""
        if not self.cpu_index.is_trained:
            raise ValueError(
                f"an IVF index (nlist={self.nlist}) needs train(codes) before add: on the database or a sample of it"
            )
        self.cpu_index.add(self._check(packed))
        self._gpu_index = None
        return self

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (distances int32 [q, k], database ids int64 [q, k]) by Hamming distance, nearest first."""
        if self.ntotal == 0:
            raise ValueError("the index is empty: add(codes) before searching")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.ntotal:
            raise ValueError(f"k={k!r} must be a whole number in 1..{self.ntotal} (the number of indexed codes)")
        k = int(k)
        queries = self._check(packed_queries)
        index = self.cpu_index
        if self.use_gpu and k > GPU_MAX_K and not self._said_cpu_for_large_k:
            log.warning("k=%d is more than FAISS's GPU search takes (%d): searching on the CPU", k, GPU_MAX_K)
            self._said_cpu_for_large_k = True
        if self.use_gpu and k <= GPU_MAX_K:
            if self._gpu_index is None:
                self._gpu_resources = faiss.StandardGpuResources()
                self._gpu_index = faiss.GpuIndexBinaryFlat(self._gpu_resources, self.cpu_index)
            index = self._gpu_index
        return index.search(queries, k)

    def search_radius(self, packed_queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every indexed code within Hamming distance `radius` (inclusive) of each query, as FAISS lays
        out a range search: query i's hits are `distances[lims[i]:lims[i + 1]]` (int32) and
        `ids[lims[i]:lims[i + 1]]` (int64), nearest first, ties in id order. On the CPU (FAISS has no
        GPU binary range search); an IVF index finds only the codes in the `nprobe` probed lists."""
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or not 0 <= radius <= self.bits:
            raise ValueError(f"radius={radius!r} must be a whole number of bits in 0..{self.bits}")
        if self.ntotal == 0:
            raise ValueError("the index is empty: add(codes) before searching")
        queries = self._check(packed_queries)
        # FAISS keeps the codes strictly below its radius
        lims, distances, ids = self.cpu_index.range_search(queries, int(radius) + 1)
        lims = lims.astype(np.int64)
        query = np.repeat(np.arange(len(queries)), np.diff(lims))  # each hit's query: one sort for all
        order = np.lexsort((ids, distances, query))
        return lims, distances[order].astype(np.int32), ids[order].astype(np.int64)

    def codes(self) -> np.ndarray:
        """The indexed packed codes, uint8 [ntotal, bits/8] in id order."""
        if not self.nlist:
            return self.cpu_index.reconstruct_n(0, self.ntotal)
        self.cpu_index.make_direct_map()  # IVF: where each id's code sits in the lists
        codes = self.cpu_index.reconstruct_n(0, self.ntotal)
        self.cpu_index.make_direct_map(False)
        return codes

    def save(self, path: str | Path) -> None:
        """Write the index (its CPU copy) to the file `path`, atomically; `BinaryIndex.load` reads it."""
        if Path(path).is_dir():
            raise ValueError(
                f"{path} is a directory: save the index to a file path (e.g. {Path(path) / 'codes.faissindex'})"
            )
        with atomic_path(path) as tmp:
            faiss.write_index_binary(self.cpu_index, str(tmp))

    @classmethod
    def load(cls, path: str | Path, use_gpu: bool | None = None) -> BinaryIndex:
        """The index `save` wrote to `path`, flat or IVF (with the nprobe it was saved with); `use_gpu` as
        for a new index (None: a flat index searches on the GPU where faiss-gpu sees a CUDA device)."""
        if not Path(path).is_file():
            what = "a directory, not an index file" if Path(path).is_dir() else "no such index file"
            raise FileNotFoundError(f"{path}: {what} (BinaryIndex.save writes one)")
        try:
            cpu = faiss.read_index_binary(str(path))
        except RuntimeError as error:  # FAISS's message names its C++ source before what went wrong
            reason = re.sub(r"^Error in .*? at \S+:\d+: ", "", str(error).strip()) or "unreadable"
            raise ValueError(f"{path} is not a FAISS binary index FAISS can read ({reason}): write it again") from None
        if type(cpu) not in (faiss.IndexBinaryFlat, faiss.IndexBinaryIVF):
            raise ValueError(
                f"{path} holds a FAISS {type(cpu).__name__}, not the IndexBinaryFlat or IndexBinaryIVF that "
                "BinaryIndex writes: build it with BinaryIndex and save it again"
            )
        ivf = isinstance(cpu, faiss.IndexBinaryIVF)
        index = cls(cpu.d, use_gpu=use_gpu, nlist=cpu.nlist if ivf else None)
        index.cpu_index = cpu
        return index
