"""PGH_CONFIG_PATH: one's own config groups, searched after conf/ by every pgh-train command and
listed by `pgh-train --help` (which misses a `hydra.searchpath` override's groups)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pgh.config_checks import CONFIG_DIR
from pgh.train import main


def own_method(root: Path, name: str = "itq_seed7") -> Path:
    (root / "method").mkdir(parents=True)
    text = (Path(CONFIG_DIR) / "method" / "itq.yaml").read_text()
    (root / "method" / f"{name}.yaml").write_text(text + "\n# the same ITQ, another seed\n")
    return root


def test_a_method_in_pgh_config_path_composes_and_is_listed_by_help(tmp_path, monkeypatch):
    from conftest import run_python

    mine = own_method(tmp_path / "my_conf")
    monkeypatch.setenv("PGH_CONFIG_PATH", str(mine))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["method=itq_seed7"])
    GlobalHydra.instance().clear()
    assert cfg.method._target_ == "pgh.hashing.ITQ"
    shown = run_python("-m", "pgh.train", "--help", tmp_path=tmp_path, env={"PGH_CONFIG_PATH": str(mine)})
    assert "itq_seed7" in next(line for line in shown.stdout.splitlines() if line.startswith("method:"))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("missing", r"PGH_CONFIG_PATH=.*missing: .*missing is no folder; give folders holding config groups"),
        ("shadow", r".*/my_conf/method/itq.yaml has the name of pgh.s own conf/method/itq.yaml.*my_itq.yaml"),
    ],
)
def test_pgh_train_refuses_a_missing_folder_or_a_config_that_conf_would_hide(tmp_path, monkeypatch, setting, message):
    if setting == "shadow":
        folder = own_method(tmp_path / "my_conf", name="itq")
    else:
        folder = tmp_path / "missing"
    monkeypatch.setenv("PGH_CONFIG_PATH", str(folder))
    monkeypatch.setattr(sys, "argv", ["pgh-train", "method=itq"])
    with pytest.raises(SystemExit, match=f"^pgh-train: {message}"):
        main()
