"""The SavedModel ModelHandler against a real tiny export."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from petseg.beam.faults import EnvironmentFault
from petseg.beam.inference import InferProbabilities, PetsegModelHandler, ServingModel
from petseg.beam.records import ImageKey, SourceImage
from tests.beam_helpers import MODEL_ID, MODEL_SIZE, shared_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(shared_tiny_model(tmp_path_factory))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (MODEL_SIZE, MODEL_SIZE, 3), dtype=np.uint8) for _ in range(5)]


def test_load_model_reads_the_export_and_its_metadata(model_dir):
    model = PetsegModelHandler(model_dir).load_model()
    assert isinstance(model, ServingModel)
    assert model.model_id == MODEL_ID and model.image_size == MODEL_SIZE


def test_a_model_that_cannot_load_is_an_environment_fault(tmp_path):
    # Checked on the driver before the job starts, so on a worker it is the
    # worker's storage or setup that failed: the runner retries, no image fails.
    with pytest.raises(EnvironmentFault, match="cannot load the model .*missing.*not found"):
        PetsegModelHandler(str(tmp_path / "missing")).load_model()


def test_run_inference_returns_probabilities_per_image(model_dir, images):
    handler = PetsegModelHandler(model_dir, max_batch_size=4)
    results = list(handler.run_inference(images[:3], handler.load_model()))
    assert len(results) == 3
    for image, result in zip(images[:3], results, strict=True):
        assert result.example is image
        assert result.model_id == MODEL_ID
        assert result.inference.shape == (MODEL_SIZE, MODEL_SIZE, 3)
        assert result.inference.dtype == np.float32
        np.testing.assert_allclose(result.inference.sum(-1), 1.0, atol=1e-5)


def test_batches_run_at_a_fixed_shape_so_companions_do_not_matter(model_dir, images):
    # Five images through a handler of fixed batch 4: one full batch, one padded.
    handler = PetsegModelHandler(model_dir, max_batch_size=4)
    model = handler.load_model()
    together = [result.inference for result in handler.run_inference(images, model)]
    for index in (0, 4):
        alone = next(iter(handler.run_inference([images[index]], model))).inference
        np.testing.assert_array_equal(alone, together[index])


def test_batch_elements_kwargs_follow_the_flags(model_dir):
    handler = PetsegModelHandler(model_dir, min_batch_size=2, max_batch_size=8)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 2, "max_batch_size": 8}
    assert handler.get_num_bytes([np.zeros((4, 4, 3), np.uint8)] * 2) == 96
    assert not handler.share_model_across_processes()


def test_run_inference_transform_with_the_real_model(model_dir, images):
    keys = [
        ImageKey(SourceImage(f"/in/{index}.png", f"{index}.png", 0, f"masks/{index}.png"), 10, 20)
        for index in range(len(images))
    ]
    handler = PetsegModelHandler(model_dir, max_batch_size=2)
    model = handler.load_model()
    expected = {
        key.source.path: int(result.inference.argmax(-1).sum())
        for key, result in zip(keys, handler.run_inference(images, model), strict=True)
    }
    with test_pipeline.TestPipeline() as pipeline:
        predictions = (
            pipeline
            | beam.Create(list(zip(keys, images, strict=True)))
            | InferProbabilities(handler)
        )
        assert_that(
            predictions
            | beam.Map(
                lambda element: (
                    element[0].source.path,
                    int(element[1].inference.argmax(-1).sum()),
                    element[1].model_id,
                )
            ),
            equal_to([(path, total, MODEL_ID) for path, total in expected.items()]),
        )


def test_model_sharing_and_the_accelerator_hint_reach_runinference(model_dir):
    plain = PetsegModelHandler(model_dir, max_batch_size=4)
    assert not plain.share_model_across_processes() and plain.get_resource_hints() == {}
    shared = PetsegModelHandler(model_dir, max_batch_size=4, share_model=True)
    assert shared.share_model_across_processes() and shared.model_copies() == 1
    copies = PetsegModelHandler(model_dir, max_batch_size=4, model_copies=2)
    assert copies.share_model_across_processes() and copies.model_copies() == 2
    hint = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    gpu = PetsegModelHandler(model_dir, accelerator=hint)
    assert gpu.get_resource_hints() == {"accelerator": hint}


def test_the_accelerator_hint_is_on_the_inference_step_only(model_dir):
    hint = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    pipeline = beam.Pipeline()
    keys = [ImageKey(SourceImage("/in/a.png", "a.png", 0, "masks/a.png"), 4, 4)]
    image = np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.uint8)
    _ = (
        pipeline
        | beam.Create([(keys[0], image)])
        | InferProbabilities(PetsegModelHandler(model_dir, accelerator=hint))
    )
    proto = pipeline.to_runner_api()
    hinted = {
        transform.unique_name
        for transform in proto.components.transforms.values()
        if any(
            "accelerator" in urn
            for urn in proto.components.environments[transform.environment_id].resource_hints
        )
        if transform.environment_id
    }
    assert hinted and all("RunInference" in name for name in hinted)


def test_a_served_model_answers_through_its_methods(model_dir, images):
    # A shared model is reached by proxy, which carries method calls, not attributes.
    model = PetsegModelHandler(model_dir).load_model()
    assert model.identity() == MODEL_ID
    assert model.probabilities(np.stack(images[:2])).shape == (2, MODEL_SIZE, MODEL_SIZE, 3)
