"""Fuzzing the decoder and the decode-infer-write path with random and mutated image bytes.

Seeds are real encodings of a small test card in every format the job reads;
mutations flip bits, truncate, overwrite, insert, and splice one format's
header onto another's body. Hypothesis runs derandomized, so CI sees the
same examples every time; the counts below are what docs/guarantees.md
reports.
"""

from __future__ import annotations

import collections
import json
import pathlib
import tempfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from petseg.beam.decode import DecodeImages
from petseg.beam.inference import InferProbabilities
from petseg.beam.layout import TEMP_MARKER
from petseg.beam.masks import PostprocessMasks
from petseg.beam.records import STAGES, SourceImage
from petseg.beam.write import WriteMasks
from petseg.imageio import ImageDecodeError, decode_image, decode_mask
from tests.beam.test_transforms import BrightnessHandler
from tests.images import animated_gif, encode, gradient, jpeg, png, png16

RANDOM_EXAMPLES = 2000
MUTATED_EXAMPLES = 4000
MASK_EXAMPLES = 1000
PIPELINE_EXAMPLES = 20
PIPELINE_FILES = 10
# Mutations may declare big sizes; a low limit keeps each example fast. The
# limit itself is exercised by the corpus (a 50000 x 50000 bomb).
FUZZ_MAX_PIXELS = 1 << 20
MODEL_SIZE = 16

_CARD = gradient(24, 16)
SEEDS: dict[str, bytes] = {
    "png": png(_CARD),
    "png-palette": png(_CARD, mode="P"),
    "png-la": png(_CARD, mode="LA"),
    "png-16bit": png16(16, 24),
    "jpeg": jpeg(_CARD),
    "jpeg-exif": jpeg(_CARD, orientation=6),
    "jpeg-progressive": encode(Image.fromarray(_CARD), "JPEG", progressive=True),
    "gif": animated_gif(_CARD, frames=2),
    "bmp": encode(Image.fromarray(_CARD), "BMP"),
    "webp": encode(Image.fromarray(_CARD), "WEBP", lossless=True),
    "webp-lossy": encode(Image.fromarray(_CARD), "WEBP", quality=50),
    "tiff": encode(Image.fromarray(_CARD), "TIFF"),
}
FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated_images(draw) -> bytes:
    """A real image's bytes with one to three mutations."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)), label="seed")])
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(["flip", "truncate", "overwrite", "insert", "splice"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "truncate":
            del data[position:]
        elif operation == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[position : position + len(chunk)] = chunk
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            # One format's header on another's body.
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            cut = draw(st.integers(0, len(other)))
            data = bytearray(bytes(data[:position]) + other[cut:])
    return bytes(data)


def _check_decoded(data: bytes) -> None:
    try:
        image = decode_image(data, max_pixels=FUZZ_MAX_PIXELS)
    except ImageDecodeError as error:
        assert str(error)
        return
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 1 and image.shape[1] >= 1


def test_every_seed_decodes():
    for name, data in SEEDS.items():
        assert decode_image(data).shape[2] == 3, name


@settings(FUZZ, max_examples=RANDOM_EXAMPLES)
@given(st.binary(max_size=4096))
def test_random_bytes_decode_or_raise_image_decode_error(data):
    _check_decoded(data)


@settings(FUZZ, max_examples=MUTATED_EXAMPLES)
@given(mutated_images())
def test_mutated_images_decode_or_raise_image_decode_error(data):
    _check_decoded(data)


@settings(FUZZ, max_examples=MASK_EXAMPLES)
@given(mutated_images())
def test_mutated_label_images_decode_or_raise_image_decode_error(data):
    try:
        mask = decode_mask(data, max_pixels=FUZZ_MAX_PIXELS)
    except ImageDecodeError:
        return
    assert mask.dtype == np.uint8 and mask.ndim == 2


def _run_decode_infer_write(folder: pathlib.Path, files: list[bytes | None]) -> list[tuple]:
    """Writes ``files`` (``None``: a missing file) and runs them through the job's steps.

    Returns the outcomes, one per element that came out: ``("mask", path)`` or
    ``("error", path, stage, error_type)``.
    """
    sources = []
    for index, data in enumerate(files):
        path = folder / "in" / f"{index:02d}.img"
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        size = len(data) if data is not None else 0
        sources.append(SourceImage(str(path), path.name, size, f"masks/{index:02d}.png"))
    # The matcher runs on a pickled copy of itself: it hands the outcomes back in a file.
    record = str(folder / "outcomes.json")

    def collect(actual):
        with open(record, "w", encoding="utf-8") as file:
            json.dump(sorted(actual), file)

    with test_pipeline.TestPipeline() as pipeline:
        inputs, decode_errors = (
            pipeline
            | beam.Create(sources)
            | DecodeImages(MODEL_SIZE, max_pixels=FUZZ_MAX_PIXELS, max_bytes=1 << 20)
        )
        predictions = inputs | InferProbabilities(BrightnessHandler())
        segmentations, post_errors = predictions | PostprocessMasks()
        written, write_errors = segmentations | WriteMasks(str(folder / "out"))
        masks = written | "MaskOutcome" >> beam.Map(lambda s: ("mask", s.key.source.path))
        errors = (decode_errors, post_errors, write_errors) | beam.Flatten()
        failures = errors | "ErrorOutcome" >> beam.Map(
            lambda e: ("error", e.path, e.stage, e.error_type)
        )
        assert_that((masks, failures) | "AllOutcomes" >> beam.Flatten(), collect)
    with open(record, encoding="utf-8") as file:
        return [tuple(outcome) for outcome in json.load(file)]


@pytest.mark.slow
@settings(FUZZ, max_examples=PIPELINE_EXAMPLES, phases=[Phase.explicit, Phase.generate])
@given(
    st.lists(
        st.one_of(
            mutated_images(),
            st.binary(max_size=512),
            st.sampled_from(sorted(SEEDS.values())),
            st.none(),
        ),
        min_size=1,
        max_size=PIPELINE_FILES,
    )
)
def test_every_fuzzed_file_lands_in_exactly_one_output(files):
    with tempfile.TemporaryDirectory() as temporary:
        folder = pathlib.Path(temporary)
        outcomes = _run_decode_infer_write(folder, files)
        paths = collections.Counter(outcome[1] for outcome in outcomes)
        expected = {str(folder / "in" / f"{index:02d}.img") for index in range(len(files))}
        assert set(paths) == expected and set(paths.values()) == {1}, outcomes
        for outcome in outcomes:
            mask = folder / "out" / "masks" / (pathlib.Path(outcome[1]).stem + ".png")
            if outcome[0] == "mask":
                assert Image.open(mask).mode == "P"
                np.asarray(Image.open(mask))  # Decodes fully.
            else:
                assert outcome[2] in STAGES and not mask.exists()
        leftovers = [p for p in folder.rglob("*") if TEMP_MARKER in p.name]
        assert leftovers == []
