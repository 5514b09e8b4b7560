"""The house's shape: no import circles in petseg, and workers that load only what they run."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT as REPO

PACKAGE = REPO / "petseg"
# What only training, evaluation, the command line and the report use: a worker never needs it.
TRAINING_MODULES = (
    "petseg.training.export",
    "petseg.training.model",
    "petseg.training.layers",
    "petseg.training.folding",
    "petseg.training.loop",
    "petseg.training.config",
    "petseg.training.data",
    "petseg.training.callbacks",
    "petseg.training.metrics",
    "petseg.training.plots",
    "petseg.training.distribute",
    "petseg.report",
    "petseg.training.evaluate",
    "petseg.cli.flags",
    "petseg.cli.segment",
    "petseg.cli.train",
    "petseg.cli.main",
)
TRAINING_PACKAGES = ("keras", "matplotlib", "tensorflow_datasets")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each petseg module -> the petseg modules it imports, at the top or inside a function."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                    ).strip(".")
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_petseg_imports_itself_back():
    graph = import_graph()
    assert "petseg.beam.layout" in graph and graph["petseg.beam.layout"] == set()
    assert "petseg.beam.io" in graph["petseg.beam.write"]
    assert circles(graph) == []


WORKER = """
import json, sys
import tensorflow
before = set(sys.modules)
import petseg.beam.pipeline
from petseg.beam.inference import PetsegModelHandler
model = PetsegModelHandler({export!r}, max_batch_size=2).load_model()
assert model.identity()
print(json.dumps({{"tensorflow_imported": sorted(before), "after": sorted(sys.modules)}}))
"""


def test_a_worker_loads_the_model_without_training_code(model_dir):
    """Importing the job's modules and loading a model, in a fresh interpreter, imports
    no petseg training module and no training package beyond what ``import
    tensorflow`` imports by itself (TensorFlow 2.20 loads Keras's optimizers eagerly)."""
    script = WORKER.format(export=str(model_dir))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    before, after = set(modules["tensorflow_imported"]), set(modules["after"])
    assert "petseg.beam.write" in after and "petseg.serving.export" in after
    assert not [name for name in TRAINING_MODULES if name in after]
    added = {name.split(".")[0] for name in after - before}
    assert not added & set(TRAINING_PACKAGES)
    assert "tensorflow_datasets" not in after


@pytest.mark.parametrize(
    "module",
    sorted(f"petseg.serving.{path.stem}" for path in (PACKAGE / "serving").glob("[!_]*.py")),
)
def test_serving_modules_import_no_keras_themselves(module):
    tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & set(TRAINING_PACKAGES)


# Private parts of Beam, argparse and Keras that petseg must not build on: each is
# one upgrade away from breaking.
PRIVATE_APIS = (
    "_BeamArgumentParser",
    "._actions",
    "_SubParsersAction",
    "WindowedValue(",
    "_inbound_nodes",
    "keras.src",
)


def test_petseg_uses_no_private_api_of_its_dependencies():
    uses = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name in PRIVATE_APIS
        if name in path.read_text()
    ]
    assert uses == []


LONGEST_FUNCTION = 60


def test_no_function_in_petseg_is_over_sixty_lines():
    long = [
        f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
    ]
    assert long == []


SUB_PACKAGES = ("beam", "cli", "labels", "serving", "training")


@pytest.mark.parametrize("package", SUB_PACKAGES)
def test_each_sub_package_names_each_of_its_modules(package):
    import importlib

    document = importlib.import_module(f"petseg.{package}").__doc__
    modules = {path.stem for path in (PACKAGE / package).glob("*.py") if path.stem != "__init__"}
    modules |= {path.parent.name for path in (PACKAGE / package).glob("*/__init__.py")}
    unnamed = {
        name
        for name in modules
        if f"petseg.{package}.{name}`" not in document and f"``{name}``" not in document
    }
    assert unnamed == set()


def test_only_the_command_line_imports_the_command_line():
    graph = import_graph()
    importers = {
        module
        for module, targets in graph.items()
        if not module.startswith("petseg.cli") and any(t.startswith("petseg.cli") for t in targets)
    }
    assert importers == set()
    assert "petseg.cli.flags" in graph["petseg.cli.segment"]


def test_the_tests_mirror_the_package():
    folders = {path.name for path in (REPO / "tests").iterdir() if (path / "__init__.py").exists()}
    assert folders == set(SUB_PACKAGES)
    for package in SUB_PACKAGES:
        assert list((REPO / "tests" / package).glob("test_*.py")), package
