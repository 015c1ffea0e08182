"""Reading image files into the metric contract's tensors: RGB, float, [0, 1].

Every change made on the way is applied as an image viewer would and reported in
:attr:`LoadedImage.conversion`, so that a caller can record it:

* the EXIF orientation tag is applied (a photo is scored as it is displayed, not as it is stored);
* grayscale and palette files are replicated to RGB, alpha is dropped;
* 16-bit files (gray, RGB, RGBA: PNG, TIFF) keep their full precision: ``value / 65535``, never cut to
  their high byte;
* 32-bit float grayscale TIFFs are read as they are when every value is a finite number in [0, 1], and
  refused otherwise (a float image has no agreed white level to scale by).

Corrupt, truncated, empty or non-image files, and images over Pillow's decompression-bomb limit,
raise :class:`ImageReadError` naming the file.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spips_bench.errors import ImageReadError

if TYPE_CHECKING:
    import torch
    from PIL import Image

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> (PIL.Image.Transpose member name, what a viewer does); the table of the EXIF
# standard, the one PIL.ImageOps.exif_transpose applies.
_ORIENTATIONS: dict[int, tuple[str, str]] = {
    2: ("FLIP_LEFT_RIGHT", "mirrored left-right"),
    3: ("ROTATE_180", "rotated 180 degrees"),
    4: ("FLIP_TOP_BOTTOM", "mirrored top-bottom"),
    5: ("TRANSPOSE", "mirrored along the main diagonal"),
    6: ("ROTATE_270", "rotated 90 degrees clockwise"),
    7: ("TRANSVERSE", "mirrored along the anti-diagonal"),
    8: ("ROTATE_90", "rotated 90 degrees counter-clockwise"),
}
_RAW16 = re.compile(r"^(RGBA|RGB|LA);16([BLN])$")  # 16-bit colour raw modes Pillow decodes to 8 bits
_GRAY16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class LoadedImage:
    """An image as a float32 array ``(H, W, 3)`` in [0, 1], with what was done to get there."""

    array: np.ndarray
    path: Path
    conversion: str | None  # e.g. "L->RGB", "RGBA->RGB (alpha dropped)", "EXIF orientation 6: rotated ..."

    def tensor(self) -> torch.Tensor:
        """``(3, H, W)`` float32 tensor."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.array.transpose(2, 0, 1)))


def read_image(path: str | os.PathLike[str], size: int | None = None) -> LoadedImage:
    """Read ``path`` as RGB in [0, 1].

    Args:
        path: PNG, JPEG, BMP, TIFF or any format Pillow reads.
        size: if given, resize to ``size x size`` with PIL's bilinear filter (the BAPPS loader's rule),
            after the EXIF orientation is applied. 8-bit images are resized as 8-bit RGB (as BAPPS does);
            16-bit and float images channel by channel in 32-bit float, so no precision is lost.

    Raises:
        ImageReadError: the file is missing, empty, unreadable, truncated or not an image; it exceeds
            Pillow's decompression-bomb limit; a float image holds values outside [0, 1] or not finite;
            a 16-bit layout cannot be read at full precision.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise ImageReadError(f"{p}: the file is empty (0 bytes); re-download or regenerate it.")
        with Image.open(p) as im:
            array, notes = _decode(im, p, size)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{p}: no such file; check the path.") from exc
    except PermissionError as exc:
        raise ImageReadError(f"{p}: permission denied; make the file readable (chmod +r).") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(_bomb_message(p, exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{p}: not an image file Pillow can read; replace or remove it.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"{p}: corrupt or truncated image ({exc}); re-download or regenerate it.") from exc
    return LoadedImage(array=array, path=p, conversion="; ".join(notes) if notes else None)


def _bomb_message(p: Path, exc: Exception) -> str:
    numbers = [int(a or b) for a, b in re.findall(r"\((\d+) pixels\)|limit of (\d+)", str(exc))]
    what = f"{numbers[0]:,} pixels, over Pillow's limit of {numbers[1]:,}" if len(numbers) >= 2 else str(exc)
    return (f"{p}: image of {what} (PIL.Image.MAX_IMAGE_PIXELS); refused as a possible decompression "
            "bomb. Use a smaller image, or raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted")


def _decode(im: Image.Image, p: Path, size: int | None) -> tuple[np.ndarray, list[str]]:
    """Decode an opened image into ``(H, W, 3)`` float32 in [0, 1] and the list of conversions made."""
    from PIL import Image

    notes: list[str] = []
    raw = _rawmode(im)  # before loading, which empties the tiles
    mode = im.mode
    match = _RAW16.match(raw) if raw else None
    planes: list[np.ndarray] | None = None  # float32 channels, for 16-bit and float images
    rgb: Image.Image | None = None  # 8-bit RGB, for everything else
    if match:
        planes = _planes16(im, p, match.group(1), match.group(2))
        alpha = ", alpha dropped" if match.group(1) in ("RGBA", "LA") else ""
        gray = "->RGB (16-bit gray" if match.group(1) == "LA" else "->RGB (16-bit"
        notes.append(f"{match.group(1)};16{gray}, full precision{alpha})")
    else:
        im.load()  # first: decoding errors must surface here, not be swallowed while reading EXIF
        if mode == "RGB":
            rgb = im
        elif mode in _GRAY16_MODES or mode == "I":
            values = np.asarray(im)
            if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
                raise ImageReadError(
                    f"{p}: 32-bit integer image with values in [{values.min()}, {values.max()}], outside the "
                    "16-bit range 0..65535, so its white level is unknown; save it as an 8- or 16-bit image")
            planes = [values.astype(np.float32) / np.float32(65535.0)]
            notes.append(f"{mode}->RGB (16-bit gray, full precision)")
        elif mode == "F":
            values = np.asarray(im, dtype=np.float32)
            if values.size and not np.isfinite(values).all():
                raise ImageReadError(f"{p}: float image holds NaN or infinite values; fix or replace the file")
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
            if lo < 0.0 or hi > 1.0:
                raise ImageReadError(
                    f"{p}: float image with values in [{lo:g}, {hi:g}], outside [0, 1]; a float image is read "
                    "as it is, so save it scaled to [0, 1] (or as an 8- or 16-bit image)")
            planes = [values]
            notes.append("F->RGB (32-bit float gray in [0, 1])")
        elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            rgb = im.convert("RGBA").convert("RGB")
            notes.append(f"{mode}->RGB (alpha dropped)")
        else:
            rgb = im.convert("RGB")
            notes.append(f"{mode}->RGB")
    transpose = None
    orientation = _orientation(im)
    if orientation in _ORIENTATIONS:
        name, done = _ORIENTATIONS[orientation]
        transpose = getattr(Image.Transpose, name)
        notes.insert(0, f"EXIF orientation {orientation}: {done}")
    if rgb is not None:
        if transpose is not None:
            rgb = rgb.transpose(transpose)
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.float32) / 255.0, notes
    assert planes is not None
    out = []
    for plane in planes:
        f = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), "F")
        if transpose is not None:
            f = f.transpose(transpose)
        if size is not None and f.size != (size, size):
            f = f.resize((size, size), Image.Resampling.BILINEAR)
        out.append(np.asarray(f, dtype=np.float32))
    if len(out) == 1:
        out *= 3
    # Bilinear weights sum to one, but float rounding may step a hair outside [0, 1].
    return np.clip(np.stack(out, axis=2), 0.0, 1.0), notes


def _orientation(im: Image.Image) -> int | None:
    """The EXIF orientation of a loaded image, or None (no tag, or an EXIF block that cannot be parsed,
    which viewers ignore too)."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, struct.error):
        return None
    return value if isinstance(value, int) else None


def _rawmode(im: Image.Image) -> str | None:
    """The raw mode of the first tile (how the file stores its pixels), or None when it cannot be told."""
    tile = getattr(im, "tile", None)
    if not tile:
        return None
    args = tile[0][3]
    raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
    return raw if isinstance(raw, str) else None


def _planes16(im: Image.Image, p: Path, mode: str, order: str) -> list[np.ndarray]:
    """The channels of a 16-bit colour image at full precision, as float32 in [0, 1].

    Pillow has no 16-bit colour mode: it keeps the high byte of each sample. Decoding the file once as
    stored (high bytes) and once with the byte order swapped (low bytes) gives both halves; the
    unpacking is the last step of every decoder, so filtering and decompression are the same both times.
    """
    from PIL import Image

    native = "L" if sys.byteorder == "little" else "B"
    swapped = {"B": "L", "L": "B", "N": "B" if native == "L" else "L"}[order]
    im.load()
    high = np.asarray(im).astype(np.uint16)
    try:
        with Image.open(p) as again:
            again.tile = [_with_rawmode(t, f"{mode};16{swapped}") for t in again.tile]
            again.load()
            low = np.asarray(again).astype(np.uint16)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ImageReadError(
            f"{p}: 16-bit {mode} image that cannot be read at full precision here ({exc}); save it as "
            "16-bit RGB or gray without alpha, or as 8-bit") from exc
    if low.shape != high.shape:
        raise ImageReadError(f"{p}: 16-bit {mode} image decoded inconsistently; save it as 8-bit or 16-bit RGB")
    values = (high << 8) | low
    channels = 1 if mode == "LA" else 3
    return [values[..., c].astype(np.float32) / np.float32(65535.0) for c in range(channels)]


def _with_rawmode(tile: Any, raw: str) -> Any:
    args = tile[3]
    new = raw if isinstance(args, str) else (raw, *args[1:])
    return tile._replace(args=new) if hasattr(tile, "_replace") else (*tile[:3], new)
