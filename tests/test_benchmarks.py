"""The benchmarks run end to end on tiny sizes and report every figure (no timing asserted)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
from dataclasses import asdict

import numpy as np
import pytest

from benchmarks import common, gpu, profile, run, segmentation, training

# Names of the folders a benchmark makes for one run and must remove after it.
SCRATCH_PREFIXES = ("out-", "rss-", "naive-", "prof-", "training-")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The cache of ``--quick``'s model and photos, shared by the tests that make it."""
    return tmp_path_factory.mktemp("bench")


def scratch_left(folder) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(SCRATCH_PREFIXES)]


@pytest.mark.slow
def test_quick_bench_reports_every_figure(workdir, tmp_path):
    out = tmp_path / "results"
    assert run.main(["--quick", "--out", str(out), "--workdir", str(workdir)]) == 0
    results = json.loads((out / "results.json").read_text())

    assert results["sizes"] == asdict(common.QUICK)
    # --quick's alpha 0.35 has no ImageNet weights: its model says how little it trained.
    assert results["bench_model"] == "1 step from random init"
    segment = results["segmentation"]
    rates = [segment[name]["images_per_second"] for name in segment]
    names = ("job_in_process", "job_in_process_coco", "job_multi_processing_2")
    jobs = [segment[name] for name in names]
    assert all(rate > 0 for rate in rates), segment
    assert all(job["one_batch_seconds"] > 0 for job in jobs)
    assert segment["model_limit"]["cpu_ms_per_image"] > 0
    assert all(segment[name]["peak_rss_mib"] > 0 for name in ("memory_N", "memory_5N"))
    assert all(len(segment[name]["runs"]) == 1 for name in ("model_limit", "naive_loop"))
    scale = results["scale"]
    assert all(scale[f"peak_rss_mib_{key}"] > 0 for key in ("N", "10N"))
    assert 0 < scale["seconds_N"] and 0 < scale["model_cpu_ms_per_image"]
    assert len(scale["runs"]) == 1
    # At 16 images the steady-state difference is noise, but every ratio is a number.
    assert set(results["ratios"]) == set(run.TARGETS)
    assert all(math.isfinite(value) for value in results["ratios"].values())

    recipes = results["training"]["recipes"]
    assert set(recipes) == set(training.RECIPES)
    assert all(recipe["images_per_second"] > 0 for recipe in recipes.values())
    assert all(recipe["input_pipeline_ms"] > 0 for recipe in recipes.values())
    assert recipes["tutorial"]["speedup"] == 1.0
    assert recipes["petseg_float32"]["policy"] == "float32"
    assert results["training"]["accuracy"] is None  # no accuracy epochs in --quick

    serving = results["backends"]
    assert set(serving["backends"]) == {"tensorflow", "openvino", "onnx", "openvino-int8"}
    for figures in serving["backends"].values():
        assert figures["model_limit_images_per_second"] > 0 and figures["job_images_per_second"] > 0
        assert figures["first_batch_seconds"] > 0
    assert serving["matmul_gflops"] > 0 and serving["model_gflop_per_image"] > 0
    if serving["test_split"] is not None:
        split = serving["test_split"]
        assert split["tensorflow"]["differing_pixel_share"] == 0.0
        # Float32 runtimes agree with TensorFlow but for near ties; int8 differs more.
        assert split["openvino"]["differing_pixel_share"] < 0.01
        assert split["onnx"]["differing_pixel_share"] < 0.01
        assert 0 <= split["openvino-int8"]["differing_pixel_share"] <= 1
    assert "**Backends**" in (out / "results.md").read_text()

    table = (out / "results.md").read_text()
    assert table.startswith("Measured ")
    for what, _, _ in run.TARGETS.values():
        assert what in table
    for row in (
        "model limit",
        "2 processes",
        "naive loop",
        "petseg_float32 (float32)",
        "160 (10N)",
    ):
        assert row in table
    # Every job wrote into a fresh OUT, removed after it.
    assert scratch_left(workdir) == []


@pytest.mark.slow
def test_profile_accounts_for_every_step_and_model_call(workdir, tmp_path):
    from petseg.beam.decode import DecodeImageFn
    from petseg.beam.inference import ServingModel

    unprobed = (DecodeImageFn.work, ServingModel.probabilities)
    out = tmp_path / "results"
    assert profile.main(["--quick", "--workdir", str(workdir), "--out", str(out)]) == 0
    result = json.loads((out / "profile.json").read_text())

    job = result["job"]
    steps = {"DecodeImageFn", "PostprocessFn", "WriteMaskFn", "ComputeImageStatsFn"}
    assert steps <= set(job["step_cpu_ms_per_image"])
    assert all(job["step_cpu_ms_per_image"][step] > 0 for step in steps)
    assert job["model_calls"] >= 2  # 16 images in batches of at most 8
    assert 0 < job["model_seconds"] < job["wall_seconds"]
    assert result["model_alone"]["images_per_second"] > 0
    # Without the model's compute every step still runs on every image, and
    # the model computes once: every later call replays that first answer.
    alone = result["without_model"]
    assert steps <= set(alone["step_cpu_ms_per_image"])
    assert alone["model_calls"] == job["model_calls"]
    assert job["model_computations"] == job["model_calls"]
    assert alone["model_computations"] == 1
    assert (DecodeImageFn.work, ServingModel.probabilities) == unprobed
    assert "the job without the model's compute" in (out / "profile.md").read_text()
    assert scratch_left(workdir) == []


@pytest.mark.slow
def test_gpu_benchmark_times_serving_and_training_on_the_cpu_when_allowed(workdir, tmp_path):
    out = tmp_path / "results"
    argv = ["--quick", "--allow-cpu", "--workdir", str(workdir), "--out", str(out)]
    assert gpu.main(argv) == 0
    result = json.loads((out / "gpu.json").read_text())

    measured = [(m["measurement"], m["policy"], m["batch"]) for m in result["measurements"]]
    serving, training_step = ("serving", "float32"), ("training step", "float32")
    assert measured == [(*serving, 1), (*serving, 2), (*training_step, 2)]
    assert all(m["images_per_second"] > 0 for m in result["measurements"])
    table = (out / "gpu.md").read_text()
    assert "| serving | float32 | 2 |" in table
    assert "| training step | float32 | 2 |" in table


def test_gpu_benchmark_measures_nothing_without_a_gpu(tmp_path, capsys):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    out = tmp_path / "results"
    assert gpu.main(["--out", str(out), "--workdir", str(tmp_path / "work")]) == 1
    assert "sees no GPU" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "work").exists()


def test_the_job_must_infer_every_mask_itself():
    segmentation.check_summary({"masks_written": 16, "masks_reused": 0}, 16)
    with pytest.raises(RuntimeError, match="inferred 0 masks of 16 \\(16 reused\\)"):
        segmentation.check_summary({"masks_written": 16, "masks_reused": 16}, 16)
    with pytest.raises(RuntimeError, match="inferred 15 masks of 16"):
        segmentation.check_summary({"masks_written": 15, "masks_reused": 0}, 16)


def test_peak_memory_and_cpu_are_the_childs_own():
    spin = "import time; end = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    big = common.child_usage([sys.executable, "-c", "data = b'x' * (200 << 20)"])
    small = common.child_usage([sys.executable, "-c", "pass"])
    busy = common.child_usage([sys.executable, "-c", spin])
    assert small["peak_rss_mib"] < 100 < 200 < big["peak_rss_mib"]
    assert small["cpu_seconds"] < 0.5 <= busy["cpu_seconds"] <= busy["wall_seconds"] + 0.1
    with pytest.raises(RuntimeError, match="failed"):
        common.child_usage([sys.executable, "-c", "raise SystemExit(3)"])


def test_bench_photos_are_the_same_every_time(tmp_path):
    from PIL import Image

    folder, paths = common.bench_jpegs(str(tmp_path / "a"), 2)
    _, again = common.bench_jpegs(str(tmp_path / "b"), 2)
    assert [open(path, "rb").read() for path in paths] == [open(p, "rb").read() for p in again]
    assert Image.open(paths[1]).size == common.OXFORD_MEDIAN_SIZE
    written = os.stat(paths[0]).st_mtime_ns
    assert common.bench_jpegs(str(tmp_path / "a"), 2) == (folder, paths)
    assert os.stat(paths[0]).st_mtime_ns == written  # kept, not written again

    nested, small = common.bench_jpegs(str(tmp_path / "a"), 5, common.SMALL_SIZE, per_folder=2)
    assert nested != folder
    assert [os.path.relpath(path, nested).split(os.sep)[0] for path in small] == [
        "part_0000",
        "part_0000",
        "part_0001",
        "part_0001",
        "part_0002",
    ]
    assert Image.open(small[4]).size == common.SMALL_SIZE


def test_tutorial_model_is_petsegs_network_in_keras_stock_layers(tmp_path):
    import numpy as np

    from petseg.training.data import write_synthetic_files

    tutorial = training.tutorial_unet(32, 0.35, None)
    petseg = training.petseg_model(32, 0.35, None, "float32")

    def shapes(model) -> list[tuple[int, ...]]:
        return sorted(tuple(weight.shape) for weight in model.trainable_weights)

    assert shapes(tutorial) == shapes(petseg)
    assert tutorial.count_params() == petseg.count_params()
    layers = [*tutorial.layers, *tutorial.get_layer("down_stack").layers]
    assert all(type(layer).__module__.startswith("keras.") for layer in layers)

    examples = write_synthetic_files(str(tmp_path), str(tmp_path), 3, 48)
    images, masks = next(iter(training.tutorial_batches(examples, 32)))
    assert images.shape == (3, 32, 32, 3) and masks.shape == (3, 32, 32, 1)
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
    # The tutorial resizes trimaps bilinearly, so classes blend at edges.
    assert 0.0 <= float(np.min(masks)) and float(np.max(masks)) <= 2.0


def test_review_measure_scores_each_measure_against_the_truly_worst(
    model_dir, oxford_sample, tmp_path
):
    from benchmarks import review_measure

    out = tmp_path / "results"
    argv = ["--model", str(model_dir), "--data-dir", str(oxford_sample), "--out", str(out)]
    assert review_measure.main(argv) == 0
    results = json.loads((out / "review_measure.json").read_text())
    test_lines = (oxford_sample / "annotations" / "test.txt").read_text().split("\n")
    assert results["images"] == len([line for line in test_lines if line.strip()])
    measures = results["measures"]
    assert set(measures) == {*review_measure.MEASURES, "oracle (worst IoU)"}
    # The oracle picks the truly worst images: no measure's picks can score lower.
    assert measures["oracle (worst IoU)"]["spearman_mean_iou"] == pytest.approx(-1.0)
    for count in map(str, review_measure.COUNTS):
        worst = measures["oracle (worst IoU)"]["by_count"][count]["picked_mean_iou"]
        for name in review_measure.MEASURES:
            figures = measures[name]["by_count"][count]
            assert worst <= figures["picked_mean_iou"] + 1e-9
            assert 0.0 <= figures["picked_mean_iou"] <= 1.0
    assert "1 - mean confidence" in (out / "review_measure.md").read_text()


def test_the_boundary_band_is_the_pixels_near_a_class_change():
    from benchmarks.review_measure import boundary_band

    mask = np.zeros((5, 9), np.uint8)
    mask[:, 5:] = 1  # a boundary on column 4's right edge
    band = boundary_band(mask, 1)
    assert band[:, 3:6].all() and not band[:, :3].any() and not band[:, 6:].any()


def test_the_loops_halves_are_disjoint_and_its_corrections_are_the_trimaps(oxford_sample, tmp_path):
    from PIL import Image

    from benchmarks import labels_loop
    from petseg.training.data.labels import read_label_file

    base, pool = labels_loop.split_sample(str(oxford_sample), str(tmp_path), seed=0)
    listed = (oxford_sample / "annotations" / "trainval.txt").read_text().split("\n")
    names = {line.split()[0] for line in listed if line.strip() and not line.startswith("#")}
    base_names = {
        line.split()[0]
        for line in (pathlib.Path(base) / "annotations" / "trainval.txt").read_text().split("\n")
        if line.strip()
    }
    pool_names = {path.stem for path in pathlib.Path(pool).iterdir()}
    assert base_names | pool_names == names and not base_names & pool_names
    assert abs(len(base_names) - len(pool_names)) <= 1

    picked = sorted(pool_names)[:2]
    tasks = [{"data": {"image": str(pathlib.Path(pool) / f"{name}.jpg")}} for name in picked]
    export = tmp_path / "export.json"
    labels_loop.corrected_export(tasks, str(oxford_sample), str(export))
    report = read_label_file(str(export))
    assert not report.bad and len(report.records) == 2
    for name, record in zip(picked, report.records, strict=True):
        trimap = oxford_sample / "annotations" / "trimaps" / f"{name}.png"
        with Image.open(trimap) as image:
            truth = np.asarray(image, np.uint8) - 1
        np.testing.assert_array_equal(record.class_map(*truth.shape), truth)
