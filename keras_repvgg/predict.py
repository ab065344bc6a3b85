"""Classify image files with any kind of model: .keras, .tflite, a SavedModel, or a checkpoint.

Every kind gets the same pixels (timm's eval transform in Pillow, `load_image`),
so that the kinds differ only in how they compute, not in what they see.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .configs import Preprocessing
from .labels import labels_for
from .model import model_preprocessing, takes_pixels
from .preprocessing import load_images, preprocess_input

SAVEDMODEL_METADATA = "assets.extra/keras_repvgg.json"
SAVEDMODEL_LABELS = "assets.extra/labels.txt"


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


def _from_metadata(meta: dict) -> Preprocessing:
    return Preprocessing(
        input_size=int(meta["input_size"]), crop_pct=float(meta["crop_pct"]),
        interpolation=meta["interpolation"], mean=tuple(meta["mean"]), std=tuple(meta["std"]),
    )


def _labels(labels: Optional[Sequence[str]], classes: int) -> list[str]:
    return labels_for(classes, labels or None) or [str(i) for i in range(classes)]


def _keras_predictor(model, preprocessing: Preprocessing, labels, kind: str) -> Predictor:
    if len(model.outputs) != 1 or len(model.output_shape) != 2:
        raise ValueError(f"{model.name}: predict needs a classifier (include_top=True)")
    pixels_in = takes_pixels(model)
    head = model.layers[-1]
    softmax_inside = getattr(head, "get_config", dict)().get("activation") == "softmax"
    p = dataclasses.replace(preprocessing, input_size=model.input_shape[1] or preprocessing.input_size)

    def run(pixels: np.ndarray) -> np.ndarray:
        x = pixels if pixels_in else preprocess_input(pixels, p)
        out = np.asarray(model.predict(x, verbose=0, batch_size=8))
        return out if softmax_inside else _softmax(out)

    return Predictor(kind, p, _labels(labels, model.output_shape[-1]), run)


def _keras_file(path: Path) -> Predictor:
    from .backend import keras

    model = keras.models.load_model(path)
    return _keras_predictor(model, model_preprocessing(model), None, "keras")


def _tflite_file(path: Path) -> Predictor:
    from keras_repvgg.tflite import TFLiteRunner, read_labels, read_metadata

    data = path.read_bytes()
    runner = TFLiteRunner(data)
    meta = read_metadata(data)
    size = int(runner.input["shape"][1])
    if meta is not None:
        p, takes_pixels = _from_metadata(meta), meta["input"] == "pixels"
    else:  # made elsewhere: uint8 input without quantization means raw pixels
        p = Preprocessing(input_size=size)
        takes_pixels = runner.input["dtype"] == np.uint8 and not runner.input["quantization"][0]
    classes = int(runner.output["shape"][-1])

    def run(pixels: np.ndarray) -> np.ndarray:
        return _softmax(runner(pixels if takes_pixels else preprocess_input(pixels, p)))

    return Predictor("tflite", p, _labels(read_labels(data), classes), run)


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
    p = _from_metadata(json.loads(meta_file.read_text())) if meta_file.is_file() else Preprocessing(input_size=size)
    labels_file = path / SAVEDMODEL_LABELS
    labels = labels_file.read_text().splitlines() if labels_file.is_file() else None
    classes = int(serve.structured_outputs["probabilities"].shape[-1])

    def run(pixels: np.ndarray) -> np.ndarray:  # serving_default takes 0-255 pixels
        return serve(images=tf.constant(pixels, tf.float32))["probabilities"].numpy()

    return Predictor("savedmodel", p, _labels(labels, classes), run)


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

    result = convert_checkpoint(model, arch, input_size=input_size)
    return _keras_predictor(result.model, result.preprocessing, result.label_names, "source")


def predict_files(predictor: Predictor, images: Sequence["str | os.PathLike[str]"], top: int = 5) -> list[dict]:
    """[{"image": PATH, "top": [{"index", "label", "probability"}, ...]}, ...] in the order given."""
    pixels = load_images(images, predictor.preprocessing, normalize=False)
    probabilities = predictor.probabilities(pixels)
    results = []
    for path, row in zip(images, probabilities):
        order = np.argsort(-row, kind="stable")[:top]
        results.append({
            "image": str(path),
            "top": [{"index": int(i), "label": predictor.labels[i], "probability": float(row[i])} for i in order],
        })
    return results
