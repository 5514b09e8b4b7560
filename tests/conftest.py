"""Shared test set-up: quiet TensorFlow and the locations of the shared real data."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SHARED = REPO_ROOT.parent / "shared"
# `.ci/run` and the Makefile export these; a bare `pytest` falls back to ../shared.
os.environ.setdefault("PETSEG_OXFORD_SAMPLE", str(_SHARED / "data" / "oxford-pets-sample"))
os.environ.setdefault(
    "PETSEG_ENCODER_WEIGHTS",
    str(_SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
)


@pytest.fixture(scope="session")
def oxford_sample() -> pathlib.Path:
    """The 451-image Oxford-IIIT Pet sample, or a skip saying why it is absent."""
    path = pathlib.Path(os.environ["PETSEG_OXFORD_SAMPLE"])
    if not (path / "images").is_dir():
        pytest.skip(f"PETSEG_OXFORD_SAMPLE={path} has no images/: the real-photo sample is absent")
    return path


@pytest.fixture(scope="session")
def encoder_weights() -> pathlib.Path:
    """The MobileNetV2 ImageNet .h5 weights, or a skip saying why they are absent."""
    path = pathlib.Path(os.environ["PETSEG_ENCODER_WEIGHTS"])
    if not path.is_file():
        pytest.skip(
            f"PETSEG_ENCODER_WEIGHTS={path} does not exist: the ImageNet weights are absent"
        )
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> pathlib.Path:
    """One tiny exported U-Net per session, for the segmentation job's tests."""
    from tests.beam_helpers import shared_tiny_model

    return shared_tiny_model(tmp_path_factory)


@pytest.fixture(scope="session")
def converted(model_dir, tmp_path_factory) -> pathlib.Path:
    """A copy of the tiny export with its OpenVINO and ONNX formats, per session; tests
    that change it work on a copy of their own."""
    import shutil

    from petseg.serving.formats import write_formats

    export_dir = tmp_path_factory.mktemp("formats") / "export"
    shutil.copytree(model_dir, export_dir)
    write_formats(str(export_dir), ("openvino", "onnx"))
    return export_dir


@pytest.fixture(scope="module")
def store():
    """``(endpoint URL, boto3 client)`` of an S3 server on localhost with a bucket
    ``tests.buckets.BUCKET``, per module."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.buckets import BUCKET, CREDENTIALS

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
