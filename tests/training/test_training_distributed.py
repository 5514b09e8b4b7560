"""A real two-replica MirroredStrategy on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises its
runtime, which pytest's process has long done; so the run happens in a
fresh interpreter that prints its result as JSON.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import json, math, sys
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )

    from petseg.training.config import ConfigError, TrainConfig
    from petseg.training.distribute import make_strategy
    from petseg.training.loop import train_and_evaluate

    strategy = make_strategy()
    config = TrainConfig(
        dataset="synthetic", synthetic_count=8, image_size=32, alpha=0.35,
        encoder_weights="none", batch_size=2, steps_per_epoch=2, epochs=1,
        fine_tune_epochs=1, plot_examples=1, class_weights=(1.0, 1.0, 2.0),
    )
    result = train_and_evaluate(config, sys.argv[1])
    try:
        train_and_evaluate(
            TrainConfig(**{**config.to_dict(), "class_weights": None, "global_batch_size": 5}),
            sys.argv[1] + "-odd",
        )
        odd = "no error"
    except ConfigError as error:
        odd = str(error)
    print("RESULT " + json.dumps({
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "run_replicas": result.num_replicas,
        "global_batch": result.global_batch_size,
        "loss": result.history["loss"],
        "val_loss": result.history["val_loss"],
        "metrics": result.metrics,
        "odd": odd,
    }))
    """
)


@pytest.mark.slow
def test_two_replica_mirrored_training_on_logical_cpus(tmp_path):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=280,
        env=environment,
        cwd=str(REPO_ROOT),
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, process.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])

    assert result["strategy"] == "MirroredStrategy"
    assert result["replicas"] == result["run_replicas"] == 2
    assert result["global_batch"] == 4  # 2 per replica x 2 replicas
    assert len(result["loss"]) == 2
    for value in result["loss"] + result["val_loss"]:
        assert value == value and abs(value) < 1e6  # finite
    metrics = result["metrics"]
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0 and 0.0 <= metrics["mean_iou"] <= 1.0
    assert all(v is None or 0.0 <= v <= 1.0 for v in metrics["iou"].values())
    assert "global batch size 5 is not divisible by 2 replicas" in result["odd"]
