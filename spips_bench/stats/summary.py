"""Per-category summaries of one metric on BAPPS, and their tidy CSV file.

A summary row holds one statistic of one metric on one category, with its bootstrap interval. The CSV
has exactly the columns ``kind,category,metric,statistic,value,ci_low,ci_high,n``; floats are written
with ``repr`` precision, so reading and rewriting a file reproduces it byte for byte.

Statistics (higher = better agreement with humans but for the MOS ``rmse``; see :mod:`spips_bench.stats.core`):

* 2AFC: ``2afc_score`` (fraction in [0, 1], BAPPS protocol); ``plcc``/``srcc``/``krcc``: the decision
  correlation (the SPIPS paper's protocol); ``*_continuous``: the same correlations of ``d0 - d1``.
* JND: ``jnd_map`` (average precision in [0, 1]); ``plcc``/``srcc``/``krcc`` of ``-d`` with ``same``.
* MOS: ``srcc``, ``krcc``, ``plcc`` (after the five-parameter logistic fit), ``plcc_linear`` and ``rmse``
  of the quality ``-d`` against the subjective score (:mod:`spips_bench.stats.mos`); ``rmse`` alone is
  lower = better. The category ``all`` holds every image of the set.

Infinite scores (PSNR of identical images) are ordered values in every statistic but the PLCC rows,
which leave them out; ``n`` of each row counts the samples that statistic used.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spips_bench.io import atomic_write_text
from spips_bench.stats import core as stats
from spips_bench.stats.kinds import CORRELATIONS, JND, KINDS, TWO_AFC, JudgmentKind, judgment_kind

#: The summary statistics of each kind, in report order (a kind's ``statistics``).
STATISTICS_2AFC = TWO_AFC.statistics
STATISTICS_JND = JND.statistics
COLUMNS = ("kind", "category", "metric", "statistic", "value", "ci_low", "ci_high", "n")


@dataclass(frozen=True)
class SummaryRow:
    """One statistic of one metric on one BAPPS category.

    Attributes:
        kind: ``"2afc"`` or ``"jnd"``.
        category: BAPPS category (``"cnn"``, ``"traditional"``, ``"superres"``...).
        metric: registry name of the metric.
        statistic: one of :data:`STATISTICS_2AFC` or :data:`STATISTICS_JND` for the kind.
        value: the statistic, higher = better (NaN when undefined, e.g. constant decisions).
        ci_low: lower bound of the bootstrap interval (NaN when not computed).
        ci_high: upper bound (NaN when not computed).
        n: number of samples the statistic used.
    """

    kind: str
    category: str
    metric: str
    statistic: str
    value: float
    ci_low: float
    ci_high: float
    n: int


def _label(category: str, metric: str) -> str:
    for name, value in (("category", category), ("metric", metric)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
    return f"metric {metric!r} on category {category!r}"


def _oriented(x: object, name: str, higher_is_better: bool, where: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} of {where} must be an array of numbers: {exc}") from None
    if np.isnan(arr).any():
        raise ValueError(
            f"{name} of {where} has {int(np.isnan(arr).sum())} NaN score(s); the metric failed on those "
            "samples. Fix the metric or drop the samples before summarising."
        )
    # The statistics take distances (lower = more similar); a similarity's negation is one.
    return -arr if higher_is_better else arr


def _intervals(kind: JudgmentKind, arrays: tuple[np.ndarray, ...], n_boot: int, seed: int,
               ) -> dict[str, tuple[float, float]]:
    if n_boot == 0:
        return {name: (math.nan, math.nan) for name in kind.statistics}
    # All statistics of a category share one set of resampled triplets (each drops what it cannot use).
    return stats.summary_intervals(kind, *arrays, n_boot=n_boot, seed=seed)


def _check_boot(n_boot: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer (0 = no intervals), got {n_boot!r}.")


def summarize(kind: str | JudgmentKind, category: str, metric: str, scores: Sequence[object], judgment: object,
              *, higher_is_better: bool, n_boot: int = 1000, seed: int = 0,
              fits: dict[str, dict[str, object]] | None = None) -> list[SummaryRow]:
    """All statistics of one metric on one category for a judgment kind, in the order of its ``statistics``.

    Args:
        kind: the judgment kind or its name (``"2afc"``, ``"jnd"``).
        category: category name.
        metric: metric name.
        scores: one array per score column of the kind (2AFC: ``d0, d1``; JND: ``d``), shape (N,).
        judgment: the human judgment per sample, in [0, 1] (NaN = unknown).
        higher_is_better: the metric's direction; similarities are negated into distances.
        n_boot: bootstrap resamples for the 95% intervals; 0 leaves the intervals NaN.
        seed: bootstrap seed (the same seed resamples the same samples for every metric).
        fits: a scale kind (MOS) only: receives ``fits[metric][category]``, the logistic fit behind the
            ``plcc`` and ``rmse`` rows (:meth:`spips_bench.stats.mos.LogisticFit.as_record`; its ``q`` is
            the metric's score, negated for a distance), when one was fitted.

    Raises:
        ValueError: an unknown kind, the wrong number of score arrays, arrays of different lengths, no
            sample, a NaN score or only NaN judgments.
    """
    k = judgment_kind(kind)
    where = _label(category, metric)
    _check_boot(n_boot)
    if len(scores) != len(k.score_columns):
        raise ValueError(f"{where}: {k.label} takes {len(k.score_columns)} score array(s) "
                         f"({', '.join(k.score_columns)}), got {len(scores)}.")
    columns = tuple(_oriented(x, name, higher_is_better, where) for x, name in zip(scores, k.score_columns,
                                                                                       strict=True))
    h = (stats._vector(judgment, f"{k.judgment_column} of {where}") if k.is_scale
         else stats._judgments(judgment, f"{k.judgment_column} of {where}"))
    sizes = [c.size for c in columns] + [h.size]
    if len(set(sizes)) != 1:
        names = [*k.score_columns, k.judgment_column]
        raise ValueError(f"{where}: {', '.join(names[:-1])} and {names[-1]} have lengths "
                         f"{', '.join(map(str, sizes))}; pass one value per sample.")
    if h.size == 0:
        raise ValueError(f"{where}: no samples to summarise.")
    if np.isnan(h).all():
        raise ValueError(f"{where}: every {k.judgment_column!r} judgment is NaN; nothing to summarise.")
    if k.is_scale:
        return _scale_rows(k, category, metric, columns[0], h, n_boot, seed, fits)
    arrays = (*columns, h)
    cis = _intervals(k, arrays, n_boot, seed)
    headline = stats.HEADLINE_STATISTICS[k.headline]
    rows = [_row(k.name, category, metric, k.headline, headline(*arrays), cis[k.headline],
                 headline.samples(*arrays))]
    for suffix, mode in k.correlation_modes:
        point = stats._correlations(mode, arrays)
        for name in CORRELATIONS:
            n = point.plcc_n if name == "plcc" else point.n  # PLCC leaves infinite values out
            rows.append(_row(k.name, category, metric, name + suffix, getattr(point, name), cis[name + suffix], n))
    return rows


def _scale_rows(k: JudgmentKind, category: str, metric: str, distance: np.ndarray, score: np.ndarray,
                n_boot: int, seed: int, fits: dict[str, dict[str, object]] | None) -> list[SummaryRow]:
    """The rows of a scale kind (MOS): :func:`spips_bench.stats.mos.mos_statistics` of the quality ``-d``."""
    from spips_bench.stats.mos import mos_statistics

    result = mos_statistics(-distance, score, n_boot=n_boot, seed=seed)
    if fits is not None and result.fit is not None:
        fits.setdefault(metric, {})[category] = result.fit.as_record()
    return [_row(k.name, category, metric, name, result.values[name], result.intervals[name], result.n[name])
            for name in k.statistics]


def summarize_2afc(category: str, metric: str, d0: object, d1: object, judge: object, *,
                   higher_is_better: bool, n_boot: int = 1000, seed: int = 0) -> list[SummaryRow]:
    """All 2AFC statistics of one metric on one category, in the order of :data:`STATISTICS_2AFC`.

    Args:
        category: BAPPS category name.
        metric: metric name.
        d0: the metric's scores of (p0, ref), shape (N,).
        d1: scores of (p1, ref).
        judge: fraction of raters who preferred p1, in [0, 1] (NaN = unknown).
        higher_is_better: the metric's direction; similarities are negated into distances.
        n_boot: bootstrap resamples for the 95% intervals; 0 leaves the intervals NaN.
        seed: bootstrap seed (the same seed resamples the same triplets for every metric).

    Raises:
        ValueError: as :func:`summarize`.
    """
    return summarize(TWO_AFC, category, metric, (d0, d1), judge, higher_is_better=higher_is_better,
                     n_boot=n_boot, seed=seed)


def summarize_jnd(category: str, metric: str, d: object, same: object, *, higher_is_better: bool,
                  n_boot: int = 1000, seed: int = 0) -> list[SummaryRow]:
    """All JND statistics of one metric on one category, in the order of :data:`STATISTICS_JND`.

    Args:
        category: BAPPS JND category (``"traditional"`` or ``"cnn"``).
        metric: metric name.
        d: the metric's scores of (p0, p1), shape (N,).
        same: fraction of raters who judged the pair identical, in [0, 1] (NaN = unknown).
        higher_is_better: the metric's direction; similarities are negated into distances.
        n_boot: bootstrap resamples for the 95% intervals; 0 leaves the intervals NaN.
        seed: bootstrap seed.

    Raises:
        ValueError: as :func:`summarize`.
    """
    return summarize(JND, category, metric, (d,), same, higher_is_better=higher_is_better, n_boot=n_boot,
                     seed=seed)


def _row(kind: str, category: str, metric: str, statistic: str, value: float,
         ci: tuple[float, float], n: int) -> SummaryRow:
    return SummaryRow(kind, category, metric, statistic, float(value), float(ci[0]), float(ci[1]), int(n))


# -- the CSV file --------------------------------------------------------------------------------------------


def write_summary_csv(path: str | os.PathLike[str], rows: Iterable[SummaryRow]) -> None:
    """Write ``rows`` to ``path`` atomically (:func:`spips_bench.io.atomic_write_text`).

    Floats are written with ``repr`` (shortest round-tripping form, ``nan`` for missing), so the file
    is byte-stable across a read/write round trip.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        if not isinstance(row, SummaryRow):
            raise TypeError(f"write_summary_csv takes SummaryRow objects, got {type(row).__name__}.")
        writer.writerow([row.kind, row.category, row.metric, row.statistic, repr(float(row.value)),
                         repr(float(row.ci_low)), repr(float(row.ci_high)), str(int(row.n))])
    atomic_write_text(Path(path), buf.getvalue())


def read_summary_csv(path: str | os.PathLike[str]) -> list[SummaryRow]:
    """Read a file written by :func:`write_summary_csv`; a malformed file fails naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"summary file {path} does not exist; run `spips-bench run` first.") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"summary file {path} is not UTF-8 text ({exc}); is it a summary CSV?") from None
    records = list(csv.reader(text.splitlines()))
    if not records or tuple(records[0]) != COLUMNS:
        found = ",".join(records[0]) if records else "an empty file"
        raise ValueError(f"summary file {path}: header must be {','.join(COLUMNS)!r}, found {found!r}. "
                         "Regenerate it with `spips-bench run` or `write_summary_csv`.")
    rows = []
    for line, record in enumerate(records[1:], start=2):
        if not record:
            continue
        rows.append(_parse(record, f"summary file {path}, line {line}"))
    return rows


def _parse(record: list[str], where: str) -> SummaryRow:
    if len(record) != len(COLUMNS):
        raise ValueError(f"{where}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), got {len(record)}.")
    kind, category, metric, statistic = record[:4]
    if kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r} is not one of {sorted(KINDS)}.")
    if statistic not in KINDS[kind].statistics:
        raise ValueError(f"{where}: statistic {statistic!r} is not a {kind} statistic {KINDS[kind].statistics}.")
    if not category or not metric:
        raise ValueError(f"{where}: empty category or metric name.")
    try:
        value, lo, hi = (float(v) for v in record[4:7])
        n = int(record[7])
    except ValueError as exc:
        raise ValueError(f"{where}: value, ci_low, ci_high must be numbers, n an integer ({exc}).") from None
    return SummaryRow(kind, category, metric, statistic, value, lo, hi, n)
