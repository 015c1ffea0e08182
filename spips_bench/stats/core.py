"""Statistics of the BAPPS benchmark: 2AFC score, JND mAP, correlations with human judgments, bootstrap.

Pure NumPy/SciPy. Every function takes per-sample *distances*, lower = more similar; negate a
similarity (PSNR, SSIM) before calling. Judgments follow BAPPS: ``judge`` is the fraction of raters who
preferred ``p1`` (in [0, 1]), ``same`` the fraction who judged a JND pair identical (in [0, 1]).

Each statistic is computed by one weighted, batched kernel (:mod:`spips_bench.stats.weighted`): a
bootstrap resample is the same as integer weights (how often each sample was drawn), so
:func:`bootstrap_ci` evaluates hundreds of resamples in a few array operations instead of a Python
loop, and the point estimate is the same kernel with unit weights. Ties are handled exactly as in the
resampled arrays (duplicated samples tie). :func:`summary_intervals` bootstraps every statistic of a
category at once on shared resamples.

An infinite distance (PSNR of identical images is +inf, its negation -inf) is an ordered value, exactly
as in the official LPIPS evaluation: smaller than every finite distance in the 2AFC comparison (two
equal infinities tie and score 0.5) and first in the JND sort; the decision and rank correlations use
its order too. Only Pearson's correlation, which needs finite values, leaves such samples out. NaN is
refused everywhere (a failed score has no order).

Reference: Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018, arXiv:1801.03924 (2AFC score, JND mAP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spips_bench.stats.kinds import CORRELATIONS, JND, TWO_AFC, JudgmentKind, judgment_kind
from spips_bench.stats.weighted import Array, Groups, Kernel, correlation_kernel

#: Bootstrap weights are processed in chunks of about this many elements (B x n): 4 MB stays in cache.
_CHUNK_ELEMENTS = 500_000


@dataclass(frozen=True)
class Correlations:
    """Agreement of a metric with human judgments, higher = better, each in [-1, 1] (NaN if undefined).

    Attributes:
        plcc: Pearson's linear correlation coefficient.
        srcc: Spearman's rank correlation (average ranks for ties).
        krcc: Kendall's tau-b.
        n: number of samples the rank correlations used (after dropping NaN judgments).
        plcc_n: number of samples PLCC used: also without those whose variable is infinite (an infinite
            distance is an ordered value for SRCC and KRCC, but has no place in a linear fit).
    """

    plcc: float
    srcc: float
    krcc: float
    n: int
    plcc_n: int


@dataclass(frozen=True)
class PairedTest:
    """Paired bootstrap comparison of one statistic on two inputs over the same samples.

    Attributes:
        diff: statistic(a) - statistic(b) on the full data.
        ci_low: lower percentile bound of the bootstrap distribution of the difference.
        ci_high: upper percentile bound.
        p_value: two-sided bootstrap p-value for "no difference", in (0, 1].
    """

    diff: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class Statistic:
    """A scalar statistic with a batched, weighted form that :func:`bootstrap_ci` uses for speed.

    Attributes:
        name: short label (``"2afc_score"``, ``"plcc"``...).
        prepare: called once with the data arrays; returns a kernel mapping integer sample weights of
            shape ``(B, n)`` to the statistic of each of the ``B`` weighted samples, shape ``(B,)``.
        used: how many samples the statistic uses, given the data arrays; None: those whose judgment
            (the last array) is not NaN.
    """

    name: str
    prepare: Callable[..., Kernel]
    used: Callable[..., int] | None = None

    def samples(self, *arrays: Any) -> int:
        """The number of samples the statistic uses on ``arrays`` (the ``n`` of its summary row)."""
        if self.used is not None:
            return int(self.used(*arrays))
        return int((~np.isnan(_vector(arrays[-1], "judgment"))).sum())

    def __call__(self, *arrays: Any) -> float:
        n = _common_length(arrays)
        return float(self.prepare(*arrays)(np.ones((1, n)))[0])


# -- input checks ---------------------------------------------------------------------------------------


def _vector(x: object, name: str) -> Array:
    """``x`` as a flat float64 array: metric outputs shaped (N, 1, 1, 1) are flattened, not mis-sorted."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}: {exc}") from None
    if arr.ndim > 1 and arr.size != arr.shape[0]:
        raise ValueError(
            f"{name} has shape {arr.shape}; expected one value per sample, shape (N,) or (N, 1, ...)."
        )
    return arr.reshape(-1)


def _distances(x: object, name: str) -> Array:
    arr = _vector(x, name)
    bad = int(np.isnan(arr).sum())
    if bad:
        raise ValueError(
            f"{name} contains {bad} NaN distance(s) out of {arr.size}; the metric failed on those samples. "
            "Fix the metric or drop those samples before computing statistics."
        )
    return arr


def _judgments(x: object, name: str) -> Array:
    arr = _vector(x, name)
    finite = arr[~np.isnan(arr)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(
            f"{name} has values in [{finite.min():.4g}, {finite.max():.4g}]; judgments are fractions of "
            "raters in [0, 1] (NaN = unknown). Divide vote counts by the number of raters."
        )
    return arr


def _common_length(arrays: tuple[Any, ...] | list[Any]) -> int:
    lengths = {len(a) if hasattr(a, "__len__") else np.size(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"arrays have different lengths {sorted(lengths)}; pass one value per sample each.")
    n = lengths.pop()
    if n == 0:
        raise ValueError("no samples: the arrays are empty.")
    return int(n)


# -- the statistics --------------------------------------------------------------------------------


def _decision(d0: Array, d1: Array) -> Array:
    """The metric's choice: 1 if it prefers p1 (d1 < d0), 0 if p0, 0.5 on a tie."""
    return np.where(d1 < d0, 1.0, np.where(d0 < d1, 0.0, 0.5))


def _prepare_2afc(d0: object, d1: object, judge: object) -> Kernel:
    a, b, h = _distances(d0, "d0"), _distances(d1, "d1"), _judgments(judge, "judge")
    _common_length((a, b, h))
    tie = a == b
    # A tie scores 0.5 whatever the judgment, so its judgment may be unknown (NaN); other NaNs are dropped.
    valid = tie | ~np.isnan(h)
    per_sample = np.where(tie, 0.5, np.where(a < b, 1.0 - h, h))
    per_sample = np.where(valid, per_sample, 0.0)
    mask = valid.astype(np.float64)

    def kernel(w: Array) -> Array:
        w = w * mask
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ per_sample) / w.sum(axis=1)

    return kernel


def _prepare_jnd_map(d: object, same: object) -> Kernel:
    dist, s = _distances(d, "d"), _judgments(same, "same")
    _common_length((dist, s))
    valid = ~np.isnan(s)
    groups = Groups.of(np.where(valid, dist, 0.0))
    s_sorted = np.where(valid, s, 0.0)[groups.order]
    mask = valid.astype(np.float64)[groups.order]

    def kernel(w: Array) -> Array:
        ws = groups.sort(w) * mask
        # One precision/recall point per distinct distance: tied pairs cross any threshold together.
        tp = np.cumsum(ws * s_sorted, axis=1)[:, groups.ends]
        seen = np.cumsum(ws, axis=1)[:, groups.ends]
        positives = tp[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / positives
            precision = np.where(seen > 0, tp / np.where(seen > 0, seen, 1.0), 0.0)
        rows = w.shape[0]
        mrec = np.concatenate([np.zeros((rows, 1)), recall, np.ones((rows, 1))], axis=1)
        mpre = np.concatenate([np.zeros((rows, 1)), precision, np.zeros((rows, 1))], axis=1)
        envelope = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
        ap = (np.diff(mrec, axis=1) * envelope[:, 1:]).sum(axis=1)
        return np.where(positives[:, 0] > 0, ap, np.nan)

    return kernel


Variables = tuple[Array, Array, npt.NDArray[np.bool_]]


def _triplets(arrays: tuple[object, ...]) -> tuple[Array, Array, Array]:
    a, b, h = _distances(arrays[0], "d0"), _distances(arrays[1], "d1"), _judgments(arrays[2], "judge")
    _common_length((a, b, h))
    return a, b, h


def _decision_variables(arrays: tuple[object, ...]) -> Variables:
    a, b, h = _triplets(arrays)
    return _decision(a, b), h, ~np.isnan(h)


def _continuous_variables(arrays: tuple[object, ...]) -> Variables:
    a, b, h = _triplets(arrays)
    with np.errstate(invalid="ignore"):
        x = np.where(a == b, 0.0, a - b)  # equal infinities are a tie, not NaN
    return x, h, ~np.isnan(h)


def _similarity_variables(arrays: tuple[object, ...]) -> Variables:
    d, s = _distances(arrays[0], "d"), _judgments(arrays[1], "same")
    _common_length((d, s))
    return -d, s, ~np.isnan(s)


#: The variables of each correlation mode (a judgment kind's ``correlation_modes`` name them): the 2AFC
#: decision (arrays d0, d1, judge), the 2AFC ``d0 - d1`` (same arrays), and the JND similarity ``-d``
#: (arrays d, same).
_VARIABLES: dict[str, Callable[[tuple[object, ...]], Variables]] = {
    "decision": _decision_variables,
    "continuous": _continuous_variables,
    "jnd": _similarity_variables,
}


def _correlation_variables(mode: str, arrays: tuple[object, ...]) -> Variables:
    """``(x, y, valid)`` of a correlation: the metric's variable, the judgment and the usable samples."""
    return _VARIABLES[mode](arrays)


def _prepare_correlation(mode: str, which: tuple[str, ...]) -> Callable[..., Kernel]:
    """Kernels of the correlations in ``which``. An infinite distance (PSNR of identical images) is an
    ordered value for the rank correlations; Pearson's needs finite values and leaves such samples out."""

    def prepare(*arrays: object) -> Kernel:
        x, y, valid = _correlation_variables(mode, arrays)
        finite = valid & np.isfinite(x)
        if "plcc" not in which or np.array_equal(finite, valid):
            return correlation_kernel(x, y, valid, which)
        pearson = correlation_kernel(x, y, finite, ("plcc",))
        rest = tuple(name for name in which if name != "plcc")
        ranks = correlation_kernel(x, y, valid, rest) if rest else None

        def kernel(w: Array) -> Array:
            columns = {"plcc": pearson(w)[:, 0]}
            if ranks is not None:
                columns.update(zip(rest, ranks(w).T, strict=True))
            return np.stack([columns[name] for name in which], axis=1)

        return kernel

    return prepare


def _2afc_used(d0: object, d1: object, judge: object) -> int:
    """Triplets the 2AFC score uses: those with a judgment, and ties, which score 0.5 whatever it is."""
    a, b, h = _vector(d0, "d0"), _vector(d1, "d1"), _vector(judge, "judge")
    return int(((a == b) | ~np.isnan(h)).sum())


two_afc_statistic = Statistic(TWO_AFC.headline, _prepare_2afc, _2afc_used)
jnd_map_statistic = Statistic(JND.headline, _prepare_jnd_map)
#: The headline statistic of each judgment kind, by statistic name (a kind's ``headline``).
HEADLINE_STATISTICS: dict[str, Statistic] = {s.name: s for s in (two_afc_statistic, jnd_map_statistic)}


def _single(mode: str, name: str) -> Statistic:
    inner = _prepare_correlation(mode, (name,))

    def prepare(*arrays: object) -> Kernel:
        kernel = inner(*arrays)
        return lambda w: kernel(w)[:, 0]

    return Statistic(name, prepare)


#: Bootstrap-ready correlation statistics: ``CORRELATION_STATISTICS[mode][name]`` with mode
#: ``"decision"``/``"continuous"`` (arrays d0, d1, judge) or ``"jnd"`` (arrays d, same).
CORRELATION_STATISTICS: dict[str, dict[str, Statistic]] = {
    mode: {name: _single(mode, name) for name in CORRELATIONS} for mode in _VARIABLES
}


def two_afc_score(d0: object, d1: object, judge: object) -> float:
    """BAPPS 2AFC score: expected fraction of raters who agree with the metric, in [0, 1], higher = better.

    ``mean((d0<d1)*(1-h) + (d1<d0)*h + (d0==d1)*0.5)``. A tie scores 0.5 whatever its judgment, so a
    tie with an unknown (NaN) judgment is kept; other triplets with a NaN judgment are dropped.

    Args:
        d0: distances d(ref, p0), lower = more similar, shape (N,).
        d1: distances d(ref, p1).
        judge: fraction of raters who preferred p1, in [0, 1].
    """
    return two_afc_statistic(d0, d1, judge)


def jnd_map(d: object, same: object) -> float:
    """BAPPS JND score: average precision of ranking pairs by distance for "same", in [0, 1], higher = better.

    Pairs are sorted by ascending distance; ``TP = cumsum(s)``, ``FP = cumsum(1-s)``, recall
    ``TP/sum(s)``, precision ``TP/(TP+FP)``, then VOC (non-07) average precision: sentinel points
    (0, 0) and (1, 0), a monotone precision envelope, and the sum of recall steps times precision.
    Inputs are flattened first. Pairs with equal distance form one threshold (the official code leaves
    their order to ``argsort``). Pairs with NaN ``same`` are dropped; NaN if no pair is judged the same.

    Args:
        d: distances d(p0, p1), lower = more similar, shape (N,) or (N, 1, 1, 1).
        same: fraction of raters who judged the pair identical, in [0, 1].
    """
    return jnd_map_statistic(d, same)


def _correlations(mode: str, arrays: tuple[object, ...]) -> Correlations:
    kernel = _prepare_correlation(mode, ("plcc", "srcc", "krcc"))(*arrays)
    x, _, valid = _correlation_variables(mode, arrays)
    values = kernel(np.ones((1, x.size)))[0]
    return Correlations(float(values[0]), float(values[1]), float(values[2]), int(valid.sum()),
                        int((valid & np.isfinite(x)).sum()))


def decision_correlation(d0: object, d1: object, judge: object) -> Correlations:
    """Correlation of the metric's 2AFC decisions with human judgments (the SPIPS paper's protocol).

    ``x = 1`` if ``d1 < d0`` (the metric prefers p1), ``0`` if ``d0 < d1``, ``0.5`` on a tie, correlated
    with ``judge``: Pearson, Spearman (average ranks) and Kendall tau-b. Triplets with a NaN judgment are
    dropped. A constant ``x`` or ``judge`` has no correlation: NaN is returned, no error.

    Args:
        d0: distances d(ref, p0), lower = more similar.
        d1: distances d(ref, p1).
        judge: fraction of raters who preferred p1, in [0, 1].
    """
    return _correlations("decision", (d0, d1, judge))


def continuous_correlation(d0: object, d1: object, judge: object) -> Correlations:
    """Correlation of ``x = d0 - d1`` (how much closer p1 is, per the metric) with ``judge``.

    Same conventions as :func:`decision_correlation`. An infinite distance (PSNR of identical images)
    makes ``x`` infinite (equal infinities are a tie, ``x = 0``): it is an ordered value for SRCC and
    KRCC, and PLCC leaves those samples out (``plcc_n`` counts the samples it used).
    """
    return _correlations("continuous", (d0, d1, judge))


def jnd_correlation(d: object, same: object) -> Correlations:
    """Correlation of the similarity ``-d`` with ``same`` on JND pairs (higher = better agreement).

    An infinite distance is an ordered value for SRCC and KRCC; PLCC leaves those pairs out.

    Args:
        d: distances d(p0, p1), lower = more similar.
        same: fraction of raters who judged the pair identical, in [0, 1]; NaN pairs are dropped.
    """
    return _correlations("jnd", (d, same))


# -- bootstrap ------------------------------------------------------------------------------------------


def _resamples(n: int, n_boot: int, seed: int) -> Any:
    """Seeded bootstrap indices, shape (chunk, n) at a time; the same for every statistic and path."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}.")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def _weights(idx: npt.NDArray[np.int64], n: int) -> Array:
    rows = idx.shape[0]
    flat = (idx + np.arange(rows)[:, None] * n).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _boot_values(statistic: Callable[..., float], arrays: tuple[Any, ...], n_boot: int, seed: int) -> Array:
    n = _common_length(arrays)
    if isinstance(statistic, Statistic):
        kernel = statistic.prepare(*arrays)
        return np.concatenate([kernel(_weights(idx, n)) for idx in _resamples(n, n_boot, seed)])
    data = [np.asarray(a) for a in arrays]
    return np.array([float(statistic(*(a[i] for a in data)))
                     for idx in _resamples(n, n_boot, seed) for i in idx])


def summary_intervals(kind: str | JudgmentKind, *arrays: object, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of every summary statistic of one category in one pass over shared resamples.

    Each interval equals ``bootstrap_ci`` of that statistic with the same arguments (same resamples), at a
    fraction of the cost: the resample weights are drawn once and the correlations share their work.

    Args:
        kind: a judgment kind or its name; its ``statistics`` are the keys, in order. ``"2afc"``: arrays
            ``d0, d1, judge``; keys ``2afc_score``, ``plcc``, ``srcc``, ``krcc`` and ``*_continuous``.
            ``"jnd"``: arrays ``d, same``; keys ``jnd_map``, ``plcc``, ``srcc``, ``krcc``.
        *arrays: the samples, NaN judgments included (each statistic drops what it cannot use).
        n_boot: number of resamples.
        level: coverage, e.g. 0.95.
        seed: seed of the NumPy generator.

    Raises:
        ValueError: an unknown kind, bad arrays, ``n_boot`` or ``level``.
    """
    k = judgment_kind(kind)
    _check_level(level)
    n = _common_length(arrays)
    headline = HEADLINE_STATISTICS[k.headline].prepare(*arrays)
    kernels: list[tuple[tuple[str, ...], Kernel]] = [((k.headline,), lambda w: headline(w)[:, None])]
    kernels += [(tuple(c + suffix for c in CORRELATIONS), _prepare_correlation(mode, CORRELATIONS)(*arrays))
                for suffix, mode in k.correlation_modes]
    names = [name for group, _ in kernels for name in group]
    values = np.concatenate([np.concatenate([k(w) for _, k in kernels], axis=1)
                             for w in (_weights(idx, n) for idx in _resamples(n, n_boot, seed))])
    return {name: _percentiles(values[:, i], level) for i, name in enumerate(names)}


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95 for a 95% interval, got {level!r}.")


def _percentiles(values: Array, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]  # resamples where the statistic is undefined do not vote
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_ci(statistic: Callable[..., float], *arrays: Any, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic(*arrays)``.

    Samples are resampled with replacement, the same indices for every array (a triplet stays a
    triplet). The statistics of this module (:class:`Statistic` instances such as
    ``two_afc_statistic``) run batched; any other callable is evaluated once per resample.

    Args:
        statistic: maps the (resampled) arrays to a float.
        *arrays: per-sample arrays of equal length N (resampled along the first axis).
        n_boot: number of resamples.
        level: coverage of the interval, e.g. 0.95.
        seed: seed of the NumPy generator; the same seed gives the same interval.

    Returns:
        ``(low, high)``, the ``(1-level)/2`` and ``(1+level)/2`` percentiles of the resampled statistic
        (resamples where it is NaN are ignored; both NaN if it is never defined).
    """
    _check_level(level)
    return _percentiles(_boot_values(statistic, arrays, n_boot, seed), level)


def paired_bootstrap_test(statistic: Callable[..., float], arrays_a: tuple[Any, ...],
                          arrays_b: tuple[Any, ...], *, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> PairedTest:
    """Paired bootstrap comparison of ``statistic(*arrays_a) - statistic(*arrays_b)``.

    Both inputs must describe the same N samples (e.g. two metrics on the same triplets); every
    resample draws the same indices for both, so the shared variation of the samples cancels.

    The two-sided p-value is ``min(1, 2 * min(P(D <= 0), P(D >= 0)))`` over the bootstrap
    differences ``D``, each proportion computed as ``(1 + count) / (1 + n_boot)`` so that a finite
    number of resamples never claims ``p = 0``. Identical inputs give ``diff = 0`` and ``p = 1``.

    Args:
        statistic: maps arrays to a float (batched when it is a :class:`Statistic`).
        arrays_a: the arrays of the first input.
        arrays_b: the arrays of the second input, same length N.
        n_boot: number of resamples.
        seed: seed of the NumPy generator.
        level: coverage of the interval of the difference.
    """
    _check_level(level)
    n_a, n_b = _common_length(tuple(arrays_a)), _common_length(tuple(arrays_b))
    if n_a != n_b:
        raise ValueError(f"paired test needs the same samples in both inputs, got N={n_a} and N={n_b}.")
    diff = float(statistic(*arrays_a)) - float(statistic(*arrays_b))
    boot = (_boot_values(statistic, tuple(arrays_a), n_boot, seed)
            - _boot_values(statistic, tuple(arrays_b), n_boot, seed))
    boot = boot[np.isfinite(boot)]
    lo, hi = _percentiles(boot, level)
    if boot.size == 0:
        return PairedTest(diff, lo, hi, float("nan"))
    below = (1 + np.count_nonzero(boot <= 0)) / (1 + boot.size)
    above = (1 + np.count_nonzero(boot >= 0)) / (1 + boot.size)
    return PairedTest(diff, lo, hi, float(min(1.0, 2 * min(below, above))))
