"""The package's layers run one way: core <- converters, exports <- front door (read from the
source with ast, so numpy-only). An import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = {"artifacts", "atomic", "backend", "configs", "description", "errors", "fusion", "heads", "io", "labels", "layout", "lazy",
        "model", "names", "parameters", "preprocessing", "reparameterization", "equalization", "registration",
        "saved_layers", "transform"}
FRONT = {"__init__", "__main__", "applications", "cli", "predict", "inputs", "loading", "phone", "records", "beam"}
OPTIONAL = {"beam": "apache_beam"}  # front-door modules of optional extras: no other module imports them
# Which layers each layer may import.
ALLOWED = {"core": {"core"}, "converters": {"core", "converters"}, "exports": {"core", "exports"},
           "front": {"core", "converters", "exports", "front"}}


def _layer(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "keras_repvgg", module
    if len(parts) == 1:
        return "front"
    if parts[1] == "converters":
        return "converters"
    if parts[1] in ("tflite", "serving"):
        return "exports"
    if parts[1] in CORE:
        return "core"
    assert parts[1] in FRONT, f"{module}: put it in a layer (tests/unit/test_import_layering.py)"
    return "front"


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in ((ROOT / "keras_repvgg", "keras_repvgg"), (ROOT / "converters", "keras_repvgg.converters"),
                            (ROOT / "tflite", "keras_repvgg.tflite")):
        for path in folder.glob("*.py"):
            found[f"{package}.{path.stem}"] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    package = module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from . import names` imports the module names; `from .x import y`, the module x.
            found = [f"{target}.{a.name}" for a in node.names] if node.module is None else [target]
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
    path.write_text("def f():\n    from .cli import main\n")
    assert "keras_repvgg.cli" in _imports("keras_repvgg.fusion", path)
    assert _layer("keras_repvgg.cli") not in ALLOWED[_layer("keras_repvgg.fusion")]


def test_optional_extras_stay_optional():
    """Only keras_repvgg.beam imports Apache Beam, and no module imports keras_repvgg.beam: the
    package imports without the [beam] extra."""
    modules = _modules()
    assert "apache_beam" in modules["keras_repvgg.beam"].read_text()  # a control: the checker has something to see
    wrong = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        for own, package in OPTIONAL.items():
            if module != f"keras_repvgg.{own}" and any(n.split(".")[0] == package for n in names):
                wrong.append(f"{module} imports {package}")
            if f"keras_repvgg.{own}" in _imports(module, path):
                wrong.append(f"{module} imports keras_repvgg.{own}")
    assert not wrong, wrong


# One cycle on purpose: `backend` imports `saved_layers` last, once `keras` is bound, so that
# every import of Keras through the package registers our layers (see registration.py).
ALLOWED_CYCLES = [{"keras_repvgg.backend", "keras_repvgg.saved_layers"}]


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
