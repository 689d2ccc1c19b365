"""Codes, exact Hamming ranking metrics, and FAISS binary indexes for search."""

from pgh.retrieval.codes import check_bits, code_statistics, pack_codes, unpack_codes
from pgh.retrieval.index import BinaryIndex
from pgh.retrieval.metrics import RetrievalResult, evaluate_codes, evaluate_packed

__all__ = [
    "BinaryIndex",
    "RetrievalResult",
    "check_bits",
    "code_statistics",
    "evaluate_codes",
    "evaluate_packed",
    "pack_codes",
    "unpack_codes",
]
