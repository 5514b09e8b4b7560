"""The whole job against an object store: model, images and OUT in a bucket.

The store is moto's S3 server, started on localhost by the test and stopped
after it: the job's own requests go over HTTP through Beam's S3 filesystem
(``--s3_endpoint_url``), as they would to AWS, not through a mock in-process.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from beam_jobs import segment as segment_job
from tests.beam_helpers import GOOD_IMAGES, job_argv, snapshot, write_image_tree

BUCKET = "pets"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def store():
    """``(endpoint URL, boto3 client)`` of an S3 server on localhost, for this module."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()


def _upload(client, folder: pathlib.Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder)}")


def _objects(client, prefix: str) -> dict[str, bytes]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {
        entry["Key"][len(prefix) + 1 :]: client.get_object(Bucket=BUCKET, Key=entry["Key"])[
            "Body"
        ].read()
        for entry in listing
    }


@pytest.fixture(scope="module")
def bucket_run(store, model_dir, tmp_path_factory):
    """A run with everything in the bucket, and the same run on local disk."""
    endpoint, client = store
    base = tmp_path_factory.mktemp("buckets")
    tree = write_image_tree(base / "in")
    _upload(client, tree, "in")
    _upload(client, model_dir, "model")
    s3_flags = [
        "--s3_endpoint_url",
        endpoint,
        "--s3_access_key_id",
        CREDENTIALS["aws_access_key_id"],
        "--s3_secret_access_key",
        CREDENTIALS["aws_secret_access_key"],
        "--s3_region_name",
        "us-east-1",
    ]
    argv = job_argv(f"s3://{BUCKET}/in/", f"s3://{BUCKET}/model", f"s3://{BUCKET}/out")
    argv += ["--max-failed-fraction", "1", *s3_flags]
    assert segment_job.main(argv) == 0
    local = base / "out"
    segment_job.run(job_argv(tree, model_dir, local))
    return argv, client, local


def test_masks_statistics_and_summary_land_in_the_bucket(bucket_run):
    _, client, _ = bucket_run
    objects = _objects(client, "out")
    masks = sorted(name for name in objects if name.startswith("masks/"))
    assert len(masks) == len(GOOD_IMAGES)
    summary = json.loads(objects["summary.json"])
    assert summary["reconciliation"]["ok"] and summary["masks_written"] == len(GOOD_IMAGES)
    stats = objects["stats/stats-00000-of-00001.jsonl"].decode().splitlines()
    assert len(stats) == len(GOOD_IMAGES)
    assert all(json.loads(line)["path"].startswith(f"s3://{BUCKET}/in/") for line in stats)
    assert "petseg-run.json" in objects


def test_the_bucket_holds_the_same_masks_as_local_disk(bucket_run):
    _, client, local = bucket_run
    objects = _objects(client, "out")
    local_masks = {
        name: data for name, data in snapshot(local).items() if name.startswith("masks/")
    }
    assert {name: objects[name] for name in local_masks} == local_masks


def test_a_rerun_into_the_bucket_resumes(bucket_run, capsys):
    argv, client, _ = bucket_run
    before = {name: data for name, data in _objects(client, "out").items() if "summary" not in name}
    capsys.readouterr()
    assert segment_job.main(argv) == 0
    assert (
        f"{len(GOOD_IMAGES)} masks written ({len(GOOD_IMAGES)} reused)" in capsys.readouterr().err
    )
    after = {name: data for name, data in _objects(client, "out").items() if "summary" not in name}
    assert after == before


def test_overwrite_clears_the_bucket_and_outputs_without_a_record_are_refused(bucket_run):
    argv, client, _ = bucket_run
    # An object store has no folders: --overwrite must delete the prefixes, or
    # the masks left there would be reused.
    assert segment_job.main([*argv, "--overwrite"]) == 0
    summary = json.loads(_objects(client, "out")["summary.json"])
    assert summary["masks_reused"] == 0 and summary["masks_written"] == len(GOOD_IMAGES)

    client.delete_object(Bucket=BUCKET, Key="out/petseg-run.json")
    assert segment_job.main(argv) == 2
