"""Reference implementations that ``spips-bench bench`` times and checks the zoo against.

Every peer does the same work as the zoo metric it is paired with (same colour path, same window,
same weights), so a throughput ratio measures the implementation, not a different computation:

* PSNR, SSIM, MS-SSIM on RGB against ``piq`` (``piq`` computes per RGB channel; the zoo metric is
  built with ``color="rgb"`` for the comparison);
* SSIM and MS-SSIM on BT.601 luma against ``pyiqa`` (``pyiqa`` converts to the Y of YIQ, which is the
  zoo's ``color="y"``; ``pyiqa`` computes in float64 and clamps the contrast-structure map at 0);
* LPIPS against ``lpips.LPIPS`` with the zoo metric's trunk copied into it and the wheel's linear
  weights on both sides;
* ST-LPIPS against ``pyiqa``'s ST-LPIPS network loaded, strictly, from the same checkpoint file the zoo
  metric reads (read with ``weights_only=True``; nothing is downloaded).

:func:`naive_ssim` and :func:`naive_ms_ssim` are the unoptimised references of the SSIM equivalence
check: a full 11 x 11 window per moment, float64, no mean shift, no separable filtering.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F

#: A scoring function ``(dist, ref) -> (N,)`` scores.
PairFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Peer:
    """A reference implementation paired with a zoo metric.

    Attributes:
        name: label in the report, e.g. ``"piq.ssim"``.
        fn: scores ``(dist, ref) -> (N,)`` on the contract's [0, 1] RGB inputs.
        ours_options: options for the zoo metric so both sides do the same work (e.g. ``color="rgb"``).
        path: what is compared, in words (colour path, weights).
        min_size: the smallest side the peer accepts (pixels).
    """

    name: str
    fn: PairFn
    ours_options: dict[str, Any]
    path: str
    min_size: int = 1


# -- unoptimised references ------------------------------------------------------------------------


def _window_2d(kernel_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    w = g[:, None] * g[None, :]
    return w / w.sum()


def _naive_maps(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps by the textbook formulas, one 2-D filtering per moment."""
    c = x.shape[1]
    w = _window_2d().to(x.device).expand(c, 1, 11, 11)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    return (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs, cs


def naive_ssim(dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image, float64, per channel then averaged; inputs ``(N, C, H, W)`` in [0, 1]."""
    ssim_map, _ = _naive_maps(dist.double(), ref.double())
    return ssim_map.mean(dim=(1, 2, 3))


def naive_ms_ssim(dist: torch.Tensor, ref: torch.Tensor, scales: int) -> torch.Tensor:
    """MS-SSIM per image, float64: product of per-scale means to the standard exponents (rescaled to
    their total when fewer than five scales are used), 2 x 2 averaging between scales (even sides)."""
    weights = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    used = [w * sum(weights) / sum(weights[:scales]) for w in weights[:scales]]
    x, y = dist.double(), ref.double()
    out = torch.ones(x.shape[0], x.shape[1], dtype=torch.float64, device=x.device)
    for j in range(scales):
        ssim_map, cs = _naive_maps(x, y)
        m = (ssim_map if j == scales - 1 else cs).mean(dim=(2, 3))
        out = out * torch.relu(m) ** used[j]
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out.mean(dim=1)


# -- peers -----------------------------------------------------------------------------------------


def classical_peers(metric: str, packages: tuple[str, ...] = ("piq", "pyiqa")) -> list[Peer]:
    """Peers of a classical metric (``psnr``, ``ssim``, ``ms-ssim``) from ``packages``; empty for others.

    Raises:
        ImportError: a requested package is not installed.
    """
    peers: list[Peer] = []
    if "piq" in packages:
        import piq

        if metric == "psnr":
            peers.append(Peer("piq.psnr", lambda d, r: piq.psnr(d, r, data_range=1.0, reduction="none"),
                              {"color": "rgb"}, "RGB, squared error pooled over channels"))
        elif metric == "ssim":
            peers.append(Peer("piq.ssim", lambda d, r: piq.ssim(d, r, data_range=1.0, reduction="none",
                                                                 downsample=False),
                              {"color": "rgb"}, "RGB per channel, no downsampling", min_size=11))
        elif metric == "ms-ssim":
            peers.append(Peer("piq.multi_scale_ssim",
                              lambda d, r: piq.multi_scale_ssim(d, r, data_range=1.0, reduction="none"),
                              {"color": "rgb", "combine": "product"},
                              "RGB per channel, 5 scales, product pooling", min_size=161))
    if "pyiqa" in packages and metric in ("ssim", "ms-ssim"):
        peers.extend(_pyiqa_ssim(ms=metric == "ms-ssim"))
    return peers


def _pyiqa_ssim(ms: bool) -> list[Peer]:
    from pyiqa.archs.ssim_arch import MS_SSIM, SSIM

    if ms:
        net: torch.nn.Module = MS_SSIM(downsample=False, test_y_channel=True, is_prod=True)
        return [Peer("pyiqa ms_ssim", _call(net), {"color": "y", "combine": "product"},
                     "BT.601 luma (YIQ Y), float64, 5 scales, product pooling", min_size=161)]
    net = SSIM(downsample=False, test_y_channel=True)
    return [Peer("pyiqa ssim", _call(net), {"color": "y"}, "BT.601 luma (YIQ Y), float64", min_size=11)]


def _call(net: torch.nn.Module) -> PairFn:
    net.eval()

    def fn(dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return net(dist, ref).reshape(-1)

    return fn


def lpips_peer(ours: torch.nn.Module, device: str = "cpu") -> Peer:
    """``lpips.LPIPS`` (alex, v0.1) with ``ours.trunk`` copied into its network, lin weights from its wheel.

    Raises:
        ValueError: ``ours`` is not an AlexNet LPIPS, or the copy does not cover every trunk tensor.
    """
    import warnings

    import lpips

    if getattr(ours, "net", None) != "alex":
        raise ValueError(f"the lpips peer needs the AlexNet LPIPS metric, got {ours!r}.")
    with warnings.catch_warnings():  # torchvision's notice about its deprecated 'pretrained' argument
        warnings.simplefilter("ignore", UserWarning)
        ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    _copy_trunk(cast(torch.nn.Module, ours.trunk), ref.net, "lpips.LPIPS")
    ref.eval().to(device)
    trained = "ImageNet" if getattr(ours, "trained", False) else "random (ImageNet weights absent)"
    return Peer("lpips.LPIPS", lambda d, r: ref(d, r, normalize=True).reshape(-1), {},
                f"AlexNet trunk: {trained}, copied into the peer; lin: lpips wheel v0.1", min_size=32)


def stlpips_peer(weight_path: str, device: str = "cpu") -> Peer:
    """pyiqa's ST-LPIPS (AlexNet) network, loaded strictly from ``weight_path`` (the file the zoo reads)."""
    from pyiqa.archs.stlpips_arch import STLPIPS

    from spips_bench import weights

    net = STLPIPS(pretrained=False, net="alex")
    state = dict(weights.load_file(weight_path))
    # The network holds its linear layers twice (``lin<k>`` and the list ``lins``, the same modules);
    # the checkpoint names only the first.
    for k in range(len(net.chns)):
        state[f"lins.{k}.model.1.weight"] = state[f"lin{k}.model.1.weight"]
    net.load_state_dict(state, strict=True)
    net.eval().to(device)
    return Peer("pyiqa stlpips", lambda d, r: net(d, r, normalize=True).reshape(-1), {},
                "shift-tolerant AlexNet + lin, one checkpoint file (stlpips-pytorch wheel)", min_size=21)


def _copy_trunk(trunk: torch.nn.Module, net: torch.nn.Module, label: str) -> None:
    """Copy ``features.<i>.*`` of a zoo trunk into ``slice<k>.<i>.*`` of an lpips-style network."""
    target = net.state_dict()
    bounds = (-1, *cast(Any, trunk).taps)
    copied = {}
    for key, value in trunk.state_dict().items():
        idx = int(key.split(".")[1])
        k = next(j for j in range(1, len(bounds)) if bounds[j - 1] < idx <= bounds[j])
        name = f"slice{k}.{key[len('features.'):]}"
        if name not in target or target[name].shape != value.shape:
            raise ValueError(f"{label}: trunk tensor {key} has no counterpart {name} of shape "
                             f"{tuple(value.shape)}; the architectures differ.")
        copied[name] = value
    missing = sorted(set(target) - set(copied))
    if missing:
        raise ValueError(f"{label}: the trunk does not cover {missing[:5]}; the architectures differ.")
    net.load_state_dict(copied, strict=True)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest ``|a - b|`` over finite entries (float64); ``nan`` if the shapes differ."""
    a, b = a.detach().double().cpu().reshape(-1), b.detach().double().cpu().reshape(-1)
    if a.shape != b.shape:
        return math.nan
    keep = torch.isfinite(a) & torch.isfinite(b)
    return float((a[keep] - b[keep]).abs().max()) if bool(keep.any()) else math.nan
