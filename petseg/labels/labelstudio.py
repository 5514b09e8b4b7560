"""Label Studio brush labels: masks as predictions, the labelling config, an export decoded.

A petseg project in Label Studio shows each image as :data:`~petseg.labels.IMAGE_NAME`
and paints the classes other than background with the brush labels of
:data:`~petseg.labels.BRUSH_NAME` (:func:`labeling_config`); an unpainted pixel is
background. A mask goes in as a task's prediction, one brush-label result per class
it holds (:func:`prediction_results`, :func:`review_task`), and a labelled task comes
back as a class map (:func:`class_map_from_results`).

Brush strokes travel in Label Studio's own RLE, encoded and decoded by Label Studio's
converter (``label_studio_converter.brush``): the RLE runs over the image's RGBA
bytes row by row, and the alpha channel says what is painted. The converter imports
pandas, so it is imported inside the functions that use it and never by the job's
workers; it comes with the ``labels`` extra.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from petseg.drawing import CLASS_COLOURS, Colour, class_colour
from petseg.labels import BRUSH_NAME, IMAGE_NAME, LabelError

BRUSH_TYPE = "brushlabels"
# A painted pixel's alpha; decoding counts any alpha above 0 as painted.
PAINTED = 255
# Channels of the RGBA image Label Studio's RLE runs over.
RLE_CHANNELS = 4
# Hex digits of a result's id: Label Studio's own ids are 10 characters.
RESULT_ID_LENGTH = 10


class ConverterMissingError(LabelError):
    """Label Studio's converter is not installed here; the message says what to install."""


def _brush() -> ModuleType:
    """``label_studio_converter.brush``, imported on first use."""
    try:
        from label_studio_converter import brush
    except ImportError:
        raise ConverterMissingError(
            "Label Studio's converter (label-studio-converter) is not installed: "
            "install petseg[labels]"
        ) from None
    return brush


def _value(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """A brush result's ``value``: its labels and its RLE."""
    value = item.get("value")
    if not isinstance(value, Mapping):
        raise LabelError(f"brush result {item.get('id', '?')} has no value")
    return value


def _painted(item: Mapping[str, Any], width: int, height: int) -> np.ndarray:
    """A brush result's painted pixels, ``bool [height, width]``.

    Raises:
      LabelError: the result is for an image of another size, or its RLE is not one.
    """
    size = (item.get("original_width", width), item.get("original_height", height))
    if size != (width, height):
        raise LabelError(
            f"brush result {item.get('id', '?')} is for a {size[0]}x{size[1]} image, "
            f"but the image is {width}x{height}"
        )
    value = _value(item)
    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        raise LabelError(f"brush result {item.get('id', '?')} holds no RLE")
    decode_rle = _brush().decode_rle
    try:
        pixels = decode_rle(value["rle"])
    except Exception as error:  # A corrupt RLE fails inside the converter's bit reader.
        raise LabelError(
            f"brush result {item.get('id', '?')} has an RLE that does not decode ({error})"
        ) from None
    if pixels.size != width * height * RLE_CHANNELS:
        raise LabelError(
            f"brush result {item.get('id', '?')} decodes to {pixels.size // RLE_CHANNELS} "
            f"pixels, but the image is {width}x{height} ({width * height} pixels)"
        )
    return pixels.reshape(height, width, RLE_CHANNELS)[:, :, 3] > 0


def _label(item: Mapping[str, Any], class_names: Sequence[str]) -> int:
    """The class index of a brush result's one label."""
    labels = _value(item).get(BRUSH_TYPE) or []
    if len(labels) != 1:
        raise LabelError(
            f"brush result {item.get('id', '?')} has {len(labels)} labels {list(labels)}; "
            "one was expected"
        )
    if labels[0] not in class_names:
        raise LabelError(
            f"brush result {item.get('id', '?')} is labelled {labels[0]!r}, which is not one "
            f"of the model's classes {list(class_names)}"
        )
    return list(class_names).index(labels[0])


def class_map_from_results(
    results: Sequence[Mapping],
    width: int,
    height: int,
    class_names: Sequence[str],
    background: int,
) -> np.ndarray:
    """A labelled task's brush results as a class map.

    Args:
      results: the ``result`` items of one annotation or prediction, as Label
        Studio exports them; items of other types than ``brushlabels`` are ignored.
      width: the image's width.
      height: the image's height.
      class_names: the model's classes; a brush label names one of them.
      background: the class of the pixels no brush painted.

    Returns:
      ``uint8 [height, width]`` class indices; where strokes overlap, the later
      result wins, as Label Studio draws them.

    Raises:
      LabelError: a result is for an image of another size, holds an RLE that
        does not decode to ``width * height`` pixels, or names a label that is
        not a class (or no label, or several).
    """
    mask = np.full((height, width), background, np.uint8)
    for item in results:
        if not isinstance(item, Mapping) or item.get("type") != BRUSH_TYPE:
            continue
        index = _label(item, class_names)
        mask[_painted(item, width, height)] = index
    return mask


def result_id(key: str, class_name: str) -> str:
    """A brush result's id, the same on every run: from the image's key and the class."""
    digest = hashlib.sha256(f"{key}\0{class_name}".encode()).hexdigest()
    return digest[:RESULT_ID_LENGTH]


def prediction_results(
    mask: np.ndarray, class_names: Sequence[str], background: int, key: str
) -> list[dict[str, Any]]:
    """A class map as brush results, one per class it holds other than background.

    Args:
      mask: ``uint8 [H, W]`` class indices.
      class_names: the model's classes, by index.
      background: the class left unpainted.
      key: what names the image among the task's (its result ids derive from it).

    Returns:
      Label Studio ``brushlabels`` result items, by class index.

    Raises:
      LabelError: the mask holds a class index the model does not have.
    """
    brush = _brush()
    height, width = mask.shape
    present = np.unique(mask).tolist()
    if present and present[-1] >= len(class_names):
        raise LabelError(
            f"{key}: the mask holds class {present[-1]}, but the model has "
            f"{len(class_names)} classes {list(class_names)}"
        )
    results = []
    for index in present:
        if index == background:
            continue
        name = class_names[index]
        stroke = np.where(mask == index, np.uint8(PAINTED), np.uint8(0))
        results.append(
            {
                "id": result_id(key, name),
                "type": BRUSH_TYPE,
                "from_name": BRUSH_NAME,
                "to_name": IMAGE_NAME,
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {"format": "rle", "rle": brush.mask2rle(stroke), BRUSH_TYPE: [name]},
            }
        )
    return results


def review_task(
    image_url: str,
    mask: np.ndarray,
    class_names: Sequence[str],
    background: int,
    model_id: str,
    score: float,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Label Studio task: the image, and its mask as the model's prediction.

    Args:
      image_url: where Label Studio reads the image (a URL or a path it serves).
      mask: ``uint8 [H, W]`` class indices at the image's size.
      class_names: the model's classes, by index.
      background: the class left unpainted.
      model_id: the prediction's ``model_version``.
      score: the prediction's score (Label Studio sorts and filters tasks by it).
      data: more fields for the task's ``data``, shown beside the image.

    Returns:
      ``{"data": {"image": image_url, ...}, "predictions": [...]}``.
    """
    return {
        "data": {**(data or {}), IMAGE_NAME: image_url},
        "predictions": [
            {
                "model_version": model_id,
                "score": score,
                "result": prediction_results(mask, class_names, background, image_url),
            }
        ],
    }


def _hex(colour: Colour) -> str:
    return "#" + "".join(f"{channel:02x}" for channel in colour)


def labeling_config(
    class_names: Sequence[str], background: int, colours: Sequence[Colour] = CLASS_COLOURS
) -> str:
    """The labelling config (XML) to create the project with: the image, and one brush
    label per class other than background, in the class's colour."""
    labels = [
        f"    <Label value={quoteattr(name)} background={quoteattr(_hex(class_colour(i, colours)))}/>"
        for i, name in enumerate(class_names)
        if i != background
    ]
    return "\n".join(
        [
            "<View>",
            f'  <Image name="{IMAGE_NAME}" value="${IMAGE_NAME}" zoom="true"/>',
            f'  <BrushLabels name="{BRUSH_NAME}" toName="{IMAGE_NAME}">',
            *labels,
            "  </BrushLabels>",
            "</View>",
            "",
        ]
    )
