"""SPIPS, the Scene Perceived Image Perceptual Score (Lao & Yu), as a metric of the zoo.

score = l1 * mean(F_trad) + l2 * mean(F_percept) + l3 * mean(F_sem), with F_g = ReLU(Conv_g(Q_g)) and
l = softmax(three learned logits) (section III-D; eq. 12). Lower = more similar; 0 for identical images.
Every choice the paper leaves open is a named constructor option, documented in ``docs/spips.md``.

Created without a checkpoint, a SPIPS keeps its data-free initialisation and warns
(:class:`~spips_bench.errors.UntrainedHeadsWarning`, once per process and variant).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from spips_bench.errors import UntrainedHeadsWarning, WeightsIntegrityError
from spips_bench.io import sha256_file
from spips_bench.metric import Metric
from spips_bench.zoo.backbones import TRUNKS, unit_normalize
from spips_bench.zoo.spips.deep import (
    LayerHeads,
    check_head,
    clamp_head,
    feature_differences,
    head_convs,
    init_head,
    pixel_head,
    split_layers,
)
from spips_bench.zoo.spips.traditional import TraditionalMaps

STREAMS = ("traditional", "perceptual", "semantic")
#: The backbones: every trunk of :data:`spips_bench.zoo.backbones.TRUNKS` (which names its weight file).
BACKBONES = tuple(TRUNKS)
#: Smallest input side (px) of the deep streams alone: at least every backbone's own minimum.
DEEP_MIN_SIZE = 32
#: Options that change what the trained parameters mean; a checkpoint must agree on all of them.
CONFIG_KEYS = ("backbone", "streams", "feature_norm", "fusion", "color", "psnr_max_db", "ms_scales", "head",
               "head_channels")
#: What a checkpoint written before a key existed was trained with (its config lacks the key).
CONFIG_DEFAULTS: dict[str, Any] = {"head": "linear", "head_channels": None}
_ABLATIONS: dict[tuple[str, ...], str] = {("traditional", "perceptual"): "abla1",
                                          ("perceptual", "semantic"): "abla2"}


@dataclass
class SpipsFeatures:
    """Per-image features for the 2AFC fast path: the image (the traditional stream needs both images
    of a pair) and the backbone's tapped layers, already normalised as the metric is configured."""

    image: torch.Tensor
    layers: list[torch.Tensor]


class FusionMLP(torch.nn.Module):
    """Optional fusion head (``fusion="mlp"``): ``g(v) - g(0)``, ``g`` a two-layer MLP on the stream values.

    Subtracting ``g(0)`` keeps the score 0 for identical images. The data-free initialisation makes it
    equal to the equal-weight mean of the streams: the first ``S`` hidden units copy the stream values
    and the output averages them; the other hidden units start with small fixed-seed weights and zero
    output weight, so training can use them.
    """

    def __init__(self, n_streams: int, hidden: int = 32) -> None:
        super().__init__()
        if hidden < n_streams:
            raise ValueError(f"hidden={hidden} must be at least the number of streams ({n_streams}).")
        self.fc1 = torch.nn.Linear(n_streams, hidden)
        self.fc2 = torch.nn.Linear(hidden, 1)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(hidden, n_streams, generator=gen) * 0.1)
            self.fc1.weight[:n_streams] = torch.eye(n_streams)
            self.fc1.bias.zero_()
            self.fc2.weight.zero_()
            self.fc2.weight[0, :n_streams] = 1.0 / n_streams
            self.fc2.bias.zero_()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # in the dtype of v (float32 from SPIPS), also after .half() / .bfloat16() of the module
        w1, b1 = self.fc1.weight.to(v.dtype), self.fc1.bias.to(v.dtype)
        w2, b2 = self.fc2.weight.to(v.dtype), self.fc2.bias.to(v.dtype)
        g = F.linear(torch.relu(F.linear(v, w1, b1)), w2, b2)
        g0 = F.linear(torch.relu(b1), w2, b2).view(1, 1)
        return (g - g0).squeeze(1)


class SPIPS(Metric):
    """SPIPS (Lao & Yu): PSNR/SSIM/MS-SSIM maps plus perceptual and semantic deep-feature distances.

    Args:
        backbone: ``"alex"`` (default), ``"vgg"``, ``"squeeze"`` (torchvision ImageNet weights) or
            ``"alex-st"``, ``"vgg-st"`` (shift-tolerant trunks of ST-LPIPS).
        streams: which of ``"traditional"``, ``"perceptual"``, ``"semantic"`` to use (ablations drop one).
        feature_norm: ``"unit"`` (channel unit-normalisation before the squared difference, as LPIPS) or
            ``"plain"`` (raw features).
        fusion: ``"sum"`` (eq. 12: softmax-weighted sum of the stream means) or ``"mlp"``.
        color: traditional maps per RGB channel (``"rgb"``, the paper's 3-channel Q_psnr/Q_ssim) or on
            luminance (``"luma"``).
        psnr_max_db: PSNR (dB) at which the local PSNR map saturates to "no loss" (60).
        ms_scales: MS-SSIM scales kept as map channels (3; fits 41-px and larger inputs).
        dropout: dropout on the difference maps in training mode only (LPIPS trains with 0.5).
        pretrained: load the backbone's pretrained weights; ``False`` gives a random trunk (tests only).
        offline: forbid weight downloads (``None``: read ``SPIPS_BENCH_OFFLINE``).
        checkpoint: a trained SPIPS checkpoint (safetensors, or torch zip read with weights_only=True);
            without one the heads keep the data-free initialisation, :attr:`trained` is ``False`` and
            an :class:`~spips_bench.errors.UntrainedHeadsWarning` is issued (once per process and variant).
        head: the per-pixel heads of eqs. 9-11, one per stream (traditional) or per layer (deep streams):
            ``"linear"`` (default; a bias-free 1x1 convolution to one channel, weights >= 0, then ReLU) or
            ``"mlp"`` (a bias-free 1x1 convolution to ``head_channels`` channels, ReLU, a bias-free 1x1
            convolution to one channel with weights >= 0). Both start from the same scores.
        head_channels: hidden channels of the ``"mlp"`` head (8).

    Inputs are ``(N, 3, H, W)`` RGB in [0, 1], ``H, W >= 41``; the output is ``(N,)``, >= 0, lower = more
    similar, 0 for identical images.
    """

    def __init__(self, backbone: str = "alex", *, streams: tuple[str, ...] | list[str] = STREAMS,
                 feature_norm: str = "unit", fusion: str = "sum", color: str = "rgb",
                 psnr_max_db: float = 60.0, ms_scales: int = 3, dropout: float = 0.5,
                 pretrained: bool = True, offline: bool | None = None,
                 checkpoint: str | os.PathLike[str] | None = None, head: str = "linear",
                 head_channels: int = 8) -> None:
        super().__init__()
        check_head(head, head_channels)
        if backbone not in BACKBONES:
            raise ValueError(f"backbone={backbone!r} is not supported; choose one of {', '.join(BACKBONES)}.")
        streams = tuple(streams)
        if not streams or any(s not in STREAMS for s in streams) or len(set(streams)) != len(streams):
            raise ValueError(f"streams={streams!r}: give distinct names among {STREAMS}, at least one.")
        streams = tuple(s for s in STREAMS if s in streams)  # canonical order
        if feature_norm not in ("unit", "plain"):
            raise ValueError(f"feature_norm={feature_norm!r} is not supported; use 'unit' or 'plain'.")
        if fusion not in ("sum", "mlp"):
            raise ValueError(f"fusion={fusion!r} is not supported; use 'sum' or 'mlp'.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1).")
        self.backbone = backbone
        self.streams = streams
        self.feature_norm = feature_norm
        self.fusion = fusion
        self.head = head
        self.head_channels = head_channels
        self.pretrained = pretrained
        self.checkpoint_sha256: str | None = None
        self.checkpoint_path: Path | None = None

        self.traditional = TraditionalMaps(color=color, psnr_max_db=psnr_max_db, ms_scales=ms_scales)
        self.trad_head_out: torch.nn.Conv2d | None = None
        if "traditional" in streams:
            # trad_head: the convolution of eq. 9; trad_head_out: the MLP head's output layer
            self.trad_head, self.trad_head_out = head_convs(self.traditional.channels, head, head_channels)
        self.trunk: torch.nn.Module | None = None
        self.perceptual_layers: list[int] = []
        self.semantic_layers: list[int] = []
        if self._uses_trunk:
            from spips_bench.zoo.backbones import build_trunk

            self.trunk = build_trunk(backbone, pretrained=pretrained, offline=offline)
            self.trunk.requires_grad_(False)
            channels = list(self.trunk.channels)  # type: ignore[union-attr]
            self.perceptual_layers, self.semantic_layers = split_layers(len(channels))
            if "perceptual" in streams:
                self.perceptual = LayerHeads([channels[i] for i in self.perceptual_layers],
                                             unit_features=feature_norm == "unit", dropout=dropout,
                                             head=head, head_channels=head_channels)
            if "semantic" in streams:
                self.semantic = LayerHeads([channels[i] for i in self.semantic_layers],
                                           unit_features=feature_norm == "unit", dropout=dropout,
                                           head=head, head_channels=head_channels)
        self.logits = torch.nn.Parameter(torch.zeros(len(streams)))
        self.fusion_mlp = FusionMLP(len(streams)) if fusion == "mlp" else None
        self.reset_data_free()
        self.eval()
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        else:
            _warn_untrained(self)

    # -- configuration -----------------------------------------------------------------------------

    @property
    def _uses_trunk(self) -> bool:
        return "perceptual" in self.streams or "semantic" in self.streams

    def variant(self) -> dict[str, Any]:
        """Size, weight files and training state that the options and a loaded checkpoint determine.

        ``min_size``: :data:`DEEP_MIN_SIZE` (32 px, enough for every backbone), or more when the
        traditional stream's MS-SSIM scales need it (3 scales: 41 px). ``weights``: the backbone's file
        when a backbone is used and pretrained. ``trained``: whether a checkpoint was loaded.
        """
        min_size = max(DEEP_MIN_SIZE, self.traditional.min_size) if "traditional" in self.streams else DEEP_MIN_SIZE
        weights = (TRUNKS[self.backbone].weight,) if self._uses_trunk and self.pretrained else ()
        return {"min_size": min_size, "weights": weights, "trained": self.checkpoint_sha256 is not None}

    def config(self) -> dict[str, Any]:
        """The options that give the trained parameters their meaning (stored in every checkpoint).

        ``head_channels`` is ``None`` for the linear head, which has no hidden channels.
        """
        return {
            "backbone": self.backbone, "streams": list(self.streams), "feature_norm": self.feature_norm,
            "fusion": self.fusion, "color": self.traditional.color,
            "psnr_max_db": self.traditional.psnr_max_db, "ms_scales": self.traditional.ms_scales,
            "head": self.head, "head_channels": self.head_channels if self.head == "mlp" else None,
        }

    def reset_data_free(self) -> None:
        """Untrained initialisation: every stream a mean of [0, 1] maps, equal stream weights.

        The traditional head takes the channel mean of its K maps (weights ``1 / K``); the deep heads are
        set as :class:`~spips_bench.zoo.spips.deep.LayerHeads` describes. The ``"mlp"`` head starts equal
        to the linear one (:func:`~spips_bench.zoo.spips.deep.init_head`), so both score alike untrained.
        """
        with torch.no_grad():
            if "traditional" in self.streams:
                init_head(self.trad_head, self.trad_head_out, 1.0 / self.traditional.channels,
                          torch.Generator().manual_seed(0))
            for group in ("perceptual", "semantic"):
                if group in self.streams:
                    getattr(self, group).reset_data_free()
            self.logits.zero_()

    def clamp_nonnegative(self) -> None:
        """Keep the heads' sign constraint after a training step, so scores stay >= 0.

        Linear head: every 1x1 convolution weight >= 0 (the LPIPS training rule). MLP head: the output
        layer's weights >= 0; the first layer's are free (:func:`~spips_bench.zoo.spips.deep.clamp_head`).
        """
        with torch.no_grad():
            if "traditional" in self.streams:
                clamp_head(self.trad_head, self.trad_head_out)
            for group in ("perceptual", "semantic"):
                if group in self.streams:
                    getattr(self, group).clamp_nonnegative()

    @property
    def lambdas(self) -> torch.Tensor:
        """Stream weights ``softmax(logits)``: positive, summing to 1, in the order of :attr:`streams`."""
        return torch.softmax(self.logits.float(), dim=0)

    def head_parameters(self) -> list[torch.nn.Parameter]:
        """The learned parameters of SPIPS itself (everything but the backbone)."""
        return [p for n, p in self.named_parameters() if not n.startswith("trunk.")]

    # -- scoring ----------------------------------------------------------------------------------

    def features(self, x: torch.Tensor) -> SpipsFeatures:
        """Backbone features of one batch (normalised per ``feature_norm``) plus the image itself."""
        layers: list[torch.Tensor] = []
        if self.trunk is not None:
            from spips_bench.zoo.backbones import parameter_dtype

            # The trunk runs in its own dtype (float32, or what .half() / .bfloat16() made of it); the
            # features are normalised and compared in float32, where half precision would overflow.
            layers = [f.float() for f in self.trunk(x.to(parameter_dtype(self.trunk)))]
            if self.feature_norm == "unit":
                layers = [unit_normalize(f) for f in layers]
        return SpipsFeatures(image=x, layers=layers)

    def _traditional_map(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``ReLU(Conv_trad(Q_trad))`` (the MLP head: its output), ``(N, H, W)`` float32."""
        q = self.traditional(dist, ref)
        with torch.autocast(device_type=q.device.type, enabled=False):
            return pixel_head(q.float(), self.trad_head, self.trad_head_out)[:, 0]

    def stream_values(self, f_dist: SpipsFeatures, f_ref: SpipsFeatures) -> torch.Tensor:
        """Mean of each stream's map, ``(N, S)`` float32, >= 0 (columns in the order of :attr:`streams`)."""
        values: list[torch.Tensor] = []
        if "traditional" in self.streams:
            values.append(self._traditional_map(f_dist.image, f_ref.image).mean(dim=(1, 2)))
        if self._uses_trunk:
            diffs = feature_differences(f_dist.layers, f_ref.layers)
            for group, idx in (("perceptual", self.perceptual_layers), ("semantic", self.semantic_layers)):
                if group in self.streams:
                    head: LayerHeads = getattr(self, group)
                    with torch.autocast(device_type=diffs[0].device.type, enabled=False):
                        values.append(head([diffs[i] for i in idx]).float())
        return torch.stack(values, dim=1)

    def fuse(self, values: torch.Tensor) -> torch.Tensor:
        """Final score from the stream values ``(N, S)``: ``(N,)``."""
        if self.fusion_mlp is not None:
            with torch.autocast(device_type=values.device.type, enabled=False):
                return self.fusion_mlp(values.float())
        return (values * self.lambdas.to(values.device)).sum(dim=1)

    def compare(self, f_dist: SpipsFeatures, f_ref: SpipsFeatures) -> torch.Tensor:
        if not (isinstance(f_dist, SpipsFeatures) and isinstance(f_ref, SpipsFeatures)):
            raise TypeError("compare() takes two results of SPIPS.features(); got "
                            f"{type(f_dist).__name__} and {type(f_ref).__name__}.")
        return self.fuse(self.stream_values(f_dist, f_ref))

    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if self.trunk is None:
            return self.compare(SpipsFeatures(dist, []), SpipsFeatures(ref, []))
        # One backbone pass over both images: half the kernel launches of two passes.
        f = self.features(torch.cat([dist, ref], dim=0))
        n = dist.shape[0]
        f_dist = SpipsFeatures(dist, [t[:n] for t in f.layers])
        f_ref = SpipsFeatures(ref, [t[n:] for t in f.layers])
        return self.compare(f_dist, f_ref)

    def stream_maps(self, dist: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each stream's quality map ``(N, H, W)`` at the input size (for figures; lower = more similar).

        The traditional map is ``ReLU(Conv(Q_trad))``; a deep stream's map is the sum over its layers of
        ``ReLU(Conv_l(Q_l))`` resized bilinearly to ``H x W``, so its mean approximates the stream value.
        """
        h, w = int(dist.shape[-2]), int(dist.shape[-1])
        out: dict[str, torch.Tensor] = {}
        if "traditional" in self.streams:
            out["traditional"] = self._traditional_map(dist, ref)
        if self.trunk is not None:
            fd, fr = self.features(dist), self.features(ref)
            diffs = feature_differences(fd.layers, fr.layers)
            for group, idx in (("perceptual", self.perceptual_layers), ("semantic", self.semantic_layers)):
                if group in self.streams:
                    maps = getattr(self, group).maps([diffs[i] for i in idx])
                    up = [F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False) for m in maps]
                    out[group] = torch.stack(up, 0).sum(0)[:, 0]
        return out

    # -- checkpoints -------------------------------------------------------------------------------

    def trainable_state_dict(self, *, include_backbone: bool = False) -> dict[str, torch.Tensor]:
        """Parameters a checkpoint stores: the heads and logits, plus the backbone if it was tuned."""
        return {k: v for k, v in self.state_dict().items()
                if include_backbone or not k.startswith("trunk.")}

    def save_checkpoint(self, path: str | os.PathLike[str], *, include_backbone: bool = False,
                        extra: dict[str, str] | None = None) -> Path:
        """Write the trained parameters and :meth:`config` as a safetensors checkpoint."""
        from spips_bench.zoo.spips.checkpoint import save_checkpoint

        meta = {"include_backbone": str(bool(include_backbone)).lower(), **(extra or {})}
        return save_checkpoint(path, self.trainable_state_dict(include_backbone=include_backbone),
                               self.config(), meta)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Load trained parameters; afterwards :attr:`trained` is ``True`` and the file's SHA-256 recorded.

        Raises:
            WeightsIntegrityError: unsafe or unreadable file, a configuration that differs from this
                metric's, or missing/unexpected parameter names.
        """
        from spips_bench.zoo.spips.checkpoint import read_checkpoint

        p = Path(path)
        state, config, _ = read_checkpoint(p)
        if config is not None:
            mine = self.config()
            config = {**CONFIG_DEFAULTS, **config}  # written before head options existed: the linear head
            diff = {k: (config.get(k), mine[k]) for k in CONFIG_KEYS if config.get(k) != mine[k]}
            if diff:
                details = "; ".join(f"{k}: checkpoint {a!r}, metric {b!r}" for k, (a, b) in diff.items())
                match = _variant_name(config.get("backbone", "?"), config.get("streams", []))
                raise WeightsIntegrityError(
                    f"{p}: checkpoint was trained for a different SPIPS configuration ({details}). Create "
                    f"the matching metric (e.g. {match!r} with the same options) or use a checkpoint "
                    "trained for this one."
                )
        own = self.state_dict()
        heads = {k for k in own if not k.startswith("trunk.")}
        unexpected = sorted(k for k in state if k not in own)
        missing = sorted(heads - set(state))
        if unexpected or missing:
            raise WeightsIntegrityError(
                f"{p}: parameter names do not match {self.name}: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}. The file belongs to another model or configuration."
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise WeightsIntegrityError(
                    f"{p}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}."
                )
        self.load_state_dict(state, strict=False)
        self.checkpoint_path = p
        self.checkpoint_sha256 = sha256_file(p)  # marks the metric trained (variant())

    def extra_repr(self) -> str:
        status = f"trained ({self.checkpoint_sha256[:12]})" if self.checkpoint_sha256 else "untrained"
        return (f"name={self.name!r}, backbone={self.backbone!r}, streams={self.streams}, head={self.head!r}, "
                f"{status}")

    # -- trunk sharing (the runner computes one trunk pass per image for metrics with equal keys) ------

    def trunk_key(self) -> tuple[Any, ...] | None:
        """The backbone's :meth:`~spips_bench.zoo.backbones.Trunk.identity`, or ``None`` without a deep
        stream: SPIPS variants, LPIPS and ST-LPIPS on the same network and weights share its activations."""
        from spips_bench.zoo.backbones import Trunk

        return self.trunk.identity() if isinstance(self.trunk, Trunk) else None

    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's tapped activations of ``x``, in the backbone's dtype, before normalisation."""
        from spips_bench.zoo.backbones import Trunk, parameter_dtype

        if not isinstance(self.trunk, Trunk):
            raise NotImplementedError(f"{self.name} has no deep stream, so no trunk to share")
        out: list[torch.Tensor] = self.trunk(x.to(parameter_dtype(self.trunk)))
        return out

    def features_from_trunk(self, shared: list[torch.Tensor], x: torch.Tensor) -> SpipsFeatures:
        """:meth:`features` of ``x`` from its backbone activations ``shared`` (:meth:`trunk_features`)."""
        layers = [f.float() for f in shared]
        if self.feature_norm == "unit":
            layers = [unit_normalize(f) for f in layers]
        return SpipsFeatures(image=x, layers=layers)


#: Variants that have warned that they are untrained (once per process each).
_WARNED: set[str] = set()
#: Top-level packages whose frames the warning skips, so that it points at the code creating the metric.
_INTERNAL_PACKAGES = ("spips_bench", "pyiqa", "torch")


def _warn_untrained(metric: SPIPS) -> None:
    """Issue :class:`UntrainedHeadsWarning` for ``metric``'s variant unless it already did in this process.

    A variant counts as warned only once a warning was actually shown: a creation while the warning is
    ignored (the runner, ``train``) does not use up the one warning of a later creation by the user.
    """
    try:
        name = metric.name
    except (TypeError, ValueError):  # a subclass outside the registry that declares no name
        name = type(metric).__name__
    if name in _WARNED:
        return
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and _package(frame) in _INTERNAL_PACKAGES:
        frame = frame.f_back
        level += 1
    message = (f"{name}: its heads are untrained (data-free initialisation), so it does not score as a "
               f"trained SPIPS. Load trained heads with create_metric({name!r}, checkpoint=PATH) (CLI: "
               f"--checkpoint), or train them with `spips-bench train --metric {name}`.")
    if _filter_action(message, str(frame.f_globals.get("__name__", "")), frame.f_lineno) == "ignore":
        return
    _WARNED.add(name)
    warnings.warn(message, UntrainedHeadsWarning, stacklevel=level)


def _package(frame: Any) -> str:
    return str(frame.f_globals.get("__name__", "")).split(".")[0]


def _filter_action(message: str, module: str, lineno: int) -> str:
    """The action of the first entry of :data:`warnings.filters` that matches an UntrainedHeadsWarning."""
    for action, msg, category, mod, line in warnings.filters:
        if ((msg is None or msg.match(message)) and issubclass(UntrainedHeadsWarning, category)
                and (mod is None or mod.match(module)) and line in (0, lineno)):
            return str(action)
    return str(getattr(warnings, "defaultaction", "default"))  # no filter matches: the default action


def _variant_name(backbone: str, streams: Any) -> str:
    name = "spips" if backbone == "alex" else f"spips-{backbone}"
    tag = _ABLATIONS.get(tuple(s for s in STREAMS if s in tuple(streams)))
    return f"{name}-{tag}" if tag else name

