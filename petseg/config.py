"""The one training configuration: every default in one place, checked on creation.

``train.py`` builds a :class:`TrainConfig` from its flags; tests and notebooks
build one directly (or with :meth:`TrainConfig.from_dict`). The defaults are
the TensorFlow segmentation tutorial's recipe (128 px, batch 64, 20 epochs,
frozen encoder, Adam 1e-3, random flips), so ``python train.py --dataset
oxford_iiit_pet --epochs 20`` trains what the tutorial trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from petseg.classes import NUM_CLASSES

DATASETS = ("oxford_iiit_pet", "synthetic")
# --mixed-precision settings; see petseg.distribute.compute_policy_name.
PRECISIONS = ("auto", "on", "off")


class ConfigError(ValueError):
    """A configuration that cannot train; the message says which setting and why."""


def precision_setting(mixed_precision: str | bool) -> str:
    """A ``--mixed-precision`` setting as one of :data:`PRECISIONS`; a bool means on or off.

    Raises:
      ConfigError: an unknown setting.
    """
    if isinstance(mixed_precision, bool):
        return "on" if mixed_precision else "off"
    if mixed_precision not in PRECISIONS:
        raise ConfigError(f"mixed precision must be one of {PRECISIONS}, got {mixed_precision!r}")
    return mixed_precision


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on.

    Attributes:
      dataset: ``oxford_iiit_pet`` (TFDS, or the folder ``data_dir``) or ``synthetic``.
      data_dir: an Oxford-layout folder (``images/``, ``annotations/``); trains
        on ``trainval.txt`` and evaluates on ``test.txt``. None: TFDS.
      tfds_data_dir: TFDS's data directory (None: TFDS's default).
      images_dir: a paired folder of images (with ``masks_dir``), instead of Oxford data.
      masks_dir: the masks matching ``images_dir`` by file stem.
      mask_values: stored mask value -> class index for paired masks, e.g. ``"0:1,255:0"``.
      val_fraction: share of paired examples held out for evaluation.
      synthetic_count: number of synthetic training examples (evaluation gets a quarter).
      image_size: model input side S during training, a multiple of 32.
      serve_image_size: the exported model's input side (None: ``image_size``);
        the trained weights run at any multiple of 32.
      tta_flip: the export averages each image's probabilities with its
        mirror image's (test-time augmentation).
      alpha: MobileNetV2 width multiplier.
      encoder_weights: ``imagenet``, ``none`` or a local ``.h5`` path.
      dropout: dropout rate in the decoder blocks.
      epochs: epochs with the encoder frozen.
      fine_tune_epochs: further epochs with the encoder unfrozen (0: none).
      fine_tune_from: first encoder layer to unfreeze (None: the whole encoder).
      learning_rate: Adam learning rate of the frozen phase.
      fine_tune_learning_rate: Adam learning rate of the fine-tuning phase.
      lr_schedule: ``constant``, or ``cosine`` decay to zero within each phase.
      batch_size: examples per replica per step.
      global_batch_size: if set, the global batch instead (must divide by the replicas).
      steps_per_epoch: training steps per epoch (None: one pass over the training set).
      class_weights: per-class loss weights (pet, background, border), or None.
      flip: random horizontal flips.
      min_crop_scale: smallest random square crop, as a fraction of the side (1: no crops).
      colour_jitter: strength of brightness/contrast/saturation jitter (0: none).
      shuffle_buffer: training shuffle buffer, in examples.
      mixed_precision: ``auto`` (float16 compute on GPUs with tensor cores,
        bfloat16 on CPUs with native bfloat16, float32 elsewhere), ``on``
        (float16 on GPUs, bfloat16 on CPUs) or ``off``; weights, logits and the
        exported model stay float32 (``True``/``False`` read as on/off).
      gpus: GPUs to use: None for all visible, ``"N"`` for the first N
        (``"0"``: CPU only), or a list of indices ``"0,2"``.
      validation_freq: run the full evaluation split every this many epochs
        (1: every epoch; the final evaluation always runs).
      plot_examples: validation images drawn in each epoch's prediction panel.
      seed: seed of weights initialisation, shuffling and augmentation.
      strict: read every data file before training and refuse bad ones.
    """

    dataset: str = "oxford_iiit_pet"
    data_dir: str | None = None
    tfds_data_dir: str | None = None
    images_dir: str | None = None
    masks_dir: str | None = None
    mask_values: str = "0:1,255:0"
    val_fraction: float = 0.2
    synthetic_count: int = 64
    image_size: int = 128
    serve_image_size: int | None = None
    tta_flip: bool = False
    alpha: float = 1.0
    encoder_weights: str = "imagenet"
    dropout: float = 0.0
    epochs: int = 20
    fine_tune_epochs: int = 0
    fine_tune_from: str | None = None
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    batch_size: int = 64
    global_batch_size: int | None = None
    steps_per_epoch: int | None = None
    class_weights: tuple[float, ...] | None = None
    flip: bool = True
    min_crop_scale: float = 1.0
    colour_jitter: float = 0.0
    shuffle_buffer: int = 1000
    mixed_precision: str = "auto"
    gpus: str | None = None
    validation_freq: int = 1
    plot_examples: int = 3
    seed: int = 0
    strict: bool = False

    def __post_init__(self):
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
        object.__setattr__(self, "mixed_precision", precision_setting(self.mixed_precision))
        self._check()

    def _check(self) -> None:
        # Imported here so `train.py --help` answers without loading TensorFlow.
        from petseg.model import VALID_ALPHAS

        def require(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(message)

        require(
            self.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {self.dataset!r}"
        )
        require(
            self.image_size >= 32 and self.image_size % 32 == 0,
            f"image size must be a multiple of 32 and at least 32, got {self.image_size}",
        )
        require(
            self.serve_image_size is None
            or (self.serve_image_size >= 32 and self.serve_image_size % 32 == 0),
            f"serve image size must be a multiple of 32 and at least 32, got {self.serve_image_size}",
        )
        require(
            self.alpha in VALID_ALPHAS, f"alpha must be one of {VALID_ALPHAS}, got {self.alpha}"
        )
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        require(
            self.fine_tune_epochs >= 0,
            f"fine-tune epochs must be 0 or more, got {self.fine_tune_epochs}",
        )
        for name in ("learning_rate", "fine_tune_learning_rate"):
            value = getattr(self, name)
            require(value > 0, f"{name.replace('_', ' ')} must be positive, got {value}")
        require(
            self.lr_schedule in ("constant", "cosine"),
            f"lr schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}",
        )
        require(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        require(
            self.global_batch_size is None or self.global_batch_size >= 1,
            f"global batch size must be at least 1, got {self.global_batch_size}",
        )
        require(
            self.steps_per_epoch is None or self.steps_per_epoch >= 1,
            f"steps per epoch must be at least 1, got {self.steps_per_epoch}",
        )
        if self.class_weights is not None:
            require(
                len(self.class_weights) == NUM_CLASSES,
                f"class weights need {NUM_CLASSES} values (pet, background, border), "
                f"got {len(self.class_weights)}: {self.class_weights}",
            )
            require(
                all(weight >= 0 for weight in self.class_weights)
                and any(weight > 0 for weight in self.class_weights),
                f"class weights must be non-negative and not all zero, got {self.class_weights}",
            )
        require(
            0.1 <= self.min_crop_scale <= 1.0,
            f"min crop scale must be in [0.1, 1], got {self.min_crop_scale}",
        )
        require(
            0.0 <= self.colour_jitter <= 1.0,
            f"colour jitter must be in [0, 1], got {self.colour_jitter}",
        )
        require(
            self.shuffle_buffer >= 1, f"shuffle buffer must be positive, got {self.shuffle_buffer}"
        )
        require(
            self.synthetic_count >= 2,
            f"synthetic count must be at least 2, got {self.synthetic_count}",
        )
        require(
            0.0 < self.val_fraction < 1.0,
            f"val fraction must be in (0, 1), got {self.val_fraction}",
        )
        require(
            (self.images_dir is None) == (self.masks_dir is None),
            "--images-dir and --masks-dir go together",
        )
        require(
            not (self.images_dir and self.data_dir),
            "use either --data-dir (Oxford layout) or --images-dir/--masks-dir, not both",
        )
        require(
            not (self.dataset == "synthetic" and (self.data_dir or self.images_dir)),
            "--dataset synthetic reads no files; drop --data-dir/--images-dir",
        )
        require(
            self.plot_examples >= 0, f"plot examples must be 0 or more, got {self.plot_examples}"
        )

    @property
    def serving_size(self) -> int:
        """The exported model's input side."""
        return self.serve_image_size or self.image_size

    @property
    def total_epochs(self) -> int:
        """Frozen plus fine-tuning epochs: the last epoch number of the run."""
        return self.epochs + self.fine_tune_epochs

    @property
    def source(self) -> str:
        """Where the examples come from: ``synthetic``, ``paired``, ``oxford_folder`` or ``tfds``."""
        if self.dataset == "synthetic":
            return "synthetic"
        if self.images_dir:
            return "paired"
        return "oxford_folder" if self.data_dir else "tfds"

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values (as stored in ``petseg.json``)."""
        values = dataclasses.asdict(self)
        if values["class_weights"] is not None:
            values["class_weights"] = list(values["class_weights"])
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Builds a config from a mapping; unknown keys are errors, not ignored.

        Raises:
          ConfigError: an unknown key or an invalid value.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def parse_class_weights(text: str) -> tuple[float, ...]:
    """Parses ``"1,1,2.5"`` into ``(1.0, 1.0, 2.5)``.

    Raises:
      ConfigError: not a comma-separated list of numbers.
    """
    try:
        return tuple(float(item) for item in text.split(","))
    except ValueError:
        raise ConfigError(f"class weights look like w0,w1,w2 (numbers), got {text!r}") from None
