"""Training: petseg's recipe against the seed tutorial's, same model size, batch and data.

The tutorial's recipe is rebuilt as its notebook writes it: its model
(Keras' stock layers, fed float [0, 1] pixels), input pipeline and compile.
petseg's is ``petseg.training.loop``'s own model, input pipeline, compile and
precision policy. Both train with the encoder frozen.
"""

from __future__ import annotations

import os
import statistics
import time

import keras
import tensorflow as tf

from benchmarks.common import Sizes, rate

TUTORIAL_BATCH = 64
TUTORIAL_BUFFER = 1000
# The seed tutorial's recipe, petseg's with --mixed-precision auto, and with off.
RECIPES = ("tutorial", "petseg", "petseg_float32")


def tutorial_unet(image_size: int, alpha: float, weights: str | None) -> keras.Model:
    """The tutorial's ``unet_model(3)`` from Keras' stock layers: a frozen MobileNetV2
    ``down_stack`` and pix2pix upsample blocks (without dropout), each followed by a
    ``Concatenate`` with its skip; float [0, 1] input, float32 logits."""
    from keras.layers import Conv2DTranspose

    from petseg.classes import NUM_CLASSES
    from petseg.training.model import DECODER_FILTERS, SKIP_LAYER_NAMES

    shape, init = (image_size, image_size, 3), keras.initializers.RandomNormal(stddev=0.02)
    base = keras.applications.MobileNetV2(shape, alpha=alpha, include_top=False, weights=weights)
    skip_outputs = [base.get_layer(name).output for name in SKIP_LAYER_NAMES]
    down_stack = keras.Model(base.input, skip_outputs, name="down_stack")
    down_stack.trainable = False
    inputs = keras.Input(shape=shape, name="images")
    skips = down_stack(inputs, training=False)
    x = skips[-1]
    for filters, skip in zip(DECODER_FILTERS, reversed(skips[:-1]), strict=True):
        up = Conv2DTranspose(filters, 3, 2, "same", use_bias=False, kernel_initializer=init)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(up(x)))
        x = keras.layers.Concatenate()([x, skip])
    logits = Conv2DTranspose(NUM_CLASSES, 3, 2, "same", dtype="float32")(x)
    return keras.Model(inputs, logits, name="tutorial_unet")


def tutorial_batches(examples, image_size: int) -> tf.data.Dataset:
    """The tutorial's pipeline over decoded full-size pairs, as TFDS hands them over:
    both resized bilinearly, pixels scaled to [0, 1], trimap minus 1; cache, shuffle,
    batch, repeat, random flips of each batch, prefetch."""
    from petseg.imageio import decode_image, decode_mask

    def pairs():
        for example in examples:
            with open(example.image_path, "rb") as image, open(example.mask_path, "rb") as trimap:
                yield decode_image(image.read()), decode_mask(trimap.read())[:, :, None]

    def load_image(image, trimap):
        size = (image_size, image_size)
        image = tf.image.resize(image, size)
        return tf.cast(image, tf.float32) / 255.0, tf.image.resize(trimap, size) - 1

    # The tutorial's Augment layer: two RandomFlip layers sharing a seed, mapped over batches.
    flip_images, flip_masks = (keras.layers.RandomFlip("horizontal", seed=42) for _ in range(2))
    signature = (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, None, 1], tf.uint8))
    return (
        tf.data.Dataset.from_generator(pairs, output_signature=signature)
        .map(load_image, num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .shuffle(TUTORIAL_BUFFER)
        .batch(TUTORIAL_BATCH)
        .repeat()
        .map(lambda images, masks: (flip_images(images), flip_masks(masks)))
        .prefetch(buffer_size=tf.data.AUTOTUNE)
    )


def make_recipe(
    name: str, examples, image_size: int, alpha: float, weights: str | None
) -> tuple[keras.Model, tf.data.Dataset, str]:
    """One of :data:`RECIPES` as a compiled model, its endless training stream and its policy:
    the tutorial's model, pipeline and compile (Adam, accuracy) in float32, or petseg's
    model, input pipeline (flips) and compile under the policy of ``--mixed-precision
    auto`` (``petseg``) or ``off`` (``petseg_float32``)."""
    from petseg.training.data import TRIMAP_TO_CLASS, AugmentConfig, files_dataset, train_batches
    from petseg.training.distribute import compute_policy_name

    keras.utils.set_random_seed(0)
    if name == "tutorial":
        model = tutorial_unet(image_size, alpha, weights)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
        return model, tutorial_batches(examples, image_size), "float32"
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = compute_policy_name("auto" if name == "petseg" else "off", on_gpu=on_gpu)
    dataset = files_dataset(examples, image_size, TRIMAP_TO_CLASS)
    batches = train_batches(dataset, TUTORIAL_BATCH, AugmentConfig(flip=True))
    return petseg_model(image_size, alpha, weights, policy), batches, policy


def petseg_model(image_size: int, alpha: float, weights: str | None, policy: str) -> keras.Model:
    """petseg's U-Net, encoder frozen, built and compiled under ``policy`` as training does."""
    from petseg.training.config import TrainConfig
    from petseg.training.distribute import precision_policy
    from petseg.training.loop import compile_model
    from petseg.training.model import build_unet

    config = TrainConfig(dataset="synthetic")
    with precision_policy(policy):
        model = build_unet(image_size, alpha=alpha, encoder_weights=weights)
        compile_model(model, config, config.learning_rate, 1)
    return model


def images_per_second(model: keras.Model, batches, warmup: int, steps: int) -> float:
    """One fit of ``warmup + steps`` steps, timed from the end of the last warm-up step."""
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    model.fit(batches, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    return TUTORIAL_BATCH * steps / (ends[-1] - ends[warmup - 1])


def pipeline_ms_per_batch(batches: tf.data.Dataset, warmup: int, count: int) -> float:
    """The input pipeline alone: milliseconds per batch after ``warmup`` batches."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    return 1000 / rate(lambda: next(iterator), 1, count)["images_per_second"]  # a batch a call


def compare_throughput(examples, image_size: int, alpha: float, warmup, steps, repeats) -> dict:
    """Images/s of every recipe, alternated ``repeats`` times, from random init; each
    recipe's policy and its input pipeline's ms per batch (timed once) besides."""
    result: dict[str, dict] = {name: {"runs": []} for name in RECIPES}
    for round_number in range(repeats):
        for name in RECIPES:
            model, batches, policy = make_recipe(name, examples, image_size, alpha, None)
            if round_number == 0:
                pipeline_ms = pipeline_ms_per_batch(batches, warmup, steps)
                result[name].update(policy=policy, input_pipeline_ms=pipeline_ms)
            result[name]["runs"].append(images_per_second(model, batches, warmup, steps))
        rates = [f"{name} {figures['runs'][-1]:.1f}" for name, figures in result.items()]
        print(f"  round {round_number + 1}: {', '.join(rates)} images/s", flush=True)
    tutorial = statistics.median(result["tutorial"]["runs"])
    for figures in result.values():
        speed = statistics.median(figures["runs"])
        figures.update(images_per_second=speed, ms_per_step=1000 * TUTORIAL_BATCH / speed)
        figures["speedup"] = speed / tutorial
    return result


def compare_accuracy(train_examples, test_examples, image_size, alpha, weights, epochs) -> dict:
    """The tutorial and petseg from the same encoder ``weights`` for ``epochs`` epochs each,
    scored on the test pairs at ``image_size``."""
    from petseg.classes import CLASS_NAMES
    from petseg.training.data import TRIMAP_TO_CLASS, eval_batches, files_dataset
    from petseg.training.loop import model_confusion
    from petseg.training.metrics import metrics_from_confusion

    steps = max(1, len(train_examples) // TUTORIAL_BATCH)
    result: dict = {"epochs": epochs, "steps_per_epoch": steps, "test_images": len(test_examples)}
    test_pairs = eval_batches(files_dataset(test_examples, image_size, TRIMAP_TO_CLASS), 16)
    for name in ("tutorial", "petseg"):
        model, batches, policy = make_recipe(name, train_examples, image_size, alpha, weights)
        started = time.perf_counter()
        model.fit(batches, epochs=epochs, steps_per_epoch=steps, verbose=0)
        seconds = time.perf_counter() - started
        # The tutorial's model takes [0, 1] pixels, petseg's 0-255.
        scale = 1.0 / 255.0 if name == "tutorial" else 1.0
        scaled = test_pairs.map(lambda images, masks, scale=scale: (images * scale, masks))
        scores = metrics_from_confusion(model_confusion(model, scaled), CLASS_NAMES)
        result[name] = {key: scores[key] for key in ("pixel_accuracy", "mean_iou", "iou")}
        result[name].update(training_seconds=seconds, policy=policy)
        print(f"  {name}: {result[name]} after {epochs} epochs", flush=True)
    return result


def measure(workdir: str, sizes: Sizes) -> dict:
    """:func:`compare_throughput` on the Oxford sample's trainval images (else 300
    synthetic pets), then :func:`compare_accuracy` where ``sizes`` asks for it and alpha
    1.0, the sample and the ImageNet weights are at hand."""
    from petseg.training.data import oxford_examples, write_synthetic_files

    sample = os.environ.get("PETSEG_OXFORD_SAMPLE", "")
    weights = os.environ.get("PETSEG_ENCODER_WEIGHTS", "")
    has_sample = os.path.isdir(os.path.join(sample, "images"))
    if has_sample:
        examples = oxford_examples(sample, "trainval")
        data = f"Oxford-IIIT Pet sample, {len(examples)} trainval images"
    else:
        folder = os.path.join(workdir, "synthetic-pets")
        os.makedirs(folder, exist_ok=True)
        examples = write_synthetic_files(folder, folder, 300, 256)
        data = "300 synthetic pets (PETSEG_OXFORD_SAMPLE absent)"
    print(f"training: {data}, {sizes}", flush=True)
    size, alpha = sizes.train_size, sizes.alpha
    steps = (sizes.warmup_steps, sizes.train_steps, sizes.repeats)
    recipes = compare_throughput(examples, size, alpha, *steps)
    result = {"data": data, "batch_size": TUTORIAL_BATCH, "recipes": recipes, "accuracy": None}
    # The shared ImageNet weights are MobileNetV2's alpha 1.0.
    if sizes.accuracy_epochs and has_sample and os.path.isfile(weights) and alpha == 1.0:
        test = oxford_examples(sample, "test")
        epochs = sizes.accuracy_epochs
        result["accuracy"] = compare_accuracy(examples, test, size, alpha, weights, epochs)
    return result
