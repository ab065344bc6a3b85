"""One Keras model -> .tflite bytes: the serving model the file computes, and TFLite's converter
run on it. `export` decides what to convert; `conversion_worker` runs this in a worker process.

A model on TensorFlow of up to `FROZEN_MAX_PARAMETERS` is traced once and frozen in memory;
a bigger one, or one on JAX, goes through `TFLiteConverter.from_keras_model`, which exports
a SavedModel and reads it back. (Under Keras 3, a SavedModel of our own, or concrete
functions that the converter lowers to one, give NaN models: the weights are lost.)
Builtin ops only: no Flex ops, which a phone's GPU delegate and the plain LiteRT runtime lack.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Iterable, Optional

import numpy as np

from keras_repvgg.core.errors import ExportError, HeadNotExportableError
from keras_repvgg.core.heads import output_name


def serving_model(model, batch_size: int, uint8_pixels: bool, normalize: bool, softmax: bool):
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


def convert_serving_model(serving_model, quantization: str, calibration: Optional[np.ndarray], io_dtype: str) -> bytes:
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
