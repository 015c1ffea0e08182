"""Datasets: the dataset type and registry, BAPPS's streaming readers, the downloader and a synthetic
BAPPS-format demo set.

Importing this package is light; the submodules (which import torch or urllib) load on first use::

    from spips_bench.data.registry import Dataset, get_dataset
    from spips_bench.data.bapps import TwoAFCDataset
    from spips_bench.data.demo import ensure_demo
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TWO_AFC_CATEGORIES": "bapps",
    "JND_CATEGORIES": "bapps",
    "TwoAFCDataset": "bapps",
    "JNDDataset": "bapps",
    "bapps_present": "bapps",
    "resolve_categories": "bapps",
    "collate": "bapps",
    "default_bapps_root": "bapps",
    "ensure_demo": "demo",
    "DEMO_LABEL": "demo",
    "DEMO_VERSION": "demo",
    "download_bapps": "download",
    "Dataset": "registry",
    "get_dataset": "registry",
    "dataset_names": "registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spips_bench.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"spips_bench.data.{module}"), name)
