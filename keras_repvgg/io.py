"""Writing outputs atomically: to a temporary name beside the target, then one rename.

A failed or interrupted export therefore leaves either the old file or none,
never half of a new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .backend import keras
from .errors import KerasRepVGGError


@contextlib.contextmanager
def atomic_path(target: "str | os.PathLike[str]") -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffixes); rename it to target on success.

    The writer may make a file or a folder there (a SavedModel version).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # the writer creates it; some writers refuse to overwrite
    tmp_path = Path(tmp)
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
        elif path.suffix == ".keras":
            model.save(str(tmp))
        else:
            raise KerasRepVGGError(f"{path}: expected a .keras or .weights.h5 file name")
    return path
