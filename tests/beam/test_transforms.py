"""Each step of the segmentation job under TestPipeline, with a fake model where weights don't matter."""

from __future__ import annotations

import errno
import io
import json
import pathlib

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from petseg.beam.decode import DecodeImages
from petseg.beam.faults import WRITE_RETRIES, EnvironmentFault
from petseg.beam.inference import InferProbabilities
from petseg.beam.layout import TEMP_MARKER
from petseg.beam.masks import PostprocessMasks, segment
from petseg.beam.records import ImageKey, Segmentation, SourceImage
from petseg.beam.shards import SPILLS_DIR, WriteTable, remove_spills, shard_name
from petseg.beam.write import (
    PNG_COMPRESS_LEVEL,
    MaskProvenance,
    WriteMasks,
    encode_mask,
    read_written_mask,
    write_atomically,
)
from petseg.drawing import CLASS_COLOURS
from petseg.training.data import synthetic_example
from tests.images import gradient, jpeg, png

SIZE = 16


class _FakeModel:
    """Something RunInference's shared handle can hold a weak reference to."""


class BrightnessHandler(ModelHandler[np.ndarray, PredictionResult, _FakeModel]):
    """Pet where the red channel is bright, background where it is dark; border never.

    Fails on an all-black image, as a model on a broken device would.
    """

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": 1}

    def load_model(self) -> _FakeModel:
        return _FakeModel()

    def run_inference(self, batch, model, inference_args=None):
        results = []
        for image in batch:
            if not image.any():
                raise ValueError("black image")
            red = image[:, :, 0].astype(np.float32) / 255.0
            probabilities = np.stack([red, 1.0 - red, np.zeros_like(red)], axis=-1) * 0.9 + 0.0333
            results.append(PredictionResult(image, probabilities.astype(np.float32)))
        return results


def _source(path, relative="x.jpg", size=0, mask_path="masks/x.png"):
    return SourceImage(str(path), relative, size, mask_path)


def test_decode_images_resizes_good_files_and_reports_bad_ones(tmp_path):
    files = {
        "good.jpg": jpeg(gradient(40, 30)),
        "good.png": png(gradient(20, 50)),
        "empty.jpg": b"",
        "text.jpg": b"hello",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    sources = [_source(tmp_path / name, name, len(data)) for name, data in files.items()]
    sources.append(_source(tmp_path / "missing.jpg", "missing.jpg"))
    sources.append(_source(tmp_path / "good.jpg", "big.jpg", size=10**9))
    with test_pipeline.TestPipeline() as pipeline:
        inputs, errors = pipeline | beam.Create(sources) | DecodeImages(SIZE, max_bytes=10**6)
        assert_that(
            inputs
            | beam.Map(
                lambda element: (
                    element[0].source.relative,
                    element[0].width,
                    element[0].height,
                    element[1].shape,
                    element[0].original is None,
                )
            ),
            equal_to(
                [
                    ("good.jpg", 40, 30, (SIZE, SIZE, 3), True),
                    ("good.png", 20, 50, (SIZE, SIZE, 3), True),
                ]
            ),
            label="CheckInputs",
        )
        assert_that(
            errors
            | beam.Map(lambda error: (error.path.rsplit("/", 1)[1], error.stage, error.error_type)),
            equal_to(
                [
                    ("empty.jpg", "decode", "ImageDecodeError"),
                    ("text.jpg", "decode", "ImageDecodeError"),
                    ("missing.jpg", "read", "FileNotFoundError"),
                    ("good.jpg", "read", "FileTooLargeError"),
                ]
            ),
            label="CheckErrors",
        )


def test_decode_images_keeps_the_original_for_overlays(tmp_path):
    (tmp_path / "a.png").write_bytes(png(gradient(24, 12)))
    with test_pipeline.TestPipeline() as pipeline:
        inputs, _ = (
            pipeline
            | beam.Create([_source(tmp_path / "a.png", "a.png")])
            | DecodeImages(SIZE, keep_original=True)
        )
        assert_that(
            inputs
            | beam.Map(lambda element: np.array_equal(element[0].original, gradient(24, 12))),
            equal_to([True]),
        )


def _keyed_input(name, pixels, height=8, width=12):
    source = _source(f"/in/{name}", name, 0, f"masks/{name}.png")
    return ImageKey(source, height, width), pixels


def test_infer_probabilities_keeps_keys():
    bright = np.full((SIZE, SIZE, 3), 200, np.uint8)
    dark = np.full((SIZE, SIZE, 3), 10, np.uint8)
    elements = [_keyed_input("bright", bright), _keyed_input("dark", dark)]
    with test_pipeline.TestPipeline() as pipeline:
        predictions = pipeline | beam.Create(elements) | InferProbabilities(BrightnessHandler())
        assert_that(
            predictions
            | beam.Map(
                lambda element: (
                    element[0].source.relative,
                    element[1].inference.shape,
                    int(element[1].inference.argmax(-1).max()),
                )
            ),
            equal_to([("bright", (SIZE, SIZE, 3), 0), ("dark", (SIZE, SIZE, 3), 1)]),
        )


def test_a_failing_batch_fails_the_bundle_instead_of_its_images():
    # Every image reaching the model is a valid array: a failing batch is the
    # environment's fault, for the runner to retry, not the images'.
    black = np.zeros((SIZE, SIZE, 3), np.uint8)
    with pytest.raises(Exception, match="black image"):
        with test_pipeline.TestPipeline() as pipeline:
            _ = (
                pipeline
                | beam.Create([_keyed_input("black", black)])
                | InferProbabilities(BrightnessHandler())
            )


def test_postprocess_upsamples_to_the_original_size():
    # Left half pet, right half background, at model size; the mask must keep the split.
    probabilities = np.zeros((SIZE, SIZE, 3), np.float32)
    probabilities[:, : SIZE // 2, 0] = 0.8
    probabilities[:, SIZE // 2 :, 1] = 0.7
    probabilities[..., 2] = 0.1
    key = ImageKey(_source("/in/a.jpg"), 30, 40)
    bad_key = ImageKey(_source("/in/bad.jpg"), 30, 40)
    elements = [
        (key, PredictionResult(None, probabilities)),
        (bad_key, PredictionResult(None, np.zeros(5, np.float32))),
    ]
    expected = np.ones((30, 40), np.uint8)
    expected[:, :20] = 0
    with test_pipeline.TestPipeline() as pipeline:
        segmentations, errors = pipeline | beam.Create(elements) | PostprocessMasks()
        assert_that(
            segmentations
            | beam.Map(
                lambda s: (s.key.source.path, np.array_equal(s.mask, expected), s.mask.dtype.name)
            ),
            equal_to([("/in/a.jpg", True, "uint8")]),
            label="CheckMasks",
        )
        assert_that(
            errors | beam.Map(lambda error: (error.path, error.stage)),
            equal_to([("/in/bad.jpg", "postprocess")]),
            label="CheckErrors",
        )


def test_segment_matches_tensorflow_bilinear_resize():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1, 1, 1], size=(SIZE, SIZE)).astype(np.float32)
    mask, mean_confidence, _ = segment(probabilities, 37, 23)
    reference = tf.image.resize(probabilities[None], (37, 23), method="bilinear").numpy()[0]
    np.testing.assert_array_equal(mask, reference.argmax(-1))
    assert mean_confidence == pytest.approx(float(reference.max(-1).mean()), rel=1e-6)


def _segmentation(mask_path, mask, original=None):
    source = SourceImage(f"/in/{mask_path}", mask_path, 0, mask_path)
    key = ImageKey(source, mask.shape[0], mask.shape[1], original)
    return Segmentation(key, mask, 0.5)


def test_write_masks_writes_palette_pngs_and_overlays(tmp_path):
    mask = (np.arange(6 * 9).reshape(6, 9) % 3).astype(np.uint8)
    original = gradient(9, 6)
    output = str(tmp_path / "out")
    with test_pipeline.TestPipeline() as pipeline:
        written, errors = (
            pipeline
            | "CreateGood" >> beam.Create([_segmentation("masks/a/b.png", mask, original)])
            | "WriteGood" >> WriteMasks(output, model_id="m1", batch_size=4, overlays=True)
        )
        assert_that(
            written | beam.Map(lambda s: s.key.source.path), equal_to(["/in/masks/a/b.png"])
        )
        assert_that(errors, equal_to([]), label="CheckNoErrors")
    image = Image.open(tmp_path / "out/masks/a/b.png")
    assert image.mode == "P" and image.size == (9, 6)
    np.testing.assert_array_equal(np.asarray(image), mask)
    assert image.getpalette()[:9] == [channel for colour in CLASS_COLOURS for channel in colour]
    _, provenance = read_written_mask((tmp_path / "out/masks/a/b.png").read_bytes())
    assert provenance == MaskProvenance("masks/a/b.png", 0, "m1", 4, 0.5)
    overlay = Image.open(tmp_path / "out/overlays/a/b.jpg")
    assert overlay.format == "JPEG" and overlay.size == (9, 6)
    assert sorted(p.name for p in (tmp_path / "out/masks/a").iterdir()) == ["b.png"]


def test_an_unwritable_output_fails_the_job_not_the_image(tmp_path, monkeypatch):
    monkeypatch.setattr("petseg.beam.faults.WRITE_RETRY_DELAY_S", 0.01)
    mask = np.zeros((4, 4), np.uint8)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    with pytest.raises(Exception, match="petseg environment fault: cannot write .*blocked"):
        with test_pipeline.TestPipeline() as pipeline:
            _ = (
                pipeline
                | beam.Create([_segmentation("masks/c.png", mask)])
                | WriteMasks(str(blocked))
            )
    assert blocked.read_text() == "a file where the output folder should be"


def test_a_mask_name_too_long_for_the_filesystem_is_the_images_error(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    name = "masks/" + "n" * 300 + ".png"
    with test_pipeline.TestPipeline() as pipeline:
        written, errors = (
            pipeline | beam.Create([_segmentation(name, mask)]) | WriteMasks(str(tmp_path))
        )
        assert_that(written, equal_to([]), label="CheckNothingWritten")
        assert_that(
            errors | beam.Map(lambda error: (error.stage, error.error_type)),
            equal_to([("write", "OSError")]),
        )


def test_encode_mask_is_deterministic():
    mask = np.random.default_rng(1).integers(0, 3, (31, 17)).astype(np.uint8)
    assert encode_mask(mask) == encode_mask(mask.copy())
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_mask(mask)))), mask)


def test_encode_mask_packs_runs_smaller_than_zlibs_default_strategy():
    mask = synthetic_example(0, 375)[1][..., 0]  # a pet, its border band and background
    encoded = encode_mask(mask)
    image = Image.open(io.BytesIO(encoded))
    np.testing.assert_array_equal(np.asarray(image), mask)
    default_strategy = io.BytesIO()
    image.save(default_strategy, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    assert len(encoded) < 0.9 * len(default_strategy.getvalue())


def test_write_atomically_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr("petseg.beam.faults.WRITE_RETRY_DELAY_S", 0.01)
    target = str(tmp_path / "deep/x.png")
    write_atomically(target, b"first")
    assert (tmp_path / "deep/x.png").read_bytes() == b"first"
    attempts = []

    def refuse(sources, destinations):
        attempts.append(sources[0])
        raise OSError("rename refused")

    monkeypatch.setattr(FileSystems, "rename", refuse)
    with pytest.raises(EnvironmentFault, match="cannot write .*x.png: OSError: rename refused"):
        write_atomically(target, b"second")
    # Tried once and retried, each time under a new temporary name.
    assert len(attempts) == 1 + WRITE_RETRIES and len(set(attempts)) == len(attempts)
    # The old file is intact and the temporaries are gone.
    assert (tmp_path / "deep/x.png").read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["x.png"]


def test_write_atomically_survives_a_transient_failure(tmp_path, monkeypatch):
    monkeypatch.setattr("petseg.beam.faults.WRITE_RETRY_DELAY_S", 0.01)
    rename = FileSystems.rename
    failures = [OSError(errno.EIO, "I/O error")]

    def flaky(sources, destinations):
        if failures:
            raise failures.pop()
        return rename(sources, destinations)

    monkeypatch.setattr(FileSystems, "rename", flaky)
    write_atomically(str(tmp_path / "x.png"), b"data")
    assert not failures and (tmp_path / "x.png").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_write_json_lines_writes_every_shard_sorted(tmp_path):
    records = [(f"/in/{name}", json.dumps({"path": f"/in/{name}"})) for name in "edcba"]
    directory = str(tmp_path / "stats")
    with test_pipeline.TestPipeline() as pipeline:
        paths = pipeline | beam.Create(records) | WriteTable(directory, "stats", num_shards=3)
        assert_that(
            paths, equal_to([shard_name(directory, "stats", index, 3) for index in range(3)])
        )
    lines = []
    for index in range(3):
        with open(shard_name(directory, "stats", index, 3)) as file:
            shard = [json.loads(line)["path"] for line in file]
        assert shard == sorted(shard)
        lines += shard
    assert sorted(lines) == [f"/in/{name}" for name in "abcde"]


def _shards(directory, num_shards: int) -> list[bytes]:
    return [
        pathlib.Path(shard_name(str(directory), "stats", index, num_shards)).read_bytes()
        for index in range(num_shards)
    ]


def test_write_table_merges_many_runs_into_the_bytes_of_one(tmp_path, monkeypatch):
    # Keys that need escaping, and two rows under one key, sort as (key, line).
    keys = [f"/in/{index % 97:03d}\t{chr(0x4E00 + index)}\n.jpg" for index in range(300)]
    rows = [(key, json.dumps({"path": key, "row": index})) for index, key in enumerate(keys)]

    def write(directory, parts, spill_chars):
        with test_pipeline.TestPipeline() as pipeline:
            created = tuple(
                pipeline | f"Create{index}" >> beam.Create(part, reshuffle=False)
                for index, part in enumerate(parts)
            )
            _ = created | WriteTable(str(directory), "stats", num_shards=2, spill_chars=spill_chars)

    write(tmp_path / "one", [rows], spill_chars=10**9)
    # Spills of about four rows each, from two collections, merged three at a time.
    monkeypatch.setattr("petseg.beam.shards.MERGE_FAN_IN", 3)
    write(tmp_path / "many", [rows[::2], rows[1::2]], spill_chars=200)

    one = _shards(tmp_path / "one", 2)
    assert _shards(tmp_path / "many", 2) == one
    lines = [line for shard in one for line in shard.decode().splitlines()]
    assert sorted(json.loads(line)["row"] for line in lines) == list(range(300))
    for shard in one:
        entries = [(json.loads(line)["path"], line) for line in shard.decode().splitlines()]
        assert entries == sorted(entries)
    # The spills wait, as hidden temporaries, until the driver removes their folder.
    spills = list((tmp_path / "many" / SPILLS_DIR).iterdir())
    assert len(spills) > 10 and all(TEMP_MARKER in spill.name for spill in spills)
    remove_spills(str(tmp_path / "many"))
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == [
        "stats-00000-of-00002.jsonl",
        "stats-00001-of-00002.jsonl",
    ]


def test_write_atomically_takes_chunks_from_a_function_called_per_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr("petseg.beam.faults.WRITE_RETRY_DELAY_S", 0.01)
    rename = FileSystems.rename
    failures = [OSError(errno.EIO, "I/O error")]
    calls = []

    def flaky(sources, destinations):
        if failures:
            raise failures.pop()
        return rename(sources, destinations)

    def chunks():
        calls.append(1)
        yield from (b"a", b"bc", b"")

    monkeypatch.setattr(FileSystems, "rename", flaky)
    write_atomically(str(tmp_path / "x.jsonl"), chunks)
    assert (tmp_path / "x.jsonl").read_bytes() == b"abc" and len(calls) == 2


def test_write_json_lines_writes_an_empty_shard_for_no_records(tmp_path):
    directory = str(tmp_path / "errors")
    with test_pipeline.TestPipeline() as pipeline:
        _ = (
            pipeline
            | beam.Create([], reshuffle=False).with_output_types(tuple[str, str])
            | WriteTable(directory, "errors")
        )
    assert (tmp_path / "errors/errors-00000-of-00001.jsonl").read_bytes() == b""
