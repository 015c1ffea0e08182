"""The image reader: EXIF orientation, 16-bit and float files at full precision, decompression bombs.

16-bit PNG files are written by a small encoder here (zlib and the five PNG row filters), so the test
does not depend on another image library to produce them; what they must decode to is known exactly.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from spips_bench.data.images import read_image
from spips_bench.errors import ImageReadError


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def write_png16(path: Path, values: np.ndarray) -> None:
    """Write ``values`` (``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint16) as a 16-bit PNG.

    Rows cycle through the filters None, Sub, Up, Average and Paeth, so decoding is checked with every
    filter, each of which works on whole pixels (6 or 8 bytes here, not 3 or 4).
    """
    h, w = values.shape[:2]
    channels = 1 if values.ndim == 2 else values.shape[2]
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = values.astype(">u2").reshape(h, w * channels).view(np.uint8).reshape(h, -1)
    bpp = 2 * channels
    out = bytearray()
    prev = np.zeros(rows.shape[1], dtype=np.int64)
    for y in range(h):
        raw = rows[y].astype(np.int64)
        kind = y % 5
        left = np.concatenate([np.zeros(bpp, np.int64), raw[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if kind == 0:
            filtered = raw
        elif kind == 1:
            filtered = raw - left
        elif kind == 2:
            filtered = raw - prev
        elif kind == 3:
            filtered = raw - (left + prev) // 2
        else:
            pred = np.array([_paeth(int(a), int(b), int(c)) for a, b, c in zip(left, prev, upleft, strict=True)])
            filtered = raw - pred
        out.append(kind)
        out += (filtered % 256).astype(np.uint8).tobytes()
        prev = raw
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(out)))
                     + _chunk(b"IEND", b""))


def _random16(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, shape).astype(np.uint16)


# -- 16-bit ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_colour_png_keeps_full_precision_and_is_reported(tmp_path: Path, channels: int) -> None:
    values = _random16((13, 11, channels))
    path = tmp_path / "deep.png"
    write_png16(path, values)
    with Image.open(path) as im:  # Pillow alone keeps only the high byte of each sample
        assert im.mode == ("RGB" if channels == 3 else "RGBA")
    loaded = read_image(path)
    # float32 holds k / 65535 to within half an ulp (< 3e-8); cutting to the high byte errs up to 1/256.
    np.testing.assert_allclose(loaded.array, values[..., :3] / 65535.0, rtol=0, atol=1e-7)
    assert loaded.conversion is not None and "16-bit" in loaded.conversion
    assert ("alpha dropped" in loaded.conversion) == (channels == 4)


def test_16_bit_gray_png_keeps_full_precision(tmp_path: Path) -> None:
    values = _random16((9, 14), seed=1)
    path = tmp_path / "gray.png"
    write_png16(path, values)
    loaded = read_image(path)
    np.testing.assert_allclose(loaded.array, np.repeat(values[..., None], 3, axis=2) / 65535.0, rtol=0, atol=1e-7)
    assert loaded.conversion is not None and loaded.conversion.startswith("I;16")
    assert "16-bit gray, full precision" in loaded.conversion


def test_16_bit_resize_is_bilinear_in_float(tmp_path: Path) -> None:
    values = _random16((20, 24, 3), seed=2)
    path = tmp_path / "deep.png"
    write_png16(path, values)
    loaded = read_image(path, size=16)
    assert loaded.array.shape == (16, 16, 3)
    for c in range(3):
        plane = Image.fromarray((values[..., c] / 65535.0).astype(np.float32), "F")
        expected = np.asarray(plane.resize((16, 16), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(loaded.array[..., c], expected, rtol=0, atol=1e-6)


def test_16_bit_rgb_tiff_keeps_full_precision(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    values = _random16((10, 12, 3), seed=3)
    for compression in (None, "zlib"):
        path = tmp_path / f"deep-{compression}.tif"
        tifffile.imwrite(path, values, compression=compression)
        loaded = read_image(path)
        np.testing.assert_allclose(loaded.array, values / 65535.0, rtol=0, atol=1e-7)
        assert loaded.conversion is not None and "16-bit" in loaded.conversion


# -- float ---------------------------------------------------------------------------------------------------


def test_float_tiff_in_unit_range_is_read_as_is(tmp_path: Path) -> None:
    values = np.random.default_rng(4).random((8, 10)).astype(np.float32)
    values[0, 0], values[0, 1] = 0.0, 1.0
    path = tmp_path / "f.tif"
    Image.fromarray(values, "F").save(path)
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.array, np.repeat(values[..., None], 3, axis=2))
    assert loaded.conversion == "F->RGB (32-bit float gray in [0, 1])"


@pytest.mark.parametrize(("value", "pattern"), [(255.0, r"values in \[0, 255\], outside \[0, 1\]"),
                                                (-0.5, r"outside \[0, 1\]"), (np.nan, "NaN or infinite"),
                                                (np.inf, "NaN or infinite")])
def test_float_tiff_outside_unit_range_is_refused(tmp_path: Path, value: float, pattern: str) -> None:
    values = np.full((4, 4), 0.5, dtype=np.float32)
    values[1, 2] = value
    if value == 255.0:
        values[0, 0] = 0.0
    path = tmp_path / "f.tif"
    Image.fromarray(values, "F").save(path)
    with pytest.raises(ImageReadError, match=pattern) as info:
        read_image(path)
    assert str(path) in str(info.value)


# -- EXIF orientation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_do(tmp_path: Path, orientation: int) -> None:
    pixels = np.random.default_rng(orientation).integers(0, 256, (10, 16, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"  # lossless, so the comparison is exact
    Image.fromarray(pixels).save(path, exif=exif)
    with Image.open(path) as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.float32) / 255
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.array, shown)
    if orientation == 1:
        assert loaded.conversion is None
    else:
        assert loaded.conversion is not None and loaded.conversion.startswith(f"EXIF orientation {orientation}: ")
        assert loaded.array.shape[:2] == ((16, 10) if orientation >= 5 else (10, 16))


def test_exif_orientation_of_a_jpeg_photo(tmp_path: Path) -> None:
    # A portrait photo stored landscape with orientation 6, compared with the picture as displayed.
    rng = np.random.default_rng(7)
    upright = np.clip(rng.normal(128, 40, (24, 16, 3)), 0, 255).astype(np.uint8)
    stored = np.rot90(upright, k=1)  # what the camera wrote; viewers turn it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=100, subsampling=0)
    loaded = read_image(path)
    assert loaded.array.shape == (24, 16, 3)
    assert loaded.conversion == "EXIF orientation 6: rotated 90 degrees clockwise"
    assert np.abs(loaded.array - upright / 255).mean() < 0.02  # JPEG noise only, not a rotated image


def test_exif_orientation_with_grayscale_and_resize(tmp_path: Path) -> None:
    pixels = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "g.png"
    Image.fromarray(pixels, "L").save(path, exif=exif)
    loaded = read_image(path, size=8)
    with Image.open(path) as im:
        shown = ImageOps.exif_transpose(im).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(loaded.array, np.asarray(shown, dtype=np.float32) / 255)
    assert loaded.conversion == "EXIF orientation 8: rotated 90 degrees counter-clockwise; L->RGB"


# -- decompression bombs and plain files -------------------------------------------------------------------------


def test_decompression_bomb_is_an_image_read_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above twice this
    with pytest.raises(ImageReadError, match=r"4,096 pixels, over Pillow's limit of 2,000") as info:
        read_image(path)
    assert str(info.value).startswith(f"{path}: ") and "decompression bomb" in str(info.value)


def test_plain_8_bit_rgb_is_unchanged(tmp_path: Path) -> None:
    pixels = np.random.default_rng(5).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(path)
    loaded = read_image(path)
    assert loaded.conversion is None
    np.testing.assert_array_equal(loaded.array, pixels.astype(np.float32) / 255)


def test_damaged_png_is_still_refused(tmp_path: Path) -> None:
    # Reading the EXIF block of a PNG decodes it first; a decoding error there must not be swallowed.
    path = tmp_path / "damaged.png"
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="corrupt or truncated image"):
        read_image(path)
