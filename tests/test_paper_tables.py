"""The paper's Tables II-VIII of a run folder: layout, row order, display names, the published values in
tables of their own, significance marks, synthetic data, the CLI's --out, and LaTeX that fits a page."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from spips_bench.cli import main
from spips_bench.errors import RunConfigError
from spips_bench.report.paper import (
    BETTER,
    PAPER_FILES,
    SYNTHETIC_BANNER,
    WORSE,
    default_baselines,
    write_paper_tables,
)
from spips_bench.report.tables import paper_values
from spips_bench.run.store import ScoreStore

N = 80
N_BOOT, SEED = 200, 7
CATEGORIES_2AFC = ("cnn", "traditional")
#: metric -> (higher_is_better, trained, ablation_of, noise of its scores): run order is not the paper's.
METRICS = {
    "spips": (False, True, None, 0.02),
    "lpips": (False, True, None, 0.35),
    "spips-abla2": (False, True, "spips", 3.0),
    "psnr": (True, True, None, 0.8),
    "mine": (False, True, None, None),  # the same distances as lpips, the best baseline: never different
    "ssim": (True, True, None, 1.0),
    "spips-abla1": (False, False, "spips", 0.3),
    "dists": (False, True, None, 0.9),
}


def build_run(root: Path, *, synthetic: bool = False) -> Path:
    """A run folder written through the store: 2AFC cnn and traditional, JND cnn, N samples each."""
    rng = np.random.default_rng(11)
    store = ScoreStore(root)
    root.mkdir(parents=True)
    keys = [f"2afc/{c}" for c in CATEGORIES_2AFC] + ["jnd/cnn"]
    record = {
        "dataset": {"name": "demo" if synthetic else "bapps", "split": "val", "load_size": 64,
                    "synthetic_judgments": synthetic, "absent": [],
                    **({"label": "synthetic judgments"} if synthetic else {})},
        "statistics": {"bootstrap": N_BOOT, "seed": SEED},
        "metrics": {m: {"higher_is_better": hib, "trained": trained, "ablation_of": base, "status": "ok",
                        "scored": keys} for m, (hib, trained, base, _) in METRICS.items()},
        "categories": dict.fromkeys(keys, N),
    }
    store.write_run(record)
    writers = []
    for key in keys:
        kind, category = key.split("/")
        samples = [f"{i:06d}" for i in range(N)]
        truth = rng.uniform(0, 1, N)
        judge = store.judgment_writer(kind, category)
        judge.path.parent.mkdir(parents=True, exist_ok=True)
        for s, v in zip(samples, truth, strict=True):
            judge.add(s, (float(v),))
        writers.append(judge)
        shared: dict[str, np.ndarray] = {}
        for metric, (hib, _, _, noise) in METRICS.items():
            if noise is None:
                d = shared["lpips"]
            elif kind == "2afc":  # p1 closer to the reference where more raters preferred it
                d = np.stack([1 + truth + noise * rng.normal(size=N), 2 - truth + noise * rng.normal(size=N)], 1)
            else:  # a pair judged the same more often is closer
                d = (1 - truth + noise * rng.normal(size=N))[:, None]
            shared[metric] = d
            w = store.score_writer(kind, category, metric)
            w.path.parent.mkdir(parents=True, exist_ok=True)
            for s, row in zip(samples, -d if hib else d, strict=True):
                w.add(s, tuple(float(x) for x in row))
            writers.append(w)
    store.flush(writers)
    return root


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("paper") / "run")


@pytest.fixture(scope="module")
def written(run_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_paper_tables(run_folder, tmp_path_factory.mktemp("paper-out"))


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("synthetic") / "run", synthetic=True)


@pytest.fixture(scope="module")
def synthetic_written(synthetic_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_paper_tables(synthetic_run, tmp_path_factory.mktemp("synthetic-out"), allow_synthetic=True)


def md_sections(doc: str) -> dict[str, list[list[str]]]:
    """Each ``### caption`` -> its table's rows of cells (header row first, separator left out)."""
    out: dict[str, list[list[str]]] = {}
    caption = None
    for line in doc.splitlines():
        if line.startswith("### "):
            caption = line[4:]
            out[caption] = []
        elif line.startswith("|") and caption is not None and not line.startswith("|---"):
            out[caption].append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return out


def section(sections: dict[str, list[list[str]]], number: str, part: str) -> list[list[str]]:
    found = [rows for cap, rows in sections.items() if cap.startswith(f"Table {number}:") and cap.endswith(part)]
    assert len(found) == 1, (number, part, list(sections))
    return found[0]


# -- layout, order, names -----------------------------------------------------------------------------------


def test_row_order_display_names_and_columns(written: dict[str, Path]) -> None:
    sections = md_sections(written["md"].read_text(encoding="utf-8"))
    assert [c.split(":")[0] for c in sections][::3] == ["Table II", "Table III", "Table IV", "Table V", "Table VI",
                                                       "Table VII", "Table VIII"]
    ours = section(sections, "V", "this run")
    assert ours[0] == ["Metric", "CNN", "Trad"]  # the categories present, in the paper's order
    # the paper's order (PSNR, SSIM, VIF, DISTS, LPIPS, SPIPS), then a metric without a paper row
    assert [r[0] for r in ours[1:]] == ["PSNR", "SSIM", "DISTS", "LPIPS", "SPIPS (ours)", "mine"]
    abla = section(sections, "II", "this run")
    assert [r[0] for r in abla[1:]] == ["SPIPS-abla1 †", "SPIPS-abla2", "SPIPS (ours)"]  # untrained: †
    jnd = section(sections, "VIII", "this run")
    assert jnd[0] == ["Metric", "CNN PLCC", "CNN SRCC", "CNN KRCC"]  # JND was scored on cnn only
    assert [r[0] for r in jnd[1:]] == ["PSNR", "SSIM", "DISTS", "LPIPS", "SPIPS (ours)", "mine"]


def test_display_and_paper_rows_can_be_passed(run_folder: Path, tmp_path: Path) -> None:
    paths = write_paper_tables(run_folder, tmp_path, formats=("md",), display={"mine": "Mine v2", "spips": "S"},
                               paper_rows={"mine": "VIF", "lpips": ""})
    assert set(paths) == {"md", "significance"}
    sections = md_sections(paths["md"].read_text(encoding="utf-8"))
    ours = section(sections, "V", "this run")
    assert [r[0] for r in ours[1:]] == ["PSNR", "SSIM", "Mine v2", "DISTS", "S", "LPIPS"]
    published = {r[0]: r[1:] for r in section(sections, "V", "as published in the paper")[1:]}
    assert published["Mine v2"] == ["0.62", "0.16"]  # the paper's VIF row, Table V
    assert published["LPIPS"] == ["–", "–"]
    for bad, match in (({"display": {"nope": "x"}}, "display names metric"),
                       ({"paper_rows": {"mine": "VIFF"}}, "not a row of the paper's tables"),
                       ({"baselines": ["lpips", "nope"]}, r"baselines \['nope'\] are not metrics"),
                       ({"formats": ("html",)}, "formats must be")):
        with pytest.raises(ValueError, match=match):
            write_paper_tables(run_folder, tmp_path / "bad", **bad)  # type: ignore[arg-type]
    with pytest.raises(RunConfigError, match=r"run\.json not found"):
        write_paper_tables(tmp_path / "empty", tmp_path / "bad")


def test_default_baselines_are_the_papers_prior_metrics(run_folder: Path) -> None:
    from spips_bench.report.paper import _rows

    record = json.loads((run_folder / "run.json").read_text(encoding="utf-8"))
    rows = _rows(record, None, None, run_folder / "run.json")
    # SPIPS and its ablations are the paper's own model; "mine" has no paper row
    assert default_baselines(rows) == ["lpips", "psnr", "ssim", "dists"]


# -- the paper's values -------------------------------------------------------------------------------------


def test_paper_values_and_differences_in_tables_of_their_own(run_folder: Path, written: dict[str, Path]) -> None:
    doc = written["md"].read_text(encoding="utf-8")
    sections = md_sections(doc)
    for rows in sections.values():
        for r in rows[1:]:
            assert all(len(re.findall(r"\d+\.\d+", c)) <= 1 for c in r[1:]), r  # one number per cell
    published = {(p.table, p.statistic, p.category, p.paper_metric): p.value for p in paper_values()}
    names = {"PSNR": "psnr", "SSIM": "ssim", "DISTS": "dists", "LPIPS": "lpips", "SPIPS (ours)": "spips",
             "SPIPS-abla1 †": "spips-abla1", "SPIPS-abla2": "spips-abla2"}
    rows_of = {"PSNR": "PSNR", "SSIM": "SSIM", "DISTS": "DISTS", "LPIPS": "LPIPS", "SPIPS (ours)": "SPIPS",
               "SPIPS-abla1 †": "SPIPS-abla1", "SPIPS-abla2": "SPIPS-abla2"}
    checked = 0
    for number, stat in (("II", "plcc"), ("III", "srcc"), ("IV", "krcc"), ("V", "plcc"), ("VI", "srcc"),
                         ("VII", "krcc")):
        paper = section(sections, number, "as published in the paper")
        diff = section(sections, number, "this run minus the paper")
        assert paper[0] == diff[0] == ["Metric", "CNN", "Trad"]
        for prow, drow in zip(paper[1:], diff[1:], strict=True):
            assert prow[0] == drow[0]
            for col, category in enumerate(CATEGORIES_2AFC, start=1):
                if prow[0] == "mine":
                    assert prow[col] == drow[col] == "–"
                    continue
                value = published[(number, stat, category, rows_of[prow[0]])]
                assert prow[col] == f"{value:.2f}"
                metric = names[prow[0]]
                ours = _statistic("2afc", stat, *_read_store(run_folder, "2afc", category, metric, METRICS[metric][0]))
                assert re.fullmatch(r"[+-]\d\.\d\d", drow[col])
                assert float(drow[col]) == pytest.approx(ours - value, abs=0.005 + 1e-9)  # ours minus paper
                checked += 1
    assert checked == 3 * 3 * 2 + 3 * 5 * 2
    assert "Paper rows without a metric in this run: VIF." in doc


# -- significance -------------------------------------------------------------------------------------------


def _read_store(run: Path, kind: str, category: str, metric: str, hib: bool) -> tuple[np.ndarray, np.ndarray]:
    with (run / "judgments" / kind / f"{category}.csv").open(encoding="utf-8") as fh:
        judged = {r[0]: float(r[1]) for r in list(csv.reader(fh))[1:]}
    with (run / "scores" / kind / category / f"{metric}.csv").open(encoding="utf-8") as fh:
        scored = {r[0]: [float(x) for x in r[1:]] for r in list(csv.reader(fh))[1:]}
    samples = sorted(judged)
    d = np.array([scored[s] for s in samples])
    return (-d if hib else d), np.array([judged[s] for s in samples])


def _statistic(kind: str, stat: str, d: np.ndarray, h: np.ndarray) -> float:
    # the 2AFC decision (1: p1 preferred, 0.5: a tie), or the JND similarity -d
    x = np.where(d[:, 1] < d[:, 0], 1.0, np.where(d[:, 0] < d[:, 1], 0.0, 0.5)) if kind == "2afc" else -d[:, 0]
    if np.ptp(x) == 0:
        return float("nan")
    fn = {"plcc": sps.pearsonr, "srcc": sps.spearmanr, "krcc": sps.kendalltau}[stat]
    return float(fn(x, h)[0])


def test_significance_marks_match_an_independent_paired_bootstrap(run_folder: Path,
                                                                   written: dict[str, Path]) -> None:
    with written["significance"].open(encoding="utf-8") as fh:
        tests = {(r["kind"], r["category"], r["statistic"], r["metric"]): r for r in csv.DictReader(fh)}
    baselines = ["lpips", "psnr", "ssim", "dists"]
    candidates = ["spips", "spips-abla2", "mine", "spips-abla1"]
    # every candidate in every column of its tables (the ablations are in Tables II-IV only), no baseline
    assert len(tests) == len(candidates) * 2 * 3 + 2 * 3 and not {k[3] for k in tests} & set(baselines)
    idx = np.random.default_rng(SEED).integers(0, N, size=(N_BOOT, N))  # the resamples of the run's seed
    marks = set()
    for kind, category, stat in [("2afc", "cnn", s) for s in ("plcc", "srcc", "krcc")] + [("jnd", "cnn", "srcc")]:
        data = {m: _read_store(run_folder, kind, category, m, METRICS[m][0]) for m in METRICS}
        best = max(baselines, key=lambda b: _statistic(kind, stat, *data[b]))
        for m in candidates if kind == "2afc" else ["spips", "mine"]:
            row = tests[(kind, category, stat, m)]
            assert row["baseline"] == best
            (da, h), (db, _) = data[m], data[best]
            diff = _statistic(kind, stat, da, h) - _statistic(kind, stat, db, h)
            boot = np.array([_statistic(kind, stat, da[i], h[i]) - _statistic(kind, stat, db[i], h[i]) for i in idx])
            boot = boot[np.isfinite(boot)]
            p = min(1.0, 2 * min((1 + np.sum(boot <= 0)) / (1 + boot.size), (1 + np.sum(boot >= 0)) / (1 + boot.size)))
            assert float(row["diff"]) == pytest.approx(diff, abs=1e-9)
            assert float(row["p_value"]) == pytest.approx(p, abs=2 / (N_BOOT + 1))
            expected = "" if p >= 0.05 else BETTER if diff > 0 else WORSE
            if abs(p - 0.05) > 2 / (N_BOOT + 1):
                assert row["mark"] == expected, (kind, category, stat, m, p, diff)
            marks.add(row["mark"])
    assert marks == {BETTER, WORSE, ""}  # the constructed run has all three outcomes
    assert tests[("2afc", "cnn", "plcc", "mine")]["p_value"] == "1.0"  # identical to a baseline
    # the marks are in the tables, beside our value
    sections = md_sections(written["md"].read_text(encoding="utf-8"))
    ours = {r[0]: r[1:] for r in section(sections, "V", "this run")[1:]}
    for name, metric in (("SPIPS (ours)", "spips"), ("mine", "mine")):
        mark, cell = tests[("2afc", "cnn", "plcc", metric)]["mark"], ours[name][0]
        assert cell.endswith(mark) if mark else not cell.endswith((BETTER, WORSE))
    assert not any(c.endswith((BETTER, WORSE)) for name in ("PSNR", "SSIM", "DISTS", "LPIPS") for c in ours[name])
    assert f"{N_BOOT} resamples, seed {SEED}, two-sided, 95% level" in written["md"].read_text(encoding="utf-8")


def test_no_baseline_no_mark(run_folder: Path, tmp_path: Path) -> None:
    paths = write_paper_tables(run_folder, tmp_path, formats=("md",), baselines=[])
    doc = paths["md"].read_text(encoding="utf-8")
    assert BETTER not in doc.replace(f"{BETTER} / {WORSE}", "") and "No significance marks: no baseline" in doc
    assert paths["significance"].read_text(encoding="utf-8").count("\n") == 1  # the header only


# -- synthetic judgments --------------------------------------------------------------------------------------


def test_synthetic_judgments_refused_or_bannered(synthetic_run: Path, synthetic_written: dict[str, Path],
                                                 tmp_path: Path) -> None:
    with pytest.raises(RunConfigError, match="--allow-synthetic"):
        write_paper_tables(synthetic_run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    paths = synthetic_written
    md = paths["md"].read_text(encoding="utf-8")
    blocks = md.split("\n### ")[1:]
    assert len(blocks) == 21 and all(SYNTHETIC_BANNER in b for b in blocks)
    tex = paths["tex"].read_text(encoding="utf-8")
    floats = re.findall(r"\\begin\{table\}.*?\\end\{table\}", tex, flags=re.S)
    assert len(floats) == 21 and all(SYNTHETIC_BANNER in t for t in floats)
    # our tables alone are no comparison: no refusal, no banner
    plain = write_paper_tables(synthetic_run, tmp_path / "plain", compare_paper=False, formats=("md",))
    doc = plain["md"].read_text(encoding="utf-8")
    assert SYNTHETIC_BANNER not in doc and "synthetic judgments" in doc  # the title still says so
    captions = list(md_sections(doc))
    assert len(captions) == 7 and all(c.endswith("this run") for c in captions)


def test_a_demo_run_is_refused_by_the_cli_unless_allowed(demo: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["run", "--metrics", "psnr,ssim", "--dataset", "demo", "--categories", "cnn", "--kinds", "2afc",
                 "--out", str(run), "--workers", "0", "--no-progress", "--bootstrap", "20"]) == 0
    capsys.readouterr()
    assert main(["tables", "--from", str(run), "--compare-paper", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "synthetic judgments" in err and "--allow-synthetic" in err and len(err.strip().splitlines()) == 1
    assert main(["tables", "--from", str(run), "--compare-paper", "--allow-synthetic", "--out",
                 str(tmp_path / "out")]) == 0
    assert SYNTHETIC_BANNER in capsys.readouterr().out


# -- the CLI ------------------------------------------------------------------------------------------------


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_writes_into_out_and_never_touches_the_run(run_folder: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = run_folder
    before = _hashes(run)
    out = tmp_path / "out"
    assert main(["tables", "--from", str(run), "--compare-paper", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert _hashes(run) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(PAPER_FILES.values())
    assert captured.out == (out / PAPER_FILES["md"]).read_text(encoding="utf-8")
    assert "as published in the paper" in captured.out
    capsys.readouterr()
    for args, needle in ((["--compare-paper"], "pass --out DIR"),
                         (["--compare-paper", "--out", str(out), "--intervals"], "--intervals is for the plain"),
                         (["--out", str(out), "--allow-synthetic"], "pass --compare-paper too")):
        assert main(["tables", "--from", str(run), *args]) == 2
        assert needle in capsys.readouterr().err
    assert main(["tables", "--check", str(run), "--compare-paper", "--out", str(out)]) == 2
    assert "--check compares the plain tables" in capsys.readouterr().err
    assert _hashes(run) == before


# -- LaTeX ------------------------------------------------------------------------------------------------------


def test_latex_tables_fit_the_page_with_their_notes_inside(written: dict[str, Path]) -> None:
    tex = written["tex"].read_text(encoding="utf-8")
    stack: list[str] = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", tex):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env
    assert not stack
    floats = re.findall(r"\\begin\{table\}.*?\\end\{table\}", tex, flags=re.S)
    assert len(floats) == 21
    for t in floats:
        assert all(t.count(rule) == 1 for rule in (r"\toprule", r"\midrule", r"\bottomrule")), t
        # the tabular is inside a \resizebox bounded by the text width
        box = t.index(r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%")
        assert box < t.index(r"\begin{tabular}") < t.index(r"\end{tabular}%" + "\n}") < t.index(r"\begin{minipage}")
        assert t.index(r"\end{minipage}") < t.index(r"\end{table}")  # the notes belong to the float
        spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", t)
        assert spec is not None
        body = t[t.index(r"\midrule"):t.index(r"\bottomrule")]
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        assert rows and all(len(re.findall(r"(?<!\\)&", r)) == len(spec.group(1)) - 1 for r in rows)
    assert r"\cmidrule(lr){2-4}" in tex  # Table VIII's category groups
    assert r"$^{\bigtriangleup}$" in tex or r"$^{\bigtriangledown}$" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (texlive-latex-base)")
def test_latex_compiles_without_overfull_boxes(synthetic_written: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(synthetic_written["tex"], tmp_path / "body.tex")  # every table under the banner
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
                                      "\\begin{document}\n\\input{body}\n\\end{document}\n", encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    log = (tmp_path / "doc.log").read_text(encoding="utf-8", errors="replace")
    assert "Overfull \\hbox" not in log
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
