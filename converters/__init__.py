"""Checkpoint converters: timm safetensors (file, folder or hub id) into Keras RepVGG models.

This path reads safetensors with numpy and never imports torch.
"""

from .convert import Converted, checkpoint_preprocessing, convert, convert_checkpoint
from .errors import (
    AlreadyFusedError,
    CheckpointError,
    KeyMismatchError,
    NonFiniteWeightsError,
    ShapeMismatchError,
)
from .sources import Checkpoint, resolve_source

__all__ = [
    "AlreadyFusedError",
    "Checkpoint",
    "CheckpointError",
    "Converted",
    "KeyMismatchError",
    "NonFiniteWeightsError",
    "ShapeMismatchError",
    "checkpoint_preprocessing",
    "convert",
    "convert_checkpoint",
    "resolve_source",
]
