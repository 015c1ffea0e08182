"""LPIPS: the learned perceptual image patch similarity (Zhang et al., CVPR 2018, arXiv:1801.03924).

``d(x, y) = sum_l mean_hw( w_l . (u_l(x) - u_l(y))^2 )`` where ``u_l`` are the channel-unit-normalised
activations of trunk layer ``l`` and ``w_l >= 0`` the v0.1 linear weights. Lower = more similar; 0 for
identical images; typical values 0 to about 1.

Porting notes (against the ``lpips`` 0.1.4 package):

- Its checkpoints name the linear weights ``lin<k>.model.1.weight`` (a Dropout sits at ``model.0``); here
  they are mapped key by key and loaded strictly, so a model built without dropout cannot silently keep
  random weights, as ``strict=False`` loading allows in the reference.
- The spatial mean is taken before the 1x1 linear layer (the two commute); results agree to 2e-8.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from spips_bench import weights
from spips_bench.metric import Metric
from spips_bench.zoo.backbones import TRUNKS, Trunk, build_trunk, follow_device, parameter_dtype, unit_normalize

#: The v0.1 linear-weight file of each trunk (the trunk's own weight file is :data:`TRUNKS`'s).
_LIN_WEIGHTS = {"alex": "lpips-alex", "vgg": "lpips-vgg", "squeeze": "lpips-squeeze"}


def lin_state(state: dict[str, torch.Tensor], n_layers: int, *, source: str,
              ignore: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Map an LPIPS checkpoint's ``lin<k>.model.1.weight`` keys to ``<k>.weight`` of a ModuleList."""
    mapping = {f"lin{k}.model.1.weight": f"{k}.weight" for k in range(n_layers)}
    return weights.remap_keys(state, mapping, source=source, ignore=ignore)


class LinearHeadDistance(Metric):
    """Shared machinery of LPIPS-style metrics: a frozen trunk plus one non-negative 1x1 weight per layer.

    Subclasses build ``trunk`` and load ``lins``; this class implements scoring, the 2AFC fast path and
    the spatial map. Inputs are ``(N, 3, H, W)`` in [0, 1]; scores are ``(N,)`` float32, lower = more
    similar. The metric follows its input's device (the module moves to it on first use), and runs under
    ``torch.autocast`` (features are normalised and compared in float32).
    """

    def __init__(self, trunk: Trunk) -> None:
        super().__init__()
        self.trunk = trunk
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in trunk.channels)
        self.lins.requires_grad_(False)

    def _lin_weights(self) -> list[torch.Tensor]:
        """The per-layer linear weights as flat float32 vectors."""
        return [lin.weight.flatten().float() for lin in self.lins if isinstance(lin, nn.Conv2d)]

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        follow_device(self, x)
        dtype = parameter_dtype(self.trunk)  # float32, or what .half() / .bfloat16() made of the trunk
        return x if x.dtype == dtype else x.to(dtype)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised tapped activations of images ``x`` in [0, 1], float32, one per layer."""
        return self.features_from_trunk(self.trunk_features(x), x)

    def features_of(self, images: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """:meth:`features` of each batch of ``images``; one trunk pass over all of them where that is the
        faster (on CUDA, and on CPU for the trunks whose :attr:`~spips_bench.zoo.backbones.TrunkSpec.one_pass_cpu`
        says so), else one pass per batch."""
        spec = TRUNKS.get(self.trunk.name)
        if len(images) < 2 or not (images[0].device.type == "cuda" or (spec is not None and spec.one_pass_cpu)):
            return super().features_of(images)
        sizes = [int(x.shape[0]) for x in images]
        per_layer = [f.split(sizes) for f in self.features(torch.cat(list(images)))]
        return [list(parts) for parts in zip(*per_layer, strict=True)]

    def trunk_key(self) -> Hashable:
        """The trunk's :meth:`~spips_bench.zoo.backbones.Trunk.identity`: metrics on an equal trunk (LPIPS,
        ST-LPIPS and SPIPS on the same network and weights) share its activations in a run."""
        return self.trunk.identity()

    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's tapped activations of ``x``, in the trunk's dtype, before normalisation."""
        return self.trunk(self._prepare(x))  # type: ignore[no-any-return]

    def features_from_trunk(self, shared: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`features` from the tapped activations ``shared`` of ``x`` (:meth:`trunk_features`)."""
        follow_device(self, x)  # the linear weights, where another metric's trunk computed ``shared``
        return [unit_normalize(f.float()) for f in shared]

    def compare(self, f_dist: Any, f_ref: Any) -> torch.Tensor:
        """Scores ``(N,)`` from two :meth:`features` results (the 2AFC triplet fast path)."""
        # The mean over pixels is taken before the 1x1 weights (the two commute): the same number, far
        # fewer operations. The squares are summed over the pixels with `sum`: on channels_last maps
        # `linalg.vector_norm` over (H, W) took 8x longer. Always float32.
        device = f_dist[0].device.type
        with torch.autocast(device_type=device, enabled=False):
            terms = [
                ((fa - fb).square().sum(dim=(2, 3)) * w).sum(dim=1)
                / (fa.shape[2] * fa.shape[3])
                for fa, fb, w in zip(f_dist, f_ref, self._lin_weights(), strict=True)
            ]
            return torch.stack(terms).sum(dim=0)

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n = dist.shape[0]
        # one trunk pass over both halves: better batching than two passes
        feats = self.features(torch.cat([dist, ref]))
        return self.compare([f[:n] for f in feats], [f[n:] for f in feats])

    def spatial_map(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Per-pixel distance map ``(N, 1, H, W)``: each layer's weighted squared difference, bilinearly
        upsampled to the input size and summed; its spatial mean approximates :meth:`forward`."""
        from spips_bench.validation import validate_pair

        validate_pair(dist, ref, min_size=self.min_size)
        n = dist.shape[0]
        feats = self.features(torch.cat([dist, ref]))
        size = (int(dist.shape[2]), int(dist.shape[3]))
        with torch.autocast(device_type=dist.device.type, enabled=False):  # the map stays float32
            layers = [
                F.interpolate(F.conv2d((f[:n] - f[n:]).square(), w.view(1, -1, 1, 1)), size=size,
                              mode="bilinear", align_corners=False)
                for f, w in zip(feats, self._lin_weights(), strict=True)
            ]
        return torch.stack(layers).sum(dim=0)

    def train(self, mode: bool = True) -> LinearHeadDistance:
        # The trunk never leaves eval mode: nothing in it behaves differently in training, and keeping it
        # in eval guards against layers added later (dropout, batch norm).
        super().train(mode)
        self.trunk.eval()
        return self


class LPIPS(LinearHeadDistance):
    """LPIPS v0.1 (Zhang et al. 2018): ImageNet trunk + learned linear weights; lower = more similar."""

    def __init__(self, net: str = "alex", *, pretrained: bool = True, offline: bool | None = None) -> None:
        """Build LPIPS.

        Args:
            net: trunk: ``"alex"`` (default, the paper's recommended variant), ``"vgg"`` or ``"squeeze"``.
            pretrained: load torchvision's ImageNet trunk; ``False`` leaves it random (the linear weights
                are loaded either way), which is only meaningful for tests and is flagged ``trained=False``.
            offline: forbid downloads (``None`` reads ``SPIPS_BENCH_OFFLINE``).

        Raises:
            ValueError: unknown ``net``.
            WeightsUnavailableError: the ImageNet trunk is missing and cannot be downloaded.
        """
        if net not in _LIN_WEIGHTS:
            raise ValueError(f"LPIPS net={net!r} is not available; use one of {', '.join(_LIN_WEIGHTS)}.")
        super().__init__(build_trunk(net, pretrained=pretrained, offline=offline))
        self.net = net
        self.pretrained = pretrained
        wname = _LIN_WEIGHTS[net]
        source = f"weight file {wname!r}"
        state = weights.load_state_dict(wname, offline=offline)
        weights.load_into(self.lins, lin_state(state, len(self.trunk.channels), source=source), source=source)

    def variant(self) -> dict[str, Any]:
        """Without the ImageNet trunk (``pretrained=False``) only the linear weights are loaded, untrained."""
        trunk = (TRUNKS[self.net].weight,) if self.pretrained else ()
        return {"weights": (*trunk, _LIN_WEIGHTS[self.net]), "trained": self.pretrained}

    def extra_repr(self) -> str:
        return f"net={self.net!r}, trained={self.trained}"
