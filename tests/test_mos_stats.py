"""MOS statistics (SRCC, KRCC, PLCC after the logistic fit, linear PLCC, RMSE) against an independent
SciPy computation, their summary rows and their tables."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from spips_bench.report.mos import render_overview
from spips_bench.report.tables import MetricInfo, render_tables
from spips_bench.stats.kinds import MOS, MOS_STATISTICS, judgment_kind
from spips_bench.stats.mos import fit_logistic, logistic5, mos_statistics
from spips_bench.stats.summary import SummaryRow, read_summary_csv, summarize, write_summary_csv


def _independent(q: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The statistics computed here from scratch: SciPy's correlations and its own logistic fit, started
    the way the VQEG scripts start it (no standardisation, other starting values)."""

    def f(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
        return b1 * (0.5 - 1.0 / (1.0 + np.exp(b2 * (x - b3)))) + b4 * x + b5

    p0 = [float(np.max(y)), 1.0 / float(np.std(q)), float(np.mean(q)), 0.0, float(np.mean(y))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        popt, _ = optimize.curve_fit(f, q, y, p0=p0, maxfev=200_000)
    fitted = f(q, *popt)
    return {"srcc": stats.spearmanr(q, y).statistic, "krcc": stats.kendalltau(q, y, variant="b").statistic,
            "plcc": stats.pearsonr(fitted, y).statistic, "plcc_linear": stats.pearsonr(q, y).statistic,
            "rmse": float(np.sqrt(np.mean((fitted - y) ** 2)))}


def _synthetic(n: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    q = scale * (z + 3.0)
    y = 4.0 / (1.0 + np.exp(-1.7 * z)) + 0.25 * z + rng.normal(scale=0.35, size=n) + 1.0
    return q, y


@pytest.mark.parametrize("scale", [1e-3, 1.0, 40.0])
def test_every_statistic_matches_an_independent_scipy_computation(scale: float) -> None:
    q, y = _synthetic(300, scale, seed=int(scale * 1000) % 97)
    ours = mos_statistics(q, y, n_boot=0)
    theirs = _independent(q, y)
    for name in MOS_STATISTICS:
        assert ours.values[name] == pytest.approx(theirs[name], abs=1e-3), name
    assert ours.fit is not None and ours.fit.converged
    assert all(math.isnan(lo) for lo, _ in ours.intervals.values())


def test_the_fit_maps_the_scores_and_is_never_worse_than_a_line() -> None:
    q, y = _synthetic(200, 2.0, seed=3)
    fit = fit_logistic(q, y)
    np.testing.assert_allclose(fit(q), logistic5(q, *fit.params))
    slope, intercept = np.polyfit(q, y, 1)
    assert fit.sse <= float(((slope * q + intercept - y) ** 2).sum()) + 1e-9
    assert set(fit.as_record()) == {"b1", "b2", "b3", "b4", "b5", "converged", "sse", "n"}


def test_a_constant_metric_falls_back_to_the_line_and_says_so() -> None:
    y = np.linspace(1, 5, 20)
    fit = fit_logistic(np.full(20, 0.5), y)
    assert not fit.converged and fit.params[:3] == (0.0, 0.0, 0.0)
    result = mos_statistics(np.full(20, 0.5), y, n_boot=0)
    assert math.isnan(result.values["srcc"]) and math.isnan(result.values["plcc_linear"])


def test_correlations_are_positive_for_agreement_whatever_the_direction() -> None:
    q, y = _synthetic(120, 1.0, seed=5)
    as_distance = summarize(MOS, "01", "dist", ([-v for v in q],), y, higher_is_better=False, n_boot=0)
    as_similarity = summarize(MOS, "01", "sim", (q,), y, higher_is_better=True, n_boot=0)
    for a, b in zip(as_distance, as_similarity, strict=True):
        assert a.statistic == b.statistic and a.value == pytest.approx(b.value, abs=1e-12)
        if a.statistic != "rmse":
            assert a.value > 0.5
    assert [r.statistic for r in as_distance] == list(MOS_STATISTICS)


def test_infinite_quality_is_ranked_but_left_out_of_the_fit() -> None:
    q, y = _synthetic(60, 1.0, seed=7)
    q[0] = math.inf
    y[0] = y.max() + 1
    result = mos_statistics(q, y, n_boot=0)
    assert result.n["srcc"] == 60 and result.n["plcc"] == 59 and result.n["plcc_linear"] == 59
    assert result.values["srcc"] == pytest.approx(stats.spearmanr(np.where(np.isinf(q), 1e9, q), y).statistic)


def test_intervals_bracket_the_value_and_repeat_with_the_seed() -> None:
    q, y = _synthetic(150, 1.0, seed=11)
    a = mos_statistics(q, y, n_boot=200, seed=4)
    b = mos_statistics(q, y, n_boot=200, seed=4)
    assert a.intervals == b.intervals
    for name in MOS_STATISTICS:
        lo, hi = a.intervals[name]
        assert lo <= a.values[name] <= hi, name


@pytest.mark.parametrize(("q", "y", "message"), [
    ([1.0, math.nan, 2.0], [1.0, 2.0, 3.0], "NaN"),
    ([1.0, 2.0], [1.0, 2.0, 3.0], "lengths"),
    ([1.0, 2.0, 3.0], [math.nan] * 3, "every mos is NaN"),
    ([1.0, 2.0, 3.0], [1.0, math.inf, 2.0], "infinite"),
])
def test_bad_inputs_are_named(q: list[float], y: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mos_statistics(q, y, n_boot=0)


def test_mos_rows_round_trip_through_summary_csv(tmp_path) -> None:
    q, y = _synthetic(40, 1.0, seed=2)
    rows = summarize("mos", "all", "psnr", (q,), y, higher_is_better=True, n_boot=20)
    write_summary_csv(tmp_path / "summary.csv", rows)
    assert read_summary_csv(tmp_path / "summary.csv") == rows
    assert judgment_kind("mos").is_scale and not judgment_kind("2afc").is_scale


def _rows(metric: str, category: str, values: dict[str, float]) -> list[SummaryRow]:
    return [SummaryRow("mos", category, metric, s, values[s], math.nan, math.nan, 10) for s in MOS_STATISTICS]


def test_mos_tables_bold_the_lowest_rmse_and_name_the_distortion_types() -> None:
    good = {"srcc": 0.9, "krcc": 0.7, "plcc": 0.91, "plcc_linear": 0.85, "rmse": 0.4}
    poor = {"srcc": 0.5, "krcc": 0.3, "plcc": 0.55, "plcc_linear": 0.5, "rmse": 0.9}
    rows = []
    for category in ("01", "02", "all"):
        rows += _rows("good", category, good) + _rows("poor", category, poor)
    infos = [MetricInfo("good", False), MetricInfo("poor", True)]
    md = render_tables(rows, infos, fmt="md", title="TID2013 all", category_titles={"01": "01 noise", "02": "02 blur"})
    assert "agreement with the subjective scores (all images)" in md
    assert "SRCC per distortion type" in md and "01 noise" in md and "02 blur" in md
    overall = next(line for line in md.splitlines() if line.startswith("| good"))
    assert "**0.40**" in overall and "**0.90**" in overall
    assert "0.90" in next(line for line in md.splitlines() if line.startswith("| poor")) and "**0.90**" not in \
        next(line for line in md.splitlines() if line.startswith("| poor"))
    assert "Sheikh" in md
    tex = render_tables(rows, infos, fmt="tex", title="TID2013 all")
    assert "\\textbf{0.40}" in tex and "\\begin{tabular}" in tex


def test_the_overview_puts_datasets_in_columns() -> None:
    a = {"srcc": 0.8, "krcc": 0.6, "plcc": 0.82, "plcc_linear": 0.7, "rmse": 0.5}
    b = {"srcc": 0.6, "krcc": 0.4, "plcc": 0.62, "plcc_linear": 0.5, "rmse": 0.7}
    infos = {"psnr": MetricInfo("psnr", True), "lpips": MetricInfo("lpips", False)}
    columns = [("TID2013 all", _rows("psnr", "all", b) + _rows("lpips", "all", a), infos),
               ("KADID-10k all", _rows("psnr", "all", a) + _rows("lpips", "all", b), infos)]
    md = render_overview(columns, fmt="md")
    assert md.count("metrics x datasets") == 3
    assert "| Metric | TID2013 all | KADID-10k all |" in md
    assert "| lpips ↓ | **0.800** | 0.600 |" in md
    with pytest.raises(ValueError, match="more than once"):
        render_overview([columns[0], columns[0]], fmt="md")
