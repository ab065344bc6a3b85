"""Class names: ImageNet-1k's, shipped as package data, or a checkpoint's own.

A model's names are recorded in its description (`ModelDescription.labels`); nothing here
infers them from the number of classes. Only `decode_predictions`, Keras applications' API,
means ImageNet by default, as its name promises.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # numpy is imported when predictions are decoded
    import numpy as np

from keras_repvgg.core.errors import KerasRepVGGError

IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """(WordNet synset id, comma-separated lemmas) for each ImageNet-1k class index."""
    text = resources.files("keras_repvgg").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    rows = tuple((wnid, lemmas) for wnid, lemmas in (line.split("\t") for line in text.splitlines()))
    assert len(rows) == IMAGENET_CLASSES, "the packaged ImageNet class list is damaged"
    return rows


def imagenet_labels() -> list[str]:
    """A short name per ImageNet-1k class: its first lemma ("tench", "goldfish", ...)."""
    return [lemmas.split(",")[0] for _, lemmas in imagenet_classes()]


def checked_labels(num_classes: int, label_names: Optional[Sequence[str]]) -> Optional[list[str]]:
    """The names given, one per class, or None where none are given."""
    if not label_names:
        return None
    if len(label_names) != num_classes:
        raise KerasRepVGGError(f"{len(label_names)} label names for a {num_classes}-class model")
    return list(label_names)


def class_names(num_classes: int, label_names: Optional[Sequence[str]] = None) -> list[str]:
    """The names given, else the class indices as names ("0", "1", ...)."""
    return checked_labels(num_classes, label_names) or [str(i) for i in range(num_classes)]


def decode_predictions(
    preds: "np.ndarray", top: int = 5, labels: Optional[Sequence[str]] = None
) -> list[list[tuple[str, str, float]]]:
    """The top classes of each row of `preds`: [(class_id, name, score), ...] best first.

    For 1000 classes without `labels`, ImageNet's: class_id is the WordNet id
    ("n01440764") and name its first lemma ("tench"), as in Keras applications.
    With `labels`, class_id is the index as a string and name the label.
    """
    import numpy as np

    preds = np.asarray(preds)
    if preds.ndim != 2:
        raise KerasRepVGGError(f"expected predictions of shape (samples, classes), got {preds.shape}")
    classes = preds.shape[1]
    if labels is None and classes == IMAGENET_CLASSES:
        ids, names = [wnid for wnid, _ in imagenet_classes()], imagenet_labels()
    else:
        given = checked_labels(classes, labels)
        if given is None:
            raise KerasRepVGGError(f"{classes} classes are not ImageNet's 1000; pass their labels")
        ids, names = [str(i) for i in range(classes)], given
    results = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[: min(top, classes)]
        results.append([(ids[i], names[i], float(row[i])) for i in order])
    return results
