"""Bad configuration beyond tests/beam/test_segment.py: one line, exit 2, nothing run.

Here: a model whose SavedModel disagrees with its petseg.json (class count,
image size), malformed or too new metadata, non-integer and out-of-range
numeric flags, an output that cannot be created or that is the input under
another name, and a glob that matches nothing.
"""

from __future__ import annotations

import json
import shutil

import pytest

from beam_jobs import segment as segment_job
from petseg.beam.faults import EnvironmentFault
from petseg.beam.inference import PetsegModelHandler
from petseg.serving.export import ExportError, load_serving_model
from tests.beam_helpers import MODEL_SIZE
from tests.images import gradient, jpeg

MISMATCHES = {
    # petseg.json names 4 classes; the SavedModel outputs 3.
    "classes": (
        {"class_names": ["pet", "background", "border", "sky"]},
        "outputs 3 classes but petseg.json names 4",
    ),
    # petseg.json says 128 px; the SavedModel takes 64.
    "image-size": (
        {"image_size": 2 * MODEL_SIZE},
        f"takes {MODEL_SIZE}x{MODEL_SIZE} images but petseg.json says {2 * MODEL_SIZE}",
    ),
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("config") / "photos"
    root.mkdir()
    (root / "cat.jpg").write_bytes(jpeg(gradient(40, 30)))
    return root


def _edited_model(model_dir, folder, changes=None, text=None):
    shutil.copytree(model_dir, folder)
    metadata = folder / "petseg.json"
    if text is not None:
        metadata.write_text(text)
    else:
        document = json.loads(metadata.read_text())
        document.update(changes)
        metadata.write_text(json.dumps(document))
    return folder


@pytest.mark.parametrize("kind", sorted(MISMATCHES))
def test_model_mismatch_is_detected_at_load_time(kind, model_dir, tmp_path):
    changes, message = MISMATCHES[kind]
    edited = _edited_model(model_dir, tmp_path / "model", changes)
    with pytest.raises(ExportError, match=message):
        load_serving_model(str(edited))
    # Workers load through the same function; there it fails the job, not the images.
    with pytest.raises(EnvironmentFault, match=f"cannot load the model .*{message}"):
        PetsegModelHandler(str(edited)).load_model()


def _main(capsys, photos, model, output, *extra, inputs=None) -> str:
    argv = [
        *(arg for text in (inputs or [str(photos)]) for arg in ("--input", text)),
        *("--model", str(model), "--output", str(output), *extra),
    ]
    assert segment_job.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("petseg-segment: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("kind", sorted(MISMATCHES))
def test_model_mismatch_exits_2_before_the_pipeline(kind, model_dir, photos, tmp_path, capsys):
    changes, message = MISMATCHES[kind]
    edited = _edited_model(model_dir, tmp_path / "model", changes)
    output = tmp_path / "out"
    assert message in _main(capsys, photos, edited, output)
    assert not (output / "masks").exists() and not (output / "summary.json").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "is malformed"),
        ('{"image_size": 64}', "is malformed"),
        (
            '{"format_version": 99, "image_size": 64, "class_names": ["a", "b", "c"]}',
            "newer than this petseg",
        ),
    ],
    ids=["not-json", "no-class-names", "newer-format"],
)
def test_bad_metadata_exits_2(text, expected, model_dir, photos, tmp_path, capsys):
    edited = _edited_model(model_dir, tmp_path / "model", text=text)
    assert expected in _main(capsys, photos, edited, tmp_path / "out")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--max-batch-size", "2.5"], "invalid int value: '2.5'"),
        (["--max-batch-size", "-3"], "--max-batch-size must be at least 1, got -3"),
        (["--min-batch-size", "0"], "--min-batch-size must be at least 1, got 0"),
        (["--min-batch-size", "one"], "invalid int value: 'one'"),
        (["--max-pixels", "0"], "--max-pixels must be at least 1, got 0"),
        (["--max-pixels", "1e6"], "invalid int value: '1e6'"),
        (["--max-file-bytes", "-1"], "--max-file-bytes must be at least 1, got -1"),
        (["--max-file-bytes", ""], "invalid int value: ''"),
        (["--progress-interval", "soon"], "invalid float value: 'soon'"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--threads", "all"], "invalid int value: 'all'"),
    ],
    ids=lambda value: "_".join(value) if isinstance(value, list) else None,
)
def test_invalid_numeric_flags_exit_2(flags, expected, model_dir, photos, tmp_path, capsys):
    assert expected in _main(capsys, photos, model_dir, tmp_path / "out", *flags)
    assert not (tmp_path / "out").exists()


def test_output_that_cannot_be_created_exits_2(model_dir, photos, capsys):
    # /proc refuses new entries even to root.
    assert "is not writable" in _main(capsys, photos, model_dir, "/proc/petseg-out")


def test_output_that_is_the_input_through_a_link_exits_2(model_dir, photos, tmp_path, capsys):
    link = tmp_path / "same-as-photos"
    link.symlink_to(photos, target_is_directory=True)
    assert "inside the input folder" in _main(capsys, photos, model_dir, link)
    assert sorted(p.name for p in photos.iterdir()) == ["cat.jpg"]


def test_input_glob_that_matches_nothing_exits_2(model_dir, photos, tmp_path, capsys):
    line = _main(capsys, photos, model_dir, tmp_path / "out", inputs=[f"{photos}/*.png"])
    assert "matches no image files" in line


def test_input_of_only_unusable_entries_is_still_accounted(model_dir, tmp_path):
    # Matching counts every entry, even one the job will refuse: the run starts and reports it.
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "loop.jpg").symlink_to("loop.jpg")
    summary = segment_job.run(
        ["--input", str(folder), "--model", str(model_dir), "--output", str(tmp_path / "out")]
    )
    assert (summary["matched"], summary["failed"], summary["masks_written"]) == (1, 1, 0)
    assert summary["failed_by_stage"]["read"] == 1
