"""`train(cfg) -> metrics`: one run of one method on one dataset, evaluated by the protocol.

`main` is the `pgh-train` Hydra entry point; tests and sweeps call `train` directly on a composed
config. Only this module instantiates configs: everything below it takes typed arguments.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pgh.data import ImageDataset, Split
from pgh.features import cached_features
from pgh.hashing import ShallowHasher
from pgh.io import save_npy, write_json, write_text
from pgh.logging_utils import finish, instantiate_loggers, log_figure
from pgh.report.plots import matplotlib_close, plot_pr_curves
from pgh.retrieval import check_bits, evaluate_packed, pack_codes

log = logging.getLogger(__name__)


def feature_name(cfg: DictConfig) -> str:
    target = cfg.features._target_.rsplit(".", 1)[-1]
    return {"PixelFeatures": "pixels", "GistFeatures": "gist", "VGG16FC7Features": "vgg16_fc7"}.get(target, target)


def run_shallow(
    hasher: ShallowHasher, features: torch.Tensor, split: Split
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Fit on the training set, encode queries and database; returns packed codes and timings."""
    t0 = time.perf_counter()
    hasher.fit(features[split.train])
    t1 = time.perf_counter()
    query = pack_codes(hasher.encode(features[split.query]))
    database = pack_codes(hasher.encode(features[split.database]))
    t2 = time.perf_counter()
    return query, database, {"train_seconds": t1 - t0, "encode_seconds": t2 - t1}


def closing_line(m: dict[str, Any]) -> str:
    return (
        f"pgh | {m['dataset']} | {m['method']}+{m['features']} | {m['bits']} bits | "
        f"mAP@all {100 * m['map_all']:.2f} | mAP@1000 {100 * m['map_at_1000']:.2f} | "
        f"P@100 {100 * m['precision_at_100']:.2f} | P@r2 {100 * m['precision_radius_2']:.2f} | "
        f"train {m['train_seconds']:.1f}s"
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    bits = check_bits(cfg.bits)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    dataset: ImageDataset = instantiate(cfg.dataset)
    split: Split = instantiate(cfg.split)(dataset.labels)
    split.save(out / "split.npz")
    loggers = instantiate_loggers(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    method = instantiate(cfg.method)
    if not isinstance(method, ShallowHasher):
        raise TypeError(f"method {cfg.method._target_} is not a shallow hasher; no other kind is wired in yet")

    t0 = time.perf_counter()
    features = cached_features(
        dataset, instantiate(cfg.features), OmegaConf.to_container(cfg.features, resolve=True), cfg.paths.cache_dir
    )
    feature_seconds = time.perf_counter() - t0
    query_codes, db_codes, timings = run_shallow(method, features, split)

    t0 = time.perf_counter()
    labels = dataset.labels
    opts = dict(map_k=cfg.eval.map_k, precision_k=cfg.eval.precision_k, radius=cfg.eval.radius)
    result = evaluate_packed(query_codes, labels[split.query], db_codes, labels[split.database],
                             distance=method.distance, **opts)
    extra = {}
    if method.distance != "hamming":
        plain = evaluate_packed(query_codes, labels[split.query], db_codes, labels[split.database], **opts)
        extra = {f"{k}_hamming": v for k, v in plain.metrics.items()}
    eval_seconds = time.perf_counter() - t0

    metrics: dict[str, Any] = {
        **result.metrics,
        **extra,
        **timings,
        "feature_seconds": feature_seconds,
        "eval_seconds": eval_seconds,
        "dataset": dataset.name,
        "method": type(method).__name__.lower(),
        "features": feature_name(cfg),
        "bits": bits,
        "distance": method.distance,
        "num_queries": int(split.query.numel()),
        "num_database": int(split.database.numel()),
        "num_train": int(split.train.numel()),
        "seed": int(cfg.seed),
    }
    write_json(out / "metrics.json", metrics)
    write_text(out / "pr_curve.csv", result.pr_curve_csv())
    if cfg.get("save_codes", True):
        save_npy(out / "database_codes.npy", db_codes)
        save_npy(out / "query_codes.npy", query_codes)
    fig = plot_pr_curves({f"{metrics['method']}+{metrics['features']}": result.pr_curve},
                         f"{dataset.name}, {bits} bits")
    fig.savefig(out / "pr_curve.png")
    log_figure(loggers, "pr_curve", fig, out / "pr_curve.png")
    matplotlib_close(fig)
    finish(loggers, metrics)
    print(closing_line(metrics), flush=True)
    return metrics


# the configs live at the repository top level (conf/), beside the package
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    return train(cfg)["map_all"]


if __name__ == "__main__":
    main()
