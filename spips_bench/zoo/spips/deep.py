"""The deep streams of SPIPS: squared differences of backbone features, split into two groups.

Section III-B of Lao & Yu: the ``L`` tapped layers of a pretrained CNN give per-layer maps
``(F_eval - F_ref)^2`` (eq. 6); layers ``1..L-2`` form the perceptual group (eq. 7), layers ``L-1`` and
``L`` the semantic group (eq. 8). Section III-C then applies ``ReLU(Conv(.))`` per group. Layers of one
group have different sizes, so each layer gets its own per-pixel head (:func:`pixel_head`), and the
group's value is the sum of the per-layer spatial means (as LPIPS sums its layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: The per-pixel heads of eqs. 9-11 (``head=`` of :class:`LayerHeads` and of SPIPS).
HEADS = ("linear", "mlp")


def check_head(head: str, head_channels: int) -> None:
    """Validate the head options.

    Raises:
        ValueError: ``head`` is not one of :data:`HEADS` or ``head_channels`` is not a positive integer.
    """
    if head not in HEADS:
        raise ValueError(f"head={head!r} is not supported; use 'linear' or 'mlp'.")
    if isinstance(head_channels, bool) or not isinstance(head_channels, int) or head_channels < 1:
        raise ValueError(f"head_channels={head_channels!r} must be a positive integer (e.g. 8).")


def head_convs(in_channels: int, head: str, head_channels: int) -> tuple[torch.nn.Conv2d, torch.nn.Conv2d | None]:
    """The bias-free 1x1 convolutions of one per-pixel head: ``(first, out)``.

    ``"linear"``: ``first`` maps ``in_channels`` to one channel and ``out`` is ``None``. ``"mlp"``: ``first``
    maps to ``head_channels`` channels and ``out`` maps those to one channel.
    """
    if head == "linear":
        return torch.nn.Conv2d(int(in_channels), 1, kernel_size=1, bias=False), None
    return (torch.nn.Conv2d(int(in_channels), head_channels, kernel_size=1, bias=False),
            torch.nn.Conv2d(head_channels, 1, kernel_size=1, bias=False))


def pixel_head(q: torch.Tensor, first: torch.nn.Conv2d, out: torch.nn.Conv2d | None) -> torch.Tensor:
    """One per-pixel head on maps ``q`` ``(N, C, H, W)`` >= 0: ``(N, 1, H, W)``, >= 0, 0 where ``q`` is 0.

    Linear head: ``ReLU(w . q)`` (eqs. 9-11 with a convolution to one channel). MLP head:
    ``w2 . ReLU(W1 q)``, a two-layer perceptron applied at every pixel, with ``W1`` of either sign (so
    the ReLU acts) and ``w2 >= 0`` (kept so by :func:`clamp_head`). Neither convolution has a bias, so a
    zero map gives exactly 0 and identical images score 0. The weights are used in ``q``'s dtype
    (float32 in SPIPS), also after ``.half()`` / ``.bfloat16()`` of the module.
    """
    h = torch.relu(F.conv2d(q, first.weight.to(q.dtype)))
    return h if out is None else F.conv2d(h, out.weight.to(q.dtype))


def init_head(first: torch.nn.Conv2d, out: torch.nn.Conv2d | None, per_channel: float,
              generator: torch.Generator) -> None:
    """Data-free initialisation of one head: the linear head's weights ``per_channel`` on every channel.

    For the MLP head the first hidden unit carries those weights and the output weights are
    ``(1, 0, ..., 0)``: on maps >= 0 the first unit is never clipped, so the head equals the linear one.
    The other hidden units get weights ``per_channel * z`` (``z`` standard normal from ``generator``:
    fixed, no data) of either sign and output weight 0, so they contribute nothing until training
    raises their output weights.
    """
    with torch.no_grad():
        if out is None:
            first.weight.fill_(per_channel)
            return
        z = torch.randn(first.weight.shape, generator=generator, dtype=torch.float32)
        first.weight.copy_((z * per_channel).to(first.weight.dtype))
        first.weight[0].fill_(per_channel)
        out.weight.zero_()
        out.weight[0, 0] = 1.0


def clamp_head(first: torch.nn.Conv2d, out: torch.nn.Conv2d | None) -> None:
    """The sign constraint of a head, applied after each training step: the weights that meet the output.

    Linear head: ``w >= 0`` (the LPIPS rule for its lin layers). MLP head: ``w2 >= 0``; ``W1`` stays free,
    since the ReLU already makes its units >= 0. Either way the head's output stays >= 0.
    """
    with torch.no_grad():
        (first if out is None else out).weight.clamp_(min=0.0)


class LayerHeads(torch.nn.Module):
    """One per-pixel head per tapped layer (:func:`pixel_head`), with spatial mean.

    Args:
        channels: channel count of each layer of the group.
        unit_features: whether the features were unit-normalised (sets the data-free initialisation).
        dropout: dropout probability on the difference maps in training mode (LPIPS uses 0.5);
            inactive in evaluation mode.
        head: ``"linear"`` (a bias-free 1x1 convolution to one channel, then ReLU) or ``"mlp"`` (a
            bias-free 1x1 convolution to ``head_channels`` channels, ReLU, a bias-free 1x1 convolution
            to one channel with weights >= 0).
        head_channels: hidden channels of the ``"mlp"`` head.

    Parameters: ``convs.<l>.weight`` (the convolution applied to layer ``l``'s map, eqs. 10-11) and, for
    the MLP head, ``outs.<l>.weight`` (its output layer).

    Data-free initialisation: for unit-normalised features the squared difference summed over the
    channels is ``|a - b|^2 = 2 (1 - cos(a, b))`` in [0, 4]; weights ``1 / (4 L)`` for a group of ``L``
    layers make the group value the mean over its layers of ``(1 - cos) / 2``, in [0, 1] like the
    traditional maps' ``(1 - SSIM) / 2``, so equal stream weights compare like with like. (A channel
    mean, ``1 / C``, would shrink the deep streams by a factor ``C / 4`` of 16 to 128.) For raw features,
    which have no bound, the weights are the channel mean averaged over the layers, ``1 / (C L)``. The
    MLP head starts equal to the linear one (:func:`init_head`).
    """

    def __init__(self, channels: Sequence[int], *, unit_features: bool = True, dropout: float = 0.5,
                 head: str = "linear", head_channels: int = 8) -> None:
        super().__init__()
        check_head(head, head_channels)
        self.unit_features = unit_features
        self.head = head
        self.head_channels = head_channels
        pairs = [head_convs(int(c), head, head_channels) for c in channels]
        self.convs = torch.nn.ModuleList(first for first, _ in pairs)
        self.outs = torch.nn.ModuleList(out for _, out in pairs if out is not None) if head == "mlp" else None
        self.dropout = torch.nn.Dropout(dropout) if dropout > 0 else torch.nn.Identity()
        self.reset_data_free()

    def reset_data_free(self, seed: int = 0) -> None:
        """The data-free initialisation described in the class docstring (``seed``: the MLP's spare units)."""
        n_layers = len(self.convs)
        gen = torch.Generator().manual_seed(seed)
        for first, out in self._heads():
            per_layer = 0.25 if self.unit_features else 1.0 / first.in_channels
            init_head(first, out, per_layer / n_layers, gen)

    def _heads(self) -> list[tuple[torch.nn.Conv2d, torch.nn.Conv2d | None]]:
        firsts = [c for c in self.convs if isinstance(c, torch.nn.Conv2d)]
        if self.outs is None:
            return [(c, None) for c in firsts]
        outs = [c for c in self.outs if isinstance(c, torch.nn.Conv2d)]
        return list(zip(firsts, outs, strict=True))

    def clamp_nonnegative(self) -> None:
        """The heads' sign constraint (:func:`clamp_head`), applied after each training step."""
        for first, out in self._heads():
            clamp_head(first, out)

    def maps(self, diffs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each layer's head output (``ReLU(Conv_l(Q_l))`` for the linear head), each ``(N, 1, H_l, W_l)``,
        >= 0, lower = more similar."""
        if len(diffs) != len(self.convs):
            raise ValueError(f"got {len(diffs)} difference maps for {len(self.convs)} layer heads.")
        return [pixel_head(self.dropout(d), first, out)
                for (first, out), d in zip(self._heads(), diffs, strict=True)]

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
