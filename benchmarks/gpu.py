"""``make bench-gpu``: the bench model's serving and training step on the GPU TensorFlow sees.

python -m benchmarks.gpu [--out benchmarks/results] [--workdir runs/bench] [--allow-cpu] [--quick]

Serving: ``make bench``'s export through the job's own model call, uint8 images
from host memory and probabilities back, at batches of 1, 32 and 256. Training: one
step of petseg's model of that size, encoder frozen, batch 64, under each precision
policy. Medians of rounds after a warm-up call. Without a GPU, nothing is measured
unless ``--allow-cpu``. Writes ``OUT/gpu.json`` and ``OUT/gpu.md``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np

from benchmarks import common
from benchmarks.segmentation import model_call, serving_rate


@dataclass(frozen=True)
class Plan:  # Serving batches, training policies and batch, timed calls per round, rounds.
    batch_sizes: tuple[int, ...] = (1, 32, 256)
    policies: tuple[str, ...] = ("float32", "mixed_float16", "mixed_bfloat16")
    train_batch: int = 64
    calls: int = 20
    rounds: int = 5


QUICK_PLAN = Plan(batch_sizes=(1, 2), policies=("float32",), train_batch=2, calls=1, rounds=1)


def training_rate(model, batch: int, calls: int) -> dict[str, float]:
    """:func:`benchmarks.common.rate` of ``train_on_batch`` on one random batch from host
    memory; raises ``FloatingPointError`` if the loss after the timed steps is not finite."""
    size, rng = int(model.input.shape[1]), np.random.default_rng(2)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (batch, size, size, 1)).astype(np.uint8)
    figures = common.rate(lambda: model.train_on_batch(images, labels), batch, calls)
    loss = model.train_on_batch(images, labels, return_dict=True)["loss"]
    if not np.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss} under {model.dtype_policy.name}")
    return figures


def measure(export_dir: str, sizes: common.Sizes, plan: Plan) -> dict:
    """Serving at each of ``plan.batch_sizes``, then training under each of ``plan.policies``."""
    import tensorflow as tf

    from benchmarks.training import petseg_model

    call, size = model_call(export_dir)
    measurements = []
    for batch in plan.batch_sizes:
        rounds = [serving_rate(call, size, batch, plan.calls) for _ in range(plan.rounds)]
        measurements.append(("serving", "float32", batch, rounds))
    for policy in plan.policies:
        model = petseg_model(size, sizes.alpha, None, policy)
        rounds = [training_rate(model, plan.train_batch, plan.calls) for _ in range(plan.rounds)]
        measurements.append(("training step", policy, plan.train_batch, rounds))
    return {
        "plan": asdict(plan),
        "sizes": asdict(sizes),
        "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "measurements": [
            {"measurement": what, "policy": policy, "batch": batch, **common.medians(rounds)}
            for what, policy, batch, rounds in measurements
        ],
    }


def markdown(result: dict) -> list[str]:
    """The measurements as one table."""
    plan, sizes = result["plan"], result["sizes"]
    rows = []
    for figures in result["measurements"]:
        speed, batch = figures["images_per_second"], figures["batch"]
        what = (figures["measurement"], figures["policy"], batch)
        rows.append((*what, f"{speed:.1f}", f"{1000 * batch / speed:.2f}"))
    return [
        f"U-Net {sizes['image_size']} px, alpha {sizes['alpha']}; TensorFloat-32 "
        f"{'on' if result['tensor_float_32'] else 'off'}; medians of {plan['rounds']} rounds of "
        f"{plan['calls']} calls:",
        "",
        *common.table(("measurement", "policy", "batch", "images/s", "ms per call"), rows),
    ]


def main(argv: list[str] | None = None) -> int:
    """Measures, or exits 1 with one line where TensorFlow sees no GPU."""
    args = common.parse_args(argv, "benchmarks.gpu", "gpu", allow_cpu="measure without a GPU")
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU") and not args.allow_cpu:
        message = "benchmarks.gpu: TensorFlow sees no GPU (--allow-cpu measures the CPU)"
        print(message, file=sys.stderr)
        return 1
    sizes, plan = args.sizes, QUICK_PLAN if args.quick else Plan()
    export_dir = common.export_bench_model(args.workdir, sizes)
    result = measure(export_dir, sizes, plan)
    common.write_results(args.out, "gpu", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
