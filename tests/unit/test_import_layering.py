"""The package's layers run one way, and its folders are those layers: `keras_repvgg/core`
(numpy only) <- `models` (Keras) <- `converters`, `exports` and `tflite` <- `front` (read from
the source with ast, so numpy-only). An import inside a function counts as much as one at the
top. A module's layer is its folder's: there is no list of modules to keep."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The folders of keras_repvgg (converters/ and tflite/ are the top-level ones, installed there).
FOLDERS = {"core": ROOT / "keras_repvgg" / "core", "models": ROOT / "keras_repvgg" / "models",
           "converters": ROOT / "converters", "exports": ROOT / "keras_repvgg" / "exports",
           "tflite": ROOT / "tflite", "front": ROOT / "keras_repvgg" / "front"}
LAYER = {"core": "core", "models": "models", "converters": "converters", "exports": "exports", "tflite": "exports",
         "front": "front"}
# Which layers each layer may import.
ALLOWED = {"core": {"core"}, "models": {"core", "models"}, "converters": {"core", "models", "converters"},
           "exports": {"core", "models", "exports"}, "front": set(LAYER.values())}
# Modules of optional extras: no other module imports them (the timm child runs as `python -m`).
OPTIONAL = {"keras_repvgg.front.beam": "apache_beam", "keras_repvgg.front.timm_logits": "timm"}
# The KerasHub classes' module alone imports keras_hub; others import it inside functions only.
OPTIONAL_INSIDE_FUNCTIONS = {"keras_repvgg.models.hub": "keras_hub"}
# Modules that import an extra's packages inside their functions only (a clear error when it is
# missing): other modules may import them, and the package still imports without the extra.
LAZY_OPTIONAL = {"keras_repvgg.exports.onnx": ("onnx", "tf2onnx", "onnxruntime"),
                 "keras_repvgg.exports.openvino": ("openvino",)}


def _layer(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "keras_repvgg", module
    if len(parts) == 1 or parts[1] == "__main__":
        return "front"  # the package's own __init__ (the names users import) and `python -m`
    assert parts[1] in LAYER, f"{module}: put it in one of the layer folders {sorted(FOLDERS)}"
    return LAYER[parts[1]]


def _modules() -> dict[str, Path]:
    found = {"keras_repvgg": ROOT / "keras_repvgg" / "__init__.py",
             "keras_repvgg.__main__": ROOT / "keras_repvgg" / "__main__.py"}
    for folder, path in FOLDERS.items():
        for module in path.glob("*.py"):
            name = f"keras_repvgg.{folder}" if module.stem == "__init__" else f"keras_repvgg.{folder}.{module.stem}"
            found[name] = module
    loose = [p.name for p in (ROOT / "keras_repvgg").glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert not loose, f"modules outside the layer folders: {loose}"
    return found


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from . import names` or `from keras_repvgg.core import names` imports the module
            # names (where it is one); `from .x import y`, the module x.
            is_layer = len(target.split(".")) == 2  # keras_repvgg.<layer>: its names are modules
            found = [target] + ([f"{target}.{a.name}" for a in node.names] if is_layer else [])
            out |= {n for n in found if n.startswith("keras_repvgg")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("keras_repvgg")}
    return out


def test_layers_import_downwards_only():
    modules = _modules()
    assert len(modules) > 25  # the package was found
    wrong = []
    for module, path in modules.items():
        mine = _layer(module)
        for target in _imports(module, path):
            theirs = _layer(target)
            if theirs not in ALLOWED[mine]:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not wrong, wrong


def test_the_checker_sees_a_wrong_import(tmp_path):
    """A control: an upward import is found."""
    path = tmp_path / "fusion.py"
    path.write_text("def f():\n    from keras_repvgg.front import cli\n")
    assert "keras_repvgg.front.cli" in _imports("keras_repvgg.core.fusion", path)
    assert _layer("keras_repvgg.front.cli") not in ALLOWED[_layer("keras_repvgg.core.fusion")]


def test_optional_extras_stay_optional():
    """Only keras_repvgg.front.beam imports Apache Beam, and no module imports keras_repvgg.front.beam: the
    package imports without the [beam] extra."""
    modules = _modules()
    assert "apache_beam" in modules["keras_repvgg.front.beam"].read_text()  # a control: the checker has something to see
    wrong = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        for own, package in OPTIONAL.items():
            if module != own and any(n.split(".")[0] == package for n in names):
                wrong.append(f"{module} imports {package}")
            if own in _imports(module, path):
                wrong.append(f"{module} imports {own}")
    assert not wrong, wrong


def _top_level_imports(path: Path) -> set[str]:
    """What a module imports at import time: statements outside functions (nested ones too)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level:
                out.add(child.module or "")
                out.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return out


def test_kerashub_is_imported_only_when_used():
    """keras_hub (the [hub] extra, seconds to import) is imported at import time by
    keras_repvgg.models.hub alone, and that module only inside functions elsewhere."""
    modules = _modules()
    wrong = []
    for own, package in OPTIONAL_INSIDE_FUNCTIONS.items():
        assert package in {n.split(".")[0] for n in _top_level_imports(modules[own])}  # a control
        for module, path in modules.items():
            found = _top_level_imports(path)
            if module != own and (any(n.split(".")[0] == package for n in found) or own in found):
                wrong.append(f"{module} imports {package if own not in found else own} at import time")
def _imported_packages(nodes) -> set[str]:
    names = {a.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for a in node.names}
    return names | {(node.module or "").split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom) and not node.level}


def test_lazy_extras_import_inside_functions_only():
    """tf2onnx, onnx and onnxruntime (the [onnx] extra) are named by keras_repvgg.exports.onnx alone,
    openvino by keras_repvgg.exports.openvino alone, and only inside their functions."""
    modules = _modules()
    wrong = []
    for own, packages in LAZY_OPTIONAL.items():
        tree = ast.parse(modules[own].read_text())
        inside = _imported_packages(ast.walk(tree))
        assert packages[0] in inside  # a control: the checker has something to see
        top = _imported_packages(tree.body)
        wrong += [f"{own} imports {p} at its top" for p in packages if p in top]
    for module, path in modules.items():
        if module not in LAZY_OPTIONAL:
            found = _imported_packages(ast.walk(ast.parse(path.read_text())))
            wrong += [f"{module} imports {p}" for ps in LAZY_OPTIONAL.values() for p in ps if p in found]
    assert not wrong, wrong


# One cycle on purpose: `backend` imports `saved_layers` last, once `keras` is bound, so that
# every import of Keras through the package registers our layers (see registration.py).
ALLOWED_CYCLES = [{"keras_repvgg.models.backend", "keras_repvgg.models.saved_layers"}]


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    """Modules import each other one way (tflite's export and runtime did not)."""
    modules = _modules()
    graph = {m: {t for t in _imports(m, p) if t in modules} for m, p in modules.items()}
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]  # a control
    assert [c for c in _cycles(graph) if c not in ALLOWED_CYCLES] == []
