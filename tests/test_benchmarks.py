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


@pytest.fixture(scope="module")
def gpu_network(model_dir, tmp_path_factory):
    """The tiny model written by ``benchmarks.gpu export``."""
    from benchmarks import gpu

    network = tmp_path_factory.mktemp("gpu") / "network"
    assert gpu.main(["export", "--model", str(model_dir), "--out", str(network)]) == 0
    return network


TINY_MEASURE = ["--batch-sizes", "2", "--train-batch", "2", "--calls", "1", "--rounds", "1"]


@pytest.mark.slow
def test_gpu_benchmark_exports_the_same_network_and_measures_it(gpu_network, tmp_path):
    import subprocess
    import sys

    from benchmarks import gpu

    shape = json.loads((gpu_network / gpu.SHAPE_FILE).read_text())
    # The tiny model's petseg.json has no width: the one its weights fit is found.
    assert (shape["image_size"], shape["alpha"]) == (64, 0.35)
    assert shape["export_check_relative_error"] < gpu.EXPORT_TOLERANCE

    # The measuring half, in a process where petseg cannot be imported, on
    # the backend Keras has here: TensorFlow on the CPU.
    results = tmp_path / "results"
    argv = ["measure", "--model", str(gpu_network), "--out", str(results), "--allow-cpu"]
    argv += ["--policies", "float32", *TINY_MEASURE]
    child = "import sys; sys.modules['petseg'] = None; from benchmarks import gpu; "
    child += "sys.exit(gpu.main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", child, *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((results / gpu.RESULTS_FILE).read_text())
    check = result["checks"]["float32"]
    assert check["relative_error"] < gpu.EXPORT_TOLERANCE
    assert check["mask_agreement"] == 1.0 and check["finite"]
    assert result["machine"]["backend"] == "tensorflow"
    assert result["machine"]["accelerators"] == []
    rates = [
        result["serving"]["float32"]["2"]["images_per_second"],
        result["one_image_a_call"]["images_per_second"],
        result["training"]["float32"]["images_per_second"],
    ]
    assert all(rate > 0 for rate in rates), result
    assert result["training"]["float32"]["batch"] == 2
    assert "| serving: probabilities and mask, host to host | float32 | 2 |" in done.stdout


def test_gpu_benchmark_measuring_half_imports_tensorflow_only_for_its_backend():
    import ast
    import inspect

    from benchmarks import gpu, portable

    def imports(code) -> list[str]:
        """The top-level package of every module a module or function imports."""
        names = []
        for node in ast.walk(ast.parse(inspect.getsource(code).lstrip())):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names.append(node.module)
        return [name.split(".")[0] for name in names]

    assert not {"petseg", "tensorflow"} & set(imports(portable))
    # petseg (which imports TensorFlow) only in export; TensorFlow itself only
    # to list the devices of Keras' TensorFlow backend.
    measuring = [gpu.measure, gpu.build, gpu.check_against_reference, gpu.serving_rate]
    measuring += [gpu.training_rate, gpu.read_shape, gpu.markdown]
    for function in measuring:
        assert not {"petseg", "tensorflow"} & set(imports(function)), function
    top_level = imports(gpu)
    assert top_level.count("tensorflow") == 1 and "petseg" in top_level


@pytest.mark.slow
def test_gpu_benchmark_times_nothing_without_an_accelerator_or_with_wrong_masks(
    gpu_network, tmp_path, capsys
):
    import numpy as np

    from benchmarks import gpu

    results = tmp_path / "results"
    argv = ["measure", "--model", str(gpu_network), "--out", str(results), *TINY_MEASURE]
    argv += ["--policies", "float32"]
    assert gpu.main(argv) == 1
    assert "sees no accelerator" in capsys.readouterr().err
    assert not results.exists()

    # A reference this backend's network disagrees with: the logits negated.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in (gpu.SHAPE_FILE, gpu.WEIGHTS_FILE):
        (wrong / name).write_bytes((gpu_network / name).read_bytes())
    reference = np.load(gpu_network / gpu.REFERENCE_FILE)
    np.savez(wrong / gpu.REFERENCE_FILE, images=reference["images"], logits=-reference["logits"])
    argv = ["measure", "--model", str(wrong), "--out", str(results), "--allow-cpu", *argv[5:]]
    assert gpu.main(argv) == 1
    assert "not timing it" in capsys.readouterr().err
    result = json.loads((results / gpu.RESULTS_FILE).read_text())
    assert result["checks"]["float32"]["mask_agreement"] < gpu.FLOAT32_MASK_AGREEMENT
    assert result["serving"] == {} and result["training"] == {}


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
