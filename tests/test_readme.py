"""The README's Python examples, run as written, in order, in one namespace: the names they take as
given (features, codes, labels) are bound to small data first, and the paths they name (a run
directory, a folder of images) are pointed at runs and files made here. Each replaced literal must
still be in the README, so an example that changes is run as it now reads, or fails naming what to
update here. And every config key the README and docs/ name in their code is a key of the config."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

README = Path(__file__).parents[1] / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def as_run_here(example: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in example, f"the README's example no longer holds {old!r}; update tests/test_readme.py:\n{example}"
        example = example.replace(old, new)
    return example


def test_the_readme_has_the_examples_this_file_runs():
    firsts = [example.splitlines()[0] for example in python_examples()]
    assert firsts == [
        "from hydra import compose, initialize_config_dir",
        "from pgh.hashing import ITQ",
        "# mymethods.py: PCAH, the sign of the top principal components, and BinaryAE, a binary autoencoder",
        "import numpy as np",
        "from pgh.data.files import find_images, read_images",
        "from hydra.utils import instantiate",
    ], "a Python example was added to or removed from the README: run it in tests/test_readme.py"


def test_the_training_hashing_and_search_examples_run_as_written(tmp_path, monkeypatch):
    monkeypatch.setenv("PGH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # index.save("db.faissindex") writes here
    train_run, hashing, _, search = python_examples()[:4]
    generator = torch.Generator().manual_seed(0)
    namespace = {
        "train_features": torch.randn(300, 128, generator=generator),
        "features": torch.randn(40, 128, generator=generator),
        # more codes than the IVF example's 100,000-code training sample
        "db_codes": torch.rand(120_000, 64, generator=generator) < 0.5,
        "db_labels": torch.randint(0, 10, (120_000,), generator=generator),
        "query_codes": torch.rand(20, 64, generator=generator) < 0.5,
        "query_labels": torch.randint(0, 10, (20,), generator=generator),
    }

    exec(as_run_here(train_run, {"/tmp/run": str(tmp_path / "run")}), namespace)
    assert namespace["metrics"]["method"] == "itq" and 0 < namespace["metrics"]["map_all"] <= 1
    assert (tmp_path / "run" / "metrics.json").is_file()

    exec(hashing, namespace)
    assert namespace["codes"].dtype == torch.bool and namespace["codes"].shape == (40, 64)

    exec(search, namespace)
    assert (tmp_path / "db.faissindex").is_file()
    assert set(namespace["result"].metrics) >= {"map_all", "map_at_1000", "precision_at_100", "precision_radius_2"}
    lims, distances, ids = namespace["lims"], namespace["distances"], namespace["ids"]  # the radius search's
    assert len(lims) == 21 and len(ids) == lims[-1] == len(distances) and (distances <= 2).all()


@pytest.fixture
def trained_runs(make_cfg, tmp_path) -> tuple[Path, Path]:
    """A tiny PGH run and an ITQ run on mnist5k pixels (28-px images, as the README's examples read)."""
    from omegaconf import open_dict

    from pgh.train import train

    runs = []
    for name, overrides in (
        ("pgh", ["method=pgh", "split.train_size=128", "method.batch_size=32", "method.rounds=1",
                 "method.progressive.epochs_per_round=2", "method.module.distill_epochs=1", "method.module.width=8",
                 "method.module.hidden=32", "method.module.z_dim=16", "trainer=cpu",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]),
        ("itq", ["method=itq"]),
    ):  # fmt: skip
        cfg = make_cfg("dataset=mnist5k", "features=pixels", "bits=16", "split.query_per_class=10", *overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / name)
        train(cfg)
        runs.append(tmp_path / name)
    return runs[0], runs[1]


def test_the_trained_model_examples_code_image_files_as_their_runs_coded_the_database(trained_runs, tmp_path):
    from pgh.data import Split, load_mnist5k
    from pgh.retrieval import BinaryIndex

    pgh_run, itq_run = trained_runs
    database = Split.load(pgh_run / "split.npz").database[:12]  # the same split in both runs (seed 0)
    assert torch.equal(database, Split.load(itq_run / "split.npz").database[:12])
    folder = tmp_path / "my_images"
    folder.mkdir()
    images = load_mnist5k().images[database]
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:02d}.png")  # sorted by name: database order

    deep, shallow = python_examples()[4:]
    namespace: dict = {}
    exec(
        as_run_here(deep, {
            "logs/train/runs/2026-11-30_12-00-00-123456_mnist5k_pgh_gist_32": str(pgh_run),
            "/data/my_images": str(folder),
        }),
        namespace,
    )  # fmt: skip
    assert torch.equal(namespace["images"], images)  # the PNG files hold the 28-px images unchanged
    assert np.array_equal(namespace["packed"], np.load(pgh_run / "database_codes.npy")[:12])
    assert BinaryIndex.load(pgh_run / "my_images.faissindex").ntotal == 12

    exec(as_run_here(shallow, {"logs/train/runs/2026-11-30_12-00-00-123456_fashion_mnist_itq_gist_32": str(itq_run)}),
         namespace)  # fmt: skip
    assert np.array_equal(namespace["packed"], np.load(itq_run / "database_codes.npy")[:12])


DOCS = [README, *sorted((README.parent / "docs").glob("*.md"))]
CONFIG_GROUPS = ("dataset", "features", "method", "trainer", "logger")
# a key the README misspells on purpose, to show the message that names it
MISSPELT_ON_PURPOSE = {"split.querry_per_class"}
FILE_SUFFIXES = (".npz", ".npy", ".yaml", ".csv", ".json", ".pt", ".png", ".md", ".py", ".log", ".txt")


def documented_overrides() -> set[str]:
    """Every config key the docs' code names (`group.key=value`, or the key alone): inline code spans
    and shell examples; file names such as split.npz aside."""
    keys = set()
    for doc in DOCS:
        text = doc.read_text()
        code = re.findall(r"`([^`\n]+)`", text) + re.findall(r"^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
        for span in code:
            # +key adds a key the config does not have (e.g. +trainer.max_time): not checked
            pattern = rf"(?:^|[\s\"'(])(\+?)((?:{'|'.join(CONFIG_GROUPS)}|split|eval|paths)\.[\w.]+)(?==|\s|$)"
            found = re.findall(pattern, span)
            keys.update(key for plus, key in found if not plus and not key.endswith(FILE_SUFFIXES))
    return keys


def composed_keys() -> set[str]:
    """The dotted keys of the config composed with every option of every group."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pgh.train import CONFIG_DIR

    def flat(node, prefix=""):
        for key, value in node.items():
            yield f"{prefix}{key}"
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")

    keys = set()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for group in CONFIG_GROUPS:
            for option in sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml")):
                cfg = compose("config", overrides=[f"{group}={option}"])
                keys.update(flat(OmegaConf.to_container(cfg, resolve=False)))
    return keys


def test_every_override_the_docs_show_is_a_key_of_the_config():
    documented, known = documented_overrides(), composed_keys()
    assert len(documented) > 20  # the pattern finds them
    assert not MISSPELT_ON_PURPOSE & known
    unknown = sorted(documented - known - MISSPELT_ON_PURPOSE)
    assert not unknown, f"the README or docs/ show overrides of keys the config does not have: {unknown}"


def test_the_methods_of_ones_own_train_resume_and_reload_as_written(make_cfg, tmp_path, monkeypatch, request):
    """*Adding a method*: the README's module and configs, outside the repository, through Hydra's
    search path; each run's model (hasher.pt, last.ckpt) reloaded codes the database as the run did."""
    from conftest import assert_checkpoint_codes_the_database_as_the_run_did
    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict

    from pgh.data import Split
    from pgh.features import cached_features
    from pgh.hashing import load_hasher
    from pgh.retrieval import pack_codes
    from pgh.train import train

    text = README.read_text()
    (tmp_path / "mymethods.py").write_text(python_examples()[2])
    (tmp_path / "my_conf" / "method").mkdir(parents=True)
    for name in ("pcah", "binaryae"):
        config = re.search(rf"^```yaml\n# my_conf/method/{name}.yaml\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
        (tmp_path / "my_conf" / "method" / f"{name}.yaml").write_text(config.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    request.addfinalizer(lambda: sys.modules.pop("mymethods", None))  # imported here, gone after the test
    assert '"hydra.searchpath=[file://$PWD/my_conf]" method=pcah' in text
    small = [f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "dataset=digits", "features=pixels", "bits=16"]
    small += ["split.query_per_class=20", "logger=none"]
    for method, extra in (("pcah", []), ("binaryae", ["method.max_epochs=3", "trainer=cpu"])):
        cfg = make_cfg(*small, f"method={method}", *extra)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / method)
        metrics = train(cfg)
        assert metrics["method"] == method and 0.1 < metrics["map_all"] <= 1
        if method == "pcah":  # found by the module its hasher.pt names
            hasher, split = load_hasher(tmp_path / method / "hasher.pt"), Split.load(tmp_path / method / "split.npz")
            config = OmegaConf.to_container(cfg.features, resolve=True)
            features = cached_features(instantiate(cfg.dataset), instantiate(cfg.features), config, cfg.paths.cache_dir)
            codes = pack_codes(hasher.encode(features[split.database]))
            assert np.array_equal(codes, np.load(tmp_path / method / "database_codes.npy"))
        else:
            assert_checkpoint_codes_the_database_as_the_run_did(cfg)
            cfg.method.max_epochs, cfg.ckpt_path = 4, "last"  # and a resume continues it
            assert train(cfg)["global_step"] > metrics["global_step"]
    from pgh.report.cli import build_report

    assert {"PCAH+PIXEL", "BINARYAE+PIXEL"} <= set(
        re.findall(r"^\| (\S+\+PIXEL) \|", build_report([tmp_path]).text, re.M)
    )
