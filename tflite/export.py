"""Keras RepVGG -> .tflite bytes, for mobile GPU delegates. A pure function; files elsewhere.

A model on TensorFlow of up to `FROZEN_MAX_PARAMETERS` is traced once and frozen in memory;
a bigger one, or one on JAX, goes through `TFLiteConverter.from_keras_model`, which exports
a SavedModel and reads it back. (Under Keras 3, a SavedModel of our own, or concrete
functions that the converter lowers to one, give NaN models: the weights are lost.)
Builtin ops only: no Flex ops, which a phone's GPU delegate and the plain LiteRT runtime lack.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from keras_repvgg.core.description import export_metadata
from keras_repvgg.core.errors import ExportError, HeadNotExportableError
from keras_repvgg.core.heads import output_name
from keras_repvgg.core.transform import denormalize

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


def _serving_model(model, batch_size: int, uint8_pixels: bool, normalize: bool, softmax: bool):
    """The model behind a static-batch input named `image`, its output named for what it holds.

    uint8_pixels: the input is uint8 (cast to float inside); normalize: 0-255 pixels are
    normalized inside with the model's mean and std; softmax: logits become probabilities.
    """
    from keras_repvgg.models.backend import LEGACY_KERAS, keras
    from keras_repvgg.models.model import describe, graph_softmax, pixel_normalization

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
        serving = _serving_model(graph_model, batch_size, io_dtype == "uint8" and mode != "int8", normalize, softmax)
        return _convert(serving, mode, calibration, io_dtype if mode == quantization else "float32")

    def float_logits(graph_model, x: np.ndarray) -> np.ndarray:
        """The search's reference: float inputs as the file takes them, logits out."""
        serving = _serving_model(graph_model, batch_size, False, normalize, False)
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


# Up to this many parameters, a model converts faster traced once and frozen in memory than
# through `from_keras_model`'s SavedModel round trip, which writes, reads and re-traces it;
# above it, slower, as its weights are copied into a GraphDef. Measured on 2026-12-01 (Intel
# Xeon, 2 cores; float32 at 64 px, SavedModel against frozen): A0 (8.3M) 2.6 s against 1.4-1.8 s,
# its identity-apart int8 4.5-5.2 s against 3.2 s, B0 (14M) 3.9-4.1 s against 3.0-3.2 s;
# B1g4 (36M) 6.5-7.5 s against 8.3-8.4 s, D2se (120M) 26 s against 38 s. The files compute the same.
FROZEN_MAX_PARAMETERS = 20_000_000
SIGNATURE_KEY = "serving_default"  # what LiteRT's signature runner and our `TFLiteRunner` call


def _converter(serving_model):
    """TFLite's converter for the serving model, and whether it froze the graph itself (its
    file then lacks the signature that the SavedModel route writes: `_with_signature`)."""
    import tensorflow as tf

    from keras_repvgg.models.backend import BACKEND

    if BACKEND != "tensorflow" or serving_model.count_params() > FROZEN_MAX_PARAMETERS:
        return tf.lite.TFLiteConverter.from_keras_model(serving_model), False
    (image,) = serving_model.inputs
    spec = tf.TensorSpec(tuple(image.shape), image.dtype, name="image")
    call = tf.function(lambda image: serving_model(image, training=False), autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([call.get_concrete_function(spec)], serving_model)
    # Frozen here: lowered to a SavedModel instead, Keras 3's weights are lost (NaN files).
    converter.experimental_lower_to_saved_model = False
    return converter, True


def _with_signature(model: bytes, output: str) -> bytes:
    """The flatbuffer with the `serving_default` signature (input `image`, output `output`)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    (graph,) = tree.subgraphs

    def tensor(name: str, index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE_KEY, 0
    (first,), (last,) = graph.inputs, graph.outputs
    signature.inputs, signature.outputs = [tensor("image", first)], [tensor(output, last)]
    tree.signatureDefs = [signature]
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _convert(serving_model, quantization: str, calibration: Optional[np.ndarray], io_dtype: str) -> bytes:
    import tensorflow as tf

    converter, frozen = _converter(serving_model)
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
        data = converter.convert()
    if frozen:
        (output,) = serving_model.output_names
        data = _with_signature(data, output)
    return data
