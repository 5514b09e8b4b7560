"""``train_and_evaluate(config, workdir)``: the whole training run, resumable.

1. Checks the config, picks the strategy (:mod:`petseg.training.distribute`) and the
   global batch (``batch_size`` per replica x replicas).
2. Loads the training and evaluation splits (:mod:`petseg.training.data`).
3. Builds and compiles the U-Net inside the strategy's scope; trains with the
   encoder frozen, then (``fine_tune_epochs``) unfrozen with a lower learning
   rate, epoch numbers continuing. The encoder's BatchNorm stays in inference
   mode throughout (the model calls it with ``training=False``).
4. Evaluates on the full evaluation split, draws the pictures, exports the
   SavedModel with its ``petseg.json``.

A run killed at any point resumes from its last finished epoch when started
again with the same config and workdir. A workdir in a bucket (``gs://``,
``s3://``...) is worked on in a local copy, pushed after every epoch and at
the end (:mod:`petseg.storage`), so it resumes the same way.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from petseg.classes import CLASS_NAMES, NUM_CLASSES
from petseg.serving.formats import write_formats
from petseg.storage import is_remote, mirrored_folder
from petseg.training.callbacks import (
    PredictionPanel,
    Workdir,
    best_so_far,
    read_history,
    tensorboard_available,
    training_callbacks,
)
from petseg.training.config import TrainConfig
from petseg.training.data import AugmentConfig, eval_batches, train_batches
from petseg.training.distribute import (
    compute_policy_name,
    global_batch_size,
    make_strategy,
    precision_policy,
    uses_gpu,
)
from petseg.training.evaluate import evaluate_examples, serving_predictor
from petseg.training.export import export_model, serving_function
from petseg.training.folding import fold_batch_norm
from petseg.training.inputs import Datasets, load_datasets
from petseg.training.metrics import (
    confusion_matrix,
    format_metrics,
    metrics_from_confusion,
    segmentation_metrics,
)
from petseg.training.model import build_unet, resize_unet, set_encoder_trainable
from petseg.training.plots import save_confusion_matrix, save_curves

logger = logging.getLogger(__name__)

ENCODER = "mobilenet_v2"


@dataclass(frozen=True)
class TrainingResult:
    """What a finished run reports.

    Attributes:
      metrics: final evaluation (``pixel_accuracy``, ``iou`` per class, ``mean_iou``...).
      history: per-epoch logs of the whole run (across resumes), from the CSV.
      export_dir: the exported model.
      model_id: the export's id.
      num_replicas: replicas the strategy trained on.
      global_batch_size: examples per step over all replicas.
      steps_per_epoch: training steps per epoch.
      resumed_from_epoch: epochs already finished when this call started (0: fresh).
    """

    metrics: dict[str, Any]
    history: dict[str, list[float]]
    export_dir: str
    model_id: str
    num_replicas: int
    global_batch_size: int
    steps_per_epoch: int
    resumed_from_epoch: int


def compile_model(
    model: keras.Model, config: TrainConfig, learning_rate: float, phase_steps: int
) -> None:
    """Adam + per-pixel cross-entropy on logits + the segmentation metrics.

    Class weights are not the loss's business: they arrive as per-pixel
    sample weights from the input pipeline, and Keras multiplies each pixel's
    loss by its weight before averaging.
    """
    if config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, phase_steps)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=segmentation_metrics(CLASS_NAMES),
    )


def model_confusion(model: keras.Model, batches: tf.data.Dataset) -> np.ndarray:
    """Confusion matrix of ``model`` over an evaluation stream, at the model's size."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for batch in batches:
        images, masks = batch[0], batch[1]
        predicted = np.argmax(keras.ops.convert_to_numpy(model(images, training=False)), axis=-1)
        matrix += confusion_matrix(masks.numpy()[..., 0], predicted, NUM_CLASSES)
    return matrix


def final_evaluation(
    serve, model: keras.Model, config: TrainConfig, data: Datasets, batch_size: int
) -> tuple[np.ndarray, str]:
    """Confusion matrix on the full evaluation split, and at which resolution.

    File-based splits are scored at each image's original resolution through
    the serving function that is about to be exported (its size and test-time
    augmentation included), exactly as ``train.py evaluate`` scores the
    export; generated ones at the model's size.
    """
    if data.eval_files:
        matrix, _ = evaluate_examples(
            serving_predictor(serve),
            data.eval_files,
            config.serving_size,
            data.value_map,
            NUM_CLASSES,
        )
        return matrix, "original"
    return model_confusion(model, eval_batches(data.eval, batch_size)), "model"


def _model_id(config: TrainConfig) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    return f"petseg-unet-{stamp}-{digest[:8]}"


def _fit_phase(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset,
    steps_per_epoch: int,
    validation_freq: int,
    first_epoch: int,
    last_epoch: int,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    # BackupAndRestore moves the start forward through this attribute; clear
    # any value left by an earlier phase so each fit starts where it says.
    model._initial_epoch = None
    with warnings.catch_warnings():
        # Epochs without validation (validation_freq > 1) have nothing to compare.
        warnings.filterwarnings("ignore", message="Can save best model only with")
        # File sources skip unreadable pairs, so the evaluation split's length is
        # unknown to Keras, which then calls its normal end "running out of data".
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        model.fit(
            train,
            epochs=last_epoch,
            initial_epoch=first_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation,
            validation_freq=validation_freq,
            callbacks=callbacks,
            verbose=2,
        )


@dataclass
class _Training:
    """What the steps of one training run share (see :func:`train_and_evaluate`)."""

    config: TrainConfig
    paths: Workdir
    strategy: tf.distribute.Strategy
    batch_size: int
    data: Datasets
    steps_per_epoch: int
    train: tf.data.Dataset
    validation: tf.data.Dataset
    panel: tuple[Any, Any]
    resumed_epochs: int
    previous_history: dict[str, list[float]]
    policy: str

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def train_and_evaluate(config: TrainConfig, workdir: str) -> TrainingResult:
    """Trains, evaluates and exports a U-Net as ``config`` says, with outputs in ``workdir``.

    Args:
      config: the run's settings.
      workdir: output folder (see :mod:`petseg.training.callbacks` for its layout), local
        or in a bucket; rerunning with the same config resumes an interrupted run.

    Returns:
      The run's :class:`TrainingResult`.

    Raises:
      ConfigError: the config cannot run here (e.g. batch not divisible by the replicas).
      DataSourceError: the data cannot be loaded.
      EncoderWeightsError: the encoder's weights cannot be had.
    """
    if is_remote(workdir):
        with mirrored_folder(workdir) as mirror:
            result = _train_and_evaluate(config, mirror.local, mirror.push)
        return replace(result, export_dir=f"{mirror.url}/{os.path.basename(result.export_dir)}")
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(
    config: TrainConfig, workdir: str, after_epoch: Callable[[], None] | None = None
) -> TrainingResult:
    """:func:`train_and_evaluate` in a local ``workdir``; ``after_epoch`` runs after each epoch."""
    started = time.perf_counter()
    run = _prepare(config, workdir)
    with precision_policy(run.policy):
        model = _build_model(run)
        _train(model, run, after_epoch)
        serving_model = _serving_model(model, run)
        # Folded once, for the final evaluation and the export alike.
        network = fold_batch_norm(serving_model)
        evaluation, history = _evaluate(network, model, run)
        model_id = _export(serving_model, network, evaluation, run)
    # Only now is the run complete: a kill before this line resumes, after it restarts.
    shutil.rmtree(run.paths.backup, ignore_errors=True)
    logger.info(
        "exported %s to %s in %.0f s", model_id, run.paths.export, time.perf_counter() - started
    )
    return TrainingResult(
        metrics=evaluation,
        history=history,
        export_dir=run.paths.export,
        model_id=model_id,
        num_replicas=run.replicas,
        global_batch_size=run.batch_size,
        steps_per_epoch=run.steps_per_epoch,
        resumed_from_epoch=run.resumed_epochs,
    )


def epoch_steps(config: TrainConfig, num_train: int, batch_size: int) -> int:
    """Training steps per epoch: ``--steps-per-epoch``, else one pass over the training split."""
    return config.steps_per_epoch or max(1, num_train // batch_size)


def training_batches(config: TrainConfig, data: Datasets, batch_size: int) -> tf.data.Dataset:
    """The training split as ``config`` trains on it: augmented, shuffled, weighted, batched."""
    augment = AugmentConfig(config.flip, config.min_crop_scale, config.colour_jitter)
    return train_batches(
        data.train, batch_size, augment, config.shuffle_buffer, config.class_weights, config.seed
    )


def _prepare(config: TrainConfig, workdir: str) -> _Training:
    """The workdir, the strategy, the data and what a resumed run already did."""
    paths = Workdir(workdir)
    paths.make()
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.gpus)
    replicas = strategy.num_replicas_in_sync
    batch_size = global_batch_size(replicas, config.batch_size, config.global_batch_size)
    logger.info(
        "strategy %s: %d replica(s), global batch %d (%d per replica)",
        type(strategy).__name__,
        replicas,
        batch_size,
        batch_size // replicas,
    )
    data = load_datasets(config)
    steps_per_epoch = epoch_steps(config, data.num_train, batch_size)
    logger.info(
        "data %s: %d training / %d evaluation examples; %d steps per epoch",
        data.description,
        data.num_train,
        data.num_eval,
        steps_per_epoch,
    )
    train = training_batches(config, data, batch_size)
    validation = eval_batches(data.eval, batch_size)
    panel = data.panel(config.plot_examples)
    if not tensorboard_available():
        logger.warning(
            "tensorboard is not installed: no %s (pip install tensorboard)", paths.tensorboard
        )
    done = paths.finished_epochs()
    if done:
        logger.info("resuming from %s: %d epoch(s) already finished", paths.backup, done)
    elif os.path.exists(paths.backup):
        shutil.rmtree(paths.backup)
    return _Training(
        config=config,
        paths=paths,
        strategy=strategy,
        batch_size=batch_size,
        data=data,
        steps_per_epoch=steps_per_epoch,
        train=train,
        validation=validation,
        panel=panel,
        resumed_epochs=done,
        previous_history=read_history(paths.history_csv, before_epoch=done) if done else {},
        policy=compute_policy_name(config.mixed_precision, uses_gpu(strategy)),
    )


def _build_model(run: _Training) -> keras.Model:
    """The U-Net with its encoder frozen, built and compiled in the strategy's scope."""
    config = run.config
    with run.strategy.scope():
        model = build_unet(
            config.image_size,
            NUM_CLASSES,
            config.alpha,
            config.encoder_weights,
            trainable_encoder=False,
            dropout=config.dropout,
        )
        compile_model(model, config, config.learning_rate, config.epochs * run.steps_per_epoch)
    logger.info("model %s: %d parameters, policy %s", model.name, model.count_params(), run.policy)
    return model


def _train(model: keras.Model, run: _Training, after_epoch: Callable[[], None] | None) -> None:
    """The frozen phase, then fine-tuning, each skipped where a resumed run is past it;
    ``after_epoch`` runs after each epoch's files are written."""
    config, paths = run.config, run.paths
    panel_images, panel_masks = run.panel
    panel = PredictionPanel(panel_images, panel_masks, paths.plots) if len(panel_images) else None

    def callbacks(phase: str) -> list[keras.callbacks.Callback]:
        history = read_history(paths.history_csv)
        # Only a fresh run starts a new CSV; resumes and the second phase append.
        append = bool(run.resumed_epochs) or phase == "fine-tune"
        return training_callbacks(
            paths,
            config.total_epochs,
            phase,
            append,
            best_so_far(history) if append else None,
            panel,
            after_epoch,
        )

    def fit(first_epoch: int, last_epoch: int, phase: str) -> None:
        _fit_phase(
            model,
            run.train,
            run.validation,
            run.steps_per_epoch,
            config.validation_freq,
            first_epoch,
            last_epoch,
            callbacks(phase),
        )

    # Skip the frozen phase only when a resume is past it and fine-tuning
    # will restore the weights; otherwise its fit restores them (or trains).
    if run.resumed_epochs < config.epochs or not config.fine_tune_epochs:
        fit(0, config.epochs, "frozen")
    if not config.fine_tune_epochs:
        return
    with run.strategy.scope():
        set_encoder_trainable(model, True, config.fine_tune_from)
        compile_model(
            model,
            config,
            config.fine_tune_learning_rate,
            config.fine_tune_epochs * run.steps_per_epoch,
        )
    with warnings.catch_warnings():
        # Restoring the frozen phase's backup into the new optimizer skips
        # the old optimizer's slots on purpose: fine-tuning starts Adam afresh.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        fit(config.epochs, config.total_epochs, "fine-tune")


def _serving_model(model: keras.Model, run: _Training) -> keras.Model:
    """The trained network as the export serves it: float32, at the serving size."""
    config = run.config
    serving_model = model
    if run.policy != "float32" or config.serving_size != config.image_size:
        # Served in float32 whatever precision trained the weights, so a
        # worker's masks depend neither on that nor on its hardware.
        with precision_policy("float32"):
            serving_model = resize_unet(model, config.serving_size, config.alpha, config.dropout)
    return serving_model


def _evaluate(
    network: keras.Model, model: keras.Model, run: _Training
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The final evaluation (what the export will score) and the run's history, with plots."""
    config, paths, data = run.config, run.paths, run.data
    serve = serving_function(network, config.serving_size, config.tta_flip, folded=True)
    matrix, resolution = final_evaluation(serve, model, config, data, run.batch_size)
    metrics = metrics_from_confusion(matrix, CLASS_NAMES)
    logger.info("final evaluation (%s resolution): %s", resolution, format_metrics(metrics))
    history = read_history(paths.history_csv) or run.previous_history
    save_curves(
        history,
        os.path.join(paths.plots, "curves.png"),
        config.epochs + 1 if config.fine_tune_epochs else 0,
    )
    save_confusion_matrix(
        matrix,
        os.path.join(paths.plots, "confusion_matrix.png"),
        CLASS_NAMES,
        f"{data.eval_split} split, {resolution} resolution",
    )
    return {**metrics, "split": data.eval_split, "resolution": resolution}, history


def _export(
    serving_model: keras.Model, network: keras.Model, evaluation: dict[str, Any], run: _Training
) -> str:
    """Exports ``network`` to serve and ``serving_model`` to train on; returns the model's id."""
    config = run.config
    model_id = _model_id(config)
    metadata = {
        "model_id": model_id,
        "class_names": list(CLASS_NAMES),
        "image_size": config.serving_size,
        "trained_image_size": config.image_size,
        "encoder": ENCODER,
        "alpha": config.alpha,
        "config": config.to_dict(),
        "metrics": evaluation,
        "training": {
            "replicas": run.replicas,
            "global_batch_size": run.batch_size,
            "steps_per_epoch": run.steps_per_epoch,
            "epochs": config.total_epochs,
            "precision": run.policy,
            "data": run.data.description,
        },
    }
    export_model(
        serving_model, run.paths.export, metadata, flip_tta=config.tta_flip, network=network
    )
    if config.serving_formats:
        write_formats(run.paths.export, config.serving_formats)
    return model_id
