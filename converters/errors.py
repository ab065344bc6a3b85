"""The exceptions a conversion can end in. Each message names the file and the problem."""

from keras_repvgg.errors import KerasRepVGGError


class CheckpointError(KerasRepVGGError):
    """A checkpoint that cannot be read or used: missing, unreadable, corrupt or unsupported."""


class KeyMismatchError(CheckpointError):
    """A checkpoint lacks a key the model needs, or holds keys that nothing consumes."""


class ShapeMismatchError(CheckpointError):
    """A tensor's shape is not the one the model expects."""


class NonFiniteWeightsError(CheckpointError):
    """A tensor holds NaN or infinity (refused unless explicitly allowed)."""


class AlreadyFusedError(CheckpointError):
    """A fused (reparameterized) checkpoint asked for in the training form."""
