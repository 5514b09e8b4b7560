"""Folders in buckets: the mirror of a training workdir, and training into S3 end to end.

Against moto's S3 server on localhost (:mod:`tests.buckets`), reached over
HTTP through Beam's S3 filesystem.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from unittest import mock

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from petseg.storage import FolderMirror, is_remote, mirrored_folder
from tests.buckets import BUCKET, bucket_objects, s3_flags
from tests.training_runs import (
    ENVIRONMENT,
    FINE_TUNE_EPOCHS,
    FROZEN_EPOCHS,
    kill_when,
    train_command,
)


@pytest.fixture
def s3(store):
    """The store's client, with Beam's filesystems pointed at it for the test."""
    endpoint, client = store
    FileSystems.set_options(PipelineOptions(s3_flags(endpoint)))
    yield client
    FileSystems.set_options(PipelineOptions([]))


def _write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(data)


def _created(calls) -> list[str]:
    return [call.args[0] for call in calls]


def test_urls_are_remote_and_paths_are_not():
    assert is_remote("s3://pets/run") and is_remote("gs://b/x") and is_remote("azfs://a/b/c")
    assert not is_remote("runs/train") and not is_remote("/tmp/x") and not is_remote("C:\\x")


def test_push_uploads_what_changed_and_deletes_what_is_gone(s3, tmp_path):
    url = f"s3://{BUCKET}/mirror-a"
    mirror = FolderMirror(url, str(tmp_path))
    _write(tmp_path / "logs" / "history.csv", b"epoch\n0\n")
    _write(tmp_path / "backup" / "latest.weights.h5", b"w1")
    _write(tmp_path / "plots" / "curves.png", b"png")
    mirror.push()
    assert bucket_objects(s3, "mirror-a") == {
        "logs/history.csv": b"epoch\n0\n",
        "backup/latest.weights.h5": b"w1",
        "plots/curves.png": b"png",
    }

    _write(tmp_path / "logs" / "history.csv", b"epoch\n0\n1\n")
    os.remove(tmp_path / "backup" / "latest.weights.h5")
    with mock.patch.object(FileSystems, "create", wraps=FileSystems.create) as create:
        mirror.push()
    assert _created(create.call_args_list) == [f"{url}/logs/history.csv"]
    assert bucket_objects(s3, "mirror-a") == {
        "logs/history.csv": b"epoch\n0\n1\n",
        "plots/curves.png": b"png",
    }
    with mock.patch.object(FileSystems, "create", wraps=FileSystems.create) as create:
        mirror.push()
    assert create.call_count == 0


def test_what_vouches_for_a_folder_is_uploaded_after_the_rest_of_it(s3, tmp_path):
    url = f"s3://{BUCKET}/mirror-b"
    names = (
        "backup/training_metadata.json",
        "backup/latest.weights.h5",
        "export/petseg.json",
        "export/saved_model.pb",
        "export/variables/v.index",
    )
    for name in names:
        _write(tmp_path / name, name.encode())
    with mock.patch.object(FileSystems, "create", wraps=FileSystems.create) as create:
        FolderMirror(url, str(tmp_path)).push()
    created = [path[len(url) + 1 :] for path in _created(create.call_args_list)]
    # A kill between two uploads leaves no epoch without its weights, no metadata
    # without its model.
    assert sorted(created[-2:]) == ["backup/training_metadata.json", "export/petseg.json"]
    assert sorted(created) == sorted(names)


def test_pull_copies_the_bucket_and_a_push_after_it_uploads_nothing(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="mirror-c/backup/training_metadata.json", Body=b'{"epoch": 2}')
    s3.put_object(Bucket=BUCKET, Key="mirror-c/logs/history.csv", Body=b"epoch\n0\n1\n")
    mirror = FolderMirror(f"s3://{BUCKET}/mirror-c/", str(tmp_path / "local"))
    assert mirror.pull() == 2
    assert (tmp_path / "local" / "backup" / "training_metadata.json").read_bytes() == (
        b'{"epoch": 2}'
    )
    with mock.patch.object(FileSystems, "create", wraps=FileSystems.create) as create:
        mirror.push()
    assert create.call_count == 0


def test_mirrored_folder_pushes_when_the_block_ends_and_not_when_it_fails(s3):
    with mirrored_folder(f"s3://{BUCKET}/mirror-d") as mirror:
        _write(os.path.join(mirror.local, "a.txt"), b"a")
        mirror.push()
        _write(os.path.join(mirror.local, "b.txt"), b"b")
    assert set(bucket_objects(s3, "mirror-d")) == {"a.txt", "b.txt"}
    assert not os.path.exists(mirror.local)

    with pytest.raises(RuntimeError), mirrored_folder(f"s3://{BUCKET}/mirror-d") as mirror:
        assert os.path.isfile(os.path.join(mirror.local, "b.txt"))  # pulled
        _write(os.path.join(mirror.local, "c.txt"), b"half-written")
        raise RuntimeError("killed")
    assert set(bucket_objects(s3, "mirror-d")) == {"a.txt", "b.txt"}
    assert not os.path.exists(mirror.local)


def _finished_epochs(client, prefix: str) -> int:
    key = f"{prefix}/backup/training_metadata.json"
    try:
        return int(json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())["epoch"])
    except client.exceptions.NoSuchKey:
        return 0


@pytest.mark.slow
def test_training_into_a_bucket_resumes_from_it_and_the_job_serves_its_export(store, tmp_path):
    endpoint, client = store
    workdir = f"s3://{BUCKET}/train"
    command = train_command(f"--workdir={workdir}", *s3_flags(endpoint))
    # Killed once the bucket holds a fine-tuning epoch's backup.
    ready = lambda: _finished_epochs(client, "train") >= FROZEN_EPOCHS + 1  # noqa: E731
    kill_when(command, ready, str(tmp_path))
    done = _finished_epochs(client, "train")
    assert FROZEN_EPOCHS < done < FROZEN_EPOCHS + FINE_TUNE_EPOCHS
    assert not any(key.startswith("export/") for key in bucket_objects(client, "train"))

    rerun = subprocess.run(
        command, cwd=tmp_path, env=ENVIRONMENT, capture_output=True, text=True, timeout=280
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = re.search(r"resuming from .*: (\d+) epoch\(s\) already finished", rerun.stderr)
    assert resumed and int(resumed.group(1)) >= done, rerun.stderr[-3000:]
    assert "exported petseg-" in rerun.stdout and f"to {workdir}/export" in rerun.stdout

    outputs = bucket_objects(client, "train")
    assert not any(key.startswith("backup/") for key in outputs)
    assert {"export/petseg.json", "export/saved_model.pb", "plots/curves.png"} <= set(outputs)
    rows = list(csv.DictReader(io.StringIO(outputs["logs/history.csv"].decode())))
    assert sorted({int(row["epoch"]) for row in rows}) == list(
        range(FROZEN_EPOCHS + FINE_TUNE_EPOCHS)
    )
    # No local workdir was left behind: everything went to the bucket.
    assert not os.path.exists(tmp_path / "runs")

    from beam_jobs import segment as segment_job
    from tests.beam_helpers import GOOD_IMAGES, job_argv, write_image_tree

    images = write_image_tree(tmp_path / "in")
    argv = job_argv(images, f"{workdir}/export", tmp_path / "out") + s3_flags(endpoint)
    assert segment_job.main([*argv, "--max-failed-fraction", "1"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["masks_written"] == len(GOOD_IMAGES)
    assert summary["model_id"] == json.loads(outputs["export/petseg.json"])["model_id"]
