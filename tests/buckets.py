"""An S3 server on localhost for tests: moto's, started by the ``store`` fixture
(tests/conftest.py) and stopped after the module that uses it.

The code under test reaches it over HTTP through Beam's S3 filesystem
(``--s3_endpoint_url``), as it would reach AWS, not through a mock in-process.
"""

from __future__ import annotations

import pathlib

BUCKET = "pets"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def s3_flags(endpoint: str) -> list[str]:
    """Beam's S3 filesystem flags for the server at ``endpoint``."""
    return [
        *("--s3_endpoint_url", endpoint, "--s3_region_name", "us-east-1"),
        *("--s3_access_key_id", CREDENTIALS["aws_access_key_id"]),
        *("--s3_secret_access_key", CREDENTIALS["aws_secret_access_key"]),
    ]


def upload(client, folder: pathlib.Path, prefix: str) -> None:
    """Every file under ``folder`` into ``BUCKET`` under ``prefix``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder)}")


def bucket_objects(client, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``: its key relative to the prefix -> its bytes."""
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {
        entry["Key"][len(prefix) + 1 :]: client.get_object(Bucket=BUCKET, Key=entry["Key"])[
            "Body"
        ].read()
        for entry in listing
    }
