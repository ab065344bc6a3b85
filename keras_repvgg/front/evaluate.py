"""How accurate is each model on your labelled folder: top-1, top-5, per-class recall, and
how often each model agrees with the first, for any mix of `.keras`, `.tflite`, SavedModel
and checkpoint SOURCE.

Every model sees the pixels `predict` gives it (timm's eval transform in Pillow, streamed),
so the numbers are what an app would see.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from keras_repvgg.core.errors import DatasetError
from keras_repvgg.core.folders import LabelledImages, read_folder

TOP_K = 5


@dataclass
class Scores:
    """One model's numbers on the folder's readable images."""

    model: str
    kind: str
    top1: float
    top5: float  # top-min(5, classes)
    recall: list[float]  # per class, in the folder's class order (nan: no image of it was readable)
    confusion: np.ndarray  # [true class, predicted class]; a last column counts predictions of other classes
    agreement: Optional[float]  # top-1 agreement with the first model (None for the first)
    matched_by: str  # "label" or "index": how the model's classes were matched to the folder's
    predicted: np.ndarray  # top-1, as folder class indices (-1: a class not in the folder)


@dataclass
class Evaluation:
    data: str
    classes: tuple[str, ...]
    images: int
    unreadable: dict[str, str]
    scores: list[Scores]

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data, "classes": list(self.classes), "images": self.images,
            "evaluated": self.images - len(self.unreadable), "unreadable": self.unreadable,
            "models": [{
                "model": s.model, "kind": s.kind, "top1": s.top1, "top5": s.top5,
                "agreement_with_first": s.agreement, "classes_matched_by": s.matched_by,
                "recall": {c: (None if np.isnan(r) else r) for c, r in zip(self.classes, s.recall, strict=True)},
                "confusion": s.confusion.tolist(),
            } for s in self.scores],
        }


def class_map(model_labels: Sequence[str], classes: Sequence[str], what: str) -> tuple[np.ndarray, str]:
    """For each of the model's classes, the folder's class index (-1: none), and how they were
    matched: by label where the model names every folder class, else by index where the counts agree."""
    position = {name: i for i, name in enumerate(classes)}
    if set(classes) <= set(model_labels):
        return np.array([position.get(name, -1) for name in model_labels]), "label"
    if len(model_labels) == len(classes):
        return np.arange(len(classes)), "index"
    raise DatasetError(
        f"{what}: its {len(model_labels)} classes ({', '.join(list(model_labels)[:5])}, ...) neither name the "
        f"folder's {len(classes)} classes ({', '.join(list(classes)[:5])}, ...) nor match them in number"
    )


def _score(name: str, images: LabelledImages, readable: np.ndarray, records: list[dict],
           batch_labels: Sequence[str], kind: str, first: Optional[np.ndarray]) -> Scores:
    mapping, matched_by = class_map(batch_labels, images.classes, name)
    n = len(images.classes)
    truth = np.asarray(images.labels)[readable]
    tops = np.array([[mapping[t["index"]] for t in r["top"]] for r in records])  # folder indices
    top1 = tops[:, 0]
    confusion = np.zeros((n, n + 1), np.int64)
    np.add.at(confusion, (truth, np.where(top1 < 0, n, top1)), 1)
    counts = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (np.diag(confusion[:, :n]) / counts).tolist()
    return Scores(
        name, kind, float((top1 == truth).mean()), float((tops == truth[:, None]).any(axis=1).mean()), recall,
        confusion, None if first is None else float((top1 == first).mean()), matched_by, top1,
    )


def evaluate(
    models: Sequence["str | os.PathLike[str]"],
    data: "str | os.PathLike[str]",
    *,
    arch: Optional[str] = None,
    input_size: Optional[int] = None,
    batch_size: int = 32,
    threads: Optional[int] = None,
) -> Evaluation:
    """Score each model (a .keras file, .tflite, SavedModel folder or checkpoint SOURCE) on
    `data`, a folder with one subfolder of images per class. The models' classes are matched
    to the folder's by label (the names the model records), else by index (the folder's
    classes in name order) where the numbers agree. Unreadable images are left out of every
    model's numbers and listed."""
    from keras_repvgg.front.predict import classify_files, load_predictor

    if not models:
        raise DatasetError("evaluate needs at least one model")
    images = read_folder(data)
    readable: Optional[np.ndarray] = None
    unreadable: dict[str, str] = {}
    scores: list[Scores] = []
    for model in models:
        predictor = load_predictor(model, arch, input_size)
        k = min(TOP_K, len(predictor.labels))
        records = list(classify_files(predictor, images.paths, top=k, batch_size=batch_size, threads=threads))
        if readable is None:
            unreadable = {r["image"]: r["error"] for r in records if "error" in r}
            readable = np.array(["error" not in r for r in records])
            if not readable.any():
                raise DatasetError(f"{data}: none of the {len(images)} images could be read")
        kept = [r for r, ok in zip(records, readable, strict=True) if ok]
        first = scores[0].predicted if scores else None
        scores.append(_score(os.fspath(model), images, readable, kept, predictor.labels, predictor.kind, first))
    return Evaluation(os.fspath(data), images.classes, len(images), unreadable, scores)


def table(evaluation: Evaluation) -> str:
    """The numbers as text: one line a model, then recall per class."""
    width = max(12, *(len(s.model) for s in evaluation.scores)) + 2
    k = "top-5"
    lines = [f"{evaluation.images - len(evaluation.unreadable)} images in {len(evaluation.classes)} classes "
             f"from {evaluation.data}" + (f" ({len(evaluation.unreadable)} unreadable, left out)"
                                          if evaluation.unreadable else ""),
             f"{'model':<{width}}{'kind':<12}{'top-1':>8}{k:>8}{'agrees with first':>19}"]
    for s in evaluation.scores:
        agree = "-" if s.agreement is None else f"{s.agreement:.2%}"
        lines.append(f"{s.model:<{width}}{s.kind:<12}{s.top1:>8.2%}{s.top5:>8.2%}{agree:>19}")
    lines.append("recall per class" + "".join(f"  [{i + 1}]" for i in range(len(evaluation.scores))))
    name_width = max(len(c) for c in evaluation.classes) + 2
    for c, name in enumerate(evaluation.classes):
        lines.append(f"  {name:<{name_width}}" + "".join(
            f"{'-' if np.isnan(s.recall[c]) else f'{s.recall[c]:.1%}':>8}" for s in evaluation.scores))
    notes = [f"[{i + 1}] {s.model}: classes matched by index, since its labels do not name the folder's"
             for i, s in enumerate(evaluation.scores) if s.matched_by == "index"]
    return "\n".join(lines + notes)


def write_report(evaluation: Evaluation, path: "str | os.PathLike[str]") -> None:
    from keras_repvgg.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(evaluation.to_dict(), indent=2) + "\n", encoding="utf-8")


def write_confusion_png(evaluation: Evaluation, path: "str | os.PathLike[str]") -> None:
    """One confusion matrix a model, side by side (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    from keras_repvgg.core.atomic import atomic_path

    n = len(evaluation.classes)
    count = len(evaluation.scores)
    side = min(12.0, 2.5 + 0.35 * n)
    figure, axes = plt.subplots(1, count, figsize=(side * count, side), squeeze=False)
    for axis, s in zip(axes[0], evaluation.scores, strict=True):
        matrix = s.confusion[:, :n] if not s.confusion[:, n].any() else s.confusion
        shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        axis.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        names = list(evaluation.classes) + (["(other)"] if matrix.shape[1] > n else [])
        axis.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        axis.set_yticks(range(n), evaluation.classes, fontsize=8)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{os.path.basename(s.model)}: top-1 {s.top1:.1%}", fontsize=10)
        if n <= 20:
            for (i, j), value in np.ndenumerate(matrix):
                if value:
                    axis.text(j, i, str(value), ha="center", va="center", fontsize=7,
                              color="white" if shown[i, j] > 0.5 else "black")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
