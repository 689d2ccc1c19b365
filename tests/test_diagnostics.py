"""benchmarks/diag_pgh_ceilings.py, whose numbers the README quotes: its exact ranking against
scikit-learn's average precision, its neighbourhood counts against scikit-learn's neighbours, and
the manifold-hashing and mutual-vote modes end to end, on digits."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from conftest import run_python
from sklearn.metrics import average_precision_score

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "diag_pgh_ceilings.py"


def test_exact_ranking_is_the_mean_average_precision_of_euclidean_distances(tmp_path, monkeypatch):
    done = run_python(str(SCRIPT), "exact", "--dataset", "digits", "--features", "pixels", tmp_path=tmp_path)
    printed = float(re.search(r"mAP@all ([\d.]+)", done.stdout).group(1))

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("PGH_CACHE_DIR", str(tmp_path / "cache"))
    from argparse import Namespace

    from common import compose_protocol, protocol_features

    args = Namespace(dataset="digits", features="pixels", bits=32, train_size=None)
    cfg, dataset, split = compose_protocol(args)
    features = protocol_features(cfg, dataset).double().numpy()
    labels = dataset.labels.numpy()
    database, database_labels = features[split.database.numpy()], labels[split.database.numpy()]
    precisions = [
        average_precision_score(database_labels == labels[q], -np.linalg.norm(database - features[q], axis=1))
        for q in split.query.numpy()
    ]
    assert printed == round(100 * float(np.mean(precisions)), 2)


def test_manifold_hashing_mode_scores_itq_and_lsh_codes(tmp_path):
    done = run_python(str(SCRIPT), "embed", "--dataset", "digits", "--dims", "32", "--k", "10", tmp_path=tmp_path)
    scored = re.findall(r"(ITQ|LSH) on a 32-d eigenmap \(10-NN graph\): mAP@all ([\d.]+)", done.stdout)
    assert [name for name, _ in scored] == ["ITQ", "LSH"] and all(0 < float(m) <= 100 for _, m in scored)


def test_neighbors_mode_counts_label_agreement_as_scikit_learn_finds_the_neighbours(tmp_path, monkeypatch):
    from sklearn.neighbors import NearestNeighbors

    done = run_python(str(SCRIPT), "neighbors", "--dataset", "digits", "--features", "pixels", tmp_path=tmp_path)
    printed = {int(k): float(a) for k, a in re.findall(r"k = (\d+): ([\d.]+)", done.stdout)}
    assert list(printed) == [1, 10, 20, 50]

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("PGH_CACHE_DIR", str(tmp_path / "cache"))
    from argparse import Namespace

    from common import compose_protocol, protocol_features

    cfg, dataset, split = compose_protocol(Namespace(dataset="digits", features="pixels", bits=32, train_size=None))
    train = protocol_features(cfg, dataset).double().numpy()[split.train.numpy()]
    labels = dataset.labels.numpy()[split.train.numpy()]
    # each point's 50 nearest others (the point itself excluded by scikit-learn when X is not given)
    _, neighbours = NearestNeighbors(n_neighbors=50).fit(train).kneighbors()
    for k, agreement in printed.items():
        expected = 100 * (labels[neighbours[:, :k]] == labels[:, None]).mean()
        assert abs(agreement - expected) < 0.05  # ties in distance may order equal neighbours differently

    # mutual pairs: j among i's 20 nearest and i among j's
    among = np.zeros((len(train), len(train)), dtype=bool)
    np.put_along_axis(among, neighbours[:, :20], True, axis=1)
    mutual = among & among.T
    per_image, shared = re.search(
        r"mutual pairs among the 20 nearest: ([\d.]+) an image, ([\d.]+) %", done.stdout
    ).groups()
    rows, cols = mutual.nonzero()
    assert abs(float(per_image) - mutual.sum(1).mean()) < 0.1
    assert abs(float(shared) - 100 * (labels[rows] == labels[cols]).mean()) < 0.5


def test_mutual_mask_keeps_the_neighbours_that_count_the_point_among_theirs(monkeypatch):
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from diag_pgh_ceilings import mutual_mask

    # 0's nearest are 0, 1, 2; 1's are 1, 0, 3; 2's are 2, 3, 1; 3's are 3, 2, 0
    neighbors = torch.tensor([[0, 1, 2], [1, 0, 3], [2, 3, 1], [3, 2, 0]])
    expected = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert torch.equal(mutual_mask(neighbors), expected)


def test_smooth_mode_with_mutual_neighbours_scores_each_vote(tmp_path):
    done = run_python(
        str(SCRIPT), "smooth", "--dataset", "digits", "--features", "pixels", "--k", "10", "--iterations", "3",
        "--mutual", tmp_path=tmp_path,
    )  # fmt: skip
    scored = re.findall(r"smoothed (\d)x over 10 mutual neighbours \(\d+ distinct\): mAP@all ([\d.]+)", done.stdout)
    assert [n for n, _ in scored] == ["1", "3"] and all(0 < float(m) <= 100 for _, m in scored)


def test_smooth_mode_over_bgans_released_neighbourhoods_scores_each_vote(tmp_path):
    done = run_python(
        str(SCRIPT), "smooth", "--dataset", "digits", "--features", "pixels", "--k", "5", "--released", "8",
        "--iterations", "3", tmp_path=tmp_path,
    )  # fmt: skip
    others = float(re.search(r"E\(i\) holds ([\d.]+) other training images", done.stdout).group(1))
    assert 5 <= others <= 8 * 6 - 1  # at least its own K1 list; at most K2 lists of K1 + 1, itself out
    scored = re.findall(r"smoothed (\d)x over E\(i\) \(K1 5, K2 8\) \(\d+ distinct\): mAP@all ([\d.]+)", done.stdout)
    assert [n for n, _ in scored] == ["1", "3"] and all(0 < float(m) <= 100 for _, m in scored)


def test_smooth_mode_refuses_two_neighbourhoods_at_once(tmp_path):
    done = run_python(str(SCRIPT), "smooth", "--mutual", "--released", "30", tmp_path=tmp_path, check=False)
    assert done.returncode == 2 and "--mutual and --released are two different neighbourhoods" in done.stderr
