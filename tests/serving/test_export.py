"""The exported SavedModel, reloaded in a fresh process, answers exactly as the Keras model."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from petseg.serving.export import load_serving_model, read_model_info
from petseg.training.model import build_unet

RELOAD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(sys.argv[1])
    serve = loaded.signatures["serving_default"]
    images = np.load(sys.argv[2])
    outputs = serve(images=tf.constant(images))
    np.save(sys.argv[3], outputs["probabilities"].numpy())
    np.save(sys.argv[4], outputs["mask"].numpy())
    """
)


@pytest.mark.slow
def test_saved_model_in_a_fresh_process_matches_keras(tmp_path):
    keras.utils.set_random_seed(1)
    model = build_unet(64, 3, alpha=0.35, encoder_weights=None, dropout=0.1)
    # One training step so BatchNorm statistics and weights are not at their initial values.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (4, 64, 64, 1), dtype=np.uint8)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(images.astype(np.float32), masks, epochs=1, batch_size=4, verbose=0)

    from petseg.training.export import export_model

    export_dir = str(tmp_path / "export")
    metadata = {
        "model_id": "petseg-unet-test",
        "class_names": ["pet", "background", "border"],
        "encoder": "mobilenet_v2",
        "alpha": 0.35,
        "metrics": {"pixel_accuracy": 0.5, "iou": {"pet": 0.1}, "mean_iou": 0.2},
    }
    export_model(model, export_dir, metadata)

    expected = keras.ops.convert_to_numpy(
        keras.ops.softmax(model(images.astype(np.float32), training=False), axis=-1)
    )
    np.save(tmp_path / "images.npy", images)
    process = subprocess.run(
        [
            sys.executable,
            "-c",
            RELOAD,
            export_dir,
            str(tmp_path / "images.npy"),
            str(tmp_path / "probabilities.npy"),
            str(tmp_path / "mask.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    probabilities = np.load(tmp_path / "probabilities.npy")
    mask = np.load(tmp_path / "mask.npy")
    assert probabilities.shape == (4, 64, 64, 3) and probabilities.dtype == np.float32
    assert np.abs(probabilities - expected).max() < 1e-4
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, probabilities.argmax(-1))

    info = read_model_info(export_dir)
    assert info.model_id == "petseg-unet-test" and info.image_size == 64
    with open(os.path.join(export_dir, "petseg.json")) as file:
        document = json.load(file)
    assert document["metrics"]["mean_iou"] == 0.2 and document["encoder"] == "mobilenet_v2"
    serve, _ = load_serving_model(export_dir)
    here = serve(images=images)["probabilities"].numpy()
    assert np.abs(here - expected).max() < 1e-4


def test_flip_averaging_export_serves_the_mean_of_image_and_mirror(tmp_path):
    from petseg.training.export import export_model

    keras.utils.set_random_seed(3)
    model = build_unet(32, 3, alpha=0.35, encoder_weights=None)
    export_dir = export_model(
        model,
        str(tmp_path / "export"),
        {"class_names": ["pet", "background", "border"]},
        flip_tta=True,
    )
    serve, info = load_serving_model(export_dir)
    images = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    served = serve(images=images)["probabilities"].numpy()
    plain = keras.ops.softmax(model(images.astype(np.float32))).numpy()
    mirrored = keras.ops.softmax(model(images[:, :, ::-1].astype(np.float32))).numpy()[:, :, ::-1]
    np.testing.assert_allclose(served, (plain + mirrored) / 2, atol=1e-5)
    assert np.abs(served - plain).max() > 1e-3  # the mirror really changed something
    assert info.metadata["test_time_augmentation"] == ["horizontal_flip"]


def test_export_stores_each_folded_weight_once_and_serves_through_the_saver_too(tmp_path):
    import tensorflow as tf

    from petseg.serving.export import read_meta_graph
    from petseg.training.export import export_model
    from petseg.training.folding import fold_batch_norm

    keras.utils.set_random_seed(5)
    model = build_unet(32, 3, alpha=0.35, encoder_weights=None)
    export_dir = export_model(
        model, str(tmp_path / "export"), {"class_names": ["pet", "background", "border"]}
    )
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    shapes = reader.get_variable_to_shape_map()
    stored = sum(int(np.prod(shape)) for name, shape in shapes.items() if "VARIABLE_VALUE" in name)
    assert stored == fold_batch_norm(model).count_params() < model.count_params()
    # The served graph computes no batch normalization; model.keras keeps them to train.
    ops = {
        node.op
        for function in read_meta_graph(export_dir).graph_def.library.function
        for node in function.node_def
    }
    assert "Conv2D" in ops and not any("BatchNorm" in op for op in ops)
    assert read_model_info(export_dir).metadata["batch_norm_folded"] is True
    reloaded = keras.saving.load_model(os.path.join(export_dir, "model.keras"))
    assert len(reloaded.weights) == len(model.weights)
    serve, _ = load_serving_model(export_dir)
    images = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    expected = keras.ops.softmax(model(images.astype(np.float32), training=False)).numpy()
    np.testing.assert_allclose(serve(images=images)["probabilities"].numpy(), expected, atol=1e-5)

    # Loaders that restore through the graph's saver, as TensorFlow Serving's
    # C++ loader does, still find every weight.
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], export_dir)
        signature = meta_graph.signature_def["serving_default"]
        served = session.run(
            signature.outputs["probabilities"].name, {signature.inputs["images"].name: images}
        )
    np.testing.assert_allclose(served, expected, atol=1e-5)
