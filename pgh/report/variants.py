"""Which of pgh-report's runs are one experiment and which differ, and by what: each run's settings
from its config.yaml, the variant label of the settings that set it apart from the other runs of its
method+features, repeats of one seed, and the table cells runs are averaged in."""

from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict
from typing import Any

from pgh.config_checks import flat_config
from pgh.report.tables import row_order
from pgh.retrieval.metrics import LATER_DEFAULTS

# config keys that are a table axis, a seed, or do not change the result: never what tells runs apart
NOT_SETTINGS = (
    "paths", "logger", "hydra", "callbacks", "task_name", "ckpt_path", "requeued",
    # the dataset and the features are table axes; where they sit and how features are batched are not
    # settings, but e.g. features.number_blocks or dataset.image_size are
    "dataset._target_", "dataset.root", "dataset.download", "dataset.name",
    "features._target_", "features.batch_size", "features.device", "features.weights",
    "save_codes", "seed", "split.seed", "bits", "trainer.default_root_dir", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.log_every_n_steps", "method.num_workers",
    "method.checkpoint_every_n_steps",
    # the method's length decides (older configs held a trainer.max_epochs it overrode), and a threshold
    # that only decides whether a warning is printed
    "trainer.max_epochs", "method.module.distill_min_agreement",
)  # fmt: skip


def settings(config: dict[str, Any] | None) -> dict[str, Any]:
    """A run's config.yaml (`load_run`'s "config") as dotted keys, without NOT_SETTINGS, a
    LATER_DEFAULTS key it lacks at the value it had ({} when it has no config.yaml)."""
    if config is None:
        return {}
    flat = {**LATER_DEFAULTS, **flat_config(config)}
    return {k: canonical(v) for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_SETTINGS)}


def canonical(value: Any) -> Any:
    """A whole float as an int (in lists too): a sweep's grid `0,2,3` gives the ints 2 and 3 where the
    config's default is the float 2.0, and the two must read as one setting."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def most_common_unless_tied(values: list[str]) -> str | None:
    """The value most runs share, or None when two values tie (then no run's label may omit it: an
    unlabelled row would read as the defaults whichever run it was)."""
    counts = Counter(values).most_common(2)
    return None if len(counts) > 1 and counts[0][1] == counts[1][1] else counts[0][0]


def tell_folders_apart(results: list[dict[str, Any]]) -> None:
    """Runs on image folders (`dataset=folder`) report the dataset by its `dataset.name`, `folder` unless
    set: where runs of one name read different folders, each such run's dataset becomes
    `<name> (<dataset.root>)`, so no column averages or plots two datasets together. A root that exists
    is compared by its real path (a symbolic link is the folder it points to)."""
    roots: dict[int, str] = {}
    for i, r in enumerate(results):
        dataset = (r["config"] or {}).get("dataset")
        if isinstance(dataset, dict) and str(dataset.get("_target_", "")).endswith("load_folder"):
            root = os.path.expanduser(str(dataset.get("root")))
            # a relative root is the run's launch directory's, unknown here: compared as written
            real = os.path.isabs(root) and os.path.exists(root)
            roots[i] = os.path.realpath(root) if real else os.path.normpath(root)  # /data/x/ is /data/x
    names: dict[str, set[str]] = defaultdict(set)
    for i, root in roots.items():
        names[results[i]["dataset"]].add(root)
    for i, root in roots.items():
        if len(names[results[i]["dataset"]]) > 1:
            results[i]["dataset"] = f"{results[i]['dataset']} ({root})"


def label_variants(results: list[dict[str, Any]]) -> None:
    """Set each result's `variant`: among the runs of its method+features, the settings where its
    value is not the most common one (e.g. `method.init_hash=lsh` in a sweep over initial hashes,
    where the most common value gets no label; when values tie, every run is labelled with its own).
    A key that a run's config lacks (a run made before the key existed) counts as the value
    `absent`; keys that only mirror the bit length or the seed (`method.module.bits`, `method.seed`)
    do not count. Distinct settings always get distinct variants, and runs with the same variant in
    the same cell are repeats (seeds), which the table averages. A run without config.yaml is the
    variant `no config.yaml` and takes no part in the others' comparison."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["config"] is not None:
            groups[(r["method"], r["features"])].append(r)
        else:  # nothing to compare its settings by: a row of its own, apart from every other run's
            r["settings"], r["variant"] = {}, "no config.yaml"
    for group in groups.values():
        configs = [settings(r["config"]) for r in group]
        for r in group:
            r["settings"] = {}
        # the dataset is the table's column: its own settings (a folder's image_size) and the sizes of its
        # query and training sets are compared only among runs of one dataset, or every run of another
        # dataset (digits with 50 queries a class beside mnist5k with 100) would read as a variant
        label_differing(group, configs, lambda key: not per_dataset(key))
        for name in sorted({r["dataset"] for r in group}):
            same = [i for i, r in enumerate(group) if r["dataset"] == name]
            label_differing([group[i] for i in same], [configs[i] for i in same], per_dataset)
        for r in group:
            r["variant"] = ", ".join(f"{key}={value}" for key, value in sorted(r["settings"].items()))


def per_dataset(key: str) -> bool:
    """Settings compared only among runs of one dataset."""
    return key.startswith("dataset.") or key in ("split.query_per_class", "split.train_size")


def label_differing(runs: list[dict[str, Any]], configs: list[dict[str, Any]], considered) -> None:
    """Add to each run's `settings` the `considered` keys whose values differ among `runs` where its
    value is not the most common one (see `label_variants`)."""
    keys = {key for c in configs for key in c if considered(key)}
    differing = sorted(
        key
        for key in keys
        if len({repr(c.get(key, "absent")) for c in configs}) > 1
        and not any(
            all(c.get(key) == r.get(axis) for c, r in zip(configs, runs, strict=True)) for axis in ("bits", "seed")
        )
    )
    values = [{key: c.get(key, "absent") for key in differing} for c in configs]
    common = {key: most_common_unless_tied([repr(v[key]) for v in values]) for key in differing}
    for r, v in zip(runs, values, strict=True):
        r["settings"].update({key: value for key, value in v.items() if repr(value) != common[key]})


def by_cell(results: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The results grouped by table cell: (dataset, method, features, variant, bits), in the tables'
    row order (so per-class rows and figure legends follow the mAP table)."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(results, key=lambda r: row_order(r["method"], r["features"], r.get("variant", ""))):
        cells[(r["dataset"], r["method"], r["features"], r.get("variant", ""), int(r["bits"]))].append(r)
    return cells


def split_repeated_seeds(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[dict, dict]]]:
    """(the runs the tables count, [(run, the earlier run of its cell it repeats)]): a run with the same
    settings, seed and split seed as an earlier one of its cell (e.g. `make train` beside a sweep's job
    with the defaults) is the same experiment again, not another seed; counted twice it would narrow
    the ± and weigh its seed double. Runs without config.yaml are never taken for repeats."""
    counted, repeated = [], []
    for group in by_cell(results).values():
        first: dict[tuple, dict[str, Any]] = {}
        for r in group:
            if r["config"] is None:
                counted.append(r)
                continue
            key = (r.get("seed"), (r["config"].get("split") or {}).get("seed", 0))
            if key in first:
                repeated.append((r, first[key]))
            else:
                first[key] = r
                counted.append(r)
    return counted, repeated


def mean_per_cell(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per table cell: mAP@all averaged over its runs, with the sample standard deviation as
    `map_all_std` and the number of runs as `map_all_runs` where there are several."""
    merged = []
    for group in by_cell(results).values():
        values = [r["map_all"] for r in group]
        cell = {**group[0], "map_all": statistics.fmean(values)}
        if len(values) > 1:
            cell["map_all_std"] = statistics.stdev(values)
            cell["map_all_runs"] = len(values)
        merged.append(cell)
    return merged
