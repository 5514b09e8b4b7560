"""The job on a real engine: a Flink session cluster on localhost, each process its own JVM.

One JobManager and two TaskManagers (``beam_jobs/flink/cluster.py``), Beam's
Flink job server, and an SDK worker pool. The job's outputs on Flink must be
the DirectRunner's, byte for byte; and when a TaskManager is killed halfway
through a run, the same command must still end with the uninterrupted run's
outputs.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from beam_jobs import segment as segment_job
from beam_jobs.flink import cluster as flink_cluster
from petseg.cli import segment as command
from tests.beam_helpers import (
    BAD_IMAGES,
    COLLISION_LOSERS,
    GOOD_IMAGES,
    job_argv,
    snapshot,
    write_image_tree,
)
from tests.conftest import REPO_ROOT as REPO
from tests.images import jpeg

pytestmark = pytest.mark.slow


TIMING_FIELDS = ("wall_time_s", "images_per_second")
# The fault test's corpus: small photos, a few broken files among them.
MANY_IMAGES = 2000
MANY_BAD = ("broken-0.jpg", "broken-1.jpg", "empty.jpg")


def _require_flink() -> None:
    jar = flink_cluster.job_server_jar()
    home = flink_cluster.flink_home()
    if not jar.is_file() or not (home / "bin" / "jobmanager.sh").is_file():
        pytest.skip(
            f"Flink {flink_cluster.FLINK_VERSION} or Beam's job server is not under "
            f"{flink_cluster.DEFAULT_CACHE}: `make flink` fetches them (needs Java and Maven)"
        )


@pytest.fixture(scope="module")
def flink(tmp_path_factory):
    _require_flink()
    with flink_cluster.running(tmp_path_factory.mktemp("flink-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("flink-tree") / "in")


def _without_timing(summary):
    return {key: value for key, value in summary.items() if key not in TIMING_FIELDS}


def _newest_job(cluster) -> dict:
    return max(cluster.jobs(), key=lambda job: job["start-time"])


@pytest.fixture(scope="module")
def direct(tree, model_dir, tmp_path_factory):
    """The DirectRunner's run of the tree: the outputs Flink must reproduce."""
    output = tmp_path_factory.mktemp("flink-direct") / "out"
    summary = segment_job.run(job_argv(tree, model_dir, output))
    return summary, snapshot(output)


@pytest.fixture(scope="module")
def on_flink(flink, tree, model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("flink-run") / "out"
    summary = segment_job.run(job_argv(tree, model_dir, output, *flink.flags()))
    return output, summary, _newest_job(flink)


def test_the_cluster_is_a_jobmanager_and_two_taskmanager_jvms(flink):
    managers = flink.taskmanagers()
    assert len(managers) == 2
    assert all(manager["slotsNumber"] == 2 for manager in managers)
    commands = {
        name: pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        for name, pid in flink.processes.items()
    }
    assert len(set(flink.processes.values())) == len(flink.processes) == 4
    assert commands["jobmanager"][0].endswith(b"java")
    assert any(b"StandaloneSessionClusterEntrypoint" in part for part in commands["jobmanager"])
    for index in range(2):
        assert commands[f"taskmanager-{index}"][0].endswith(b"java")
        assert any(b"TaskManagerRunner" in part for part in commands[f"taskmanager-{index}"])


def test_flink_writes_what_the_direct_runner_writes(direct, on_flink):
    output, summary, job = on_flink
    expected_summary, expected_files = direct
    assert job["state"] == "FINISHED"
    assert snapshot(output) == expected_files
    assert _without_timing(summary) == _without_timing(expected_summary)
    assert summary["masks_written"] == len(GOOD_IMAGES)
    assert summary["failed"] == len(BAD_IMAGES) + len(COLLISION_LOSERS)
    on_disk = json.loads((output / "summary.json").read_text())
    assert on_disk["reconciliation"]["ok"] and on_disk["wall_time_s"] > 0


def test_work_ran_on_both_taskmanagers(flink, on_flink):
    _, _, job = on_flink
    records = flink.records_per_taskmanager(job["jid"])
    assert len(records) == 2 and all(count > 0 for count in records.values()), records


def test_the_run_record_and_resume_hold_on_flink(flink, direct, on_flink, tree, model_dir):
    output, first, _ = on_flink
    record = json.loads((output / "petseg-run.json").read_text())
    assert record["model_id"] == first["model_id"]
    summary = segment_job.run(job_argv(tree, model_dir, output, *flink.flags()))
    assert summary["masks_reused"] == len(GOOD_IMAGES)
    assert snapshot(output) == direct[1]
    assert _newest_job(flink)["state"] == "FINISHED"


def test_exit_status_and_parquet_tables_on_flink(flink, tree, model_dir, tmp_path, capsys):
    """Too many failed inputs exit 3 on Flink as locally; its Parquet tables are the DirectRunner's."""
    parquet = ("--stats-format", "parquet", "--max-failed-fraction", "0.1")
    local, remote = tmp_path / "direct", tmp_path / "flink"
    assert (
        command.main(job_argv(tree, model_dir, local, *parquet))
        == command.EXIT_TOO_MANY_FAILED_INPUTS
    )
    assert (
        command.main(job_argv(tree, model_dir, remote, *parquet, *flink.flags()))
        == command.EXIT_TOO_MANY_FAILED_INPUTS
    )
    errors = capsys.readouterr().err
    assert errors.count("more than --max-failed-fraction 0.1 allows") == 2
    tables = sorted(path.relative_to(remote) for path in remote.rglob("*.parquet"))
    assert tables, "no Parquet tables were written"
    assert snapshot(remote) == snapshot(local)
    for table in tables:
        assert (remote / table).read_bytes() == (local / table).read_bytes()


def _write_many(root: pathlib.Path) -> pathlib.Path:
    """MANY_IMAGES small distinct JPEGs in 20 folders, and a few broken files."""
    generator = np.random.default_rng(26)
    for index in range(MANY_IMAGES):
        path = root / f"part-{index % 20:02d}" / f"photo-{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(generator.integers(0, 256, (24, 32, 3), dtype=np.uint8), quality=80))
    (root / "broken-0.jpg").write_bytes(b"not a picture")
    (root / "broken-1.jpg").write_bytes(jpeg(np.zeros((40, 40, 3), np.uint8))[:200])
    (root / "empty.jpg").write_bytes(b"")
    return root


def _driver(argv: list[str], log: pathlib.Path) -> subprocess.Popen:
    """The job's driver in its own process, as a user starts it."""
    with open(log, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "beam_jobs.segment", *argv],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


def _masks(output: pathlib.Path) -> int:
    masks = output / "masks"
    return sum(1 for _ in masks.rglob("*.png")) if masks.is_dir() else 0


def test_a_taskmanager_killed_halfway_leaves_the_right_outputs(model_dir, tmp_path):
    """SIGKILL one TaskManager at about half the masks; the same command then ends as
    an uninterrupted run does, and the kill fails no image."""
    _require_flink()
    inputs = _write_many(tmp_path / "in")

    def argv(output: pathlib.Path, *extra: str) -> list[str]:
        tolerant = ("--max-failed-fraction", "0.01")
        return job_argv(inputs, model_dir, output, *tolerant, *extra, batch_size=16)

    reference = tmp_path / "reference"
    expected = segment_job.run(argv(reference))
    with flink_cluster.running(tmp_path / "cluster") as cluster:
        output = tmp_path / "out"
        flags = argv(output, *cluster.flags())
        driver = _driver(flags, tmp_path / "first.log")
        deadline = time.monotonic() + 600
        while _masks(output) < MANY_IMAGES // 2 and driver.poll() is None:
            assert time.monotonic() < deadline, "the job never reached half its masks"
            time.sleep(0.2)
        assert driver.poll() is None, "the job ended before the kill: give it more images"
        killed_at = _masks(output)
        cluster.kill_taskmanager(1)
        first_status = driver.wait(timeout=600)
        first_lines = (tmp_path / "first.log").read_text().strip().splitlines()
        job = _newest_job(cluster)
        history = cluster.rest(f"jobs/{job['jid']}/exceptions").get("exceptionHistory", {})
        restarts = len(history.get("entries", []))

        rerun = _driver(flags, tmp_path / "rerun.log")
        assert rerun.wait(timeout=600) == command.EXIT_DONE, (tmp_path / "rerun.log").read_text()[
            -3000:
        ]
    summary = json.loads((output / "summary.json").read_text())
    report = {
        "killed_at_masks": killed_at,
        "first_status": first_status,
        "first_line": first_lines[-1] if first_lines else "",
        "flink_job_state": job["state"],
        "flink_failures_recorded": restarts,
        "rerun_inferred": summary["masks_written"] - summary["masks_reused"],
        "rerun_reused": summary["masks_reused"],
    }
    (tmp_path / "fault-report.json").write_text(json.dumps(report, indent=2))
    print("flink fault:", json.dumps(report))

    # Flink either restarted the job on the surviving TaskManager (the driver
    # succeeded) or failed it (the driver said so in one line, exit 1).
    if first_status == command.EXIT_DONE:
        assert job["state"] == "FINISHED" and restarts >= 1
    else:
        assert first_status == command.EXIT_FAILED
        assert (
            "the job failed" in first_lines[-1]
            and "rerunning the same command resumes" in first_lines[-1]
        )
        assert not any(line.startswith("Traceback") for line in first_lines)
    assert snapshot(output) == snapshot(reference)
    assert summary["reconciliation"]["ok"]
    assert summary["failed"] == expected["failed"] == len(MANY_BAD)
    assert _without_timing(summary) == {
        **_without_timing(expected),
        "masks_reused": summary["masks_reused"],
    }
