"""Training throughput: petseg's pipeline against the seed tutorial's recipe.

Both train the same U-Net (same size, width, frozen encoder, batch size) on
the same decoded images; only the input pipeline and the step set-up differ.
Throughput is timed over steps after warm-up (the first steps trace the
graph and fill the caches).
"""

from __future__ import annotations

import time

import keras
import tensorflow as tf

from benchmarks.common import median

TUTORIAL_BATCH = 64
TUTORIAL_BUFFER = 1000


class TutorialAugment(keras.layers.Layer):
    """The tutorial's ``Augment``: two RandomFlip layers sharing a seed."""

    def __init__(self, seed: int = 42):
        super().__init__()
        self.augment_inputs = keras.layers.RandomFlip(mode="horizontal", seed=seed)
        self.augment_labels = keras.layers.RandomFlip(mode="horizontal", seed=seed)

    def call(self, inputs, labels):
        return self.augment_inputs(inputs), self.augment_labels(labels)


def tutorial_batches(
    originals: tf.data.Dataset, image_size: int, batch_size: int
) -> tf.data.Dataset:
    """The tutorial's pipeline over ``(image uint8 [H, W, 3], trimap uint8 [H, W, 1])``."""

    def load_image(image, trimap):
        # As written in the tutorial: both resized bilinearly, image scaled to [0, 1].
        image = tf.image.resize(image, (image_size, image_size))
        mask = tf.image.resize(trimap, (image_size, image_size))
        return tf.cast(image, tf.float32) / 255.0, mask - 1

    images = originals.map(load_image, num_parallel_calls=tf.data.AUTOTUNE)
    return (
        images.cache()
        .shuffle(TUTORIAL_BUFFER)
        .batch(batch_size)
        .repeat()
        .map(TutorialAugment())
        .prefetch(buffer_size=tf.data.AUTOTUNE)
    )


def original_pairs(examples) -> tf.data.Dataset:
    """Decoded full-size ``(image, trimap)`` pairs, as TFDS hands them to the tutorial."""
    from petseg.imageio import decode_image, decode_mask

    def generate():
        for example in examples:
            with open(example.image_path, "rb") as file:
                image = decode_image(file.read())
            with open(example.mask_path, "rb") as file:
                trimap = decode_mask(file.read())
            yield image, trimap[:, :, None]

    return tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec([None, None, 3], tf.uint8),
            tf.TensorSpec([None, None, 1], tf.uint8),
        ),
    )


class StepTimer(keras.callbacks.Callback):
    """Records when each training step ends."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def _steps_per_second(
    model: keras.Model, batches: tf.data.Dataset, warmup: int, steps: int
) -> float:
    # One fit, timed between the end of the last warm-up step and the end of the last step.
    timer = StepTimer()
    model.fit(batches, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    return steps / (timer.ends[-1] - timer.ends[warmup - 1])


def tutorial_rate(
    examples, image_size: int, alpha: float, weights, warmup: int, steps: int
) -> float:
    """Images/s of the tutorial's recipe: its pipeline, Adam, accuracy only."""
    from petseg.model import build_unet

    keras.utils.set_random_seed(0)
    model = build_unet(image_size, alpha=alpha, encoder_weights=weights)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    batches = tutorial_batches(original_pairs(examples), image_size, TUTORIAL_BATCH)
    return TUTORIAL_BATCH * _steps_per_second(model, batches, warmup, steps)


def petseg_rate(
    examples,
    image_size: int,
    alpha: float,
    weights,
    warmup: int,
    steps: int,
    mixed_precision: bool = False,
) -> float:
    """Images/s of ``petseg.training``'s pipeline, model set-up and compile."""
    from petseg.config import TrainConfig
    from petseg.data import TRIMAP_TO_CLASS, AugmentConfig, files_dataset, train_batches
    from petseg.distribute import compute_policy_name, precision_policy
    from petseg.model import build_unet
    from petseg.training import compile_model

    config = TrainConfig(
        dataset="synthetic",
        image_size=image_size,
        alpha=alpha,
        encoder_weights=weights or "none",
        batch_size=TUTORIAL_BATCH,
        mixed_precision=mixed_precision,
    )
    keras.utils.set_random_seed(0)
    with precision_policy(
        compute_policy_name(mixed_precision, on_gpu=bool(tf.config.list_physical_devices("GPU")))
    ):
        model = build_unet(image_size, alpha=alpha, encoder_weights=weights)
        compile_model(model, config, config.learning_rate, warmup + steps)
        dataset = files_dataset(examples, image_size, TRIMAP_TO_CLASS)
        batches = train_batches(dataset, TUTORIAL_BATCH, AugmentConfig(flip=True))
        return TUTORIAL_BATCH * _steps_per_second(model, batches, warmup, steps)


def compare(
    examples, image_size: int, alpha: float, weights, warmup: int, steps: int, repeats: int
) -> dict:
    """Both recipes, alternated ``repeats`` times so drift in machine load hits both alike."""
    tutorial, ours, ours_mixed = [], [], []
    for _ in range(repeats):
        tutorial.append(tutorial_rate(examples, image_size, alpha, weights, warmup, steps))
        ours.append(petseg_rate(examples, image_size, alpha, weights, warmup, steps))
        ours_mixed.append(
            petseg_rate(examples, image_size, alpha, weights, warmup, steps, mixed_precision=True)
        )
    result = {
        "tutorial_images_per_second": median(tutorial),
        "petseg_images_per_second": median(ours),
        "petseg_mixed_precision_images_per_second": median(ours_mixed),
        "runs": {"tutorial": tutorial, "petseg": ours, "petseg_mixed_precision": ours_mixed},
        "batch_size": TUTORIAL_BATCH,
        "image_size": image_size,
        "alpha": alpha,
        "steps_timed": steps,
    }
    result["ms_per_step"] = {
        name: 1000.0 * TUTORIAL_BATCH / result[f"{name}_images_per_second"]
        for name in ("tutorial", "petseg", "petseg_mixed_precision")
    }
    result["speedup"] = result["petseg_images_per_second"] / result["tutorial_images_per_second"]
    result["speedup_mixed_precision"] = (
        result["petseg_mixed_precision_images_per_second"] / result["tutorial_images_per_second"]
    )
    return result
