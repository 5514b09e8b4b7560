"""Serving formats and backends: OpenVINO and ONNX derived from the SavedModel, answering as it does."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from petseg.serving import backends
from petseg.serving.backends import BackendUnavailable, choose_backend, load_runtime
from petseg.serving.export import read_model_info
from petseg.serving.formats import FormatError, write_formats
from tests.conftest import REPO_ROOT

BATCH = 4
# The formats that keep float32 arithmetic; int8 has a test of its own.
FLOAT32 = ("onnx", "openvino")


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (BATCH, 64, 64, 3), dtype=np.uint8)


def test_petseg_json_lists_each_format_with_its_checksums_and_converter(converted, model_dir):
    formats = json.loads((converted / "petseg.json").read_text())["formats"]
    assert set(formats) == {"openvino", "onnx"}
    assert formats["openvino"]["file"] == "openvino/model.xml"
    assert set(formats["openvino"]["sha256"]) == {"openvino/model.xml", "openvino/model.bin"}
    assert formats["onnx"]["converter"].startswith("tf2onnx ")
    assert formats["openvino"]["converter"].startswith("openvino ")
    for listing in formats.values():
        for relative, digest in listing["sha256"].items():
            assert hashlib.sha256((converted / relative).read_bytes()).hexdigest() == digest
    # The SavedModel, the contract, is untouched; so is the rest of petseg.json.
    for name in ("saved_model.pb", "variables/variables.data-00000-of-00001"):
        assert (converted / name).read_bytes() == (model_dir / name).read_bytes()
    before = json.loads((model_dir / "petseg.json").read_text())
    after = json.loads((converted / "petseg.json").read_text())
    assert {key: value for key, value in after.items() if key != "formats"} == before


@pytest.mark.parametrize("backend", FLOAT32)
def test_each_backend_answers_as_the_saved_model(converted, backend):
    reference, _ = load_runtime(str(converted), "tensorflow")
    runtime, info = load_runtime(str(converted), backend, batch_size=BATCH)
    assert runtime.name == backend and info.image_size == 64
    for seed in range(3):
        images = _images(seed)
        expected = reference.probabilities(images)
        answer = runtime.probabilities(images)
        assert answer.shape == expected.shape and answer.dtype == np.float32
        assert np.abs(answer - expected).max() < 1e-4
        np.testing.assert_array_equal(answer.argmax(-1), expected.argmax(-1))


FRESH = """
import hashlib, sys
import numpy as np
from petseg.serving.backends import load_runtime
runtime, _ = load_runtime(sys.argv[1], sys.argv[2], batch_size=4)
images = np.random.default_rng(5).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
print(hashlib.sha256(runtime.probabilities(images).tobytes()).hexdigest())
"""


@pytest.mark.parametrize("backend", FLOAT32)
def test_a_backend_gives_the_same_bytes_in_every_process(converted, backend):
    digests = {
        subprocess.run(
            [sys.executable, "-c", FRESH, str(converted), backend],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        ).stdout.split()[-1]
        for _ in range(2)
    }
    assert len(digests) == 1


def test_a_format_file_that_changed_is_refused(converted, tmp_path):
    export_dir = tmp_path / "export"
    shutil.copytree(converted, export_dir)
    with open(export_dir / "onnx" / "model.onnx", "r+b") as file:
        file.seek(100)
        file.write(b"\x00\x01\x02")
    with pytest.raises(FormatError, match="onnx/model.onnx does not match its SHA-256"):
        load_runtime(str(export_dir), "onnx")
    (export_dir / "openvino" / "model.bin").unlink()
    with pytest.raises(FormatError, match="openvino/model.bin is missing"):
        load_runtime(str(export_dir), "openvino")


def test_auto_picks_the_fastest_backend_installed_for_the_device(converted, model_dir):
    with_formats, without = read_model_info(str(converted)), read_model_info(str(model_dir))
    assert choose_backend("auto", with_formats) == "openvino"
    assert choose_backend("auto", with_formats, gpu=True) == "tensorflow"
    assert choose_backend("auto", without) == "tensorflow"
    assert choose_backend("onnx", with_formats) == "onnx"
    with pytest.raises(BackendUnavailable, match="has no onnx format; add it with 'petseg export"):
        choose_backend("onnx", without)


def test_a_missing_runtime_is_skipped_by_auto_and_named_with_its_extra(converted, monkeypatch):
    installed = backends.runtime_installed
    monkeypatch.setattr(
        backends, "runtime_installed", lambda name: name != "openvino" and installed(name)
    )
    assert choose_backend("auto", read_model_info(str(converted))) == "onnx"
    with pytest.raises(BackendUnavailable) as raised:
        load_runtime(str(converted), "openvino")
    assert str(raised.value) == (
        "the openvino backend needs openvino, which is not installed here: install petseg[openvino]"
    )


def test_unknown_formats_are_refused(converted):
    with pytest.raises(FormatError, match=r"unknown serving format\(s\) \['tflite'\]"):
        write_formats(str(converted), ("tflite",))


def test_the_export_formats_command_adds_a_format_to_an_export(model_dir, tmp_path, capsys):
    from petseg.cli.main import main

    export_dir = tmp_path / "export"
    shutil.copytree(model_dir, export_dir)
    assert main(["export-formats", str(export_dir), "--format", "onnx"]) == 0
    assert capsys.readouterr().out.startswith("onnx: onnx/model.onnx (tf2onnx ")
    assert set(json.loads((export_dir / "petseg.json").read_text())["formats"]) == {"onnx"}
    runtime, _ = load_runtime(str(export_dir), "onnx")
    assert runtime.probabilities(_images()).shape == (BATCH, 64, 64, 3)
    assert main(["export-formats", str(tmp_path / "nothing")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("petseg export-formats: error: model directory not found")
    assert "\n" not in error


def test_int8_is_calibrated_on_the_images_given_and_refused_without_them(
    model_dir, tmp_path, capsys
):
    from petseg.cli.main import main
    from tests.images import gradient, jpeg

    export_dir = tmp_path / "export"
    shutil.copytree(model_dir, export_dir)
    with pytest.raises(FormatError, match="openvino-int8 needs calibration images"):
        write_formats(str(export_dir), ("openvino-int8",))
    assert "formats" not in json.loads((export_dir / "petseg.json").read_text())
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(6):
        (photos / f"{index}.jpg").write_bytes(jpeg(gradient(40 + index, 30)))
    (photos / "notes.txt").write_text("not an image")
    argv = ["export-formats", str(export_dir), "--format", "openvino-int8"]
    assert main([*argv, "--calibration-images", str(photos)]) == 0
    listing = json.loads((export_dir / "petseg.json").read_text())["formats"]["openvino-int8"]
    assert listing["calibration_images"] == 6 and listing["converter"].startswith("nncf ")
    runtime, _ = load_runtime(str(export_dir), "openvino-int8", batch_size=BATCH)
    answer = runtime.probabilities(_images())
    assert answer.shape == (BATCH, 64, 64, 3) and np.allclose(answer.sum(-1), 1.0, atol=1e-3)
    # Opt-in only: auto never picks it, even where it is the only format.
    assert choose_backend("auto", read_model_info(str(export_dir))) == "tensorflow"
    capsys.readouterr()
    assert main([*argv, "--calibration-images", str(tmp_path / "empty")]) == 2
    assert "no calibration image decodes below" in capsys.readouterr().err
