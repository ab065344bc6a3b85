"""The training form in Keras, its reparameterization, and the official checkpoints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import keras_repvgg
from keras_repvgg import keras, reparameterize
from keras_repvgg.converters import CheckpointError, KeyMismatchError, convert, convert_checkpoint
from keras_repvgg.front.cli import main

from helpers import (
    assert_close_to_timm,
    keras_logits,
    randomize_keras_batchnorm,
    save_official_checkpoint,
)


def test_training_form_layers_and_names():
    model = keras_repvgg.create_model("repvgg_b1g4", form="train", input_shape=(64, 64, 3))
    names = {layer.name for layer in model.layers}
    assert {"stem.conv_kxk.conv", "stem.conv_kxk.bn", "stem.conv_1x1.bn", "stages.0.1.identity",
            "stages.3.0.conv_1x1.conv", "head.fc"} <= names
    assert "stages.0.0.identity" not in names  # stride 2: no identity branch
    assert model.get_layer("stages.0.1.conv_1x1.conv").groups == 4
    bn = model.get_layer("stages.0.1.identity")
    assert bn.epsilon == 1e-5 and bn.momentum == pytest.approx(0.9)


@pytest.mark.parametrize(
    "arch", ["repvgg_a0", "repvgg_b1g4", pytest.param("repvgg_d2se", marks=pytest.mark.slow)]
)
def test_reparameterize_after_training_steps(arch):
    keras.utils.set_random_seed(0)
    model = keras_repvgg.create_model(
        arch, form="train", input_shape=(32, 32, 3), classes=5, classifier_activation=None
    )
    randomize_keras_batchnorm(model)
    before = [w.copy() for w in model.get_weights()]
    mean_before = model.get_layer("stages.1.1.conv_kxk.bn").get_weights()[2].copy()
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.default_rng(1).standard_normal((16, 32, 32, 3)).astype(np.float32)
    y = np.arange(16) % 5
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    # Weights and BatchNorm statistics really moved.
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    mean_after = model.get_layer("stages.1.1.conv_kxk.bn").get_weights()[2]
    assert np.abs(mean_after - mean_before).max() > 1e-3
    fused = reparameterize(model)
    assert fused.count_params() < model.count_params()
    assert_close_to_timm(keras_logits(fused, x[:4]), keras_logits(model, x[:4]), rel=1e-5)


def test_reparameterize_keeps_inputs_head_and_preprocessing():
    model = keras_repvgg.create_model(
        "repvgg_a0", form="train", input_shape=(48, 48, 3), include_top=False, pooling="max",
        include_preprocessing=True,
    )
    randomize_keras_batchnorm(model, seed=3)
    fused = reparameterize(model)
    assert fused.input_shape == model.input_shape and fused.output_shape == (None, 1280)
    assert isinstance(fused.get_layer("head.global_pool"), keras.layers.GlobalMaxPooling2D)
    rgb = np.random.default_rng(2).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)
    assert_close_to_timm(keras_logits(fused, rgb), keras_logits(model, rgb), rel=1e-5)


def test_training_form_needs_branches(a0_checkpoints):
    with pytest.raises(CheckpointError, match="already fused"):
        convert(a0_checkpoints["fused"], form="train")


def test_training_form_from_safetensors_matches_timm_and_round_trips(a0_checkpoints, tmp_path):
    model = convert(a0_checkpoints["train"], form="train", input_size=64)
    assert_close_to_timm(keras_logits(model, a0_checkpoints["x"]), a0_checkpoints["logits"])
    path = keras_repvgg.save_model(model, tmp_path / "train.keras")
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        keras_logits(loaded, a0_checkpoints["x"]), keras_logits(model, a0_checkpoints["x"])
    )


def test_cli_converts_official_pth(a0_checkpoints, tmp_path, capsys):
    pth = save_official_checkpoint(a0_checkpoints["model"], tmp_path / "RepVGG-A0-train.pth")
    out = tmp_path / "a0.keras"
    assert main(["convert", str(pth), "--arch", "RepVGG-A0", "--input-size", "64", "-o", str(out)]) == 0
    assert "variant repvgg_a0" in capsys.readouterr().out
    loaded = keras.models.load_model(out)
    assert_close_to_timm(keras_logits(loaded, a0_checkpoints["x"]), a0_checkpoints["logits"])


def test_wrapped_official_checkpoint_with_module_prefix(a0_checkpoints, tmp_path):
    plain = save_official_checkpoint(a0_checkpoints["model"], tmp_path / "plain.pth")
    state = torch.load(plain, weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    result = convert_checkpoint(wrapped, input_size=64)
    assert result.variant.name == "repvgg_a0"
    assert_close_to_timm(keras_logits(result.model, a0_checkpoints["x"]), a0_checkpoints["logits"])


def test_official_missing_key_is_named_in_official_terms(a0_checkpoints, tmp_path):
    plain = save_official_checkpoint(a0_checkpoints["model"], tmp_path / "plain.pth")
    state = torch.load(plain, weights_only=True)
    del state["stage2.1.rbr_1x1.bn.running_var"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(KeyMismatchError, match=r"missing key 'stage2\.1\.rbr_1x1\.bn\.running_var'"):
        convert(tmp_path / "missing.pth", "repvgg_a0")


class _NotATensor:
    pass


def test_pickle_with_an_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"stage0.rbr_dense.conv.weight": _NotATensor()}, f)
    with pytest.raises(CheckpointError, match="refused: not a plain PyTorch state dict"):
        convert(path, "repvgg_a0")


def test_non_tensor_value_is_refused(a0_checkpoints, tmp_path):
    path = tmp_path / "epoch.pth"
    torch.save({"linear.weight": torch.zeros(1000, 1280), "epoch": 120}, path)
    with pytest.raises(CheckpointError, match="key 'epoch' holds a int, not a tensor"):
        convert(path, "repvgg_a0")


@pytest.mark.parametrize("arch", ["repvgg_b1g4", "repvgg_d2se"])
def test_identity_kept_apart_computes_the_same(arch):
    model = keras_repvgg.create_model(arch, form="train", input_shape=(32, 32, 3), classifier_activation=None)
    randomize_keras_batchnorm(model, seed=4)
    x = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype(np.float32)
    split = reparameterize(model, keep_identity=True)
    assert split.get_layer("stages.0.1.identity_scale") is not None
    # Against the training form itself, whose layers the parity tests hold to timm.
    assert_close_to_timm(keras_logits(split, x), keras_logits(model, x), rel=1e-5)


def test_identity_kept_apart_in_named_blocks_only(a0_checkpoints, tmp_path):
    """The per-block int8 graph's float model: timm's logits, the blocks named in its
    description (in block order), and the same after a save and a load."""
    from keras_repvgg.core.errors import KerasRepVGGError

    model = convert_checkpoint(a0_checkpoints["train"], form="train", input_size=64).model
    x, expected = a0_checkpoints["x"], a0_checkpoints["logits"]
    split = reparameterize(model, keep_identity={"stages.2.5", "stages.0.1"})
    description = keras_repvgg.describe(split)
    assert description.form == "deploy-identity" and description.identity_blocks == ("stages.0.1", "stages.2.5")
    assert sorted(layer.name for layer in split.layers if layer.name.endswith(".identity_scale")) == [
        "stages.0.1.identity_scale", "stages.2.5.identity_scale"]
    assert_close_to_timm(keras_logits(split, x), expected)
    split.save(tmp_path / "split.keras")
    loaded = keras_repvgg.load_model(tmp_path / "split.keras")
    assert keras_repvgg.describe(loaded) == description
    np.testing.assert_array_equal(keras_logits(loaded, x), keras_logits(split, x))
    with pytest.raises(KerasRepVGGError, match=r"keep_identity names \['stages.0.0'\].*stages.0.1"):
        reparameterize(model, keep_identity=["stages.0.0"])  # strides: no identity
