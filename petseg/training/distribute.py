"""Device placement: which strategy trains, how big the global batch is, which precision.

One process drives every GPU of the machine with ``MirroredStrategy``: each
replica gets ``batch_size`` examples of every global batch and gradients are
all-reduced before each update. Without GPUs the default strategy runs on the
CPU, unless several logical CPU devices were configured (as tests do to get a
real two-replica strategy on any machine).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import keras
import tensorflow as tf

from petseg.training.config import ConfigError, precision_setting

logger = logging.getLogger(__name__)


def parse_gpus(spec: str | None, available: int) -> list[int] | None:
    """Turns ``--gpus`` into GPU indices.

    Args:
      spec: None (every visible GPU), a count ``"N"`` (the first N; ``"0"``
        means CPU only), or a comma-separated list of indices ``"0,2"``
        (a trailing comma makes one index a list: ``"1,"``).
      available: number of visible GPUs.

    Returns:
      The indices to use, or None for every visible GPU.

    Raises:
      ConfigError: malformed, or asks for GPUs that are not there.
    """
    if spec is None or spec.strip() in ("", "all"):
        return None
    text = spec.strip()
    try:
        if "," in text:
            indices = [int(item) for item in text.split(",") if item.strip()]
        else:
            indices = list(range(int(text)))
    except ValueError:
        raise ConfigError(
            f"--gpus takes a count (2) or a list of indices (0,1), got {spec!r}"
        ) from None
    if any(index < 0 for index in indices) or len(set(indices)) != len(indices):
        raise ConfigError(f"--gpus indices must be distinct and non-negative, got {spec!r}")
    missing = [index for index in indices if index >= available]
    if missing:
        raise ConfigError(
            f"--gpus {spec} asks for GPU(s) {missing} but {available} GPU(s) are visible"
        )
    return indices


def make_strategy(gpus: str | None = None) -> tf.distribute.Strategy:
    """The strategy to build and train the model under.

    Args:
      gpus: the ``--gpus`` value (see :func:`parse_gpus`).

    Returns:
      ``MirroredStrategy`` over the chosen GPUs (or over several logical CPU
      devices when no GPU is used and more than one is configured), else the
      default strategy.

    Raises:
      ConfigError: ``gpus`` asks for GPUs that are not there.
    """
    physical = tf.config.list_physical_devices("GPU")
    indices = parse_gpus(gpus, len(physical))
    if physical and indices != []:
        logical = tf.config.list_logical_devices("GPU")
        chosen = logical if indices is None else [logical[index] for index in indices]
        return tf.distribute.MirroredStrategy([device.name for device in chosen])
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in cpus])
    return tf.distribute.get_strategy()


def global_batch_size(num_replicas: int, per_replica: int, global_size: int | None = None) -> int:
    """The global batch: ``per_replica`` x replicas, or ``global_size`` if it divides.

    Raises:
      ConfigError: ``global_size`` does not split evenly over the replicas.
    """
    if global_size is None:
        return per_replica * num_replicas
    if global_size % num_replicas:
        raise ConfigError(
            f"global batch size {global_size} is not divisible by {num_replicas} replicas; "
            f"use a multiple of {num_replicas} or --batch-size (per replica)"
        )
    return global_size


# CPU features that compute bfloat16 dot products natively (AVX-512 BF16, AMX).
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively; elsewhere it is emulated, and slower."""
    try:
        with open(cpuinfo, encoding="utf-8") as file:
            flags = next((line.split() for line in file if line.startswith("flags")), [])
    except OSError:  # Not Linux: assume not.
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def gpus_have_tensor_cores() -> bool:
    """Whether every visible GPU has float16 tensor cores (compute capability 7.0 or later)."""
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        for gpu in gpus
    ]
    return bool(gpus) and all(tuple(capability) >= (7, 0) for capability in capabilities)


def compute_policy_name(mixed_precision: str | bool, on_gpu: bool) -> str:
    """The Keras dtype policy for ``--mixed-precision`` on this hardware.

    ``on``: ``mixed_float16`` on GPUs, ``mixed_bfloat16`` on CPUs. ``auto``:
    the same where the hardware computes it natively (tensor cores;
    AVX-512 BF16 or AMX), else ``float32``. ``off``: ``float32``. A bool
    means on or off.

    Raises:
      ConfigError: an unknown setting.
    """
    mixed_precision = precision_setting(mixed_precision)
    if mixed_precision == "off":
        return "float32"
    if mixed_precision == "auto":
        native = gpus_have_tensor_cores() if on_gpu else cpu_has_native_bfloat16()
        if not native:
            return "float32"
    return "mixed_float16" if on_gpu else "mixed_bfloat16"


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Sets Keras' global dtype policy for the block and restores the previous one after.

    Models are built inside the block; the policy is global state, so leaving
    it set would silently change every later model in the process.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def uses_gpu(strategy: tf.distribute.Strategy) -> bool:
    """Whether the strategy's replicas run on GPUs."""
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: one device, the CPU or the first GPU
        return bool(tf.config.list_logical_devices("GPU"))
    return any("GPU" in device.upper() for device in devices)
