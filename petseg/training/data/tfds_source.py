"""TFDS ``oxford_iiit_pet`` (version 4): the tutorial's own source, when it can be downloaded."""

from __future__ import annotations

import socket
import sys
import urllib.parse

import numpy as np
import tensorflow as tf

from petseg.imageio import decode_resized, resize_mask
from petseg.training.data.files import DataSourceError

TFDS_NAME = "oxford_iiit_pet:4.*.*"
OFFLINE_HINT = (
    "use --data-dir PATH with the unpacked Oxford-IIIT Pet download (images/, annotations/), "
    "a paired images/masks folder, or --dataset synthetic"
)


def model_input(encoded_image: bytes, mask: np.ndarray, image_size: int):
    """One TFDS example, its image still encoded, as the model's ``(image, mask)``.

    The image goes through :func:`petseg.imageio.decode_resized`, as in the
    file sources and the Beam job, so every source feeds the model identically
    prepared pixels.

    Args:
      encoded_image: the image file's bytes (TFDS with ``SkipDecoding``).
      mask: ``uint8 [H, W, 1]`` trimap as TFDS decodes it.
      image_size: side S of the outputs.
    """
    image, _ = decode_resized(encoded_image, image_size)
    return image, resize_mask(mask[:, :, 0], image_size)[:, :, None]


def _check_reachable(builder) -> None:
    """Fails in seconds, not after TFDS's minutes of retries, when the host cannot be reached."""
    module = sys.modules.get(type(builder).__module__)
    url = getattr(module, "_BASE_URL", None)
    host = urllib.parse.urlparse(url).hostname if url else None
    if not host:
        return
    try:
        socket.create_connection((host, 443), timeout=10).close()
    except OSError as error:
        raise DataSourceError(
            f"could not download TFDS {TFDS_NAME}: {host} is unreachable ({error}); offline, "
            + OFFLINE_HINT
        ) from None


def tfds_dataset(split: str, image_size: int, data_dir: str | None = None) -> tf.data.Dataset:
    """The common ``(image, mask)`` dataset from TFDS, downloading it on first use.

    Args:
      split: a TFDS split of ``oxford_iiit_pet`` (``train``, ``test``, ``train[:80%]``...).
      image_size: side S of the outputs.
      data_dir: TFDS data directory (default: TFDS's own).

    Raises:
      DataSourceError: the dataset is not prepared and cannot be downloaded.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    if not builder.is_prepared():
        _check_reachable(builder)
    try:
        builder.download_and_prepare()
    except Exception as error:
        raise DataSourceError(
            f"could not download TFDS {TFDS_NAME} ({type(error).__name__}); offline, "
            + OFFLINE_HINT
        ) from None
    # Images arrive as their file bytes, to be decoded straight to the model's size.
    dataset = builder.as_dataset(
        split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
    )

    def to_element(example):
        image, mask = tf.numpy_function(
            lambda image, mask: model_input(image, mask, image_size),
            [example["image"], example["segmentation_mask"]],
            [tf.uint8, tf.uint8],
            stateful=False,
        )
        image.set_shape([image_size, image_size, 3])
        mask.set_shape([image_size, image_size, 1])
        # TFDS masks hold the trimap values 1-3; the class index is trimap - 1.
        return image, mask - 1

    return dataset.map(to_element, num_parallel_calls=tf.data.AUTOTUNE)
