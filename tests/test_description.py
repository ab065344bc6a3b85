"""One truth about a model: what it is is recorded when it is built, survives `.keras`, and
decides how every export names its output and whether `predict` applies a softmax."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_repvgg
from keras_repvgg import keras
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.core.preprocessing import load_images
from keras_repvgg.front.cli import main
from keras_repvgg.front.predict import load_predictor, predict_files
from keras_repvgg.models.model import build, describe

from helpers import sklearn_photos

SIZE = 64


def _classifier(activation):
    """The issue's example: a 10-class A0 whose head bias is 0..9, so that a second softmax
    (probabilities squashed towards uniform) is far from the first."""
    model = keras_repvgg.RepVGGA0(input_shape=(SIZE, SIZE, 3), classes=10, classifier_activation=activation)
    kernel, _ = model.get_layer("head.fc").get_weights()
    model.get_layer("head.fc").set_weights([kernel, np.arange(10, dtype=np.float32)])
    return model


@pytest.mark.parametrize("activation, head", [("softmax", "probabilities"), (None, "logits")])
def test_every_kind_gives_the_keras_probabilities(activation, head, tmp_path):
    model = _classifier(activation)
    assert describe(model).head == head
    keras_repvgg.save_model(model, tmp_path / "a0.keras")
    for args in (["export", "tflite", "a0.keras", "-o", "a0.tflite"],
                 ["export", "savedmodel", "a0.keras", "-o", "serving"]):
        assert main([*args[:2], str(tmp_path / args[2]), "-o", str(tmp_path / args[4])]) == 0

    photos = sklearn_photos()
    logits_or_probs = model.predict(load_images(photos, describe(model).preprocessing), verbose=0)
    if head == "probabilities":
        expected = logits_or_probs
    else:
        z = np.exp(logits_or_probs - logits_or_probs.max(axis=-1, keepdims=True))
        expected = z / z.sum(axis=-1, keepdims=True)
    assert expected.max() > 0.3  # the bias makes the probabilities far from uniform (0.1)
    for kind in ("a0.keras", "a0.tflite", "serving"):
        results = predict_files(load_predictor(tmp_path / kind), photos, top=10)
        got = np.array([[t["probability"] for t in sorted(r["top"], key=lambda t: t["index"])] for r in results])
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=kind)


def test_exports_name_outputs_for_what_they_hold(tmp_path):
    import tensorflow as tf

    from keras_repvgg.exports.serving import export_saved_model
    from keras_repvgg.tflite import TFLiteRunner, export_tflite

    # A classifier's file gives probabilities by default; a logits head's logits on request.
    for activation, output, name in (("softmax", "probabilities", "probabilities"), (None, "probabilities", "probabilities"),
                                     (None, "logits", "logits")):
        assert TFLiteRunner(export_tflite(_classifier(activation), output=output)).output_name == name
    with pytest.raises(KerasRepVGGError, match="output='logits' needs a model without a softmax head"):
        export_tflite(_classifier("softmax"), output="logits")
    backbone = keras_repvgg.RepVGGA0(input_shape=(SIZE, SIZE, 3), include_top=False, pooling="avg")
    assert describe(backbone).head == "pooled"
    assert TFLiteRunner(export_tflite(backbone)).output_name == "features"

    softmax_head = tf.saved_model.load(str(export_saved_model(_classifier("softmax"), tmp_path / "p")))
    outputs = softmax_head.signatures["serving_default"].structured_outputs
    assert sorted(outputs) == ["probabilities"]  # no `logits` that are really probabilities
    pooled = tf.saved_model.load(str(export_saved_model(backbone, tmp_path / "f")))
    assert sorted(pooled.signatures["serving_default"].structured_outputs) == ["features"]
    assert "predict_images" not in pooled.signatures  # not a classifier
    with pytest.raises(KerasRepVGGError, match="predict needs a classifier"):
        load_predictor(tmp_path / "f")


def test_the_description_survives_save_and_load(tmp_path):
    model = build(
        ModelDescription("repvgg_a0", classes=3, labels=("cat", "dog", "fox"), classifier_activation=None,
                         include_preprocessing=True),
        input_shape=(96, 96, 3), name="mine",
    )
    before = describe(model)
    loaded = keras.models.load_model(keras_repvgg.save_model(model, tmp_path / "mine.keras"))
    assert describe(loaded) == before
    assert before.labels == ("cat", "dog", "fox") and before.head == "logits" and before.takes_pixels
    assert before.preprocessing.input_size == 96 and before.variant == "repvgg_a0"


_KERAS_LOADS_IT = r"""
import importlib, sys
import numpy as np
order, path, data, name = sys.argv[1:5]
if order == "keras first":
    k = importlib.import_module(name)
    import keras_repvgg
else:
    import keras_repvgg
    k = importlib.import_module(name)
model = k.models.load_model(path)  # Keras' own loader, not ours
x, expected = np.load(data)["x"], np.load(data)["y"]
assert keras_repvgg.describe(model).variant == "repvgg_a0"
assert np.abs(model.predict(x, verbose=0) - expected).max() <= 1e-6
print("loaded")
"""


def test_importing_the_package_lets_keras_load_our_files(tmp_path):
    """Keras' own `load_model` reads our .keras file after `import keras_repvgg`, whether the
    user imported Keras before or after it; and importing the package alone loads no Keras."""
    from keras_repvgg.core.registration import keras_module_name

    model = _classifier("softmax")
    keras_repvgg.save_model(model, tmp_path / "a0.keras")
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=model.predict(x, verbose=0))
    for order in ("keras first", "keras_repvgg first"):
        run = subprocess.run([sys.executable, "-c", _KERAS_LOADS_IT, order, str(tmp_path / "a0.keras"),
                              str(tmp_path / "data.npz"), keras_module_name()],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and run.stdout.strip().endswith("loaded"), (order, run.stderr[-2000:])
    alone = "import sys, keras_repvgg; print(sorted({'keras', 'tf_keras', 'tensorflow'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr[-2000:]


def test_a_renamed_model_keeps_its_variants_transform():
    """D2se evaluates at 320 px with crop 1.0; a model named "mine" still does."""
    model = keras_repvgg.RepVGGD2se(name="mine", include_top=False, pooling="avg", input_shape=(None, None, 3))
    p = describe(model).preprocessing
    assert (p.input_size, p.crop_pct, p.interpolation) == (320, 1.0, "bilinear")
    assert describe(keras_repvgg.reparameterize(
        keras_repvgg.create_model("repvgg_d2se", form="train", name="mine2", input_shape=(64, 64, 3))
    )).preprocessing.crop_pct == 1.0


def test_a_fine_tuned_wrapper_is_described_by_its_backbone_and_its_own_head():
    backbone = keras_repvgg.RepVGGA0(input_shape=(SIZE, SIZE, 3), include_top=False, pooling="avg",
                                     include_preprocessing=True)
    wrapped = keras.Sequential([backbone, keras.layers.Dense(5, activation="softmax")])
    d = describe(wrapped)
    assert (d.variant, d.head, d.classes, d.takes_pixels) == ("repvgg_a0", "probabilities", 5, True)
    with pytest.raises(KerasRepVGGError, match="not built by keras-repvgg"):
        describe(keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)]))


def test_an_internal_error_is_not_shown_as_bad_input(monkeypatch, capsys):
    import keras_repvgg.core.parameters

    def broken(variant):
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr(keras_repvgg.core.parameters, "deploy_parameter_count", broken)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-repvgg: internal error: ValueError: a bug") and "--debug" in err, err
    with pytest.raises(ValueError, match="a bug"):
        main(["--debug", "list"])


def test_a_closed_pipe_is_not_an_error():
    proc = subprocess.Popen([sys.executable, "-m", "keras_repvgg", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.stdout.close()  # the reader is gone before the first line is written
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err.decode() == "", err


def test_metadata_in_exports_is_the_description(tmp_path):
    from keras_repvgg.core.description import from_export_metadata
    from keras_repvgg.tflite import export_tflite, read_metadata

    model = _classifier(None)
    as_is = export_tflite(model, input="normalized", output="logits")
    assert from_export_metadata(read_metadata(as_is)) == describe(model)
    # The default file takes pixels and gives probabilities, and says so.
    default = from_export_metadata(read_metadata(export_tflite(model)))
    assert default == describe(model).replace(include_preprocessing=True, classifier_activation="softmax")
    assert (default.takes_pixels, default.head) == (True, "probabilities")
    from keras_repvgg.exports.serving import export_saved_model

    folder = export_saved_model(model, tmp_path / "s")
    meta = json.loads((folder / "assets.extra" / "keras_repvgg.json").read_text())
    assert from_export_metadata(meta) == describe(model) and meta["head"] == "logits"


def test_a_feature_map_model_names_its_output_alike_in_every_export(tmp_path):
    """One table (`heads.OUTPUT_NAMES`) names the output: a backbone's feature map is
    `features` in the SavedModel's signatures and in the TFLite file alike."""
    import tensorflow as tf

    from keras_repvgg.core.heads import output_name
    from keras_repvgg.exports.serving import export_saved_model
    from keras_repvgg.tflite import TFLiteRunner, export_tflite

    backbone = keras_repvgg.RepVGGA0(input_shape=(SIZE, SIZE, 3), include_top=False)
    assert describe(backbone).head == "feature_map"
    tflite_name = TFLiteRunner(export_tflite(backbone)).output_name
    served = tf.saved_model.load(str(export_saved_model(backbone, tmp_path / "f")))
    for signature in ("serving_default", "serving_uint8"):
        assert sorted(served.signatures[signature].structured_outputs) == [tflite_name] == [output_name("feature_map")]
    assert "predict_images" not in served.signatures  # not a classifier
    with pytest.raises(KerasRepVGGError, match="outputs feature maps"):
        export_saved_model(keras_repvgg.RepVGGA0(input_shape=(SIZE, SIZE, 3), features_only=True), tmp_path / "m")


def test_a_1000_class_model_that_names_no_classes_is_not_shown_imagenets_names(tmp_path):
    from keras_repvgg.tflite import export_tflite, read_labels

    model = keras_repvgg.RepVGGA0(input_shape=(SIZE, SIZE, 3))  # 1000 random classes, no names
    assert describe(model).labels is None
    keras_repvgg.save_model(model, tmp_path / "a0.keras")
    record, = predict_files(load_predictor(tmp_path / "a0.keras"), sklearn_photos()[:1], top=3)
    assert [t["label"] for t in record["top"]] == [str(t["index"]) for t in record["top"]]
    assert read_labels(export_tflite(model)) is None


def test_with_head_records_the_head_it_puts_on_a_backbone(tmp_path):
    backbone = keras_repvgg.RepVGGA0(input_shape=(SIZE, SIZE, 3), include_top=False, pooling="avg",
                                     include_preprocessing=True)
    model = keras_repvgg.with_head(backbone, 3, classifier_activation=None, labels=["cat", "dog", "fox"])
    d = describe(model)
    assert (d.variant, d.head, d.classes, d.labels, d.takes_pixels) == \
        ("repvgg_a0", "logits", 3, ("cat", "dog", "fox"), True)
    loaded = keras.models.load_model(keras_repvgg.save_model(model, tmp_path / "tuned.keras"))
    assert describe(loaded) == d
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(KerasRepVGGError, match="build it with include_top=False"):
        keras_repvgg.with_head(_classifier("softmax"), 3)


@pytest.mark.parametrize("softmax", [True, False])
def test_predict_on_a_foreign_tflite_file_says_what_it_assumes(softmax, tmp_path, capsys):
    """A .tflite made elsewhere (no keras-repvgg description, no labels): its head is read from
    its graph (a final SOFTMAX), not its output's name, and every assumption is said."""
    import tensorflow as tf

    from keras_repvgg.core.configs import Preprocessing
    from keras_repvgg.core.preprocessing import preprocess_input

    layers = [keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]
    model = keras.Sequential(layers + ([keras.layers.Softmax()] if softmax else []))
    path = tmp_path / "foreign.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    predictor = load_predictor(path)
    pixels = load_images(sklearn_photos(), Preprocessing(input_size=16), normalize=False)
    out = model.predict(preprocess_input(pixels, Preprocessing(input_size=16)), verbose=0)
    expected = out if softmax else np.exp(out) / np.exp(out).sum(-1, keepdims=True)
    np.testing.assert_allclose(predictor.probabilities(pixels), expected, rtol=1e-4, atol=1e-6)
    said = " ".join(predictor.assumptions)
    assert "has no keras-repvgg description" in said and "ImageNet's mean and std at 16 px" in said
    assert ("ends in a softmax" if softmax else "a softmax is applied") in said
    assert "shown as their indices" in said and predictor.labels == ["0", "1", "2", "3"]
    assert main(["predict", str(path), str(sklearn_photos()[0])]) == 0
    err = capsys.readouterr().err
    assert "keras-repvgg: note: " in err and "has no keras-repvgg description" in err
