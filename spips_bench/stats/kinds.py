"""Judgment kinds: one object per human-judgment protocol (2AFC, JND) that the harness asks.

A kind says everything the runner, the store, the statistics and the tables need to know about a
protocol, so that no module compares a kind to a string:

* where its data lives (``ROOT/<name>/<split>/<category>``) and which image folders a sample has;
* the human-judgment column and the score columns of the store (``judge``; ``d0, d1`` for 2AFC,
  ``same``; ``d`` for JND);
* how one batch is scored: the ``(dist, ref)`` pair of batch entries behind each score column, in the
  metric contract's order (2AFC: ``d0 = metric(p0, ref)``, ``d1 = metric(p1, ref)``; JND:
  ``d = metric(p0, p1)``);
* its headline statistic (``2afc_score``, ``jnd_map``) and the correlation variables it reports, which
  fix the names and order of its summary statistics;
* the labels its tables use.

Two families of kinds exist. BAPPS's (2AFC, JND) judge pairs or triplets of patches with fractions of
raters; a *scale* kind (MOS) gives each distorted image a quality score on the dataset's own scale
(mean opinion score, DMOS, Elo), higher = better, and is judged by rank and fitted correlations
(:mod:`spips_bench.stats.mos`); its ``scale_statistics`` name them.

The names (``"2afc"``, ``"jnd"``) are the ones on disk, in ``run.json`` and in ``summary.csv``; a kind is
looked up by name with :func:`judgment_kind`. This module imports nothing else from the package, so
every layer (data, run, stats, report) can use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["CORRELATIONS", "JND", "KINDS", "MOS", "MOS_STATISTICS", "TWO_AFC", "JudgmentKind", "judgment_kind"]

#: The correlation coefficients reported for each correlation variable: Pearson, Spearman, Kendall tau-b.
CORRELATIONS: tuple[str, ...] = ("plcc", "srcc", "krcc")
#: The statistics of a scale (MOS) kind, in report order: Spearman, Kendall tau-b, Pearson after the
#: five-parameter logistic fit, Pearson without it, and the RMSE of the fit (lower = better).
MOS_STATISTICS: tuple[str, ...] = ("srcc", "krcc", "plcc", "plcc_linear", "rmse")


@dataclass(frozen=True)
class JudgmentKind:
    """One human-judgment protocol.

    Attributes:
        name: the kind's name on disk, in ``run.json`` and ``summary.csv`` (``"2afc"``, ``"jnd"``).
        label: its name in text (``"2AFC"``, ``"JND"``).
        image_parts: the image folders of one sample (and batch keys of its images).
        judgment_column: the human-judgment folder, batch key and store column.
        scored_pairs: per score column, the ``(dist, ref)`` batch keys the metric is called on.
        score_columns: the store's score columns, one per entry of ``scored_pairs``.
        headline: the name of the kind's headline statistic (the score its tables lead with).
        headline_label: how the tables name the headline statistic.
        correlation_modes: ``(suffix, mode)`` per correlation variable: the statistics
            ``plcc<suffix>``, ``srcc<suffix>``, ``krcc<suffix>`` correlate the variable of ``mode``
            (a key of :data:`spips_bench.stats.core.CORRELATION_STATISTICS`) with the judgment.
        column_prefix: what a table puts before a category name in a column of this kind.
        scale_statistics: set for a scale kind (MOS): its statistics, which replace the headline and
            correlation variables (:mod:`spips_bench.stats.mos` computes them).
    """

    name: str
    label: str
    image_parts: tuple[str, ...]
    judgment_column: str
    scored_pairs: tuple[tuple[str, str], ...]
    score_columns: tuple[str, ...]
    headline: str
    headline_label: str
    correlation_modes: tuple[tuple[str, str], ...]
    column_prefix: str = ""
    scale_statistics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.scored_pairs) != len(self.score_columns):
            raise ValueError(f"kind {self.name!r}: {len(self.scored_pairs)} scored pairs for "
                             f"{len(self.score_columns)} score columns; give one pair per column.")
        unknown = sorted({key for pair in self.scored_pairs for key in pair} - set(self.image_parts))
        if unknown:
            raise ValueError(f"kind {self.name!r}: scored pairs name {unknown}, which are not among its image "
                             f"parts {list(self.image_parts)}.")

    def __str__(self) -> str:
        return self.name

    @property
    def parts(self) -> tuple[str, ...]:
        """Every folder of one category: the image parts, then the judgment."""
        return (*self.image_parts, self.judgment_column)

    @property
    def is_scale(self) -> bool:
        """True for a kind whose judgment is a quality scale per image (MOS), not a rater fraction."""
        return bool(self.scale_statistics)

    @property
    def statistics(self) -> tuple[str, ...]:
        """The kind's summary statistics in report order: the headline, then each correlation variable's
        (a scale kind: its ``scale_statistics``)."""
        if self.scale_statistics:
            return self.scale_statistics
        return (self.headline, *(c + suffix for suffix, _ in self.correlation_modes for c in CORRELATIONS))

    def folder(self, split: str) -> tuple[str, str]:
        """The path parts, under a dataset root, of the split's category folders: ``(name, split)``."""
        return (self.name, split)

    def pairs(self, batch: Mapping[str, Any]) -> list[tuple[Any, Any]]:
        """The ``(dist, ref)`` inputs of each score column, taken from a batch (or sample) by key.

        Raises:
            KeyError: the batch lacks one of the kind's image parts.
        """
        return [(batch[dist], batch[ref]) for dist, ref in self.scored_pairs]


TWO_AFC = JudgmentKind(
    name="2afc",
    label="2AFC",
    image_parts=("ref", "p0", "p1"),
    judgment_column="judge",
    scored_pairs=(("p0", "ref"), ("p1", "ref")),
    score_columns=("d0", "d1"),
    headline="2afc_score",
    headline_label="2AFC score",
    correlation_modes=(("", "decision"), ("_continuous", "continuous")),
)

JND = JudgmentKind(
    name="jnd",
    label="JND",
    image_parts=("p0", "p1"),
    judgment_column="same",
    scored_pairs=(("p0", "p1"),),
    score_columns=("d",),
    headline="jnd_map",
    headline_label="JND mAP",
    correlation_modes=(("", "jnd"),),
    column_prefix="JND ",
)

MOS = JudgmentKind(
    name="mos",
    label="MOS",
    image_parts=("dist", "ref"),
    judgment_column="mos",
    scored_pairs=(("dist", "ref"),),
    score_columns=("d",),
    headline="srcc",
    headline_label="SRCC",
    correlation_modes=(),
    column_prefix="",
    scale_statistics=MOS_STATISTICS,
)

#: Every kind by name, in report order.
KINDS: Mapping[str, JudgmentKind] = MappingProxyType({k.name: k for k in (TWO_AFC, JND, MOS)})


def judgment_kind(kind: str | JudgmentKind, choices: Sequence[str] | None = None) -> JudgmentKind:
    """The kind named ``kind`` (a kind passes through).

    Args:
        kind: a kind's name (``"2afc"``, ``"jnd"``) or a kind.
        choices: the names allowed here (default: every kind in :data:`KINDS`).

    Raises:
        ValueError: an unknown name (or a kind outside ``choices``); the message lists the known ones.
    """
    allowed = tuple(KINDS) if choices is None else tuple(choices)
    name = kind.name if isinstance(kind, JudgmentKind) else kind
    if isinstance(name, str) and name in allowed and name in KINDS:
        return KINDS[name]
    close = difflib.get_close_matches(str(name), list(allowed), n=1) if isinstance(name, str) else []
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown judgment kind {name!r}; use one of {', '.join(repr(k) for k in allowed)}.{hint}")
