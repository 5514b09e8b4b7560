"""The project's one image decoder, used by training and by the Beam job alike.

Every image a model sees enters through :func:`decode_resized` (training,
evaluation and the Beam job), so a model never sees pixels prepared
differently at training and at serving time; :func:`decode_image` gives the
full-size picture (overlays, reports). Anything a file can contain ends in
either an RGB ``uint8`` array or an :class:`ImageDecodeError` whose message
says what was wrong; no other exception escapes.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# File extensions of the formats decode_image reads, lower case, without the dot.
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")

# 8000 x 8000: far above any camera image a user segments, far below what a
# crafted header (e.g. a 50000 x 50000 PNG of a few hundred bytes) declares.
DEFAULT_MAX_PIXELS = 64_000_000

# Model inputs are resized bilinearly (antialiased when shrinking), in training and serving alike.
RESIZE_FILTER = Image.Resampling.BILINEAR

# Our own size check runs before any pixel is decoded, so Pillow's global
# bomb warning adds nothing; its hard error is still caught below.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageDecodeError(ValueError):
    """An input that is not a usable image; the message is the reason."""


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image: unrecognised file format") from None
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"decompression bomb refused: {error}") from None
    except Exception as error:  # Pillow raises many types for hostile headers.
        raise ImageDecodeError(
            f"unreadable image header: {type(error).__name__}: {error}"
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image too large: {width}x{height} = {width * height} pixels exceeds the "
            f"limit of {max_pixels} (possible decompression bomb)"
        )
    return image


def _load(image: Image.Image) -> Image.Image:
    try:
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"decompression bomb refused: {error}") from None
    except Exception as error:
        raise ImageDecodeError(f"corrupt or truncated image data: {error}") from None
    return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit (and 32-bit) grayscale: scale the full range to 8 bits rather
        # than letting convert("L") clip everything above 255 to white.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "F" else max(float(values.max()), 1.0)
        gray = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _upright(image: Image.Image) -> tuple[Image.Image, bool]:
    """The image as a viewer shows it (EXIF orientation), and whether its sides swapped."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        return ImageOps.exif_transpose(image), orientation in (5, 6, 7, 8)
    except Exception:
        # A malformed EXIF block must not cost the image; keep it unrotated.
        return image, False


def _rgb(image: Image.Image) -> np.ndarray:
    try:
        return _to_rgb(image)
    except ImageDecodeError:
        raise
    except Exception as error:
        raise ImageDecodeError(f"cannot convert {image.mode} image to RGB: {error}") from None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decodes image bytes of any common format to an upright RGB array.

    Copes with JPEG, PNG, GIF (first frame), BMP, WebP and TIFF; grayscale,
    palette, RGBA/LA, CMYK and 16-bit images; and applies EXIF orientation so
    the array is what a viewer shows.

    Args:
      data: the file's bytes.
      max_pixels: images declaring more pixels are refused before decoding.

    Returns:
      ``uint8`` array of shape ``[height, width, 3]``.

    Raises:
      ImageDecodeError: the bytes are not a usable image; the message says why.
    """
    image, _ = _upright(_load(_open(data, max_pixels)))
    return _rgb(image)


def decode_resized(
    data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decodes image bytes straight to a model input of ``size`` x ``size``.

    What :func:`decode_image` then :func:`resize_image` would give, but a
    JPEG at least twice ``size`` on both sides is decoded at the smallest
    DCT scale (1/2, 1/4 or 1/8: libjpeg's scaled decoding, through Pillow's
    ``draft``) that still covers ``size``. That skips most of the decoding
    work for photos several times the model's size, and the bilinear resize
    then starts from fewer pixels, for pixels within about a grey level of
    the full-size route (figures in docs/benchmarks.md).

    Args:
      data: the file's bytes.
      size: the model's side S.
      max_pixels: images declaring more pixels are refused before decoding.

    Returns:
      ``(uint8 [size, size, 3], (height, width))``: the model input, and the
      upright image's own height and width, which its mask must have.

    Raises:
      ImageDecodeError: the bytes are not a usable image; the message says why.
    """
    image = _open(data, max_pixels)
    stored_width, stored_height = image.size
    try:
        # A no-op for every format but JPEG; keeps both sides at least ``size``.
        image.draft(None, (size, size))
    except Exception:  # Decoding at full size is always correct, only slower.
        pass
    image, swapped = _upright(_load(image))
    original = (stored_width, stored_height) if swapped else (stored_height, stored_width)
    if image.mode == "RGB" and image.size != (size, size):
        # The usual case, resized as a Pillow image: the same pixels as
        # resize_image, without two round trips through NumPy.
        return np.asarray(image.resize((size, size), RESIZE_FILTER), dtype=np.uint8), original
    return resize_image(_rgb(image), size), original


def decode_mask(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decodes a label image (trimap, palette or grayscale mask) to raw values.

    Palette PNGs keep their indices (the usual way class maps are stored);
    colour masks are reduced to luminance. No EXIF rotation: label files are
    written by tools, not cameras.

    Returns:
      ``uint8`` array of shape ``[height, width]``.

    Raises:
      ImageDecodeError: the bytes are not a usable label image.
    """
    image = _load(_open(data, max_pixels))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(image)
        if values.max(initial=0) > 255:
            raise ImageDecodeError("mask has values above 255")
        return values.astype(np.uint8)
    if image.mode not in ("L", "P"):
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resizes an RGB array bilinearly (antialiased when shrinking).

    Args:
      image: ``uint8 [H, W, 3]``.
      size: output side, or ``(height, width)``.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), RESIZE_FILTER)
    return np.asarray(resized, dtype=np.uint8)


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resizes a class map with nearest neighbour: interpolation would invent classes."""
    height, width = (size, size) if isinstance(size, int) else size
    if mask.shape[:2] == (height, width):
        return mask
    resized = Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.uint8)
