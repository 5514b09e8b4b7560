"""Confinement: no input name reaches outside OUT, no link leads out of an input, no user data
is unpickled or evaluated.
"""

from __future__ import annotations

import ast
import os
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petseg.beam.io import (
    InputSpec,
    UnsafePathError,
    join_path,
    list_input,
    mask_relative_path,
    overlay_relative_path,
)
from tests.conftest import REPO_ROOT as REPO

OUTPUT = "/data/out"
PATH_EXAMPLES = 3000
# Pieces a hostile name is made of: climbs, roots, schemes, encodings, separators.
TOKENS = [
    "..",
    ".",
    "",
    "...",
    "%2e%2e",
    "%2E%2E%2F",
    "..%2f",
    "%252e%252e",
    "~",
    "C:",
    "\\\\server\\share",
    "gs:",
    "s3://bucket",
    "file:///etc",
    "http://x/..",
    "/etc/passwd",
    "\x00",
    "\n",
    "..\\..",
    " ",
    "-rf",
    "--model",
    "a.jpg",
    "ü.png",
    "x.PNG",
    "masks",
    "overlays",
]
SEPARATORS = ["/", "\\", "//", "/./", "\\..\\"]


@st.composite
def hostile_paths(draw) -> str:
    parts = draw(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=8))
    separators = draw(
        st.lists(st.sampled_from(SEPARATORS), min_size=len(parts), max_size=len(parts))
    )
    return "".join(part + separator for part, separator in zip(parts, separators, strict=True))[
        : draw(st.integers(0, 200))
    ] + draw(st.sampled_from(["", ".jpg", "/..", "/.", ".png"]))


@settings(max_examples=PATH_EXAMPLES, deadline=None, derandomize=True)
@given(st.one_of(hostile_paths(), st.text(max_size=40)))
def test_no_input_path_maps_outside_the_output(relative):
    try:
        mask_path = mask_relative_path(relative)
    except UnsafePathError:
        return
    parts = mask_path.split("/")
    assert parts[0] == "masks" and ".." not in parts and "" not in parts
    assert mask_path.endswith(".png")
    final = os.path.normpath(join_path(OUTPUT, mask_path))
    assert final.startswith(OUTPUT + "/masks/")
    overlay = os.path.normpath(join_path(OUTPUT, overlay_relative_path(mask_path)))
    assert overlay.startswith(OUTPUT + "/overlays/")


@pytest.mark.parametrize(
    "relative",
    ["../x.jpg", "a/../../x.jpg", "..\\x.jpg", "a/b/..", "/..", "x/../y.jpg"],
)
def test_climbing_paths_are_refused(relative):
    with pytest.raises(UnsafePathError):
        mask_relative_path(relative)


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("%2e%2e/%2e%2e/x.jpg", "masks/%2e%2e/%2e%2e/x.png"),
        ("/etc/passwd.jpg", "masks/etc/passwd.png"),
        ("file:///etc/x.jpg", "masks/file:/etc/x.png"),
        ("C:\\Windows\\x.jpg", "masks/C:/Windows/x.png"),
        ("-rf.jpg", "masks/-rf.png"),
    ],
)
def test_encoded_absolute_and_url_like_paths_stay_below_masks(relative, expected):
    # Names are never URL-decoded: %2e%2e is a folder called "%2e%2e".
    assert mask_relative_path(relative) == expected


def test_links_out_of_the_input_folder_are_refused_and_linked_folders_not_entered(tmp_path):
    root, outside = tmp_path / "in", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    (root / "real.jpg").write_bytes(b"x")
    (root / "inside.jpg").symlink_to("real.jpg")
    (root / "out-relative.jpg").symlink_to("../outside/secret.jpg")
    (root / "out-absolute.jpg").symlink_to(outside / "secret.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "climb.jpg").symlink_to("../../outside/secret.jpg")
    (root / "linked-folder").symlink_to(outside, target_is_directory=True)
    listed = {
        os.path.relpath(path, root): refusal
        for path, _, refusal in list_input(InputSpec(f"{root}/**", str(root)))
    }
    assert sorted(listed) == [
        "inside.jpg",
        "out-absolute.jpg",
        "out-relative.jpg",
        "real.jpg",
        "sub/climb.jpg",
    ]
    assert listed["real.jpg"] == listed["inside.jpg"] == ""
    for name in ("out-absolute.jpg", "out-relative.jpg", "sub/climb.jpg"):
        assert "outside the input folder" in listed[name], name


def test_a_file_named_on_its_own_is_read_wherever_its_link_leads(tmp_path):
    (tmp_path / "target.jpg").write_bytes(b"xyz")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "latest.jpg").symlink_to(tmp_path / "target.jpg")
    path = str(tmp_path / "in" / "latest.jpg")
    assert list(list_input(InputSpec(path, str(tmp_path / "in")))) == [(path, 3, "")]


# Calls that would run or unpickle data: never in the library or the drivers.
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
UNSAFE_FLAGS = {("allow_pickle", True), ("shell", True), ("safe_mode", False)}


def _library_sources() -> list[pathlib.Path]:
    return sorted([*(REPO / "petseg").rglob("*.py"), *(REPO / "beam_jobs").rglob("*.py")])


@pytest.mark.parametrize("source", _library_sources(), ids=lambda path: str(path.relative_to(REPO)))
def test_no_pickle_eval_or_exec_in_the_library(source):
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            found += [f"import {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
            found += [f"import {n}" for n in names if n == "yaml"]
        elif isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in FORBIDDEN_CALLS:
                found.append(f"{function.id}() at line {node.lineno}")
            if isinstance(function, ast.Attribute) and function.attr in ("system", "popen"):
                if isinstance(function.value, ast.Name) and function.value.id == "os":
                    found.append(f"os.{function.attr}() at line {node.lineno}")
            for keyword in node.keywords:
                if isinstance(keyword.value, ast.Constant) and (
                    (keyword.arg, keyword.value.value) in UNSAFE_FLAGS
                ):
                    found.append(f"{keyword.arg}={keyword.value.value} at line {node.lineno}")
    assert found == []
