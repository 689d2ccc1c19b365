"""Packed codes as uint64 words, and exact Hamming distances between them."""

from __future__ import annotations

import numpy as np


def as_words(packed: np.ndarray) -> np.ndarray:
    """View packed uint8 codes [n, B] as uint64 words [n, ceil(B/8)], zero-padding the tail."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((packed.shape[0], pad), np.uint8)], axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


def hamming_matrix(query_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances [q, n] (int32); for small sets and tests."""
    q, db = as_words(query_packed), as_words(db_packed)
    out = np.zeros((q.shape[0], db.shape[0]), dtype=np.int32)
    for w in range(db.shape[1]):
        out += np.bitwise_count(q[:, w, None] ^ db[None, :, w])
    return out
