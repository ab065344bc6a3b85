"""Grouped convolutions (B*g2, B*g4) run on TensorFlow's own kernel, not XLA, and change
nothing else: timm's logits, the layer names and weights, the .tflite file (`GroupedConv2D`
in keras_repvgg/models/saved_layers.py; its speed is `python -m benchmarks --sections grouped`)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.grouped import keras_conv2d_copy
from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.models.saved_layers import GroupedConv2D

from helpers import KERAS3_ONLY, assert_close_to_timm, keras_logits, random_images, timm_checkpoint, timm_reference

SIZE = 64


def _xla_functions(model) -> list[str]:
    """The functions a traced call of `model` asks XLA to compile."""
    import tensorflow as tf

    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32)).graph.as_graph_def()
    found = [f.signature.name for f in graph.library.function if f.attr.get("_XlaMustCompile") and
             f.attr["_XlaMustCompile"].b]
    found += [n.name for n in graph.node if n.attr.get("_XlaMustCompile") and n.attr["_XlaMustCompile"].b]
    return found


@pytest.mark.parametrize("arch", ["repvgg_b1g4", "repvgg_b2g4"])
def test_grouped_layers_run_without_xla_and_give_timms_logits(arch):
    x = random_images(2, SIZE, seed=1)
    for form in ("train", "fused"):
        model = convert_checkpoint(timm_checkpoint(arch, 5, form), input_size=SIZE).model
        grouped = [layer for layer in model.layers if getattr(layer, "groups", 1) > 1]
        assert grouped and all(isinstance(layer, GroupedConv2D) for layer in grouped), form
        assert _xla_functions(model) == [], form
        ours = keras_logits(model, x)
        assert_close_to_timm(ours, timm_reference(arch, 5, x), rel=1e-5)
        # Control: Keras' own Conv2D of the same weights compiles each grouped conv with XLA,
        # so the check above can tell; and it computes the same numbers.
        keras_own = keras_conv2d_copy(model)
        assert len(_xla_functions(keras_own)) >= len(grouped), form
        assert_close_to_timm(keras_logits(keras_own, x), ours, rel=1e-6)


def test_tflite_file_has_the_ops_and_numbers_of_keras_conv2d():
    """One CONV_2D per grouped conv, as from Keras' own layer: the same ops in the same order,
    the same outputs bit for bit (only TensorFlow's tensor names differ)."""
    from keras_repvgg.tflite import TFLiteRunner, export_tflite
    from keras_repvgg.tflite.ops import model_ops

    model = convert_checkpoint(timm_checkpoint("repvgg_b1g4", 5, "fused"), input_size=SIZE).model
    ours, keras_own = export_tflite(model, "float32"), export_tflite(keras_conv2d_copy(model), "float32")
    assert model_ops(ours) == model_ops(keras_own)
    ops = {op.name: op.count for op in model_ops(ours)}
    assert ops["CONV_2D"] == 28 and "SPLIT" not in ops and "CONCATENATION" not in ops, ops
    x = random_images(2, SIZE, seed=3)
    assert np.array_equal(TFLiteRunner(ours)(x), TFLiteRunner(keras_own)(x))


def test_files_with_keras_conv2d_still_load(tmp_path):
    """A .keras file written before GroupedConv2D (Keras' Conv2D) loads and computes the same;
    a new one loads with GroupedConv2D."""
    from keras_repvgg.models.io import load_model

    model = convert_checkpoint(timm_checkpoint("repvgg_b1g4", 5, "fused"), input_size=SIZE).model
    x = random_images(2, SIZE, seed=2)
    expected = keras_logits(model, x)
    for name, saved in (("old", keras_conv2d_copy(model)), ("new", model)):
        saved.save(tmp_path / f"{name}.keras")
        loaded = load_model(tmp_path / f"{name}.keras")
        kinds = {type(layer) for layer in loaded.layers if getattr(layer, "groups", 1) > 1}
        assert (kinds == {GroupedConv2D}) if name == "new" else (GroupedConv2D not in kinds), (name, kinds)
        np.testing.assert_allclose(keras_logits(loaded, x), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(("strides", "padding"), [(1, "SAME"), (2, "VALID")])
def test_per_group_gradient_equals_keras_conv2d(strides, padding):
    """Where TensorFlow's kernels run a grouped convolution but not its gradient (Eigen, without
    oneDNN: AVX2-only CPUs), the gradient is taken one group at a time. Both gradients against
    Keras' own Conv2D (XLA), on every machine, whichever kernels the layer itself uses here."""
    import tensorflow as tf

    from keras_repvgg.models.backend import keras
    from keras_repvgg.models.saved_layers import _conv_with_per_group_gradient

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 9, 16)).astype(np.float32))
    kernel = tf.Variable(rng.normal(size=(3, 3, 4, 8)).astype(np.float32))  # 4 groups
    upstream = rng.normal(size=(2, *([9, 9] if padding == "SAME" else [4, 4]), 8)).astype(np.float32)
    keras_own = keras.layers.Conv2D(8, 3, strides, padding=padding.lower(), groups=4, use_bias=False)
    keras_own.build(x.shape)
    keras_own.kernel.assign(kernel)

    def gradients(conv):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = conv()
        return [g.numpy() for g in tape.gradient(out, [x, kernel], output_gradients=tf.constant(upstream))]

    ours = gradients(lambda: _conv_with_per_group_gradient(x, kernel, (strides, strides), padding, (1, 1), 4))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = keras_own(x)
    reference = [g.numpy() for g in tape.gradient(out, [x, keras_own.kernel], output_gradients=tf.constant(upstream))]
    for a, b in zip(ours, reference, strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


EIGEN_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.models.saved_layers import _tensorflow_grouped_conv

checkpoint, fused, inputs = sys.argv[1:4]
x = np.load(inputs)
train = convert_checkpoint(checkpoint, input_size=x.shape[1]).model
deploy = convert_checkpoint(fused, input_size=x.shape[1]).model
image = tf.constant(x)
with tf.GradientTape() as tape:
    tape.watch(image)
    logits = train(image, training=False)
    total = tf.reduce_sum(logits * tf.range(1.0, 1001.0) / 1000.0)
grad_image, *grad_weights = tape.gradient(total, [image, *train.trainable_variables])
train.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
loss = train.train_on_batch(x, np.array([1, 2]))
np.savez(sys.argv[4], train=logits.numpy(), deploy=deploy.predict(x, verbose=0), grad=grad_image.numpy())
print(json.dumps({"kernels": sorted(_tensorflow_grouped_conv()), "loss": float(np.ravel(loss)[0]),
                  "weights_finite": all(bool(np.isfinite(g.numpy()).all()) for g in grad_weights)}))
"""


@KERAS3_ONLY  # TensorFlow's kernels, the same under either Keras
def test_eigen_kernels_run_both_forms_and_their_gradient(tmp_path):
    """TensorFlow without oneDNN (its default on CPUs without AVX512-VNNI; TF_ENABLE_ONEDNN_OPTS=0
    here): B1g4's grouped layers give timm's logits in both forms, timm's gradient for the input,
    and a training step. On Eigen, a grouped conv followed by a BiasAdd or differentiated failed
    ("Fused conv implementation does not support grouped convolutions", "Gradients for grouped
    convolutions are not supported on CPU")."""
    import json
    import os
    import subprocess
    import sys

    import torch

    from helpers import timm_model

    x = random_images(2, 32, seed=8)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [sys.executable, "-c", EIGEN_SCRIPT, str(timm_checkpoint("repvgg_b1g4", 5)),
         str(timm_checkpoint("repvgg_b1g4", 5, "fused")), str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
        env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["kernels"] == ["forward"], report  # the Eigen path: no fused bias, no gradient
    assert np.isfinite(report["loss"]) and report["weights_finite"], report
    out = np.load(tmp_path / "out.npz")
    reference = timm_reference("repvgg_b1g4", 5, x)
    assert_close_to_timm(out["train"], reference, rel=1e-5)
    assert_close_to_timm(out["deploy"], reference, rel=1e-5)

    image = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_(True)
    logits = timm_model("repvgg_b1g4", 5)(image)
    (logits * torch.arange(1.0, 1001.0) / 1000.0).sum().backward()
    expected = image.grad.numpy().transpose(0, 2, 3, 1)
    assert np.abs(out["grad"] - expected).max() <= 1e-4 * np.abs(expected).max()
