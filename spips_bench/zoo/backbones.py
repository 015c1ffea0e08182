"""Frozen convolutional trunks whose tapped activations feed LPIPS, ST-LPIPS and SPIPS.

``build_trunk(name)`` returns a :class:`Trunk` for

- ``"alex"``, ``"vgg"``, ``"squeeze"``: torchvision's AlexNet, VGG16 and SqueezeNet 1.1 feature stacks
  with ImageNet weights (torchvision's files, resolved by :mod:`spips_bench.weights`);
- ``"alex-st"``, ``"vgg-st"``: the shift-tolerant trunks of ST-LPIPS (Ghildyal & Liu, ECCV 2022,
  arXiv:2207.13686): stride-1 convolutions and max-pools followed by reflect-padded [1, 2, 1] blur pooling,
  with the trained weights of the ST-LPIPS networks.

Layer indices are torchvision's ``features`` indices (the ST trunks keep the ST-LPIPS reference's indices),
so checkpoints map key by key, strictly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from spips_bench import weights

#: LPIPS v0.1 input scaling, applied after mapping [0, 1] to [-1, 1]: ``(x - SHIFT) / SCALE``.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
#: ImageNet per-channel mean and standard deviation of images in [0, 1] (torchvision's; DISTS's input rule).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Added to the channel norm before dividing (:func:`unit_normalize`), as LPIPS does, so that all-zero
#: features stay finite.
NORM_EPS = 1e-10

_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                     512, 512, 512, "M", 512, 512, 512, "M")


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect padding by 2, then a normalised [1, 2, 1]^2 blur.

    The layout of ST-LPIPS's ``Downsample(filt_size=3, pad_more=True)``; the filter is a buffer named
    ``filt`` so that the ST-LPIPS checkpoints load into it unchanged.
    """

    filt: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        k = a[:, None] * a[None, :]
        self.register_buffer("filt", (k / k.sum())[None, None].repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt.to(x.dtype), stride=2,
                        groups=x.shape[1])


def vgg16_layers(pool: Callable[[int], Sequence[nn.Module]]) -> nn.Sequential:
    """VGG16's convolution stack (configuration D) with ``pool(channels)`` at each pooling position."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.extend(pool(c_in))
        else:
            c_out = int(v)
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
    return nn.Sequential(*layers)


def _alexnet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
    )


def _squeezenet1_1() -> nn.Sequential:
    from torchvision.models.squeezenet import Fire

    def pool() -> nn.Module:
        return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)

    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True), pool(),
        Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
        Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(),
        Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
    )


def _alexnet_st() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=1, padding=2), BlurPool(64), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=1), BlurPool(64),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=1), BlurPool(192),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
    )


def _vgg16_st() -> nn.Sequential:
    return vgg16_layers(lambda c: (nn.MaxPool2d(kernel_size=2, stride=1), BlurPool(c)))


def _vgg16() -> nn.Sequential:
    return vgg16_layers(lambda c: (nn.MaxPool2d(kernel_size=2, stride=2),))


@dataclass(frozen=True)
class TrunkSpec:
    """How to build one trunk: architecture, tapped layer indices, channels, weight file.

    This table is the one statement of each trunk's facts: LPIPS, ST-LPIPS, DISTS and SPIPS read their
    taps, channels and trunk weight files from it.
    """

    build: Callable[[], nn.Sequential]
    taps: tuple[int, ...]
    channels: tuple[int, ...]
    weight: str
    shift_tolerant: bool
    #: Whether on CPU one pass over several batches at once (a 2AFC triplet's ref, p0 and p1: 48 images at
    #: batch 16) is faster than one pass per batch. True for the trunks whose first layer strides (AlexNet
    #: by 4, SqueezeNet by 2), whose maps stay small (1.3-1.5x seen at 64 px, 2 threads, on an AMD EPYC).
    #: False for VGG16 and the shift-tolerant trunks, whose first maps keep the full 64 px: there one pass
    #: over 48 images was slower than three over 16 (0.7-0.95x), its maps no longer fitting the cache.
    #: Only speed depends on it: the scores agree either way to float rounding. On CUDA one pass is always
    #: taken.
    one_pass_cpu: bool = False


TRUNKS: dict[str, TrunkSpec] = {
    "alex": TrunkSpec(_alexnet, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256), "alexnet", False, one_pass_cpu=True),
    "vgg": TrunkSpec(_vgg16, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), "vgg16", False),
    "squeeze": TrunkSpec(_squeezenet1_1, (1, 4, 7, 9, 10, 11, 12), (64, 128, 256, 384, 384, 512, 512),
                         "squeezenet1_1", False, one_pass_cpu=True),
    "alex-st": TrunkSpec(_alexnet_st, (2, 6, 10, 12, 14), (64, 192, 384, 256, 256), "stlpips-alex", True),
    "vgg-st": TrunkSpec(_vgg16_st, (3, 9, 17, 25, 33), (64, 128, 256, 512, 512), "stlpips-vgg", True),
}


def unit_normalize(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Divide each spatial position's feature vector by its L2 norm over the channels (dim 1), plus ``eps``."""
    # one fused reduction instead of square, sum and sqrt: 3x faster on channels_last maps
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)


def follow_device(module: nn.Module, x: torch.Tensor) -> None:
    """Move ``module`` to ``x``'s device if it lives elsewhere (metrics follow their inputs)."""
    ref = next(iter(module.buffers()), None)
    if ref is None:
        ref = next(iter(module.parameters()), None)
    if ref is not None and ref.device != x.device:
        # outside inference mode, so that the moved weights stay usable for training afterwards
        with torch.inference_mode(False):
            module.to(x.device)


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s floating parameters (float32 if it has none).

    It is what ``.half()``, ``.bfloat16()`` or ``.double()`` made of the module: a trunk runs in it, so
    its input is cast to it; what follows the trunk (normalisation, differences, pooling) runs in float32.
    """
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class Trunk(nn.Module):
    """A frozen feature stack that returns its tapped activations.

    Attributes:
        name: the trunk's name (a key of :data:`TRUNKS`).
        channels: channels of each tapped activation, in order.
        taps: ``features`` indices whose outputs are returned.
        features: the layers up to the last tap (torchvision's indices).
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, name: str, features: nn.Sequential, taps: tuple[int, ...],
                 channels: tuple[int, ...]) -> None:
        super().__init__()
        self.name = name
        self.taps = taps
        self.channels = channels
        # Weights stored channels_last once, matching the input layout of forward(); otherwise every
        # call would reorder them (load_state_dict and .to(device) keep this layout).
        self.features = features[: taps[-1] + 1].to(memory_format=torch.channels_last)
        self._tapset = frozenset(taps)
        #: (tensor states, digest) of the last :meth:`identity`; recomputed when a tensor changes
        self._identity_cache: tuple[tuple[Hashable, ...], str] | None = None
        # Non-persistent: constants, not learned, so they stay out of checkpoints.
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def identity(self) -> tuple[Hashable, ...]:
        """What makes two trunks compute equal features: class, name, taps, dtype, device and a digest.

        The digest is a SHA-256 of the layer stack's description and of every parameter and buffer
        (the non-persistent input scaling included): names, dtypes, shapes, strides and bytes. Two
        trunks with equal identities return equal activations for equal inputs, whether they loaded the
        same weight file or hold the same random initialisation. The digest is computed once and
        recomputed only when a tensor changed (moved, cast, or modified in place, e.g. by
        ``load_state_dict``), which each tensor's storage and version counter tell.
        """
        tensors = [*self.named_parameters(), *self.named_buffers()]
        state = tuple((name, t.data_ptr(), t.dtype, t.device, None if t.is_inference() else t._version)
                      for name, t in tensors)
        cached = self._identity_cache
        if cached is None or cached[0] != state or any(entry[-1] is None for entry in state):
            h = hashlib.sha256(repr(self.features).encode())
            for name, t in tensors:
                flat = t.detach().cpu().contiguous().reshape(-1)
                h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|{t.stride()}|".encode())
                h.update(flat.view(torch.uint8).numpy().tobytes())
            cached = (state, h.hexdigest())
            self._identity_cache = cached
        return (f"{type(self).__module__}.{type(self).__qualname__}", self.name, self.taps,
                str(parameter_dtype(self)), str(self.shift.device), cached[1])

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] to the trunk's input: ``(2x - 1 - shift) / scale`` (LPIPS v0.1)."""
        return (2 * x - 1 - self.shift) / self.scale

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Tapped activations of images ``x`` ``(N, 3, H, W)`` in [0, 1], shallow to deep."""
        # channels_last: oneDNN and cuDNN convolutions run faster on it (1.1-1.7x here on CPU), same numbers
        h = self.scale_input(x).contiguous(memory_format=torch.channels_last)
        out: list[torch.Tensor] = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self._tapset:
                out.append(h)
        return out


def imagenet_features_state(weight: str, expected: nn.Module, *,
                            offline: bool | None = None) -> dict[str, torch.Tensor]:
    """torchvision ImageNet ``features.*`` tensors of weight file ``weight``, checked against ``expected``.

    ``expected`` is a module whose ``state_dict()`` keys (``features.<i>.<param>``) must all be present in
    the file; the file's other ``features.*`` keys must belong to layers past the last one kept, and
    ``classifier.*`` is dropped on purpose (the trunks end before it).
    """
    state = weights.load_state_dict(weight, offline=offline)
    own = [k for k in expected.state_dict() if k.startswith("features.")]
    keep = max(int(k.split(".")[1]) for k in own)
    beyond = tuple(k for k in state if k.startswith("features.") and int(k.split(".")[1]) > keep)
    mapping = {k: k for k in own}
    return weights.remap_keys(state, mapping, source=f"weight file {weight!r}",
                              ignore=("classifier.", *beyond))


def slice_names(trunk: Trunk) -> dict[str, str]:
    """Each trunk tensor's key ``features.<i>.<param>`` -> ``slice<k>.<i>.<param>``, the naming of the LPIPS
    and ST-LPIPS reference networks, whose slice ``k`` ends at the trunk's tap ``k`` (1-based)."""
    bounds = (-1, *trunk.taps)
    names: dict[str, str] = {}
    for key in trunk.state_dict():
        idx = int(key.split(".")[1])
        k = next(j for j in range(1, len(bounds)) if bounds[j - 1] < idx <= bounds[j])
        names[key] = f"slice{k}.{key[len('features.'):]}"
    return names


def st_checkpoint_split(state: dict[str, torch.Tensor], trunk: Trunk, source: str) -> dict[str, torch.Tensor]:
    """The trunk part of an ST-LPIPS checkpoint, keys renamed ``net.slice<k>.<i>.*`` -> ``features.<i>.*``.

    The checkpoint's input-scaling buffers must equal LPIPS v0.1's constants (the trunk applies them
    itself); anything else than trunk, scaling and ``lin*`` keys is an error.
    """
    mapping = {f"net.{sliced}": key for key, sliced in slice_names(trunk).items()}
    for buf, const in (("scaling_layer.shift", LPIPS_SHIFT), ("scaling_layer.scale", LPIPS_SCALE)):
        if buf not in state or not torch.allclose(state[buf].flatten(), torch.tensor(const), atol=1e-7):
            raise weights.WeightsIntegrityError(
                f"{source}: {buf} is {state[buf].flatten().tolist() if buf in state else 'missing'}, "
                f"expected {list(const)}; this is not an ST-LPIPS v0.1-scaled checkpoint."
            )
    return weights.remap_keys(state, mapping, source=source, ignore=("lin", "scaling_layer."))


def build_trunk(name: str, *, pretrained: bool = True, offline: bool | None = None) -> Trunk:
    """Build a frozen trunk (eval mode, ``requires_grad=False``) on the CPU.

    Args:
        name: ``"alex"``, ``"vgg"``, ``"squeeze"`` (ImageNet trunks of LPIPS) or ``"alex-st"``,
            ``"vgg-st"`` (ST-LPIPS shift-tolerant trunks).
        pretrained: load the trained weights; ``False`` keeps PyTorch's random initialisation (for tests
            and for training from scratch).
        offline: forbid downloads (``None`` reads ``SPIPS_BENCH_OFFLINE``).

    Raises:
        ValueError: unknown ``name``.
        WeightsUnavailableError: the weights are missing and cannot be downloaded.
        WeightsIntegrityError: the weight file is corrupt or has an unexpected layout.
    """
    spec = TRUNKS.get(name)
    if spec is None:
        raise ValueError(f"unknown trunk {name!r}; choose one of {', '.join(TRUNKS)}.")
    trunk = Trunk(name, spec.build(), spec.taps, spec.channels)
    if pretrained:
        source = f"weight file {spec.weight!r}"
        if spec.shift_tolerant:
            state = st_checkpoint_split(weights.load_state_dict(spec.weight, offline=offline), trunk, source)
        else:
            state = imagenet_features_state(spec.weight, trunk, offline=offline)
        weights.load_into(trunk, state, source=source)
    return trunk
