"""The class colours and the pictures drawn in them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from petseg.classes import NUM_CLASSES
from petseg.drawing import (
    CLASS_COLOURS,
    class_colour,
    colour_table,
    colourise,
    encode_overlay,
    palette,
)


def test_every_class_has_a_colour():
    assert len(CLASS_COLOURS) == NUM_CLASSES
    assert len(set(CLASS_COLOURS)) == NUM_CLASSES


def test_palette_is_the_class_colours_padded_to_a_full_pil_palette():
    entries = palette()
    assert len(entries) == 768
    assert entries[:9] == [channel for colour in CLASS_COLOURS for channel in colour]
    assert set(entries[9:]) == {0}


def test_class_colour_reuses_the_palette_past_its_end():
    assert class_colour(1) == CLASS_COLOURS[1]
    assert class_colour(NUM_CLASSES + 1) == CLASS_COLOURS[1]


def test_colourise_paints_each_class_and_leaves_unknown_values_black():
    mask = np.array([[0, 1], [2, 7]], np.uint8)
    painted = colourise(mask[..., None])
    assert painted.dtype == np.uint8 and painted.shape == (2, 2, 3)
    assert [tuple(pixel) for pixel in painted.reshape(-1, 3)] == [*CLASS_COLOURS, (0, 0, 0)]
    np.testing.assert_array_equal(colour_table()[mask], painted)


def test_overlay_blends_the_image_halfway_toward_the_class_colour():
    mask = np.zeros((16, 16), np.uint8)
    image = np.full((16, 16, 3), 100, np.uint8)
    overlay = np.asarray(Image.open(io.BytesIO(encode_overlay(image, mask))), np.float32)
    expected = (np.float32(100) + np.asarray(CLASS_COLOURS[0], np.float32)) / 2
    np.testing.assert_allclose(overlay.mean(axis=(0, 1)), expected, atol=2)
