"""The class colours, and masks drawn in them: palettes, colour images, overlays.

One palette serves every picture of a mask: the mask PNGs the job writes
(their PIL palette), the overlays beside them, training's prediction panels
and the report's legend and charts, so a class has the same colour in all.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

Colour = tuple[int, int, int]

# One RGB triple per class, by class index (petseg.classes).
CLASS_COLOURS: tuple[Colour, ...] = (
    (230, 80, 40),  # pet: orange-red
    (30, 30, 30),  # background: near black
    (250, 220, 60),  # border: yellow
)
OVERLAY_OPACITY = 0.5
OVERLAY_QUALITY = 90


def palette(colours: Sequence[Colour] = CLASS_COLOURS) -> list[int]:
    """Returns a 768-entry PIL palette whose first entries are the class colours."""
    flat = [channel for colour in colours for channel in colour]
    return flat + [0] * (768 - len(flat))


def class_colour(index: int, colours: Sequence[Colour] = CLASS_COLOURS) -> Colour:
    """The colour of class ``index``; a class beyond the palette reuses its colours in turn."""
    return tuple(colours[index % len(colours)])


def colour_table(colours: Sequence[Colour] = CLASS_COLOURS) -> np.ndarray:
    """``uint8 [256, 3]``: row ``i`` is class ``i``'s colour, black past the palette.

    Indexing it with a ``uint8`` class map gives the map's colour image, and
    256 rows cover every value such a map can hold.
    """
    table = np.zeros((256, 3), np.uint8)
    table[: len(colours)] = np.asarray(colours, np.uint8)
    return table


def colourise(mask: np.ndarray, colours: Sequence[Colour] = CLASS_COLOURS) -> np.ndarray:
    """Class map ``[H, W]`` (or ``[H, W, 1]``) -> RGB ``uint8 [H, W, 3]`` in the class colours."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    return colour_table(colours)[mask.astype(np.uint8)]


def encode_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    colours: Sequence[Colour] = CLASS_COLOURS,
    opacity: float = OVERLAY_OPACITY,
) -> bytes:
    """The image with each pixel blended toward its class colour, as a JPEG.

    Args:
      image: ``uint8 [H, W, 3]`` pixels.
      mask: ``uint8 [H, W]`` class indices.
      colours: one colour per class.
      opacity: the class colour's weight in the blend, from 0 to 1.
    """
    painted = colour_table(colours)[mask].astype(np.float32)
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * painted
    pixels = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=OVERLAY_QUALITY)
    return buffer.getvalue()
