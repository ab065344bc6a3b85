"""What kind of model file a path names, decided once, for every reader.

`file_kind` is the one place that looks at suffixes and folders; `load_artifact`
(keras_repvgg.front.loading) loads what it finds, and `save_model`, `beam` and the
applications' `weights` argument ask it too. No TensorFlow here.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Collection, Optional

from keras_repvgg.core.errors import ArtifactError


class ArtifactKind(str, enum.Enum):
    KERAS = "keras"  # a .keras file
    KERAS_WEIGHTS = "weights"  # a .weights.h5 file: the weights of a model built here
    TFLITE = "tflite"  # a .tflite file
    SAVEDMODEL = "savedmodel"  # a folder with saved_model.pb, or TF Serving's numbered versions of one
    CHECKPOINT = "checkpoint"  # any SOURCE convert takes: a file, a folder with model.safetensors, a hub id
    PRESET = "preset"  # a KerasHub preset folder of ours: config.json naming our backbone, model.weights.h5


SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin")  # official RepVGG checkpoints, PyTorch pickles
CHECKPOINT_WEIGHTS = "model.safetensors"  # what a checkpoint folder (timm's, the hub's) holds
SAVEDMODEL_GRAPH = "saved_model.pb"
PRESET_WEIGHTS = "model.weights.h5"  # KerasHub's backbone weights, beside its config.json
SUFFIXES = {
    ArtifactKind.KERAS: (".keras",),
    ArtifactKind.KERAS_WEIGHTS: (".h5",),  # Keras 3 saves weights only as .weights.h5
    ArtifactKind.TFLITE: (".tflite",),
    ArtifactKind.CHECKPOINT: (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES),
}
WHAT = {
    ArtifactKind.KERAS: "a .keras file",
    ArtifactKind.KERAS_WEIGHTS: "a .weights.h5 file",
    ArtifactKind.TFLITE: "a .tflite file",
    ArtifactKind.SAVEDMODEL: "a SavedModel folder",
    ArtifactKind.CHECKPOINT: f"a checkpoint ({'/'.join(SUFFIXES[ArtifactKind.CHECKPOINT])} file, "
                             f"folder with {CHECKPOINT_WEIGHTS}, or hub id)",
    ArtifactKind.PRESET: "a KerasHub preset folder",
}


def expected(kinds: Collection[ArtifactKind]) -> str:
    """The kinds in words: "a .keras file, a .tflite file or ..."."""
    words = [WHAT[k] for k in ArtifactKind if k in kinds]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def kind_by_name(path: "str | os.PathLike[str]") -> Optional[ArtifactKind]:
    """The kind a file name's suffix says, or None (a folder, a hub id, an unknown suffix)."""
    suffix = Path(str(path)).suffix
    return next((kind for kind, suffixes in SUFFIXES.items() if suffix in suffixes), None)


def savedmodel_version(path: Path) -> Optional[Path]:
    """A SavedModel folder: `path` itself, or its highest numeric version inside (TF Serving's layout)."""
    if (path / SAVEDMODEL_GRAPH).is_file():
        return path
    versions = [p for p in path.iterdir() if p.name.isdigit() and (p / SAVEDMODEL_GRAPH).is_file()] if path.is_dir() else []
    return max(versions, key=lambda p: int(p.name)) if versions else None


def file_kind(path: "str | os.PathLike[str]", accept: Collection[ArtifactKind] = tuple(ArtifactKind)) -> ArtifactKind:
    """The kind of model file `path` names, one of `accept`; else ArtifactError naming the path
    and the kinds expected. A name that exists nowhere and has no known suffix is a hub id (the
    checkpoint reader says so if it is not one either)."""
    local = Path(str(path))
    kind = kind_by_name(path)
    if kind is None and local.is_dir():
        if savedmodel_version(local) is not None:
            kind = ArtifactKind.SAVEDMODEL
        elif (local / CHECKPOINT_WEIGHTS).is_file():
            kind = ArtifactKind.CHECKPOINT
        elif (local / PRESET_WEIGHTS).is_file():
            kind = ArtifactKind.PRESET
        else:
            found = sorted(p.name for p in local.iterdir())[:10]
            raise ArtifactError(f"{path}: a folder with none of {SAVEDMODEL_GRAPH} (a SavedModel, or numbered "
                                f"versions of one), {CHECKPOINT_WEIGHTS} (a checkpoint) or {PRESET_WEIGHTS} "
                                f"(a KerasHub preset) (found: {found}); expected {expected(accept)}")
    elif kind is None and local.is_file():
        raise ArtifactError(f"{path}: unknown kind of file {local.suffix or '(no suffix)'!r}; expected {expected(accept)}")
    kind = kind or ArtifactKind.CHECKPOINT
    if kind not in accept:
        raise ArtifactError(f"{path} is {WHAT[kind]}; expected {expected(accept)}")
    return kind
