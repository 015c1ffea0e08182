"""Metrics x datasets: the SRCC, PLCC and KRCC of several MOS runs side by side, in Markdown and LaTeX.

Each run folder (``spips-bench run --dataset tid2013|kadid10k|pipal|...``) contributes one column per
table: its statistic over all images (category ``all`` of ``summary.csv``). Rows are the metrics of
every run, in the order they first appear; a metric a run lacks shows a dash. The folders are only
read: their ``summary.csv`` must be current (``spips-bench run`` and ``spips-bench tables`` write it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from spips_bench.errors import RunConfigError
from spips_bench.io import atomic_write_text
from spips_bench.report.tables import MOS_HEADERS, MOS_NOTE, MetricInfo, _Context, _document, _Format
from spips_bench.stats.kinds import MOS
from spips_bench.stats.summary import SummaryRow, read_summary_csv

#: File names of the overview, by format.
OVERVIEW_FILES = {"md": "mos-tables.md", "tex": "mos-tables.tex"}
#: The statistics of the overview, one table each, in order.
OVERVIEW_STATISTICS = ("srcc", "plcc", "krcc")


def _run_column(folder: Path) -> tuple[str, list[SummaryRow], dict[str, MetricInfo]]:
    """The column title, the MOS summary rows over all images, and the metric infos of one run folder."""
    from spips_bench.report.build import ALL_CATEGORY, open_run, report_title

    store, record = open_run(folder)
    rows = [r for r in read_summary_csv(store.root / "summary.csv") if r.kind == MOS.name]
    if not rows:
        raise RunConfigError(f"{store.root / 'summary.csv'}: no MOS rows; this folder is a run on "
                             f"{record.get('dataset', {}).get('name', '?')!r}, not on a MOS dataset (tid2013, "
                             "kadid10k, pipal, mos-demo). Pass the --out of `spips-bench run --dataset tid2013`.")
    categories = {r.category for r in rows}
    overall = ALL_CATEGORY if ALL_CATEGORY in categories else sorted(categories)[0]
    infos = {name: MetricInfo(name, bool(info["higher_is_better"]), trained=bool(info.get("trained", True)))
             for name, info in record.get("metrics", {}).items()}
    return report_title(record), [r for r in rows if r.category == overall], infos


def render_overview(columns: Sequence[tuple[str, list[SummaryRow], dict[str, MetricInfo]]], *, fmt: str,
                    digits: int = 3, intervals: bool = False) -> str:
    """The overview document: one table per statistic of :data:`OVERVIEW_STATISTICS`, metrics x datasets.

    Args:
        columns: per dataset, its title, its summary rows over all images and its metrics' infos.
        fmt: ``"md"`` or ``"tex"``.
        digits: decimals of the correlations.
        intervals: show the bootstrap intervals.

    Raises:
        ValueError: two columns with the same title (the same dataset twice).
    """
    f = _Format(fmt)
    titles = [c[0] for c in columns]
    twice = sorted({t for t in titles if titles.count(t) > 1})
    if twice:
        raise ValueError(f"the runs give the dataset(s) {', '.join(twice)} more than once; pass one run per dataset.")
    infos: dict[str, MetricInfo] = {}
    values: dict[tuple[str, str, str, str], SummaryRow] = {}
    for title, rows, metric_infos in columns:
        for r in rows:
            infos.setdefault(r.metric, metric_infos.get(r.metric) or MetricInfo(r.metric, False))
            values[(MOS.name, title, r.metric, r.statistic)] = r
    ctx = _Context(f, infos, values, intervals, digits)
    shown = list(infos)
    tables = [ctx.table(f"{MOS_HEADERS[stat]} over all images, metrics x datasets", shown,
                        [(MOS.name, title, stat, title) for title in titles]) for stat in OVERVIEW_STATISTICS]
    notes = ["Bold: best value of each column. Arrows give each metric's own direction: ↓ lower score = more "
             "similar, ↑ higher = more similar.", MOS_NOTE]
    if any(not math.isfinite(r.value) for r in values.values()):
        notes.append("NaN: the statistic is undefined there (a constant score).")
    return _document(f, "MOS datasets", [t for t in tables if t is not None], notes)


def write_overview(runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                   formats: Sequence[str] = ("md", "tex"), intervals: bool = False) -> dict[str, Path]:
    """Write :data:`OVERVIEW_FILES` into ``out`` from the run folders ``runs``; returns the paths by format.

    Raises:
        RunConfigError: a folder that is not a run folder, or holds no MOS rows.
        FileNotFoundError: a run folder without ``summary.csv``.
        ValueError: no run, an unknown format, or a dataset given twice.
    """
    if not runs:
        raise ValueError("pass at least one run folder of a MOS dataset.")
    unknown = [fmt for fmt in formats if fmt not in OVERVIEW_FILES]
    if unknown:
        raise ValueError(f"unknown table format(s) {unknown}; choose from {', '.join(OVERVIEW_FILES)}.")
    columns = [_run_column(Path(r)) for r in runs]
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        written[fmt] = target / OVERVIEW_FILES[fmt]
        text = render_overview(columns, fmt=fmt, intervals=intervals)
        atomic_write_text(written[fmt], text)
    return written


__all__ = ["OVERVIEW_FILES", "OVERVIEW_STATISTICS", "render_overview", "write_overview"]
