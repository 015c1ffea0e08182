"""Gaussian windows and 'valid' separable Gaussian filtering, shared by SSIM, MS-SSIM and the SPIPS stream.

The window is the one of MATLAB's ``fspecial('gaussian', 11, 1.5)`` and of ``piq``: ``exp(-x² / 2σ²)``
on integer offsets from the centre, normalised to sum 1; the 2-D window is the outer product of the 1-D
one. Filtering is 'valid' (no padding): an ``(H, W)`` image gives ``(H - k + 1, W - k + 1)``.

Speed: on small sides each 1-D pass is a product with a banded matrix, which BLAS runs as fast as or
faster than a convolution on CPU (in float64 more than ten times faster, as oneDNN has no float64
convolutions). The band matrix does ``n`` multiply-adds per output pixel and direction where ``k`` would
do, so float32 images on CPU whose larger side exceeds :data:`CONV_MIN` pixels use grouped (depthwise)
1-D convolutions, ``(1, k)`` then ``(k, 1)``, instead (about 2x faster at 256 px, measured by
``spips-bench bench``). On CUDA, float32 matrix products keep full precision by default while cuDNN
convolutions may use TF32, too coarse for the variance differences of SSIM, so the band matrices stay
up to :data:`BAND_MAX` pixels there. Both paths give the same values up to float rounding.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

#: Side (px) and standard deviation (px) of the SSIM window (Wang et al. 2004).
KERNEL_SIZE = 11
KERNEL_SIGMA = 1.5
#: Largest side (px) filtered with band matrices; beyond it their size and the products' wasted work on
#: zeros grow too much, and a grouped 1-D convolution is used instead.
BAND_MAX = 1024
#: Float32 images on CPU whose larger side exceeds this (px) are filtered by grouped 1-D convolutions;
#: at and below it (64-px BAPPS patches) by band matrices, which are as fast there.
CONV_MIN = 96


def uses_convolution(height: int, width: int, dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether :func:`gaussian_filter_valid` filters a plane of this size, dtype and device by convolution."""
    side = max(int(height), int(width))
    if side > BAND_MAX:
        return True
    return torch.device(device).type == "cpu" and dtype == torch.float32 and side > CONV_MIN


def gaussian_window_1d(kernel_size: int = KERNEL_SIZE, sigma: float = KERNEL_SIGMA, *,
                       dtype: torch.dtype = torch.float64,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian whose outer product is the 2-D window (``fspecial``/piq).

    Built in float64 and then cast to ``dtype``, so every dtype gets the correctly rounded taps.

    Raises:
        ValueError: ``kernel_size`` is not a positive odd integer or ``sigma`` is not positive.
    """
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}.")
    coords = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def gaussian_window_2d(kernel_size: int = KERNEL_SIZE, sigma: float = KERNEL_SIGMA, *,
                       dtype: torch.dtype = torch.float64,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """The normalised ``(k, k)`` 2-D Gaussian window: the outer product of :func:`gaussian_window_1d`."""
    g = gaussian_window_1d(kernel_size, sigma, dtype=torch.float64)
    return torch.outer(g, g).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def band_matrix(n: int, kernel_size: int = KERNEL_SIZE, sigma: float = KERNEL_SIGMA,
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(n - k + 1, n)`` matrix whose product with a signal is its 'valid' correlation with the window.

    Row ``i`` holds the window at columns ``i .. i + k - 1``. Cached: BAPPS patches reuse a handful of
    sizes. The matrix is built outside inference mode, so that a matrix first made while scoring under
    ``torch.inference_mode()`` can later be used in a computation that autograd records.

    Raises:
        ValueError: the window is longer than the signal.
    """
    if n < kernel_size:
        raise ValueError(f"a side of {n} pixels is smaller than the {kernel_size}-px window.")
    with torch.inference_mode(False):
        g = gaussian_window_1d(kernel_size, sigma, dtype=dtype, device=device)
        m = torch.zeros(n - kernel_size + 1, n, dtype=dtype, device=device)
        # Stride n + 1 walks the diagonal: row i gets the window at columns i .. i + k - 1.
        m.as_strided((n - kernel_size + 1, kernel_size), (n + 1, 1)).copy_(g.expand(n - kernel_size + 1, -1))
    return m


def _conv_filter(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """'Valid' separable filtering of ``(N, C, H, W)`` with the 1-D window ``g`` by grouped convolutions.

    Along the contiguous width first, as the band-matrix path does.
    """
    n, c, h, w = t.shape
    k = g.numel()
    planes = t.reshape(1, n * c, h, w)
    out = F.conv2d(planes, g.view(1, 1, 1, k).expand(n * c, 1, 1, k), groups=n * c)
    out = F.conv2d(out, g.view(1, 1, k, 1).expand(n * c, 1, k, 1), groups=n * c)
    return out.reshape(n, c, h - k + 1, w - k + 1)


def gaussian_filter_valid(t: torch.Tensor, kernel_size: int = KERNEL_SIZE,
                          sigma: float = KERNEL_SIGMA) -> torch.Tensor:
    """'Valid' separable Gaussian filtering of every plane of ``t`` ``(N, C, H, W)``, in ``t``'s dtype.

    Returns:
        ``(N, C, H - k + 1, W - k + 1)``; equals a 2-D convolution with :func:`gaussian_window_2d` up to
        float rounding.
    """
    h, w = int(t.shape[-2]), int(t.shape[-1])
    if uses_convolution(h, w, t.dtype, t.device):
        return _conv_filter(t, gaussian_window_1d(kernel_size, sigma, dtype=t.dtype, device=t.device))
    rows = band_matrix(h, kernel_size, float(sigma), t.dtype, t.device)
    cols_t = band_matrix(w, kernel_size, float(sigma), t.dtype, t.device).T
    # Along the contiguous width first: one large matrix product, then a batched one.
    return rows @ (t @ cols_t)
