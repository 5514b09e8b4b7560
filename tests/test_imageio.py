"""The one decoder: every format, mode and orientation ends as upright RGB uint8."""

import numpy as np
import pytest
from PIL import Image

from petseg.imageio import (
    ImageDecodeError,
    decode_image,
    decode_mask,
    decode_resized,
    resize_image,
    resize_mask,
)
from tests import images


@pytest.fixture
def card():
    return images.gradient(48, 32)


def test_png_round_trips_exactly(card):
    decoded = decode_image(images.png(card))
    assert decoded.dtype == np.uint8 and decoded.shape == (32, 48, 3)
    np.testing.assert_array_equal(decoded, card)


@pytest.mark.parametrize(
    "encoder",
    [
        lambda a: images.jpeg(a),
        lambda a: images.png(a, "L"),
        lambda a: images.png(a, "P"),
        lambda a: images.png(a, "RGBA"),
        lambda a: images.png(a, "LA"),
        lambda a: images.cmyk_jpeg(a),
        lambda a: images.animated_gif(a),
        lambda a: images.encode(Image.fromarray(a), "BMP"),
        lambda a: images.encode(Image.fromarray(a), "WEBP", lossless=True),
        lambda a: images.encode(Image.fromarray(a), "TIFF"),
    ],
    ids=["jpeg", "gray", "palette", "rgba", "la", "cmyk", "gif", "bmp", "webp", "tiff"],
)
def test_every_mode_decodes_to_rgb_close_to_source(card, encoder):
    decoded = decode_image(encoder(card))
    assert decoded.dtype == np.uint8 and decoded.shape == (32, 48, 3)
    # Lossy and reduced-colour formats drift; a wrong channel order or mode does not stay this close.
    gray = card.mean(axis=-1)
    assert np.abs(decoded.astype(float).mean(axis=-1) - gray).mean() < 25


def test_sixteen_bit_png_keeps_its_full_range():
    decoded = decode_image(images.png16(20, 30))
    assert decoded.shape == (20, 30, 3)
    # convert("L") would clip everything above 255 to white; scaling keeps the spread.
    assert decoded.min() < 30 and decoded.max() > 225
    assert len(np.unique(decoded)) > 100


@pytest.mark.parametrize(
    "orientation,rotate",
    [(3, 180), (6, 270), (8, 90)],
)
def test_exif_orientation_is_applied(card, orientation, rotate):
    decoded = decode_image(images.jpeg(card, orientation))
    expected = np.asarray(Image.fromarray(card).rotate(rotate, expand=True))
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).mean() < 6


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"hello, not an image at all", "not an image"),
        (b"<html><body>404</body></html>", "not an image"),
        (images.bomb_png(), "too large|bomb"),
    ],
    ids=["empty", "text", "html", "bomb"],
)
def test_bad_bytes_raise_a_reasoned_error(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data)


def test_truncated_jpeg_is_refused(card):
    data = images.jpeg(images.gradient(200, 150))
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_is_configurable(card):
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(images.png(card), max_pixels=100)


def test_decode_mask_keeps_palette_indices():
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    image = Image.frombytes("P", (3, 2), indices.tobytes())
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    np.testing.assert_array_equal(decode_mask(images.encode(image, "PNG")), indices)


def test_resize_mask_never_invents_classes():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 2
    resized = resize_mask(mask, 17)
    assert resized.shape == (17, 17)
    assert set(np.unique(resized)) == {0, 2}


def test_resize_image_shape_and_identity(card):
    assert resize_image(card, (10, 20)).shape == (10, 20, 3)
    assert resize_image(card, (32, 48)) is card


@pytest.mark.parametrize(
    "encoder",
    [
        lambda a: images.png(a),
        lambda a: images.jpeg(a),
        lambda a: images.png(a, "L"),
        lambda a: images.cmyk_jpeg(a),
        lambda a: images.encode(Image.fromarray(a), "WEBP", lossless=True),
    ],
    ids=["png", "small-jpeg", "gray", "cmyk", "webp"],
)
def test_decode_resized_is_decode_then_resize_below_the_reduced_scales(card, encoder):
    # Nothing to skip: an image under twice the size decodes fully, then resizes.
    data = encoder(card)
    pixels, size = decode_resized(data, 24)
    assert size == (32, 48)
    np.testing.assert_array_equal(pixels, resize_image(decode_image(data), 24))


def _decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    from PIL import JpegImagePlugin

    sizes = []
    load = JpegImagePlugin.JpegImageFile.load

    def recording_load(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", recording_load)
    return sizes


@pytest.mark.parametrize(("size", "scale"), [(200, 2), (100, 4), (50, 8), (250, 1)])
def test_decode_resized_decodes_a_large_jpeg_at_a_reduced_scale(monkeypatch, size, scale):
    photo = images.gradient(600, 400)
    data = images.jpeg(photo)
    sizes = _decoded_sizes(monkeypatch)
    pixels, original = decode_resized(data, size)
    # The largest DCT scale that keeps both sides at least ``size``.
    assert set(sizes) == {(600 // scale, 400 // scale)}
    assert pixels.shape == (size, size, 3) and original == (400, 600)
    full_route = resize_image(decode_image(data), size).astype(int)
    assert np.abs(pixels.astype(int) - full_route).mean() < 2.0


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_decode_resized_reports_the_upright_size(orientation):
    data = images.jpeg(images.gradient(600, 400), orientation)
    pixels, original = decode_resized(data, 64)
    upright = decode_image(data)
    assert original == upright.shape[:2]
    full_route = resize_image(upright, 64).astype(int)
    assert np.abs(pixels.astype(int) - full_route).mean() < 2.0


def test_decode_resized_refuses_what_decode_image_refuses():
    data = images.jpeg(images.gradient(600, 400))
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_resized(data, 64, max_pixels=1000)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_resized(data[: len(data) // 2], 64)
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_resized(b"", 64)
