"""Visual information fidelity: the wavelet-domain VIF and the pixel-domain VIFp; higher = more similar.

``vif`` is the metric of Sheikh & Bovik (2006) as in their MATLAB release ``vifvec.m``: a steerable
pyramid (4 levels, 6 orientations, the ``sp5`` filters, ``reflect1`` borders) of which two orientations
per level are used (8 subbands), a Gaussian scale mixture model of the reference on 3x3 blocks, a
gain-plus-noise distortion channel per subband estimated in box windows that grow towards the finer
levels, a border crop per subband, and visual noise variance 0.4 on 8-bit levels. The computation here
is an independent float64 port in PyTorch: batched, on the input's device, and differentiable where its
input is (see :class:`VIF`). The filter taps are read from ``pyrtools`` (the pyramid package of the
Simoncelli lab, :func:`pyrtools.steerable_filters`); the tests check the pyramid against
``pyrtools.pyramids.SteerablePyramidSpace`` and the scores against the official values.

Sizes: the official code refuses images below 72 px: ``buildSpyr``'s height check also counts the
residual lowpass, which needs the 9-tap ``lofilt`` to fit the coarsest level's input. VIF does not use
that residual. ``vif`` therefore extends the official code down to :data:`VIF_MIN_SIZE` = 49 px, the
smallest side on which every filter that a VIF subband depends on still fits the image it is applied to
(``corrDn``'s own condition): the subbands are computed exactly as the official code computes them, and
the unused residual is not computed. On 64x64 BAPPS patches the coarsest level's subbands are 8x8 (2x2
blocks) and the official border crop removes all of their blocks, so a 64-px patch is scored on 6 of the
8 subbands; from :data:`VIF_FULL_SIZE` = 65 px all 8 contribute (:func:`vif_subbands_used`).

``vifp`` is a different, simpler metric from the same authors: VIF computed in the pixel domain over four
Gaussian-filtered dyadic scales, as ``piq.vif_p`` computes it. :func:`vif_pixel` is an independent float64
port of ``piq.vif_p``: the same scales, windows, masks and pooling, with each Gaussian window applied as
two 1-D passes (products with small 'valid' band matrices), which is exact for the separable window and
much faster on CPU than a float64 2-D convolution; the tests check it equal to ``piq.vif_p`` within
1e-10. On the calibration pair I03 the two metrics differ by a factor of about four (VIF 0.0172, VIFp
0.07), so the two are never interchangeable in a table.

VIF is not symmetric: it measures how much of the reference's information survives in the distorted image,
``vif(dist, ref)``. It is 1 for identical images and can exceed 1 for contrast-enhanced images.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

from spips_bench.metric import Metric
from spips_bench.zoo.color import GRAY_MODES, check_color_mode, rgb_to_gray
from spips_bench.zoo.filters import gaussian_window_1d
from spips_bench.zoo.grad import warn_if_not_differentiable

#: Pyramid levels (``buildSpyr(im, 4, 'sp5Filters', 'reflect1')``).
VIF_LEVELS = 4
#: The two orientations of each level that ``vifvec.m`` uses (its subbands 4, 7, ... 25 are bands 1 and 4
#: of each level, 0-based 0 and 3 here).
VIF_BANDS = (0, 3)
#: Side of the GSM vectors' blocks (``M``).
VIF_BLOCK = 3
#: Visual noise variance on 8-bit levels (``sigma_nsq``).
VIF_SIGMA_NSQ = 0.4
#: ``vifsub_est_M.m``'s tolerance for zero variances.
VIF_TOL = 1e-15
#: Smallest side (px) on which every filter the VIF subbands depend on fits its input (module docstring).
VIF_MIN_SIZE = 49
#: Smallest side (px) from which all 8 subbands keep coefficients after the border crop.
VIF_FULL_SIZE = 65


def _level_sides(side: int) -> list[int]:
    """Side of each pyramid level's bands: ``corrDn(..., step=2)`` keeps ``ceil(n / 2)`` samples."""
    sides = [side]
    for _ in range(VIF_LEVELS - 1):
        sides.append((sides[-1] + 1) // 2)
    return sides


def _window(level: int) -> int:
    """Box window of the distortion-channel fit at pyramid level ``level`` (0 = finest): 17, 9, 5, 3 px.

    ``vifvec.m`` numbers its subbands from the coarsest, ``lev = ceil((sub - 1) / 6)`` = 4 - level, and
    uses ``2^lev + 1``.
    """
    return 2 ** (VIF_LEVELS - level) + 1


def _border(level: int) -> int:
    """Blocks cropped from each side of a subband's parameter maps: ``ceil(((win - 1) / 2) / M)``."""
    return math.ceil(((_window(level) - 1) // 2) / VIF_BLOCK)


def vif_subbands_used(height: int, width: int) -> int:
    """How many of the 8 subbands keep at least one block after the border crop at this image size."""
    used = 0
    for level, (h, w) in enumerate(zip(_level_sides(height), _level_sides(width), strict=True)):
        crop = 2 * _border(level)
        if h // VIF_BLOCK > crop and w // VIF_BLOCK > crop:
            used += len(VIF_BANDS)
    return used


@functools.lru_cache(maxsize=1)
def _sp5_factors() -> dict[str, tuple[tuple[torch.Tensor, torch.Tensor], ...]]:
    """The ``sp5`` filters VIF uses, each as a sum of separable terms ``sum_r outer(u_r, v_r)``.

    The taps are pyrtools' (the matlabPyrTools ``sp5Filters`` tables); like ``buildSpyrLevs``, a band
    filter is the column-major reshape of its column of ``bfilts``. Each 2-D filter is split by its SVD
    into its rank-1 terms (3 for ``lo0filt`` and the two bands, 5 for ``lofilt``; the dropped singular
    values are below 1e-16 of the largest), so that every correlation is two products with small matrices
    in float64 BLAS, several times faster on CPU than a float64 ``conv2d``.

    Raises:
        ImportError: pyrtools is not installed.
    """
    try:
        import pyrtools
    except ImportError as exc:  # a core dependency, but a broken environment deserves a clear message
        raise ImportError("the wavelet-domain VIF reads its steerable-pyramid filters from pyrtools; "
                          "install it with `pip install pyrtools`.") from exc
    with torch.inference_mode(False):  # cached: usable by autograd also when first built while scoring
        return _sp5_svd_terms(pyrtools.steerable_filters("sp5_filters"))


def _sp5_svd_terms(filters: dict) -> dict[str, tuple[tuple[torch.Tensor, torch.Tensor], ...]]:
    """The rank-1 terms of the ``sp5`` filters that VIF uses (see :func:`_sp5_factors`)."""
    bfilts = torch.as_tensor(filters["bfilts"], dtype=torch.float64)
    size = math.isqrt(bfilts.shape[0])
    named = {"lo0": torch.as_tensor(filters["lo0filt"], dtype=torch.float64),
             "lo": torch.as_tensor(filters["lofilt"], dtype=torch.float64)}
    for b in VIF_BANDS:
        named[f"band{b}"] = bfilts[:, b].reshape(size, size).T
    factors: dict[str, tuple[tuple[torch.Tensor, torch.Tensor], ...]] = {}
    for key, filt in named.items():
        u, s, vh = torch.linalg.svd(filt)
        rank = int((s > s[0] * 1e-13).sum())
        factors[key] = tuple((u[:, r] * s[r], vh[r]) for r in range(rank))
    return factors


#: Largest side (px) filtered with dense matrices (32 MB each in float64 at 2048 px); larger images use a
#: float64 ``conv2d``, slower on CPU but without matrices that grow quadratically.
_MATRIX_MAX = 2048
#: Matrices for sides up to this many samples are kept between calls (BAPPS patches: under 1 MB in all);
#: larger ones are rebuilt per call, which takes far less time than the products.
_CACHE_MAX = 256


def _corr_matrix(taps: tuple[float, ...], n: int, step: int, start: int, device: torch.device) -> torch.Tensor:
    """:func:`_build_corr_matrix`, cached for sides up to :data:`_CACHE_MAX`."""
    if n <= _CACHE_MAX:
        return _cached_corr_matrix(taps, n, step, start, device)
    return _build_corr_matrix(taps, n, step, start, device)


def _build_corr_matrix(taps: tuple[float, ...], n: int, step: int, start: int, device: torch.device) -> torch.Tensor:
    """``(n_out, n)`` float64 matrix of a 1-D ``corrDn`` with ``reflect1`` borders.

    Output ``i`` is the correlation with ``taps`` centred on sample ``start + step * i`` (taps of odd
    length ``k``, origin ``k // 2``); samples past a border are mirrored about the edge sample without
    repeating it (``reflect1``). ``n_out = (n - 1 - start) // step + 1``. Built outside inference mode, so
    that a cached matrix first made while scoring under ``torch.inference_mode()`` still serves a
    computation that autograd records.
    """
    k = len(taps)
    p = k // 2
    if p > n - 1:
        raise ValueError(f"a {k}-tap filter does not fit a side of {n} samples with reflect1 borders.")
    with torch.inference_mode(False):
        pos = torch.arange(-p, n + p).abs()
        pos = torch.where(pos > n - 1, 2 * (n - 1) - pos, pos)  # padded index -> image index
        n_out = (n - 1 - start) // step + 1
        rows = torch.arange(n_out)
        m = torch.zeros(n_out, n, dtype=torch.float64)
        for j, t in enumerate(taps):
            m.index_put_((rows, pos[start + step * rows + j]), torch.full((n_out,), t, dtype=torch.float64),
                         accumulate=True)
        return m.to(device)


_cached_corr_matrix = functools.lru_cache(maxsize=256)(_build_corr_matrix)


def _filter2d(x: torch.Tensor, terms: tuple[tuple[torch.Tensor, torch.Tensor], ...], *, step: int = 1,
              start: int = 0) -> torch.Tensor:
    """2-D ``corrDn`` of ``x`` ``(..., H, W)`` with the separable terms ``terms`` (see :func:`_corr_matrix`)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if max(h, w) > _MATRIX_MAX:
        # the same correlation as one 2-D kernel: mirror padding, then the windows from `start` on
        kernel = torch.stack([torch.outer(u, v) for u, v in terms]).sum(dim=0).to(x)
        p = kernel.shape[-1] // 2
        padded = F.pad(x.reshape(-1, 1, h, w), (p, p, p, p), mode="reflect")[..., start:, start:]
        out = F.conv2d(padded, kernel[None, None], stride=step)
        return out.reshape(*x.shape[:-2], *out.shape[-2:])
    parts = []
    for u, v in terms:
        rows = _corr_matrix(tuple(u.tolist()), h, step, start, x.device)
        cols = _corr_matrix(tuple(v.tolist()), w, step, start, x.device)
        parts.append(rows @ (x @ cols.T))
    return torch.stack(parts).sum(dim=0) if len(parts) > 1 else parts[0]


def steerable_subbands(img: torch.Tensor) -> list[torch.Tensor]:
    """The VIF subbands of the ``sp5`` steerable pyramid of ``img`` ``(N, 1, H, W)``, finest level first.

    Returns:
        one ``(N, 2, h_l, w_l)`` float64 tensor per level: orientations 1 and 4 of ``buildSpyr``
        (pyrtools bands 0 and 3), with ``h_l = ceil(h_{l-1} / 2)``. The residual highpass and lowpass,
        which VIF does not use, are not computed.
    """
    factors = _sp5_factors()
    low = _filter2d(img[:, 0].to(torch.float64), factors["lo0"])
    out: list[torch.Tensor] = []
    for level in range(VIF_LEVELS):
        out.append(torch.stack([_filter2d(low, factors[f"band{b}"]) for b in VIF_BANDS], dim=1))
        if level < VIF_LEVELS - 1:
            low = _filter2d(low, factors["lo"], step=2)
    return out


def _channel_params(y: torch.Tensor, yn: torch.Tensor, win: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``vifsub_est_M.m``: gain ``g`` and noise variance ``vv`` of the channel ``yn = g y + v`` per block.

    ``y, yn``: ``(B, 3h, 3w)`` subbands cropped to a multiple of the block size. The window statistics
    are taken at the block centres (``corrDn(..., [3 3], [2 2])``) with ``reflect1`` borders.
    """
    n = float(win * win)
    box = ((torch.full((win,), 1.0 / win, dtype=torch.float64), torch.full((win,), 1.0 / win,
                                                                          dtype=torch.float64)),)
    stack = torch.stack([y, yn, y * yn, y * y, yn * yn])
    mx, my, exy, exx, eyy = _filter2d(stack, box, step=VIF_BLOCK, start=VIF_BLOCK // 2).unbind(0)
    # The official sums: corrDn with the unnormalised window minus win^2 * mean * mean.
    cov = n * exy - n * mx * my
    ss_x = (n * exx - n * mx * mx).clamp(min=0.0)
    ss_y = (n * eyy - n * my * my).clamp(min=0.0)
    g = cov / (ss_x + VIF_TOL)
    vv = (ss_y - g * cov) / n
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    # The official corrections, in its order; where ss_x vanishes vv takes ss_y unnormalised, as there.
    flat_x = ss_x < VIF_TOL
    g = torch.where(flat_x, zero, g)
    vv = torch.where(flat_x, ss_y, vv)
    flat_y = ss_y < VIF_TOL
    g = torch.where(flat_y, zero, g)
    vv = torch.where(flat_y, zero, vv)
    negative = g < 0
    vv = torch.where(negative, ss_y, vv)
    g = torch.where(negative, zero, g)
    vv = vv.clamp(min=VIF_TOL)  # vv(vv <= tol) = tol
    return g, vv


def _reference_params(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``refparams_vecgsm.m``: the GSM field ``s`` per block and the eigenvalues of the 3x3-block covariance.

    ``C_U`` is the covariance (normalised by the count) of all overlapping 3x3 blocks; ``s`` is
    ``u^T C_U^-1 u / 9`` for the non-overlapping blocks ``u``. Returns ``(s (B, h, w), lambda (B, 9))``.
    """
    b, _, h, w = y.shape
    m = VIF_BLOCK
    patches = F.unfold(y, kernel_size=m)  # (B, 9, L): every block position, the same component order
    centred = patches - patches.mean(dim=2, keepdim=True)
    cu = centred @ centred.transpose(1, 2) / patches.shape[2]
    blocks = F.unfold(y, kernel_size=m, stride=m)  # (B, 9, h/3 * w/3), row-major blocks
    solved, info = torch.linalg.solve_ex(cu, blocks)
    if bool((info != 0).any()):
        # A singular covariance (a flat reference subband): the quadratic form on the covariance's range.
        solved = torch.where((info != 0).view(-1, 1, 1), torch.linalg.pinv(cu, hermitian=True) @ blocks,
                             solved)
    ss = (solved * blocks).sum(dim=1) / (m * m)
    lam = torch.linalg.eigvalsh(cu)
    return ss.reshape(b, h // m, w // m), lam


def vif_information(ref: torch.Tensor, dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Information terms of ``vifvec.m``: ``(num, den)``, each ``(N,)`` float64, VIF = ``num / den``.

    Args:
        ref, dist: ``(N, 1, H, W)`` luminance on the 8-bit scale (0 .. 255), ``H, W >= VIF_MIN_SIZE``.

    ``num`` sums ``log2(1 + g² s λ_j / (vv + σn²))`` and ``den`` sums ``log2(1 + s λ_j / σn²)`` over the
    eigenvalues ``λ_j`` and the blocks kept after each subband's border crop.
    """
    x = ref.to(torch.float64)
    y = dist.to(torch.float64)
    n = x.shape[0]
    # One pyramid pass over both images.
    levels = steerable_subbands(torch.cat([x, y], dim=0))
    num = x.new_zeros(n)
    den = x.new_zeros(n)
    m = VIF_BLOCK
    for level, bands in enumerate(levels):
        h, w = (bands.shape[-2] // m) * m, (bands.shape[-1] // m) * m
        o = _border(level)
        if h // m <= 2 * o or w // m <= 2 * o:
            continue  # the border crop leaves no block: the subband adds nothing to either sum
        # (2N, 2, h, w) -> (2N * 2, h, w): the two orientations are independent subbands
        crop = bands[..., :h, :w]
        sub_ref = crop[:n].reshape(n * len(VIF_BANDS), h, w)
        sub_dist = crop[n:].reshape(n * len(VIF_BANDS), h, w)
        g, vv = _channel_params(sub_ref, sub_dist, _window(level))
        ss, lam = _reference_params(sub_ref.unsqueeze(1))
        g, vv, ss = (t[:, o:-o, o:-o].unsqueeze(1) for t in (g, vv, ss))  # (B, 1, h', w')
        lam = lam.view(-1, lam.shape[1], 1, 1)  # (B, 9, 1, 1)
        info_dist = torch.log2(1.0 + g * g * ss * lam / (vv + VIF_SIGMA_NSQ)).sum(dim=(1, 2, 3))
        info_ref = torch.log2(1.0 + ss * lam / VIF_SIGMA_NSQ).sum(dim=(1, 2, 3))
        num = num + info_dist.view(n, len(VIF_BANDS)).sum(dim=1)
        den = den + info_ref.view(n, len(VIF_BANDS)).sum(dim=1)
    return num, den


class VIF(Metric):
    """Wavelet-domain visual information fidelity (Sheikh & Bovik); higher = more similar, 1 at identity.

    Args:
        color: ``"matlab-gray"`` (default: MATLAB ``rgb2gray`` rounded to 8 bits, the official input) or
            ``"y"`` (BT.601 luma, not rounded). The rounding of ``"matlab-gray"`` makes the gradient
            with respect to the images zero; ``"y"`` is differentiable.

    The core computes in float64 whatever the input dtype (float32 and float64 inputs give the same
    value) and returns the input's dtype. It reproduces the five official calibration values within
    their printed rounding (max deviation 3.8e-5, ``docs/porting-notes.md``).

    Sizes: images need at least 49 px per side. The official code needs more than 64 px (it refuses
    images below 72 px); on smaller images, such as 64-px BAPPS patches, ``vif`` builds the same
    subbands with the same filters and borders (every filter still fits its input), and the two
    subbands of the coarsest level keep no block after the official border crop: a 64-px patch is
    scored on 6 of the 8 subbands (module docstring). Not symmetric: call as ``vif(dist, ref)``. A
    reference without information in the used subbands (a flat image) gives ``den = 0`` and the score
    ``nan``.

    Reference: H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006,
    doi:10.1109/TIP.2005.859378.
    """

    def __init__(self, color: str = "matlab-gray") -> None:
        super().__init__()
        self.color = check_color_mode(color, GRAY_MODES)

    def variant(self) -> dict[str, Any]:
        """The 8-bit rounding of ``color="matlab-gray"`` (the card's default) makes the gradient zero."""
        return {"differentiable": self.color != "matlab-gray"}

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(N,)`` VIF of validated ``(N, 3, H, W)`` inputs in [0, 1]."""
        warn_if_not_differentiable(self, dist, ref, fix="color='y' (BT.601 luma, not rounded)")
        g_dist = rgb_to_gray(dist, self.color).to(torch.float64) * 255.0
        g_ref = rgb_to_gray(ref, self.color).to(torch.float64) * 255.0
        if self.color == "matlab-gray":
            # exact integer levels, also from float32 input (k / 255 is not exact there)
            g_dist, g_ref = torch.round(g_dist), torch.round(g_ref)
        num, den = vif_information(g_ref, g_dist)
        out = torch.where(den > 0, num / den.clamp(min=torch.finfo(torch.float64).tiny),
                          torch.full_like(den, math.nan))
        return out.to(dist.dtype)

    def extra_repr(self) -> str:
        return f"color={self.color!r}"


#: Dyadic scales of the pixel-domain VIF (``piq.vif_p``).
VIFP_SCALES = 4
#: ``piq.vif_p``'s stabilising constant: the variance thresholds of its masks and the pooling's offset.
VIFP_EPS = 1e-8
#: Mid-grey on the 8-bit scale, subtracted from both images before the local moments (:func:`vif_pixel`).
VIFP_CENTRE = 127.5
#: Smallest side (px) on which every 'valid' window of the four scales still fits (piq's minimum): at 41 px
#: the coarsest scale's 3-px window covers its 3-px input exactly once; at 40 px it no longer fits.
VIFP_MIN_SIZE = 41


def _vifp_window(scale: int) -> tuple[int, float]:
    """Side and standard deviation of the Gaussian window at ``scale`` (0 = finest): 17, 9, 5, 3 px, side / 5."""
    size = 2 ** (VIFP_SCALES - scale) + 1
    return size, size / 5


def _build_vifp_matrix(n: int, scale: int, step: int, device: torch.device) -> torch.Tensor:
    """``(ceil((n - k + 1) / step), n)`` float64 matrix of the 'valid' 1-D Gaussian filter of ``scale``.

    Row ``i`` holds the normalised window at columns ``step * i .. step * i + k - 1``: the 'valid'
    correlation followed by keeping every ``step``-th output (``[::2]``). Built outside inference mode, so
    that a cached matrix first made while scoring under ``torch.inference_mode()`` still serves a
    computation that autograd records.
    """
    size, sigma = _vifp_window(scale)
    with torch.inference_mode(False):
        g = gaussian_window_1d(size, sigma, dtype=torch.float64)
        n_out = (n - size) // step + 1
        m = torch.zeros(n_out, n, dtype=torch.float64)
        # Stride n + step walks the (strided) diagonal: row i gets the window from column step * i.
        m.as_strided((n_out, size), (n + step, 1)).copy_(g.expand(n_out, -1))
        return m.to(device)


_cached_vifp_matrix = functools.lru_cache(maxsize=128)(_build_vifp_matrix)


def _vifp_filter(t: torch.Tensor, scale: int, step: int = 1) -> torch.Tensor:
    """'Valid' Gaussian filtering of the planes of ``t`` ``(..., H, W)`` at ``scale``, keeping every ``step``-th.

    The 2-D window of ``piq.vif_p`` equals the outer product of the normalised 1-D Gaussian, so the filter
    is two 1-D passes, here products with band matrices (float64 BLAS). Sides above :data:`_MATRIX_MAX`
    use two float64 1-D convolutions instead.
    """
    h, w = int(t.shape[-2]), int(t.shape[-1])
    if max(h, w) > _MATRIX_MAX:
        size, sigma = _vifp_window(scale)
        g = gaussian_window_1d(size, sigma, dtype=t.dtype, device=t.device)
        planes = t.reshape(-1, 1, h, w)
        out = F.conv2d(F.conv2d(planes, g.view(1, 1, 1, size), stride=(1, step)), g.view(1, 1, size, 1),
                       stride=(step, 1))
        return out.reshape(*t.shape[:-2], *out.shape[-2:])
    build = _cached_vifp_matrix if max(h, w) <= _CACHE_MAX else _build_vifp_matrix
    rows = build(h, scale, step, t.device)
    cols = build(w, scale, step, t.device)
    # Along the contiguous width first: one large matrix product, then a batched one.
    return rows @ (t @ cols.T)


def vif_pixel(x: torch.Tensor, y: torch.Tensor, sigma_n_sq: float = 2.0) -> torch.Tensor:
    """Pixel-domain VIF of ``x`` against the reference ``y``: what ``piq.vif_p(x, y, data_range=1.0)`` computes.

    Args:
        x, y: ``(N, 1, H, W)`` gray images in [0, 1], ``H, W >= VIFP_MIN_SIZE``; computed in float64.
        sigma_n_sq: visual noise variance on 8-bit levels.

    Returns:
        ``(N,)`` float64 scores ``(sum x_info + eps) / (sum y_info + eps)``, summed over the four scales.
        At each scale (window :func:`_vifp_window`) the images are first filtered and subsampled by 2
        (scales > 0); the local moments are 'valid' Gaussian means, with ``piq``'s corrections in its
        order: negative variances to 0, the gain ``g = s_xy / (s_y + eps)``, ``g = 0`` and
        ``s_v = s_x`` where ``s_y < eps``, ``g = s_v = 0`` where ``s_x < eps``, ``s_v = s_x`` and ``g = 0``
        where ``g < 0``, and ``s_v`` at least ``eps``.

    The images are centred on :data:`VIFP_CENTRE` before filtering. The variances do not change (the
    windows sum to 1), but ``E[x²] - E[x]²`` cancels fewer digits. That matters next to flat regions,
    where the gain divides by variances just above ``eps``: against an 80-bit evaluation of the same
    formulas, the score's float64 rounding error there is about 4e-12 (piq's: 1e-11; 4e-11 without the
    centring) at 256 px, and below 1e-13 on natural images.

    Raises:
        ValueError: a side is below :data:`VIFP_MIN_SIZE`.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) < VIFP_MIN_SIZE:
        raise ValueError(f"VIFp needs images of at least {VIFP_MIN_SIZE}x{VIFP_MIN_SIZE} px (the minimum on "
                         f"which the windows of its four scales fit), got {h}x{w}.")
    eps = VIFP_EPS
    # (2, N, H, W): both images in one filtering call per scale, on the 8-bit scale as piq, centred on
    # mid-grey: the filters are normalised, so the variances are the same, with fewer digits cancelled
    pair = torch.stack([x[:, 0], y[:, 0]]).to(torch.float64) * 255.0 - VIFP_CENTRE
    zero = torch.zeros((), dtype=torch.float64, device=pair.device)
    x_vif = pair.new_zeros(pair.shape[1])
    y_vif = pair.new_zeros(pair.shape[1])
    for scale in range(VIFP_SCALES):
        if scale > 0:
            pair = _vifp_filter(pair, scale, step=2)
        xs, ys = pair.unbind(0)
        moments = _vifp_filter(torch.stack([xs, ys, xs * xs, ys * ys, xs * ys]), scale)
        mu_x, mu_y, e_xx, e_yy, e_xy = moments.unbind(0)
        sigma_x_sq = torch.relu(e_xx - mu_x * mu_x)
        sigma_y_sq = torch.relu(e_yy - mu_y * mu_y)
        sigma_xy = e_xy - mu_x * mu_y
        g = sigma_xy / (sigma_y_sq + eps)
        sigma_v_sq = sigma_x_sq - g * sigma_xy
        # piq's corrections, in its order
        y_ok = sigma_y_sq >= eps
        g = torch.where(y_ok, g, zero)
        sigma_v_sq = torch.where(y_ok, sigma_v_sq, sigma_x_sq)
        sigma_y_sq = torch.where(y_ok, sigma_y_sq, zero)
        x_ok = sigma_x_sq >= eps
        g = torch.where(x_ok, g, zero)
        sigma_v_sq = torch.where(x_ok, sigma_v_sq, zero)
        sigma_v_sq = torch.where(g >= 0, sigma_v_sq, sigma_x_sq)
        g = torch.relu(g)
        sigma_v_sq = torch.where(sigma_v_sq > eps, sigma_v_sq, torch.full_like(sigma_v_sq, eps))
        x_vif = x_vif + torch.log10(1.0 + g * g * sigma_y_sq / (sigma_v_sq + sigma_n_sq)).sum(dim=(1, 2))
        y_vif = y_vif + torch.log10(1.0 + sigma_y_sq / sigma_n_sq).sum(dim=(1, 2))
    return (x_vif + eps) / (y_vif + eps)


class VIFp(Metric):
    """Pixel-domain VIF (VIFp, as ``piq.vif_p``): a different metric from wavelet VIF; higher = more similar.

    Four dyadic scales, Gaussian windows of 17, 9, 5 and 3 px, visual noise variance ``sigma_n_sq`` on
    8-bit levels. 1 for identical images (within 1e-8: the pooling adds ``1e-8`` to both sums).

    The core (:func:`vif_pixel`) is an independent float64 port of ``piq.vif_p``: the same scales,
    windows, masks and pooling, each Gaussian window applied as two separable 1-D passes (band-matrix
    products), batched, on the input's device and differentiable; the tests check it equal to
    ``piq.vif_p`` within 1e-10 on random and natural images, flat images and images with flat regions.
    It computes in float64 whatever the input dtype and returns the input's dtype. Images need at least
    41 px per side (:data:`VIFP_MIN_SIZE`, piq's minimum).

    Args:
        color: ``"y"`` (default: BT.601 luma, what piq uses on RGB input) or ``"matlab-gray"``; the
            rounding of ``"matlab-gray"`` makes the gradient zero, ``"y"`` is differentiable.
        sigma_n_sq: visual noise variance (8-bit levels squared); default 2.0 as in piq.

    Reference: H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006,
    doi:10.1109/TIP.2005.859378 (pixel-domain variant).
    """

    def __init__(self, color: str = "y", sigma_n_sq: float = 2.0) -> None:
        super().__init__()
        self.color = check_color_mode(color, GRAY_MODES)
        if not isinstance(sigma_n_sq, (int, float)) or not sigma_n_sq > 0:
            raise ValueError(f"sigma_n_sq must be a positive number, got {sigma_n_sq!r}.")
        self.sigma_n_sq = float(sigma_n_sq)

    def variant(self) -> dict[str, Any]:
        """With ``color="matlab-gray"`` the 8-bit rounding makes the gradient zero."""
        return {"differentiable": self.color != "matlab-gray"}

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(N,)`` VIFp of validated ``(N, 3, H, W)`` inputs in [0, 1]."""
        warn_if_not_differentiable(self, dist, ref, fix="color='y' (BT.601 luma, not rounded)")
        # vif_pixel(x, y), like piq's vif_p(x, y), treats y as the reference; float64 keeps the local
        # variances exact.
        x = rgb_to_gray(dist, self.color).to(torch.float64)
        y = rgb_to_gray(ref, self.color).to(torch.float64)
        return vif_pixel(x, y, sigma_n_sq=self.sigma_n_sq).to(dist.dtype)

    def extra_repr(self) -> str:
        return f"color={self.color!r}, sigma_n_sq={self.sigma_n_sq}"
