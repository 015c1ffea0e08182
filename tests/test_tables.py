"""Paper-layout tables: layout, bold, escaping, paper comparison, LaTeX that compiles."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from spips_bench.registry import REGISTRY
from spips_bench.report.tables import MetricInfo, card_paper_row, paper_values, render_tables
from spips_bench.stats.summary import SummaryRow, summarize_2afc

DATA = Path(__file__).parent / "data" / "bapps-val-judgments"
CATEGORIES = ("traditional", "cnn", "superres", "deblur", "color", "frameinterp")


def row(metric: str, statistic: str, value: float, *, kind: str = "2afc", category: str = "cnn",
        lo: float = float("nan"), hi: float = float("nan")) -> SummaryRow:
    return SummaryRow(kind, category, metric, statistic, value, lo, hi, 100)


@pytest.fixture(scope="module")
def real_rows() -> list[SummaryRow]:
    """Decision/continuous correlations of two published models on the real judgments."""
    rows: list[SummaryRow] = []
    for model, name in (("alex_vanilla", "lpips"), ("vgg_shift_tolerant", "spips-abla1")):
        with np.load(DATA / f"{model}.npz") as z:
            for c in ("cnn", "frameinterp"):
                rows += summarize_2afc(c, name, z[f"{c}/d0"], z[f"{c}/d1"], z[f"{c}/judge"],
                                       higher_is_better=False, n_boot=10)
    return rows


INFOS = {"lpips": MetricInfo("lpips", False),
         "spips-abla1": MetricInfo("spips-abla1", False, trained=False, ablation_of="spips")}


def md_cells(line: str) -> list[str]:
    """Cells of a Markdown table row, splitting on unescaped pipes only."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def md_tables(doc: str) -> list[list[list[str]]]:
    tables, current = [], []
    for line in doc.splitlines():
        if line.startswith("|"):
            current.append(md_cells(line))
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


# -- layout --------------------------------------------------------------------------------------------


def test_markdown_layout_titles_and_column_counts(real_rows: list[SummaryRow]) -> None:
    doc = render_tables(real_rows, INFOS, fmt="md", title="BAPPS val (synthetic judgments)")
    headings = [line for line in doc.splitlines() if line.startswith("### ")]
    assert headings and all(h.startswith("### BAPPS val (synthetic judgments): ") for h in headings)
    assert any("Table V" in h for h in headings) and any("Table IV" in h for h in headings)
    assert not any("Table VIII" in h for h in headings)  # no JND rows, no JND table
    tables = md_tables(doc)
    assert len(tables) == len(headings)
    for t in tables:
        assert len({len(r) for r in t}) == 1, t  # every row as wide as the header
        assert t[0][1:3] == ["CNN", "Interp"]  # only the categories present, in the paper's order
    plcc = tables[1]  # Table V: metrics that are not ablations
    assert [r[0] for r in plcc[2:]] == ["lpips ↓"]
    abla = next(t for t, h in zip(tables, headings, strict=True) if "Table II" in h)
    assert [r[0] for r in abla[2:]] == ["spips-abla1 ↓ †"]  # its base metric is absent here
    # the protocol example, decision PLCC of alex_vanilla on cnn, rounds to 0.79
    assert plcc[2][1] == "**0.79**" or plcc[2][1] == "0.79"


def test_bold_marks_best_per_column_whatever_the_metric_direction() -> None:
    infos = [MetricInfo("psnr", True), MetricInfo("lpips", False), MetricInfo("ssim", True)]
    rows = [row("psnr", "plcc", 0.41), row("lpips", "plcc", 0.78), row("ssim", "plcc", float("nan")),
            row("psnr", "srcc", -0.20), row("lpips", "srcc", -0.35), row("ssim", "srcc", -0.20)]
    doc = render_tables(rows, infos, fmt="md", title="T")
    cells = {r[0]: r[1] for r in md_tables(doc)[0][2:]}  # Table V layout (PLCC)
    assert cells == {"psnr ↑": "0.41", "lpips ↓": "**0.78**", "ssim ↑": "NaN"}
    cells = {r[0]: r[1] for r in md_tables(doc)[1][2:]}  # SRCC: the largest, not the largest magnitude; ties
    assert cells == {"psnr ↑": "**-0.20**", "lpips ↓": "-0.35", "ssim ↑": "**-0.20**"}
    tex = render_tables(rows, infos, fmt="tex", title="T")
    assert r"\textbf{0.78}" in tex and r"psnr $\uparrow$" in tex and r"lpips $\downarrow$" in tex


def test_scores_in_percent_intervals_and_missing_cells() -> None:
    infos = [MetricInfo("a", False), MetricInfo("b", False)]
    rows = [row("a", "2afc_score", 0.8287, lo=0.8190, hi=0.8380),
            row("b", "2afc_score", 0.70, category="color"),
            row("a", "plcc", 0.7812, lo=0.7512, hi=0.8023)]
    doc = render_tables(rows, infos, fmt="md", title="T", intervals=True)
    scores, plcc = md_tables(doc)[:2]
    assert scores[0] == ["Metric", "CNN", "Color"]
    assert scores[2] == ["a ↓", "82.87 [81.90, 83.80]", "–"]
    assert plcc[2] == ["a ↓", "0.78 [0.75, 0.80]"]
    assert "Brackets: 95% percentile bootstrap interval" in doc


def test_ablation_tables_order_and_membership() -> None:
    infos = [MetricInfo("spips", False), MetricInfo("lpips", False),
             MetricInfo("spips-abla2", False, ablation_of="spips"),
             MetricInfo("no-sem", False, ablation_of="spips"), MetricInfo("spips-abla1", False, ablation_of="spips")]
    rows = [row(i.name, s, v) for v, i in zip((0.8, 0.7, 0.6, 0.5, 0.4), infos, strict=True)
            for s in ("plcc", "srcc", "krcc")]
    doc = render_tables(rows, infos, fmt="md", title="T")
    tables = md_tables(doc)
    headings = [line for line in doc.splitlines() if line.startswith("### ")]
    main = tables[0]
    assert "Table V" in headings[0] and [r[0] for r in main[2:]] == ["spips ↓", "lpips ↓"]
    abla = tables[headings.index(next(h for h in headings if "Table II" in h))]
    # each full metric after its ablations, in the given order
    assert [r[0] for r in abla[2:]] == ["spips-abla2 ↓", "no-sem ↓", "spips-abla1 ↓", "spips ↓"]
    assert abla[2][1] == "0.60" and abla[5][1] == "**0.80**" and abla[3][1] == "0.50"
    assert sum("Table II" in h or "Table III" in h or "Table IV" in h for h in headings) == 3


# -- paper comparison ---------------------------------------------------------------------------------------


def test_plain_tables_hold_one_number_per_cell(real_rows: list[SummaryRow]) -> None:
    # The paper's values are compared in tables of their own (tests/test_paper_tables.py), never in these.
    infos = {**INFOS, "mine": MetricInfo("mine", True)}
    rows = [*real_rows, row("mine", "plcc", 0.5),
            row("lpips", "srcc", 0.7, kind="jnd", category="traditional")]
    doc = render_tables(rows, infos, fmt="md", title="T")
    tables = md_tables(doc)
    plcc = {r[0]: r[1:] for r in tables[1][2:]}
    # lpips decision PLCC on cnn is 0.7944 (protocol example)
    assert plcc["lpips ↓"][0] == "**0.79**"  # best of the column: bold
    jnd = tables[4]
    assert jnd[0] == ["Metric", "Trad SRCC"]  # columns without any value are left out
    assert dict((r[0], r[1]) for r in jnd[2:])["lpips ↓"] == "0.70"  # alone: no bold
    assert all(len(re.findall(r"\d+\.\d+", c)) <= 1 for t in tables for r in t[2:] for c in r[1:])
    assert "paper 0." not in doc
    with pytest.raises(TypeError):
        render_tables(rows, infos, fmt="md", title="T", compare_paper=True)  # type: ignore[call-arg]


def test_paper_values_transcription() -> None:
    values = paper_values()
    assert len(values) == 3 * 3 * 6 + 3 * 6 * 6 + 6 * 6  # Tables II-IV, V-VII, VIII
    keys = [(v.table, v.statistic, v.category, v.paper_metric) for v in values]
    assert len(set(keys)) == len(keys)
    assert all(0 <= v.value <= 1 and f"Table {v.table}," in v.note for v in values)
    # every published row is some card's paper_row, and no two cards claim the same row
    card_rows = [s.paper_row for s in REGISTRY.specs() if s.paper_row is not None]
    assert len(card_rows) == len(set(card_rows))
    assert {v.paper_metric for v in values} <= set(card_rows)
    lookup = {k: v.value for k, v in zip(keys, values, strict=True)}
    # The full model appears in both the ablation and the comparison tables: the two must agree.
    for abla, main, stat in (("II", "V", "plcc"), ("III", "VI", "srcc"), ("IV", "VII", "krcc")):
        for c in CATEGORIES:
            assert lookup[(abla, stat, c, "SPIPS")] == lookup[(main, stat, c, "SPIPS")]
    # spot checks against the paper's text
    assert lookup[("V", "plcc", "cnn", "LPIPS")] == 0.78
    assert lookup[("VII", "krcc", "color", "VIF")] == 0.03
    assert lookup[("VIII", "plcc", "cnn", "SPIPS")] == 0.60
    assert lookup[("IV", "krcc", "traditional", "SPIPS-abla1")] == 0.60
    assert all("AlexNet" in v.note for v in values if v.paper_metric == "LPIPS")


# -- markers, footnotes, escaping ----------------------------------------------------------------------


def test_untrained_marker_footnotes_and_notes() -> None:
    infos = [MetricInfo("spips", False, trained=False, note="checkpoint: none"), MetricInfo("psnr", True)]
    rows = [row("spips", "plcc", 0.5), row("psnr", "plcc", 0.4)]
    doc = render_tables(rows, infos, fmt="md", title="T", footnotes=["vif: skipped (pyiqa missing)"])
    notes = doc.split("Notes:")[1]
    assert "- vif: skipped (pyiqa missing)" in notes and "- spips: checkpoint: none" in notes
    assert "† untrained" in notes and "| spips ↓ † |" in doc
    assert "untrained" not in render_tables([row("psnr", "plcc", 0.4)], infos, fmt="md", title="T")


def test_escaping_and_errors() -> None:
    name = "my_metric&50%#|x"
    infos = [MetricInfo(name, False), MetricInfo("b", True)]
    rows = [row(name, "plcc", 0.5), row("b", "plcc", 0.6)]
    tex = render_tables(rows, infos, fmt="tex", title="Run {1} ~ 10$", footnotes=["a_b & c"])
    assert r"my\_metric\&50\%\#\textbar{}x $\downarrow$" in tex
    assert r"\caption{Run \{1\} \textasciitilde{} 10\$: PLCC" in tex and r"\item a\_b \& c" in tex
    md = render_tables(rows, infos, fmt="md", title="T")
    assert all(len(r) == 2 for r in md_tables(md)[0])  # the escaped pipe does not add a column
    with pytest.raises(ValueError, match="no MetricInfo"):
        render_tables([row("other", "plcc", 0.1)], infos, fmt="md", title="T")
    with pytest.raises(ValueError, match="two summary rows for 2afc/cnn/b/plcc"):
        render_tables([*rows, row("b", "plcc", 0.7)], infos, fmt="md", title="T")
    with pytest.raises(ValueError, match="'md' or 'tex'"):
        render_tables(rows, infos, fmt="html", title="T")
    with pytest.raises(TypeError, match="MetricInfo"):
        render_tables(rows, {"b": "b"}, fmt="md", title="T")  # type: ignore[arg-type]


# -- LaTeX ---------------------------------------------------------------------------------------------------


def full_tex(real_rows: list[SummaryRow]) -> str:
    infos = {**INFOS, "spips": MetricInfo("spips", False, trained=False), "psnr": MetricInfo("psnr", True)}
    extra = [row(m, s, v, kind="jnd", category=c) for m, v in (("spips", 0.6), ("psnr", 0.4))
             for s in ("jnd_map", "plcc", "srcc", "krcc") for c in ("cnn", "traditional")]
    extra += [SummaryRow("2afc", r.category, "spips", r.statistic, r.value - 0.01, r.ci_low, r.ci_high, r.n)
              for r in real_rows if r.metric == "lpips"]
    return render_tables([*real_rows, *extra], infos, fmt="tex", title="BAPPS val & more_",
                         footnotes=["x_y: 5% of $1"], intervals=True)


def test_latex_structure(real_rows: list[SummaryRow]) -> None:
    tex = full_tex(real_rows)
    envs = re.findall(r"\\(begin|end)\{(\w+)\}", tex)
    stack: list[str] = []
    for kind, env in envs:
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env
    assert not stack
    assert tex.count(r"\begin{table}") == tex.count(r"\caption{BAPPS val \& more\_: ") == 9
    assert tex.count(r"\toprule") == tex.count(r"\midrule") - 2 == tex.count(r"\bottomrule") == 9
    for block in re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", tex, flags=re.S):
        spec, body = block
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        assert rows and all(len(re.findall(r"(?<!\\)&", r)) == len(spec) - 1 for r in rows), spec


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (texlive-latex-base)")
def test_latex_compiles(real_rows: list[SummaryRow], tmp_path: Path) -> None:
    (tmp_path / "body.tex").write_text(full_tex(real_rows), encoding="utf-8")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                      "\\input{body}\n\\end{document}\n", encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_paper_rows_come_from_the_cards() -> None:
    assert card_paper_row("lpips") == "LPIPS"  # AlexNet lin, the lpips default
    assert card_paper_row("spips-abla2") == "SPIPS-abla2"
    assert card_paper_row("lpips-vgg") is None  # the paper has no VGG LPIPS row
    assert card_paper_row("msssim") is None  # an alias is not the name a run records
    assert card_paper_row("ms-ssim[color='rgb']") is None  # a variant is not the published metric
    assert MetricInfo("ms-ssim", True).paper_row == "MS-SSIM"
    assert MetricInfo("mine", True, paper_name="SSIM").paper_row == "SSIM"


def test_tables_formats_are_those_of_report_files(capsys: pytest.CaptureFixture[str]) -> None:
    from spips_bench.cli import build_parser
    from spips_bench.report.build import REPORT_FILES

    parser = build_parser()
    assert parser.parse_args(["tables", "--from", "o"]).format is None  # default: every format of REPORT_FILES
    assert parser.parse_args(["tables", "--from", "o", "--format", ",".join(REPORT_FILES)]).format == list(REPORT_FILES)
    with pytest.raises(SystemExit):
        parser.parse_args(["tables", "--from", "o", "--format", "html"])
    assert "--format takes md and/or tex, got 'html'" in capsys.readouterr().err
