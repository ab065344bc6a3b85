"""The Keras-applications API: signature, heads, inputs, saving and both Keras versions."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_repvgg
from keras_repvgg import keras

from helpers import assert_close_to_timm


def test_model_is_the_tf_keras_model_of_this_process():
    model = keras_repvgg.RepVGGA0(input_shape=(32, 32, 3))
    assert isinstance(model, tf.keras.Model)
    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    assert keras.__version__.startswith("2." if legacy else "3.")


def test_every_variant_has_a_function_with_the_shared_signature():
    import inspect

    names = [v.keras_name for v in keras_repvgg.VARIANTS.values()]
    assert len(names) == 14
    signature = inspect.signature(keras_repvgg.RepVGGA0)
    for name in names:
        fn = getattr(keras_repvgg, name)
        assert inspect.signature(fn) == signature
        assert fn.__doc__.startswith(f"Instantiate the {name} architecture")


def test_layer_names_mirror_timm_modules():
    model = keras_repvgg.RepVGGD2se(input_shape=(64, 64, 3))
    names = {layer.name for layer in model.layers}
    for name in ("stem.pad", "stem.reparam_conv", "stem.attn.fc1", "stages.0.1.reparam_conv",
                 "stages.2.23.attn.fc2", "stages.3.0.act", "head.fc"):
        assert name in names
    grouped = keras_repvgg.RepVGGB1g4(input_shape=(64, 64, 3))
    assert grouped.get_layer("stages.0.1.reparam_conv").groups == 4
    assert grouped.get_layer("stages.0.2.reparam_conv").groups == 1


@pytest.mark.parametrize("form", ["train", "deploy", "deploy-identity"])
def test_the_layout_names_every_layer_of_every_block(form):
    from keras_repvgg.core.layout import block_layout

    model = keras_repvgg.create_model("repvgg_d2se", form=form, input_shape=(32, 32, 3))
    expected = [s.name for spec in keras_repvgg.block_plan(keras_repvgg.get_variant("d2se"))
                for s in block_layout(spec, form).sublayers]
    built = [layer.name for layer in model.layers if layer.name.startswith(("stem.", "stages."))]
    assert sorted(built) == sorted(expected)  # model.layers is in graph order, not build order


def test_heads_and_pooling():
    assert keras_repvgg.RepVGGA0(input_shape=(64, 64, 3), classes=7).output_shape == (None, 7)
    no_top = keras_repvgg.RepVGGA0(include_top=False, input_shape=(64, 64, 3))
    assert no_top.output_shape == (None, 2, 2, 1280)
    pooled = keras_repvgg.RepVGGA0(include_top=False, pooling="max", input_shape=(64, 64, 3))
    assert pooled.output_shape == (None, 1280)
    dynamic = keras_repvgg.create_model("repvgg_a0", include_top=False, input_shape=(None, None, 3))
    assert dynamic.predict(np.zeros((1, 96, 64, 3), "float32"), verbose=0).shape == (1, 3, 2, 1280)
    with pytest.raises(ValueError, match="pooling"):
        keras_repvgg.RepVGGA0(include_top=False, pooling="sum")


def test_input_tensor_is_used():
    inputs = keras.Input((64, 64, 3))
    model = keras_repvgg.RepVGGA0(input_tensor=inputs, include_top=False, pooling="avg")
    assert model.inputs[0] is inputs or model.inputs[0].name == inputs.name


def test_weights_path_and_classes(a0_checkpoints):
    model = keras_repvgg.RepVGGA0(
        weights=a0_checkpoints["fused"], input_shape=(64, 64, 3), classifier_activation=None
    )
    assert_close_to_timm(model.predict(a0_checkpoints["x"], verbose=0), a0_checkpoints["logits"])
    probs = keras_repvgg.create_model(
        "repvgg_a0", weights=a0_checkpoints["fused"], input_shape=(64, 64, 3)
    ).predict(a0_checkpoints["x"], verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="classifier has 1000 classes"):
        keras_repvgg.RepVGGA0(weights=a0_checkpoints["fused"], classes=10)
    # A new head on the pretrained backbone.
    backbone = keras_repvgg.RepVGGA0(
        weights=a0_checkpoints["fused"], include_top=False, pooling="avg", input_shape=(64, 64, 3)
    )
    assert backbone.output_shape == (None, 1280)


def test_create_model_accepts_names_in_every_spelling():
    for name in ("repvgg_b1g4", "b1g4", "RepVGGB1g4", "RepVGG-B1g4", "repvgg_b1g4.rvgg_in1k"):
        assert keras_repvgg.get_variant(name).name == "repvgg_b1g4"
    with pytest.raises(ValueError, match="Unknown RepVGG variant"):
        keras_repvgg.create_model("repvgg_z9")


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_save_and_load_round_trip_exactly(a0_checkpoints, tmp_path, suffix):
    from keras_repvgg.converters import convert

    model = convert(a0_checkpoints["train"], input_size=64)
    path = keras_repvgg.save_model(model, tmp_path / f"a0{suffix}")
    if suffix == ".keras":
        loaded = keras.models.load_model(path)
    else:
        loaded = keras_repvgg.create_model(
            "repvgg_a0", weights=path, input_shape=(64, 64, 3), classifier_activation=None
        )
    x = a0_checkpoints["x"]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_exported_functions_are_not_shadowed_by_submodules():
    import keras_repvgg.exports.serving  # noqa: F401  (imports the fusion module under the package)
    import keras_repvgg.tflite.export  # noqa: F401

    assert callable(keras_repvgg.reparameterize) and keras_repvgg.reparameterize.__name__ == "reparameterize"
