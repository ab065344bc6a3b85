"""Classify image files with any kind of model: .keras, .tflite, a SavedModel, or a checkpoint.

Every kind gets the same pixels (timm's eval transform in Pillow, `load_image`),
so that the kinds differ only in how they compute, not in what they see.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .configs import Preprocessing
from .description import LABELS_FILE, METADATA_FILE, ModelDescription, from_export_metadata
from .errors import KerasRepVGGError
from .labels import class_names
from .preprocessing import load_images, preprocess_input

SAVEDMODEL_METADATA = f"assets.extra/{METADATA_FILE}"
SAVEDMODEL_LABELS = f"assets.extra/{LABELS_FILE}"


@dataclass
class Predictor:
    """A loaded model: 0-255 RGB batch at its size -> class probabilities."""

    kind: str
    preprocessing: Preprocessing  # input_size is the model's
    labels: list[str]
    probabilities: Callable[[np.ndarray], np.ndarray]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _as_probabilities(head: str, what: str) -> Callable[[np.ndarray], np.ndarray]:
    """What turns the model's output into probabilities: softmax for logits, nothing for
    probabilities; any other head is not a classifier's."""
    if head == "logits":
        return _softmax
    if head == "probabilities":
        return lambda out: out
    raise KerasRepVGGError(f"{what}: predict needs a classifier, and this model outputs {head.replace('_', ' ')}")


def _keras_predictor(model, kind: str, description: Optional[ModelDescription] = None) -> Predictor:
    from .model import describe

    description = description or describe(model)
    finish = _as_probabilities(description.head, model.name)
    p = description.preprocessing

    def run(pixels: np.ndarray) -> np.ndarray:
        x = pixels if description.takes_pixels else preprocess_input(pixels, p)
        return finish(np.asarray(model.predict(x, verbose=0, batch_size=8)))

    return Predictor(kind, p, class_names(description.classes, description.labels), run)


def _keras_file(path: Path) -> Predictor:
    from .io import load_model

    return _keras_predictor(load_model(path), "keras")


def _tflite_file(path: Path) -> Predictor:
    from keras_repvgg.tflite import TFLiteRunner, read_labels, read_metadata

    data = path.read_bytes()
    runner = TFLiteRunner(data)
    meta = read_metadata(data)
    size = int(runner.input["shape"][1])
    if meta is not None:
        description = from_export_metadata(meta)
        p, takes_pixels, head = description.preprocessing, description.takes_pixels, description.head
    else:  # made elsewhere: uint8 input without quantization means raw pixels; the output's name
        p = Preprocessing(input_size=size)
        takes_pixels = runner.input["dtype"] == np.uint8 and not runner.input["quantization"][0]
        head = "probabilities" if "prob" in runner.output_name.lower() else "logits"
    finish = _as_probabilities(head, str(path))
    classes = int(runner.output["shape"][-1])

    def run(pixels: np.ndarray) -> np.ndarray:
        return finish(runner(pixels if takes_pixels else preprocess_input(pixels, p)))

    return Predictor("tflite", p, class_names(classes, read_labels(data)), run)


def savedmodel_version(path: Path) -> Optional[Path]:
    """A SavedModel folder: `path` itself, or its highest numeric version inside (TF Serving's layout)."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()] if path.is_dir() else []
    return max(versions, key=lambda p: int(p.name)) if versions else None


def _savedmodel(path: Path) -> Predictor:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    size = int(serve.structured_input_signature[1]["images"].shape[1])
    meta_file = path / SAVEDMODEL_METADATA
    p = from_export_metadata(json.loads(meta_file.read_text())).preprocessing if meta_file.is_file() \
        else Preprocessing(input_size=size)
    if "probabilities" not in serve.structured_outputs:
        raise KerasRepVGGError(f"{path}: predict needs a classifier, and this SavedModel has no probabilities")
    labels_file = path / SAVEDMODEL_LABELS
    labels = labels_file.read_text().splitlines() if labels_file.is_file() else None
    classes = int(serve.structured_outputs["probabilities"].shape[-1])

    def run(pixels: np.ndarray) -> np.ndarray:  # serving_default takes 0-255 pixels
        return serve(images=tf.constant(pixels, tf.float32))["probabilities"].numpy()

    return Predictor("savedmodel", p, class_names(classes, labels), run)


def load_predictor(
    model: "str | os.PathLike[str]", arch: Optional[str] = None, input_size: Optional[int] = None
) -> Predictor:
    """MODEL: a .keras file, a .tflite file, a SavedModel folder, or any checkpoint SOURCE."""
    path = Path(model)
    if path.suffix == ".keras" and path.is_file():
        return _keras_file(path)
    if path.suffix == ".tflite" and path.is_file():
        return _tflite_file(path)
    version = savedmodel_version(path) if path.is_dir() else None
    if version is not None:
        return _savedmodel(version)
    from keras_repvgg.converters import convert_checkpoint

    return _keras_predictor(convert_checkpoint(model, arch, input_size=input_size).model, "source")


def predict_files(predictor: Predictor, images: Sequence["str | os.PathLike[str]"], top: int = 5) -> list[dict]:
    """[{"image": PATH, "top": [{"index", "label", "probability"}, ...]}, ...] in the order given."""
    pixels = load_images(images, predictor.preprocessing, normalize=False)
    probabilities = predictor.probabilities(pixels)
    results = []
    for path, row in zip(images, probabilities, strict=True):
        order = np.argsort(-row, kind="stable")[:top]
        results.append({
            "image": str(path),
            "top": [{"index": int(i), "label": predictor.labels[i], "probability": float(row[i])} for i in order],
        })
    return results
