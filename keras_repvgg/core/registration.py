"""`import keras_repvgg` is enough for Keras' own `load_model` to read our `.keras` files.

Those files hold one custom layer (`saved_layers.Description`, the model's description),
which Keras finds only once the class is registered, and registering it means importing
Keras, hence TensorFlow: seconds that `keras-repvgg list` and the numpy-only core must not
pay. So the package registers it the moment Keras itself is imported, by whoever imports
it: if that Keras is already loaded when `keras_repvgg` is imported, at once; otherwise a
finder on `sys.meta_path` waits for it. Importing `keras_repvgg.models.backend` is what
registers (its last line), so any of our own modules that uses Keras has registered too.
The same goes for KerasHub: once `keras_hub` is imported, our KerasHub classes are
registered, so that `ImageClassifier.from_preset` finds them (`models/hub.py`).

No Keras, TensorFlow or keras_repvgg module is imported here.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any, Optional, Sequence

_REGISTRAR = "keras_repvgg.models.backend"  # importing it registers our layers with Keras
# KerasHub's `from_preset` finds classes by their registered names: importing this module
# registers our KerasHub classes, once `keras_hub` is loaded (never under tf-keras, which
# KerasHub does not run on).
HUB, _HUB_REGISTRAR = "keras_hub", "keras_repvgg.models.hub"


def legacy_keras_requested() -> bool:
    """TF_USE_LEGACY_KERAS, read as TensorFlow reads it: tf-keras (Keras 2) instead of Keras 3."""
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


def keras_module_name() -> str:
    """The module name of the Keras our models are built with."""
    return "tf_keras" if legacy_keras_requested() else "keras"


def _watched() -> dict[str, str]:
    """Module -> what to import once that module is loaded."""
    watched = {keras_module_name(): _REGISTRAR}
    if not legacy_keras_requested():
        watched[HUB] = _HUB_REGISTRAR
    return watched


class _RegisterAfterExec(importlib.abc.Loader):
    """Runs Keras' own loader, then registers; anything else is the wrapped loader's."""

    def __init__(self, inner: Any, finder: "_AfterImport"):
        self._inner, self._finder = inner, finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        self._finder.remove()
        importlib.import_module(self._finder.registrar)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._inner, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader that the other finders give for `module`."""

    def __init__(self, module: str, registrar: str):
        self.module, self.registrar = module, registrar

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != self.module:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _AfterImport) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisterAfterExec(spec.loader, self)
                return spec
        return None

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def register_when_keras_loads() -> None:
    """Called by `keras_repvgg/__init__.py`: registers now what is loaded (Keras, KerasHub),
    else when it is."""
    waiting = {f.module for f in sys.meta_path if isinstance(f, _AfterImport)}
    for module, registrar in _watched().items():
        if module in sys.modules:
            importlib.import_module(registrar)
        elif module not in waiting:
            sys.meta_path.insert(0, _AfterImport(module, registrar))
