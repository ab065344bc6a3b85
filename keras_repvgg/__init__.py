"""RepVGG image classifiers for TensorFlow/Keras: every variant, exact to timm.

Names are loaded on first use, so that `keras-repvgg list` and the config
table need no TensorFlow import.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    **{
        name: "applications"
        for name in (
            "RepVGGA0", "RepVGGA1", "RepVGGA2", "RepVGGB0", "RepVGGB1", "RepVGGB1g2",
            "RepVGGB1g4", "RepVGGB2", "RepVGGB2g2", "RepVGGB2g4", "RepVGGB3", "RepVGGB3g2",
            "RepVGGB3g4", "RepVGGD2se", "create_model", "list_models",
        )
    },
    "keras": "backend",
    "VARIANTS": "configs",
    "Preprocessing": "configs",
    "VariantConfig": "configs",
    "block_plan": "configs",
    "get_variant": "configs",
    "save_model": "io",
    "preprocess_input": "preprocessing",
    "load_image": "preprocessing",
    "load_images": "preprocessing",
    "decode_predictions": "labels",
    "imagenet_labels": "labels",
    # The module is not named after the function: importing a submodule binds its name on
    # the package, which would then shadow the lazily exported function.
    "reparameterize": "reparameterization",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
