"""`import keras_repvgg` is enough for Keras' own `load_model` to read our `.keras` files.

Those files hold one custom layer (`saved_layers.Description`, the model's description),
which Keras finds only once the class is registered, and registering it means importing
Keras, hence TensorFlow: seconds that `keras-repvgg list` and the numpy-only core must not
pay. So the package registers it the moment Keras itself is imported, by whoever imports
it: if that Keras is already loaded when `keras_repvgg` is imported, at once; otherwise a
finder on `sys.meta_path` waits for it. Importing `keras_repvgg.models.backend` is what
registers (its last line), so any of our own modules that uses Keras has registered too.

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


def legacy_keras_requested() -> bool:
    """TF_USE_LEGACY_KERAS, read as TensorFlow reads it: tf-keras (Keras 2) instead of Keras 3."""
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


def keras_module_name() -> str:
    """The module name of the Keras our models are built with."""
    return "tf_keras" if legacy_keras_requested() else "keras"


def _register() -> None:
    importlib.import_module(_REGISTRAR)


class _RegisterAfterExec(importlib.abc.Loader):
    """Runs Keras' own loader, then registers; anything else is the wrapped loader's."""

    def __init__(self, inner: Any, finder: "_AfterKerasImport"):
        self._inner, self._finder = inner, finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        self._finder.remove()
        _register()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._inner, name)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader that the other finders give for our Keras."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != keras_module_name():
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
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
    """Called by `keras_repvgg/__init__.py`: registers now if Keras is loaded, else when it is."""
    if any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        return
    if keras_module_name() in sys.modules:
        _register()
    else:
        sys.meta_path.insert(0, _AfterKerasImport())
