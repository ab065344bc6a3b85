"""A folder of labelled images, as Keras' `image_dataset_from_directory` reads one: each
subfolder is a class, named by the subfolder, in name order; its images (any depth below
it) are that class's examples. `train` learns from one and `evaluate` scores on one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from keras_repvgg.core.errors import DatasetError
from keras_repvgg.core.preprocessing import IMAGE_SUFFIXES


@dataclass(frozen=True)
class LabelledImages:
    """Image paths with their class indices into `classes`."""

    root: str
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> list[int]:
        return np.bincount(np.asarray(self.labels, np.int64), minlength=len(self.classes)).tolist()

    def subset(self, indices: "list[int] | np.ndarray") -> "LabelledImages":
        return LabelledImages(self.root, self.classes, tuple(self.paths[i] for i in indices),
                              tuple(self.labels[i] for i in indices))


def walk_images(folder: "str | os.PathLike[str]") -> Iterator[str]:
    """Image files under `folder`, recursively, lazily, in the same order on every run
    (each folder's files in name order, then its subfolders in name order)."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield os.path.join(root, name)


def read_folder(folder: "str | os.PathLike[str]", classes: "tuple[str, ...] | None" = None) -> LabelledImages:
    """Every image under `folder`'s class subfolders. `classes`, where given, names the classes
    in order (a validation folder must have the training folder's); each must be a subfolder."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected one subfolder of images per class)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = tuple(found)
        if len(classes) < 2:
            raise DatasetError(f"{root}: {len(classes)} class subfolder(s); expected at least 2, one per class")
    else:
        missing = [c for c in classes if c not in found]
        extra = [c for c in found if c not in classes]
        if missing or extra:
            raise DatasetError(f"{root}: expected the class subfolders {list(classes)}; "
                               f"missing {missing}, not in training {extra}")
    paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        images = list(walk_images(root / name))
        if not images:
            raise DatasetError(f"{root / name}: no image files ({', '.join(IMAGE_SUFFIXES)}) for class {name!r}")
        paths.extend(images)
        labels.extend([index] * len(images))
    return LabelledImages(str(root), tuple(classes), tuple(paths), tuple(labels))


def split(images: LabelledImages, fraction: float, seed: int) -> tuple[LabelledImages, LabelledImages]:
    """(training, validation): `fraction` of each class, at least one image, drawn with `seed`;
    each class keeps at least one training image."""
    if not 0 < fraction < 1:
        raise DatasetError(f"the validation fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(images.labels)
    train, held = [], []
    for index, name in enumerate(images.classes):
        members = rng.permutation(np.flatnonzero(labels == index))
        if len(members) < 2:
            raise DatasetError(f"{images.root}: class {name!r} has {len(members)} image; "
                               "a validation split needs at least 2 per class")
        count = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.extend(members[:count].tolist())
        train.extend(members[count:].tolist())
    return images.subset(sorted(train)), images.subset(sorted(held))
