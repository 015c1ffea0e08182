"""Input validation for every metric, in one place.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, range,
device or non-finite values) with the offending value and the fix. Never ``assert``: asserts vanish
under ``python -O``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); clean the input before scoring.")
    lo, hi = float(x.min()), float(x.max())
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
