"""The benchmark harness runs end to end on tiny sizes and reports every figure (no timing asserted)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import run


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure(tmp_path):
    out = tmp_path / "results"
    assert run.main(["--quick", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    results = json.loads((out / "results.json").read_text())

    segmentation = results["segmentation"]
    positive = [
        segmentation["model_limit"]["images_per_second"],
        segmentation["naive_loop"]["images_per_second"],
        *(
            segmentation[mode][key]
            for mode in ("job_in_process", "job_multi_processing_2")
            for key in ("images_per_second", "one_batch_seconds")
        ),
        *segmentation["peak_rss_mib"].values(),
        segmentation["job_5N_images_per_second"],
    ]
    assert all(value > 0 for value in positive), segmentation
    # --quick's alpha 0.35 has no ImageNet weights here: its model says how little it trained.
    assert segmentation["bench_model"] == "1 step from random init"
    # At 16 images the steady-state difference is noise, but it is a number.
    assert all(math.isfinite(value) for value in segmentation["ratios"].values())

    training = results["training"]
    assert set(training["images_per_second"]) == {"tutorial", "petseg", "petseg_float32"}
    assert all(rate > 0 for rate in training["images_per_second"].values())
    assert training["policies"]["petseg_float32"] == "float32"
    assert training["accuracy"] is None  # --quick uses alpha 0.35; the weights are alpha 1.0

    table = (out / "results.md").read_text()
    for row in (
        "model limit",
        "job / model limit, end to end at 5N",
        "job / model limit, steady state",
        "job / naive loop",
        "Training",
    ):
        assert row in table


@pytest.mark.slow
def test_profile_accounts_for_every_step_and_model_call(tmp_path):
    from benchmarks import profile
    from petseg.beam.decode import DecodeImageFn
    from petseg.beam.inference import ServingModel

    unprobed = (DecodeImageFn.work, ServingModel.probabilities)
    out = tmp_path / "results"
    argv = ["--images", "12", "--image-size", "32", "--alpha", "0.35", "--batch-size", "4"]
    assert profile.main([*argv, "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads((out / "profile.json").read_text())

    assert set(result["step_cpu_ms_per_image"]) == {
        "DecodeImageFn",
        "PostprocessFn",
        "WriteMaskFn",
        "ComputeImageStatsFn",
    }
    assert all(ms > 0 for ms in result["step_cpu_ms_per_image"].values())
    assert result["model_calls"] >= 3  # 12 images in batches of at most 4
    assert 0 < result["model_seconds"] < result["wall_seconds"]
    assert result["standalone_call_ms"] > 0
    # Without the model's compute every step still runs on every image, and
    # the model's calls (replayed answers after the first) take less time.
    alone = result["without_model"]
    assert set(alone["step_cpu_ms_per_image"]) == set(result["step_cpu_ms_per_image"])
    assert alone["model_calls"] == result["model_calls"]
    assert alone["model_call_ms_median"] < result["model_call_ms_median"]
    # The probes are gone once the run is over.
    assert (DecodeImageFn.work, ServingModel.probabilities) == unprobed


@pytest.mark.slow
def test_gpu_benchmark_exports_the_same_network_and_measures_it(model_dir, tmp_path):
    from benchmarks import gpu

    network = tmp_path / "network"
    assert gpu.main(["export", "--model", str(model_dir), "--out", str(network)]) == 0
    shape = json.loads((network / gpu.SHAPE_FILE).read_text())
    # The tiny model's petseg.json has no width: the one its weights fit is found.
    assert (shape["image_size"], shape["alpha"]) == (64, 0.35)
    assert shape["export_check_relative_error"] < gpu.EXPORT_TOLERANCE

    # The measuring half runs on whatever backend Keras has: here TensorFlow on the CPU.
    results = tmp_path / "results"
    argv = ["measure", "--model", str(network), "--out", str(results), "--policies", "float32"]
    argv += ["--batch-sizes", "2", "--train-batch", "2", "--calls", "1", "--rounds", "1"]
    assert gpu.main(argv) == 0
    result = json.loads((results / gpu.RESULTS_FILE).read_text())
    check = result["checks"]["float32"]
    assert check["relative_error"] < gpu.EXPORT_TOLERANCE
    assert check["mask_agreement"] == 1.0 and check["finite"]
    assert result["machine"]["backend"] == "tensorflow"
    rates = [
        result["serving"]["float32"]["2"]["images_per_second"],
        result["one_image_a_call"]["images_per_second"],
        result["training"]["float32"]["images_per_second"],
    ]
    assert all(rate > 0 for rate in rates), result
    assert result["training"]["float32"]["batch"] == 2


def test_gpu_benchmark_export_refuses_a_network_that_computes_something_else(
    model_dir, tmp_path, monkeypatch, capsys
):
    from benchmarks import gpu, portable

    build = portable.portable_unet

    def unscaled(*args, **kwargs):
        # Same weights, but fed 0-255 pixels where the encoder wants [-1, 1].
        return build(*args, **{**kwargs, "scale_inputs": False})

    monkeypatch.setattr(portable, "portable_unet", unscaled)
    network = tmp_path / "network"
    assert gpu.main(["export", "--model", str(model_dir), "--out", str(network)]) == 1
    assert "logits differ from the model's" in capsys.readouterr().err
    assert not network.exists()
