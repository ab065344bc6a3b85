"""Saving and loading Keras models, atomically (see `atomic`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from keras_repvgg.core.artifacts import ArtifactKind, kind_by_name
from keras_repvgg.core.atomic import atomic_path
from keras_repvgg.core.errors import KerasRepVGGError

if TYPE_CHECKING:  # Keras (and TensorFlow, seconds) is imported once a file is there to load
    from keras_repvgg.models.backend import keras


def save_model(model: keras.Model, path: "str | os.PathLike[str]") -> Path:
    """Save a model as .keras (or .weights.h5 for weights only), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.name.endswith(".weights.h5"):
            model.save_weights(str(tmp))
        elif kind_by_name(path) is ArtifactKind.KERAS:
            model.save(str(tmp))
        else:
            raise KerasRepVGGError(f"{path}: expected a .keras or .weights.h5 file name")
    return path


def load_model(path: "str | os.PathLike[str]") -> keras.Model:
    """Load a `.keras` file saved from a keras-repvgg model, with its description.

    Keras' own `load_model` reads these files too once `keras_repvgg` is imported (see
    `registration.py`); this one also names the file in a one-line error.
    """
    path = Path(path)
    if not path.is_file():
        raise KerasRepVGGError(f"{path}: no such .keras file")
    from keras_repvgg.models.backend import keras

    try:
        return keras.models.load_model(path)
    except (ValueError, OSError, TypeError) as err:  # Keras' words for a file it cannot read
        raise KerasRepVGGError(f"{path}: not a loadable .keras model ({' '.join(str(err).split())[:300]})") from None

