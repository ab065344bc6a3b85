"""`load_artifact`: any model file or checkpoint, loaded as what its kind (`artifacts.file_kind`) says.

The command line, `predict`, Beam and the applications load through here, so that a path
means the same thing to each of them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Collection, Optional

from keras_repvgg.core.artifacts import ArtifactKind, file_kind, savedmodel_version
from keras_repvgg.core.errors import ArtifactError

KERAS_MODELS = (ArtifactKind.KERAS, ArtifactKind.CHECKPOINT, ArtifactKind.PRESET)  # what gives a Keras model
PREDICTABLE = (ArtifactKind.KERAS, ArtifactKind.TFLITE, ArtifactKind.SAVEDMODEL, ArtifactKind.CHECKPOINT,
               ArtifactKind.PRESET)


@dataclasses.dataclass
class Artifact:
    """A loaded model file: a Keras model (.keras, a converted checkpoint, a KerasHub preset), a .tflite file's
    bytes, or a SavedModel (TensorFlow's loaded object) with the version folder it came from."""

    kind: ArtifactKind
    path: Path  # as given; for a SavedModel, the version folder read
    model: Any  # keras.Model, bytes (TFLite) or the loaded SavedModel


def load_artifact(
    source: "str | os.PathLike[str]",
    accept: Collection[ArtifactKind] = PREDICTABLE,
    arch: Optional[str] = None,
    **convert_options: Any,
) -> Artifact:
    """Load what `source` names, one of the kinds `accept`s (ArtifactError naming the path and
    the kinds expected otherwise). A checkpoint is converted with `arch` and `convert_options`
    (`convert_checkpoint`'s keywords); other kinds carry what they are in themselves."""
    kind = file_kind(source, accept)
    path = Path(source)
    if kind is ArtifactKind.KERAS:
        from keras_repvgg.models.io import load_model

        return Artifact(kind, path, load_model(path))
    if kind is ArtifactKind.TFLITE:
        if not path.is_file():
            raise ArtifactError(f"{path}: no such .tflite file")
        return Artifact(kind, path, path.read_bytes())
    if kind is ArtifactKind.SAVEDMODEL:
        import tensorflow as tf

        version = savedmodel_version(path)
        assert version is not None  # file_kind found it
        return Artifact(kind, version, tf.saved_model.load(str(version)))
    if kind is ArtifactKind.PRESET:
        from keras_repvgg.models.hub import load_preset

        return Artifact(kind, path, load_preset(path))
    if kind is ArtifactKind.KERAS_WEIGHTS:
        raise ArtifactError(f"{path}: weights alone; build the model (create_model(..., weights=PATH)) to load them")
    from keras_repvgg.converters.sources import resolve_source

    resolve_source(source)  # a missing checkpoint is said before TensorFlow is imported (seconds)
    from keras_repvgg.converters import convert_checkpoint

    return Artifact(kind, path, convert_checkpoint(source, arch, **convert_options).model)
