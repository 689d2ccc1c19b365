"""Binary codes: bool [n, bits] <-> packed uint8 [n, bits/8] (FAISS's binary layout), and the
statistics hashing papers report on a set of codes (distinct codes, bit balance, bit correlation).
Like the rest of the search API (`pgh.retrieval`: codes, metrics, `BinaryIndex`), it takes torch
tensors but does not import torch: a search service loads in a fraction of torch's time and memory."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def check_bits(bits: int) -> int:
    """Code lengths are positive multiples of 8 so that codes pack into whole bytes."""
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or bits <= 0 or bits % 8:
        raise ValueError(f"bits={bits!r} is not a positive multiple of 8; use 16, 32, 64 or another multiple of 8")
    return int(bits)


def to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A torch tensor (on any device) or anything array-like as a NumPy array."""
    return x.detach().cpu().numpy() if type(x).__module__.startswith("torch") else np.asarray(x)


def as_bool_codes(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    array = to_numpy(codes)
    if array.ndim != 2:
        raise ValueError(f"codes must be 2-D [n, bits], got shape {array.shape}")
    if array.dtype != np.bool_:
        if not np.isin(array, (0, 1)).all():
            hint = "binarise them (e.g. codes > 0)"
            if np.isin(array, (-1, 0, 1)).all():  # sign() codes: -1/+1
                hint = "codes of -1/+1 (from sign) map to bits with codes > 0"
            elif array.dtype == np.uint8:  # the likely mix-up: codes that are packed already
                hint = "packed uint8 codes [n, bits/8] go to evaluate_packed / BinaryIndex, or unpack_codes them first"
            raise ValueError(f"expected unpacked codes [n, bits] of bool or 0/1, got {array.dtype} values from "
                             f"{array.min()} to {array.max()}: {hint}")  # fmt: skip
        array = array.astype(np.bool_)
    return array


def pack_codes(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    """bool/0-1 codes [n, bits] -> uint8 [n, bits // 8], bit j of code in byte j // 8 (LSB first)."""
    array = as_bool_codes(codes)
    check_bits(array.shape[1])
    return np.packbits(array, axis=1, bitorder="little")


class LooksUnpackedWarning(UserWarning):
    """Packed codes whose every byte is 0 or 1: most likely bits [n, bits] cast to uint8, not packed."""


def warn_if_unpacked(packed: np.ndarray, name: str = "codes") -> None:
    """Warn when uint8 `packed` codes hold 0 and 1 bytes only, and both (16 bytes or more): that is what
    `(h > 0).astype(np.uint8)` gives, unpacked bits that read as packed would give other numbers, while
    packed codes of real data have bytes 0..255. A warning, not an error: such codes can be genuine."""
    if packed.size >= 16 and packed.min() == 0 and packed.max() == 1:
        warnings.warn(
            f"the {name} {list(packed.shape)} hold only 0 and 1 bytes: they look like unpacked bits "
            "[n, bits] cast to uint8; packed codes are uint8 [n, bits/8] from pgh.retrieval.pack_codes",
            LooksUnpackedWarning,
            stacklevel=3,
        )


def as_packed_codes(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """`packed` as contiguous uint8 codes [n, bits/8] (bits None: as many as its width holds), or a
    ValueError naming what it is instead: a cast would wrap or truncate other values into other codes."""
    array = to_numpy(packed)
    if array.dtype != np.uint8 or array.ndim != 2:
        hint = "a cast would wrap or truncate other values into other codes"
        if array.dtype == np.bool_:
            hint = "bool codes [n, bits] are unpacked already (pack_codes packs them)"
        raise ValueError(f"expected packed uint8 codes [n, bits/8], got {array.dtype} of shape {array.shape}: {hint}")
    if bits is not None and check_bits(bits) != 8 * array.shape[1]:
        raise ValueError(
            f"bits={bits} but the packed codes are {array.shape[1]} bytes wide ({8 * array.shape[1]} bits, shape "
            f"{array.shape}): pass bits={8 * array.shape[1]}, or codes of {bits // 8} bytes"
        )
    warn_if_unpacked(array)
    return np.ascontiguousarray(array)


def unpack_codes(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """uint8 [n, bits // 8] -> bool [n, bits], the inverse of pack_codes; bits None: 8 x the width."""
    return np.unpackbits(as_packed_codes(packed, bits), axis=1, bitorder="little").astype(np.bool_)


def code_statistics(packed: np.ndarray, bits: int) -> dict[str, float | int | None]:
    """How well a set of packed codes [n, bits/8] uses its bits:

    - `distinct_codes`: different codes among the n (1: every item got the same code, a collapse);
    - `constant_bits`: bits that are the same in every code (they separate nothing);
    - `bit_imbalance`: mean over bits of |share of ones - 1/2| (0: every bit splits the items in
      half, the balance that hashing objectives ask for; 1/2: constant bits);
    - `bit_correlation`: mean |Pearson correlation| over pairs of non-constant bits (0: independent
      bits; 1: bits that repeat or mirror each other). None with fewer than two non-constant bits.
    """
    packed = as_packed_codes(packed, bits)
    if len(packed) == 0:
        raise ValueError("code_statistics needs at least one code, got none")
    n = len(packed)
    # co-occurrence counts of ones, bit by bit pair, a chunk of codes at a time (float32 products of
    # 0/1 over 2**16 rows are exact; the sums are kept in float64)
    together = np.zeros((bits, bits))
    for start in range(0, n, 1 << 16):
        chunk = unpack_codes(packed[start : start + (1 << 16)], bits).astype(np.float32)
        together += chunk.T @ chunk
    ones = np.diag(together) / n
    varying = (ones > 0) & (ones < 1)
    correlation = None
    if varying.sum() >= 2:
        p = ones[varying]
        covariance = together[np.ix_(varying, varying)] / n - np.outer(p, p)
        r = covariance / np.sqrt(np.outer(p * (1 - p), p * (1 - p)))
        correlation = float(np.abs(r[np.triu_indices_from(r, k=1)]).mean())
    return {
        "distinct_codes": int(len(np.unique(packed.view(f"V{packed.shape[1]}").ravel()))),
        "constant_bits": int((~varying).sum()),
        "bit_imbalance": float(np.abs(ones - 0.5).mean()),
        "bit_correlation": correlation,
    }
