"""Checkpoint converters: timm safetensors (file, folder or hub id) into Keras RepVGG models.

This path reads safetensors with numpy and never imports torch. Names load on first use,
so that the readers and errors import without TensorFlow.
"""

from __future__ import annotations

from keras_repvgg.core.lazy import lazy_exports

_EXPORTS = {
    "Converted": "conversion",
    "checkpoint_preprocessing": "conversion",
    "convert": "conversion",
    "convert_checkpoint": "conversion",
    "AlreadyFusedError": "errors",
    "CheckpointError": "errors",
    "KeyMismatchError": "errors",
    "NonFiniteWeightsError": "errors",
    "ShapeMismatchError": "errors",
    "Checkpoint": "sources",
    "resolve_source": "sources",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
