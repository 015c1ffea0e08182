"""Reference implementations that ``spips-bench bench`` times and checks the zoo against.

Every peer does the same work as the zoo metric it is paired with (same colour path, same window,
same weights), so a throughput ratio measures the implementation, not a different computation. Each
peer is registered in :data:`PEERS` under its report label; ``perf/targets.toml`` says which zoo metric
it is paired with:

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
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F

from spips_bench.zoo.backbones import slice_names
from spips_bench.zoo.filters import gaussian_window_2d

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


def _naive_maps(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps by the textbook formulas, one 2-D filtering per moment."""
    c = x.shape[1]
    w = gaussian_window_2d().to(x.device).expand(c, 1, 11, 11)

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


#: Builds a peer for a zoo metric instance on a device. Raises ImportError when its package is absent.
PeerFactory = Callable[[torch.nn.Module, str], Peer]


@dataclass(frozen=True)
class PeerEntry:
    """A registered peer: the reference package it needs (the start of its label, up to the first ``.`` or
    space: ``piq.ssim`` needs ``piq``) and how to build it."""

    package: str
    build: PeerFactory


#: Every peer, by its label in the report (``perf/targets.toml`` pairs the labels with zoo metrics).
PEERS: dict[str, PeerEntry] = {}


def _peer(label: str) -> Callable[[PeerFactory], PeerFactory]:
    def deco(factory: PeerFactory) -> PeerFactory:
        PEERS[label] = PeerEntry(re.split(r"[. ]", label, maxsplit=1)[0], factory)
        return factory

    return deco


def make_peer(label: str, ours: torch.nn.Module, device: str = "cpu") -> Peer:
    """Build the peer registered as ``label`` for the zoo metric ``ours``.

    Raises:
        KeyError: no peer has that label.
        ImportError: the peer's package is not installed.
        WeightsUnavailableError: the weight file both sides read is not on this machine.
    """
    return PEERS[label].build(ours, device)


@_peer("piq.psnr")
def _piq_psnr(ours: torch.nn.Module, device: str) -> Peer:
    import piq

    return Peer("piq.psnr", lambda d, r: piq.psnr(d, r, data_range=1.0, reduction="none"),
                {"color": "rgb"}, "RGB, squared error pooled over channels")


@_peer("piq.ssim")
def _piq_ssim(ours: torch.nn.Module, device: str) -> Peer:
    import piq

    return Peer("piq.ssim", lambda d, r: piq.ssim(d, r, data_range=1.0, reduction="none", downsample=False),
                {"color": "rgb"}, "RGB per channel, no downsampling", min_size=11)


@_peer("piq.multi_scale_ssim")
def _piq_ms_ssim(ours: torch.nn.Module, device: str) -> Peer:
    import piq

    return Peer("piq.multi_scale_ssim", lambda d, r: piq.multi_scale_ssim(d, r, data_range=1.0, reduction="none"),
                {"color": "rgb", "combine": "product"}, "RGB per channel, 5 scales, product pooling",
                min_size=161)


@_peer("pyiqa ssim")
def _pyiqa_ssim(ours: torch.nn.Module, device: str) -> Peer:
    from pyiqa.archs.ssim_arch import SSIM

    net = SSIM(downsample=False, test_y_channel=True)
    return Peer("pyiqa ssim", _call(net), {"color": "y"}, "BT.601 luma (YIQ Y), float64", min_size=11)


@_peer("pyiqa ms_ssim")
def _pyiqa_ms_ssim(ours: torch.nn.Module, device: str) -> Peer:
    from pyiqa.archs.ssim_arch import MS_SSIM

    net = MS_SSIM(downsample=False, test_y_channel=True, is_prod=True)
    return Peer("pyiqa ms_ssim", _call(net), {"color": "y", "combine": "product"},
                "BT.601 luma (YIQ Y), float64, 5 scales, product pooling", min_size=161)


def _call(net: torch.nn.Module) -> PairFn:
    net.eval()

    def fn(dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return net(dist, ref).reshape(-1)

    return fn


@_peer("lpips.LPIPS")
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


@_peer("pyiqa stlpips")
def _pyiqa_stlpips(ours: torch.nn.Module, device: str) -> Peer:
    """:func:`stlpips_peer` on the checkpoint file of the zoo metric ``ours`` (its card's weight file)."""
    from spips_bench import weights
    from spips_bench.errors import WeightsUnavailableError

    names = tuple(getattr(getattr(ours, "spec", None), "weights", ()))
    found = weights.locate(names[0]) if len(names) == 1 else None
    if found is None:
        raise WeightsUnavailableError(f"the pyiqa stlpips peer reads the checkpoint of {ours!r} (weight files "
                                      f"{list(names)}), which is not on this machine: pip install stlpips-pytorch.")
    return stlpips_peer(str(found[1]), device)


def _copy_trunk(trunk: torch.nn.Module, net: torch.nn.Module, label: str) -> None:
    """Copy ``features.<i>.*`` of a zoo trunk into ``slice<k>.<i>.*`` of an lpips-style network."""
    target = net.state_dict()
    names = slice_names(cast(Any, trunk))
    copied = {}
    for key, value in trunk.state_dict().items():
        name = names[key]
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
