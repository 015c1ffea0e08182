"""Weighted, batched kernels behind :mod:`spips_bench.stats.core` (internal; NumPy/SciPy only).

A bootstrap resample is the same as integer weights on the original samples (how often each was
drawn). Every kernel here takes weights of shape ``(B, n)`` and returns one value per row, treating a
sample of weight ``k`` exactly as ``k`` tied copies, so one call evaluates ``B`` resamples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Kernel = Callable[[Array], Array]  # weights (B, n) -> statistic (B,)

#: Kendall's tau is vectorised when one variable has at most this many distinct values (BAPPS judgments
#: have 3 to 6); beyond that it falls back to SciPy, one resample at a time.
MAX_LEVELS = 64
#: Two variables with at most this many (x, y) value combinations go through their contingency table.
MAX_CELLS = 256


@dataclass(frozen=True)
class Groups:
    """Tie groups of a vector: sort order, group of each sample (sorted and input order), starts, ends."""

    order: npt.NDArray[np.intp]
    gid_sorted: npt.NDArray[np.intp]
    gid: npt.NDArray[np.intp]
    starts: npt.NDArray[np.intp]
    ends: npt.NDArray[np.intp]

    @property
    def size(self) -> int:
        return len(self.starts)

    @classmethod
    def of(cls, v: Array) -> Groups:
        order = np.argsort(v, kind="stable")
        vs = v[order]
        new = np.ones(len(v), dtype=bool)
        new[1:] = vs[1:] != vs[:-1]
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:] - 1, len(v) - 1)
        gid_sorted = np.cumsum(new) - 1
        gid = np.empty_like(gid_sorted)
        gid[order] = gid_sorted
        return cls(order, gid_sorted, gid, starts, ends)

    def sort(self, w: Array) -> Array:
        """Columns of ``w`` in sorted order (``np.take`` is several times faster than fancy indexing)."""
        return np.take(w, self.order, axis=1)

    def sums(self, w_sorted: Array) -> Array:
        """Total weight of each group, shape (B, groups), from weights in sorted order."""
        return np.add.reduceat(w_sorted, self.starts, axis=1)

    def ranks(self, w: Array) -> Array:
        """Average ranks (1-based) of each sample in its weighted resample, shape (B, n), input order."""
        g = self.sums(self.sort(w))
        rank_g = np.cumsum(g, axis=1) - (g - 1) / 2  # mean of ranks before+1 .. before+g
        return np.take(rank_g, self.gid, axis=1)


def _pearson(w: Array, x: Array, y: Array, constant: npt.NDArray[np.bool_]) -> Array:
    total = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # infinite values give NaN, not a warning
        xc = x - (w * x).sum(axis=1, keepdims=True) / total
        yc = y - (w * y).sum(axis=1, keepdims=True) / total
        r = (w * xc * yc).sum(axis=1) / np.sqrt((w * xc * xc).sum(axis=1) * (w * yc * yc).sum(axis=1))
    # Rounding can leave a tiny non-zero spread for constant input; decide constancy from the ties.
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def _kendall_tau_b(w: Array, gx: Groups, gy: Groups, x: Array, y: Array) -> Array:
    if min(gx.size, gy.size) > MAX_LEVELS:
        return _kendall_loop(w, x, y)
    if gy.size > gx.size:  # tau is symmetric: loop over the levels of the variable with fewer of them
        gx, gy = gy, gx
    ws = gx.sort(w)
    level = gy.gid[gx.order]  # level of y at each x-sorted position
    s = np.zeros(w.shape[0])
    for a in range(gy.size):
        # weight of samples of level a strictly before each x tie group (equal x is no pair)
        c = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(ws * (level == a), axis=1)], axis=1)
        before = np.take(np.take(c, gx.starts, axis=1), gx.gid_sorted, axis=1)
        s += (ws * before * np.sign(level - a)).sum(axis=1)
    total = w.sum(axis=1)
    n0 = total * (total - 1) / 2
    tx = gx.sums(ws)
    ty = gy.sums(gy.sort(w))
    n1 = (tx * (tx - 1) / 2).sum(axis=1)
    n2 = (ty * (ty - 1) / 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = s / np.sqrt((n0 - n1) * (n0 - n2))
    return np.where((n0 - n1) * (n0 - n2) > 0, np.clip(tau, -1.0, 1.0), np.nan)


def _kendall_loop(w: Array, x: Array, y: Array) -> Array:
    from scipy.stats import kendalltau

    out = np.empty(w.shape[0])
    for b, row in enumerate(w):
        counts = row.astype(np.intp)
        xs, ys = np.repeat(x, counts), np.repeat(y, counts)
        const = xs.size < 2 or np.all(xs == xs[0]) or np.all(ys == ys[0])
        out[b] = np.nan if const else kendalltau(xs, ys, variant="b").statistic
    return out


def _table_pearson(t: Array, ux: Array, uy: Array, constant: npt.NDArray[np.bool_]) -> Array:
    """Pearson correlation from weighted contingency tables ``t`` (B, kx, ky) and level values (B, k)."""
    rows, cols = t.sum(axis=2), t.sum(axis=1)
    total = rows.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # infinite values give NaN, not a warning
        dx = ux - (rows * ux).sum(axis=1, keepdims=True) / total
        dy = uy - (cols * uy).sum(axis=1, keepdims=True) / total
        sxy = np.einsum("bij,bi,bj->b", t, dx, dy)
        r = sxy / np.sqrt((rows * dx * dx).sum(axis=1) * (cols * dy * dy).sum(axis=1))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def _table_kendall(t: Array, constant: npt.NDArray[np.bool_]) -> Array:
    """Kendall tau-b from weighted contingency tables ``t`` (B, kx, ky), levels in ascending order."""
    rows, cols = t.sum(axis=2), t.sum(axis=1)
    # above[b, i, :]: weight in the rows strictly below level i of x, per level of y
    above = np.concatenate([np.zeros_like(t[:, :1]), np.cumsum(t, axis=1)[:, :-1]], axis=1)
    inclusive = np.cumsum(above, axis=2)
    concordant = inclusive - above  # x smaller and y strictly smaller
    discordant = above.sum(axis=2, keepdims=True) - inclusive  # x smaller and y strictly larger
    s = (t * (concordant - discordant)).sum(axis=(1, 2))
    total = rows.sum(axis=1)
    n0 = total * (total - 1) / 2
    n1 = (rows * (rows - 1) / 2).sum(axis=1)
    n2 = (cols * (cols - 1) / 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = s / np.sqrt((n0 - n1) * (n0 - n2))
    return np.where(constant | ((n0 - n1) * (n0 - n2) <= 0), np.nan, np.clip(tau, -1.0, 1.0))


def _table_kernel(x: Array, y: Array, gx: Groups, gy: Groups, mask: Array, which: tuple[str, ...]) -> Kernel:
    """All three correlations from the weighted contingency table of two few-valued variables.

    BAPPS decisions have 3 values and judgments 6: each resample reduces to 18 cell weights (one
    matrix product), and every statistic follows from the table exactly.
    """
    kx, ky = gx.size, gy.size
    cells = np.zeros((len(x), kx * ky))
    cells[np.arange(len(x)), gx.gid * ky + gy.gid] = mask
    vx, vy = x[gx.order][gx.starts], y[gy.order][gy.starts]

    def kernel(w: Array) -> Array:
        t = (w @ cells).reshape(-1, kx, ky)
        rows, cols = t.sum(axis=2), t.sum(axis=1)
        const = ((rows > 0).sum(axis=1) < 2) | ((cols > 0).sum(axis=1) < 2)
        out = []
        for name in which:
            if name == "plcc":
                out.append(_table_pearson(t, vx[None, :], vy[None, :], const))
            elif name == "srcc":
                ranks_x = np.cumsum(rows, axis=1) - (rows - 1) / 2
                ranks_y = np.cumsum(cols, axis=1) - (cols - 1) / 2
                out.append(_table_pearson(t, ranks_x, ranks_y, const))
            else:
                out.append(_table_kendall(t, const))
        return np.stack(out, axis=1)

    return kernel


def correlation_kernel(x: Array, y: Array, valid: npt.NDArray[np.bool_], which: tuple[str, ...]) -> Kernel:
    """Kernel of PLCC/SRCC/KRCC (the names in ``which``, in that order) of ``x`` and ``y``: (B, len(which)).

    Samples where ``valid`` is False are ignored. A resample where either variable is constant gives NaN.
    """
    x, y = np.where(valid, x, 0.0), np.where(valid, y, 0.0)  # masked rows get weight 0 below
    gx, gy = Groups.of(x), Groups.of(y)
    mask = valid.astype(np.float64)
    if gx.size * gy.size <= MAX_CELLS:
        return _table_kernel(x, y, gx, gy, mask, which)

    def kernel(w: Array) -> Array:
        w = w * mask
        # A variable is constant in a resample when at most one of its tie groups has weight.
        const = ((gx.sums(gx.sort(w)) > 0).sum(axis=1) < 2) | ((gy.sums(gy.sort(w)) > 0).sum(axis=1) < 2)
        cols = []
        for name in which:
            if name == "plcc":
                cols.append(_pearson(w, x[None, :], y[None, :], const))
            elif name == "srcc":
                cols.append(_pearson(w, gx.ranks(w), gy.ranks(w), const))
            else:
                cols.append(np.where(const, np.nan, _kendall_tau_b(w, gx, gy, x, y)))
        return np.stack(cols, axis=1)

    return kernel
