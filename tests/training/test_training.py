"""Training: config, loss weighting, and the real ``train_and_evaluate`` on a shrunken config."""

import csv
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from petseg.classes import BORDER
from petseg.training.config import ConfigError, TrainConfig, parse_class_weights
from petseg.training.data import eval_batches, synthetic_dataset
from petseg.training.distribute import compute_policy_name, global_batch_size, parse_gpus

TINY = dict(
    dataset="synthetic",
    synthetic_count=8,
    image_size=32,
    alpha=0.35,
    encoder_weights="none",
    batch_size=4,
    steps_per_epoch=2,
    epochs=1,
    fine_tune_epochs=1,
    plot_examples=2,
)


def test_config_defaults_are_the_tutorial_recipe():
    config = TrainConfig()
    assert (config.image_size, config.batch_size, config.epochs) == (128, 64, 20)
    assert config.fine_tune_epochs == 0 and config.learning_rate == 1e-3
    assert config.source == "tfds"
    assert TrainConfig(data_dir="/data").source == "oxford_folder"


def test_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['epochz'\]"):
        TrainConfig.from_dict({"epochz": 3})
    for settings, message in [
        ({"image_size": 48}, "multiple of 32"),
        ({"image_size": 0}, "multiple of 32"),
        ({"alpha": 0.6}, "alpha must be one of"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"min_crop_scale": 0.05}, "min crop scale must be in"),
        ({"colour_jitter": 1.5}, "colour jitter must be in"),
        ({"serving_formats": ("tflite",)}, r"unknown serving format\(s\) \['tflite'\]"),
        ({"serving_formats": ("openvino-int8",)}, "openvino-int8 needs calibration images"),
    ]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**{**TINY, **settings})
    with pytest.raises(ConfigError, match="multiple of 32"):
        TrainConfig(image_size=100)
    with pytest.raises(ConfigError, match="3 values"):
        TrainConfig(class_weights=(1.0, 2.0))
    with pytest.raises(ConfigError, match="go together"):
        TrainConfig(images_dir="x")
    with pytest.raises(ConfigError, match="w0,w1,w2"):
        parse_class_weights("1,two,3")
    assert parse_class_weights("1,1,2.5") == (1.0, 1.0, 2.5)


def test_config_is_frozen_and_json_ready():
    config = TrainConfig(class_weights=[1, 1, 2])
    with pytest.raises(AttributeError):
        config.epochs = 3
    assert json.loads(json.dumps(config.to_dict()))["class_weights"] == [1.0, 1.0, 2.0]


def test_gpu_selection_and_global_batch():
    assert parse_gpus(None, 4) is None
    assert parse_gpus("2", 4) == [0, 1]
    assert parse_gpus("0", 0) == []
    assert parse_gpus("1,3", 4) == [1, 3]
    with pytest.raises(ConfigError, match="2 GPU"):
        parse_gpus("0,2", 2)
    with pytest.raises(ConfigError, match="count"):
        parse_gpus("two", 2)
    assert global_batch_size(4, 16) == 64
    assert global_batch_size(2, 16, 30) == 30
    with pytest.raises(ConfigError, match="global batch size 30 is not divisible by 4 replicas"):
        global_batch_size(4, 16, 30)
    assert compute_policy_name(True, on_gpu=True) == "mixed_float16"
    assert compute_policy_name(True, on_gpu=False) == "mixed_bfloat16"
    assert compute_policy_name(False, on_gpu=True) == "float32"


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probabilities, labels[..., None].astype(int), -1)[..., 0]


def test_class_weights_scale_each_class_contribution_to_the_loss():
    """Weighting the border by k multiplies the border pixels' share of the loss by k."""
    from petseg.training.loop import compile_model
    from petseg.training.model import build_unet

    model = build_unet(32, 3, alpha=0.35, encoder_weights=None)
    compile_model(model, TrainConfig(**TINY), 1e-3, 10)
    dataset = synthetic_dataset(4, 32, seed=5)
    images, masks = next(iter(eval_batches(dataset, 4)))
    labels = masks.numpy()[..., 0]
    assert (labels == BORDER).any()
    per_pixel = cross_entropy(model.predict_on_batch(images), labels)
    border = labels == BORDER

    losses = {}
    for k in (1.0, 3.0):
        batches = eval_batches(dataset, 4, class_weights=(1.0, 1.0, k))
        results = model.evaluate(batches, verbose=0, return_dict=True)
        losses[k] = results["loss"]
        # Keras' default reduction: sum of weighted pixel losses / number of pixels.
        expected = (per_pixel[~border].sum() + k * per_pixel[border].sum()) / per_pixel.size
        assert results["loss"] == pytest.approx(expected, rel=1e-4)
    assert losses[3.0] - losses[1.0] == pytest.approx(
        2 * per_pixel[border].sum() / per_pixel.size, rel=1e-3
    )
    # The metrics count pixels, whatever the weights.
    unweighted = model.evaluate(eval_batches(dataset, 4), verbose=0, return_dict=True)
    assert results["pixel_accuracy"] == pytest.approx(unweighted["pixel_accuracy"])


@pytest.mark.slow
def test_train_and_evaluate_runs_both_phases_and_exports(tmp_path):
    from petseg.serving.export import read_model_info
    from petseg.training.loop import train_and_evaluate

    config = TrainConfig(
        **TINY,
        class_weights=(1.0, 1.0, 2.0),
        min_crop_scale=0.7,
        colour_jitter=0.2,
        serving_formats=("openvino",),
    )
    workdir = tmp_path / "run"
    result = train_and_evaluate(config, str(workdir))

    assert (result.num_replicas, result.global_batch_size, result.steps_per_epoch) == (1, 4, 2)
    assert result.resumed_from_epoch == 0
    with open(workdir / "logs" / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [0, 1]  # fine-tuning continues the numbering
    for row in rows:
        assert math.isfinite(float(row["loss"])) and math.isfinite(float(row["val_loss"]))
        for key in ("val_pixel_accuracy", "val_mean_iou", "val_iou_pet", "val_iou_border"):
            assert 0.0 <= float(row[key]) <= 1.0
    assert result.history["epoch"] == [0.0, 1.0]

    metrics = result.metrics
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0 and 0.0 <= metrics["mean_iou"] <= 1.0
    assert set(metrics["iou"]) == {"pet", "background", "border"}
    # The final evaluation covers the whole evaluation split (2 synthetic images of 32 x 32).
    assert metrics["pixels"] == 2 * 32 * 32
    # The last epoch's Keras validation metrics are the same numbers.
    assert float(rows[-1]["val_pixel_accuracy"]) == pytest.approx(
        metrics["pixel_accuracy"], abs=1e-5
    )

    for name in ("epoch_001.png", "epoch_002.png", "curves.png", "confusion_matrix.png"):
        assert (workdir / "plots" / name).stat().st_size > 1000
    assert (workdir / "checkpoints" / "best.weights.h5").is_file()
    assert not (workdir / "backup").exists()  # a completed run leaves nothing to resume

    info = read_model_info(result.export_dir)
    assert info.model_id == result.model_id and info.model_id.startswith("petseg-unet-")
    assert info.image_size == 32 and info.class_names == ("pet", "background", "border")
    document = info.metadata
    assert document["encoder"] == "mobilenet_v2" and document["alpha"] == 0.35
    assert document["config"] == config.to_dict()
    assert document["metrics"]["mean_iou"] == pytest.approx(metrics["mean_iou"])
    assert os.path.isfile(os.path.join(result.export_dir, "model.keras"))
    assert list(document["formats"]) == ["openvino"]
    assert os.path.isfile(os.path.join(result.export_dir, "openvino", "model.bin"))
    # The global dtype policy is left as it was found.
    assert tf.keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_mixed_precision_trains_in_bfloat16_exports_float32_and_resets_the_policy(tmp_path):
    import keras

    from petseg.serving.export import read_model_info
    from petseg.training.loop import train_and_evaluate

    config = TrainConfig(
        **{**TINY, "fine_tune_epochs": 0, "steps_per_epoch": 1}, mixed_precision="on"
    )
    result = train_and_evaluate(config, str(tmp_path / "run"))
    assert math.isfinite(result.history["loss"][0])
    assert keras.mixed_precision.global_policy().name == "float32"
    assert read_model_info(result.export_dir).metadata["training"]["precision"] == "mixed_bfloat16"
    # Served in float32: masks do not depend on how the weights were trained.
    reloaded = keras.saving.load_model(
        os.path.join(result.export_dir, "model.keras"), compile=False
    )
    assert {layer.dtype_policy.name for layer in reloaded.layers} == {"float32"}
    # ... and so is the SavedModel's graph: no tensor in it is bfloat16.
    from petseg.serving.export import read_meta_graph

    library = read_meta_graph(result.export_dir).graph_def.library
    assert library.function
    assert "DT_BFLOAT16" not in str(library)


def test_mixed_precision_setting(monkeypatch):
    from petseg.training import distribute

    assert TrainConfig(mixed_precision=True).mixed_precision == "on"
    assert TrainConfig(mixed_precision=False).mixed_precision == "off"
    assert TrainConfig().mixed_precision == "auto"
    with pytest.raises(ConfigError, match="mixed precision must be one of"):
        TrainConfig(mixed_precision="sometimes")
    for native in (True, False):
        monkeypatch.setattr(distribute, "cpu_has_native_bfloat16", lambda native=native: native)
        monkeypatch.setattr(distribute, "gpus_have_tensor_cores", lambda native=native: native)
        expected_cpu, expected_gpu = (
            ("mixed_bfloat16", "mixed_float16") if native else ("float32", "float32")
        )
        assert compute_policy_name("auto", on_gpu=False) == expected_cpu
        assert compute_policy_name("auto", on_gpu=True) == expected_gpu
        assert compute_policy_name("on", on_gpu=False) == "mixed_bfloat16"
        assert compute_policy_name("off", on_gpu=True) == "float32"


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
    from petseg.training.distribute import cpu_has_native_bfloat16

    with_flag = tmp_path / "with"
    with_flag.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 sha_ni\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert cpu_has_native_bfloat16(str(with_flag))
    assert not cpu_has_native_bfloat16(str(without))
    assert not cpu_has_native_bfloat16(str(tmp_path / "missing"))


@pytest.mark.slow
def test_export_at_a_larger_size_with_flip_averaging_is_scored_as_served(tmp_path):
    from PIL import Image

    from petseg.serving.export import read_model_info
    from petseg.training.data import synthetic_example
    from petseg.training.evaluate import evaluate_export
    from petseg.training.loop import train_and_evaluate

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(10):
        image, mask = synthetic_example(index, 80)
        Image.fromarray(image).save(images / f"pet_{index}.png")
        Image.fromarray(mask[:, :, 0]).save(masks / f"pet_{index}.png")
    tiny = {**TINY, "dataset": "oxford_iiit_pet", "fine_tune_epochs": 0}
    config = TrainConfig(
        **tiny,
        images_dir=str(images),
        masks_dir=str(masks),
        mask_values="0:0,1:1,2:2",
        serve_image_size=64,
        tta_flip=True,
    )
    result = train_and_evaluate(config, str(tmp_path / "run"))
    info = read_model_info(result.export_dir)
    assert info.image_size == 64 and info.metadata["trained_image_size"] == 32
    assert info.metadata["test_time_augmentation"] == ["horizontal_flip"]
    # The scores in petseg.json are the served model's, at original resolution.
    assert info.metadata["metrics"]["resolution"] == "original"
    scores = evaluate_export(
        result.export_dir, images_dir=str(images), masks_dir=str(masks), mask_values="0:0,1:1,2:2"
    )
    held_out = info.metadata["metrics"]["pixels"]
    assert held_out == 2 * 80 * 80
    assert scores["pixels"] == 10 * 80 * 80  # evaluate scored every pair, not just the held-out
    assert 0.0 <= scores["mean_iou"] <= 1.0
