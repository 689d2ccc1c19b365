"""benchmarks/diag_pgh_ceilings.py, whose numbers the README quotes: its exact ranking against
scikit-learn's average precision, and the manifold-hashing mode end to end, on digits."""

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
