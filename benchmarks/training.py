"""Training: petseg's recipe against the seed tutorial's, same model size, same batch, same data.

The tutorial's recipe is rebuilt here as its notebook writes it: its model
(MobileNetV2 and pix2pix upsample blocks made of Keras' own layers, fed
float [0, 1] pixels), its pipeline (cache, shuffle, batch 64, repeat, the
``Augment`` flip layers mapped over batches, prefetch) and its compile
(Adam, accuracy). petseg's side is ``petseg.training``'s own pieces: its
model, input pipeline, compile and precision policy. Both train with the
encoder frozen, as the tutorial does.

Throughput is timed over steps after warm-up (the first steps trace the
graph and fill the caches). Accuracy is compared after the tutorial's 20
epochs of each recipe, on the held-out test images, scored alike at the
model's size.
"""

from __future__ import annotations

import time

import keras
import tensorflow as tf

from benchmarks.common import median
from benchmarks.portable import portable_unet

TUTORIAL_BATCH = 64
TUTORIAL_BUFFER = 1000
TUTORIAL_EPOCHS = 20


class TutorialAugment(keras.layers.Layer):
    """The tutorial's ``Augment``: two RandomFlip layers sharing a seed."""

    def __init__(self, seed: int = 42):
        super().__init__()
        self.augment_inputs = keras.layers.RandomFlip(mode="horizontal", seed=seed)
        self.augment_labels = keras.layers.RandomFlip(mode="horizontal", seed=seed)

    def call(self, inputs, labels):
        return self.augment_inputs(inputs), self.augment_labels(labels)


def tutorial_unet(image_size: int, alpha: float, weights: str | None) -> keras.Model:
    """The tutorial's ``unet_model(3)``, with its frozen ``down_stack``, fed [0, 1] pixels."""
    from petseg.classes import NUM_CLASSES
    from petseg.model import DECODER_FILTERS, SKIP_LAYER_NAMES

    return portable_unet(
        image_size,
        alpha,
        NUM_CLASSES,
        SKIP_LAYER_NAMES,
        DECODER_FILTERS,
        encoder_weights=weights,
        scale_inputs=False,
        name="tutorial_unet",
    )


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


class Recipe:
    """A compiled model, its training stream, and the scale its model wants pixels at."""

    def __init__(
        self,
        name: str,
        model: keras.Model,
        batches: tf.data.Dataset,
        policy: str,
        pixel_scale: float,
    ):
        self.name = name
        self.model = model
        self.batches = batches
        self.policy = policy
        self.pixel_scale = pixel_scale


class TutorialRecipe(Recipe):
    def __init__(self, examples, image_size: int, alpha: float, weights: str | None):
        keras.utils.set_random_seed(0)
        model = tutorial_unet(image_size, alpha, weights)
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        batches = tutorial_batches(original_pairs(examples), image_size, TUTORIAL_BATCH)
        # The tutorial feeds [0, 1]; petseg's model scales 0-255 itself.
        super().__init__("tutorial", model, batches, "float32", 1.0 / 255.0)


class PetsegRecipe(Recipe):
    def __init__(
        self, examples, image_size: int, alpha: float, weights: str | None, mixed_precision: str
    ):
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
        policy = compute_policy_name(
            mixed_precision, on_gpu=bool(tf.config.list_physical_devices("GPU"))
        )
        keras.utils.set_random_seed(0)
        with precision_policy(policy):
            model = build_unet(image_size, alpha=alpha, encoder_weights=weights)
            compile_model(model, config, config.learning_rate, 1)
        dataset = files_dataset(examples, image_size, TRIMAP_TO_CLASS)
        batches = train_batches(dataset, TUTORIAL_BATCH, AugmentConfig(flip=True))
        super().__init__(f"petseg ({policy})", model, batches, policy, 1.0)


class StepTimer(keras.callbacks.Callback):
    """Records when each training step ends."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def images_per_second(recipe: Recipe, warmup: int, steps: int) -> float:
    """One fit, timed from the end of the last warm-up step to the end of the last step."""
    timer = StepTimer()
    recipe.model.fit(
        recipe.batches, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer]
    )
    return TUTORIAL_BATCH * steps / (timer.ends[-1] - timer.ends[warmup - 1])


def pipeline_ms_per_batch(batches: tf.data.Dataset, warmup: int, count: int) -> dict:
    """The input pipeline alone: wall and CPU milliseconds per batch, once its cache is full."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        next(iterator)
    return {
        "wall_ms": 1000 * (time.perf_counter() - started) / count,
        "cpu_ms": 1000 * (time.process_time() - cpu) / count,
    }


def scores_on(recipe: Recipe, test_examples, image_size: int) -> dict:
    """Pixel accuracy and IoUs on the test pairs, at the model's size, the same labels for all."""
    from petseg.classes import CLASS_NAMES
    from petseg.data import TRIMAP_TO_CLASS, eval_batches, files_dataset
    from petseg.metrics import metrics_from_confusion
    from petseg.training import model_confusion

    batches = eval_batches(files_dataset(test_examples, image_size, TRIMAP_TO_CLASS), 16).map(
        lambda images, masks: (images * recipe.pixel_scale, masks)
    )
    return metrics_from_confusion(model_confusion(recipe.model, batches), CLASS_NAMES)


def compare_throughput(
    examples, image_size: int, alpha: float, warmup: int, steps: int, repeats: int
) -> dict:
    """Images/s of the tutorial, petseg as configured by default and petseg in float32.

    The three alternate ``repeats`` times, so drift in machine load hits all alike.
    """
    makers = {
        "tutorial": lambda: TutorialRecipe(examples, image_size, alpha, None),
        "petseg": lambda: PetsegRecipe(examples, image_size, alpha, None, "auto"),
        "petseg_float32": lambda: PetsegRecipe(examples, image_size, alpha, None, "off"),
    }
    runs: dict[str, list[float]] = {name: [] for name in makers}
    policies, pipelines = {}, {}
    for round_number in range(repeats):
        for name, make in makers.items():
            recipe = make()
            policies[name] = recipe.policy
            if round_number == 0:
                pipelines[name] = pipeline_ms_per_batch(recipe.batches, warmup, steps)
            runs[name].append(images_per_second(recipe, warmup, steps))
        print(
            "  round "
            f"{round_number + 1}: "
            + ", ".join(f"{name} {values[-1]:.1f}" for name, values in runs.items())
            + " images/s",
            flush=True,
        )
    result = {
        "images_per_second": {name: median(values) for name, values in runs.items()},
        "runs": runs,
        "policies": policies,
        "input_pipeline": pipelines,
        "batch_size": TUTORIAL_BATCH,
        "image_size": image_size,
        "alpha": alpha,
        "steps_timed": steps,
    }
    result["ms_per_step"] = {
        name: 1000.0 * TUTORIAL_BATCH / rate for name, rate in result["images_per_second"].items()
    }
    tutorial = result["images_per_second"]["tutorial"]
    result["speedup"] = {
        name: rate / tutorial for name, rate in result["images_per_second"].items()
    }
    return result


def compare_accuracy(
    train_examples, test_examples, image_size: int, alpha: float, weights: str, epochs: int
) -> dict:
    """Both recipes from the same ImageNet encoder for ``epochs`` epochs, scored on the test set."""
    steps = max(1, len(train_examples) // TUTORIAL_BATCH)
    recipes = {
        "tutorial": TutorialRecipe(train_examples, image_size, alpha, weights),
        "petseg": PetsegRecipe(train_examples, image_size, alpha, weights, "auto"),
    }
    result = {"epochs": epochs, "steps_per_epoch": steps, "test_images": len(test_examples)}
    for name, recipe in recipes.items():
        started = time.perf_counter()
        recipe.model.fit(recipe.batches, epochs=epochs, steps_per_epoch=steps, verbose=0)
        seconds = time.perf_counter() - started
        scores = scores_on(recipe, test_examples, image_size)
        result[name] = {
            "pixel_accuracy": scores["pixel_accuracy"],
            "mean_iou": scores["mean_iou"],
            "iou": scores["iou"],
            "training_seconds": seconds,
            "policy": recipe.policy,
        }
        print(
            f"  {name}: pixel accuracy {scores['pixel_accuracy']:.3f}, mean IoU "
            f"{scores['mean_iou']:.3f} after {epochs} epochs ({seconds:.0f} s)",
            flush=True,
        )
    return result
