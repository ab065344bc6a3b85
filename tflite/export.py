"""Keras RepVGG -> .tflite bytes, for mobile GPU delegates. A pure function; files elsewhere.

Conversion goes through `TFLiteConverter.from_keras_model` (under Keras 3,
conversions through a SavedModel or concrete functions silently produce NaN
models), with builtin ops only: no Flex ops, which a phone's GPU delegate and
the plain LiteRT runtime lack.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from keras_repvgg.description import LABELS_FILE, METADATA_FILE, export_metadata
from keras_repvgg.errors import KerasRepVGGError

from .metadata import ImageInput, ScoresOutput, metadata_flatbuffer, with_metadata

QUANTIZATIONS = ("float32", "float16", "dynamic-int8", "int8")
IO_DTYPES = ("float32", "uint8", "int8")
MIN_CALIBRATION_SAMPLES = 16
# The output's name says what it holds; a classifier's probabilities are never softmaxed again.
OUTPUT_NAMES = {"probabilities": "probabilities", "logits": "logits", "scores": "scores",
                "pooled": "features", "feature_map": "features"}


class ExportError(KerasRepVGGError):
    """An export that cannot be made as asked: bad options or calibration data."""


def _serving_model(model, batch_size: int, uint8_pixels: bool, normalize: bool, softmax: bool):
    """The model behind a static-batch input named `image`, its output named for what it holds.

    uint8_pixels: the input is uint8 (cast to float inside); normalize: 0-255 pixels are
    normalized inside with the model's mean and std; softmax: logits become probabilities.
    """
    from keras_repvgg.backend import LEGACY_KERAS, keras
    from keras_repvgg.model import describe, pixel_normalization

    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ExportError(
            f"the model's input shape {shape} is not static; build it with an input_shape"
        )
    description = describe(model)
    if description.head == "feature_maps":
        raise ExportError("export a classifier or a pooled backbone, not a features_only model")
    dtype = "uint8" if uint8_pixels else "float32"
    image = keras.Input(shape=shape, batch_size=batch_size, dtype=dtype, name="image")
    x = image
    if uint8_pixels:
        if LEGACY_KERAS:
            import tensorflow as tf

            x = tf.cast(image, tf.float32)  # tf-keras wraps TF ops as layers
        else:
            x = keras.ops.cast(image, "float32")
    if normalize:
        x = pixel_normalization(x, description.preprocessing, prefix="serving")
    outputs = model(x)
    head = "probabilities" if softmax else description.head
    if softmax:
        outputs = keras.layers.Softmax(name="serving.softmax")(outputs)
    name = OUTPUT_NAMES[head]
    # A named identity layer: tf-keras names signature outputs after the last layer.
    outputs = keras.layers.Activation("linear", name=name)(outputs)
    return keras.Model(image, {name: outputs}, name=f"{model.name}_serving")


def _representative(calibration: np.ndarray) -> Callable[[], Iterable[list[np.ndarray]]]:
    def gen():
        for sample in calibration:
            yield [sample[None].astype(np.float32)]

    return gen


def export_tflite(
    model,
    quantization: str = "float32",
    calibration: Optional[np.ndarray] = None,
    io_dtype: str = "float32",
    batch_size: int = 1,
    labels: Optional[Sequence[str]] = None,
    equalize: Optional[bool] = None,
    output: str = "probabilities",
    input: str = "pixels",
) -> bytes:
    """Convert a Keras RepVGG model to a .tflite flatbuffer and return its bytes.

    model: a deploy-form model, or a training-form one (then fused here; for int8
        with the identity branch kept apart, which keeps int8 accuracy).
    quantization: "float32", "float16" (weights in float16, what mobile GPUs want),
        "dynamic-int8" (int8 weights, float activations) or "int8" (full integer,
        calibrated on `calibration`, an array of inputs exactly as the model takes them).
    input: "pixels" (the default): the file takes 0-255 RGB and normalizes inside, where the
        model does not already, as MediaPipe Tasks needs (it normalizes with one mean and
        std for all channels, and ImageNet's differ per channel); "normalized": the file
        takes what the model takes (the Task Library can normalize per channel).
    io_dtype: "float32"; "uint8": 0-255 camera pixels as uint8 (a CAST for float models,
        the quantized input of int8 ones; needs input="pixels"); "int8": a full-integer
        model's input and output in int8.
    output: for a classifier, "probabilities" (the default: a SOFTMAX is added to a logits
        head, a GPU-delegate op) or "logits" (the head as it is; a softmax head has none).
    labels: class names, stored in the file as an associated `labels.txt`; by default
        the model's own (its checkpoint's, or ImageNet's for 1000 classes).
    equalize: cross-layer equalization before int8 calibration (the default for int8):
        the same float function with balanced channel ranges, so that one int8 scale
        per activation tensor fits all its channels (see `keras_repvgg.equalization`).
        The caller's model is not changed.
    The file carries the standard TFLite Metadata that MediaPipe Tasks, the Task Library
    and Android Studio read (the input's normalization in its own units, the labels as a
    TENSOR_AXIS_LABELS file, the model's name, version and licence), and our description
    of the file (`keras_repvgg.json`), which `keras-repvgg predict` reads.
    """
    from keras_repvgg.backend import require_backend

    # TFLite's converter takes a Keras model on TensorFlow, and on JAX through its StableHLO
    # route (measured: the same builtin ops, outputs and GPU-delegate results); not on torch.
    require_backend("TFLite export", ("tensorflow", "jax"), "TFLite's converter takes no torch-backend model", ExportError)
    import tensorflow as tf

    from keras_repvgg.labels import labels_for
    from keras_repvgg.model import clone_with_weights, describe
    from keras_repvgg.reparameterization import is_training_form, reparameterize

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if io_dtype not in IO_DTYPES:
        raise ExportError(f"io_dtype must be one of {IO_DTYPES}, got {io_dtype!r}")
    if io_dtype == "int8" and quantization != "int8":
        raise ExportError("io_dtype='int8' needs quantization='int8'")
    if output not in ("probabilities", "logits"):
        raise ExportError(f"output must be 'probabilities' or 'logits', got {output!r}")
    if input not in ("pixels", "normalized"):
        raise ExportError(f"input must be 'pixels' or 'normalized', got {input!r}")
    if io_dtype == "uint8" and input != "pixels":
        raise ExportError("io_dtype='uint8' takes camera pixels: it needs input='pixels'")
    if quantization == "int8":
        if calibration is None:
            raise ExportError("int8 quantization needs calibration data (images or an array)")
        calibration = np.asarray(calibration, dtype=np.float32)
        expected = tuple(model.input_shape[1:])
        if calibration.ndim != 4 or calibration.shape[1:] != expected:
            raise ExportError(
                f"calibration data has shape {calibration.shape}, expected (N,) + {expected}"
            )
        if len(calibration) < MIN_CALIBRATION_SAMPLES:
            raise ExportError(
                f"int8 calibration needs at least {MIN_CALIBRATION_SAMPLES} samples, "
                f"got {len(calibration)}"
            )

    description = describe(model)
    labels = labels_for(description.classes, labels or description.labels) if description.include_top else None
    if output == "logits" and description.head == "probabilities":
        raise ExportError("output='logits' needs a model without a softmax head (classifier_activation=None)")
    softmax = output == "probabilities" and description.head == "logits"
    normalize = input == "pixels" and not description.takes_pixels
    if normalize and calibration is not None:  # the file takes pixels: calibrate on pixels
        p = description.preprocessing
        calibration = (calibration * np.asarray(p.std, np.float32) + np.asarray(p.mean, np.float32)) * 255.0
    if is_training_form(model):
        # Float exports get the plain one-conv-per-block graph; int8 keeps the identity
        # branch apart, so that no centre-tap spike spoils the kernels' int8 scales.
        model = reparameterize(model, keep_identity=quantization == "int8")
    elif equalize is not False and quantization == "int8":
        model = clone_with_weights(model)  # equalization edits weights in place
    if equalize is None:
        equalize = quantization == "int8"
    if equalize:
        from keras_repvgg.equalization import equalize as equalize_ranges

        equalize_ranges(model)
    uint8_pixels = io_dtype == "uint8" and quantization != "int8"  # int8 quantizes its uint8 input instead
    converter = tf.lite.TFLiteConverter.from_keras_model(
        _serving_model(model, batch_size, uint8_pixels, normalize, softmax)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        assert calibration is not None  # checked above
        converter.representative_dataset = _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype != "float32":
            converter.inference_input_type = tf.uint8 if io_dtype == "uint8" else tf.int8
            converter.inference_output_type = converter.inference_input_type
    with contextlib.redirect_stdout(io.StringIO()):  # Keras' "Saved artifact ..." dump is not for users
        data = converter.convert()
    # What the file is: the model's description with the file's own head and input.
    exported = describe(model).replace(
        classifier_activation="softmax" if softmax else describe(model).classifier_activation,
        include_preprocessing=description.takes_pixels or normalize,
    )
    data = with_metadata(data, standard_metadata(exported, labels is not None, quantization, io_dtype))
    return attach_files(data, labels=labels, metadata=export_metadata(exported))


def standard_metadata(description, has_labels: bool, quantization: str, io_dtype: str) -> bytes:
    """The TFLITE_METADATA of an export of the model `description` describes (its head and
    input as in the file)."""
    from keras_repvgg.configs import get_variant

    p = description.preprocessing
    if description.takes_pixels:  # 0-255 in: MediaPipe passes the pixels as they are
        mean, std, value_range = [0.0], [1.0], (0.0, 255.0)
    else:  # normalized in: MediaPipe computes (pixel - 255 mean) / (255 std)
        mean, std = [255.0 * m for m in p.mean], [255.0 * s for s in p.std]
        lows = [(0.0 - m) / s for m, s in zip(mean, std, strict=True)]
        highs = [(255.0 - m) / s for m, s in zip(mean, std, strict=True)]
        value_range = (min(lows), max(highs))
    head = description.head
    what = {"probabilities": "Probabilities of the classes (softmax).", "logits": "Logits of the classes.",
            "scores": f"Scores of the classes ({description.classifier_activation}).",
            "pooled": "Pooled features.", "feature_map": "Feature map."}[head]
    keras_name = get_variant(description.variant).keras_name
    return metadata_flatbuffer(
        name=f"{keras_name} ({description.variant})",
        description=f"RepVGG image classifier ({quantization}, {io_dtype} input), exported by keras-repvgg. {what}",
        version=description.source or "",
        author="keras-repvgg",
        license=description.license or "",
        image=ImageInput("image", int(p.input_size), mean, std, value_range),
        output=ScoresOutput(OUTPUT_NAMES[head], what, LABELS_FILE if has_labels else None),
    )


def attach_files(data: bytes, labels: Optional[Sequence[str]] = None, metadata: Optional[dict] = None) -> bytes:
    """Append labels.txt and our metadata as a zip, TFLite's associated-file layout.

    Flatbuffer readers ignore trailing bytes; zip readers find the archive at the end.
    """
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for name, text in ((LABELS_FILE, "\n".join(labels or []) + "\n" if labels else None),
                           (METADATA_FILE, json.dumps(metadata, indent=1) if metadata else None)):
            if text is not None:
                # A fixed timestamp: the same model exports to the same bytes.
                z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text)
    return data + archive.getvalue()


def attach_labels(data: bytes, labels: Sequence[str]) -> bytes:
    return attach_files(data, labels=labels)


def _read(data: bytes, name: str) -> Optional[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.read(name).decode()
    except (zipfile.BadZipFile, KeyError):
        return None


def read_labels(data: bytes) -> Optional[list[str]]:
    """The labels stored in the file, or None."""
    text = _read(data, LABELS_FILE)
    return text.splitlines() if text is not None else None


def read_metadata(data: bytes) -> Optional[dict]:
    """How the file wants its input (see `export_tflite`), or None for files made elsewhere."""
    text = _read(data, METADATA_FILE)
    return json.loads(text) if text is not None else None


def write_tflite(data: bytes, path: "str | os.PathLike[str]") -> Path:
    """Write .tflite bytes atomically (temporary file, then rename)."""
    from keras_repvgg.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
