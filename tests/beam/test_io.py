"""Inputs, mask paths, confinement and collisions of the segmentation job."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given
from hypothesis import strategies as st

from petseg.beam.io import (
    AssignMaskPaths,
    InputSpec,
    MatchImages,
    UnsafePathError,
    has_extension,
    join_path,
    mask_relative_path,
    overlay_relative_path,
    relative_to_root,
    resolve_input,
)
from petseg.beam.records import SourceImage


def _touch(root, *relatives):
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 3)


def test_resolve_input_folder_file_and_pattern(tmp_path):
    _touch(tmp_path, "a/b.jpg")
    assert resolve_input(str(tmp_path / "a")) == InputSpec(f"{tmp_path}/a/**", f"{tmp_path}/a")
    assert resolve_input(str(tmp_path / "a") + "/") == InputSpec(
        f"{tmp_path}/a/**", f"{tmp_path}/a"
    )
    assert resolve_input(str(tmp_path / "a/b.jpg")) == InputSpec(
        f"{tmp_path}/a/b.jpg", f"{tmp_path}/a"
    )
    assert resolve_input(f"{tmp_path}/a/*.jpg") == InputSpec(f"{tmp_path}/a/*.jpg", f"{tmp_path}/a")
    assert resolve_input(f"{tmp_path}/a/**/x*.png") == InputSpec(
        f"{tmp_path}/a/**/x*.png", f"{tmp_path}/a"
    )


def test_resolve_input_makes_relative_paths_absolute(tmp_path, monkeypatch):
    _touch(tmp_path, "photos/p.png")
    monkeypatch.chdir(tmp_path)
    assert resolve_input("photos") == InputSpec(f"{tmp_path}/photos/**", f"{tmp_path}/photos")
    assert resolve_input("photos/*.png").root == f"{tmp_path}/photos"


def test_remote_patterns_keep_their_scheme():
    spec = resolve_input("gs://bucket/photos/*.jpg")
    assert spec == InputSpec("gs://bucket/photos/*.jpg", "gs://bucket/photos")
    assert resolve_input("gs://bucket/photos/") == InputSpec(
        "gs://bucket/photos/**", "gs://bucket/photos"
    )


def test_has_extension_is_case_insensitive():
    assert has_extension("/x/A.JPG", ["jpg"])
    assert has_extension("gs://b/x.tiff", ["tif", ".tiff"])
    assert not has_extension("/x/readme.txt", ["jpg"])
    assert not has_extension("/x/jpg", ["jpg"])


def test_relative_to_root():
    assert relative_to_root("/in/a/b.jpg", "/in") == "a/b.jpg"
    assert relative_to_root("/in/a/b.jpg", "/in/") == "a/b.jpg"
    assert relative_to_root("/elsewhere/b.jpg", "/in") == "b.jpg"


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("cat.jpg", "masks/cat.png"),
        ("a/b/Cat.JPEG", "masks/a/b/Cat.png"),
        ("a/./b.jpg", "masks/a/b.png"),
        ("/etc/passwd.jpg", "masks/etc/passwd.png"),
        ("//server/share/x.png", "masks/server/share/x.png"),
        ("gs://bucket/x.jpg", "masks/gs:/bucket/x.png"),
        ("noextension", "masks/noextension.png"),
        ("..jpg", "masks/..png"),
        ("a\\b.jpg", "masks/a/b.png"),
    ],
)
def test_mask_paths_stay_under_masks(relative, expected):
    assert mask_relative_path(relative) == expected


@pytest.mark.parametrize(
    "relative",
    [
        "../x.jpg",
        "a/../../x.jpg",
        "a/..",
        "..\\..\\x.jpg",
        "a/b/../../../etc/x.png",
        "",
        "/",
        "./.",
    ],
)
def test_crafted_paths_are_refused(relative):
    with pytest.raises(UnsafePathError):
        mask_relative_path(relative)


@given(st.text(alphabet=st.sampled_from(list("ab./\\:~ %")), max_size=30))
def test_no_relative_path_escapes_the_output(relative):
    output = "/data/out"
    try:
        mask_path = mask_relative_path(relative)
    except UnsafePathError:
        return
    final = os.path.normpath(join_path(output, mask_path))
    assert final.startswith(output + "/masks/")
    assert final.endswith(".png")
    assert overlay_relative_path(mask_path).startswith("overlays/")


def test_match_images_lists_recursively_and_deduplicates(tmp_path):
    _touch(tmp_path, "in/a.jpg", "in/sub/b.PNG", "in/sub/c.txt", "in/.hidden/d.gif")
    root = f"{tmp_path}/in"
    inputs = [InputSpec(f"{root}/**", root), InputSpec(f"{root}/sub/*.PNG", f"{root}/sub")]
    with test_pipeline.TestPipeline() as pipeline:
        sources = pipeline | MatchImages(inputs, ["jpg", "png", "gif"])
        # b.PNG is matched by both inputs but counted once, named by the first input.
        assert_that(
            sources,
            equal_to(
                [
                    SourceImage(f"{root}/a.jpg", "a.jpg", 3),
                    SourceImage(f"{root}/sub/b.PNG", "sub/b.PNG", 3),
                    SourceImage(f"{root}/.hidden/d.gif", ".hidden/d.gif", 3),
                ]
            ),
        )


def test_assign_mask_paths_reports_collisions_and_unsafe_paths():
    sources = [
        SourceImage("/in/pets/a.png", "pets/a.png"),
        SourceImage("/in/pets/a.jpg", "pets/a.jpg"),
        SourceImage("/in/pets/b.jpg", "pets/b.jpg"),
        SourceImage("gs://b/x/../../evil.jpg", "x/../../evil.jpg"),
    ]
    with test_pipeline.TestPipeline() as pipeline:
        assigned, errors, committed, stale = pipeline | beam.Create(sources) | AssignMaskPaths()
        assert_that(committed, equal_to([]), label="CheckNoneCommitted")
        assert_that(stale, equal_to([]), label="CheckNoneStale")
        assert_that(
            assigned,
            equal_to(
                [
                    SourceImage("/in/pets/a.jpg", "pets/a.jpg", 0, "masks/pets/a.png"),
                    SourceImage("/in/pets/b.jpg", "pets/b.jpg", 0, "masks/pets/b.png"),
                ]
            ),
            label="CheckAssigned",
        )
        assert_that(
            errors | beam.Map(lambda error: (error.path, error.stage, error.error_type)),
            equal_to(
                [
                    ("/in/pets/a.png", "match", "MaskCollisionError"),
                    ("gs://b/x/../../evil.jpg", "match", "UnsafePathError"),
                ]
            ),
            label="CheckErrors",
        )


def test_collision_loser_message_names_the_winner():
    with test_pipeline.TestPipeline() as pipeline:
        _, errors, _, _ = (
            pipeline
            | beam.Create([SourceImage("/in/a.png", "a.png"), SourceImage("/in/a.jpg", "a.jpg")])
            | AssignMaskPaths()
        )
        assert_that(
            errors
            | beam.Map(
                lambda error: "/in/a.jpg" in error.message and "masks/a.png" in error.message
            ),
            equal_to([True]),
        )
