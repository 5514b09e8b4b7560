"""The same job on three runners: in-process, multi-processing, and portable (Job API).

The portable run goes through Beam's local job service and an external
worker pool, the same Job API path Flink's job server serves; all three
must write byte-identical masks, statistics and errors.
"""

from __future__ import annotations

import json

import pytest

from beam_jobs import segment as segment_job
from tests.beam_helpers import (
    BAD_IMAGES,
    COLLISION_LOSERS,
    GOOD_IMAGES,
    free_port,
    snapshot,
    start_service,
    stop_service,
    write_image_tree,
)

pytestmark = pytest.mark.slow

# Fields that legitimately differ between runs: timing, and nothing else.
TIMING_FIELDS = ("wall_time_s", "images_per_second")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("runner-tree") / "in")


def _run(tree, model_dir, output, *beam_flags):
    argv = ["--input", str(tree), "--model", str(model_dir), "--output", str(output)]
    return segment_job.run([*argv, "--max-batch-size", "4", *beam_flags])


def _without_timing(summary):
    return {key: value for key, value in summary.items() if key not in TIMING_FIELDS}


@pytest.fixture(scope="module")
def reference(tree, model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("runner-direct") / "out"
    summary = _run(tree, model_dir, output)
    return summary, snapshot(output)


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    """Beam's local job service and an external SDK worker pool, on free localhost ports."""
    logs = tmp_path_factory.mktemp("portable-logs")
    job_port, worker_port = free_port(), free_port()
    job_service = start_service(
        ["apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
        job_port,
        logs / "job_service.log",
    )
    try:
        worker_pool = start_service(
            ["apache_beam.runners.worker.worker_pool_main", "--service_port", str(worker_port)],
            worker_port,
            logs / "worker_pool.log",
        )
    except BaseException:
        stop_service(job_service)
        raise
    yield job_port, worker_port
    stop_service(worker_pool)
    stop_service(job_service)


def test_reference_run_accounts_for_every_file(reference):
    summary, files = reference
    assert summary["reconciliation"]["ok"]
    assert summary["masks_written"] == len(GOOD_IMAGES)
    assert summary["failed"] == len(BAD_IMAGES) + len(COLLISION_LOSERS)
    assert sum(name.startswith("masks/") for name in files) == len(GOOD_IMAGES)


# Model sharing: one model per machine, which the worker processes reach by proxy.
SHARING = {"own-model": (), "shared-model": ("--share-model",)}


@pytest.mark.parametrize("sharing", sorted(SHARING))
def test_multi_processing_matches_in_process(reference, tree, model_dir, tmp_path, sharing):
    output = tmp_path / "out"
    summary = _run(
        tree,
        model_dir,
        output,
        "--direct_running_mode",
        "multi_processing",
        "--direct_num_workers",
        "2",
        *SHARING[sharing],
    )
    expected_summary, expected_files = reference
    assert snapshot(output) == expected_files
    assert _without_timing(summary) == _without_timing(expected_summary)


@pytest.mark.parametrize("sharing", sorted(SHARING))
def test_portable_runner_matches_in_process(
    reference, tree, model_dir, tmp_path, portable_services, sharing
):
    job_port, worker_port = portable_services
    output = tmp_path / "out"
    summary = _run(
        tree,
        model_dir,
        output,
        "--runner",
        "PortableRunner",
        "--job_endpoint",
        f"localhost:{job_port}",
        "--environment_type",
        "EXTERNAL",
        "--environment_config",
        f"localhost:{worker_port}",
        *SHARING[sharing],
    )
    expected_summary, expected_files = reference
    assert snapshot(output) == expected_files
    assert _without_timing(summary) == _without_timing(expected_summary)
    on_disk = json.loads((output / "summary.json").read_text())
    assert on_disk["reconciliation"]["ok"] and on_disk["wall_time_s"] > 0
