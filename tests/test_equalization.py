"""Cross-layer equalization and channel rescaling keep the float function; equalization
undoes any earlier rescaling."""

from __future__ import annotations

import numpy as np
import pytest

from keras_repvgg import create_model
from keras_repvgg.models.equalization import equalize, rescale_channels

from helpers import random_images

SIZE = 32


def _model(arch: str, form: str):
    model = create_model(arch, form=form, input_shape=(SIZE, SIZE, 3), classes=10, classifier_activation=None)
    rng = np.random.default_rng(3)
    # Random biases and identity scales, as a trained network has.
    for layer in model.layers:
        weights = layer.get_weights()
        if layer.name.endswith((".reparam_conv", ".identity_scale")):
            weights[-1] = weights[-1] + rng.normal(0, 0.1, weights[-1].shape).astype(np.float32)
            layer.set_weights(weights)
    return model


def _wide_scales(model, rng, spread: float = 1.0) -> dict[str, np.ndarray]:
    """Per-channel factors spread over 10**-spread..10**spread for every block but the last."""
    blocks = [layer for layer in model.layers if layer.name.endswith(".reparam_conv")]
    return {
        layer.name[: -len(".reparam_conv")]: 10 ** rng.uniform(-spread, spread, layer.filters)
        for layer in blocks
    }


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize(
    "arch, form",
    [("a0", "deploy-identity"), ("b1g4", "deploy"), ("b1g4", "deploy-identity"),
     pytest.param("d2se", "deploy-identity", marks=pytest.mark.slow)],
)
def test_rescaling_and_equalization_keep_the_function(arch, form):
    model = _model(arch, form)
    x = random_images(4, SIZE, seed=1)
    before = model.predict(x, verbose=0)
    rescale_channels(model, _wide_scales(model, np.random.default_rng(0)))
    rescaled = model.predict(x, verbose=0)
    assert _relative(rescaled, before) < 1e-4
    kernel = model.get_layer("stages.0.0.reparam_conv").get_weights()[0]
    assert np.ptp(np.log10(np.abs(kernel).max(axis=(0, 1, 2)))) > 1  # the channels really spread
    equalize(model)
    assert _relative(model.predict(x, verbose=0), before) < 1e-4


def _spreads(model) -> np.ndarray:
    """Per block, how many decades its output channels' kernel ranges span."""
    return np.array([
        np.ptp(np.log10(np.abs(layer.get_weights()[0]).max(axis=(0, 1, 2))))
        for layer in model.layers
        if layer.name.endswith(".reparam_conv")
    ])


@pytest.mark.parametrize("arch", ["a0", "b1g4"])
def test_equalization_undoes_earlier_rescaling(arch):
    model = _model(arch, "deploy-identity")
    rescale_channels(model, _wide_scales(model, np.random.default_rng(5), spread=1.5))
    assert _spreads(model).min() > 2  # channels 100x apart and more, in every block
    # Back within a factor 2 (0.3 decades) in every block, a few percent in most.
    spreads = _spreads(equalize(model))
    assert spreads.max() < 0.3 and np.median(spreads) < 0.05, spreads


def test_equalization_refuses_what_it_cannot_rescale():
    with pytest.raises(ValueError, match="deploy-form"):
        equalize(_model("a0", "train"))
    features = create_model("a0", input_shape=(SIZE, SIZE, 3), features_only=True)
    with pytest.raises(ValueError, match="features_only"):
        equalize(features)
    model = _model("a0", "deploy")
    with pytest.raises(ValueError, match="positive"):
        rescale_channels(model, {"stem": -np.ones(48)})
    with pytest.raises(ValueError, match="not a rescalable block"):
        rescale_channels(model, {"stages.9.0": np.ones(48)})
