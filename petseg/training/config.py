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

from petseg.classes import DEFAULT_MASK_VALUES, NUM_CLASSES
from petseg.settings import option

DATASETS = ("oxford_iiit_pet", "synthetic")
# MobileNetV2's width multipliers with ImageNet weights (petseg.training.model builds these).
VALID_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# --mixed-precision settings; see petseg.training.distribute.compute_policy_name.
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


def parse_serving_formats(text: str) -> tuple[str, ...]:
    """``"openvino,onnx"`` -> ``("openvino", "onnx")``; ``""`` -> none (checked by the config)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_class_weights(text: str) -> tuple[float, ...]:
    """Parses ``"1,1,2.5"`` into ``(1.0, 1.0, 2.5)``.

    Raises:
      ConfigError: not a comma-separated list of numbers.
    """
    try:
        return tuple(float(item) for item in text.split(","))
    except ValueError:
        raise ConfigError(f"class weights look like w0,w1,w2 (numbers), got {text!r}") from None


def require(condition: bool, message: str) -> None:
    """Raises :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on.

    Each field is also ``train.py``'s flag of the same name (``image_size`` is
    ``--image-size``), built from the field's type, default and help here.
    """

    dataset: str = option(
        "oxford_iiit_pet",
        "data set: the Oxford-IIIT Pet (TFDS, or the folder --data-dir) or synthetic pets",
        group="data",
        choices=DATASETS,
    )
    data_dir: str | None = option(
        None,
        "Oxford-IIIT Pet folder (images/, annotations/trimaps/, trainval.txt, test.txt) "
        "instead of the TFDS download; trains on trainval.txt, evaluates on test.txt",
        group="data",
    )
    tfds_data_dir: str | None = option(
        None, "TFDS data directory (default: TFDS's own)", group="data"
    )
    images_dir: str | None = option(
        None, "paired folder of images (with --masks-dir)", group="data"
    )
    masks_dir: str | None = option(None, "masks matching --images-dir by file stem", group="data")
    mask_values: str = option(
        DEFAULT_MASK_VALUES,
        "stored mask value -> class index for --masks-dir (0 pet, 1 background, 2 border)",
        group="data",
    )
    labels: tuple[str, ...] | None = option(
        None,
        "corrected labels: a COCO file with segmentation masks or a Label Studio JSON "
        "export (brush labels), next to its images; repeatable. With --data-dir or "
        "--images-dir they join the training split only; alone, --val-fraction of them "
        "is held out",
        group="data",
        metavar="FILE",
    )
    labels_image_root: str | None = option(
        None,
        "folder that a Label Studio export's local-storage images (/data/local-files/?d=PATH) "
        "are found under (default: the export's folder)",
        group="data",
        metavar="DIR",
    )
    val_fraction: float = option(
        0.2, "share of paired (or --labels only) examples held out for evaluation", group="data"
    )
    synthetic_count: int = option(
        64, "synthetic training examples (evaluation: a quarter as many)", group="data"
    )
    strict: bool = option(False, "read every file first; refuse bad pairs", group="data")
    image_size: int = option(128, "input side during training, a multiple of 32", group="model")
    alpha: float = option(1.0, "MobileNetV2 width multiplier", group="model")
    encoder_weights: str = option(
        "imagenet",
        "encoder initialisation: Keras' ImageNet download, random, or a local .h5 file",
        group="model",
        metavar="{imagenet,none,PATH}",
    )
    dropout: float = option(0.0, "decoder dropout", group="model")
    serve_image_size: int | None = option(
        None,
        "input side of the exported model (default: --image-size); a multiple of 32",
        group="model",
    )
    tta_flip: bool = option(
        False,
        "the exported model averages each image with its mirror image (2x inference cost)",
        group="model",
    )
    serving_formats: tuple[str, ...] = option(
        (),
        "serving formats to write beside the SavedModel, comma-separated: openvino, onnx "
        "(docs/segment.md, 'Backends'); 'petseg export-formats' adds them later",
        group="model",
        parse=parse_serving_formats,
        metavar="FORMATS",
    )
    epochs: int = option(20, "epochs with the encoder frozen", group="optimisation")
    fine_tune_epochs: int = option(
        0, "further epochs with the encoder unfrozen (numbering continues)", group="optimisation"
    )
    fine_tune_from: str | None = option(
        None,
        "first encoder layer to unfreeze, e.g. block_13_expand (default: all)",
        group="optimisation",
        metavar="LAYER",
    )
    learning_rate: float = option(1e-3, "Adam, frozen phase", group="optimisation")
    fine_tune_learning_rate: float = option(1e-4, "Adam, fine-tuning phase", group="optimisation")
    lr_schedule: str = option(
        "constant",
        "constant, or cosine decay to 0 within each phase",
        group="optimisation",
        choices=("constant", "cosine"),
    )
    batch_size: int = option(
        64,
        "examples per replica; the global batch is this x replicas",
        group="optimisation",
    )
    global_batch_size: int | None = option(
        None,
        "global batch instead of --batch-size; must divide by the replicas",
        group="optimisation",
    )
    steps_per_epoch: int | None = option(
        None,
        "training steps per epoch (default: training examples // global batch)",
        group="optimisation",
    )
    class_weights: tuple[float, ...] | None = option(
        None,
        "per-pixel loss weights of pet,background,border (default: none)",
        group="optimisation",
        metavar="w0,w1,w2",
        parse=parse_class_weights,
    )
    seed: int = option(
        0, "seed of initialisation, shuffling and augmentation", group="optimisation"
    )
    flip: bool = option(True, "random horizontal flips", group="augmentation")
    min_crop_scale: float = option(
        1.0,
        "random square crops of at least this fraction of the side, resized back (1: off)",
        group="augmentation",
    )
    colour_jitter: float = option(
        0.0,
        "brightness/contrast/saturation jitter strength in [0, 1] (0: off)",
        group="augmentation",
        aliases=("--color-jitter",),
    )
    shuffle_buffer: int = option(1000, "shuffle buffer, in examples", group="augmentation")
    gpus: str | None = option(
        None,
        "GPUs to mirror over: a count (2; 0 = CPU) or indices (0,1); default: all visible",
        group="devices and outputs",
    )
    mixed_precision: str = option(
        "auto",
        "float16 (GPU) / bfloat16 (CPU) compute with float32 weights: auto where the "
        "hardware computes it natively; on (the flag alone); off. Weights, logits and the "
        "export stay float32",
        group="devices and outputs",
        choices=PRECISIONS,
        const="on",
    )
    validation_freq: int = option(
        1,
        "evaluate on the full evaluation split every N epochs (the final evaluation always runs)",
        group="devices and outputs",
    )
    plot_examples: int = option(
        3, "validation images in each epoch's prediction panel", group="devices and outputs"
    )

    def __post_init__(self):
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
        object.__setattr__(self, "mixed_precision", precision_setting(self.mixed_precision))
        # From JSON (petseg.json, a resumed run's config) a list; a tuple like the flag's.
        object.__setattr__(self, "serving_formats", tuple(self.serving_formats))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        self._check()

    def _check(self) -> None:
        self._check_model()
        self._check_schedule()
        self._check_data()
        self._check_sources()

    def _check_model(self) -> None:
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
        from petseg.serving.formats import CALIBRATED, FORMATS

        unknown = [name for name in self.serving_formats if name not in FORMATS]
        require(not unknown, f"unknown serving format(s) {unknown}; known: {sorted(FORMATS)}")
        require(
            not CALIBRATED & set(self.serving_formats),
            "openvino-int8 needs calibration images: add it to the export with 'petseg "
            "export-formats EXPORT --format openvino-int8 --calibration-images DIR'",
        )

    def _check_schedule(self) -> None:
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

    def _check_data(self) -> None:
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
            self.plot_examples >= 0, f"plot examples must be 0 or more, got {self.plot_examples}"
        )

    def _check_sources(self) -> None:
        require(
            (self.images_dir is None) == (self.masks_dir is None),
            "--images-dir and --masks-dir go together",
        )
        require(
            not (self.images_dir and self.data_dir),
            "use either --data-dir (Oxford layout) or --images-dir/--masks-dir, not both",
        )
        require(
            not (self.dataset == "synthetic" and (self.data_dir or self.images_dir or self.labels)),
            "--dataset synthetic reads no files; drop --data-dir/--images-dir/--labels",
        )
        require(
            all(path.strip() for path in self.labels or ()),
            "--labels needs a file, got an empty name",
        )
        require(
            self.labels_image_root is None or bool(self.labels),
            "--labels-image-root applies to Label Studio exports: add --labels FILE",
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
        """Where the examples come from: ``synthetic``, ``paired``, ``oxford_folder``,
        ``labels`` (``--labels`` alone) or ``tfds``.

        With ``--data-dir`` or ``--images-dir``, ``--labels`` joins that source's
        training split, and the source is that folder's.
        """
        if self.dataset == "synthetic":
            return "synthetic"
        if self.images_dir:
            return "paired"
        if self.data_dir:
            return "oxford_folder"
        return "labels" if self.labels else "tfds"

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values (as stored in ``petseg.json``)."""
        values = dataclasses.asdict(self)
        values["serving_formats"] = list(values["serving_formats"])
        if values["labels"] is not None:
            values["labels"] = list(values["labels"])
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
