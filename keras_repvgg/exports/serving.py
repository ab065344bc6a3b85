"""SavedModel export for TF Serving: portable graph, two signatures, warm-up requests.

TF Serving runs without XLA by default, and Keras runs grouped convolutions on
the CPU inside XLA-compiled functions (`_XlaMustCompile`), which such a server
cannot execute. The export therefore lowers each grouped convolution to one
plain convolution per group, concatenated: the same arithmetic, TensorFlow's
ordinary kernels.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from keras_repvgg.core import transform
from keras_repvgg.core.atomic import atomic_path
from keras_repvgg.core.configs import Preprocessing
from keras_repvgg.core.description import LABELS_FILE, METADATA_FILE, ModelDescription, export_metadata
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.core.heads import output_name, served_outputs
from keras_repvgg.models.backend import LEGACY_KERAS, keras, require_backend
from keras_repvgg.models.model import as_keras_model, clone_with_weights, describe, graph_softmax
from keras_repvgg.models.resize import resize_and_crop

WARMUP_FILE = "tf_serving_warmup_requests"
IMAGE_SIGNATURE = "predict_images"


class SplitGroupConv2D(keras.layers.Conv2D):
    """A grouped Conv2D computed as one ungrouped convolution per group, then concatenated."""

    def call(self, inputs):
        import tensorflow as tf

        per_group = tf.split(inputs, self.groups, axis=-1)
        kernels = tf.split(tf.convert_to_tensor(self.kernel), self.groups, axis=-1)
        strides = tuple(self.strides)
        padding = self.padding.upper()
        y = tf.concat([tf.nn.conv2d(x, k, strides, padding) for x, k in zip(per_group, kernels, strict=True)], axis=-1)
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        return self.activation(y)


def portable_model(model: keras.Model) -> keras.Model:
    """A copy of `model` whose grouped convolutions need no XLA (deploy or training form)."""

    def clone(layer):
        if isinstance(layer, keras.layers.Conv2D) and getattr(layer, "groups", 1) > 1:
            return SplitGroupConv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return clone_with_weights(model, clone)


def decode_image(data, preprocessing: Preprocessing, size: Optional[int] = None):
    """One encoded image (a tf.string scalar) -> (size, size, 3) 0-255 float32 pixels.

    timm's eval transform in TensorFlow ops, with `transform`'s geometry and filter (the
    checkpoint's interpolation): the shorter side to floor(size / crop_pct), the longer one
    scaled and truncated, then the centre crop. Bad bytes raise InvalidArgumentError.
    """
    import tensorflow as tf

    if size and size != preprocessing.input_size:  # the crop is `size`, the resize scales from it
        preprocessing = dataclasses.replace(preprocessing, input_size=size)
    # JPEG with the accurate integer IDCT, which decodes as Pillow does (the default,
    # INTEGER_FAST, is 1.3/255 off on average); PNG, GIF and BMP decode exactly anyway.
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False),
    )
    return resize_and_crop(image, preprocessing)


class _Serving:
    """The signature functions, built around a portable copy of the model."""

    def __init__(self, model, description: ModelDescription, labels: Sequence[str], top_k: int):
        import tensorflow as tf

        self.model = model
        self.description = description
        self.preprocessing = description.preprocessing
        self.size = int(model.input_shape[1])
        self.labels = tf.constant(list(labels))
        self.top_k = min(top_k, len(labels))

    def classify(self, pixels):
        """0-255 RGB pixels (any real or integer dtype), batch-first -> the model's output,
        named for what it holds; a logits head also gives its softmax as probabilities."""
        import tensorflow as tf

        x = tf.cast(pixels, tf.float32)
        if not self.description.takes_pixels:
            scale, offset = transform.scale_and_offset(self.preprocessing)
            x = x * tf.constant(scale, tf.float32) + tf.constant(offset, tf.float32)
        out = self.model(x, training=False)
        head = self.description.head
        if head == "logits":
            return {"logits": out, "probabilities": graph_softmax(out, "serving.softmax")}
        return {output_name(head): out}

    def classify_images(self, images):
        """Encoded JPEG/PNG/GIF/BMP images -> probabilities and the top-k classes."""
        import tensorflow as tf

        spec = tf.TensorSpec((self.size, self.size, 3), tf.float32)
        decode = lambda data: decode_image(data, self.preprocessing, self.size)
        pixels = tf.map_fn(decode, images, fn_output_signature=spec)
        probabilities = self.classify(pixels)["probabilities"]
        top = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "probabilities": probabilities,
            "top_k_indices": top.indices,
            "top_k_labels": tf.gather(self.labels, top.indices),
        }


def signature_outputs(description: ModelDescription) -> dict[str, list[str]]:
    """The signatures an export of this model has, with their outputs."""
    head = description.head
    pixels = served_outputs(head)  # the names the TFLite file's output has too (`heads`)
    signatures = {"serving_default": pixels, "serving_uint8": pixels}
    if head in ("logits", "probabilities"):
        signatures[IMAGE_SIGNATURE] = ["probabilities", "top_k_indices", "top_k_labels"]
    return signatures


def export_saved_model(
    model: keras.Model,
    export_dir: "str | os.PathLike[str]",
    version: int = 1,
    labels: Optional[Sequence[str]] = None,
    top_k: int = 5,
) -> Path:
    """Write `export_dir/<version>/` in TF Serving's layout; returns that folder.

    Signatures: `serving_default` (images: float32 0-255 RGB, batch x size x size x 3)
    and `serving_uint8` (the same in uint8) return the model's output, named for what
    it holds: `probabilities` (a softmax head), `logits` and `probabilities` (a head
    without activation), `scores` (another activation) or `features` (a backbone's pooled
    features or feature map), the names `export_tflite` gives (`heads.OUTPUT_NAMES`).
    A classifier also gets `predict_images` (images: a batch of encoded JPEG/PNG bytes),
    which decodes and applies the model's eval transform in the graph and returns
    `probabilities`, `top_k_indices` and `top_k_labels`. `labels` default to the
    model's own. The version folder appears whole or not at all; an existing version
    is never overwritten. Grouped convolutions are lowered without XLA.
    """
    # Other backends export through XLA (one XlaCallModule op), which TF Serving lacks.
    require_backend("SavedModel export", ("tensorflow",), "TF Serving runs graphs without XLA")
    import tensorflow as tf

    from keras_repvgg.core.labels import class_names
    from keras_repvgg.models.reparameterization import reparameterize

    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise KerasRepVGGError(f"version must be a non-negative integer, got {version!r}")
    model = as_keras_model(model)  # a KerasHub one: ours, the same weights
    description = describe(model)
    output_name(description.head, f"model {model.name!r}")  # a head no export holds fails here
    size = model.input_shape[1]
    if size is None or model.input_shape[2] != size:
        raise KerasRepVGGError(f"the model's input shape {model.input_shape[1:]} must be a static square")
    target = Path(export_dir) / str(version)
    if target.exists():
        raise KerasRepVGGError(f"{target} already exists; TF Serving versions are never overwritten")
    if description.form == "train":
        model = reparameterize(model)
        description = describe(model)
    classes = model.output_shape[-1]
    labels = class_names(classes, labels or description.labels)
    serving = _Serving(portable_model(model), description, labels, top_k)
    signatures = signature_outputs(description)

    export = (keras.export.ExportArchive if not LEGACY_KERAS else _legacy_archive())()
    export.track(serving.model)
    pixels = lambda dtype: [tf.TensorSpec((None, size, size, 3), dtype, name="images")]
    export.add_endpoint("serving_default", tf.function(serving.classify), pixels(tf.float32))
    export.add_endpoint("serving_uint8", tf.function(serving.classify), pixels(tf.uint8))
    if IMAGE_SIGNATURE in signatures:
        export.add_endpoint(
            IMAGE_SIGNATURE,
            tf.function(serving.classify_images),
            [tf.TensorSpec((None,), tf.string, name="images")],
        )
    Path(export_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        export.write_out(str(tmp), verbose=False) if not LEGACY_KERAS else export.write_out(str(tmp))
        extra = Path(tmp) / "assets.extra"
        _write_warmup(extra / WARMUP_FILE, size, signatures)
        # For `keras-repvgg predict`: what the model is, and its labels (TF Serving ignores these).
        (extra / METADATA_FILE).write_text(json.dumps(export_metadata(description), indent=1))
        (extra / LABELS_FILE).write_text("\n".join(labels) + "\n")
    return target


def _legacy_archive():
    import tf_keras

    return tf_keras.export.ExportArchive


def _write_warmup(path: Path, size: int, signatures: Iterable[str]) -> None:
    """A PredictionLog per signature, replayed by TF Serving before it takes real requests."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    gray = np.full((size, size, 3), 128, np.uint8)
    requests = {
        "serving_default": tf.make_tensor_proto(gray[None].astype(np.float32)),
        "serving_uint8": tf.make_tensor_proto(gray[None]),
        IMAGE_SIGNATURE: tf.make_tensor_proto([tf.io.encode_jpeg(gray).numpy()]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature in signatures:
            tensor = requests[signature]
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
            request.inputs["images"].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def xla_must_compile_functions(saved_model_dir: "str | os.PathLike[str]") -> list[str]:
    """Names of the functions in a SavedModel that demand XLA; TF Serving cannot run those."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    found = []
    for meta in proto.meta_graphs:
        for function in meta.graph_def.library.function:
            attr = function.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                found.append(function.signature.name)
        for node in meta.graph_def.node:
            attr = node.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                found.append(node.name)
    return found
