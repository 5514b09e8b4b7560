"""The U-Net's own compute on an accelerator: how fast a GPU worker could serve and train it.

Two halves, since a GPU machine may have Keras and an accelerated backend
(JAX, PyTorch) but no TensorFlow:

    # where petseg is installed: make bench's model (or --model EXPORT_DIR)
    # as a stock-layer network, checked against petseg's own, with reference outputs
    python -m benchmarks.gpu export --out runs/bench/gpu-model

    # on the GPU machine, with Keras and JAX (this half imports no TensorFlow)
    KERAS_BACKEND=jax python -m benchmarks.gpu measure --model runs/bench/gpu-model --out OUT

``make bench-gpu`` runs both on one machine with TensorFlow, which times a
GPU only where TensorFlow has one.

``export`` moves the weights of a trained petseg model into
:func:`benchmarks.portable.portable_unet` (the same network from Keras' stock
layers), checks on this machine that both give the same logits, and saves
the weights, the network's shape and a reference batch with petseg's logits.

``measure`` first checks the backend's logits against that reference, and
times nothing unless the float32 network gives petseg's mask on at least
99 % of the pixels, nor where Keras sees no accelerator (``--allow-cpu``
times the CPU). Then, in each precision policy:

- *serving*: the network plus softmax and argmax (what petseg's
  ``serving_default`` returns) on uint8 batches from host memory, results
  back in host memory, as a Beam worker would call it: images/s;
- *one image a call*: the same at batch 1, through ``predict_on_batch``
  (the naive loop's ``model.predict`` adds Keras' per-call overhead);
- *training*: one optimizer step of the network on a batch of 64 from host
  memory, encoder frozen as in the training benchmark: images/s and ms per
  step. This is the stock-layer network's compute, not petseg's own layers.

Every figure is the median of several timed rounds after warm-up calls
(which compile). Results go to ``gpu.json`` after every measurement, so a
run cut short keeps what it measured, and a table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np

# benchmarks.common imports petseg (and so TensorFlow) only inside its functions.
from benchmarks.common import BENCH_ALPHA, BENCH_IMAGE_SIZE, export_bench_model, median

SHAPE_FILE = "portable.json"
WEIGHTS_FILE = "portable.weights.h5"
REFERENCE_FILE = "reference.npz"
RESULTS_FILE = "gpu.json"
# The training benchmark's batch; the job's default inference batch is 32.
TRAIN_BATCH = 64
REFERENCE_BATCH = 8
# Relative error of the exported network against petseg's model on the same backend.
EXPORT_TOLERANCE = 1e-4
# The least share of mask pixels a backend's float32 network must give as
# petseg's model does before it is timed (GPUs may compute float32
# convolutions in TF32, which moves logits by about 1e-3, masks hardly).
FLOAT32_MASK_AGREEMENT = 0.99


class MeasureError(RuntimeError):
    """This backend cannot be measured as asked."""


def _save_json(path: str, document: dict) -> None:
    """Writes ``path`` whole or not at all.

    ``petseg.beam.write.write_json`` does the same, but importing it would
    bring Beam and TensorFlow into the measuring half.
    """
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as file:
        try:
            json.dump(document, file, indent=2)
        except BaseException:
            file.close()
            os.unlink(file.name)
            raise
    os.chmod(file.name, 0o644)
    os.replace(file.name, path)


def relative_error(values: np.ndarray, reference: np.ndarray) -> float:
    """``||values - reference|| / ||reference||`` in float64."""
    reference = np.asarray(reference, np.float64)
    return float(
        np.linalg.norm(np.asarray(values, np.float64) - reference) / np.linalg.norm(reference)
    )


def export(export_dir: str, out: str) -> dict:
    """Writes the bench model at ``export_dir`` as a stock-layer network to ``out``.

    Raises:
      ValueError: the stock-layer network does not reproduce petseg's logits.
    """
    from benchmarks.portable import portable_unet
    from petseg.classes import NUM_CLASSES
    from petseg.export import KERAS_FILE, read_model_info, staged_directory
    from petseg.model import DECODER_FILTERS, SKIP_LAYER_NAMES, VALID_ALPHAS

    info = read_model_info(export_dir)
    if info.metadata.get("test_time_augmentation"):
        raise ValueError(
            f"{export_dir} serves with test-time augmentation "
            f"({', '.join(info.metadata['test_time_augmentation'])}), one network pass per "
            "view; export a model without it"
        )
    # The weights are all this needs: no optimizer, no metrics.
    model = keras.models.load_model(os.path.join(export_dir, KERAS_FILE), compile=False)
    shape = {
        "image_size": info.image_size,
        "num_classes": NUM_CLASSES,
        "skip_layer_names": list(SKIP_LAYER_NAMES),
        "decoder_filters": list(DECODER_FILTERS),
    }
    # petseg.json records the width of models train.py made; any other
    # export gets the width its weights fit.
    recorded = info.metadata.get("alpha")
    weights = model.get_weights()
    for alpha in [float(recorded)] if recorded is not None else VALID_ALPHAS:
        network = portable_unet(alpha=alpha, **shape)
        if [w.shape for w in network.get_weights()] == [w.shape for w in weights]:
            break
    else:
        raise ValueError(f"{export_dir}: the model's weights fit no MobileNetV2 width")
    network.set_weights(weights)
    shape["alpha"] = alpha

    rng = np.random.default_rng(0)
    size = info.image_size
    images = rng.integers(0, 256, (REFERENCE_BATCH, size, size, 3), dtype=np.uint8)
    logits = np.asarray(model.predict_on_batch(images), np.float32)
    error = relative_error(network.predict_on_batch(images), logits)
    if not error < EXPORT_TOLERANCE:
        raise ValueError(
            f"the stock-layer network's logits differ from the model's by {error:.2e} "
            f"(tolerance {EXPORT_TOLERANCE:.0e})"
        )
    shape["export_check_relative_error"] = error
    shape["source"] = os.path.abspath(export_dir)
    shape["bench_model"] = info.metadata.get("bench_model", "")
    with staged_directory(out, ".gpu-model-") as staging:
        network.save_weights(os.path.join(staging, WEIGHTS_FILE))
        np.savez_compressed(os.path.join(staging, REFERENCE_FILE), images=images, logits=logits)
        _save_json(os.path.join(staging, SHAPE_FILE), shape)
        os.chmod(staging, 0o755)
    return shape


def read_shape(model_dir: str) -> dict:
    """``portable.json`` of a folder written by :func:`export`.

    Raises:
      OSError: the file cannot be read.
      ValueError: it is not JSON, or lacks a field the network needs.
    """
    with open(os.path.join(model_dir, SHAPE_FILE), encoding="utf-8") as file:
        shape = json.load(file)
    needed = ("image_size", "alpha", "num_classes", "skip_layer_names", "decoder_filters")
    missing = [key for key in needed if key not in shape]
    if missing:
        raise ValueError(f"{SHAPE_FILE} lacks {', '.join(missing)}")
    return shape


def build(model_dir: str, shape: dict, policy: str) -> keras.Model:
    """The network of ``shape`` (:func:`read_shape`) under Keras dtype ``policy``,
    its weights loaded from ``model_dir``."""
    from benchmarks.portable import portable_unet

    # petseg.distribute.precision_policy does this, but it imports TensorFlow.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        network = portable_unet(
            shape["image_size"],
            shape["alpha"],
            shape["num_classes"],
            shape["skip_layer_names"],
            shape["decoder_filters"],
        )
    finally:
        keras.mixed_precision.set_global_policy(previous)
    network.load_weights(os.path.join(model_dir, WEIGHTS_FILE))
    return network


def serving_network(network: keras.Model) -> keras.Model:
    """``network`` with ``serving_default``'s outputs: float32 probabilities and a uint8 mask."""
    probabilities = keras.layers.Softmax(dtype="float32", name="probabilities")(network.output)
    mask = keras.ops.cast(keras.ops.argmax(probabilities, axis=-1), "uint8")
    return keras.Model(network.input, [probabilities, mask], name="serving")


def check_against_reference(network: keras.Model, images: np.ndarray, expected: np.ndarray) -> dict:
    """``network``'s logits and masks on the reference ``images`` against petseg's ``expected``."""
    logits = np.asarray(network.predict_on_batch(images), np.float32)
    return {
        "relative_error": relative_error(logits, expected),
        "mask_agreement": float(np.mean(logits.argmax(-1) == expected.argmax(-1))),
        "finite": bool(np.isfinite(logits).all()),
    }


def _rates(step: Callable[[], object], items: int, warmup: int, calls: int, rounds: int) -> dict:
    """Median items/s of ``rounds`` rounds of ``calls`` calls of ``step``, after ``warmup``.

    ``step`` returns host values, so each call has finished when it returns.
    """
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_seconds = time.perf_counter() - started
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            step()
        rates.append(items * calls / (time.perf_counter() - started))
    rate = median(rates)
    return {
        "images_per_second": rate,
        "ms_per_call": 1000.0 * items / rate,
        "runs": rates,
        "warmup_seconds": warmup_seconds,
    }


def serving_rate(network: keras.Model, batch: int, calls: int, rounds: int) -> dict:
    """Images/s of a :func:`serving_network` on uint8 batches of ``batch``.

    Each call sends the batch from host memory and brings probabilities and
    mask back, as a Beam worker's call would; ``predict_on_batch`` keeps
    Keras' per-call overhead to its least.
    """
    size = int(network.input.shape[1])
    images = np.random.default_rng(1).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)

    def step():
        probabilities, mask = network.predict_on_batch(images)
        return np.asarray(probabilities), np.asarray(mask)

    return _rates(step, batch, 3, calls, rounds)


def training_rate(network: keras.Model, batch: int, calls: int, rounds: int) -> dict:
    """Images/s of one optimizer step (Adam, per-pixel cross-entropy) on a batch of ``batch``.

    The encoder is frozen, as in the training benchmark; labels are random
    classes, which cost the same arithmetic as real ones. ``network``'s
    weights change: time it last.
    """
    network.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    size = int(network.input.shape[1])
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8).astype(np.float32)
    classes = int(network.output.shape[-1])
    labels = rng.integers(0, classes, (batch, size, size), dtype=np.int32)

    def step():
        loss = network.train_on_batch(images, labels)
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} under {network.dtype_policy.name}")
        return loss

    return _rates(step, batch, 3, calls, rounds)


def accelerator() -> dict:
    """The backend, every device it computes on, its accelerators, and how it does float32."""
    backend = keras.backend.backend()
    devices: list[str] = []
    accelerators: list[str] = []
    float32_matmul = "unknown"
    if backend == "jax":
        import jax

        devices = [f"{device.platform}: {device.device_kind}" for device in jax.devices()]
        accelerators = [device.device_kind for device in jax.devices() if device.platform != "cpu"]
        float32_matmul = f"jax_default_matmul_precision={jax.config.jax_default_matmul_precision}"
    elif backend == "torch":
        import torch

        accelerators = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        devices = ["cpu", *accelerators]
        float32_matmul = (
            f"allow_tf32: matmul {torch.backends.cuda.matmul.allow_tf32}, "
            f"cudnn {torch.backends.cudnn.allow_tf32}"
        )
    elif backend == "tensorflow":
        import tensorflow as tf

        devices = [device.name for device in tf.config.list_logical_devices()]
        accelerators = [device.name for device in tf.config.list_logical_devices("GPU")]
        float32_matmul = f"tf32 {tf.config.experimental.tensor_float_32_execution_enabled()}"
    return {
        "backend": backend,
        "keras": keras.__version__,
        "devices": devices,
        "accelerators": accelerators,
        "float32_matmul": float32_matmul,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
    }


def measure(args: argparse.Namespace) -> dict:
    """Checks this backend against the reference, then times every asked measurement.

    Raises:
      MeasureError: no accelerator (without ``--allow-cpu``), or this
        backend's float32 network does not give petseg's masks.
    """
    shape = read_shape(args.model)
    machine = accelerator()
    print(f"{machine}", flush=True)
    if not machine["accelerators"] and not args.allow_cpu:
        raise MeasureError(
            f"Keras' {machine['backend']} backend sees no accelerator, only "
            f"{', '.join(machine['devices']) or 'no device'} (--allow-cpu times the CPU)"
        )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, RESULTS_FILE)
    result: dict = {"machine": machine, "model": shape, "checks": {}}
    result.update({"serving": {}, "one_image_a_call": {}, "training": {}})
    # Each policy's network is built once; serving wraps it, and training,
    # which changes its weights, comes last.
    networks = {
        policy: build(args.model, shape, policy)
        for policy in dict.fromkeys(["float32", *args.policies])
    }
    with np.load(os.path.join(args.model, REFERENCE_FILE)) as reference:
        images, expected = reference["images"], reference["logits"]
    for policy, network in networks.items():
        result["checks"][policy] = check_against_reference(network, images, expected)
        print(f"  check {policy}: {result['checks'][policy]}", flush=True)
        _save_json(path, result)
    check = result["checks"]["float32"]
    if not check["finite"] or check["mask_agreement"] < FLOAT32_MASK_AGREEMENT:
        raise MeasureError(
            f"this backend's float32 network gives petseg's mask on only "
            f"{100 * check['mask_agreement']:.2f} % of pixels (finite: {check['finite']}); "
            "not timing it"
        )
    servers = {policy: serving_network(network) for policy, network in networks.items()}
    for policy in args.policies:
        for batch in args.batch_sizes:
            figures = serving_rate(servers[policy], batch, args.calls, args.rounds)
            result["serving"].setdefault(policy, {})[str(batch)] = figures
            print(
                f"  serving {policy} batch {batch}: {figures['images_per_second']:.0f} images/s",
                flush=True,
            )
            _save_json(path, result)
    figures = serving_rate(servers["float32"], 1, args.calls, args.rounds)
    result["one_image_a_call"] = figures
    print(f"  one image a call: {figures['images_per_second']:.1f} images/s", flush=True)
    _save_json(path, result)
    for policy in args.policies:
        figures = training_rate(networks[policy], args.train_batch, args.calls, args.rounds)
        result["training"][policy] = {**figures, "batch": args.train_batch}
        print(f"  training {policy}: {figures['images_per_second']:.0f} images/s", flush=True)
        _save_json(path, result)
    print("\n".join(markdown(result)))
    return result


def markdown(result: dict) -> list[str]:
    """The measurements as a Markdown table."""
    machine = result["machine"]
    lines = [
        f"U-Net {result['model']['image_size']} px, alpha {result['model']['alpha']}, on "
        f"{', '.join(machine['devices']) or 'no device listed'} (Keras {machine['keras']}, "
        f"{machine['backend']} backend); medians",
        "",
        "| measurement | policy | batch | images/s | ms per call |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for policy, batches in result["serving"].items():
        for batch, figures in batches.items():
            lines.append(
                f"| serving: probabilities and mask, host to host | {policy} | {batch} | "
                f"{figures['images_per_second']:.0f} | {figures['ms_per_call']:.2f} |"
            )
    if result["one_image_a_call"]:
        figures = result["one_image_a_call"]
        lines.append(
            f"| one image a call (`predict_on_batch`) | float32 | 1 | "
            f"{figures['images_per_second']:.1f} | "
            f"{figures['ms_per_call']:.2f} |"
        )
    for policy, figures in result["training"].items():
        lines.append(
            f"| training step of the stock-layer network, encoder frozen | {policy} | "
            f"{figures['batch']} | "
            f"{figures['images_per_second']:.0f} | {figures['ms_per_call']:.1f} |"
        )
    lines += ["", "| check against petseg's logits | relative error | same mask pixels |"]
    lines.append("| --- | ---: | ---: |")
    for policy, check in result["checks"].items():
        lines.append(
            f"| {policy} | {check['relative_error']:.1e} | {100 * check['mask_agreement']:.2f} % |"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The ``export`` or ``measure`` command and its flags."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    exporting = commands.add_parser("export", help="write the bench model as a stock-layer network")
    exporting.add_argument(
        "--model", help="a petseg export directory (default: make bench's model, made if absent)"
    )
    exporting.add_argument(
        "--workdir", default=os.path.join("runs", "bench"), help="make bench's cache of models"
    )
    exporting.add_argument("--out", required=True, help="folder for the network and reference")
    measuring = commands.add_parser("measure", help="check and time the network on this backend")
    measuring.add_argument("--model", required=True, help="a folder written by export")
    measuring.add_argument("--out", required=True, help="folder for gpu.json")
    measuring.add_argument(
        "--policies",
        nargs="+",
        default=["float32", "mixed_float16", "mixed_bfloat16"],
        help="Keras dtype policies (petseg trains in mixed_float16 on GPUs)",
    )
    measuring.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 256])
    measuring.add_argument("--train-batch", type=int, default=TRAIN_BATCH)
    measuring.add_argument("--calls", type=int, default=20, help="timed calls per round")
    measuring.add_argument("--rounds", type=int, default=5)
    measuring.add_argument(
        "--allow-cpu", action="store_true", help="time the CPU where no accelerator is seen"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs one half; exits 1 with a one-line error when it cannot."""
    args = parse_args(argv)
    if args.command == "export":
        if args.model is None:
            args.model = export_bench_model(args.workdir, BENCH_IMAGE_SIZE, BENCH_ALPHA)
        try:
            shape = export(args.model, args.out)
        except (OSError, ValueError) as error:
            print(f"benchmarks.gpu export: {error}", file=sys.stderr)
            return 1
        print(
            f"wrote {args.out}: {shape['image_size']} px, alpha {shape['alpha']}, "
            f"logits within {shape['export_check_relative_error']:.1e} of the model's"
        )
        return 0
    try:
        measure(args)
    except (OSError, ValueError, MeasureError) as error:
        print(f"benchmarks.gpu measure: {args.model}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
