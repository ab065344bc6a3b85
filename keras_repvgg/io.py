"""Writing outputs atomically: to a temporary name beside the target, then one rename.

A failed or interrupted export therefore leaves either the old file or none,
never half of a new one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from .artifacts import ArtifactKind, kind_by_name
from .backend import keras
from .errors import KerasRepVGGError


@contextlib.contextmanager
def atomic_path(target: "str | os.PathLike[str]") -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffixes); rename it to target on success.

    The writer may make a file or a folder there (a SavedModel version). Nothing exists at
    the temporary path until the writer makes it, and the clean-up covers it from then on:
    a signal that unwinds the writer (SIGTERM, Ctrl-C) leaves no temporary behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    # A random hidden name beside the target, not created here (128 bits: no collision).
    tmp_path = target.parent / f".{target.stem}.{secrets.token_hex(16)}{suffix}"
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


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
    try:
        return keras.models.load_model(path)
    except (ValueError, OSError, TypeError) as err:  # Keras' words for a file it cannot read
        raise KerasRepVGGError(f"{path}: not a loadable .keras model ({' '.join(str(err).split())[:300]})") from None

