"""Helpers shared by the benchmark scripts: machine description and table writing."""

from __future__ import annotations

import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}; "
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}; {date.today()}"
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def run_timed(overrides: list[str], out: Path) -> dict:
    """Compose conf/ with `overrides`, train into `out`, and record the wall time in
    out/wall_seconds.txt (needs an active `initialize_config_dir(CONFIG_DIR)`)."""
    from hydra import compose
    from omegaconf import open_dict

    from pgh.io import write_text
    from pgh.train import train

    cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    started = time.perf_counter()
    metrics = train(cfg)
    write_text(out / "wall_seconds.txt", f"{time.perf_counter() - started:.1f}\n")
    return metrics


def wall_seconds(out: Path) -> float | None:
    path = out / "wall_seconds.txt"
    return float(path.read_text()) if path.exists() else None
