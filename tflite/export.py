"""Keras RepVGG -> .tflite bytes, for mobile GPU delegates. A pure function; files elsewhere.

What to convert (the float graph, or the int8 candidates and their search) and what the file
says about itself; the conversion itself is `conversion`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from keras_repvgg.core.description import export_metadata
from keras_repvgg.core.errors import ExportError
from keras_repvgg.core.transform import denormalize

from .conversion import convert_serving_model, serving_model
from .conversion_worker import ServingOptions, Workers, worker_count
from .files import attach_files
from .int8_graphs import AUTO, Int8Graph
from .int8_search import (
    checked_samples,
    float_graph,
    held_out_split,
    int8_graph_model,
    requested_graphs,
    search,
)
from .metadata import standard_metadata, with_metadata

QUANTIZATIONS = ("float32", "float16", "dynamic-int8", "int8")
IO_DTYPES = ("float32", "uint8", "int8")


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
    progress: Optional[Callable[[str], None]] = None,
    int8_workers: Optional[int] = None,
) -> bytes:
    """Convert a Keras RepVGG model to a .tflite flatbuffer and return its bytes.

    model: a deploy-form model, or a training-form one (then fused here).
    quantization: "float32", "float16" (weights in float16, what mobile GPUs want),
        "dynamic-int8" (int8 weights, float activations) or "int8" (full integer,
        calibrated on `calibration`, an array of inputs exactly as the model takes them).
    int8_graph: "auto" (the default) builds every int8 graph the model can give (see
        `int8_graphs.INT8_GRAPHS`: the identity branch folded into the kernel or kept apart,
        each with and without cross-layer equalization; folded, with the kernels rounded
        with error compensation on `calibration`), scores each on `held_out` against
        the float model, and keeps the fastest one within `int8_graphs.TOLERANCE_RATIO` of
        the best; a graph's name makes that graph alone. The file's `keras_repvgg.json`
        records the choice and every candidate's held-out figures under "int8".
    held_out: inputs as the model takes them, to score the int8 candidates on; by default
        a fifth of `calibration` (at least 4) is held out and not calibrated on.
    progress: called with one line ("int8 candidate 2 of 6: plain-equalized") as each
        candidate of the int8 search starts: the search converts every candidate, which
        takes minutes on the larger variants.
    int8_workers: how many of the search's candidates convert at once, each in a process
        of its own (`conversion_worker`); 1: one after another, in this process. By default
        the first converts here and, where it took long enough for a worker's 25 s start to
        pay, the rest go to one worker per usable core (as many as the memory holds). The
        file is the same either way.
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
    from keras_repvgg.models.backend import require_backend

    # TFLite's converter takes a Keras model on TensorFlow, and on JAX through its StableHLO
    # route (measured: the same builtin ops, outputs and GPU-delegate results); not on torch.
    require_backend("TFLite export", ("tensorflow", "jax"), "TFLite's converter takes no torch-backend model", ExportError)
    from keras_repvgg.core.labels import checked_labels
    from keras_repvgg.models.model import as_keras_model, describe

    _check_options(quantization, io_dtype, output, input)
    model = as_keras_model(model)  # a KerasHub one: ours, the same weights
    description = describe(model)
    graphs: list[Int8Graph] = []
    if quantization == "int8":
        calibration = checked_samples(model, calibration, "calibration")
        graphs = requested_graphs(description.form, equalize, int8_graph)
        if len(graphs) > 1:
            calibration, held_out = held_out_split(model, calibration, held_out)
        elif held_out is not None:
            held_out = checked_samples(model, held_out, "held_out")
    # The per-block graph measures on the held-out inputs (named alone: on those given, else
    # on the calibration), as the model takes them.
    measure_on = held_out if held_out is not None else calibration
    model_calibration = calibration  # as the model takes it: what the compensated rounding measures on
    labels = checked_labels(description.classes, labels or description.labels) if description.include_top else None
    if output == "logits" and description.head == "probabilities":
        raise ExportError("output='logits' needs a model without a softmax head (classifier_activation=None)")
    softmax = output == "probabilities" and description.head == "logits"
    normalize = input == "pixels" and not description.takes_pixels
    if normalize:  # the file takes pixels: calibrate and score on pixels
        calibration, held_out = (_as_pixels(x, description) for x in (calibration, held_out))

    def convert(graph_model, mode: str) -> bytes:
        # A float file takes uint8 pixels through a CAST; int8 quantizes its uint8 input instead.
        serving = serving_model(graph_model, batch_size, io_dtype == "uint8" and mode != "int8", normalize, softmax)
        return convert_serving_model(serving, mode, calibration, io_dtype if mode == quantization else "float32")

    def float_logits(graph_model, x: np.ndarray) -> np.ndarray:
        """The search's reference: float inputs as the file takes them, logits out."""
        serving = serving_model(graph_model, batch_size, False, normalize, False)
        (logits,) = serving.predict(x, batch_size=batch_size, verbose=0).values()
        return np.asarray(logits, np.float32)

    choice: Optional[dict] = None
    if quantization != "int8":
        data = convert(float_graph(model, bool(equalize)), quantization)
        form = "deploy" if description.form == "train" else description.form
    elif len(graphs) == 1:
        graph_model = int8_graph_model(model, graphs[0], measure_on, model_calibration)
        data = convert(graph_model, "int8")
        choice = {"graph": graphs[0].name, "chosen_by": "named" if int8_graph != AUTO else "the only candidate"}
    else:
        assert held_out is not None and measure_on is not None and model_calibration is not None  # split above
        assert calibration is not None
        # What `convert` does for an int8 candidate, for the worker processes to do the same.
        options = ServingOptions(batch_size, False, normalize, softmax, "int8", io_dtype)
        count = worker_count(model.count_params(), len(graphs), int8_workers)
        with Workers(count, lambda graph_model: convert(graph_model, "int8"), options, calibration,
                     adaptive=int8_workers is None) as workers:
            data, choice, graph_model = search(model, graphs, held_out, batch_size, workers.submit, measure_on,
                                                 float_logits, model_calibration, progress)
    identity_blocks = description.identity_blocks
    if choice is not None:
        graph_description = describe(graph_model)
        form, identity_blocks = graph_description.form, graph_description.identity_blocks
        if identity_blocks is not None:
            choice["identity_blocks"] = list(identity_blocks)
    # What the file is: the model's description with the file's own graph, head and input.
    exported = description.replace(
        form=form,
        identity_blocks=identity_blocks,
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


def _as_pixels(x: Optional[np.ndarray], description) -> Optional[np.ndarray]:
    if x is None:
        return None
    return denormalize(x, description.preprocessing)
