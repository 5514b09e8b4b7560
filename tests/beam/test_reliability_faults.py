"""Faults of the environment fail the job (or are retried); they never fail an image.

A real full disk is a small ``tmpfs`` mounted by the test; transient and
persistent faults of storage and of the model are injected into the job's
own calls, in-process, so the runner's handling of them is the real one.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys

import pytest
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from beam_jobs import segment as segment_job
from petseg.beam.faults import engine_failure_message
from petseg.beam.layout import TEMP_MARKER
from tests.beam_helpers import job_argv
from tests.conftest import REPO_ROOT as REPO
from tests.images import gradient, jpeg

IMAGES = 40
# Room left on the full disk: the run record and a few masks (tmpfs gives each file a page).
ROOM_BYTES = 24 * 1024


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr("petseg.beam.faults.WRITE_RETRY_DELAY_S", 0.01)


def _write_inputs(root: pathlib.Path) -> pathlib.Path:
    for index in range(IMAGES):
        pixels = ((gradient(48, 36).astype(int) + 7 * index) % 256).astype("uint8")
        path = root / f"pet{index:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(pixels))
    return root


@pytest.fixture
def inputs(tmp_path):
    return _write_inputs(tmp_path / "in")


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("petseg-segment: error:")]


def _summary(output: pathlib.Path) -> dict:
    return json.loads((output / "summary.json").read_text())


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, mounted for the test and unmounted after it."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): "
            + (mounted.stderr.strip() or f"mount exited {mounted.returncode}")
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: pathlib.Path, room: int) -> pathlib.Path:
    """Fills ``disk`` until ``room`` bytes are left; returns the filler file."""
    filler = disk / "filler"
    status = os.statvfs(disk)
    free = status.f_bavail * status.f_frsize
    with open(filler, "wb") as file:
        file.write(b"\0" * (free - room))
    return filler


def _run_command(argv: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "beam_jobs.segment", *argv],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_a_full_disk_fails_the_job_in_one_line_and_the_rerun_completes(
    inputs, model_dir, small_disk
):
    output = small_disk / "out"
    filler = _fill(small_disk, ROOM_BYTES)
    argv = job_argv(inputs, model_dir, output)

    failed = _run_command(argv)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    (line,) = _error_lines(failed.stderr)
    assert "No space left on device" in line
    assert "rerunning the same command resumes" in line
    # No image was blamed for it, nothing is half-written, and nothing says "done".
    assert not (output / "errors").exists() or not any(
        path.read_text() for path in (output / "errors").iterdir()
    )
    assert not (output / "summary.json").exists()
    leftovers = [path for path in output.rglob("*") if TEMP_MARKER in path.name]
    assert leftovers == []
    committed = list((output / "masks").rglob("*.png")) if (output / "masks").exists() else []
    assert len(committed) < IMAGES
    for path in committed:
        with Image.open(path) as image:
            image.load()

    filler.unlink()
    again = _run_command(argv)
    assert again.returncode == 0, again.stderr
    summary = _summary(output)
    assert summary["failed"] == 0 and summary["masks_written"] == IMAGES
    assert summary["reconciliation"]["ok"]
    assert summary["masks_reused"] == len(committed)


def test_a_transient_write_error_is_retried_and_no_image_fails(
    inputs, model_dir, tmp_path, monkeypatch
):
    rename = FileSystems.rename
    failures = []

    def flaky(sources, destinations):
        # The first attempt at each of three masks fails once, as a storage hiccup would.
        target = destinations[0]
        if "/masks/" in target and target not in failures and len(failures) < 3:
            failures.append(target)
            raise OSError(errno.EIO, "Input/output error", target)
        return rename(sources, destinations)

    monkeypatch.setattr(FileSystems, "rename", flaky)
    output = tmp_path / "out"
    summary = segment_job.run(job_argv(inputs, model_dir, output))
    assert len(failures) == 3
    assert summary["failed"] == 0 and summary["masks_written"] == IMAGES
    assert summary["reconciliation"]["ok"]
    assert all(pathlib.Path(target).is_file() for target in failures)


def test_a_persistent_read_fault_fails_the_job_and_a_rerun_resumes(
    inputs, model_dir, tmp_path, monkeypatch, capsys
):
    open_file = FileSystems.open
    broken = str(inputs / "pet007.jpg")

    def failing_storage(path, *args, **kwargs):
        if path == broken:
            raise OSError(errno.EIO, "Input/output error", path)
        return open_file(path, *args, **kwargs)

    output = tmp_path / "out"
    argv = job_argv(inputs, model_dir, output)
    with monkeypatch.context() as patch:
        patch.setattr(FileSystems, "open", failing_storage)
        assert segment_job.main(argv) == 1
    captured = capsys.readouterr()
    (line,) = _error_lines(captured.err)
    assert f"cannot read input {broken}: OSError: [Errno 5] Input/output error" in line
    assert "Traceback" not in captured.err
    assert not (output / "summary.json").exists()

    assert segment_job.main(argv) == 0
    summary = _summary(output)
    assert summary["failed"] == 0 and summary["masks_written"] == IMAGES


def test_an_input_that_cannot_be_opened_is_still_the_inputs_fault(inputs, model_dir, tmp_path):
    (inputs / "dangling.jpg").symlink_to(inputs / "gone.jpg")  # ENOENT
    (inputs / "loop.jpg").symlink_to(inputs / "loop.jpg")  # ELOOP
    output = tmp_path / "out"
    summary = segment_job.run(job_argv(inputs, model_dir, output))
    assert summary["failed"] == 2 and summary["failed_by_stage"]["read"] == 2
    assert summary["masks_written"] == IMAGES
    errors = (output / "errors/errors-00000-of-00001.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["path"] for line in errors) == [
        str(inputs / "dangling.jpg"),
        str(inputs / "loop.jpg"),
    ]


def test_a_model_that_cannot_load_on_the_workers_fails_the_job(
    inputs, model_dir, tmp_path, monkeypatch, capsys
):
    def unloadable(export_dir):
        raise OSError(errno.EIO, "Input/output error", f"{export_dir}/variables")

    monkeypatch.setattr("petseg.serving.backends.load_serving_model", unloadable)
    output = tmp_path / "out"
    assert segment_job.main(job_argv(inputs, model_dir, output)) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"cannot load the model {model_dir}" in line
    assert not (output / "errors").exists() or all(
        not path.read_text() for path in (output / "errors").iterdir()
    )


# What Beam's portable runners raise when the engine ends a job, and when the job's code fails.
ENGINE_LOST_A_WORKER = RuntimeError(
    "Pipeline BeamApp-root-1205_50d7 failed in state FAILED: "
    "org.apache.flink.runtime.rpc.exceptions.RecipientUnreachableException: Could not send "
    "message to recipient taskmanager_0, because the recipient is unreachable.\nat org.apache..."
)
WORKER_CODE_FAILED = RuntimeError(
    "Pipeline BeamApp-root-1205_50d7 failed in state FAILED: java.lang.RuntimeException: Error "
    "received from SDK harness for instruction 7: Traceback (most recent call last):\n"
    '  File "petseg/beam/write.py", line 1\nZeroDivisionError: division by zero'
)


def test_an_engine_failure_is_one_line_naming_its_state_and_cause():
    message = engine_failure_message(ENGINE_LOST_A_WORKER)
    assert message == (
        "the runner ended the job in state FAILED: RecipientUnreachableException: Could not "
        "send message to recipient taskmanager_0, because the recipient is unreachable."
    )


def test_a_failure_of_the_jobs_code_keeps_its_traceback():
    assert engine_failure_message(WORKER_CODE_FAILED) is None
    assert engine_failure_message(ValueError("Pipeline x failed")) is None
