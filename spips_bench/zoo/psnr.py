"""Peak signal-to-noise ratio (PSNR), in decibels; higher = more similar.

The default mode matches scikit-image's ``peak_signal_noise_ratio`` on 8-bit RGB files with data range
255, the convention of the calibration values: the squared error is pooled over all pixels and all three
channels (one MSE per image, not a mean of per-channel PSNRs). On inputs in [0, 1] that is data range 1.0.
"""

from __future__ import annotations

from typing import Any

import torch

from spips_bench.metric import Metric
from spips_bench.zoo.color import check_color_mode, to_metric_channels
from spips_bench.zoo.grad import warn_if_not_differentiable


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """PSNR of each pair of a batch, pooled over channels and pixels.

    Args:
        x, y: ``(N, C, H, W)`` floating-point tensors of the same shape, values in ``[0, data_range]``.
        data_range: the peak value (1.0 for images in [0, 1], 255 for 8-bit values).

    Returns:
        ``(N,)`` PSNR in dB, in the dtype of ``x``; ``+inf`` where the images are identical, as in
        scikit-image (the MSE is exactly zero, so the ratio is unbounded).

    Raises:
        ValueError: shapes differ, the tensors are not 4-D, or ``data_range`` is not positive.
    """
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"psnr expects two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}.")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}.")
    # float64: the MSE of nearly identical images is a small difference of large sums.
    diff = x.to(torch.float64) - y.to(torch.float64)
    mse = diff.pow(2).mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(data_range**2 / mse)).to(x.dtype)


class PSNR(Metric):
    """Peak signal-to-noise ratio in dB (higher = more similar; +inf for identical images).

    Args:
        color: which channels are compared: ``"rgb"`` (default; squared error pooled over R, G and B as
            in scikit-image), ``"matlab-gray"`` (MATLAB ``rgb2gray``, rounded to 8 bits) or ``"y"``
            (BT.601 luma). See :mod:`spips_bench.zoo.color`.
        data_range: peak value of the inputs; 1.0 (default) for the contract's [0, 1] images, which
            equals data range 255 on the 8-bit values.

    Reference: Z. Wang, A. C. Bovik, "Mean squared error: love it or leave it?", IEEE Signal Processing
    Magazine 26(1), 2009, doi:10.1109/MSP.2008.930649.
    """

    def __init__(self, color: str = "rgb", data_range: float = 1.0) -> None:
        super().__init__()
        self.color = check_color_mode(color)
        if not isinstance(data_range, (int, float)) or not data_range > 0:
            raise ValueError(f"data_range must be a positive number, got {data_range!r}.")
        self.data_range = float(data_range)

    def variant(self) -> dict[str, Any]:
        """With ``color="matlab-gray"`` the 8-bit rounding makes the gradient zero."""
        return {"differentiable": self.color != "matlab-gray"}

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(N,)`` PSNR in dB of validated ``(N, 3, H, W)`` inputs in [0, 1]."""
        warn_if_not_differentiable(self, dist, ref, fix="color='rgb' (the default) or color='y'")
        return psnr(to_metric_channels(dist, self.color), to_metric_channels(ref, self.color),
                    data_range=self.data_range)

    def extra_repr(self) -> str:
        return f"color={self.color!r}, data_range={self.data_range}"
