"""Statistics of a metric against mean opinion scores (TID2013, KADID-10k, PIPAL and any set of that kind).

A MOS dataset gives each distorted image one subjective quality score on its own scale (TID2013's MOS,
KADID-10k's DMOS, PIPAL's Elo); on all of them higher = better quality. A metric's score is first
*oriented* into a quality ``q``: a distance (lower = more similar) is negated, a similarity kept, so
that every correlation below is positive for a metric that agrees with the humans, whatever its
direction. Then, following the VQEG practice described by Sheikh, Sabir and Bovik, "A Statistical
Evaluation of Recent Full Reference Image Quality Assessment Algorithms", IEEE TIP 15(11), 2006:

* ``srcc``: Spearman's rank correlation of ``q`` and the score (average ranks for ties);
* ``krcc``: Kendall's tau-b;
* ``plcc``: Pearson's correlation of the score with ``f(q)``, where ``f`` is the five-parameter logistic
  ``f(q) = b1 * (1/2 - 1 / (1 + exp(b2 * (q - b3)))) + b4 * q + b5`` fitted to the scores by least
  squares (:func:`fit_logistic`);
* ``plcc_linear``: Pearson's correlation of ``q`` and the score, without the fit;
* ``rmse``: the root-mean-square error of ``f(q)`` against the scores, in the dataset's own units
  (lower = better; the only statistic here with that direction).

Infinite values of ``q`` (PSNR of an image identical to its reference) are ordered values for the rank
correlations and are left out of the fit, PLCC and RMSE (their ``n`` says how many remain).

Bootstrap intervals resample images with replacement, as for BAPPS (:mod:`spips_bench.stats.core`).
Refitting the logistic on each of a thousand resamples costs seconds per category and can converge to a
different local optimum on a few of them, so the intervals of ``plcc`` and ``rmse`` keep the fit of the
full sample fixed and resample the fitted predictions (the fit's own uncertainty is not in them);
``srcc``, ``krcc`` and ``plcc_linear`` are resampled exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spips_bench.stats.kinds import MOS_STATISTICS
from spips_bench.stats.weighted import Array, Kernel, correlation_kernel

__all__ = ["LOGISTIC_PARAMETERS", "LogisticFit", "MosStatistics", "fit_logistic", "logistic5", "mos_statistics"]

#: Names of the five parameters of :func:`logistic5`, in order (``run.json`` keys).
LOGISTIC_PARAMETERS: tuple[str, ...] = ("b1", "b2", "b3", "b4", "b5")
#: Statistics where lower is better (the tables bold their minimum).
LOWER_IS_BETTER: frozenset[str] = frozenset({"rmse"})


def logistic5(q: Array, b1: float, b2: float, b3: float, b4: float, b5: float) -> Array:
    """The five-parameter logistic of Sheikh et al. (2006): ``b1 (1/2 - 1/(1 + e^{b2 (q - b3)})) + b4 q + b5``."""
    with np.errstate(over="ignore"):  # exp overflows to inf far from b3: the fraction is then exactly 0
        return b1 * (0.5 - 1.0 / (1.0 + np.exp(b2 * (q - b3)))) + b4 * q + b5


@dataclass(frozen=True)
class LogisticFit:
    """A fitted :func:`logistic5`.

    Attributes:
        params: ``(b1, b2, b3, b4, b5)`` on the scale of the oriented metric score ``q``.
        converged: False when no logistic start converged and the least-squares line (``b1 = 0``) is used.
        sse: the sum of squared residuals on the fitted samples.
        n: the number of samples fitted (those with a finite ``q``).
    """

    params: tuple[float, float, float, float, float]
    converged: bool
    sse: float
    n: int

    def __call__(self, q: Array) -> Array:
        return logistic5(np.asarray(q, dtype=np.float64), *self.params)

    def as_record(self) -> dict[str, object]:
        """The fit as ``run.json`` stores it: the parameters by name, ``converged``, ``sse`` and ``n``."""
        out: dict[str, object] = {k: float(v) for k, v in zip(LOGISTIC_PARAMETERS, self.params, strict=True)}
        out.update(converged=self.converged, sse=float(self.sse), n=int(self.n))
        return out


def _line(q: Array, y: Array) -> tuple[float, float]:
    """Slope and intercept of the least-squares line of ``y`` on ``q`` (slope 0 for constant ``q``)."""
    qc = q - q.mean()
    denom = float((qc * qc).sum())
    slope = float((qc * (y - y.mean())).sum() / denom) if denom > 0 else 0.0
    return slope, float(y.mean() - slope * q.mean())


def _profile(z: Array, y: Array, rate: float, centre: float) -> tuple[float, tuple[float, float, float]]:
    """Least squares of ``y`` on ``[g, z, 1]`` with ``g`` the logistic of the given rate and centre: the
    parameters ``b1, b4, b5`` enter linearly, so for a fixed ``(b2, b3)`` they are one linear solve."""
    with np.errstate(over="ignore"):
        g = 0.5 - 1.0 / (1.0 + np.exp(rate * (z - centre)))
    design = np.stack([g, z, np.ones_like(z)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    sse = float(((design @ coef - y) ** 2).sum())
    return sse, (float(coef[0]), float(coef[1]), float(coef[2]))


#: The grid of logistic rates (on the standardised score) and centre quantiles searched before refining.
_RATES = tuple(float(r) for r in np.geomspace(0.2, 20.0, 16))
_CENTRES = tuple(float(c) for c in np.linspace(0.05, 0.95, 19))
#: How many of the best grid points are refined by the full nonlinear fit.
_REFINED = 4


def fit_logistic(q: object, y: object) -> LogisticFit:
    """Least-squares fit of :func:`logistic5` mapping the oriented metric scores ``q`` to the subjective
    scores ``y``; samples with a non-finite ``q`` or ``y`` are left out.

    The fit runs on ``q`` standardised to mean 0 and standard deviation 1 (metric scales range from 1e-3
    to 1e2). The sum of squares has local minima, so the search is global first: for every rate ``b2``
    and centre ``b3`` of a grid (:data:`_RATES` x quantiles :data:`_CENTRES` of the scores) the linear
    parameters ``b1, b4, b5`` are solved exactly; the best grid points are then refined by
    Levenberg-Marquardt (``scipy.optimize.curve_fit``) and the lowest residual wins, mapped back to the
    scale of ``q``. The straight line (``b1 = 0``) is a member of the family, so a fit is never worse
    than it: when every refinement fails or ends above the line's residual, the line is returned with
    ``converged=False``.

    Raises:
        ValueError: fewer than 5 usable samples (five parameters), or arrays of different lengths.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    qa, ya = np.asarray(q, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    if qa.size != ya.size:
        raise ValueError(f"q and y have lengths {qa.size} and {ya.size}; pass one value per image each.")
    keep = np.isfinite(qa) & np.isfinite(ya)
    qa, ya = qa[keep], ya[keep]
    if qa.size < 5:
        raise ValueError(f"the five-parameter logistic needs at least 5 images with finite scores, got {qa.size}.")
    mean, std = float(qa.mean()), float(qa.std())
    slope, intercept = _line(qa, ya)
    line = (0.0, 0.0, 0.0, slope, intercept)
    line_sse = float(((ya - (slope * qa + intercept)) ** 2).sum())
    if not std > 0:
        return LogisticFit(line, False, line_sse, int(qa.size))
    z = (qa - mean) / std
    grid = []
    for centre in np.quantile(z, _CENTRES):
        for rate in _RATES:
            sse, (b1, b4, b5) = _profile(z, ya, rate, float(centre))
            grid.append((sse, (b1, rate, float(centre), b4, b5)))
    grid.sort(key=lambda item: item[0])
    best: tuple[float, tuple[float, ...]] | None = None
    for _, p0 in grid[:_REFINED]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, _ = curve_fit(logistic5, z, ya, p0=p0, maxfev=20000)
        except (RuntimeError, ValueError):
            popt = np.asarray(p0)  # the grid point itself is a valid logistic
        if not np.all(np.isfinite(popt)):
            continue
        sse = float(((ya - logistic5(z, *popt)) ** 2).sum())
        if math.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, tuple(float(v) for v in popt))
    if best is None or best[0] > line_sse * (1 + 1e-9):
        return LogisticFit(line, False, line_sse, int(qa.size))
    b1, b2, b3, b4, b5 = best[1]
    # f(z) with z = (q - mean) / std, written in q: the rate and slope divide by std, the centre moves.
    params = (b1, b2 / std, mean + std * b3, b4 / std, b5 - b4 * mean / std)
    return LogisticFit(params, True, best[0], int(qa.size))


@dataclass(frozen=True)
class MosStatistics:
    """The statistics of one metric on one set of images (a distortion type, or all of them).

    Attributes:
        values: statistic -> value, for each of :data:`spips_bench.stats.kinds.MOS_STATISTICS`.
        intervals: statistic -> bootstrap ``(low, high)`` (NaN when not computed).
        n: statistic -> the number of images it used.
        fit: the logistic behind ``plcc`` and ``rmse`` (None when fewer than 5 finite images).
    """

    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    n: dict[str, int]
    fit: LogisticFit | None


def _rmse_kernel(residual: Array, valid: npt.NDArray[np.bool_]) -> Kernel:
    sq = np.where(valid, residual, 0.0) ** 2
    mask = valid.astype(np.float64)

    def kernel(w: Array) -> Array:
        total = (w * mask).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, np.sqrt((w * sq).sum(axis=1) / total), np.nan)

    return kernel


def _kernels(q: Array, y: Array, fit: LogisticFit | None) -> list[tuple[tuple[str, ...], Kernel]]:
    """Batched kernels (weights ``(B, n)`` -> ``(B, k)``) of every statistic, in groups."""
    valid = np.isfinite(y)
    finite = valid & np.isfinite(q)
    out: list[tuple[tuple[str, ...], Kernel]] = [(("srcc", "krcc"), correlation_kernel(q, y, valid, ("srcc", "krcc")))]
    out.append((("plcc_linear",), correlation_kernel(q, y, finite, ("plcc",))))
    if fit is not None:
        predicted = np.where(finite, fit(np.where(finite, q, 0.0)), 0.0)
        out.append((("plcc",), correlation_kernel(predicted, y, finite, ("plcc",))))
        rmse = _rmse_kernel(predicted - np.where(valid, y, 0.0), finite)
        out.append((("rmse",), lambda w: rmse(w)[:, None]))
    return out


def mos_statistics(quality: object, mos: object, *, n_boot: int = 1000, level: float = 0.95,
                   seed: int = 0) -> MosStatistics:
    """Every MOS statistic of one metric on one set of images, with percentile bootstrap intervals.

    Args:
        quality: the metric's scores oriented so that higher = better quality (a distance negated), shape (N,).
            ±inf is an ordered value; NaN is refused.
        mos: the subjective scores, higher = better; NaN images are left out of every statistic.
        n_boot: bootstrap resamples (0: intervals NaN).
        level: coverage of the intervals.
        seed: seed of the resamples (the same for every metric, so intervals of two metrics pair up).

    Raises:
        ValueError: NaN in ``quality``, arrays of different lengths, no image with a finite score, or a
            bad ``n_boot`` / ``level``.
    """
    from spips_bench.stats.core import _check_level, _percentiles, _resamples, _weights

    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    y = np.asarray(mos, dtype=np.float64).reshape(-1)
    if q.size != y.size:
        raise ValueError(f"quality and mos have lengths {q.size} and {y.size}; pass one value per image each.")
    if np.isnan(q).any():
        raise ValueError(f"quality has {int(np.isnan(q).sum())} NaN value(s); the metric failed on those images. "
                         "Drop them before computing statistics.")
    if np.isinf(y).any():
        raise ValueError(f"mos has {int(np.isinf(y).sum())} infinite value(s); subjective scores must be finite "
                         "(NaN = unknown).")
    valid = np.isfinite(y)
    if not valid.any():
        raise ValueError("no image has a subjective score (every mos is NaN); nothing to compute.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer (0 = no intervals), got {n_boot!r}.")
    _check_level(level)
    finite = valid & np.isfinite(q)
    fit = fit_logistic(q[finite], y[finite]) if finite.sum() >= 5 else None
    kernels = _kernels(q, y, fit)
    names = [name for group, _ in kernels for name in group]
    ones = np.ones((1, q.size))
    point = np.concatenate([k(ones) for _, k in kernels], axis=1)[0]
    values = {name: float("nan") for name in MOS_STATISTICS}
    values.update({name: float(v) for name, v in zip(names, point, strict=True)})
    counts = {"srcc": int(valid.sum()), "krcc": int(valid.sum()), "plcc_linear": int(finite.sum()),
              "plcc": int(finite.sum()) if fit is not None else 0, "rmse": int(finite.sum()) if fit is not None else 0}
    intervals = {name: (math.nan, math.nan) for name in MOS_STATISTICS}
    if n_boot:
        boots = np.concatenate([np.concatenate([k(w) for _, k in kernels], axis=1)
                                for w in (_weights(idx, q.size) for idx in _resamples(q.size, n_boot, seed))])
        intervals.update({name: _percentiles(boots[:, i], level) for i, name in enumerate(names)})
    return MosStatistics(values, intervals, counts, fit)


def orient(scores: Sequence[float] | Array, higher_is_better: bool) -> Array:
    """A metric's scores as qualities (higher = better): a similarity as is, a distance negated."""
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    return arr.copy() if higher_is_better else -arr
