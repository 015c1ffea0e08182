"""The dataset cards: one TOML file per built-in dataset with its static facts, read without torch."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any


def load_card(name: str) -> dict[str, Any]:
    """The card ``spips_bench/data/cards/<name>.toml`` as a dict.

    Raises:
        FileNotFoundError: there is no such card.
    """
    entry = resources.files("spips_bench.data.cards") / f"{name}.toml"
    if not entry.is_file():
        raise FileNotFoundError(f"no dataset card {name}.toml in spips_bench/data/cards")
    return tomllib.loads(entry.read_text(encoding="utf-8"))
