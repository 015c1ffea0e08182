"""Summary rows -> the SPIPS paper's tables, in Markdown or LaTeX (booktabs).

One document holds, for the categories present: the BAPPS scores (2AFC score and JND mAP, percent),
Tables V-VII (PLCC, SRCC, KRCC of the 2AFC decision correlation, metrics as rows, columns CNN, Color,
Deblur, Interp, SR, Trad), Table VIII (JND correlations), Tables II-IV (ablations) when ablated metrics
are present, and the continuous-variant correlations in a table of their own. Every statistic is
higher = better, so the best value of each column is set in bold whatever the metric's own direction
(shown by an arrow beside its name). The values published in the paper (``resources/paper_values.csv``,
transcribed from its Tables II-VIII) are compared with ours in tables of their own, by
:mod:`spips_bench.report.paper`.

The LaTeX output needs ``\\usepackage{booktabs}`` and nothing else.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from spips_bench.registry import REGISTRY
from spips_bench.stats.kinds import CORRELATIONS, JND, MOS, TWO_AFC
from spips_bench.stats.summary import SummaryRow

#: BAPPS categories in the paper's column order, with the paper's column headers.
CATEGORY_HEADERS = {"cnn": "CNN", "color": "Color", "deblur": "Deblur", "frameinterp": "Interp",
                    "superres": "SR", "traditional": "Trad"}
#: Table VIII's column order.
JND_CATEGORIES = ("cnn", "traditional")
PAPER_CSV_COLUMNS = ("table", "kind", "statistic", "category", "paper_metric", "value", "note")
_UNTRAINED = "†"
#: (kind, statistic) pairs where lower is better: a column of them bolds its minimum.
_LOWER_IS_BETTER = frozenset({(MOS.name, "rmse")})


@dataclass(frozen=True)
class MetricInfo:
    """What the tables need to know about a metric.

    Attributes:
        name: registry name, as in the summary rows.
        higher_is_better: direction of the metric's own score (shown as an arrow).
        trained: ``False`` marks a metric whose learned parts are untrained (marker and footnote).
        note: printed as a footnote when not empty.
        ablation_of: the full metric this one ablates (it then goes to Tables II-IV); ``None`` for a full
            metric. The runner takes it from the metric's card, never from its name.
        paper_name: the paper's row for this metric; ``None`` takes the ``paper_row`` of the metric's card
            (:attr:`spips_bench.registry.MetricSpec.paper_row`; the card of ``lpips``, AlexNet "lin", holds
            the paper's LPIPS row, which the paper does not define further).
    """

    name: str
    higher_is_better: bool
    trained: bool = True
    note: str = ""
    ablation_of: str | None = None
    paper_name: str | None = None

    @property
    def base(self) -> str | None:
        """The metric this one ablates, or ``None``."""
        return self.ablation_of

    @property
    def paper_row(self) -> str | None:
        """The paper's row compared with this metric: :attr:`paper_name`, else its card's, else ``None``."""
        if self.paper_name is not None:
            return self.paper_name
        return card_paper_row(self.name)


def card_paper_row(name: str) -> str | None:
    """The ``paper_row`` of the card registered exactly as ``name`` (not an alias, not a variant such as
    ``ms-ssim[color='rgb']``), or ``None``."""
    spec = next((s for s in REGISTRY.specs() if s.name == name), None)
    return spec.paper_row if spec is not None else None


@dataclass(frozen=True)
class PaperValue:
    """One number published in the SPIPS paper (decision correlation assumed, two decimals)."""

    table: str
    kind: str
    statistic: str
    category: str
    paper_metric: str
    value: float
    note: str


@lru_cache(maxsize=1)
def _paper_values() -> tuple[PaperValue, ...]:
    source = resources.files("spips_bench") / "resources" / "paper_values.csv"
    reader = csv.reader(source.read_text(encoding="utf-8").splitlines())
    header = tuple(next(reader, ()))
    if header != PAPER_CSV_COLUMNS:
        raise ValueError(f"{source}: header {header} is not {PAPER_CSV_COLUMNS}; reinstall spips-bench.")
    out = []
    for line, rec in enumerate(reader, start=2):
        try:
            table, kind, statistic, category, metric, value, note = rec
            out.append(PaperValue(table, kind, statistic, category, metric, float(value), note))
        except ValueError as exc:
            raise ValueError(f"{source}, line {line}: malformed row {rec!r} ({exc}).") from None
    return tuple(out)


def paper_values() -> list[PaperValue]:
    """The values of the SPIPS paper's Tables II-VIII, one per (table, statistic, category, row)."""
    return list(_paper_values())


def _paper_lookup(tables: Sequence[str]) -> dict[tuple[str, str, str, str], float]:
    return {(p.kind, p.statistic, p.category, p.paper_metric): p.value
            for p in _paper_values() if p.table in tables}


# -- formatting -----------------------------------------------------------------------------------------


class _Format:
    """Markdown or LaTeX spelling of the pieces of a table."""

    def __init__(self, fmt: str) -> None:
        if fmt not in ("md", "tex"):
            raise ValueError(f"fmt must be 'md' or 'tex', got {fmt!r}.")
        self.tex = fmt == "tex"

    def text(self, s: str) -> str:
        if not self.tex:
            return s.replace("|", "\\|").replace("*", "\\*")
        return "".join(_TEX.get(ch, ch) for ch in s)

    def note(self, s: str) -> str:
        """A footnote; a `code span` (a command to run) is set in typewriter type in LaTeX."""
        if not self.tex:
            return self.text(s)
        parts = s.split("`")
        if len(parts) % 2 == 0:  # an unpaired backtick: no code spans
            return self.text(s)
        return "".join(f"\\texttt{{{self.text(p)}}}" if i % 2 else self.text(p) for i, p in enumerate(parts))

    def num(self, s: str) -> str:
        return f"${s}$" if self.tex and s.startswith(("-", "+")) else s

    def bold(self, s: str) -> str:
        return f"\\textbf{{{s}}}" if self.tex else f"**{s}**"

    def missing(self) -> str:
        return "--" if self.tex else "–"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "↓": r"$\downarrow$",
        "↑": r"$\uparrow$", "†": r"$^\dagger$", "—": "---", "–": "--", "×": r"$\times$", "±": r"$\pm$",
        "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "▲": r"$^{\bigtriangleup}$",
        "▼": r"$^{\bigtriangledown}$"}


@dataclass(frozen=True)
class _Table:
    caption: str
    headers: list[str]
    labels: list[str]  # row labels (already formatted)
    cells: list[list[str]]
    groups: list[int]  # index of each row's block (a rule separates blocks)
    wide: bool = False  # cells carry intervals or paper values: set in a smaller font


def _render(t: _Table, f: _Format) -> str:
    if f.tex:
        lines = ["\\begin{table}[htbp]", "\\centering", "\\footnotesize" if t.wide else "\\small",
                 "\\setlength{\\tabcolsep}{4pt}", f"\\caption{{{f.text(t.caption)}}}",
                 f"\\begin{{tabular}}{{l{'r' * len(t.headers)}}}", "\\toprule",
                 " & ".join(["Metric", *map(f.text, t.headers)]) + " \\\\", "\\midrule"]
        for i, (label, row) in enumerate(zip(t.labels, t.cells, strict=True)):
            if i and t.groups[i] != t.groups[i - 1]:
                lines.append("\\midrule")
            lines.append(" & ".join([label, *row]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines)
    lines = [f"### {f.text(t.caption)}", "", "| " + " | ".join(["Metric", *map(f.text, t.headers)]) + " |",
             "|" + "---|" + "---:|" * len(t.headers)]
    lines += ["| " + " | ".join([label, *row]) + " |" for label, row in zip(t.labels, t.cells, strict=True)]
    return "\n".join(lines)


# -- the document --------------------------------------------------------------------------------


def render_tables(rows: Iterable[SummaryRow], metrics: Mapping[str, MetricInfo] | Iterable[MetricInfo], *,
                  fmt: str, title: str, footnotes: Sequence[str] = (), intervals: bool = False,
                  digits: int = 2, category_titles: Mapping[str, str] | None = None) -> str:
    """Render summary rows as the paper's tables, one Markdown or LaTeX document.

    Args:
        rows: summary rows (:mod:`spips_bench.stats.summary`); values are higher = better.
        metrics: the metrics to show, in row order, keyed by name (or an iterable of infos).
        fmt: ``"md"`` or ``"tex"``.
        title: start of every table title, e.g. ``"BAPPS val"`` or ``"Demo set (synthetic judgments)"``.
        footnotes: lines printed under the tables (skipped metrics and why, image size...).
        intervals: show bootstrap intervals, ``0.78 [0.75, 0.80]``.
        digits: decimals of correlations and of percentages.
        category_titles: column headers of a MOS dataset's categories (its distortion types), by code.
    """
    f = _Format(fmt)
    if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 10:
        raise ValueError(f"digits must be an integer from 0 to 10, got {digits!r}.")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title must be a non-empty string, got {title!r}.")
    infos = _infos(metrics)
    values: dict[tuple[str, str, str, str], SummaryRow] = {}
    for r in rows:
        if not isinstance(r, SummaryRow):
            raise TypeError(f"render_tables takes SummaryRow objects, got {type(r).__name__}.")
        if r.metric not in infos:
            raise ValueError(f"summary rows name metric {r.metric!r} but no MetricInfo was given for it; "
                             f"pass one (known: {', '.join(infos) or 'none'}).")
        key = (r.kind, r.category, r.metric, r.statistic)
        if key in values:
            raise ValueError(f"two summary rows for {'/'.join(key)}; each statistic of a metric and category "
                             "must appear once (merge or deduplicate the summary files).")
        values[key] = r
    ctx = _Context(f, infos, values, intervals, digits)
    present = {k[2] for k in values}
    shown = [m for m in infos if m in present]
    main = [m for m in shown if infos[m].base is None]
    ablated = [m for m in shown if infos[m].base is not None]
    cats_2afc = _categories(values, TWO_AFC.name)
    cats_jnd = [c for c in JND_CATEGORIES if c in _categories(values, JND.name)]
    cats_jnd += [c for c in _categories(values, JND.name) if c not in cats_jnd]
    tables: list[_Table | None] = []
    kind_cats = ((TWO_AFC, cats_2afc), (JND, cats_jnd))
    score_cols = [(k.name, c, k.headline, f"{k.column_prefix}{CATEGORY_HEADERS.get(c, c)}")
                  for k, cats in kind_cats for c in cats]
    if score_cols:
        headlines = "; ".join(k.headline_label for k, _ in kind_cats)
        tables.append(ctx.table(f"{title}: scores in percent ({headlines})", shown, score_cols,
                                percent=True))
    for stat, name, number in (("plcc", "PLCC", "V"), ("srcc", "SRCC", "VI"), ("krcc", "KRCC", "VII")):
        cols = [(TWO_AFC.name, c, stat, CATEGORY_HEADERS.get(c, c)) for c in cats_2afc]
        if cols and main:
            tables.append(ctx.table(f"{title}: {name} on {TWO_AFC.label}, paper protocol (decision correlation); "
                                    f"layout of the paper's Table {number}", main, cols))
    if cats_jnd and main:
        cols = [(JND.name, c, s, f"{CATEGORY_HEADERS.get(c, c)} {s.upper()}")
                for c in cats_jnd for s in CORRELATIONS]
        tables.append(ctx.table(f"{title}: PLCC, SRCC and KRCC on {JND.label} (similarity -d vs. "
                                f"'{JND.judgment_column}'); layout of the paper's Table VIII", main, cols))
    if ablated and cats_2afc:
        # Paper order: each full metric after its ablations.
        family = []
        for base in dict.fromkeys(infos[a].base for a in ablated):
            family += [a for a in ablated if infos[a].base == base] + ([base] if base in shown else [])
        for stat, name, number in (("plcc", "PLCC", "II"), ("srcc", "SRCC", "III"), ("krcc", "KRCC", "IV")):
            cols = [(TWO_AFC.name, c, stat, CATEGORY_HEADERS.get(c, c)) for c in cats_2afc]
            tables.append(ctx.table(f"{title}: {name} of ablations on {TWO_AFC.label}, paper protocol; layout of the "
                                    f"paper's Table {number}", family, cols))
    if cats_2afc:
        blocks = [[(TWO_AFC.name, c, f"{s}_continuous", CATEGORY_HEADERS.get(c, c)) for c in cats_2afc]
                  for s in CORRELATIONS]
        tables.append(ctx.stacked(f"{title}: continuous variant, correlation of d0 - d1 with the judgment "
                                  "(not the paper protocol)", shown, blocks, ("PLCC", "SRCC", "KRCC")))
    tables += _mos_tables(ctx, title, shown, category_titles or {})
    notes = _notes(infos, shown, footnotes, intervals)
    if any(k[0] == MOS.name for k in values):
        notes[0] = notes[0].replace("(every statistic here is higher = better)", "(the highest; the lowest for RMSE)")
        notes.insert(1, MOS_NOTE)
    return _document(f, title, [t for t in tables if t is not None], notes)


#: What the MOS tables' statistics are (a note under them).
MOS_NOTE = ("MOS: each correlation is of the metric's quality (its score, negated for a distance) with the "
            "subjective score, so agreement is positive whatever the metric's direction. PLCC and RMSE follow "
            "the five-parameter logistic fit of Sheikh et al. (2006), whose parameters run.json records; PLCC "
            "(linear) is without it. RMSE, in the dataset's units, is lower = better: its column bolds the "
            "minimum. The column 'all' holds every image of the set.")
#: The MOS statistics by column header, in table order.
MOS_HEADERS = {"srcc": "SRCC", "krcc": "KRCC", "plcc": "PLCC", "plcc_linear": "PLCC (linear)", "rmse": "RMSE"}


def _mos_tables(ctx: _Context, title: str, shown: list[str], titles: Mapping[str, str]) -> list[_Table | None]:
    """The tables of a MOS run: every statistic over all images, then SRCC, PLCC and KRCC per distortion type."""
    found = sorted({k[1] for k in ctx.values if k[0] == MOS.name})
    if not found or not shown:
        return []
    overall = "all" if "all" in found else found[0]
    types = [c for c in found if c != "all"]
    tables: list[_Table | None] = [ctx.table(
        f"{title}: agreement with the subjective scores ({'all images' if overall == 'all' else overall})", shown,
        [(MOS.name, overall, stat, header) for stat, header in MOS_HEADERS.items()])]
    for stat in ("srcc", "plcc", "krcc"):
        cols = [(MOS.name, c, stat, titles.get(c, c)) for c in types] + (
            [(MOS.name, "all", stat, "all")] if "all" in found else [])
        if len(types) > 1:
            tables.append(ctx.table(f"{title}: {MOS_HEADERS[stat]} per distortion type", shown, cols))
    return tables


def _infos(metrics: Mapping[str, MetricInfo] | Iterable[MetricInfo]) -> dict[str, MetricInfo]:
    items = list(metrics.values()) if isinstance(metrics, Mapping) else list(metrics)
    out: dict[str, MetricInfo] = {}
    for info in items:
        if not isinstance(info, MetricInfo):
            raise TypeError(f"metrics must hold MetricInfo objects, got {type(info).__name__}: {info!r}.")
        out[info.name] = info
    return out


def _categories(values: Mapping[tuple[str, str, str, str], SummaryRow], kind: str) -> list[str]:
    found = {k[1] for k in values if k[0] == kind}
    return [c for c in CATEGORY_HEADERS if c in found] + sorted(found - set(CATEGORY_HEADERS))


@dataclass(frozen=True)
class _Context:
    f: _Format
    infos: dict[str, MetricInfo]
    values: dict[tuple[str, str, str, str], SummaryRow]
    intervals: bool
    digits: int

    def label(self, metric: str) -> str:
        info = self.infos[metric]
        arrow = "↑" if info.higher_is_better else "↓"
        return self.f.text(f"{metric} {arrow}" + ("" if info.trained else f" {_UNTRAINED}"))

    def _num(self, v: float, percent: bool) -> str:
        if math.isnan(v):
            return "NaN"
        return f"{100 * v if percent else v:.{self.digits}f}"

    def column(self, metrics: list[str], key: tuple[str, str, str], percent: bool) -> list[str]:
        kind, category, stat = key
        rows = [self.values.get((kind, category, m, stat)) for m in metrics]
        shown = [float(self._num(r.value, percent)) for r in rows if r is not None and math.isfinite(r.value)]
        pick = min if (kind, stat) in _LOWER_IS_BETTER else max
        best = pick(shown) if len(shown) > 1 else None  # every statistic here but RMSE is higher = better
        out = []
        for r in rows:
            if r is None:
                out.append(self.f.missing())
                continue
            text = self.f.num(self._num(r.value, percent))
            if best is not None and math.isfinite(r.value) and float(self._num(r.value, percent)) == best:
                text = self.f.bold(text)
            if self.intervals and math.isfinite(r.ci_low):
                lo, hi = (self.f.num(self._num(v, percent)) for v in (r.ci_low, r.ci_high))
                text += f" [{lo}, {hi}]"
            out.append(text)
        return out

    def table(self, caption: str, metrics: list[str], cols: list[tuple[str, str, str, str]], *,
              percent: bool = False) -> _Table | None:
        cols = [c for c in cols if any((c[0], c[1], m, c[2]) in self.values for m in metrics)]
        if not cols:
            return None
        columns = [self.column(metrics, c[:3], percent) for c in cols]
        return _Table(caption, [c[3] for c in cols], [self.label(m) for m in metrics],
                      [list(r) for r in zip(*columns, strict=True)], [0] * len(metrics), wide=self.intervals)

    def stacked(self, caption: str, metrics: list[str], blocks: list[list[tuple[str, str, str, str]]],
                names: Sequence[str]) -> _Table | None:
        if not any((c[0], c[1], m, c[2]) in self.values for cols in blocks for c in cols for m in metrics):
            return None
        labels, cells, groups = [], [], []
        for g, (cols, name) in enumerate(zip(blocks, names, strict=True)):
            columns = [self.column(metrics, c[:3], False) for c in cols]
            labels += [f"{self.label(m)}, {name}" for m in metrics]
            cells += [list(r) for r in zip(*columns, strict=True)]
            groups += [g] * len(metrics)
        return _Table(caption, [c[3] for c in blocks[0]], labels, cells, groups, wide=self.intervals)


def _notes(infos: Mapping[str, MetricInfo], shown: list[str], footnotes: Sequence[str], intervals: bool,
           ) -> list[str]:
    notes = ["Bold: best value of each column (every statistic here is higher = better). Arrows give each "
             "metric's own direction: ↓ lower score = more similar, ↑ higher = more similar."]
    if any(not infos[m].trained for m in shown):
        notes.append(f"{_UNTRAINED} untrained: the metric's learned parts run from a data-free "
                     "initialisation; not a trained result.")
    if intervals:
        notes.append("Brackets: 95% percentile bootstrap interval over samples.")
    notes += [f"{m}: {infos[m].note}" for m in shown if infos[m].note]
    return notes + [str(n) for n in footnotes]


def _document(f: _Format, title: str, tables: list[_Table], notes: list[str]) -> str:
    parts = [_render(t, f) for t in tables]
    if not tables:
        parts.append(f.text(f"{title}: no complete results to tabulate."))
    if f.tex:
        items = "\n".join(f"\\item {f.note(n)}" for n in notes)
        parts.append(f"\\paragraph{{Notes}}\n\\begin{{itemize}}\n{items}\n\\end{{itemize}}")
        return "% Requires \\usepackage{booktabs}.\n" + "\n\n".join(parts) + "\n"
    parts.append("Notes:\n\n" + "\n".join(f"- {f.note(n)}" for n in notes))
    return "\n\n".join(parts) + "\n"
