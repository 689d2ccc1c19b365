"""Exact metrics against an independent brute-force implementation and torchmetrics; codes and the
FAISS index round-trip."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import RetrievalMAP

from pgh.retrieval import BinaryIndex, evaluate_codes, evaluate_packed, pack_codes, unpack_codes
from pgh.retrieval.hamming import hamming_matrix


def spherical(a, b):
    """The authors' spherical Hamming distance (Compute_SHD), exactly: |a xor b| / (|a and b| + 0.1)."""
    return Fraction(int((a != b).sum())) / (int((a & b).sum()) + Fraction(1, 10))


def brute_force(q, ql, db, dbl, map_k, precision_k, radius, top_n=(), ranking=None, curve=None):
    """Plain loops, straight from the definitions (stable tie-break by database index); `ranking`
    (a, b) -> distance ranks instead of Hamming distance (radius precision stays Hamming). Precision@K
    of a database smaller than K is over the whole database. `curve`: a list that receives the PR
    curve, [radius, precision, recall] for every radius 0..bits averaged over the queries (a query
    with nothing within the radius or nothing relevant scores 0)."""
    aps, apks, pks, prs, pns = [], [], [], [], []
    bits = len(q[0])
    curve_p, curve_r = np.zeros(bits + 1), np.zeros(bits + 1)
    for i in range(len(q)):
        dist = [int((q[i] != db[j]).sum()) for j in range(len(db))]
        rank_by = dist if ranking is None else [ranking(q[i], db[j]) for j in range(len(db))]
        order = sorted(range(len(db)), key=lambda j: (rank_by[j], j))
        rel = [dbl[j] == ql[i] for j in order]
        hits, precisions = 0, []
        for rank, r in enumerate(rel, start=1):
            if r:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / hits if hits else 0.0)
        in_k = precisions[: sum(rel[:map_k])]
        apks.append(sum(in_k) / len(in_k) if in_k else 0.0)
        pks.append(sum(rel[:precision_k]) / len(rel[:precision_k]))
        within = [j for j in range(len(db)) if dist[j] <= radius]
        prs.append(sum(dbl[j] == ql[i] for j in within) / len(within) if within else 0.0)
        pns.append([sum(rel[:n]) / n for n in top_n])
        for r in range(bits + 1):
            found = [dbl[j] == ql[i] for j in range(len(db)) if dist[j] <= r]
            curve_p[r] += sum(found) / len(found) / len(q) if found else 0.0
            curve_r[r] += sum(found) / sum(rel) / len(q) if sum(rel) else 0.0
    if curve is not None:
        curve.extend([r, curve_p[r], curve_r[r]] for r in range(bits + 1))
    return np.mean(aps), np.mean(apks), np.mean(pks), np.mean(prs), np.mean(pns, axis=0)


@pytest.mark.parametrize("bits,seed", [(8, 0), (16, 1), (24, 2), (72, 3), (512, 4)])
def test_metrics_match_brute_force(bits, seed):
    rng = np.random.default_rng(seed)
    db = rng.integers(0, 2, (120, bits)).astype(bool)
    q = rng.integers(0, 2, (15, bits)).astype(bool)
    q[0] = ~db[7]  # a database item at the largest distance (512 bits: past 255, an 8-bit count's limit)
    q[1] = db[3]
    dbl, ql = rng.integers(0, 4, 120), rng.integers(0, 4, 15)
    ql[14] = 9  # a query without a relevant item: 0 everywhere, and still one of the queries averaged
    # few bits -> many ties, which the stable order must break by database index
    result = evaluate_codes(q, ql, db, dbl, map_k=20, precision_k=10, radius=2)
    m = result.metrics
    curve = []
    ref = brute_force(q, ql, db, dbl, 20, 10, 2, top_n=(1, 10, 50, 100), curve=curve)  # TOP_N up to 120 items
    assert result.pr_curve == pytest.approx(np.array(curve), abs=1e-12)  # every radius, not only its ends
    assert m["map_all"] == pytest.approx(ref[0], abs=1e-12)
    assert m["map_at_20"] == pytest.approx(ref[1], abs=1e-12)
    assert m["precision_at_10"] == pytest.approx(ref[2], abs=1e-12)
    assert m["precision_radius_2"] == pytest.approx(ref[3], abs=1e-12)
    assert result.precision_at_n[:, 0].tolist() == [1, 10, 50, 100]
    assert result.precision_at_n[:, 1] == pytest.approx(ref[4], abs=1e-12)
    assert result.precision_at_n[3, 1] == pytest.approx(evaluate_codes(q, ql, db, dbl).metrics["precision_at_100"])
    # a K beyond the database: the precision of the whole database
    m = evaluate_codes(q, ql, db, dbl, map_k=20, precision_k=200, radius=2).metrics
    assert m["precision_at_200"] == pytest.approx(brute_force(q, ql, db, dbl, 20, 200, 2)[2], abs=1e-12)
    # per class: the brute force over that label's queries alone
    assert result.per_class[:, 0].tolist() == sorted(set(ql.tolist()))
    for label, queries, map_all, map_k, precision_k in result.per_class:
        mine = ql == label
        ref = brute_force(q[mine], ql[mine], db, dbl, 20, 10, 2)
        assert queries == mine.sum() and (map_all, map_k, precision_k) == pytest.approx(ref[:3], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spherical_ranking_matches_the_authors_distance(seed):
    # 8 bits with ~25% ones: many pairs share no 1-bit, some codes are all zeros; those rank by
    # 10x their Hamming distance, and an all-zero query finds all-zero codes first (distance 0)
    rng = np.random.default_rng(seed)
    db, q = rng.random((150, 8)) < 0.25, rng.random((20, 8)) < 0.25
    q[0], db[7] = False, False
    dbl, ql = rng.integers(0, 3, 150), rng.integers(0, 3, 20)
    m = evaluate_codes(q, ql, db, dbl, distance="spherical", map_k=20, precision_k=10).metrics
    ref = brute_force(q, ql, db, dbl, 20, 10, 2, ranking=spherical)
    assert (m["map_all"], m["map_at_20"], m["precision_at_10"]) == pytest.approx(ref[:3], abs=1e-12)
    # the all-zero query's first hit is the first all-zero code (a zero denominator once sent them last)
    first_zero = int(np.flatnonzero(~db.any(1))[0])
    for label in range(3):
        first = evaluate_codes(q[:1], [label], db, dbl, distance="spherical", map_k=1, precision_k=1).metrics
        assert first["precision_at_1"] == float(dbl[first_zero] == label)


def test_equal_spherical_distances_tie_exactly(monkeypatch):
    from pgh.retrieval.metrics import spherical_ranks

    # the rank table against exact fractions, every pair of counts at 32 bits
    table = spherical_ranks(32)
    pairs = [(x, b) for x in range(33) for b in range(33)]
    exact = sorted({Fraction(10 * x, 10 * b + 1) for x, b in pairs})
    assert all(table[x, b] == exact.index(Fraction(10 * x, 10 * b + 1)) for x, b in pairs)
    # 7 / 2.1 = 17 / 5.1, which float64 put apart: the two codes tie and keep database order
    query = np.zeros((1, 32), bool)
    query[0, :5] = True
    a, b = np.zeros(32, bool), np.zeros(32, bool)
    a[[0, 1, 10, 11, 12, 13]] = True  # 2 shared 1-bits, 7 differing
    b[:5], b[10:27] = True, True  # 5 shared, 17 differing
    for order, expected in (([a, b], 0.5), ([b, a], 1.0)):
        result = evaluate_codes(
            query, [1], np.stack(order), [0, 1] if expected == 0.5 else [1, 0], distance="spherical"
        )
        assert result.metrics["map_all"] == expected
    # longer codes rank each query's pairs of counts alone, without the table: the same ranking
    import pgh.retrieval.metrics as metrics

    rng = np.random.default_rng(3)
    db, q = rng.random((300, 32)) < 0.3, rng.random((20, 32)) < 0.3
    dbl, ql = rng.integers(0, 3, 300), rng.integers(0, 3, 20)
    with_table = evaluate_codes(q, ql, db, dbl, distance="spherical").metrics
    monkeypatch.setattr(metrics, "SPHERICAL_TABLE_MAX_BITS", 0)
    assert evaluate_codes(q, ql, db, dbl, distance="spherical").metrics == with_table
    for order, labels in (([a, b], [0, 1]), ([b, a], [1, 0])):
        tied = evaluate_codes(query, [1], np.stack(order), labels, distance="spherical").metrics["map_all"]
        assert tied == (0.5 if labels == [0, 1] else 1.0)


def test_random_tie_break_ranks_ties_in_one_fixed_shuffle_of_the_database():
    rng = np.random.default_rng(4)
    db, q = rng.integers(0, 2, (120, 8)).astype(bool), rng.integers(0, 2, (12, 8)).astype(bool)
    dbl, ql = np.sort(rng.integers(0, 4, 120)), rng.integers(0, 4, 12)  # stored class by class
    shuffle = np.random.default_rng(0).permutation(120)
    ref = brute_force(q, ql, db[shuffle], dbl[shuffle], 20, 10, 2)
    m = evaluate_codes(q, ql, db, dbl, map_k=20, precision_k=10, tie_break="random").metrics
    assert (m["map_all"], m["map_at_20"], m["precision_at_10"], m["precision_radius_2"]) == pytest.approx(
        ref[:4], abs=1e-12
    )
    # one code for everything (a collapse): in database order the lowest label's queries find their
    # class first; a random order scores each query about its class's share, as a collapse deserves
    collapsed, labels = np.zeros((1000, 8), bool), np.repeat(np.arange(10), 100)
    queries = np.zeros((10, 8), bool)
    in_order = evaluate_codes(queries, np.arange(10), collapsed, labels).metrics["map_all"]
    shuffled = evaluate_codes(queries, np.arange(10), collapsed, labels, tie_break="random").metrics["map_all"]
    assert in_order > 0.2 and shuffled == pytest.approx(0.1, abs=0.02)
    with pytest.raises(ValueError, match="tie_break='shuffle' is not one of"):
        evaluate_codes(q, ql, db, dbl, tie_break="shuffle")


def test_per_class_csv_names_classes_and_weights_back_to_the_overall_map():
    rng = np.random.default_rng(0)
    db, q = rng.integers(0, 2, (200, 16)).astype(bool), rng.integers(0, 2, (30, 16)).astype(bool)
    dbl, ql = rng.integers(0, 3, 200), np.repeat([0, 2], 15)  # class 1 has no queries: no row
    result = evaluate_codes(q, ql, db, dbl, map_k=50, precision_k=10)
    lines = result.per_class_csv({0: "T-shirt/top", 2: 'coat, "long"'}.__getitem__).splitlines()
    assert lines[0] == "label,class,queries,map_all,map_at_50,precision_at_10"
    assert [line.split(",")[:3] for line in lines[1:2]] == [["0", "T-shirt/top", "15"]]
    assert lines[2].startswith('2,"coat, ""long""",15,')  # quoted as CSV
    per_class = result.per_class
    assert (per_class[:, 1] * per_class[:, 2]).sum() / 30 == pytest.approx(result.metrics["map_all"], abs=1e-12)


def test_map_matches_torchmetrics():
    rng = np.random.default_rng(7)
    bits, n_db, n_q = 32, 300, 20
    db = rng.integers(0, 2, (n_db, bits)).astype(bool)
    q = rng.integers(0, 2, (n_q, bits)).astype(bool)
    dbl, ql = rng.integers(0, 5, n_db), rng.integers(0, 5, n_q)
    dist = hamming_matrix(pack_codes(q), pack_codes(db))
    # torchmetrics ignores scores <= 0 and its sort is not stable: use strictly positive scores
    # that encode the stable order (distance first, then database index)
    scores = (bits + 1 - dist) * n_db - np.arange(n_db)[None, :]
    metric = RetrievalMAP()
    preds = torch.tensor(scores, dtype=torch.float64).flatten()
    target = torch.tensor(dbl[None, :] == ql[:, None]).flatten()
    indexes = torch.arange(n_q).repeat_interleave(n_db)
    expected = metric(preds, target, indexes=indexes).item()
    assert evaluate_codes(q, ql, db, dbl).metrics["map_all"] == pytest.approx(
        expected, abs=1e-6
    )  # torchmetrics sums in float32


def test_perfect_and_reversed_codes():
    labels = np.repeat(np.arange(4), 10)
    codes = np.repeat(np.eye(4, dtype=bool)[labels], 2, axis=1)  # classes 4 bits apart
    r = evaluate_codes(codes, labels, codes, labels)
    assert r.metrics["map_all"] == 1.0 and r.metrics["precision_radius_2"] == pytest.approx(1.0)
    assert r.pr_curve[0, 1] == 1.0 and r.pr_curve[-1, 2] == 1.0  # precision 1 at r=0, recall 1 at r=bits
    assert r.average_precision.shape == (40,)


def test_query_without_relevant_items_scores_zero():
    q, db = np.zeros((1, 8), bool), np.zeros((5, 8), bool)
    assert evaluate_codes(q, [9], db, [0] * 5).metrics["map_all"] == 0.0


def test_bad_inputs():
    q = np.zeros((2, 16), bool)
    with pytest.raises(ValueError, match="multiple of 8"):
        evaluate_codes(np.zeros((2, 12), bool), [0, 1], np.zeros((2, 12), bool), [0, 1])
    with pytest.raises(ValueError, match="bits"):
        evaluate_codes(q, [0, 1], np.zeros((2, 8), bool), [0, 1])
    with pytest.raises(
        ValueError, match=r"^query labels have shape \(1,\) for query codes of shape \(2, 2\): give one label per code$"
    ):
        evaluate_codes(q, [0], q, [0, 1])
    with pytest.raises(ValueError, match=r"^database labels have shape \(2, 1\) for database codes of shape \(2, 2\)"):
        evaluate_codes(q, [0, 1], q, [[0], [1]])
    with pytest.raises(ValueError, match="distance"):
        evaluate_codes(q, [0, 1], q, [0, 1], distance="cosine")
    with pytest.raises(ValueError, match="binarise"):
        pack_codes(np.full((2, 8), 0.5))


def test_bad_labels_name_the_side_instead_of_being_cast():
    """Float labels were truncated (0.7 and 0.2 both class 0) and strings failed deep in NumPy."""
    rng = np.random.default_rng(0)
    q, db = rng.integers(0, 2, (6, 16)).astype(bool), rng.integers(0, 2, (9, 16)).astype(bool)
    ql, dbl = np.arange(6) % 3, np.arange(9) % 3
    with pytest.raises(
        ValueError,
        match=r"^query labels must be whole numbers \(class ids\), got float64 values such as \[0.7, 1.7, 2.7\]: map",
    ):
        evaluate_codes(q, ql + 0.7, db, dbl + 0.2)
    with pytest.raises(
        ValueError, match=r"^database labels must be whole numbers \(class ids\), got <U3 values such as \['cat'"
    ):
        evaluate_codes(q, ql, db, ["cat", "dog", "emu"] * 3)
    with pytest.raises(ValueError, match=r"database labels must be whole numbers .* such as \[nan, nan, nan\]"):
        evaluate_codes(q, ql, db, np.where(dbl == 1, np.nan, dbl))
    with pytest.raises(ValueError, match=r"query labels must be whole numbers .* such as \[1e\+20, 2e\+20\]"):
        evaluate_codes(q, np.array([1e20, 2e20, 0, 1, 2, 0]), db, dbl)  # both were cast to int64's minimum
    with pytest.raises(ValueError, match=r"query labels must be whole numbers .*, got uint64 values such as \[9223"):
        evaluate_codes(q, np.array([2**63, 1, 2, 0, 1, 2], dtype=np.uint64), db, dbl)
    # packed codes as tensors too (on any device): they went through np.asarray
    packed = evaluate_packed(torch.from_numpy(pack_codes(q)), ql, torch.from_numpy(pack_codes(db)), dbl).metrics
    assert packed == evaluate_codes(q, ql, db, dbl).metrics
    # whole-valued floats (a float tensor of class ids) and bools are labels as they are
    expected = evaluate_codes(q, ql, db, dbl).metrics
    assert evaluate_codes(q, torch.tensor(ql, dtype=torch.float32), db, dbl.astype(float)).metrics == expected
    assert evaluate_codes(q, ql == 1, db, dbl == 1).metrics == evaluate_codes(q, ql == 1, db, (dbl == 1) * 1).metrics


def test_unpack_codes_refuses_what_is_not_packed_codes_of_that_width():
    """On a 32-bit run's codes, bits=64 padded with zeros and bits=16 truncated; other dtypes were cast."""
    codes = np.random.default_rng(0).integers(0, 2, (5, 32)).astype(bool)
    packed = pack_codes(codes)
    assert np.array_equal(unpack_codes(packed, 32), codes) and np.array_equal(unpack_codes(packed), codes)
    for bits in (64, 16):
        with pytest.raises(
            ValueError,
            match=rf"^bits={bits} but the packed codes are 4 bytes wide \(32 bits, shape \(5, 4\)\): pass bits=32, "
            rf"or codes of {bits // 8} bytes$",
        ):
            unpack_codes(packed, bits)
    for bad, hint in (
        (packed.astype(np.int64) + 256, "a cast would wrap or truncate other values into other codes"),
        (packed + 0.5, "a cast would wrap"),
        (codes, r"bool codes \[n, bits\] are unpacked already \(pack_codes packs them\)"),
        (packed[0], "a cast would wrap"),
    ):
        with pytest.raises(
            ValueError, match=rf"^expected packed uint8 codes \[n, bits/8\], got {bad.dtype} of shape .*: {hint}"
        ):
            unpack_codes(bad)
    with pytest.raises(ValueError, match="bits=12 is not a positive multiple of 8"):
        unpack_codes(packed, 12)


def test_bits_cast_to_uint8_are_named_where_packed_codes_are_expected():
    """`(h > 0).astype(np.uint8)` passed every packed-codes check: code_statistics called 112 of 128
    bits constant, and the metrics and the index ranked other codes without a word."""
    from pgh.retrieval import code_statistics
    from pgh.retrieval.codes import LooksUnpackedWarning

    bits = np.random.default_rng(0).integers(0, 2, (40, 16)).astype(bool)
    cast = bits.astype(np.uint8)  # [40, 16]: read as 128 packed bits
    labels = np.arange(40) % 4
    warned = r"the codes \[40, 16\] hold only 0 and 1 bytes: they look like unpacked bits \[n, bits\] cast to uint8"
    with pytest.warns(LooksUnpackedWarning, match=warned):
        code_statistics(cast, 128)
    with pytest.warns(LooksUnpackedWarning, match=r"the query codes \[40, 16\] hold only 0 and 1 bytes"):
        evaluate_packed(cast, labels, pack_codes(np.repeat(bits, 8, axis=1)), labels)
    with pytest.warns(LooksUnpackedWarning, match=warned):
        BinaryIndex(128).add(cast)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # packed codes, and all-zero ones (a collapse), pass quietly
        code_statistics(pack_codes(bits), 16)
        code_statistics(np.zeros((40, 16), np.uint8), 128)
    with pytest.raises(ValueError, match=r"num_threads=-1 must be a whole number >= 1, or None"):
        evaluate_packed(pack_codes(bits), labels, pack_codes(bits), labels, num_threads=-1)


def test_packed_bit_order_is_least_significant_first():
    """Bit j of a code is bit j % 8 of byte j // 8: the layout of every saved codes.npy and index."""
    codes = np.zeros((3, 16), bool)
    codes[0, 0] = codes[1, 9] = True
    codes[2, [0, 7, 8, 15]] = True
    assert pack_codes(codes).tolist() == [[1, 0], [0, 2], [129, 129]]
    assert np.array_equal(unpack_codes(np.array([[1, 0], [0, 2], [129, 129]], np.uint8)), codes)


def test_pack_roundtrip_and_faiss_agree():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, (500, 64)).astype(bool)
    packed = pack_codes(codes)
    assert packed.shape == (500, 8) and np.array_equal(unpack_codes(packed), codes)
    index = BinaryIndex(64, use_gpu=False).add(packed)
    dist, ids = index.search(packed[:10], k=5)
    full = hamming_matrix(packed[:10], packed)
    assert np.array_equal(dist, np.sort(full, axis=1)[:, :5])
    assert np.array_equal(full[np.arange(10)[:, None], ids], dist)
    assert (ids[:, 0] == np.arange(10)).all()
    labels = np.arange(500) % 10
    with pytest.raises(
        ValueError, match=r"got uint8 values from \d+ to \d+: packed uint8 codes .* go to evaluate_packed"
    ):
        evaluate_codes(packed[:10], labels[:10], packed, labels)
    with pytest.raises(ValueError, match=r"got float64 values from .*: binarise them"):
        pack_codes(rng.normal(size=(3, 8)))
    with pytest.raises(
        ValueError, match=r"values from -1 to 1: codes of -1/\+1 \(from sign\) map to bits with codes > 0"
    ):
        pack_codes(np.where(codes[:3, :8], 1, -1))
    # the other mix-up: unpacked codes given where packed ones go
    with pytest.raises(
        ValueError, match=r"query codes must be packed uint8 \[n, bits/8\], got bool .* go to evaluate_codes"
    ):
        evaluate_packed(codes[:10], labels[:10], packed, labels)
    for bad in (np.int64, np.float32):  # a cast would have wrapped 256 to 0 and truncated 0.7
        with pytest.raises(ValueError, match=f"expected packed uint8 codes \\[n, 8\\], got {np.dtype(bad)}"):
            index.search(packed[:2].astype(bad) + 256, 5)
    assert np.array_equal(index.search(packed[:2], np.int64(5))[1], ids[:2])  # a NumPy integer k is a k
    for k in (5.0, True):
        with pytest.raises(ValueError, match="must be a whole number in 1..500"):
            index.search(packed[:2], k)
    for option in ({"radius": 2.5}, {"map_k": 10.5}, {"precision_k": 0}, {"radius": 65}):
        with pytest.raises(ValueError, match=f"{next(iter(option))} must be a whole number"):
            evaluate_packed(packed[:10], labels[:10], packed, labels, **option)


def test_index_save_load_roundtrip(tmp_path):
    import faiss

    packed = pack_codes(np.random.default_rng(1).integers(0, 2, (100, 32)).astype(bool))
    index = BinaryIndex(32, use_gpu=False).add(packed)
    index.save(tmp_path / "codes.faissindex")
    loaded = BinaryIndex.load(tmp_path / "codes.faissindex", use_gpu=False)
    assert loaded.ntotal == 100 and loaded.bits == 32
    assert np.array_equal(loaded.search(packed[:3], 4)[1], index.search(packed[:3], 4)[1])
    assert [p.name for p in tmp_path.iterdir()] == ["codes.faissindex"]  # no temp files left
    with pytest.raises(ValueError, match="k=500"):
        index.search(packed[:1], 500)
    with pytest.raises(ValueError, match="packed codes"):
        index.add(np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"the index is empty: add\(codes\) before searching"):
        BinaryIndex(32, use_gpu=False).search(packed[:1], 1)  # FAISS returned distances INT_MAX and ids -1
    with pytest.raises(FileNotFoundError, match="nowhere.faissindex: no such index file"):
        BinaryIndex.load(tmp_path / "nowhere.faissindex")
    with pytest.raises(FileNotFoundError, match="a directory, not an index file"):
        BinaryIndex.load(tmp_path)
    with pytest.raises(ValueError, match=f"^{tmp_path} is a directory: save the index to a file path"):
        index.save(tmp_path)  # was an IsADirectoryError naming a temporary file
    other = faiss.IndexBinaryHash(32, 8)  # a FAISS binary index BinaryIndex does not write: it loaded as exact
    other.add(packed)
    faiss.write_index_binary(other, str(tmp_path / "hash.faissindex"))
    with pytest.raises(ValueError, match="hash.faissindex holds a FAISS IndexBinaryHash, not the IndexBinaryFlat or"):
        BinaryIndex.load(tmp_path / "hash.faissindex")
    with pytest.raises(ValueError, match=r"the index is empty"):
        BinaryIndex(32, use_gpu=False).search_radius(packed[:1], 2)


def clustered_codes(n: int, centres: int, bits: int, flip: float) -> np.ndarray:
    """Packed codes around `centres` random centres, each bit flipped with probability `flip`."""
    rng = np.random.default_rng(0)
    centre_codes = rng.integers(0, 2, (centres, bits)).astype(bool)
    return pack_codes(centre_codes[rng.integers(0, centres, n)] ^ (rng.random((n, bits)) < flip))


def test_ivf_index_scanning_every_list_is_exact_and_a_few_lists_find_most_neighbours(tmp_path):
    packed, queries = np.split(clustered_codes(5200, centres=50, bits=64, flip=0.05), [5000])
    exact_distances, exact_ids = BinaryIndex(64, use_gpu=False).add(packed).search(queries, 10)
    ivf = BinaryIndex(64, nlist=50).train(packed).add(packed)
    assert (ivf.nlist, ivf.nprobe, ivf.use_gpu, ivf.ntotal) == (50, 16, False, 5000)

    ivf.nprobe = 50
    assert np.array_equal(ivf.search(queries, 10)[0], exact_distances)
    ivf.nprobe = 2
    distances, ids = ivf.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)])
    assert recall >= 0.9 and (distances >= exact_distances).all()

    ivf.save(tmp_path / "ivf.faissindex")
    loaded = BinaryIndex.load(tmp_path / "ivf.faissindex")
    assert (loaded.nlist, loaded.nprobe, loaded.ntotal, loaded.use_gpu) == (50, 2, 5000, False)
    assert np.array_equal(loaded.search(queries, 10)[1], ids)

    ivf.nprobe = 1  # one list holds about 100 codes: the rest of the top 1000 is missing
    assert (ivf.search(queries[:5], 1000)[1] == -1).any()


def test_ivf_rows_are_exact_below_the_kth_distance_and_its_ties_follow_the_lists():
    """What README's Ties says of IVF scanning every list: the distances are the exact ones, each row is
    ordered by (distance, id), and the ids below the k-th distance are the stable ranking's; those tied
    at the k-th distance are codes at that distance, but not the smallest ids (the lists' order)."""
    packed = np.random.default_rng(5).integers(0, 256, (40_000, 2), dtype=np.uint8)  # 16 bits: many ties
    queries = packed[:20]
    full = hamming_matrix(queries, packed)
    stable = np.argsort(full, axis=1, kind="stable")[:, :50]
    flat_distances, flat_ids = BinaryIndex(16, use_gpu=False).add(packed).search(queries, 50)
    assert np.array_equal(flat_ids, stable)  # the exact index: the stable ranking's top k, ties at the k-th too
    distances, ids = BinaryIndex(16, nlist=64, nprobe=64).train(packed).add(packed).search(queries, 50)
    assert np.array_equal(distances, flat_distances)
    assert all(np.array_equal(np.lexsort((i, d)), np.arange(50)) for d, i in zip(distances, ids))
    below = distances < distances[:, -1:]
    assert np.array_equal(ids[below], stable[below])
    assert np.array_equal(full[np.arange(20)[:, None], ids], distances)  # the tied ones are at that distance
    assert not np.array_equal(ids, stable)  # but other ids than the smallest


def test_index_codes_are_the_added_codes_in_id_order():
    packed = clustered_codes(300, centres=5, bits=32, flip=0.1)
    for nlist in (None, 4):
        index = BinaryIndex(32, use_gpu=False, nlist=nlist).train(packed).add(packed)
        assert np.array_equal(index.codes(), packed)
        assert np.array_equal(index.search(packed[:3], 1)[0], np.zeros((3, 1)))  # still searches
    assert BinaryIndex(32, use_gpu=False).codes().shape == (0, 4)


def test_ivf_index_errors():
    packed = clustered_codes(100, centres=5, bits=32, flip=0.1)
    with pytest.raises(ValueError, match=r"needs train\(codes\) before add"):
        BinaryIndex(32, nlist=8).add(packed)
    with pytest.raises(ValueError, match="100 training codes for nlist=200"):
        BinaryIndex(32, nlist=200).train(packed)
    with pytest.raises(ValueError, match="no GPU binary IVF"):
        BinaryIndex(32, use_gpu=True, nlist=8)
    with pytest.raises(ValueError, match=r"nprobe=9 must be a whole number in 1..nlist=8"):
        BinaryIndex(32, nlist=8, nprobe=9)
    for nprobe in (2.0, True):  # True was nprobe 1
        with pytest.raises(ValueError, match=f"^nprobe={nprobe!r} must be a whole number in 1..nlist=8$"):
            BinaryIndex(32, nlist=8, nprobe=nprobe)
    for nlist in (3.5, True):  # 3.5: a SWIG TypeError of several lines; True: nlist 1
        with pytest.raises(ValueError, match=rf"^nlist={nlist!r} must be a whole number of centroids >= 1 \(or None"):
            BinaryIndex(32, nlist=nlist)
    assert BinaryIndex(32, nlist=np.int64(4), nprobe=np.int64(2)).nprobe == 2
    with pytest.raises(ValueError, match="nprobe=4 needs an IVF index"):
        BinaryIndex(32, use_gpu=False, nprobe=4)
    with pytest.raises(ValueError, match="nlist=0"):
        BinaryIndex(32, nlist=0)
    assert BinaryIndex(32, nlist=8).nprobe == 8 and BinaryIndex(32, use_gpu=False).train(packed).nprobe is None


def test_an_ivf_index_refuses_nprobe_0():
    """nprobe=0 scans no list: every search would come back empty (FAISS's -1 ids) without a word."""
    with pytest.raises(ValueError, match=r"^nprobe=0 must be a whole number in 1..nlist=8$"):
        BinaryIndex(32, nlist=8, nprobe=0)


@pytest.mark.gpu
def test_faiss_gpu_matches_cpu():
    from pgh.retrieval.index import gpu_available

    if not gpu_available():
        pytest.skip("needs faiss-gpu and a CUDA device")
    packed = pack_codes(np.random.default_rng(2).integers(0, 2, (5000, 64)).astype(bool))
    cpu = BinaryIndex(64, use_gpu=False).add(packed).search(packed[:50], 20)[0]
    gpu = BinaryIndex(64, use_gpu=True).add(packed).search(packed[:50], 20)[0]
    assert np.array_equal(cpu, gpu)


def test_shadowed_faiss_gpu_wheel_is_named_with_the_fix(monkeypatch):
    """faiss-gpu installed, but faiss-cpu's build in the shared `faiss` folder: a warning in auto mode,
    an error naming the reinstall command when the GPU is asked for."""
    from importlib import metadata

    from pgh.retrieval import index as index_module

    monkeypatch.delattr(index_module.faiss, "StandardGpuResources", raising=False)
    real_distribution = metadata.distribution

    def distribution(name):
        return object() if name == "faiss-gpu" else real_distribution(name)

    monkeypatch.setattr(index_module.metadata, "distribution", distribution)
    assert index_module.gpu_wheel_shadowed()
    with pytest.warns(UserWarning, match="faiss-cpu's files replaced it"):
        assert not index_module.gpu_available()
    with pytest.raises(RuntimeError, match="force-reinstall --no-deps 'faiss-gpu"):
        BinaryIndex(32, use_gpu=True)
    monkeypatch.setattr(index_module.metadata, "distribution", real_distribution)
    if "faiss-gpu" not in {d.metadata["Name"] for d in metadata.distributions()}:
        assert not index_module.gpu_wheel_shadowed()
        with pytest.raises(RuntimeError, match=r"no GPU support here; pip install -e '\.\[gpu\]'"):
            BinaryIndex(32, use_gpu=True)


class FakeGpuIndex:
    """faiss.GpuIndexBinaryFlat stand-in: searches the CPU index, then `corrupt`s the distances (a build
    without kernels for the GPU leaves whatever was in the output buffer)."""

    corrupt = staticmethod(lambda distances: distances)

    def __init__(self, resources, cpu_index):
        self.cpu_index = cpu_index

    def search(self, queries, k):
        distances, ids = self.cpu_index.search(queries, k)
        return type(self).corrupt(distances), ids


@pytest.fixture
def fake_faiss_gpu(monkeypatch):
    """faiss with GPU classes and one GPU, whatever is installed; the once-per-process check forgotten."""
    from pgh.retrieval import index as index_module

    monkeypatch.setattr(index_module.faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(index_module.faiss, "GpuIndexBinaryFlat", FakeGpuIndex, raising=False)
    monkeypatch.setattr(index_module.faiss, "get_num_gpus", lambda: 1)
    index_module.gpu_search_problem.cache_clear()
    yield index_module
    index_module.gpu_search_problem.cache_clear()


def test_faiss_gpu_search_that_matches_the_cpu_is_used(fake_faiss_gpu):
    packed = pack_codes(np.random.default_rng(3).integers(0, 2, (300, 32)).astype(bool))
    assert fake_faiss_gpu.gpu_search_problem() is None and fake_faiss_gpu.gpu_available()
    index = BinaryIndex(32).add(packed)
    assert index.use_gpu
    distances, ids = index.search(packed[:5], 7)
    assert isinstance(index._gpu_index, FakeGpuIndex)  # the search went through the (fake) GPU index
    assert np.array_equal(distances, BinaryIndex(32, use_gpu=False).add(packed).search(packed[:5], 7)[0])


@pytest.mark.parametrize(
    "corrupt, problem",
    [
        (lambda distances: np.zeros_like(distances), "returns wrong distances on GPU 0"),
        (lambda distances: distances[:, ::-1], "returns wrong distances on GPU 0"),
        (lambda distances: 1 / 0, r"fails on GPU 0 \(ZeroDivisionError"),
    ],
    ids=["zeros", "reordered", "raises"],
)
def test_faiss_gpu_search_that_differs_from_the_cpu_is_refused(fake_faiss_gpu, monkeypatch, corrupt, problem):
    """A faiss-gpu with no kernels for the GPU returned garbage without an error (faiss-gpu-cu12 1.14.1
    on an H200): auto mode warns and searches on the CPU, use_gpu=True fails, both naming the fix."""
    monkeypatch.setattr(FakeGpuIndex, "corrupt", staticmethod(corrupt))
    with pytest.warns(UserWarning, match=problem + r".*install PyPI's faiss-gpu.*\(searching on the CPU\)$"):
        assert not fake_faiss_gpu.gpu_available()
    with pytest.warns(UserWarning, match=problem):
        assert not BinaryIndex(32).use_gpu
    with pytest.raises(RuntimeError, match="^use_gpu=True but faiss's GPU search " + problem):
        BinaryIndex(32, use_gpu=True)
    with pytest.raises(RuntimeError, match="CMAKE_CUDA_ARCHITECTURES naming this GPU; or search with use_gpu=False$"):
        BinaryIndex(32, use_gpu=True)


def test_incomplete_faiss_folder_fails_on_import(monkeypatch):
    """Uninstalling one of faiss-cpu / faiss-gpu leaves `faiss` as an empty namespace: named on import."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    import pgh.retrieval.index as index_module

    monkeypatch.setitem(sys.modules, "faiss", types.ModuleType("faiss"))
    spec = importlib.util.spec_from_file_location("index_copy", Path(index_module.__file__))
    with pytest.raises(ImportError, match="faiss-cpu and faiss-gpu share that folder"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from pgh.io import write_text

    write_text(tmp_path / "result.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "result.txt").stat().st_mode) == 0o666 & ~mask


def test_atomic_writes_reach_the_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    """fsync of the file's data, then the rename, then fsync of the folder: a machine crash leaves
    the old file or the whole new one, never an empty one under the final name."""
    import os

    import pgh.io

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(pgh.io.os, "fsync", fsync)
    monkeypatch.setattr(pgh.io.os, "replace", replace)
    pgh.io.write_json(tmp_path / "metrics.json", {"map_all": 0.5})
    (kind0, synced), (kind1, replaced), (kind2, folder) = events
    assert (kind0, kind1, kind2) == ("fsync", "replace", "fsync")
    assert Path(synced).name.startswith(".metrics.json.") and Path(synced).parent == tmp_path
    assert replaced == str(tmp_path / "metrics.json") and folder == str(tmp_path)


def test_code_statistics_against_numpy():
    from pgh.retrieval import code_statistics

    rng = np.random.default_rng(3)
    codes = rng.random((70_000, 16)) < np.linspace(0.1, 0.9, 16)  # more rows than one 2**16 chunk
    codes[:, 3] = codes[:, 2]  # a repeated bit
    codes[:, 5] = ~codes[:, 4]  # a mirrored bit
    codes[:, 7] = True  # a constant bit
    stats = code_statistics(pack_codes(codes), 16)
    varying = [b for b in range(16) if b != 7]
    r = np.corrcoef(codes[:, varying].astype(float), rowvar=False)
    assert stats["bit_correlation"] == pytest.approx(np.abs(r[np.triu_indices(15, k=1)]).mean(), rel=1e-9)
    assert stats["bit_imbalance"] == pytest.approx(np.abs(codes.mean(0) - 0.5).mean(), rel=1e-12)
    assert stats["constant_bits"] == 1
    assert stats["distinct_codes"] == len({row.tobytes() for row in codes})

    collapsed = code_statistics(pack_codes(np.ones((10, 8), bool)), 8)
    assert collapsed == {"distinct_codes": 1, "constant_bits": 8, "bit_imbalance": 0.5, "bit_correlation": None}
    with pytest.raises(
        ValueError, match=r"bits=16 but the packed codes are 1 bytes wide \(8 bits, shape \(70000, 1\)\)"
    ):
        code_statistics(pack_codes(codes[:, :8]), 16)
    with pytest.raises(ValueError, match=r"expected packed uint8 codes \[n, bits/8\], got int64 of shape \(70000, 2\)"):
        code_statistics(pack_codes(codes).astype(np.int64) * 5, 16)  # a cast wrapped them into other codes
    with pytest.raises(ValueError, match="code_statistics needs at least one code, got none"):
        code_statistics(np.zeros((0, 2), np.uint8), 16)


def test_packed_codes_in_fortran_order_are_read_as_the_same_codes():
    """Packed codes are made contiguous before use: a Fortran-order array (a transpose's result) made
    code_statistics' row view fail."""
    from pgh.retrieval import code_statistics

    packed = pack_codes(np.random.default_rng(0).integers(0, 2, (50, 32)).astype(bool))
    fortran = np.asfortranarray(packed)
    assert not fortran.flags.c_contiguous
    assert code_statistics(fortran, 32) == code_statistics(packed, 32)
    assert np.array_equal(unpack_codes(fortran), unpack_codes(packed))


@pytest.mark.parametrize("nlist", [None, 4])
def test_radius_search_returns_every_code_within_the_radius_nearest_first(nlist):
    """Against the brute-force Hamming matrix, radius inclusive (FAISS's own is strict); IVF probing
    every list is exact too."""
    packed = clustered_codes(600, centres=5, bits=32, flip=0.15)
    index = BinaryIndex(32, use_gpu=False, nlist=nlist, nprobe=nlist)
    index.train(packed).add(packed)
    queries = packed[:20]
    full = hamming_matrix(queries, packed)
    for radius in (0, 3, 6):
        lims, distances, ids = index.search_radius(queries, radius)
        assert lims.shape == (21,) and lims[-1] == len(ids) == len(distances)
        for i in range(20):
            expected = np.flatnonzero(full[i] <= radius)
            expected = expected[np.lexsort((expected, full[i, expected]))]  # nearest first, ties by id
            assert ids[lims[i] : lims[i + 1]].tolist() == expected.tolist()
            assert distances[lims[i] : lims[i + 1]].tolist() == full[i, expected].tolist()
    with pytest.raises(ValueError, match=r"radius=33 must be a whole number of bits in 0..32"):
        index.search_radius(queries, 33)


def test_the_gpu_marker_skips_without_cuda(tmp_path):
    """A test with only @pytest.mark.gpu ran, and failed, on a machine without a GPU."""
    import shutil
    import subprocess
    import sys

    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_gpu.py").write_text(
        "import pytest, torch\n\n@pytest.mark.gpu\ndef test_cuda():\n    assert torch.cuda.is_available()\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", str(tmp_path)],
        capture_output=True, text=True, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    expected = "1 passed" if torch.cuda.is_available() else "1 skipped"
    assert expected in done.stdout, done.stdout[-2000:]


def test_packed_codes_of_zero_bytes_are_refused_by_their_width():
    from pgh.retrieval import evaluate_packed

    with pytest.raises(ValueError, match=r"the codes have 0 bytes: packed codes are \[n, bits/8\] with bits >= 8"):
        evaluate_packed(np.zeros((2, 0), np.uint8), [0, 1], np.zeros((3, 0), np.uint8), [0, 1, 1])


def test_a_gpu_index_says_once_that_a_k_above_the_gpus_limit_is_searched_on_the_cpu(caplog):
    """FAISS's GPU search takes k <= 2048; a larger k went to the CPU without a word."""
    import logging

    from pgh.retrieval.index import GPU_MAX_K

    packed = np.random.default_rng(0).integers(0, 256, (GPU_MAX_K + 100, 4), dtype=np.uint8)
    index = BinaryIndex(32, use_gpu=False).add(packed)
    expected = index.search(packed[:2], GPU_MAX_K + 1)
    index.use_gpu = True  # as on a GPU machine; a k above the limit never reaches the GPU index
    with caplog.at_level(logging.WARNING, logger="pgh.retrieval.index"):
        for _ in range(2):
            distances, ids = index.search(packed[:2], GPU_MAX_K + 1)
    assert np.array_equal(distances, expected[0]) and np.array_equal(ids, expected[1])
    said = f"k={GPU_MAX_K + 1} is more than FAISS's GPU search takes ({GPU_MAX_K}): searching on the CPU"
    assert caplog.text.count(said) == 1


def test_the_search_api_loads_without_torch():
    """A search service imports pgh.retrieval: it pulled in torch (3 s and about 600 MB) for nothing."""
    import subprocess
    import sys

    script = "import sys; import pgh.retrieval; print('torch' in sys.modules, 'lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    codes = torch.rand(5, 16) > 0.5  # tensors are still taken, on any device
    assert np.array_equal(unpack_codes(pack_codes(codes)), codes.numpy())
