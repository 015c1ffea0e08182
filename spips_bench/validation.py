"""Input validation for every metric, and the one parser for every ``--device`` option, in one place.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, range,
device or non-finite values) with the offending value and the fix. Never ``assert``: asserts vanish
under ``python -O``.

:func:`resolve_device` serves ``run``, ``score``, ``explain``, ``train`` and ``bench``. The accepted names
are ``auto`` (a CUDA GPU when one is visible, else the CPU), ``cpu``, ``cuda`` and ``cuda:N``. Anything
else, or a GPU this machine does not have, is a :class:`~spips_bench.errors.DeviceError` that says what is
wrong and which name to pass instead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spips_bench.errors import DeviceError

if TYPE_CHECKING:
    import torch

#: Values this far outside [0, 1] are still accepted, to absorb rounding in upstream conversions.
RANGE_TOLERANCE = 1e-6


def validate_image_batch(x: object, *, name: str = "input", min_size: int = 1) -> None:
    """Check one batch of images: a float tensor of shape ``(N, 3, H, W)`` with values in [0, 1].

    Args:
        x: the object to check.
        name: how the error message calls it (``"dist"``, ``"ref"``).
        min_size: the smallest height and width the metric accepts, in pixels.
    """
    _check_structure(x, name=name, min_size=min_size)
    _check_values(x, name=name)  # type: ignore[arg-type]


def _check_structure(x: object, *, name: str, min_size: int) -> None:
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; metrics take floating-point images in [0, 1]. "
            f"Convert with `{name}.float() / 255` for 8-bit images."
        )
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have 4 dimensions (N, 3, H, W), got shape {tuple(x.shape)}. "
            f"Add a batch dimension with `{name}.unsqueeze(0)` for a single image."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}).")
    if x.shape[1] != 3:
        raise ValueError(
            f"{name} must have 3 (RGB) channels in dimension 1, got {x.shape[1]} (shape {tuple(x.shape)}). "
            "Repeat a grayscale channel with `x.expand(-1, 3, -1, -1)`, drop alpha with `x[:, :3]`."
        )
    h, w = int(x.shape[2]), int(x.shape[3])
    if min(h, w) < min_size:
        raise ValueError(
            f"{name} is {h}x{w} pixels, smaller than this metric's minimum of {min_size}x{min_size}. "
            "Use larger images or upsample them first."
        )


def _check_values(x: torch.Tensor, *, name: str) -> None:
    import torch

    x = x.detach()  # the checks read values only; no autograd bookkeeping or warnings for losses
    # One pass for both bounds: a NaN or an infinity shows in them, and only then is it counted.
    low, high = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    lo, hi = float(low), float(high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); clean the input before scoring.")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = "divide by 255" if hi > 1.5 else "map [-1, 1] to [0, 1] with `(x + 1) / 2`"
        raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}], outside [0, 1]; {hint}.")


def validate_pair(dist: object, ref: object, *, min_size: int = 1) -> None:
    """Check a ``(dist, ref)`` pair: each a valid batch, same shape, dtype and device."""
    _check_structure(dist, name="dist", min_size=min_size)
    _check_structure(ref, name="ref", min_size=min_size)
    d: torch.Tensor = dist  # type: ignore[assignment]
    r: torch.Tensor = ref  # type: ignore[assignment]
    if d.shape != r.shape:
        raise ValueError(
            f"dist and ref must have the same shape, got {tuple(d.shape)} and {tuple(r.shape)}. "
            "Resize one image to the other's size first."
        )
    if d.device != r.device:
        raise ValueError(
            f"dist is on {d.device} and ref on {r.device}; move both to one device with `.to(device)`."
        )
    if d.dtype != r.dtype:
        raise TypeError(f"dist has dtype {d.dtype} and ref {r.dtype}; cast both to one dtype.")
    _check_values(d, name="dist")
    _check_values(r, name="ref")


# -- devices ---------------------------------------------------------------------------------------------

#: What ``--device`` accepts, for help texts and messages.
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
#: Names people type for a GPU; they get the hint that torch calls it ``cuda``.
_GPU_WORDS = ("gpu", "nvidia", "cuda0", "gpu0")


def resolve_device(requested: str, *, local_rank: int = 0, option: str = "--device") -> torch.device:
    """The ``torch.device`` that ``requested`` names on this machine.

    Args:
        requested: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (case and surrounding spaces ignored).
        local_rank: the process's rank on its node; plain ``"cuda"`` takes GPU ``local_rank % count``, so
            each ``torchrun`` process gets its own GPU.
        option: how messages name the option.

    Raises:
        DeviceError: ``requested`` is not one of the names above, names CUDA where none is visible, or
            names a GPU index this machine does not have.
    """
    import torch

    text = str(requested).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    kind, sep, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (sep and not (kind == "cuda" and index.isdigit())):
        hint = "; torch calls a GPU 'cuda'" if kind in _GPU_WORDS else ""
        raise DeviceError(f"{option} {requested!r} is not a device name{hint}. Use {DEVICE_NAMES} "
                          "(auto takes a GPU when one is visible, else the CPU).")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no NVIDIA GPU or driver is visible")
        raise DeviceError(f"{option} {requested}: no CUDA device here ({why}). Use {option} cpu, or {option} "
                          "auto to take a GPU only where there is one.")
    count = torch.cuda.device_count()
    number = int(index) if sep else local_rank % count
    if number >= count:
        raise DeviceError(f"{option} {requested}: this machine has {count} CUDA device(s), cuda:0 to "
                          f"cuda:{count - 1}. Use one of those, or {option} cuda for the first.")
    return torch.device("cuda", number)
