"""Shared fixtures. Tests never touch the network: SPIPS_BENCH_OFFLINE is forced on here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["SPIPS_BENCH_OFFLINE"] = "1"

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    # Two cores on the build machines; more threads only add contention.
    import torch

    torch.set_num_threads(2)
