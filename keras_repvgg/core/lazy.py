"""Names that load on first use: a package can list its public names without importing
TensorFlow, so that `keras-repvgg list` and the numpy-only parts start fast."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name N lives in submodule exports[N].

    The submodules are not named after what they export: importing a submodule binds its
    name on the package, which would then shadow a function of the same name.
    """
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_
