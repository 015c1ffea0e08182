"""The deep streams of SPIPS: squared differences of backbone features, split into two groups.

Section III-B of Lao & Yu: the ``L`` tapped layers of a pretrained CNN give per-layer maps
``(F_eval - F_ref)^2`` (eq. 6); layers ``1..L-2`` form the perceptual group (eq. 7), layers ``L-1`` and
``L`` the semantic group (eq. 8). Section III-C then applies ``ReLU(Conv(.))`` per group. Layers of one
group have different sizes, so each layer gets its own bias-free 1x1 convolution to one channel, and the
group's value is the sum of the per-layer spatial means (as LPIPS sums its layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class LayerHeads(torch.nn.Module):
    """One bias-free 1x1 convolution per tapped layer, with ReLU and spatial mean.

    Args:
        channels: channel count of each layer of the group.
        unit_features: whether the features were unit-normalised (sets the data-free initialisation).
        dropout: dropout probability on the difference maps in training mode (LPIPS uses 0.5);
            inactive in evaluation mode.

    Data-free initialisation: for unit-normalised features the squared difference summed over the
    channels is ``|a - b|^2 = 2 (1 - cos(a, b))`` in [0, 4]; weights ``1 / (4 L)`` for a group of ``L``
    layers make the group value the mean over its layers of ``(1 - cos) / 2``, in [0, 1] like the
    traditional maps' ``(1 - SSIM) / 2``, so equal stream weights compare like with like. (A channel
    mean, ``1 / C``, would shrink the deep streams by a factor ``C / 4`` of 16 to 128.) For raw features,
    which have no bound, the weights are the channel mean averaged over the layers, ``1 / (C L)``.
    """

    def __init__(self, channels: Sequence[int], *, unit_features: bool = True, dropout: float = 0.5) -> None:
        super().__init__()
        self.unit_features = unit_features
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv2d(int(c), 1, kernel_size=1, bias=False) for c in channels
        )
        self.dropout = torch.nn.Dropout(dropout) if dropout > 0 else torch.nn.Identity()
        self.reset_data_free()

    def reset_data_free(self) -> None:
        """The data-free initialisation described in the class docstring."""
        n_layers = len(self.convs)
        with torch.no_grad():
            for conv in self._conv_list():
                per_layer = 0.25 if self.unit_features else 1.0 / conv.in_channels
                conv.weight.fill_(per_layer / n_layers)

    def _conv_list(self) -> list[torch.nn.Conv2d]:
        return [c for c in self.convs if isinstance(c, torch.nn.Conv2d)]

    def clamp_nonnegative(self) -> None:
        """Keep the weights >= 0 (applied after each training step, as for LPIPS's lin layers)."""
        with torch.no_grad():
            for conv in self._conv_list():
                conv.weight.clamp_(min=0.0)

    def maps(self, diffs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``ReLU(Conv_l(Q_l))`` per layer, each ``(N, 1, H_l, W_l)``, >= 0, lower = more similar."""
        if len(diffs) != len(self.convs):
            raise ValueError(f"got {len(diffs)} difference maps for {len(self.convs)} layer heads.")
        # the weights in the differences' dtype (float32), also after .half() / .bfloat16() of the module
        return [torch.relu(F.conv2d(self.dropout(d), conv.weight.to(d.dtype)))
                for conv, d in zip(self._conv_list(), diffs, strict=True)]

    def forward(self, diffs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum over layers of the spatial mean of each layer's map: ``(N,)``, >= 0."""
        per_layer = [m.mean(dim=(1, 2, 3)) for m in self.maps(diffs)]
        return torch.stack(per_layer, 0).sum(0)


def feature_differences(f_dist: Sequence[torch.Tensor], f_ref: Sequence[torch.Tensor],
                        ) -> list[torch.Tensor]:
    """Per-layer squared differences ``(f_dist - f_ref)^2`` (eq. 6), float32 for a stable sum later."""
    return [((a.float() - b.float()) ** 2) for a, b in zip(f_dist, f_ref, strict=True)]


def split_layers(n_layers: int) -> tuple[list[int], list[int]]:
    """Indices of the perceptual (``1..L-2``) and semantic (``L-1, L``) layers, 0-based (eqs. 7-8)."""
    if n_layers < 3:
        raise ValueError(f"a backbone with {n_layers} tapped layers cannot be split; SPIPS needs at least 3.")
    return list(range(n_layers - 2)), [n_layers - 2, n_layers - 1]
