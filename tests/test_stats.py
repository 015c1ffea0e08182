"""Statistics and summaries against published BAPPS scores, SciPy, and brute-force references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from spips_bench.stats import core as stats
from spips_bench.stats.summary import (
    STATISTICS_2AFC,
    STATISTICS_JND,
    SummaryRow,
    read_summary_csv,
    summarize_2afc,
    summarize_jnd,
    write_summary_csv,
)

DATA = Path(__file__).parent / "data" / "bapps-val-judgments"
CATEGORIES = ("traditional", "cnn", "superres", "deblur", "color", "frameinterp")
# Published 2AFC scores in percent (ShiftTolerant-LPIPS evaluation logs; tests/data/bapps-val-judgments).
PUBLISHED = {
    "alex_vanilla": (77.48, 82.87, 71.19, 61.04, 65.23, 62.43),
    "alex_shift_tolerant": (75.49, 82.81, 71.17, 60.93, 65.20, 63.41),
    "vgg_vanilla": (78.35, 83.65, 71.20, 60.99, 63.97, 62.22),
    "vgg_shift_tolerant": (78.83, 83.53, 71.07, 61.20, 64.58, 63.03),
}


def load(model: str, category: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(DATA / f"{model}.npz") as z:
        return z[f"{category}/d0"], z[f"{category}/d1"], z[f"{category}/judge"]


def random_triplets(n: int, seed: int, decimals: int | None = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse distances (many ties in d0, d1 and d0 - d1) by default; ``decimals=None``: no ties."""
    rng = np.random.default_rng(seed)
    d0, d1 = rng.random(n), rng.random(n)
    if decimals is not None:
        d0, d1 = np.round(d0, decimals), np.round(d1, decimals)
    h = rng.integers(0, 6, n) / 5
    return d0, d1, h


# -- 2AFC score ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_two_afc_score_reproduces_published_scores(model: str) -> None:
    for category, published in zip(CATEGORIES, PUBLISHED[model], strict=True):
        score = 100 * stats.two_afc_score(*load(model, category))
        # Published to two decimals: our value must round to it.
        assert abs(score - published) <= 0.005 + 1e-9, (model, category, score, published)


def test_two_afc_ties_score_half_and_nan_judgments_drop() -> None:
    d0 = np.array([0.1, 0.5, 0.3, 0.2, 0.7])
    d1 = np.array([0.2, 0.4, 0.3, 0.9, 0.1])
    h = np.array([0.2, 0.6, np.nan, np.nan, 1.0])
    # sample 0: prefers p0, 1 - 0.2; sample 1: p1, 0.6; sample 2: tie, 0.5 even with NaN h;
    # sample 3: NaN judgment on a decision -> dropped; sample 4: p1, 1.0.
    assert stats.two_afc_score(d0, d1, h) == pytest.approx((0.8 + 0.6 + 0.5 + 1.0) / 4)


def test_two_afc_flattens_and_rejects_bad_input() -> None:
    d0, d1, h = random_triplets(50, 1)
    assert stats.two_afc_score(d0.reshape(-1, 1, 1, 1), d1[:, None], h) == stats.two_afc_score(d0, d1, h)
    with pytest.raises(ValueError, match="judgments are fractions"):
        stats.two_afc_score(d0, d1, h * 5)
    with pytest.raises(ValueError, match="NaN distance"):
        stats.two_afc_score(np.where(d0 > 0.5, np.nan, d0), d1, h)
    with pytest.raises(ValueError, match="different lengths"):
        stats.two_afc_score(d0, d1[:-1], h)
    with pytest.raises(TypeError, match="array of numbers"):
        stats.two_afc_score(["a"] * 50, d1, h)
    with pytest.raises(ValueError, match=r"shape \(50, 2\)"):
        stats.two_afc_score(np.stack([d0, d0], 1), d1, h)


# -- JND mAP ----------------------------------------------------------------------------------------------


def brute_force_ap(d: np.ndarray, s: np.ndarray) -> float:
    """AP from first principles: one PR point per distance threshold, explicit envelope, area by loop."""
    points = []
    for t in sorted(set(d.tolist())):
        inside = d <= t
        tp = float(s[inside].sum())
        points.append((tp / s.sum(), tp / inside.sum()))
    recalls = [0.0] + [r for r, _ in points] + [1.0]
    precisions = [0.0] + [p for _, p in points] + [0.0]
    area = 0.0
    for i in range(1, len(recalls)):
        best_after = max(precisions[i:])  # precision envelope: best precision at this or higher recall
        area += (recalls[i] - recalls[i - 1]) * best_after
    return area


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jnd_map_equals_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    d = np.round(rng.random(n), 2)  # ~100 distinct values: many ties
    s = rng.integers(0, 4, n) / 3  # 3 raters
    s[d < 0.3] = np.maximum(s[d < 0.3], 2 / 3)  # a real signal, so AP is far from chance
    assert stats.jnd_map(d, s) == pytest.approx(brute_force_ap(d, s), abs=1e-12)


def test_jnd_map_closed_form_and_flattening() -> None:
    # Perfect ranking: every "same" pair is closer than every "different" one -> AP = 1.
    assert stats.jnd_map(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(1.0)
    # Worst ranking of one positive among four: precision 1/4 at full recall.
    worst = stats.jnd_map(np.array([0.1, 0.2, 0.3, 0.9]), np.array([0.0, 0.0, 0.0, 1.0]))
    assert worst == pytest.approx(0.25)
    # The official pitfall: (N, 1, 1, 1) outputs must be flattened before sorting.
    d = np.array([0.4, 0.1, 0.3, 0.2])
    s = np.array([0.0, 1.0, 0.0, 1.0])
    assert stats.jnd_map(d.reshape(4, 1, 1, 1), s) == stats.jnd_map(d, s) == pytest.approx(1.0)
    assert math.isnan(stats.jnd_map(d, np.zeros(4)))  # no positive: AP undefined


# -- correlations --------------------------------------------------------------------------------------------


def test_decision_and_continuous_correlation_match_protocol_example() -> None:
    d0, d1, h = load("alex_vanilla", "cnn")
    dec = stats.decision_correlation(d0, d1, h)
    assert (dec.plcc, dec.srcc, dec.krcc) == pytest.approx((0.7944, 0.7851, 0.7047), abs=1e-4)
    assert dec.n == 4720 - 11  # NaN judgments dropped
    con = stats.continuous_correlation(d0, d1, h)
    assert (con.plcc, con.srcc, con.krcc) == pytest.approx((0.7456, 0.8599, 0.7066), abs=1e-4)


def scipy_correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    return (scipy.stats.pearsonr(x, y).statistic, scipy.stats.spearmanr(x, y).statistic,
            scipy.stats.kendalltau(x, y, variant="b").statistic)


@pytest.mark.parametrize(("seed", "decimals"), [(0, 1), (1, 1), (2, None)])
def test_correlations_equal_scipy(seed: int, decimals: int | None) -> None:
    # decimals=1: few distinct values (contingency-table path); None: per-sample path
    d0, d1, h = random_triplets(400, seed, decimals)
    h[::37] = np.nan
    ok = ~np.isnan(h)
    x = np.where(d1 < d0, 1.0, np.where(d0 < d1, 0.0, 0.5))[ok]
    got = stats.decision_correlation(d0, d1, h)
    assert (got.plcc, got.srcc, got.krcc) == pytest.approx(scipy_correlations(x, h[ok]), abs=1e-12)
    got = stats.continuous_correlation(d0, d1, h)
    expected = scipy_correlations((d0 - d1)[ok], h[ok])
    assert (got.plcc, got.srcc, got.krcc) == pytest.approx(expected, abs=1e-12)
    same = np.round(h * 3 / 5, 0) / 3
    got = stats.jnd_correlation(d0, same)
    assert (got.plcc, got.srcc, got.krcc) == pytest.approx(scipy_correlations(-d0[ok], same[ok]), abs=1e-12)


def test_kendall_falls_back_when_both_variables_are_continuous() -> None:
    rng = np.random.default_rng(3)
    d0, d1, h = rng.random(200), rng.random(200), rng.random(200)
    got = stats.continuous_correlation(d0, d1, h)
    assert got.krcc == pytest.approx(scipy.stats.kendalltau(d0 - d1, h).statistic, abs=1e-12)
    lo, hi = stats.bootstrap_ci(stats.CORRELATION_STATISTICS["continuous"]["krcc"], d0, d1, h, n_boot=20)
    assert lo <= got.krcc <= hi


def test_constant_decisions_give_nan_not_error() -> None:
    d0, d1 = np.zeros(10), np.ones(10)
    h = np.linspace(0, 1, 10)
    got = stats.decision_correlation(d0, d1, h)
    assert math.isnan(got.plcc) and math.isnan(got.srcc) and math.isnan(got.krcc) and got.n == 10


# -- bootstrap -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [1, 2, None])
def test_batched_bootstrap_equals_resampling_loop(decimals: int | None) -> None:
    """The weighted kernels give exactly what the statistic gives on each resampled array."""
    d0, d1, h = random_triplets(150, 4, decimals)
    for statistic in (stats.two_afc_statistic, *stats.CORRELATION_STATISTICS["decision"].values(),
                      *stats.CORRELATION_STATISTICS["continuous"].values()):
        fast = stats._boot_values(statistic, (d0, d1, h), 25, 7)
        slow = stats._boot_values(lambda *a, f=statistic: f(*a), (d0, d1, h), 25, 7)
        np.testing.assert_allclose(fast, slow, atol=1e-12, err_msg=statistic.name)
    d, s = d0, np.round(h * 3 / 5) / 3
    for statistic in (stats.jnd_map_statistic, *stats.CORRELATION_STATISTICS["jnd"].values()):
        fast = stats._boot_values(statistic, (d, s), 25, 7)
        slow = stats._boot_values(lambda *a, f=statistic: f(*a), (d, s), 25, 7)
        np.testing.assert_allclose(fast, slow, atol=1e-12, err_msg=statistic.name)
    # and the resampled Kendall really is SciPy's on the resampled arrays
    idx = next(stats._resamples(150, 1, 7))[0]
    x = np.where(d1 < d0, 1.0, np.where(d0 < d1, 0.0, 0.5))
    ref = scipy.stats.kendalltau(x[idx], h[idx]).statistic
    assert stats._boot_values(stats.CORRELATION_STATISTICS["decision"]["krcc"], (d0, d1, h), 1, 7)[0] == (
        pytest.approx(ref, abs=1e-12))


def test_summary_intervals_equal_separate_bootstraps() -> None:
    d0, d1, h = random_triplets(300, 5)
    h[::23] = np.nan
    d0[::23] = d1[::23]  # ties with unknown judgments: kept by the 2AFC score only
    together = stats.summary_intervals("2afc", d0, d1, h, n_boot=40, seed=3)
    corr = stats.CORRELATION_STATISTICS
    separate = {"2afc_score": stats.two_afc_statistic,
                **{n: corr["decision"][n] for n in ("plcc", "srcc", "krcc")},
                **{f"{n}_continuous": corr["continuous"][n] for n in ("plcc", "srcc", "krcc")}}
    assert list(together) == list(STATISTICS_2AFC)
    for name, statistic in separate.items():
        assert together[name] == pytest.approx(stats.bootstrap_ci(statistic, d0, d1, h, n_boot=40, seed=3))
    s = np.round(np.nan_to_num(h, nan=0.4) * 3 / 5) / 3
    together = stats.summary_intervals("jnd", d0, s, n_boot=40, seed=3)
    assert list(together) == list(STATISTICS_JND)
    expected = stats.bootstrap_ci(stats.jnd_map_statistic, d0, s, n_boot=40, seed=3)
    assert together["jnd_map"] == pytest.approx(expected)
    assert together["krcc"] == pytest.approx(
        stats.bootstrap_ci(stats.CORRELATION_STATISTICS["jnd"]["krcc"], d0, s, n_boot=40, seed=3))
    with pytest.raises(ValueError, match="kind"):
        stats.summary_intervals("3afc", d0, s)


def test_infinite_distances() -> None:
    """PSNR of identical images is +inf (its negation -inf): an ordered value everywhere but in PLCC."""
    d0 = np.array([0.0, 1.0, 2.0, -np.inf, 3.0, 0.5])
    d1 = np.array([1.0, 0.0, -np.inf, -np.inf, 1.0, 2.0])
    h = np.array([0.0, 1.0, 1.0, 0.4, 0.8, 0.2])
    assert stats.two_afc_score(d0, d1, h) == pytest.approx((1 + 1 + 1 + 0.5 + 0.8 + 0.8) / 6)
    con = stats.continuous_correlation(d0, d1, h)
    x = np.array([-1.0, 1.0, np.inf, 0.0, 2.0, -1.5])
    finite = np.isfinite(x)
    assert con.plcc == pytest.approx(scipy.stats.pearsonr(x[finite], h[finite]).statistic, abs=1e-12)
    assert (con.n, con.plcc_n) == (6, 5)
    assert con.srcc == pytest.approx(scipy.stats.spearmanr(x, h).statistic, abs=1e-12)
    assert con.krcc == pytest.approx(scipy.stats.kendalltau(x, h).statistic, abs=1e-12)
    dec = stats.decision_correlation(d0, d1, h)
    assert dec.plcc_n == dec.n == 6 and dec.plcc == pytest.approx(
        scipy.stats.pearsonr([0, 1, 1, 0.5, 1, 0], h).statistic, abs=1e-12)
    # JND: -inf sorts first; only PLCC of -d leaves it out.
    d = np.array([-np.inf, 0.3, 0.1, -np.inf, 0.7])
    same = np.array([1.0, 0.0, 1.0, 0.5, 0.0])
    jc = stats.jnd_correlation(d, same)
    keep = np.isfinite(d)
    assert jc.plcc == pytest.approx(scipy.stats.pearsonr(-d[keep], same[keep]).statistic, abs=1e-12)
    assert jc.srcc == pytest.approx(scipy.stats.spearmanr(-d, same).statistic, abs=1e-12)
    assert (jc.n, jc.plcc_n) == (5, 3)
    # The bootstrap of PLCC resamples the same triplets and leaves the infinite ones out of each.
    lo, hi = stats.bootstrap_ci(stats.CORRELATION_STATISTICS["continuous"]["plcc"], d0, d1, h, n_boot=50)
    assert math.isfinite(lo) and math.isfinite(hi)


def test_bootstrap_ci_reproducible_and_contains_estimate() -> None:
    d0, d1, h = load("alex_vanilla", "frameinterp")
    statistic = stats.CORRELATION_STATISTICS["decision"]["srcc"]
    a = stats.bootstrap_ci(statistic, d0, d1, h, n_boot=200, seed=5)
    assert a == stats.bootstrap_ci(statistic, d0, d1, h, n_boot=200, seed=5)
    assert a != stats.bootstrap_ci(statistic, d0, d1, h, n_boot=200, seed=6)
    point = stats.decision_correlation(d0, d1, h).srcc
    assert a[0] < point < a[1]
    # a 95% interval of a correlation on 1888 samples is a few hundredths wide, not zero, not huge
    assert 0.01 < a[1] - a[0] < 0.15
    lo, hi = stats.bootstrap_ci(stats.two_afc_score, d0, d1, h, n_boot=50)  # plain callable path
    assert lo < stats.two_afc_score(d0, d1, h) < hi
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci(statistic, d0, d1, h, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        stats.bootstrap_ci(statistic, d0, d1, h, n_boot=0)


def test_paired_test_identical_inputs_and_clear_difference() -> None:
    d0, d1, h = load("alex_vanilla", "traditional")
    statistic = stats.two_afc_statistic
    same = stats.paired_bootstrap_test(statistic, (d0, d1, h), (d0, d1, h), n_boot=100)
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # alex_vanilla beats alex_shift_tolerant by 2 points on traditional (77.48 vs 75.49, published)
    b = load("alex_shift_tolerant", "traditional")
    test = stats.paired_bootstrap_test(statistic, (d0, d1, h), b, n_boot=200)
    assert test.diff == pytest.approx((77.48 - 75.49) / 100, abs=1e-4)
    assert test.ci_low > 0 and test.p_value == pytest.approx(2 / 201)
    with pytest.raises(ValueError, match="same samples"):
        stats.paired_bootstrap_test(statistic, (d0, d1, h), (d0[:-1], d1[:-1], h[:-1]))


# -- summaries ---------------------------------------------------------------------------------------------


def test_summarize_2afc_values_directions_and_intervals() -> None:
    d0, d1, h = load("alex_vanilla", "frameinterp")
    rows = summarize_2afc("frameinterp", "lpips", d0, d1, h, higher_is_better=False, n_boot=50, seed=1)
    assert [r.statistic for r in rows] == list(STATISTICS_2AFC)
    by = {r.statistic: r for r in rows}
    assert by["2afc_score"].value == pytest.approx(0.6243, abs=5e-5)
    assert by["plcc"].value == stats.decision_correlation(d0, d1, h).plcc
    assert by["krcc_continuous"].value == stats.continuous_correlation(d0, d1, h).krcc
    assert all(r.ci_low <= r.value <= r.ci_high for r in rows)
    # A similarity (higher = more similar) is negated: -d gives the same statistics as d.
    flipped = summarize_2afc("frameinterp", "lpips", -d0, -d1, h, higher_is_better=True, n_boot=50, seed=1)
    assert flipped == rows
    none = summarize_2afc("frameinterp", "lpips", d0, d1, h, higher_is_better=False, n_boot=0)
    assert all(math.isnan(r.ci_low) and math.isnan(r.ci_high) for r in none)
    with pytest.raises(ValueError, match="NaN score"):
        summarize_2afc("cnn", "x", np.full(3, np.nan), np.ones(3), np.ones(3), higher_is_better=False)


def test_summarize_jnd() -> None:
    rng = np.random.default_rng(0)
    d = rng.random(200)
    same = (rng.random(200) < 1 - d).astype(float)
    rows = summarize_jnd("cnn", "psnr", -d, same, higher_is_better=True, n_boot=30)
    assert [r.statistic for r in rows] == list(STATISTICS_JND)
    assert rows[0].value == pytest.approx(brute_force_ap(d, same), abs=1e-12)
    assert rows[2].value == pytest.approx(scipy.stats.spearmanr(-d, same).statistic, abs=1e-12)


def test_summary_csv_round_trip_is_byte_stable(tmp_path: Path) -> None:
    d0, d1, h = load("vgg_vanilla", "color")
    rows = summarize_2afc("color", "dists, v1", d0, d1, h, higher_is_better=False, n_boot=20)
    rows.append(SummaryRow("jnd", "cnn", "psnr", "jnd_map", 0.1 + 0.2, math.nan, math.nan, 7))
    first = tmp_path / "a" / "summary.csv"
    write_summary_csv(first, rows)
    back = read_summary_csv(first)
    assert [(r.kind, r.category, r.metric, r.statistic, r.n) for r in back] == [
        (r.kind, r.category, r.metric, r.statistic, r.n) for r in rows]
    for r, b in zip(rows, back, strict=True):
        for f in ("value", "ci_low", "ci_high"):
            x, y = getattr(r, f), getattr(b, f)
            assert (math.isnan(x) and math.isnan(y)) or x == y  # exact, not approximate
    second = tmp_path / "b.csv"
    write_summary_csv(second, back)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_text().splitlines()[0] == "kind,category,metric,statistic,value,ci_low,ci_high,n"
    assert list(first.parent.iterdir()) == [first]  # no temporary file left behind


def test_read_summary_csv_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "summary.csv"
    bad.write_text("kind,category,metric\n")
    with pytest.raises(ValueError, match=r"summary\.csv: header"):
        read_summary_csv(bad)
    bad.write_text("kind,category,metric,statistic,value,ci_low,ci_high,n\n2afc,cnn,x,plcc,abc,nan,nan,3\n")
    with pytest.raises(ValueError, match="line 2"):
        read_summary_csv(bad)
    bad.write_text("kind,category,metric,statistic,value,ci_low,ci_high,n\n2afc,cnn,x,jnd_map,1,nan,nan,3\n")
    with pytest.raises(ValueError, match="not a 2afc statistic"):
        read_summary_csv(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_summary_csv(tmp_path / "missing.csv")
