"""The custom layers our `.keras` files hold, registered with Keras when this module loads.

`backend.py` imports this module last, so whatever imports Keras through keras-repvgg has
registered them; `registration.py` imports `backend` when a user imports Keras first.
"""

from __future__ import annotations

import functools
from typing import Any

from keras_repvgg.core import names
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.models.backend import BACKEND, keras


@keras.saving.register_keras_serializable(package="keras_repvgg")
class Description(keras.layers.Layer):
    """An identity layer on the model's input whose configuration is the description."""

    def __init__(self, description: "dict[str, Any] | ModelDescription", **kwargs: Any):
        kwargs.setdefault("name", names.DESCRIPTION)
        super().__init__(**kwargs)
        self.description = (
            description if isinstance(description, ModelDescription) else ModelDescription.from_dict(description)
        )

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "description": self.description.to_dict()}


@functools.cache
def _tensorflow_runs_grouped_conv() -> bool:
    """Whether TensorFlow's own CPU kernels take a grouped convolution (TF 2.21's do, through
    oneDNN or Eigen); asked once, eagerly, on a 1x1 conv of 2 channels in 2 groups."""
    import tensorflow as tf

    with tf.init_scope():
        try:
            out = tf.nn.conv2d(tf.constant([[[[1.0, 2.0]]]]), tf.constant([[[[3.0, 5.0]]]]), 1, "VALID")
            return bool(out.numpy().tolist() == [[[[3.0, 10.0]]]])
        except (tf.errors.OpError, ValueError):
            return False


@keras.saving.register_keras_serializable(package="keras_repvgg")
class GroupedConv2D(keras.layers.Conv2D):
    """Conv2D with groups > 1 (B*g2, B*g4), the same weights and configuration, run where it
    is fastest.

    On TensorFlow, Keras (3 and 2) compiles each grouped convolution on its own with XLA,
    whose CPU convolution took 1.2-3.7x as long as TensorFlow's own kernel for B1g4's shapes;
    over the whole model that is 10-15% (`python -m benchmarks --sections grouped`, which
    also measures one convolution per group, concatenated: in between). TensorFlow's own
    `conv2d` takes the grouped kernel directly, so that is what runs here, and TFLite's
    converter makes the same single CONV_2D of it. Other backends, and a TensorFlow
    without that kernel, run Keras' Conv2D.
    """

    def call(self, inputs):
        if BACKEND != "tensorflow" or self.data_format != "channels_last" or not _tensorflow_runs_grouped_conv():
            return super().call(inputs)
        import tensorflow as tf

        kernel = tf.cast(tf.convert_to_tensor(self.kernel), inputs.dtype)
        outputs = tf.nn.conv2d(inputs, kernel, strides=tuple(self.strides), padding=self.padding.upper(),
                               dilations=tuple(self.dilation_rate))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(tf.convert_to_tensor(self.bias), outputs.dtype))
        return outputs if self.activation is None else self.activation(outputs)
