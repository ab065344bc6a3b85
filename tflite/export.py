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
from keras_repvgg.heads import HeadNotExportableError, meaning, output_name
from keras_repvgg.transform import PIXEL_MAX, denormalize, pixel_mean_std, scale_and_offset

from .int8_graphs import (
    AUTO,
    GRAPHS_BY_NAME,
    TOLERANCE_MARGIN,
    TOLERANCE_RATIO,
    Int8Graph,
    candidates,
    choose,
    tolerated_error,
)
from .metadata import ImageInput, ScoresOutput, metadata_flatbuffer, with_metadata

QUANTIZATIONS = ("float32", "float16", "dynamic-int8", "int8")
IO_DTYPES = ("float32", "uint8", "int8")
MIN_CALIBRATION_SAMPLES = 16


class ExportError(KerasRepVGGError):
    """An export that cannot be made as asked: bad options or calibration data."""


def _serving_model(model, batch_size: int, uint8_pixels: bool, normalize: bool, softmax: bool):
    """The model behind a static-batch input named `image`, its output named for what it holds.

    uint8_pixels: the input is uint8 (cast to float inside); normalize: 0-255 pixels are
    normalized inside with the model's mean and std; softmax: logits become probabilities.
    """
    from keras_repvgg.backend import LEGACY_KERAS, keras
    from keras_repvgg.model import describe, graph_softmax, pixel_normalization

    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ExportError(
            f"the model's input shape {shape} is not static; build it with an input_shape"
        )
    description = describe(model)
    try:
        output_name(description.head, f"model {model.name!r}")
    except HeadNotExportableError as err:  # a features_only model
        raise ExportError(str(err)) from None
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
        outputs = graph_softmax(outputs, "serving.softmax")
    # The output's name says what it holds, as in the SavedModel (`heads`): a classifier's
    # probabilities are never softmaxed again.
    name = output_name(head)
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
    int8_graph: str = AUTO,
    held_out: Optional[np.ndarray] = None,
) -> bytes:
    """Convert a Keras RepVGG model to a .tflite flatbuffer and return its bytes.

    model: a deploy-form model, or a training-form one (then fused here).
    quantization: "float32", "float16" (weights in float16, what mobile GPUs want),
        "dynamic-int8" (int8 weights, float activations) or "int8" (full integer,
        calibrated on `calibration`, an array of inputs exactly as the model takes them).
    int8_graph: "auto" (the default) builds every int8 graph the model can give (see
        `int8_graphs.INT8_GRAPHS`: the identity branch folded into the kernel or kept apart,
        each with and without cross-layer equalization), scores each on `held_out` against
        the float model, and keeps the fastest one within `int8_graphs.TOLERANCE_RATIO` of
        the best; a graph's name makes that graph alone. The file's `keras_repvgg.json`
        records the choice and every candidate's held-out figures under "int8".
    held_out: inputs as the model takes them, to score the int8 candidates on; by default
        a fifth of `calibration` (at least 4) is held out and not calibrated on.
    equalize: True or False keeps only the int8 graphs with or without equalization (for a
        float export, True equalizes: the same function, other weights). The caller's model
        is never changed.
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
        the model's own (`ModelDescription.labels`), else none.
    The file carries the standard TFLite Metadata that MediaPipe Tasks, the Task Library
    and Android Studio read (the input's normalization in its own units, the labels as a
    TENSOR_AXIS_LABELS file, the model's name, version and licence), and our description
    of the file (`keras_repvgg.json`), which `keras-repvgg predict` reads.
    """
    from keras_repvgg.backend import require_backend

    # TFLite's converter takes a Keras model on TensorFlow, and on JAX through its StableHLO
    # route (measured: the same builtin ops, outputs and GPU-delegate results); not on torch.
    require_backend("TFLite export", ("tensorflow", "jax"), "TFLite's converter takes no torch-backend model", ExportError)
    from keras_repvgg.labels import checked_labels
    from keras_repvgg.model import describe

    _check_options(quantization, io_dtype, output, input)
    description = describe(model)
    graphs: list[Int8Graph] = []
    if quantization == "int8":
        calibration = _checked_samples(model, calibration, "calibration")
        graphs = _int8_candidates(description.form, equalize, int8_graph)
        if len(graphs) > 1:
            calibration, held_out = _held_out_split(model, calibration, held_out)
    labels = checked_labels(description.classes, labels or description.labels) if description.include_top else None
    if output == "logits" and description.head == "probabilities":
        raise ExportError("output='logits' needs a model without a softmax head (classifier_activation=None)")
    softmax = output == "probabilities" and description.head == "logits"
    normalize = input == "pixels" and not description.takes_pixels
    if normalize:  # the file takes pixels: calibrate and score on pixels
        calibration, held_out = (_as_pixels(x, description) for x in (calibration, held_out))

    def convert(graph_model, mode: str) -> bytes:
        io = io_dtype if mode == quantization else "float32"  # the search's float reference takes floats
        # A float file takes uint8 pixels through a CAST; int8 quantizes its uint8 input instead.
        serving = _serving_model(graph_model, batch_size, io == "uint8" and mode != "int8", normalize, softmax)
        return _convert(serving, mode, calibration, io)

    choice: Optional[dict] = None
    if quantization != "int8":
        data = convert(_float_graph(model, bool(equalize)), quantization)
        form = "deploy" if description.form == "train" else description.form
    elif len(graphs) == 1:
        data = convert(_int8_graph_model(model, graphs[0]), "int8")
        choice = {"graph": graphs[0].name, "chosen_by": "named" if int8_graph != AUTO else "the only candidate"}
    else:
        assert held_out is not None  # split above
        data, choice = _search(model, graphs, held_out, batch_size, convert)
    if choice is not None:
        form = "deploy-identity" if GRAPHS_BY_NAME[choice["graph"]].keep_identity else "deploy"
    # What the file is: the model's description with the file's own graph, head and input.
    exported = description.replace(
        form=form,
        classifier_activation="softmax" if softmax else description.classifier_activation,
        include_preprocessing=description.takes_pixels or normalize,
    )
    data = with_metadata(data, standard_metadata(exported, labels is not None, quantization, io_dtype))
    metadata = export_metadata(exported)
    if choice is not None:
        metadata["int8"] = choice
    return attach_files(data, labels=labels, metadata=metadata)


def _check_options(quantization: str, io_dtype: str, output: str, input: str) -> None:
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


def _checked_samples(model, samples: Optional[np.ndarray], what: str) -> np.ndarray:
    if samples is None:
        raise ExportError("int8 quantization needs calibration data (images or an array)")
    samples = np.asarray(samples, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if samples.ndim != 4 or samples.shape[1:] != expected:
        raise ExportError(f"{what} data has shape {samples.shape}, expected (N,) + {expected}")
    if what == "calibration" and len(samples) < MIN_CALIBRATION_SAMPLES:
        raise ExportError(
            f"int8 calibration needs at least {MIN_CALIBRATION_SAMPLES} samples, got {len(samples)}"
        )
    return samples


def _int8_candidates(form: str, equalize: Optional[bool], int8_graph: str) -> list[Int8Graph]:
    possible = candidates(form, equalize)
    if int8_graph == AUTO:
        return possible
    if int8_graph not in GRAPHS_BY_NAME:
        raise ExportError(f"int8_graph must be {AUTO!r} or one of {list(GRAPHS_BY_NAME)}, got {int8_graph!r}")
    graph = GRAPHS_BY_NAME[int8_graph]
    if graph not in possible:
        names = [g.name for g in possible]
        why = f"equalize={equalize}" if equalize is not None and graph.equalize != equalize else f"the {form} form"
        raise ExportError(f"int8_graph {int8_graph!r} cannot be made from a model in {why}; it can give {names}"
                          + ("" if graph.keep_identity is False else " (the training form gives all four)"))
    return [graph]


def _held_out_split(model, calibration: np.ndarray, held_out: Optional[np.ndarray]):
    """(calibration, held-out): the caller's held-out inputs, or a fifth of the calibration."""
    if held_out is not None:
        return calibration, _checked_samples(model, held_out, "held_out")
    keep = max(4, len(calibration) // 5)
    if len(calibration) - keep < MIN_CALIBRATION_SAMPLES:
        raise ExportError(
            f"choosing the int8 graph holds out {keep} of the {len(calibration)} calibration samples, leaving "
            f"fewer than {MIN_CALIBRATION_SAMPLES}: give at least {MIN_CALIBRATION_SAMPLES + 4}, "
            "pass held_out, or name an int8_graph"
        )
    return calibration[:-keep], calibration[-keep:]


def _as_pixels(x: Optional[np.ndarray], description) -> Optional[np.ndarray]:
    if x is None:
        return None
    return denormalize(x, description.preprocessing)


def _float_graph(model, equalize: bool):
    """One conv per block; the caller's model is not changed."""
    from keras_repvgg.model import clone_with_weights
    from keras_repvgg.reparameterization import is_training_form, reparameterize

    if is_training_form(model):
        model = reparameterize(model)
    elif equalize:
        model = clone_with_weights(model)
    if equalize:
        from keras_repvgg.equalization import equalize as equalize_ranges

        equalize_ranges(model)
    return model


def _int8_graph_model(model, graph: Int8Graph):
    """The Keras model whose int8 file is `graph`; the caller's model is not changed."""
    from keras_repvgg.model import clone_with_weights
    from keras_repvgg.reparameterization import is_training_form, reparameterize

    if is_training_form(model):
        model = reparameterize(model, keep_identity=graph.keep_identity)
    elif graph.equalize:
        model = clone_with_weights(model)  # equalization edits weights in place
    if graph.equalize:
        from keras_repvgg.equalization import equalize as equalize_ranges

        equalize_ranges(model)
    return model


def _search(model, graphs: list[Int8Graph], held_out: np.ndarray, batch_size: int,
            convert: Callable) -> tuple[bytes, dict]:
    """Every candidate's file, scored on the held-out inputs against the float model."""
    from .runtime import TFLiteRunner, compare_logits

    n = len(held_out) // batch_size * batch_size
    if n == 0:
        raise ExportError(f"{len(held_out)} held-out samples do not fill one batch of {batch_size}")
    x = held_out[:n]
    # The float model as a file with the same input and output: its logits are the reference.
    reference = TFLiteRunner(convert(_float_graph(model, False), "float32"), before_softmax=True)(x)
    files, rows = {}, []
    for graph in graphs:
        files[graph.name] = convert(_int8_graph_model(model, graph), "int8")
        scores = compare_logits(TFLiteRunner(files[graph.name], before_softmax=True)(x), reference)
        rows.append({"graph": graph.name, "rel_l2": round(scores["rel_l2"], 5),
                     "top1_agreement": round(scores["top1_agreement"], 4), "speed_rank": graph.speed_rank})
    chosen = choose({row["graph"]: row["rel_l2"] for row in rows})
    limit = tolerated_error(min(row["rel_l2"] for row in rows))
    for row in rows:
        row["within_tolerance"] = bool(row["rel_l2"] <= limit)
    choice = {"graph": chosen, "chosen_by": "held-out error", "held_out_samples": n,
              "tolerance": f"{TOLERANCE_RATIO} x best + {TOLERANCE_MARGIN}", "candidates": rows}
    return files[chosen], choice


def _convert(serving_model, quantization: str, calibration: Optional[np.ndarray], io_dtype: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(serving_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        assert calibration is not None  # checked by the caller
        converter.representative_dataset = _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype != "float32":
            converter.inference_input_type = tf.uint8 if io_dtype == "uint8" else tf.int8
            converter.inference_output_type = converter.inference_input_type
    with contextlib.redirect_stdout(io.StringIO()):  # Keras' "Saved artifact ..." dump is not for users
        return converter.convert()


def standard_metadata(description, has_labels: bool, quantization: str, io_dtype: str) -> bytes:
    """The TFLITE_METADATA of an export of the model `description` describes (its head and
    input as in the file)."""
    from keras_repvgg.configs import get_variant

    p = description.preprocessing
    if description.takes_pixels:  # 0-255 in: MediaPipe passes the pixels as they are
        mean, std, value_range = [0.0], [1.0], (0.0, PIXEL_MAX)
    else:  # normalized in: MediaPipe computes (pixel - mean) / std with them in 0-255 units
        mean, std = (a.tolist() for a in pixel_mean_std(p))
        scale, offset = scale_and_offset(p)  # pixel 0 becomes offset, pixel 255 255 scale + offset
        value_range = (float(offset.min()), float((PIXEL_MAX * scale + offset).max()))
    head = description.head
    what = meaning(head, description.classifier_activation)
    keras_name = get_variant(description.variant).keras_name
    return metadata_flatbuffer(
        name=f"{keras_name} ({description.variant})",
        description=f"RepVGG image classifier ({quantization}, {io_dtype} input), exported by keras-repvgg. {what}",
        version=description.source or "",
        author="keras-repvgg",
        license=description.license or "",
        image=ImageInput("image", int(p.input_size), mean, std, value_range),
        output=ScoresOutput(output_name(head), what, LABELS_FILE if has_labels else None),
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
