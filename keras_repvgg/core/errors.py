"""Every error keras-repvgg raises for bad input, in one place.

The command line prints these as one line (status 2); anything else is a bug of ours or
of a library below, and is shown as an internal error. Subclasses name the file, key or
option at fault and the expected and actual values.
"""

from __future__ import annotations


class KerasRepVGGError(ValueError):
    """Bad input to keras-repvgg: a file, an option or a model it cannot use."""


class NotDescribedError(KerasRepVGGError):
    """A model that keras-repvgg did not build (or an older file without a description)."""


class ArtifactError(KerasRepVGGError):
    """A path that names no kind of model file the caller takes."""


class HeadNotExportableError(KerasRepVGGError):
    """An export asked of a model whose output no export format holds (the five feature maps)."""


class ImageError(KerasRepVGGError):
    """An image file that cannot be read: missing, corrupt, truncated, too large."""


class DatasetError(KerasRepVGGError):
    """A folder of labelled images that cannot be trained or evaluated on as given."""


class TransformError(KerasRepVGGError):
    """An eval transform this package cannot apply (an unsupported interpolation)."""


class ExportError(KerasRepVGGError):
    """An export that cannot be made as asked: bad options or calibration data."""


class MissingDependencyError(ExportError):
    """An export whose optional extra is not installed (ONNX: pip install 'keras-repvgg[onnx]')."""


# Conversions: each message names the file and the problem.
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
