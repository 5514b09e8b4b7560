"""The job on each backend: the same masks as TensorFlow's here, the same bytes on every rerun,
the backend in the run record, and a worker without the runtime failing in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from beam_jobs import segment as segment_job
from petseg.serving import backends
from tests.beam_helpers import job_argv, snapshot, write_image_tree
from tests.conftest import REPO_ROOT

# The tree holds bad files on purpose; their failures are not what these tests are about.
FAILURES_ALLOWED = ("--max-failed-fraction", "1")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("backend-tree"))


@pytest.fixture(scope="module")
def tensorflow_masks(tree, converted, tmp_path_factory):
    output = tmp_path_factory.mktemp("backend-tf") / "out"
    summary = segment_job.run(job_argv(tree, converted, output, "--backend", "tensorflow"))
    assert summary["backend"] == "tensorflow" and summary["masks_written"] > 0
    return snapshot(output)


@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_a_backend_writes_the_same_masks_on_every_run(
    tree, converted, tensorflow_masks, tmp_path, backend
):
    runs = []
    for name in ("first", "second"):
        summary = segment_job.run(job_argv(tree, converted, tmp_path / name, "--backend", backend))
        assert summary["backend"] == backend
        runs.append(snapshot(tmp_path / name))
        record = json.loads((tmp_path / name / "petseg-run.json").read_text())
        assert record["backend"] == backend
    assert runs[0] == runs[1]
    # The tiny model's margins are far above float noise: no pixel differs from TensorFlow's.
    masks = {path: data for path, data in runs[0].items() if path.startswith("masks/")}
    assert masks == {p: d for p, d in tensorflow_masks.items() if p.startswith("masks/")}


def test_auto_runs_the_fastest_format_the_export_has(tree, converted, model_dir, tmp_path, capsys):
    assert segment_job.main(job_argv(tree, converted, tmp_path / "auto", *FAILURES_ALLOWED)) == 0
    assert "backend openvino)" in capsys.readouterr().err
    summary = segment_job.run(job_argv(tree, model_dir, tmp_path / "plain"))
    assert summary["backend"] == "tensorflow"


def test_another_backend_on_the_same_output_is_another_run(tree, converted, tmp_path, capsys):
    output = tmp_path / "out"
    assert (
        segment_job.main(job_argv(tree, converted, output, "--backend", "onnx", *FAILURES_ALLOWED))
        == 0
    )
    capsys.readouterr()
    assert segment_job.main(job_argv(tree, converted, output, "--backend", "openvino")) == 2
    error = capsys.readouterr().err.strip()
    assert "holds another run (the backend: openvino here, onnx in OUT)" in error
    # The same backend again resumes: every mask reused.
    summary = segment_job.run(job_argv(tree, converted, output, "--backend", "onnx"))
    assert summary["masks_written"] == summary["masks_reused"] > 0


def test_a_backend_the_export_lacks_is_refused_before_running(tree, model_dir, tmp_path, capsys):
    assert segment_job.main(job_argv(tree, model_dir, tmp_path / "out", "--backend", "onnx")) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("petseg-segment: error: ") and "has no onnx format" in error
    assert "\n" not in error and not (tmp_path / "out" / "masks").exists()


def test_a_worker_without_the_runtime_fails_the_job_in_one_line_naming_the_extra(
    tree, converted, tmp_path, capsys, monkeypatch
):
    installed = backends.runtime_installed
    monkeypatch.setattr(
        backends, "runtime_installed", lambda name: name != "openvino" and installed(name)
    )
    argv = job_argv(tree, converted, tmp_path / "out", "--backend", "openvino")
    assert segment_job.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    failure = [line for line in lines if line.startswith("petseg-segment: error:")]
    assert len(failure) == 1 and "install petseg[openvino]" in failure[0]
    assert not any("Traceback" in line for line in lines)


WORKER = """
import json, sys
import numpy as np
import petseg.beam.pipeline
from petseg.beam.inference import PetsegModelHandler
model = PetsegModelHandler(sys.argv[1], backend=sys.argv[2], max_batch_size=4).load_model()
model.probabilities(np.zeros((4, 64, 64, 3), np.uint8))
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_a_worker_on_another_runtime_never_imports_tensorflow(converted, backend):
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(converted), backend],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules = {name.split(".")[0] for name in json.loads(done.stdout.strip().splitlines()[-1])}
    assert "petseg" in modules and backends.FORMATS[backend].runtime_module in modules
    assert not modules & {"tensorflow", "keras", "matplotlib", "tensorflow_datasets"}
