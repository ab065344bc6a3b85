"""The Python API and the command line on the current backend (jax or torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_cli_and_hub import HUB_ID, hub_cache  # noqa: F401  (the offline hub cache fixture)

import keras_repvgg
from keras_repvgg import keras
from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.front.cli import main
from keras_repvgg.models.backend import BACKEND
from keras_repvgg.models.model import describe

from helpers import (
    assert_close_to_timm,
    keras_logits,
    randomize_keras_batchnorm,
    save_official_checkpoint,
    sklearn_photos,
    torch_logits,
)


def test_keras_runs_on_the_backend_asked_for():
    assert BACKEND == os.environ["KERAS_BACKEND"] == keras.backend.backend()


def test_model_functions_in_both_forms_match_timm(a0_checkpoints, tmp_path):
    x, expected = a0_checkpoints["x"], a0_checkpoints["logits"]
    deploy = keras_repvgg.RepVGGA0(weights=a0_checkpoints["fused"], input_shape=(64, 64, 3), classifier_activation=None)
    train = keras_repvgg.create_model(
        "repvgg_a0", form="train", weights=a0_checkpoints["train"], input_shape=(64, 64, 3), classifier_activation=None
    )
    assert describe(train).form == "train" and describe(deploy).form == "deploy"
    assert_close_to_timm(keras_logits(deploy, x), expected)
    assert_close_to_timm(keras_logits(train, x), expected)
    official = save_official_checkpoint(a0_checkpoints["model"], tmp_path / "RepVGG-A0-train.pth")
    assert_close_to_timm(keras_logits(convert_checkpoint(official, input_size=64).model, x), expected)
    pooled = keras_repvgg.RepVGGA0(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert tuple(pooled.output_shape) == (None, 1280) and describe(pooled).head == "pooled"


@pytest.mark.parametrize("arch", ["repvgg_a0", "repvgg_b1g4"])
def test_reparameterize_after_fit(arch):
    keras.utils.set_random_seed(0)
    model = keras_repvgg.create_model(arch, form="train", input_shape=(32, 32, 3), classes=5, classifier_activation=None)
    randomize_keras_batchnorm(model)
    mean_before = model.get_layer("stages.1.1.conv_kxk.bn").get_weights()[2].copy()
    kernel_before = model.get_layer("stages.1.1.conv_kxk.conv").get_weights()[0].copy()
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # A0 keeps Keras' default (XLA on JAX, eager on torch); compiling B1g4's training step
        # takes XLA a minute on two cores.
        jit_compile="auto" if arch == "repvgg_a0" else False,
    )
    x = np.random.default_rng(1).standard_normal((16, 32, 32, 3)).astype(np.float32)
    model.fit(x, np.arange(16) % 5, batch_size=8, epochs=2, verbose=0)
    # The kernels and the BatchNorm statistics really moved.
    assert np.abs(model.get_layer("stages.1.1.conv_kxk.bn").get_weights()[2] - mean_before).max() > 1e-3
    assert np.abs(model.get_layer("stages.1.1.conv_kxk.conv").get_weights()[0] - kernel_before).max() > 1e-6
    fused = keras_repvgg.reparameterize(model)
    assert fused.count_params() < model.count_params()
    assert_close_to_timm(keras_logits(fused, x[:4]), keras_logits(model, x[:4]), rel=1e-5)


def test_keras_file_round_trips_with_its_description(a0_checkpoints, tmp_path):
    model = convert_checkpoint(a0_checkpoints["train"], form="train", input_size=64, include_preprocessing=True).model
    path = keras_repvgg.save_model(model, tmp_path / "a0.keras")
    loaded = keras_repvgg.load_model(path)
    assert describe(loaded) == describe(model)
    pixels = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(keras_logits(loaded, pixels), keras_logits(model, pixels))


def test_images_preprocessing_and_labels(a0_checkpoints):
    """load_images and preprocess_input feed the model what its in-graph normalization gives,
    and decode_predictions names the classes the model ranks first."""
    photos = sklearn_photos()
    plain = convert_checkpoint(a0_checkpoints["fused"], input_size=64, classifier_activation="softmax").model
    in_graph = convert_checkpoint(a0_checkpoints["fused"], input_size=64, include_preprocessing=True,
                                  classifier_activation="softmax").model
    pixels = keras_repvgg.load_images(photos, describe(plain).preprocessing, normalize=False)
    assert pixels.shape == (2, 64, 64, 3)
    normalized = keras_repvgg.preprocess_input(pixels, "repvgg_a0")
    np.testing.assert_allclose(normalized, keras_repvgg.load_images(photos, describe(plain).preprocessing), atol=1e-6)
    probabilities = plain.predict(normalized, verbose=0)
    assert_close_to_timm(in_graph.predict(pixels, verbose=0), probabilities)
    assert_close_to_timm(probabilities, _softmax(torch_logits(a0_checkpoints["model"], normalized)))
    decoded = keras_repvgg.decode_predictions(probabilities, top=3)
    labels = keras_repvgg.imagenet_labels()
    assert [row[0][1] for row in decoded] == [labels[i] for i in probabilities.argmax(axis=1)]


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_command_line_converts_and_predicts(hub_cache, tmp_path, capsys):  # noqa: F811
    """`python -m keras_repvgg convert` from a hub id (offline), then `predict` on the
    .keras file and on the source give the same classes as timm."""
    out = tmp_path / "a0.keras"
    env = {**os.environ, "HF_HOME": str(hub_cache["home"]), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "keras_repvgg", "convert", HUB_ID, "-o", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "variant repvgg_a0" in proc.stdout, proc.stderr
    photos = [str(p) for p in sklearn_photos()]
    results = {}
    for source in (out, hub_cache["snapshot"]):
        assert main(["predict", str(source), *photos, "--top", "3", "--json"]) == 0
        results[source] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON Lines
    from_file, from_source = results.values()
    assert [r["image"] for r in from_file] == photos
    for a, b in zip(from_file, from_source, strict=True):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert a["top"][0]["label"].startswith("class_")
    # timm's own top class for the same pixels.
    pixels = keras_repvgg.load_images(photos, describe(keras_repvgg.load_model(out)).preprocessing)
    best = torch_logits(hub_cache["model"], pixels).argmax(axis=1)
    assert [r["top"][0]["index"] for r in from_file] == list(best)


def test_exports_run_where_they_are_sound_and_say_how_elsewhere(a0_checkpoints, tmp_path, capsys):
    """Measured (docs/backends.md): TFLite from JAX goes through TFLite's
    StableHLO route to the same builtin ops and outputs; from torch TFLite's converter takes
    no model. A SavedModel from either is one XlaCallModule op, which TF Serving cannot run."""
    from keras_repvgg.exports.serving import export_saved_model
    from keras_repvgg.tflite import ExportError, evaluate_tflite, export_tflite, model_ops

    model = convert_checkpoint(a0_checkpoints["fused"], input_size=64).model
    if BACKEND == "jax":
        data = export_tflite(model, "float32", input="normalized", output="logits")
        report = evaluate_tflite(data, model, a0_checkpoints["x"])
        assert report["max_abs"] <= 1e-5 * np.abs(a0_checkpoints["logits"]).max()
        assert {op.name for op in model_ops(data)} <= {"PAD", "CONV_2D", "SUM", "MEAN", "FULLY_CONNECTED"}
    else:
        with pytest.raises(ExportError, match="TFLite export runs on Keras' tensorflow or jax backends.*KERAS_BACKEND="):
            export_tflite(model, "float32")
    with pytest.raises(KerasRepVGGError, match="SavedModel export runs on Keras' tensorflow backend.*KERAS_BACKEND=tensorflow"):
        export_saved_model(model, tmp_path / "serving")
    keras_file = keras_repvgg.save_model(model, tmp_path / "a0.keras")
    assert main(["export", "savedmodel", str(keras_file), "-o", str(tmp_path / "serving")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KERAS_BACKEND=tensorflow" in err
    assert not (tmp_path / "serving" / "1").exists()
