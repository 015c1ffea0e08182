"""Visual information fidelity: the wavelet-domain VIF and the pixel-domain VIFp; higher = more similar.

``vif`` is the metric of Sheikh & Bovik (2006) as in their MATLAB release ``vifvec``: a steerable pyramid
(4 levels, 6 orientations, the ``sp5`` filters), a Gaussian scale mixture model of the reference in 3x3
neighbourhoods, a gain-plus-noise distortion channel per subband and visual noise variance 0.4. The
computation core is ``pyiqa``'s implementation (``pyiqa.archs.vif_arch``), which reproduces the official
values; it is imported only when a VIF score is computed. This module supplies the colour conversion,
the validation and the metric contract. ``pyiqa`` is an optional dependency: ``pip install
spips-bench[pyiqa]``.

``vifp`` is a different, simpler metric from the same authors: VIF computed in the pixel domain over four
Gaussian-filtered dyadic scales (``piq.vif_p``). On the calibration pair I03 the two differ by a factor of
about four (VIF 0.0172, VIFp 0.07), so the two are never interchangeable in a table.

VIF is not symmetric: it measures how much of the reference's information survives in the distorted image,
``vif(dist, ref)``. It is 1 for identical images and can exceed 1 for contrast-enhanced images.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from spips_bench.metric import Metric
from spips_bench.zoo.color import GRAY_MODES, check_color_mode, rgb_to_gray

#: Smallest side (px) on which the 4-level steerable pyramid can be built (its mirror padding needs a
#: side of more than 32 px at the coarsest level's input). Below 65 px the two coarsest subbands keep no
#: coefficient after the official border crop and add nothing to either sum, as in the MATLAB code: a
#: 64x64 BAPPS patch is scored on 6 of the 8 subbands.
VIF_MIN_SIZE = 33
#: Smallest side (px) from which all 8 subbands contribute.
VIF_FULL_SIZE = 65


def _pyiqa_vif_core() -> torch.nn.Module:
    try:
        from pyiqa.archs.vif_arch import VIF as _Core
    except ImportError as exc:  # pyiqa is an optional extra
        raise ImportError(
            "the wavelet-domain VIF needs the optional package pyiqa (its steerable-pyramid core); install it "
            "with `pip install spips-bench[pyiqa]`, or use the pixel-domain metric 'vifp' instead."
        ) from exc
    return _Core()


class VIF(Metric):
    """Wavelet-domain visual information fidelity (Sheikh & Bovik); higher = more similar, 1 at identity.

    Args:
        color: ``"matlab-gray"`` (default: MATLAB ``rgb2gray`` rounded to 8 bits, the official input) or
            ``"y"`` (BT.601 luma). The core works on 8-bit luminance levels: ``"y"`` is rounded to 8 bits
            too.

    The score is computed in float32 whatever the input dtype (the core's filters are float32); float32
    and float64 inputs give the same value. Not symmetric: call as ``vif(dist, ref)``.

    Reference: H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006,
    doi:10.1109/TIP.2005.859378.
    """

    name: ClassVar[str] = "vif"
    higher_is_better: ClassVar[bool] = True
    min_size: ClassVar[int] = VIF_MIN_SIZE
    symmetric: ClassVar[bool] = False
    citation: ClassVar[str] = "Sheikh & Bovik, IEEE TIP 2006, doi:10.1109/TIP.2005.859378"

    def __init__(self, color: str = "matlab-gray") -> None:
        super().__init__()
        self.color = check_color_mode(color, GRAY_MODES)
        self._core: torch.nn.Module | None = None

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(N,)`` VIF of validated ``(N, 3, H, W)`` inputs in [0, 1]."""
        if self._core is None:
            self._core = _pyiqa_vif_core()
        # The core expects RGB in [0, 1] and takes the YIQ luma rounded to 8 bits. A gray image repeated on
        # three channels has luma equal to itself (the YIQ weights sum to 1), so our luminance reaches the
        # core unchanged; rounding to 8-bit levels here makes "y" and "matlab-gray" both exact 8-bit input.
        g_dist = _as_8bit_rgb(rgb_to_gray(dist, self.color))
        g_ref = _as_8bit_rgb(rgb_to_gray(ref, self.color))
        out = self._core.vif(g_dist, g_ref)  # type: ignore[operator]
        return out.to(dist.dtype)

    def extra_repr(self) -> str:
        return f"color={self.color!r}"


def _as_8bit_rgb(gray: torch.Tensor) -> torch.Tensor:
    levels = torch.floor(gray.to(torch.float64) * 255.0 + 0.5) / 255.0
    return levels.to(torch.float32).expand(-1, 3, -1, -1).contiguous()


class VIFp(Metric):
    """Pixel-domain VIF (VIFp, ``piq.vif_p``): a different metric from wavelet VIF; higher = more similar.

    Four dyadic scales, Gaussian windows of 17, 9, 5 and 3 px, visual noise variance ``sigma_n_sq`` on
    8-bit levels. 1 for identical images.

    Args:
        color: ``"y"`` (default: BT.601 luma, what piq uses on RGB input) or ``"matlab-gray"``.
        sigma_n_sq: visual noise variance (8-bit levels squared); default 2.0 as in piq.

    Reference: H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006,
    doi:10.1109/TIP.2005.859378 (pixel-domain variant).
    """

    name: ClassVar[str] = "vifp"
    higher_is_better: ClassVar[bool] = True
    min_size: ClassVar[int] = 41  # piq's requirement: the 17-px window at the finest of four scales
    symmetric: ClassVar[bool] = False
    citation: ClassVar[str] = "Sheikh & Bovik, IEEE TIP 2006, doi:10.1109/TIP.2005.859378"

    def __init__(self, color: str = "y", sigma_n_sq: float = 2.0) -> None:
        super().__init__()
        self.color = check_color_mode(color, GRAY_MODES)
        if not isinstance(sigma_n_sq, (int, float)) or not sigma_n_sq > 0:
            raise ValueError(f"sigma_n_sq must be a positive number, got {sigma_n_sq!r}.")
        self.sigma_n_sq = float(sigma_n_sq)

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(N,)`` VIFp of validated ``(N, 3, H, W)`` inputs in [0, 1]."""
        import piq

        # piq's vif_p(x, y) treats y as the reference; float64 keeps its local variances exact.
        x = rgb_to_gray(dist, self.color).to(torch.float64)
        y = rgb_to_gray(ref, self.color).to(torch.float64)
        out = piq.vif_p(x, y, sigma_n_sq=self.sigma_n_sq, data_range=1.0, reduction="none")
        return out.to(dist.dtype)

    def extra_repr(self) -> str:
        return f"color={self.color!r}, sigma_n_sq={self.sigma_n_sq}"
