"""Binary codes: bool [n, bits] <-> packed uint8 [n, bits/8] (FAISS's binary layout)."""

from __future__ import annotations

import numpy as np
import torch


def check_bits(bits: int) -> int:
    """Code lengths are positive multiples of 8 so that codes pack into whole bytes."""
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or bits <= 0 or bits % 8:
        raise ValueError(f"bits={bits!r} is not a positive multiple of 8; use 16, 32, 64 or another multiple of 8")
    return int(bits)


def as_bool_codes(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    array = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if array.ndim != 2:
        raise ValueError(f"codes must be 2-D [n, bits], got shape {array.shape}")
    if array.dtype != np.bool_:
        if not np.isin(array, (0, 1)).all():
            raise ValueError("codes must be boolean or 0/1; binarise them before packing")
        array = array.astype(np.bool_)
    return array


def pack_codes(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    """bool/0-1 codes [n, bits] -> uint8 [n, bits // 8], bit j of code in byte j // 8 (LSB first)."""
    array = as_bool_codes(codes)
    check_bits(array.shape[1])
    return np.packbits(array, axis=1, bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8)
    return np.unpackbits(packed, axis=1, count=bits, bitorder="little").astype(np.bool_)
