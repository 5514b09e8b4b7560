"""Workers run what was tested: the worker install is slim, pinned, and enough for the job."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from tests.beam_helpers import job_argv, write_image_tree
from tests.conftest import REPO_ROOT as REPO

# Packages only training, evaluation and the report import (the "train" extra).
TRAINING_ONLY = ("tensorflow_datasets", "matplotlib", "tqdm", "tensorboard", "importlib_resources")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if version:
            pins[_canonical(name)] = version.strip()
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(extra: str | None) -> list[Requirement]:
    """petseg's requirements: the base set (``extra=None``) or one extra's own."""
    found = []
    for text in importlib.metadata.requires("petseg") or []:
        requirement = Requirement(text)
        marker = requirement.marker
        in_extra = marker is not None and marker.evaluate({"extra": extra or ""})
        if (extra is None and marker is None) or (extra is not None and in_extra):
            found.append(requirement)
    return found


def test_the_worker_install_is_the_jobs_packages_only():
    names = {_canonical(requirement.name) for requirement in _requirements(None)}
    assert names == {"tensorflow", "keras", "apache-beam", "pillow", "numpy", "pycocotools"}
    training = {_canonical(requirement.name) for requirement in _requirements("train")}
    assert {"tensorflow-datasets", "matplotlib", "tensorboard", "tqdm"} <= training
    assert not names & training


@pytest.mark.parametrize("extra", [None, "train", "dev", "openvino", "onnx", "labels"])
def test_every_requirement_is_pinned_in_constraints_within_its_range(extra):
    pins = _pins()
    for requirement in _requirements(extra):
        name = _canonical(requirement.name)
        if name == "petseg":
            continue  # dev includes petseg[train], checked above
        assert name in pins, f"{requirement} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside {requirement}"
        )


def test_the_cloud_extras_name_beams_own_extras():
    for extra, beam_extra in (("gcp", "gcp"), ("aws", "aws")):
        (requirement,) = _requirements(extra)
        assert _canonical(requirement.name) == "apache-beam"
        assert requirement.extras == {beam_extra}


def test_the_worker_image_installs_with_the_constraints():
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert installs and all("-c constraints.txt" in line for line in installs)
    image = re.search(r"apache/beam_python(\d+\.\d+)_sdk:([\w.]+)", dockerfile)
    assert image.group(2) == _pins()["apache-beam"]
    assert image.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"


BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed on a worker")
        return None
sys.meta_path.insert(0, Blocker())
from petseg.cli.segment import main
sys.exit(main({argv!r}))
"""


@pytest.mark.slow
def test_the_job_runs_without_the_training_packages(model_dir, tmp_path):
    tree = write_image_tree(tmp_path / "in")
    argv = job_argv(tree, model_dir, tmp_path / "out", "--max-failed-fraction", "1")
    script = BLOCKER.format(blocked=set(TRAINING_ONLY), argv=argv)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "summary.json").is_file()


def test_the_generated_worker_requirements_pin_the_tested_closure():
    from petseg.cli.worker_requirements import worker_closure

    closure = worker_closure()
    pins = _pins()
    assert {"apache-beam", "tensorflow", "keras", "numpy", "pillow", "protobuf"} <= set(closure)
    # What TensorFlow itself requires is in every install (TensorFlow 2.20 requires
    # tensorboard), even where only training imports it.
    required_by_tensorflow = {
        _canonical(r.name)
        for r in map(Requirement, importlib.metadata.requires("tensorflow") or [])
        if r.marker is None
    }
    assert not ({_canonical(name) for name in TRAINING_ONLY} - required_by_tensorflow) & set(
        closure
    )
    assert "pytest" not in closure and "petseg" not in closure
    # Every package of the worker install is pinned by constraints.txt, at that pin.
    assert {name: pins.get(name) for name in closure} == closure


def test_a_serving_runtime_joins_the_worker_requirements_only_when_asked():
    from petseg.cli.worker_requirements import worker_closure

    assert "openvino" not in worker_closure() and "onnxruntime" not in worker_closure()
    with_runtimes = worker_closure(["openvino", "onnx"])
    assert with_runtimes["openvino"] == _pins()["openvino"]
    assert with_runtimes["onnxruntime"] == _pins()["onnxruntime"]
    # Converting is the training machine's work: tf2onnx stays off the workers.
    assert "tf2onnx" not in with_runtimes


def test_the_worker_image_installs_the_default_backend_runtime():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG PETSEG_EXTRAS=openvino" in dockerfile
    assert 'pip install -c constraints.txt ".[${PETSEG_EXTRAS}]"' in dockerfile


def test_the_worker_requirements_command_prints_a_requirements_file():
    result = subprocess.run(
        [sys.executable, "-m", "petseg.cli.worker_requirements"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    requirements = [Requirement(line) for line in lines]
    assert all(len(requirement.specifier) == 1 for requirement in requirements)
    assert any(_canonical(requirement.name) == "apache-beam" for requirement in requirements)


def _hadolint(dockerfile: pathlib.Path) -> subprocess.CompletedProcess:
    binary = pathlib.Path(sys.executable).parent / "hadolint"
    return subprocess.run(
        [str(binary), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_dockerfile_passes_hadolint(tmp_path):
    result = _hadolint(REPO / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    # The linter does look: an unpinned apt install in a copy is reported.
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        (REPO / "Dockerfile").read_text() + "\nRUN apt-get update && apt-get install -y curl\n"
    )
    reported = _hadolint(careless)
    assert reported.returncode != 0 and "DL3008" in reported.stdout
