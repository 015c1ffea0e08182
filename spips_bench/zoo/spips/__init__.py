"""SPIPS (Lao & Yu): traditional, perceptual and semantic quality maps fused into one distance.

``SPIPS`` lives in :mod:`spips_bench.zoo.spips.model`; this package import stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SPIPS"]


def __getattr__(name: str) -> Any:
    if name == "SPIPS":
        from spips_bench.zoo.spips.model import SPIPS

        return SPIPS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
