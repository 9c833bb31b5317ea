"""The package's imports point one way: data in, training, serving out, pictures (issue 16).

Walks every module's imports with `ast` (also those inside functions) and fails on an import
that runs against the layers drawn in BUILD_NOTES.md; a file saved before the move still loads.
"""

import ast
import os
import pathlib

import keras
import numpy as np

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "alexnet_keras"
DATA = pathlib.Path(__file__).resolve().parent / "data"

LIBRARY = {
    "constants", "config", "cpu", "filter_grid", "layers", "data", "model", "flops", "run_dir",
    "training", "importers", "serving", "pictures",
}  # fmt: skip
# What each part may import (besides itself).
ALLOWED = {
    "constants": set(),
    "config": {"constants"},
    "cpu": set(),
    "filter_grid": set(),
    "layers": {"constants", "cpu"},
    "data": {"constants"},
    "model": {"constants", "config", "layers"},
    "flops": {"layers"},
    "run_dir": {"config", "data", "model"},
    "training": {"constants", "config", "cpu", "layers", "data", "model", "run_dir", "filter_grid"},
    "importers": {"constants", "config", "layers", "data", "model", "run_dir"},
    "serving": {"constants", "config", "layers", "data", "model", "run_dir"},
    "pictures": {"constants", "config", "data", "model", "run_dir", "serving", "filter_grid"},
    "cli": LIBRARY,  # The commands may use anything.
    "entry": {"cli"},  # alexnet_keras/train.py, evaluate.py, predict.py: `python -m` shims.
}


def _part(module: str) -> str:
    """alexnet_keras.data.pipeline -> data; alexnet_keras.train -> entry."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] in ("train", "evaluate", "predict"):
        return "entry"
    return parts[1]


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("alexnet_keras.")}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(part for part in relative.parts if part != "__init__")
        yield name, path


def test_every_import_follows_the_layers():
    violations = []
    parts_seen = set()
    for module, path in _modules():
        part = _part(module)
        if part == "package":
            continue
        parts_seen.add(part)
        assert part in ALLOWED, f"{module}: part {part!r} is not in the layer map"
        for imported in _imports(path):
            target = _part(imported)
            if target in ("package", part) or imported.split(".")[-1] == "__version__":
                continue
            if target not in ALLOWED[part]:
                violations.append(f"{module} imports {imported} ({part} -> {target})")
    assert not violations, "\n".join(violations)
    assert parts_seen == set(ALLOWED)  # Every part exists; none is missing from the map.


def test_the_walk_sees_function_level_imports_and_would_fail():
    """The check can fail: a training module importing serving inside a function is seen."""
    source = "def f():\n    from alexnet_keras.serving import export\n"
    tree = ast.parse(source)
    found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert _part(next(iter(found))) == "serving" and "serving" not in ALLOWED["training"]


def test_no_module_is_a_god_file():
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
             for _, path in _modules()}  # fmt: skip
    assert all(size <= 400 for size in sizes.values()), {k: v for k, v in sizes.items() if v > 400}


def test_a_keras_file_saved_before_the_move_still_loads():
    """tests/data/layers_v0.1.0.keras was saved with v0.1.0 (flat modules) from every custom
    layer and PaperSGD; their registered names did not change, so it loads and computes the same."""
    import alexnet_keras.layers  # noqa: F401 - registers the layers, as a user's import does.
    import alexnet_keras.training.optimizer  # noqa: F401 - and PaperSGD.

    model = keras.saving.load_model(os.fspath(DATA / "layers_v0.1.0.keras"))
    images = np.random.default_rng(0).normal(0, 50, (2, 16, 16, 3)).astype(np.float32)
    expected = np.load(DATA / "layers_v0.1.0_output.npy")
    np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert type(model.optimizer).__name__ == "PaperSGD"
