"""The paper's experiment as data: ``recipe.toml`` read into a :class:`Recipe`.

The recipe names the baselines and, per backbone, the registry names of the three SPIPS models (the
full model and the two ablations). A variant that the cards do not register (e.g. the ablations on
VGG16) is registered for this process from its backbone's full model with the variant's ``streams``,
under the name the recipe gives it (:func:`register_variants`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from spips_bench.io import sha256_bytes

#: The roles of the three trained models, in the order of the paper's tables.
ROLES = ("full", "abla1", "abla2")
#: The ``source`` of the metric specs that :func:`register_variants` adds.
RECIPE_SOURCE = "spips-bench paper recipe"


@dataclass(frozen=True)
class Variant:
    """One SPIPS model of the experiment on one backbone.

    Attributes:
        role: ``"full"``, ``"abla1"`` (no semantic stream) or ``"abla2"`` (no traditional stream).
        metric: its registry name (registered by :func:`register_variants` when no card has it).
        display: the name the tables and figures show.
        paper_row: the row of the paper's tables it is compared with.
        streams: the streams it uses.
        registered: whether a card registers ``metric`` (``False``: built from ``full_metric`` and ``streams``).
        full_metric: the registry name of the backbone's full model.
    """

    role: str
    metric: str
    display: str
    paper_row: str
    streams: tuple[str, ...]
    registered: bool
    full_metric: str


@dataclass(frozen=True)
class Recipe:
    """The parsed recipe (see ``recipe.toml``)."""

    load_size: int
    baselines: tuple[str, ...]
    baseline_display: Mapping[str, str]
    roles: Mapping[str, Mapping[str, Any]]
    backbones: Mapping[str, Mapping[str, str]]
    sha256: str

    def variants(self, backbone: str) -> list[Variant]:
        """The three models to train on ``backbone``, in the order of :data:`ROLES`.

        Raises:
            ValueError: ``backbone`` is not one the recipe lists (the message names those it does).
        """
        if backbone not in self.backbones:
            raise ValueError(f"--backbone {backbone!r} is not a SPIPS trunk; choose one of "
                             f"{', '.join(self.backbones)} (offline: alex-st, whose trunk ships in the "
                             "stlpips-pytorch wheel).")
        from spips_bench.errors import UnknownMetricError
        from spips_bench.registry import get_spec

        names = self.backbones[backbone]
        out = []
        for role in ROLES:
            try:  # a variant this module registered earlier in the process still counts as unregistered
                registered = get_spec(names[role]).source != RECIPE_SOURCE
            except UnknownMetricError:
                registered = False
            r = self.roles[role]
            out.append(Variant(role=role, metric=names[role], display=str(r["display"]),
                               paper_row=str(r["paper_row"]), streams=tuple(r["streams"]),
                               registered=registered, full_metric=names["full"]))
        return out

    def display(self, backbone: str) -> dict[str, str]:
        """Registry name -> shown name, for the baselines and the three models of ``backbone``."""
        return {**self.baseline_display, **{v.metric: v.display for v in self.variants(backbone)}}

    def paper_rows(self, backbone: str) -> dict[str, str]:
        """Registry name -> the paper's row, for the three models of ``backbone`` (the baselines' rows
        come from their cards)."""
        return {v.metric: v.paper_row for v in self.variants(backbone)}


def load_recipe(text: str | None = None) -> Recipe:
    """Parse ``recipe.toml`` (or ``text``, a recipe in the same format).

    Raises:
        ValueError: a field is missing or malformed (the message names it).
    """
    if text is None:
        text = (resources.files("spips_bench.paper") / "recipe.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    try:
        baselines = tuple(str(m) for m in data["baselines"]["metrics"])
        display = {str(k): str(v) for k, v in data["baselines"].get("display", {}).items()}
        roles = {role: dict(data["variants"][role]) for role in ROLES}
        backbones = {str(b): {role: str(names[role]) for role in ROLES} for b, names in data["backbones"].items()}
        load_size = int(data["load_size"])
        for role, r in roles.items():
            for key in ("display", "paper_row", "streams"):
                if key not in r:
                    raise KeyError(f"variants.{role}.{key}")
    except KeyError as exc:
        raise ValueError(f"recipe: missing field {exc.args[0]!r} (see spips_bench/paper/recipe.toml).") from None
    return Recipe(load_size=load_size, baselines=baselines, baseline_display=display, roles=roles,
                  backbones=backbones, sha256=sha256_bytes(text.encode("utf-8")))


def register_variants(variants: list[Variant]) -> None:
    """Register, for this process, each variant that no card registers: a copy of its backbone's full
    model card with the variant's ``streams`` and ``ablation_of`` the full model.

    Raises:
        UnknownMetricError: the backbone's full model itself is not registered.
    """
    from spips_bench.registry import REGISTRY, get_spec

    for v in variants:
        if v.registered:
            continue
        full = get_spec(v.full_metric)
        spec = replace(full, name=v.metric, aliases=(), options={**full.options, "streams": list(v.streams)},
                       ablation_of=v.full_metric, paper_row=None, pyiqa_bridge=False, display=v.display,
                       source=RECIPE_SOURCE,
                       description=f"{full.description.split(' (')[0]}: {v.display} (built by the paper recipe)")
        REGISTRY.register(spec, overwrite=True)
