"""The custom layers our `.keras` files hold, registered with Keras when this module loads.

`backend.py` imports this module last, so whatever imports Keras through keras-repvgg has
registered them; `registration.py` imports `backend` when a user imports Keras first.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

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
def _tensorflow_grouped_conv() -> frozenset[str]:
    """What TensorFlow's own CPU kernels do with a grouped convolution: "forward", "fused bias"
    and "gradient", each asked once in a small graph shaped like ours (variables, tf.function).

    With oneDNN, which TensorFlow turns on by default only on CPUs with AVX512-VNNI and newer,
    all three run. Without it (an AVX2-only CPU, or TF_ENABLE_ONEDNN_OPTS=0) Eigen computes the
    convolution, but its fused Conv2D+BiasAdd kernel (which Grappler puts in place of a
    BiasAdd) and its gradient kernels refuse groups.
    """
    import tensorflow as tf

    x = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)  # 2 channels in 2 groups of 1
    with tf.init_scope():
        kernel = tf.Variable([[[[3.0, 5.0]]]])
        bias = tf.Variable([1.0, -1.0])

        def gradient():  # the ops of conv2d's gradient (init_scope pauses any GradientTape)
            upstream, options = tf.ones((1, 2, 2, 2)), {"strides": [1, 1, 1, 1], "padding": "VALID"}
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=kernel, out_backprop=upstream, **options)
            dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=kernel.shape, out_backprop=upstream, **options)
            return tf.concat([tf.reshape(dx, [-1]), tf.reshape(dk, [-1])], 0)

        checks = {
            "forward": (lambda: tf.nn.conv2d(x, kernel, 1, "VALID") + bias, x * [3.0, 5.0] + [1.0, -1.0]),
            "fused bias": (lambda: tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "VALID"), bias),
                           x * [3.0, 5.0] + [1.0, -1.0]),
            "gradient": (gradient, np.concatenate([np.tile([3.0, 5.0], 4), x.sum((0, 1, 2))])),
        }
        found = set()
        for name, (check, expected) in checks.items():
            try:
                if np.allclose(tf.function(check)().numpy(), expected):
                    found.add(name)
            except (tf.errors.OpError, ValueError):
                pass
    return frozenset(found)


def _conv_with_per_group_gradient(inputs, kernel, strides, padding, dilations, groups):
    """TensorFlow's grouped convolution, whose gradient is computed one group at a time, for
    kernels that run a grouped convolution but not its gradient (Eigen's)."""
    import tensorflow as tf

    options = {"strides": [1, *strides, 1], "padding": padding, "dilations": [1, *dilations, 1]}

    @tf.custom_gradient
    def conv(x, k):
        def gradient(upstream):
            xs, ks, ups = (tf.split(t, groups, axis=-1) for t in (x, k, upstream))
            dx = [tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(xg), filter=kg, out_backprop=ug, **options)
                  for xg, kg, ug in zip(xs, ks, ups, strict=True)]
            dk = [tf.raw_ops.Conv2DBackpropFilter(input=xg, filter_sizes=tf.shape(kg), out_backprop=ug, **options)
                  for xg, kg, ug in zip(xs, ks, ups, strict=True)]
            return tf.concat(dx, -1), tf.concat(dk, -1)

        return tf.nn.conv2d(x, k, strides=strides, padding=padding, dilations=dilations), gradient

    return conv(inputs, kernel)


@keras.saving.register_keras_serializable(package="keras_repvgg")
class GroupedConv2D(keras.layers.Conv2D):
    """Conv2D with groups > 1 (B*g2, B*g4), the same weights and configuration, run where it
    is fastest.

    On TensorFlow, Keras (3 and 2) compiles each grouped convolution on its own with XLA,
    whose CPU convolution took 1.2-3.7x as long as TensorFlow's own kernel for B1g4's shapes;
    over the whole model that is 10-15% (`python -m benchmarks --sections grouped`, which
    also measures one convolution per group, concatenated: in between). TensorFlow's own
    `conv2d` takes the grouped kernel directly, so that is what runs here, and TFLite's
    converter makes the same single CONV_2D of it. Where its kernels lack the fused bias or
    the gradient for groups (`_tensorflow_grouped_conv`: Eigen, on CPUs without AVX512-VNNI),
    the bias is a plain add and the gradient is taken one group at a time. Other backends,
    and a TensorFlow that cannot run a grouped convolution at all, run Keras' Conv2D.
    """

    def call(self, inputs):
        kernels = _tensorflow_grouped_conv() if BACKEND == "tensorflow" else frozenset()
        if self.data_format != "channels_last" or "forward" not in kernels:
            return super().call(inputs)
        import tensorflow as tf

        kernel = tf.cast(tf.convert_to_tensor(self.kernel), inputs.dtype)
        options = {"strides": tuple(self.strides), "padding": self.padding.upper(), "dilations": tuple(self.dilation_rate)}
        if "gradient" in kernels:
            outputs = tf.nn.conv2d(inputs, kernel, **options)
        else:
            outputs = _conv_with_per_group_gradient(inputs, kernel, groups=self.groups, **options)
        if self.use_bias:
            bias = tf.cast(tf.convert_to_tensor(self.bias), outputs.dtype)
            # A BiasAdd would be fused with the convolution, whose fused kernel may refuse groups.
            outputs = tf.nn.bias_add(outputs, bias) if "fused bias" in kernels else outputs + bias
        return outputs if self.activation is None else self.activation(outputs)
