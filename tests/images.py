"""Builders of image bytes in every format and mode the decoder must cope with."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def gradient(width: int, height: int) -> np.ndarray:
    """An RGB test card whose every pixel differs, so rotations and flips show."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack(
        [xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], axis=-1
    ).astype(np.uint8)


def encode(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def jpeg(array: np.ndarray, orientation: int | None = None, quality: int = 95) -> bytes:
    image = Image.fromarray(array)
    params = {"quality": quality}
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        params["exif"] = exif.tobytes()
    return encode(image, "JPEG", **params)


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    return encode(image, "PNG")


def png16(height: int, width: int) -> bytes:
    values = (np.arange(height * width, dtype=np.uint32).reshape(height, width) * 997) % 65536
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG")


def cmyk_jpeg(array: np.ndarray) -> bytes:
    return encode(Image.fromarray(array).convert("CMYK"), "JPEG", quality=95)


def animated_gif(array: np.ndarray, frames: int = 3) -> bytes:
    first = Image.fromarray(array).convert("P")
    rest = [Image.fromarray(255 - array).convert("P") for _ in range(frames - 1)]
    return encode(first, "GIF", save_all=True, append_images=rest)


def bomb_png(width: int = 50000, height: int = 50000) -> bytes:
    """A tiny PNG whose header declares an enormous image."""
    small = encode(Image.new("1", (8, 8)), "PNG")
    import struct
    import zlib

    ihdr_start = small.index(b"IHDR")
    body = struct.pack(">II", width, height) + small[ihdr_start + 12 : ihdr_start + 17]
    chunk = b"IHDR" + body
    patched = struct.pack(">I", len(body)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return small[: ihdr_start - 4] + patched + small[ihdr_start + 21 :]
