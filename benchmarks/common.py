"""Helpers shared by the benchmark scripts: machine description and table writing."""

from __future__ import annotations

import os
import platform
from datetime import date

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
