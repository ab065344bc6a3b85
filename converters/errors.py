"""The exceptions a conversion can end in (defined with every other in `keras_repvgg.core.errors`)."""

from keras_repvgg.core.errors import (
    AlreadyFusedError,
    CheckpointError,
    KeyMismatchError,
    NonFiniteWeightsError,
    ShapeMismatchError,
)

__all__ = ["AlreadyFusedError", "CheckpointError", "KeyMismatchError", "NonFiniteWeightsError", "ShapeMismatchError"]
