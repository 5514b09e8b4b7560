"""The whole job against an object store: model, images and OUT in a bucket.

The store is moto's S3 server on localhost (:mod:`tests.buckets`).
"""

from __future__ import annotations

import json

import pytest

from beam_jobs import segment as segment_job
from tests.beam_helpers import GOOD_IMAGES, job_argv, snapshot, write_image_tree
from tests.buckets import BUCKET, bucket_objects, s3_flags, upload


@pytest.fixture(scope="module")
def bucket_run(store, model_dir, tmp_path_factory):
    """A run with everything in the bucket, and the same run on local disk."""
    endpoint, client = store
    base = tmp_path_factory.mktemp("buckets")
    tree = write_image_tree(base / "in")
    upload(client, tree, "in")
    upload(client, model_dir, "model")
    argv = job_argv(f"s3://{BUCKET}/in/", f"s3://{BUCKET}/model", f"s3://{BUCKET}/out")
    argv += ["--max-failed-fraction", "1", *s3_flags(endpoint)]
    assert segment_job.main(argv) == 0
    local = base / "out"
    segment_job.run(job_argv(tree, model_dir, local))
    return argv, client, local


def test_masks_statistics_and_summary_land_in_the_bucket(bucket_run):
    _, client, _ = bucket_run
    objects = bucket_objects(client, "out")
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
    objects = bucket_objects(client, "out")
    local_masks = {
        name: data for name, data in snapshot(local).items() if name.startswith("masks/")
    }
    assert {name: objects[name] for name in local_masks} == local_masks


def test_a_rerun_into_the_bucket_resumes(bucket_run, capsys):
    argv, client, _ = bucket_run
    before = {
        name: data for name, data in bucket_objects(client, "out").items() if "summary" not in name
    }
    capsys.readouterr()
    assert segment_job.main(argv) == 0
    assert (
        f"{len(GOOD_IMAGES)} masks written ({len(GOOD_IMAGES)} reused)" in capsys.readouterr().err
    )
    after = {
        name: data for name, data in bucket_objects(client, "out").items() if "summary" not in name
    }
    assert after == before


def test_overwrite_clears_the_bucket_and_outputs_without_a_record_are_refused(bucket_run):
    argv, client, _ = bucket_run
    # An object store has no folders: --overwrite must delete the prefixes, or
    # the masks left there would be reused.
    assert segment_job.main([*argv, "--overwrite"]) == 0
    summary = json.loads(bucket_objects(client, "out")["summary.json"])
    assert summary["masks_reused"] == 0 and summary["masks_written"] == len(GOOD_IMAGES)

    client.delete_object(Bucket=BUCKET, Key="out/petseg-run.json")
    assert segment_job.main(argv) == 2
