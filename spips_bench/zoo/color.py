"""Colour handling shared by the classical metrics: which channels a metric sees.

The official MATLAB scripts of SSIM, MS-SSIM and VIF run on ``rgb2gray`` of 8-bit images. MATLAB's
``rgb2gray`` weights the channels with the ITU-R BT.601 luma coefficients as stored in MATLAB
(0.298936021293775, 0.587043074451121, 0.114020904255103) and, on a ``uint8`` image, returns ``uint8``:
the luminance is rounded to one of 256 levels. That rounding moves SSIM by up to 1.3e-3 on the calibration
pairs, so it is part of the default mode ``"matlab-gray"``.

Modes (the ``color`` option of the classical metrics):

* ``"matlab-gray"``: MATLAB ``rgb2gray`` on 8-bit values, rounded to 8 bits (half away from zero, as
  MATLAB rounds). One channel.
* ``"y"``: BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, not rounded. One channel.
* ``"rgb"``: the three channels unchanged; a metric computes per channel and averages over channels
  (PSNR pools the squared error over all channels instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

ColorMode = Literal["matlab-gray", "y", "rgb"]

#: MATLAB ``rgb2gray`` weights (the first row of the inverse of MATLAB's NTSC matrix).
MATLAB_GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)
#: ITU-R BT.601 luma weights.
BT601_WEIGHTS = (0.299, 0.587, 0.114)

COLOR_MODES: tuple[str, ...] = ("matlab-gray", "y", "rgb")
GRAY_MODES: tuple[str, ...] = ("matlab-gray", "y")


def check_color_mode(mode: object, allowed: tuple[str, ...] = COLOR_MODES) -> str:
    """Return ``mode`` if it is one of ``allowed``; raise ``ValueError`` naming the choices otherwise."""
    if not isinstance(mode, str) or mode not in allowed:
        raise ValueError(f"color={mode!r} is not supported; choose one of {', '.join(map(repr, allowed))}.")
    return mode


def rgb_to_gray(x: torch.Tensor, mode: str = "matlab-gray") -> torch.Tensor:
    """Luminance of RGB images.

    Args:
        x: ``(N, 3, H, W)`` floating-point RGB in [0, 1].
        mode: ``"matlab-gray"`` (MATLAB ``rgb2gray`` of the 8-bit image, rounded to 8 bits) or ``"y"``
            (BT.601 luma, not rounded).

    Returns:
        ``(N, 1, H, W)`` luminance in [0, 1], same dtype as ``x``. In ``"matlab-gray"`` mode every value is
        a multiple of 1/255.

    Raises:
        ValueError: ``x`` does not have 3 channels in dimension 1, or ``mode`` is unknown.
    """
    import torch

    check_color_mode(mode, GRAY_MODES)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_gray expects (N, 3, H, W) RGB, got shape {tuple(x.shape)}.")
    weights = MATLAB_GRAY_WEIGHTS if mode == "matlab-gray" else BT601_WEIGHTS
    if mode == "y" or x.dtype == torch.float64:
        w = torch.tensor(weights, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        gray = (x * w).sum(dim=1, keepdim=True)
        return _round_8bit(gray) if mode == "matlab-gray" else gray
    # Lower precision: a float32 weighted sum is exact to ~3e-5 of a level, which decides MATLAB's
    # rounding except within that distance of a half level; those rare pixels are redone in float64.
    w32 = torch.tensor(weights, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    levels = (x.to(torch.float32) * w32).sum(dim=1, keepdim=True) * 255.0
    frac = levels - torch.floor(levels)
    near_tie = (frac - 0.5).abs() < 1e-3
    rounded = torch.floor(levels + 0.5)
    if bool(near_tie.any()):
        mask = near_tie[:, 0]
        rgb = x.permute(0, 2, 3, 1)[mask].to(torch.float64)  # (K, 3), only the near-tie pixels
        w64 = torch.tensor(weights, dtype=torch.float64, device=x.device)
        rounded[near_tie] = torch.floor(rgb @ w64 * 255.0 + 0.5).to(torch.float32)
    return (rounded.clamp_(0.0, 255.0) / 255.0).to(x.dtype)


def _round_8bit(gray: torch.Tensor) -> torch.Tensor:
    import torch

    # MATLAB's uint8 conversion rounds half away from zero and saturates to [0, 255].
    return torch.floor(gray * 255.0 + 0.5).clamp_(0.0, 255.0) / 255.0


def to_metric_channels(x: torch.Tensor, mode: str) -> torch.Tensor:
    """The channels a classical metric computes on: luminance ``(N, 1, H, W)`` or RGB ``(N, 3, H, W)``.

    Args:
        x: ``(N, 3, H, W)`` RGB in [0, 1].
        mode: one of :data:`COLOR_MODES`.
    """
    check_color_mode(mode)
    if mode == "rgb":
        return x
    return rgb_to_gray(x, mode)
