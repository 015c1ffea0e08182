"""The traditional stream of SPIPS: PSNR, SSIM and MS-SSIM as per-pixel quality-loss maps.

Lao & Yu (SPIPS, section III-A) turn the three classical scores into maps the size of the input,
normalised to [0, 1] and flipped so that 0 means "no visible loss" (eqs. 1-3). The paper leaves the
per-pixel PSNR, the normalisation and the MS-SSIM map undefined; :doc:`docs/spips.md` records each
choice. In short:

* every statistic is a Gaussian-window (11 px, sigma 1.5, 'valid') local moment, the window, constants
  and MS-SSIM downsampling of :mod:`piq`, so that the spatial mean of the SSIM map equals ``piq.ssim``
  and the per-scale maps reproduce ``piq.multi_scale_ssim`` (tested);
* local PSNR = ``10 log10(1 / (e + 10^(-P_max/10)))`` with ``e`` the window-averaged squared error,
  normalised as ``clamp(PSNR / P_max, 0, 1)``, ``P_max`` = 60 dB fixed (identical pixels give exactly 60 dB);
* SSIM and contrast-structure values in [-1, 1] are normalised by ``(s + 1) / 2`` (fixed, not per image);
* MS-SSIM contributes one map per scale (contrast-structure at the finer scales, full SSIM at the
  coarsest), each brought back to ``H x W``.

The SSIM and contrast-structure maps come from the zoo's SSIM engine (:func:`spips_bench.zoo.ssim.ssim_maps`)
and every moment from its separable filter (:mod:`spips_bench.zoo.filters`), so the stream and the
``ssim`` metric cannot drift apart. The stream always computes in float32, also under autocast: the
variances are differences of nearly equal moments, which bfloat16 cannot resolve.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spips_bench.zoo.color import BT601_WEIGHTS
from spips_bench.zoo.filters import KERNEL_SIGMA, KERNEL_SIZE, gaussian_filter_valid
from spips_bench.zoo.ssim import ssim_maps

__all__ = ["KERNEL_SIGMA", "KERNEL_SIZE", "TraditionalMaps", "downsample", "local_statistics",
           "min_size_for_scales", "ms_ssim_scale_maps"]


def min_size_for_scales(scales: int, kernel_size: int = KERNEL_SIZE) -> int:
    """Smallest side in pixels on which ``scales`` MS-SSIM scales fit (piq's rule)."""
    return (kernel_size - 1) * 2 ** (scales - 1) + 1


def local_statistics(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SSIM, contrast-structure and mean-squared-error maps of one scale, per channel.

    SSIM and contrast-structure are :func:`spips_bench.zoo.ssim.ssim_maps` (the zoo's one SSIM engine,
    data range 1); the squared error is the window-weighted mean of ``(x - y)²``, filtered directly.

    Args:
        x, y: ``(N, C, H, W)`` float32 images in [0, 1].

    Returns:
        ``(ssim, cs, mse)``, each ``(N, C, H-k+1, W-k+1)``: SSIM and contrast-structure in [-1, 1]
        (1 = identical), and the window-weighted squared error in [0, 1] (0 = identical).
    """
    ssim, cs = ssim_maps(x, y, data_range=1.0, kernel_size=KERNEL_SIZE, sigma=KERNEL_SIGMA)
    # The direct moment of (x-y)^2 stays >= 0 and exact where x == y, unlike e_xx - 2 e_xy + e_yy.
    mse = gaussian_filter_valid((x - y) ** 2, KERNEL_SIZE, KERNEL_SIGMA)
    return ssim, cs, mse.clamp_min(0.0)


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve the resolution as piq's MS-SSIM does: replicate-pad odd sides on top/left, 2x2 mean."""
    pad = max(x.shape[-2] % 2, x.shape[-1] % 2)
    if pad:
        x = F.pad(x, [pad, 0, pad, 0], mode="replicate")
    return F.avg_pool2d(x, kernel_size=2)


def ms_ssim_scale_maps(x: torch.Tensor, y: torch.Tensor, scales: int,
                       ) -> tuple[list[torch.Tensor], list[tuple[int, int]], torch.Tensor, torch.Tensor]:
    """Per-scale MS-SSIM maps (per channel) plus the finest scale's SSIM and squared-error maps.

    Returns:
        ``(maps, sizes, ssim1, mse1)``: ``maps[j]`` is the contrast-structure map of scale ``j+1`` for
        ``j < scales-1`` and the full SSIM map at the coarsest scale, each ``(N, C, h_j-k+1, w_j-k+1)``
        ('valid' filtering); ``sizes[j] = (h_j, w_j)`` is the image size at that scale; ``ssim1`` and
        ``mse1`` are the finest scale's SSIM and squared-error maps.
    """
    maps: list[torch.Tensor] = []
    sizes: list[tuple[int, int]] = []
    ssim1 = mse1 = x.new_empty(0)
    for j in range(scales):
        if j > 0:
            x, y = downsample(x), downsample(y)
        sizes.append((int(x.shape[-2]), int(x.shape[-1])))
        ssim, cs, mse = local_statistics(x, y)
        if j == 0:
            ssim1, mse1 = ssim, mse
        maps.append(ssim if j == scales - 1 else cs)
    return maps, sizes, ssim1, mse1


def _to_input_grid(m: torch.Tensor, out_size: tuple[int, int], border: int) -> torch.Tensor:
    """Place a 'valid' map back on its scale's pixel grid (replicate the border), then resize to HxW.

    Padding by the window radius aligns each value with the pixel at the window's centre.
    """
    m = F.pad(m, [border, border, border, border], mode="replicate")
    if tuple(m.shape[-2:]) == out_size:
        return m
    return F.interpolate(m, size=out_size, mode="bilinear", align_corners=False)


class TraditionalMaps(torch.nn.Module):
    """Q_trad of SPIPS: ``1 - N(PSNR map)``, ``1 - N(SSIM map)`` and ``1 - N(MS-SSIM map)`` per scale.

    Args:
        color: ``"rgb"`` (default, as the paper's eqs. 1-2 give Q_psnr and Q_ssim 3 channels) computes
            PSNR and SSIM per RGB channel and averages MS-SSIM over the channels; ``"luma"`` computes
            all maps on BT.601 luminance (float, unrounded, so gradients flow).
        psnr_max_db: ``P_max`` in dB; local PSNR at or above it counts as no loss.
        ms_scales: MS-SSIM scales kept as channels; fixed so that one trained head fits every input size
            of at least :func:`min_size_for_scales` pixels (3 scales: 41 px, which 64-px BAPPS allows).

    Shapes:
        input ``(N, 3, H, W)`` in [0, 1]; output ``(N, K, H, W)`` in [0, 1], lower = more similar,
        ``K = 3 + 3 + ms_scales`` for RGB and ``2 + ms_scales`` for luma.
    """

    def __init__(self, *, color: str = "rgb", psnr_max_db: float = 60.0, ms_scales: int = 3) -> None:
        super().__init__()
        if color not in ("rgb", "luma"):
            raise ValueError(f"color={color!r} is not supported; use 'rgb' or 'luma'.")
        if not (isinstance(psnr_max_db, (int, float)) and 0 < psnr_max_db <= 200):
            raise ValueError(f"psnr_max_db={psnr_max_db!r} must be a positive number of dB (e.g. 60).")
        if not (isinstance(ms_scales, int) and 1 <= ms_scales <= 5):
            raise ValueError(f"ms_scales={ms_scales!r} must be an integer from 1 to 5.")
        self.color = color
        self.psnr_max_db = float(psnr_max_db)
        self.ms_scales = ms_scales
        self.eps = 10.0 ** (-self.psnr_max_db / 10.0)
        self.luma: torch.Tensor
        self.register_buffer("luma", torch.tensor(BT601_WEIGHTS).view(1, 3, 1, 1), persistent=False)

    @property
    def channels(self) -> int:
        """Number of maps produced."""
        per = 3 if self.color == "rgb" else 1
        return 2 * per + self.ms_scales

    @property
    def min_size(self) -> int:
        """Smallest input side in pixels."""
        return min_size_for_scales(self.ms_scales)

    def channel_names(self) -> list[str]:
        """Labels of the output channels, in order (for figures and reports)."""
        per = ["R", "G", "B"] if self.color == "rgb" else ["Y"]
        return ([f"PSNR {p}" for p in per] + [f"SSIM {p}" for p in per]
                + [f"MS-SSIM s{j + 1}" for j in range(self.ms_scales)])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Quality-loss maps of ``x`` against ``y``, ``(N, K, H, W)`` in [0, 1]."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if min(h, w) < self.min_size:
            raise ValueError(
                f"images are {h}x{w} px; the traditional stream with {self.ms_scales} MS-SSIM scales needs "
                f"at least {self.min_size}x{self.min_size}. Use larger images or fewer scales (ms_scales)."
            )
        device_type = x.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            xf, yf = x.float(), y.float()
            if self.color == "luma":
                luma = self.luma.float()  # the buffers follow .half() / .bfloat16(); the stream stays float32
                xf = (xf * luma).sum(1, keepdim=True)
                yf = (yf * luma).sum(1, keepdim=True)
            maps, _, ssim1, mse1 = ms_ssim_scale_maps(xf, yf, self.ms_scales)
            # PSNR / P_max written as log(e + eps) / log(eps): exactly 1 where the pixels agree.
            n_psnr = (torch.log(mse1 + self.eps) / math.log(self.eps)).clamp(0.0, 1.0)
            q_psnr = 1.0 - n_psnr
            q_ssim = (1.0 - ssim1) / 2.0  # 1 - (s + 1) / 2
            border = (KERNEL_SIZE - 1) // 2
            out = [_to_input_grid(torch.cat([q_psnr, q_ssim], 1), (h, w), border)]
            for m in maps:
                q = (1.0 - m.mean(1, keepdim=True)) / 2.0
                out.append(_to_input_grid(q, (h, w), border))
            return torch.cat(out, 1).clamp(0.0, 1.0)
