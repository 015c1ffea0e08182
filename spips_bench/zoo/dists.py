"""DISTS: deep image structure and texture similarity (Ding et al., IEEE TPAMI 2020, arXiv:2004.07728).

A VGG16 trunk with L2 pooling in place of max pooling; for the input and each of five stages, per-channel
texture (global mean) and structure (global variance/covariance) similarities are combined with learned
non-negative weights ``alpha, beta`` (normalised to sum to one):
``D = 1 - sum_k sum_c [alpha_kc S1_kc + beta_kc S2_kc]``. Lower = more similar; 0 for identical images.

Inputs in [0, 1] are standardised with the ImageNet mean and std (DISTS's rule, not LPIPS's scaling).
The trunk is torchvision's ImageNet VGG16; alpha/beta come from the ``DISTS_pytorch`` wheel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from spips_bench import weights
from spips_bench.metric import Metric
from spips_bench.zoo.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRUNKS,
    follow_device,
    imagenet_features_state,
    parameter_dtype,
    vgg16_layers,
)

#: Stages end after VGG16's taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the ``"vgg"`` trunk's);
#: the input itself is stage 0, with 3 channels.
_VGG = TRUNKS["vgg"]
_TAPS = _VGG.taps
_CHANNELS = (3, *_VGG.channels)
_C1 = 1e-6
_C2 = 1e-6


class L2Pool(nn.Module):
    """L2 pooling: ``sqrt(blur(x^2) + 1e-12)`` with a 3x3 Hann window (the size-5 window minus its zero
    ends), stride 2, padding 1. Replaces VGG's max pooling in DISTS."""

    filter: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.hann_window(5, periodic=False, dtype=torch.float64)[1:-1]
        g = a[:, None] * a[None, :]
        g = (g / g.sum()).float()
        # not persistent: a fixed filter, not part of the VGG checkpoint
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            # x² overflows float16 on VGG activations, and 1e-12 underflows it (an infinite gradient of the
            # square root at 0): the pooling runs in float32 and returns the input's dtype.
            return self.forward(x.float()).to(x.dtype)
        out = F.conv2d(x * x, self.filter.to(x.dtype), stride=2, padding=1, groups=x.shape[1])
        return torch.sqrt(out + 1e-12)


class DISTS(Metric):
    """DISTS (Ding et al. 2020): structure and texture similarity of VGG16 features; lower = more similar."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, *, pretrained: bool = True, offline: bool | None = None) -> None:
        """Build DISTS.

        Args:
            pretrained: load torchvision's ImageNet VGG16; ``False`` leaves the trunk random (tests only;
                flagged ``trained=False``). alpha/beta are loaded either way.
            offline: forbid downloads (``None`` reads ``SPIPS_BENCH_OFFLINE``).
        """
        super().__init__()
        self.features_net = vgg16_layers(lambda c: (L2Pool(c),))[: _TAPS[-1] + 1].to(
            memory_format=torch.channels_last)  # the input's layout in features(): no per-call reorder
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.alpha = nn.Parameter(torch.empty(1, sum(_CHANNELS)), requires_grad=False)
        self.beta = nn.Parameter(torch.empty(1, sum(_CHANNELS)), requires_grad=False)
        if pretrained:
            state = imagenet_features_state(_VGG.weight, _Prefixed(self.features_net), offline=offline)
            weights.load_into(self.features_net, {k[len("features."):]: v for k, v in state.items()},
                              source=f"weight file {_VGG.weight!r}")
        ab = weights.load_state_dict("dists", offline=offline)
        ab = weights.remap_keys(ab, {"alpha": "alpha", "beta": "beta"}, source="weight file 'dists'")
        for key in ("alpha", "beta"):
            if ab[key].numel() != sum(_CHANNELS):
                raise weights.WeightsIntegrityError(
                    f"weight file 'dists': {key} has {ab[key].numel()} values, expected {sum(_CHANNELS)}.")
            getattr(self, key).data.copy_(ab[key].reshape(1, -1))
        self.features_net.requires_grad_(False)
        self.pretrained = pretrained
        self.eval()

    def variant(self) -> dict[str, Any]:
        """Without the ImageNet trunk (``pretrained=False``) only alpha/beta are loaded, untrained."""
        return {"weights": ((_VGG.weight,) if self.pretrained else ()) + ("dists",), "trained": self.pretrained}

    def features(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per stage (input first): ``(feature map, spatial mean, spatial variance)``, float32."""
        follow_device(self, x)
        h = ((x.float() - self.mean.float()) / self.std.float()).to(parameter_dtype(self.features_net))
        h = h.contiguous(memory_format=torch.channels_last)
        maps = [x.float()]
        for i, layer in enumerate(self.features_net):
            h = layer(h)
            if i in _TAPS:
                maps.append(h.float())
        out = []
        for f in maps:
            m = f.mean(dim=(2, 3), keepdim=True)
            v = (f - m).square().mean(dim=(2, 3))
            out.append((f, m.flatten(1), v))
        return out

    def compare(self, f_dist: Any, f_ref: Any) -> torch.Tensor:
        """Scores ``(N,)`` from two :meth:`features` results."""
        alpha, beta = self.alpha.float(), self.beta.float()  # float32 also after .half()
        w_sum = alpha.sum() + beta.sum()
        alphas = torch.split(alpha / w_sum, list(_CHANNELS), dim=1)
        betas = torch.split(beta / w_sum, list(_CHANNELS), dim=1)
        texture = []
        structure = []
        for (fx, mx, vx), (fy, my, vy), a, b in zip(f_dist, f_ref, alphas, betas, strict=True):
            s1 = (2 * mx * my + _C1) / (mx * mx + my * my + _C1)
            cov = (fx * fy).mean(dim=(2, 3)) - mx * my
            s2 = (2 * cov + _C2) / (vx + vy + _C2)
            texture.append((a * s1).sum(dim=1))
            structure.append((b * s2).sum(dim=1))
        return 1 - (torch.stack(texture).sum(dim=0) + torch.stack(structure).sum(dim=0))

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n = dist.shape[0]
        feats = self.features(torch.cat([dist, ref]))
        return self.compare([tuple(t[:n] for t in f) for f in feats], [tuple(t[n:] for t in f) for f in feats])


class _Prefixed(nn.Module):
    """Exposes a layer stack under ``features.*`` keys, torchvision's naming, for the key check."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features
