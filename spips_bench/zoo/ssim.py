"""SSIM and MS-SSIM with per-pixel maps; higher = more similar, 1 for identical images.

Both follow the Gaussian-window formulation of Wang et al. (11x11 window, sigma 1.5, K = (0.01, 0.03),
'valid' filtering), the same window and constants as ``piq``: where ``piq.ssim`` (with its downsampling
off) and ``piq.multi_scale_ssim`` accept an input, the spatial means of the maps here equal them.

Speed: the five local moments (x, y, x², y², xy) are filtered separably by
:func:`spips_bench.zoo.filters.gaussian_filter_valid` (banded matrix products on small sides, grouped 1-D
convolutions on large ones). On CPU, :func:`ssim_maps` works through the image planes in chunks of about
:data:`CHUNK_BYTES` per map, so that the dozen intermediate maps of a chunk stay in the processor's cache
(at 256 px a batch of 16 RGB pairs would otherwise stream about 20 maps of 12 MiB through memory).
The SPIPS traditional stream computes its SSIM maps with :func:`ssim_maps` too.
Precision: float64 inputs are computed in float64; other floating dtypes in float32 after subtracting
each image's mean, which keeps the variance ``E[x²] - E[x]²`` free of cancellation (variances do not
change under a common shift; the local means get the shift added back).

MS-SSIM on small images: the number of scales is chosen from the image size by
:func:`ms_ssim_num_scales` (the most scales, at most five, whose coarsest image is still as large as the
window), and the exponents of the scales used are rescaled to the total of the five standard exponents.
With five scales this is the standard definition; 64x64 BAPPS patches get three scales.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from spips_bench.metric import Metric
from spips_bench.zoo.color import check_color_mode, to_metric_channels
from spips_bench.zoo.filters import gaussian_filter_valid
from spips_bench.zoo.grad import warn_if_not_differentiable

#: The exponents of the five MS-SSIM scales, finest first (Wang, Simoncelli & Bovik 2003).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: How the per-scale means are combined: the published weighted geometric mean, or the weighted
#: arithmetic mean (exponents normalised to sum 1) that ``msssim.m`` offers as method 'wtd_sum'.
MS_SSIM_COMBINE: tuple[str, ...] = ("product", "weighted-sum")


def _check_window(x: torch.Tensor, y: torch.Tensor, kernel_size: int, sigma: float, data_range: float) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"expected two torch.Tensor, got {type(x).__name__} and {type(y).__name__}.")
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    if not x.is_floating_point() or not y.is_floating_point():
        raise TypeError(f"expected floating-point tensors, got {x.dtype} and {y.dtype}.")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
    if not sigma > 0 or not data_range > 0:
        raise ValueError(f"sigma and data_range must be positive, got sigma={sigma!r}, data_range={data_range!r}.")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) < kernel_size:
        raise ValueError(f"images of {h}x{w} pixels are smaller than the {kernel_size}x{kernel_size} window; "
                         "use larger images or a smaller kernel_size.")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def ssim_maps(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, kernel_size: int = 11,
              sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel SSIM and contrast-structure maps with 'valid' Gaussian filtering.

    Args:
        x, y: ``(N, C, H, W)`` images (any ``C``), values in ``[0, data_range]``; symmetric in x and y.
        data_range: the peak value L of the constants ``C1 = (k1 L)²``, ``C2 = (k2 L)²``.
        kernel_size: side of the Gaussian window in pixels (odd).
        sigma: standard deviation of the window in pixels.
        k1, k2: the stabilising constants' factors.

    Returns:
        ``(ssim_map, cs_map)``, each ``(N, C, H - k + 1, W - k + 1)`` in the dtype of ``x``; values in
        [-1, 1], 1 where the images agree. ``ssim_map = luminance * cs_map``.
    """
    _check_window(x, y, kernel_size, sigma, data_range)
    out_dtype = x.dtype
    cdt = _compute_dtype(x.dtype)
    x, y = x.to(cdt), y.to(cdt)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    n, c, h, w = (int(v) for v in x.shape)
    per_chunk = _planes_per_chunk(h, w, x.element_size(), x.device)
    if n * c <= per_chunk:
        ssim_map, cs = _ssim_planes(x, y, kernel_size, sigma, c1, c2)
    else:
        # Each plane is independent (its own shift, its own windows): the same values, chunk by chunk.
        xp, yp = x.reshape(n * c, 1, h, w), y.reshape(n * c, 1, h, w)
        parts = [_ssim_planes(xp[i:i + per_chunk], yp[i:i + per_chunk], kernel_size, sigma, c1, c2)
                 for i in range(0, n * c, per_chunk)]
        size = (n, c, h - kernel_size + 1, w - kernel_size + 1)
        ssim_map = torch.cat([p[0] for p in parts]).reshape(size)
        cs = torch.cat([p[1] for p in parts]).reshape(size)
    return ssim_map.to(out_dtype), cs.to(out_dtype)


#: Bytes of one image's planes per chunk of :func:`ssim_maps` on CPU: about twenty maps of this size are
#: alive at once, which then stay in the processor's cache instead of streaming through memory.
CHUNK_BYTES = 3 * 2**20


def _planes_per_chunk(height: int, width: int, itemsize: int, device: torch.device) -> int:
    """How many ``(H, W)`` planes :func:`ssim_maps` computes at once (all of them on GPUs)."""
    if device.type != "cpu":
        return 2**62
    return max(1, CHUNK_BYTES // (height * width * itemsize))


def _ssim_planes(x: torch.Tensor, y: torch.Tensor, kernel_size: int, sigma: float, c1: float,
                 c2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSIM and contrast-structure maps of :func:`ssim_maps` for inputs already in the compute dtype."""
    # Centre each image pair on its common mean (see the module docstring: float32 cancellation).
    shift = 0.5 * (x.mean(dim=(-2, -1), keepdim=True) + y.mean(dim=(-2, -1), keepdim=True))
    xs, ys = x - shift, y - shift

    def filt(t: torch.Tensor) -> torch.Tensor:
        return gaussian_filter_valid(t, kernel_size, sigma)

    # Filtering each moment separately avoids copying the five into one stacked tensor.
    mu_x, mu_y = filt(xs), filt(ys)
    e_xx, e_yy, e_xy = filt(xs * xs), filt(ys * ys), filt(xs * ys)
    # The moments below are algebraically those of the uncentred images. In-place updates touch only
    # results of additions, which autograd does not save, so the maps stay differentiable.
    mu_xy = mu_x * mu_y
    mu_sq = mu_x * mu_x + mu_y * mu_y
    cs_num = (e_xy - mu_xy).mul_(2.0).add_(c2)  # 2 sigma_xy + C2
    cs_den = (e_xx + e_yy).sub_(mu_sq).add_(c2)  # sigma_x² + sigma_y² + C2
    cs = cs_num / cs_den
    # With the shift s added back: mu_x' mu_y' = mu_xy + t and mu_x'² + mu_y'² = mu_sq + 2t.
    t = (mu_x + mu_y).mul_(shift).add_(shift * shift)
    lum_num = (mu_xy + t).mul_(2.0).add_(c1)
    lum_den = (t * 2.0).add_(mu_sq).add_(c1)
    return (lum_num / lum_den) * cs, cs


def matlab_box_downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """MATLAB's ``imfilter(x, ones(f)/f^2, 'symmetric', 'same')`` followed by ``x(1:f:end, 1:f:end)``.

    MATLAB centres an ``f``-tap kernel on tap ``floor((f+1)/2)``, so for even ``f`` output pixel ``i``
    averages pixels ``i .. i+f-1`` (mirror-padded with edge repetition past the border).

    Args:
        x: ``(N, C, H, W)``.
        factor: the integer factor ``f >= 1``.

    Returns:
        ``(N, C, ceil(H/f), ceil(W/f))``.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}.")
    if factor == 1:
        return x
    before = (factor + 1) // 2 - 1
    after = factor - 1 - before
    x = _symmetric_pad(x, before, after, dim=-2)
    x = _symmetric_pad(x, before, after, dim=-1)
    return F.avg_pool2d(x, kernel_size=factor, stride=factor, ceil_mode=False)


def _symmetric_pad(x: torch.Tensor, before: int, after: int, *, dim: int) -> torch.Tensor:
    """Mirror padding that repeats the edge pixel (MATLAB 'symmetric'); ``before``/``after`` <= size."""
    size = x.shape[dim]
    if before > size or after > size:
        raise ValueError(f"cannot pad {before}/{after} pixels symmetrically on a side of {size} pixels.")
    parts = []
    if before:
        parts.append(x.narrow(dim, 0, before).flip(dim))
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, size - after, after).flip(dim))
    return torch.cat(parts, dim=dim) if len(parts) > 1 else x


def matlab_ssim_downsample_factor(height: int, width: int) -> int:
    """The factor of the official ``ssim.m``: ``max(1, round(min(H, W) / 256))`` (round half up)."""
    return max(1, math.floor(min(height, width) / 256 + 0.5))


def ms_ssim_num_scales(height: int, width: int, kernel_size: int = 11, max_scales: int = 5) -> int:
    """Number of MS-SSIM scales for an image size: the most (``<= max_scales``) whose coarsest scale is
    still at least ``kernel_size`` pixels on its shorter side.

    Each scale halves the image, rounding up (MATLAB's ``x(1:2:end)``): 64 px -> 64, 32, 16 gives 3
    scales with the 11-px window; 161 px and more give the standard 5 (the size ``piq`` requires).

    Raises:
        ValueError: the image is smaller than the window (not even one scale fits).
    """
    side = min(int(height), int(width))
    if side < kernel_size:
        raise ValueError(f"MS-SSIM needs images of at least {kernel_size}x{kernel_size} pixels, got "
                         f"{height}x{width}.")
    scales = 1
    while scales < max_scales and math.ceil(side / 2) >= kernel_size:
        side = math.ceil(side / 2)
        scales += 1
    return scales


def ms_ssim_weights(scales: int, weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> tuple[float, ...]:
    """Exponents of the first ``scales`` scales, rescaled so they sum to ``sum(weights)``.

    With all five scales this returns the standard exponents unchanged; with fewer, the relative weights
    of the scales used are kept and the total stays that of the published definition.
    """
    if not 1 <= scales <= len(weights):
        raise ValueError(f"scales must be between 1 and {len(weights)}, got {scales!r}.")
    used = weights[:scales]
    factor = sum(weights) / sum(used)
    return tuple(w * factor for w in used)


def ms_ssim_maps(x: torch.Tensor, y: torch.Tensor, *, scales: int | None = None, data_range: float = 1.0,
                 kernel_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
                 k2: float = 0.03) -> list[torch.Tensor]:
    """Per-scale MS-SSIM maps, finest first, each at its own resolution.

    Between scales both images are averaged over 2x2 blocks and subsampled as in the official
    ``msssim.m`` (``imfilter(ones(2)/4, 'symmetric')`` then ``(1:2:end)``).

    Args:
        x, y: ``(N, C, H, W)`` images in ``[0, data_range]``.
        scales: number of scales; ``None`` chooses :func:`ms_ssim_num_scales` from the size.
        data_range, kernel_size, sigma, k1, k2: as in :func:`ssim_maps`.

    Returns:
        ``M`` tensors: the contrast-structure maps of scales ``1 .. M-1`` and the full SSIM map of the
        coarsest scale ``M``; map ``j`` has shape ``(N, C, ceil(H/2^(j-1)) - k + 1, ...)``.
    """
    _check_window(x, y, kernel_size, sigma, data_range)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    feasible = ms_ssim_num_scales(h, w, kernel_size, max_scales=64)
    if scales is None:
        scales = min(feasible, len(MS_SSIM_WEIGHTS))
    elif not isinstance(scales, int) or scales < 1 or scales > feasible:
        raise ValueError(f"scales={scales!r} does not fit {h}x{w} images with a {kernel_size}-px window; "
                         f"use 1 .. {feasible} or scales=None.")
    cdt = _compute_dtype(x.dtype)
    xs, ys = x.to(cdt), y.to(cdt)
    maps: list[torch.Tensor] = []
    for j in range(scales):
        ssim_map, cs_map = ssim_maps(xs, ys, data_range=data_range, kernel_size=kernel_size, sigma=sigma,
                                     k1=k1, k2=k2)
        maps.append((ssim_map if j == scales - 1 else cs_map).to(x.dtype))
        if j < scales - 1:
            xs, ys = matlab_box_downsample(xs, 2), matlab_box_downsample(ys, 2)
    return maps


def combine_ms_ssim(maps: list[torch.Tensor], *, combine: str = "product",
                    weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> torch.Tensor:
    """MS-SSIM ``(N, C)`` from the per-scale maps of :func:`ms_ssim_maps`.

    ``"product"``: ``prod_j mean(map_j) ** w_j`` with per-scale means clamped at 0 (a negative mean, from
    anti-correlated images, has no real fractional power; piq clamps the same way). ``"weighted-sum"``:
    ``sum_j w_j mean(map_j) / sum_j w_j``.
    """
    if combine not in MS_SSIM_COMBINE:
        raise ValueError(f"combine={combine!r} is not supported; choose one of {MS_SSIM_COMBINE}.")
    w = ms_ssim_weights(len(maps), weights)
    means = torch.stack([m.mean(dim=(-2, -1)) for m in maps], dim=0)  # (M, N, C)
    wt = torch.tensor(w, dtype=means.dtype, device=means.device).view(-1, 1, 1)
    if combine == "product":
        return torch.prod(torch.relu(means) ** wt, dim=0)
    return (means * wt).sum(dim=0) / wt.sum()


class SSIM(Metric):
    """Structural similarity (SSIM), mean of the Gaussian-window SSIM map; higher = more similar, in [-1, 1].

    Args:
        color: ``"matlab-gray"`` (default: MATLAB ``rgb2gray`` rounded to 8 bits, the input of the
            official script), ``"y"`` (BT.601 luma) or ``"rgb"`` (per channel, averaged). The rounding
            of ``"matlab-gray"`` makes the gradient zero; ``"y"`` and ``"rgb"`` are differentiable.
        downsample: ``False`` (default, the calibration convention). ``True`` applies the official
            script's pre-filter: factor ``f = max(1, round(min(H, W)/256))``, f x f box filter with
            symmetric borders, then every f-th pixel.
        data_range: the constants' L for the contract's [0, 1] inputs; 1.0 (default) equals L = 255 on
            8-bit values.
        kernel_size, sigma, k1, k2: window side (px), window standard deviation (px) and constants;
            defaults 11, 1.5, 0.01, 0.03.

    Reference: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
    visibility to structural similarity", IEEE TIP 13(4), 2004, doi:10.1109/TIP.2003.819861.
    """

    def __init__(self, color: str = "matlab-gray", downsample: bool = False, data_range: float = 1.0,
                 kernel_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> None:
        super().__init__()
        self.color = check_color_mode(color)
        if not isinstance(downsample, bool):
            raise TypeError(f"downsample must be True or False, got {downsample!r}.")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        self.downsample = downsample
        self.options = {"data_range": float(data_range), "kernel_size": kernel_size, "sigma": float(sigma),
                        "k1": float(k1), "k2": float(k2)}

    def variant(self) -> dict[str, Any]:
        """The 8-bit rounding of ``color="matlab-gray"`` (the card's default) makes the gradient zero."""
        return {"differentiable": self.color != "matlab-gray"}

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(N,)`` mean SSIM of validated ``(N, 3, H, W)`` inputs in [0, 1]."""
        warn_if_not_differentiable(self, dist, ref, fix="color='y' (BT.601 luma, not rounded) or color='rgb'")
        x, y = to_metric_channels(dist, self.color), to_metric_channels(ref, self.color)
        if self.downsample:
            f = matlab_ssim_downsample_factor(int(x.shape[-2]), int(x.shape[-1]))
            x, y = matlab_box_downsample(x, f), matlab_box_downsample(y, f)
        ssim_map, _ = ssim_maps(x, y, **self.options)  # type: ignore[arg-type]
        return ssim_map.mean(dim=(1, 2, 3))

    def extra_repr(self) -> str:
        return f"color={self.color!r}, downsample={self.downsample}, " + ", ".join(
            f"{k}={v}" for k, v in self.options.items())


class MSSSIM(Metric):
    """Multi-scale SSIM; higher = more similar, in [0, 1] with the default combination.

    Args:
        color: ``"matlab-gray"`` (default), ``"y"`` or ``"rgb"`` (per channel, averaged), as for SSIM.
        scales: number of scales; ``None`` (default) picks the most (<= 5) that fit the image
            (:func:`ms_ssim_num_scales`): 5 from 161 px, 3 at 64 px.
        combine: ``"product"`` (default; the published weighted geometric mean and the default of the
            official ``msssim.m``; registered as ``ms-ssim``) or ``"weighted-sum"`` (``msssim.m``'s
            'wtd_sum' method, which reproduces the calibration values; registered as
            ``ms-ssim-wtd-sum``, which is then the instance's :attr:`name`).
        data_range, kernel_size, sigma, k1, k2: as for :class:`SSIM`.

    Reference: Z. Wang, E. P. Simoncelli, A. C. Bovik, "Multiscale structural similarity for image quality
    assessment", 37th Asilomar Conference on Signals, Systems and Computers, 2003,
    doi:10.1109/ACSSC.2003.1292216.
    """

    def __init__(self, color: str = "matlab-gray", scales: int | None = None, combine: str = "product",
                 data_range: float = 1.0, kernel_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
                 k2: float = 0.03) -> None:
        super().__init__()
        self.color = check_color_mode(color)
        if combine not in MS_SSIM_COMBINE:
            raise ValueError(f"combine={combine!r} is not supported; choose one of {MS_SSIM_COMBINE}.")
        if scales is not None and (not isinstance(scales, int) or not 1 <= scales <= len(MS_SSIM_WEIGHTS)):
            raise ValueError(f"scales must be None or 1 .. {len(MS_SSIM_WEIGHTS)}, got {scales!r}.")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        self.scales = scales
        self.combine = combine
        self.options = {"data_range": float(data_range), "kernel_size": kernel_size, "sigma": float(sigma),
                        "k1": float(k1), "k2": float(k2)}

    def variant(self) -> dict[str, Any]:
        """The 8-bit rounding of ``color="matlab-gray"`` (the cards' default) makes the gradient zero."""
        return {"differentiable": self.color != "matlab-gray"}

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(N,)`` MS-SSIM of validated ``(N, 3, H, W)`` inputs in [0, 1]."""
        warn_if_not_differentiable(self, dist, ref, fix="color='y' (BT.601 luma, not rounded) or color='rgb'")
        x, y = to_metric_channels(dist, self.color), to_metric_channels(ref, self.color)
        maps = ms_ssim_maps(x, y, scales=self.scales, **self.options)  # type: ignore[arg-type]
        return combine_ms_ssim(maps, combine=self.combine).mean(dim=1)

    def extra_repr(self) -> str:
        return f"color={self.color!r}, scales={self.scales}, combine={self.combine!r}, " + ", ".join(
            f"{k}={v}" for k, v in self.options.items())
