"""The exceptions a conversion can end in (defined with every other in `keras_repvgg.errors`)."""

from keras_repvgg.errors import (
    AlreadyFusedError,
    CheckpointError,
    KeyMismatchError,
    NonFiniteWeightsError,
    ShapeMismatchError,
)

__all__ = ["AlreadyFusedError", "CheckpointError", "KeyMismatchError", "NonFiniteWeightsError", "ShapeMismatchError"]
