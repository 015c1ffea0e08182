"""The SPIPS paper's Tables II-VIII from a run folder: our values, the published ones, and their difference.

:func:`write_paper_tables` lays a run's results out as the paper does: Tables II-IV (PLCC, SRCC and KRCC
of the ablations on 2AFC), Tables V-VII (the same statistics of every other metric) and Table VIII (the
three correlations on JND), each with the paper's columns and row order, the metrics under their
display names (``PSNR``, ``SSIM``, ..., ``SPIPS (ours)``). Every cell holds one number:

* **this run**: our value; bold is the best of the column; a mark says that the metric is significantly
  better (▲) or worse (▼) than the best baseline of that column (see below);
* **as published** (with ``compare_paper``): the paper's value for the same rows and columns;
* **this run minus the paper**: the difference, ours minus published.

Row order: the metrics that the paper's table has a row for, in the paper's order
(``resources/paper_values.csv`` lists each table's rows in that order), then the others in the order of
the run (in Tables II-IV each full metric after its ablations).

Significance: a metric that is not a baseline is compared, column by column, with the *best baseline of
the column* (the baseline with the highest value of that statistic there) by the paired bootstrap of
:func:`spips_bench.stats.core.paired_bootstrap_test` on the per-sample scores of the store: the same
resamples of the samples both metrics scored, the run's bootstrap count and seed, two-sided at the 95%
level (p < 0.05). Baselines are passed explicitly, or are by default the paper's prior metrics present in
the run (:func:`default_baselines`: PSNR, SSIM, VIF, DISTS, LPIPS by their cards' paper rows); baselines
themselves carry no mark. Every test is also written to ``paper-significance.csv``.

Synthetic judgments (the demo set) are not human judgments, so a comparison with the paper's values
is refused unless ``allow_synthetic``; then every table carries a banner that says so.

The LaTeX needs ``\\usepackage{booktabs}`` and ``\\usepackage{graphicx}``: each table is shrunk to the
text width when wider (``\\resizebox``), and its notes sit below it inside the same float.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spips_bench.errors import RunConfigError
from spips_bench.io import atomic_write_text
from spips_bench.report.build import _summaries, absent_footnotes, metric_footnotes, open_run, report_title
from spips_bench.report.tables import CATEGORY_HEADERS, _Format, paper_values
from spips_bench.run.store import ScoreStore
from spips_bench.stats.kinds import CORRELATIONS, JND, TWO_AFC, JudgmentKind, judgment_kind
from spips_bench.stats.summary import SummaryRow

#: The files :func:`write_paper_tables` writes, by format; ``"significance"`` holds every paired test.
PAPER_FILES = {"md": "paper-tables.md", "tex": "paper-tables.tex", "significance": "paper-significance.csv"}
#: Level of the two-sided significance marks.
LEVEL = 0.95
#: The banner of every table of a comparison made on synthetic judgments.
SYNTHETIC_BANNER = ("WARNING: synthetic judgments: these numbers are not comparable with the paper's human "
                    "values.")
#: The significance marks (LaTeX: superscript open triangles, which need no package).
BETTER, WORSE = "▲", "▼"
SIGNIFICANCE_COLUMNS = ("kind", "category", "statistic", "metric", "baseline", "n", "diff", "ci_low",
                        "ci_high", "p_value", "mark")
#: The paper's category columns (Tables II-VII) and Table VIII's category groups, in its order.
_CATEGORIES_2AFC = ("cnn", "color", "deblur", "frameinterp", "superres", "traditional")
_CATEGORIES_JND = ("cnn", "traditional")


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's tables: which statistic(s), which kind, which metrics (ablations or the rest).

    Attributes:
        number: the paper's table number (``"II"`` ... ``"VIII"``).
        kind: the judgment kind of its columns.
        statistics: the statistic of each column group; Tables II-VII have one, Table VIII three per category.
        ablations: Tables II-IV show the ablated metrics and their full metrics; the others every other metric.
        subject: what the table shows, for its caption.
    """

    number: str
    kind: JudgmentKind
    statistics: tuple[str, ...]
    ablations: bool
    subject: str

    def columns(self, categories: Sequence[str]) -> list[tuple[str, str]]:
        """``(category, statistic)`` of each column, for the categories present, in the paper's order."""
        order = _CATEGORIES_JND if self.kind is JND else _CATEGORIES_2AFC
        cats = [c for c in order if c in categories] + sorted(set(categories) - set(order))
        return [(c, s) for c in cats for s in self.statistics]


_STAT_NAMES = {"plcc": "PLCC", "srcc": "SRCC", "krcc": "KRCC"}
#: The paper's Tables II-VIII, in its order.
PAPER_TABLES: tuple[PaperTable, ...] = (
    *(PaperTable(n, TWO_AFC, (s,), True, f"{_STAT_NAMES[s]} of the full model and its ablations on 2AFC")
      for n, s in (("II", "plcc"), ("III", "srcc"), ("IV", "krcc"))),
    *(PaperTable(n, TWO_AFC, (s,), False, f"{_STAT_NAMES[s]} on 2AFC")
      for n, s in (("V", "plcc"), ("VI", "srcc"), ("VII", "krcc"))),
    PaperTable("VIII", JND, CORRELATIONS, False, "PLCC, SRCC and KRCC on JND"),
)


@dataclass(frozen=True)
class Mark:
    """The paired bootstrap comparison of one metric with the best baseline of one column."""

    kind: str
    category: str
    statistic: str
    metric: str
    baseline: str
    n: int
    diff: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def mark(self) -> str:
        """``▲`` significantly better, ``▼`` significantly worse, ``""`` neither (at :data:`LEVEL`)."""
        if not (math.isfinite(self.p_value) and self.p_value < 1 - LEVEL and math.isfinite(self.diff)):
            return ""
        return BETTER if self.diff > 0 else WORSE if self.diff < 0 else ""


@dataclass(frozen=True)
class Row:
    """A metric as the paper tables show it."""

    name: str
    display: str
    trained: bool = True
    ablation_of: str | None = None
    paper_row: str | None = None


@dataclass
class _Block:
    """One rendered table: the paper's table number, caption, column headers (with their group), row labels,
    cells and notes; ``part`` names it in a LaTeX label (``tab:paper-V-run``)."""

    number: str
    part: str
    caption: str
    groups: list[str]
    headers: list[str]
    labels: list[str]
    cells: list[list[str]]
    notes: list[str] = field(default_factory=list)
    banner: bool = False


# -- the published values ----------------------------------------------------------------------------------


def _paper_rows_in_order(tables: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(p.paper_metric for p in paper_values() if p.table in tables))


def _paper_lookup(numbers: Sequence[str]) -> dict[tuple[str, str, str, str], float]:
    return {(p.kind, p.category, p.statistic, p.paper_metric): p.value for p in paper_values() if p.table in numbers}


def _table_set(t: PaperTable) -> tuple[str, ...]:
    """The paper tables whose rows are shown together: II-IV (ablations) or V-VIII."""
    return ("II", "III", "IV") if t.ablations else ("V", "VI", "VII", "VIII")


# -- rows, order, baselines -----------------------------------------------------------------------------


def _card(name: str) -> Any:
    from spips_bench.registry import REGISTRY

    return next((s for s in REGISTRY.specs() if s.name == name), None)


def _rows(record: Mapping[str, Any], display: Mapping[str, str] | None, paper_rows: Mapping[str, str] | None,
          run_file: Path) -> dict[str, Row]:
    metrics: Mapping[str, Any] = record.get("metrics", {})
    known = set(_paper_rows_in_order([t.number for t in PAPER_TABLES]))
    for what, given in (("display", display), ("paper_rows", paper_rows)):
        unknown = sorted(set(given or {}) - set(metrics))
        if unknown:
            raise ValueError(f"{what} names metric(s) {unknown} that {run_file} does not hold; its metrics: "
                             f"{', '.join(metrics) or 'none'}.")
    for name, shown in (display or {}).items():
        if not isinstance(shown, str) or not shown.strip():
            raise ValueError(f"display[{name!r}] must be a non-empty string, got {shown!r}.")
    for name, given_row in (paper_rows or {}).items():
        if given_row and given_row not in known:
            raise ValueError(f"paper_rows[{name!r}] = {given_row!r} is not a row of the paper's tables; choose from "
                             f"{', '.join(sorted(known))} (or '' for none).")
    out = {}
    for name, info in metrics.items():
        card = _card(name)
        row: str | None = card.paper_row if card is not None else None
        if paper_rows is not None and name in paper_rows:
            row = paper_rows[name]
        out[name] = Row(name, (display or {}).get(name) or (card.display if card is not None else name),
                        bool(info.get("trained", True)), info.get("ablation_of"), row or None)
    return out


def _order(t: PaperTable, rows: Mapping[str, Row], present: Sequence[str]) -> list[str]:
    """The metrics of table ``t`` among ``present`` (run order): paper rows first in the paper's order."""
    ablated = [m for m in present if rows[m].ablation_of is not None]
    if t.ablations:
        members: list[str] = []
        for base in dict.fromkeys(str(rows[a].ablation_of) for a in ablated):
            members += [a for a in ablated if rows[a].ablation_of == base] + ([base] if base in present else [])
        members = list(dict.fromkeys(members))
    else:
        members = [m for m in present if m not in ablated]
    order = _paper_rows_in_order(_table_set(t))
    ranked = sorted((order.index(r), i, m) for i, m in enumerate(members)
                    if (r := rows[m].paper_row) is not None and r in order)
    first = [m for _, _, m in ranked]
    return first + [m for m in members if m not in first]


def default_baselines(rows: Mapping[str, Row]) -> list[str]:
    """The metrics compared with the paper's prior metrics: those whose paper row is a row of Tables V-VIII
    but not of Tables II-IV (which hold the paper's own model and its ablations), and that belong to no
    ablation family of the run (neither an ablation nor the full metric of one). In run order."""
    own = set(_paper_rows_in_order(("II", "III", "IV")))
    prior = set(_paper_rows_in_order(("V", "VI", "VII", "VIII"))) - own
    families = {r.ablation_of for r in rows.values() if r.ablation_of is not None}
    return [m for m, r in rows.items() if r.paper_row in prior and r.ablation_of is None and m not in families]


# -- significance -----------------------------------------------------------------------------------------


def _statistic(kind: JudgmentKind, statistic: str) -> Any:
    from spips_bench.stats.core import CORRELATION_STATISTICS, HEADLINE_STATISTICS

    if statistic == kind.headline:
        return HEADLINE_STATISTICS[statistic]
    for suffix, mode in kind.correlation_modes:
        for c in CORRELATIONS:
            if statistic == c + suffix:
                return CORRELATION_STATISTICS[mode][c]
    raise ValueError(f"{statistic!r} is not a statistic of {kind.label}; choose from {', '.join(kind.statistics)}.")


class _Scores:
    """Per-sample scores of the store as distances (similarities negated), read once per (kind, category,
    metric)."""

    def __init__(self, store: ScoreStore, record: Mapping[str, Any]) -> None:
        self.store = store
        self.metrics: Mapping[str, Any] = record.get("metrics", {})
        self._cache: dict[tuple[str, str, str], Any] = {}

    def get(self, kind: str, category: str, metric: str) -> Any:
        import numpy as np

        key = (kind, category, metric)
        if key not in self._cache:
            judgments = self.store.read_judgments(kind, category)
            scores = self.store.read_scores(kind, category, metric)
            samples = sorted(judgments)
            columns = len(judgment_kind(kind).score_columns)
            h = np.array([judgments[s] for s in samples], dtype=np.float64)
            d = np.array([scores[s] for s in samples], dtype=np.float64).reshape(len(samples), columns)
            self._cache[key] = (-d if self.metrics[metric]["higher_is_better"] else d, h)
        return self._cache[key]


def _paired(scores: _Scores, kind: JudgmentKind, category: str, statistic: str, metric: str,
            baseline: str, n_boot: int, seed: int) -> Mark | None:
    """The paired bootstrap test of ``metric`` against ``baseline`` on the samples both scored (no NaN
    score, a finite judgment); ``None`` when fewer than two such samples exist."""
    import numpy as np

    from spips_bench.stats.core import paired_bootstrap_test

    da, h = scores.get(kind.name, category, metric)
    db, _ = scores.get(kind.name, category, baseline)
    keep = ~np.isnan(da).any(axis=1) & ~np.isnan(db).any(axis=1) & np.isfinite(h)
    if keep.sum() < 2:
        return None
    arrays_a = (*(da[keep, j] for j in range(da.shape[1])), h[keep])
    arrays_b = (*(db[keep, j] for j in range(db.shape[1])), h[keep])
    test = paired_bootstrap_test(_statistic(kind, statistic), arrays_a, arrays_b, n_boot=n_boot, seed=seed,
                                 level=LEVEL)
    return Mark(kind.name, category, statistic, metric, baseline, int(keep.sum()), test.diff, test.ci_low,
                test.ci_high, test.p_value)


def _best_baseline(values: Mapping[tuple[str, str, str, str], SummaryRow], kind: str, category: str,
                   statistic: str, baselines: Sequence[str]) -> str | None:
    best: tuple[float, str] | None = None
    for b in baselines:
        r = values.get((kind, category, b, statistic))
        if r is not None and math.isfinite(r.value) and (best is None or r.value > best[0]):
            best = (r.value, b)
    return best[1] if best else None


# -- rendering ---------------------------------------------------------------------------------------------


def _render(block: _Block, fmt: str) -> str:
    f = _Format(fmt)
    grouped = any(block.groups)
    if not f.tex:
        headers = [f"{g} {h}".strip() for g, h in zip(block.groups, block.headers, strict=True)]
        lines = [f"### Table {block.number}: {f.text(block.caption)}", ""]
        if block.banner:
            lines += [f"> **{f.text(SYNTHETIC_BANNER)}**", ""]
        lines += ["| " + " | ".join(["Metric", *map(f.text, headers)]) + " |",
                  "|---|" + "---:|" * len(headers)]
        lines += ["| " + " | ".join([label, *row]) + " |" for label, row in zip(block.labels, block.cells, strict=True)]
        if block.notes:
            lines += [""] + [f"- {f.note(n)}" for n in block.notes]
        return "\n".join(lines)
    width = len(block.headers)
    head: list[str] = []
    if grouped:
        spans: list[tuple[str, int]] = []
        for g in block.groups:
            if spans and spans[-1][0] == g:
                spans[-1] = (g, spans[-1][1] + 1)
            else:
                spans.append((g, 1))
        top, rules, col = [""], [], 2
        for g, n in spans:
            top.append(f"\\multicolumn{{{n}}}{{c}}{{{f.text(g)}}}" if n > 1 else f.text(g))
            if g:
                rules.append(f"\\cmidrule(lr){{{col}-{col + n - 1}}}")
            col += n
        head += [" & ".join(top) + " \\\\", "".join(rules)]
    head.append(" & ".join(["Metric", *map(f.text, block.headers)]) + " \\\\")
    # LaTeX numbers its own tables: the paper's number goes into the caption's text.
    caption = f.text(f"{block.caption} (the paper's Table {block.number})")
    lines = ["\\begin{table}[htbp]", "\\centering", f"\\caption{{{caption}}}",
             f"\\label{{tab:paper-{block.number}-{block.part}}}"]
    if block.banner:
        box = "\\parbox{\\dimexpr\\linewidth-2\\fboxsep-2\\fboxrule\\relax}"
        lines.append(f"\\fbox{{{box}{{\\centering\\bfseries {f.text(SYNTHETIC_BANNER)}}}}}\\par\\medskip")
    # Shrunk to the text width when wider, never enlarged.
    lines += ["\\small", "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%",
              f"\\begin{{tabular}}{{l{'r' * width}}}", "\\toprule", *head, "\\midrule"]
    lines += [" & ".join([label, *row]) + " \\\\" for label, row in zip(block.labels, block.cells, strict=True)]
    lines += ["\\bottomrule", "\\end{tabular}%", "}"]
    if block.notes:
        lines += ["\\par\\smallskip", "\\begin{minipage}{\\linewidth}\\footnotesize"]
        lines += [f"{f.note(n)}\\par" for n in block.notes]
        lines.append("\\end{minipage}")
    lines.append("\\end{table}")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Doc:
    title: str
    rows: dict[str, Row]
    values: dict[tuple[str, str, str, str], SummaryRow]
    marks: dict[tuple[str, str, str, str], Mark]
    baselines: list[str]
    compare_paper: bool
    synthetic: bool
    n_boot: int
    seed: int


def _cell_number(v: float) -> str:
    return "NaN" if math.isnan(v) else f"{v:.2f}"


def _tables(doc: _Doc, fmt: str) -> list[_Block]:
    f = _Format(fmt)
    present = list(dict.fromkeys(k[2] for k in doc.values))
    blocks: list[_Block] = []
    for t in PAPER_TABLES:
        categories = list(dict.fromkeys(k[1] for k in doc.values if k[0] == t.kind.name))
        members = _order(t, doc.rows, [m for m in doc.rows if m in present])
        cols = [c for c in t.columns(categories)
                if any((t.kind.name, c[0], m, c[1]) in doc.values for m in members)]
        if not members or not cols:
            continue
        grouped = len(t.statistics) > 1
        groups = [CATEGORY_HEADERS.get(c, c) if grouped else "" for c, _ in cols]
        headers = [_STAT_NAMES[s] if grouped else CATEGORY_HEADERS.get(c, c) for c, s in cols]
        labels = [f.text(doc.rows[m].display + ("" if doc.rows[m].trained else " †")) for m in members]
        ours: list[list[str]] = [[] for _ in members]
        for c, s in cols:
            found = [doc.values.get((t.kind.name, c, m, s)) for m in members]
            shown = [float(_cell_number(r.value)) for r in found if r is not None and math.isfinite(r.value)]
            best = max(shown) if len(shown) > 1 else None
            for i, (m, r) in enumerate(zip(members, found, strict=True)):
                if r is None:
                    ours[i].append(f.missing())
                    continue
                text = f.num(_cell_number(r.value))
                if best is not None and math.isfinite(r.value) and float(_cell_number(r.value)) == best:
                    text = f.bold(text)
                mark = doc.marks.get((t.kind.name, c, s, m))
                if mark is not None and mark.mark:
                    text += f.text(mark.mark)
                ours[i].append(text)
        base = f"{t.subject}, {doc.title}"
        notes = _our_notes(doc, t, members, cols)
        blocks.append(_Block(t.number, "run", f"{base}: this run", groups, headers, labels, ours, notes,
                             banner=doc.compare_paper and doc.synthetic))
        if not doc.compare_paper:
            continue
        lookup = _paper_lookup(_table_set(t))
        published, diffs = [], []
        for m in members:
            row = doc.rows[m].paper_row
            refs = [lookup.get((t.kind.name, c, s, row)) if row else None for c, s in cols]
            published.append([f.missing() if v is None else f"{v:.2f}" for v in refs])
            line = []
            for (c, s), ref in zip(cols, refs, strict=True):
                r = doc.values.get((t.kind.name, c, m, s))
                if ref is None or r is None:
                    line.append(f.missing())
                else:
                    line.append("NaN" if math.isnan(r.value) else f.num(f"{r.value - ref:+.2f}"))
            diffs.append(line)
        in_run = {doc.rows[m].paper_row for m in members}
        absent = [r for r in _paper_rows_in_order((t.number,)) if r not in in_run]
        paper_notes = [f"Values of the paper's Table {t.number} (two decimals), for the rows of this run's table: "
                       "each metric's paper row (its card's, or as passed); – where the paper has none."]
        if absent:
            paper_notes.append(f"Paper rows without a metric in this run: {', '.join(absent)}.")
        blocks.append(_Block(t.number, "published", f"{base}: as published in the paper", groups, headers, labels,
                             published, paper_notes, banner=doc.synthetic))
        blocks.append(_Block(t.number, "difference", f"{base}: this run minus the paper", groups, headers, labels,
                             diffs, ["Our unrounded value minus the published one; positive: this run agrees more with "
                              "the judgments than the paper reports."], banner=doc.synthetic))
    return blocks


def _our_notes(doc: _Doc, t: PaperTable, members: list[str], cols: list[tuple[str, str]]) -> list[str]:
    notes = ["Bold: best value of the column (every statistic here is higher = better)."]
    candidates = [m for m in members if m not in doc.baselines]
    if not doc.baselines or not candidates:
        notes.append("No significance marks: " + ("no baseline in this run." if not doc.baselines
                                                  else "every metric of this table is a baseline."))
    elif doc.n_boot < 1:
        notes.append("No significance marks: the run was made without bootstrap resamples (`--bootstrap 0`).")
    else:
        names = ", ".join(doc.rows[b].display for b in doc.baselines)
        best: dict[str, list[str]] = {}
        for c, s in cols:
            b = _best_baseline(doc.values, t.kind.name, c, s, doc.baselines)
            if b is not None:
                header = CATEGORY_HEADERS.get(c, c) + (f" {_STAT_NAMES[s]}" if len(t.statistics) > 1 else "")
                best.setdefault(doc.rows[b].display, []).append(header)
        where = "; ".join(f"{b} ({', '.join(h)})" for b, h in best.items())
        notes.append(f"{BETTER} / {WORSE}: significantly better / worse than the best baseline of the column "
                     f"(baselines: {names}; best: {where or 'none'}), paired bootstrap over the samples both "
                     f"metrics scored, {doc.n_boot} resamples, seed {doc.seed}, two-sided, {LEVEL:.0%} level "
                     "(p < 0.05). Baselines carry no mark.")
    if any(not doc.rows[m].trained for m in members):
        notes.append("† untrained: the metric's learned parts run from a data-free initialisation; not a "
                     "trained result.")
    return notes


def _document(doc: _Doc, fmt: str, footnotes: Sequence[str]) -> str:
    f = _Format(fmt)
    blocks = _tables(doc, fmt)
    parts = [_render(b, fmt) for b in blocks]
    if not blocks:
        parts.append(f.text(f"{doc.title}: no results for the paper's Tables II-VIII."))
    notes = ["Correlations of the 2AFC decision (the paper's protocol, decision correlation assumed) and of "
             "-d with the JND judgment, as in the plain tables of the run folder."]
    notes += [str(n) for n in footnotes]
    if f.tex:
        items = "\n".join(f"\\item {f.note(n)}" for n in notes)
        head = "% Requires \\usepackage{booktabs} and \\usepackage{graphicx}.\n"
        listed = f"\\paragraph{{Notes}}\n\\begin{{itemize}}\n{items}\n\\end{{itemize}}"
        return head + "\n\n".join([*parts, listed]) + "\n"
    title = f"# The SPIPS paper's tables: {f.text(doc.title)}"
    return "\n\n".join([title, *parts, "Notes:\n\n" + "\n".join(f"- {f.note(n)}" for n in notes)]) + "\n"


def _significance_csv(marks: Sequence[Mark]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SIGNIFICANCE_COLUMNS)
    for m in marks:
        w.writerow([m.kind, m.category, m.statistic, m.metric, m.baseline, m.n, repr(m.diff),
                    repr(m.ci_low), repr(m.ci_high), repr(m.p_value), m.mark])
    return buf.getvalue()


def is_synthetic(record: Mapping[str, Any]) -> bool:
    """Whether a run's judgments are synthetic (``run.json``'s ``dataset.synthetic_judgments``)."""
    return bool(record.get("dataset", {}).get("synthetic_judgments"))


def write_paper_tables(run: str | os.PathLike[str], out: str | os.PathLike[str], *,
                       formats: Sequence[str] = ("md", "tex"), compare_paper: bool = True,
                       display: Mapping[str, str] | None = None, paper_rows: Mapping[str, str] | None = None,
                       baselines: Sequence[str] | None = None, allow_synthetic: bool = False) -> dict[str, Path]:
    """Write the paper's Tables II-VIII of the run folder ``run`` into the folder ``out``.

    Only ``out`` is written (``paper-tables.md``, ``paper-tables.tex``, ``paper-significance.csv``); the
    run folder is read, never changed. No metric is computed: the statistics come from the store, with
    the bootstrap count and seed recorded in ``run.json``, as in :func:`spips_bench.report.build.write_reports`.

    Args:
        run: a run folder written by ``spips-bench run``.
        out: the folder to write into (created if absent).
        formats: any of ``"md"``, ``"tex"``.
        compare_paper: add, after each of our tables, the paper's table with the same rows and columns and
            the table of differences (ours minus the paper).
        display: metric -> name shown in the tables; default the card's ``display``, else the metric's name.
        paper_rows: metric -> the paper's row it is compared with (``"SPIPS"``, ``"LPIPS"``...; ``""``:
            none); default the card's ``paper_row``.
        baselines: the metrics the significance marks compare with; default :func:`default_baselines`.
        allow_synthetic: compare a run on synthetic judgments with the paper anyway, every table under a
            warning banner.

    Returns:
        The paths written, keyed ``"md"``, ``"tex"`` (those of ``formats``) and ``"significance"``.

    Raises:
        RunConfigError: ``run`` has no ``run.json``, or its judgments are synthetic and ``compare_paper``
            is set without ``allow_synthetic``.
        ValueError: an unknown format; ``display``, ``paper_rows`` or ``baselines`` name a metric the run does
            not hold, or an unknown paper row.
    """
    unknown = [f for f in formats if f not in ("md", "tex")]
    if unknown or not formats:
        raise ValueError(f"formats must be 'md' and/or 'tex', got {list(formats)!r}.")
    store, record = open_run(run)
    synthetic = is_synthetic(record)
    if compare_paper and synthetic and not allow_synthetic:
        label = record.get("dataset", {}).get("label") or "synthetic judgments"
        raise RunConfigError(f"{store.run_file}: dataset {record.get('dataset', {}).get('name', '?')!r} has "
                             f"{label}, not human ones: comparing them with the paper's values is meaningless. "
                             "Pass --allow-synthetic (allow_synthetic=True) to write the comparison anyway, "
                             "under a warning banner, or leave out --compare-paper.")
    rows = _rows(record, display, paper_rows, store.run_file)
    if baselines is None:
        chosen = default_baselines(rows)
    else:
        chosen = list(dict.fromkeys(baselines))
        missing = [b for b in chosen if b not in rows]
        if missing:
            raise ValueError(f"baselines {missing} are not metrics of {store.run_file}; its metrics: "
                             f"{', '.join(rows) or 'none'}.")
    stats = record.get("statistics", {})
    n_boot, seed = int(stats.get("bootstrap", 1000)), int(stats.get("seed", 0))
    summary, notes = _summaries(store, record, 0, seed)  # the values only: their intervals are not shown
    values = {(r.kind, r.category, r.metric, r.statistic): r for r in summary}
    present = [m for m in rows if any(k[2] == m for k in values)]
    scored = [b for b in chosen if b in present]
    marks: dict[tuple[str, str, str, str], Mark] = {}
    tested: list[Mark] = []
    if n_boot >= 1:
        scores = _Scores(store, record)
        for t in PAPER_TABLES:
            categories = list(dict.fromkeys(k[1] for k in values if k[0] == t.kind.name))
            members = _order(t, rows, present)
            for c, s in t.columns(categories):
                best = _best_baseline(values, t.kind.name, c, s, scored)
                if best is None:
                    continue
                for m in members:
                    key = (t.kind.name, c, s, m)
                    if m in scored or key in marks or (t.kind.name, c, m, s) not in values:
                        continue
                    mark = _paired(scores, t.kind, c, s, m, best, n_boot, seed)
                    if mark is not None:
                        marks[key] = mark
                        tested.append(mark)
    doc = _Doc(report_title(record), rows, values, marks, scored, compare_paper, synthetic, n_boot, seed)
    footnotes = [*metric_footnotes(record), *absent_footnotes(record), *notes]
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        written[fmt] = target / PAPER_FILES[fmt]
        atomic_write_text(written[fmt], _document(doc, fmt, footnotes))
    written["significance"] = target / PAPER_FILES["significance"]
    atomic_write_text(written["significance"], _significance_csv(tested))
    return written
