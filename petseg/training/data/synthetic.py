"""Synthetic pets: deterministic, offline, learnable.

Each example is a textured background with one "pet" (a body and a head,
spotted) whose outline is a border band, mirroring the Oxford trimap classes.
Example ``i`` of seed ``s`` is always the same array, at any size or count.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from petseg.classes import BACKGROUND, BORDER, PET
from petseg.training.data.files import LabelledFile


def synthetic_example(index: int, image_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(image uint8 [S, S, 3], mask uint8 [S, S, 1])`` for one example."""
    rng = np.random.default_rng((seed, index))
    size = image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size

    # Background: two dull colours in stripes of random frequency and angle, plus grain.
    dull = rng.uniform(20, 150, size=(2, 3))
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(2, 7)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)))
    image = dull[0] * stripes[..., None] + dull[1] * (1 - stripes[..., None])

    # Pet: the union of a body ellipse and a head ellipse, in normalised radius.
    centre = rng.uniform(0.35, 0.65, size=2)
    radii = rng.uniform(0.15, 0.28, size=2)
    body = np.hypot((yy - centre[0]) / radii[0], (xx - centre[1]) / radii[1])
    head_offset = rng.uniform(-1, 1, size=2) * radii
    head_radius = radii.min() * rng.uniform(0.5, 0.8)
    head = np.hypot(yy - centre[0] - head_offset[0], xx - centre[1] - head_offset[1]) / head_radius
    distance = np.minimum(body, head)

    # A border band about two pixels wide on each side of the outline, like the trimaps.
    band = 2.0 / (size * radii.min())
    inside = distance < 1.0
    fur = rng.uniform(140, 255, size=3)
    spots = 0.8 + 0.2 * np.sin(2 * np.pi * rng.uniform(6, 12) * xx) * np.cos(2 * np.pi * 9 * yy)
    image = np.where(inside[..., None], fur * spots[..., None], image)
    image += rng.normal(0, 10, size=image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    mask = np.full((size, size), BACKGROUND, np.uint8)
    mask[distance < 1.0 - band] = PET
    mask[np.abs(distance - 1.0) <= band] = BORDER
    return image, mask[:, :, None]


def synthetic_dataset(count: int, image_size: int, seed: int = 0) -> tf.data.Dataset:
    """``count`` synthetic examples as the common ``(image, mask)`` dataset."""
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")

    def make(index):
        image, mask = tf.numpy_function(
            lambda i: synthetic_example(int(i), image_size, seed),
            [index],
            [tf.uint8, tf.uint8],
            stateful=False,
        )
        image.set_shape([image_size, image_size, 3])
        mask.set_shape([image_size, image_size, 1])
        return image, mask

    return tf.data.Dataset.range(count).map(
        make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def write_synthetic_files(
    images_dir: str,
    trimaps_dir: str,
    count: int,
    image_size: int,
    seed: int = 0,
    quality: int = 90,
) -> list[LabelledFile]:
    """Writes ``count`` synthetic pets as Oxford-style files and returns the pairs.

    Each example ``synthetic_NNNN`` becomes a JPEG photo in ``images_dir`` and
    a trimap PNG in ``trimaps_dir`` (class index + 1, as in the Oxford
    download). Both folders must exist.
    """
    files = []
    for index in range(count):
        image, mask = synthetic_example(index, image_size, seed)
        name = f"synthetic_{index:04d}"
        example = LabelledFile(
            os.path.join(images_dir, f"{name}.jpg"), os.path.join(trimaps_dir, f"{name}.png")
        )
        Image.fromarray(image).save(example.image_path, quality=quality)
        Image.fromarray((mask[:, :, 0] + 1).astype(np.uint8)).save(example.mask_path)
        files.append(example)
    return files
