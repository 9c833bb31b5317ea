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
    "constants", "config", "cpu", "filter_grid", "layers", "kernels", "keras_file", "data",
    "model", "flops", "run_files", "run_dir", "training", "importers", "serving", "pictures",
}  # fmt: skip
# Importing weights and serving read and write runs alike.
RUNS = {"constants", "config", "layers", "keras_file", "data", "model", "run_files", "run_dir"}
# What each part may import (besides itself).
ALLOWED = {
    "constants": set(),
    "config": {"constants"},
    "cpu": set(),
    "filter_grid": set(),
    "layers": {"constants"},  # Reference layers: keras.ops only, no machine facts.
    "kernels": {"constants", "cpu", "layers"},
    "keras_file": {"constants", "run_files"},  # Run files travel inside the .keras files.
    "data": {"constants"},
    "model": {"constants", "config", "layers", "kernels"},  # kernels only when a policy is given.
    "flops": {"layers"},
    "run_files": {"config"},  # No TensorFlow: commands check a run before it loads.
    "run_dir": {"config", "data", "model", "keras_file", "kernels", "run_files"},
    "training": RUNS | {"cpu", "kernels", "filter_grid"},
    "importers": RUNS,
    "serving": RUNS,
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


def _all_imports(source: str) -> set[str]:
    """Every module a source imports, at any depth, and each `from m import n` as m.n too."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _imports(source: str) -> set[str]:
    return {name for name in _all_imports(source) if name.startswith("alexnet_keras.")}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(part for part in relative.parts if part != "__init__")
        yield name, path.read_text()


def _violations(modules) -> tuple[list[str], set[str]]:
    """Imports against the layer map, and the parts seen, of (module name, source) pairs."""
    violations, parts_seen = [], set()
    for module, source in modules:
        part = _part(module)
        if part == "package":
            continue
        parts_seen.add(part)
        assert part in ALLOWED, f"{module}: part {part!r} is not in the layer map"
        for imported in _imports(source):
            target = _part(imported)
            if target in ("package", part) or imported.split(".")[-1] == "__version__":
                continue
            if target not in ALLOWED[part]:
                violations.append(f"{module} imports {imported} ({part} -> {target})")
    return violations, parts_seen


def test_every_import_follows_the_layers():
    violations, parts_seen = _violations(_modules())
    assert not violations, "\n".join(violations)
    assert parts_seen == set(ALLOWED)  # Every part exists; none is missing from the map.


def test_the_walk_sees_function_level_imports_and_would_fail():
    """The check can fail: the same walk finds a training module importing serving inside a
    function, and a layer importing the kernels or the CPU facts."""
    bad = [
        ("alexnet_keras.training.x", "def f():\n    from alexnet_keras.serving import export\n"),
        ("alexnet_keras.layers.x", "from alexnet_keras import cpu\n"),
        ("alexnet_keras.layers.y", "import alexnet_keras.kernels.lrn\n"),
    ]
    violations, _ = _violations(bad)
    assert {v.split(" imports ")[0] for v in violations} == {name for name, _ in bad}


def test_layers_import_no_tensorflow():
    """The reference layers and the model builder run on every Keras backend."""
    for module, source in _modules():
        if _part(module) in ("layers", "model", "constants", "config"):
            assert "tensorflow" not in {name.split(".")[0] for name in _all_imports(source)}, module


def test_no_module_is_a_god_file():
    sizes = {module: len(source.splitlines()) for module, source in _modules()}
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
