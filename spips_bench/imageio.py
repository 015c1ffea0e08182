"""Reading image files into the metric contract's tensors: RGB, float, [0, 1].

Grayscale, palette, RGBA and 16-bit files are converted, and the conversion is reported so that a
caller can record it. Corrupt, truncated, empty or non-image files raise :class:`ImageReadError`
naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spips_bench.errors import ImageReadError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LoadedImage:
    """An image as a float32 array ``(H, W, 3)`` in [0, 1], with what was done to get there."""

    array: np.ndarray
    path: Path
    conversion: str | None  # e.g. "L->RGB", "RGBA->RGB (alpha dropped)", "I;16->RGB (16-bit scaled)"

    def tensor(self) -> torch.Tensor:
        """``(3, H, W)`` float32 tensor."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.array.transpose(2, 0, 1)))


def read_image(path: str | os.PathLike[str], size: int | None = None) -> LoadedImage:
    """Read ``path`` as RGB in [0, 1].

    Args:
        path: PNG, JPEG, BMP or any format Pillow reads.
        size: if given, resize to ``size x size`` with PIL's bilinear filter (the BAPPS loader's rule).

    Raises:
        ImageReadError: the file is missing, empty, unreadable, truncated or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise ImageReadError(f"{p}: the file is empty (0 bytes); re-download or regenerate it.")
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            conversion: str | None = None
            rgb: Image.Image
            if mode == "RGB":
                rgb = im
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                arr16 = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if mode.startswith("I;16") or arr16.max() > 255 else 255.0
                gray = Image.fromarray(np.clip(arr16 / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
                rgb = gray.convert("RGB")
                conversion = f"{mode}->RGB (16-bit gray scaled to 8 bits)"
            elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                rgb = im.convert("RGBA").convert("RGB")
                conversion = f"{mode}->RGB (alpha dropped)"
            else:
                rgb = im.convert("RGB")
                conversion = f"{mode}->RGB"
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(rgb, dtype=np.float32) / 255.0
    except FileNotFoundError as exc:
        raise ImageReadError(f"{p}: no such file; check the path.") from exc
    except PermissionError as exc:
        raise ImageReadError(f"{p}: permission denied; make the file readable (chmod +r).") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{p}: not an image file Pillow can read; replace or remove it.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"{p}: corrupt or truncated image ({exc}); re-download or regenerate it.") from exc
    return LoadedImage(array=arr, path=p, conversion=conversion)
