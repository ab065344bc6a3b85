"""SavedModel for TF Serving: loaded in a fresh process on TensorFlow's plain kernels,
run through saved_model_cli, free of XLA, written atomically, with warm-up requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_repvgg import get_variant
from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.exports.serving import WARMUP_FILE, decode_image, export_saved_model, xla_must_compile_functions
from keras_repvgg.front.cli import main

from helpers import assert_same_top_k, make_timm_model, random_images, save_checkpoint, sklearn_photos

SIZE = 64
PHOTOS = sklearn_photos()  # china.jpg, flower.jpg; asserted, never an empty loop
PLAIN_TF = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}

# Runs in a fresh process: loads the export, runs each signature on the inputs in
# `inputs.npz` and the photographs, replays the warm-up requests, tries a corrupt image.
SERVE_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

export, work = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(export)
pixels = np.load(f"{work}/inputs.npz")["pixels"]
out = {}
for name, x in (("serving_default", pixels), ("serving_uint8", pixels.astype(np.uint8))):
    result = loaded.signatures[name](images=tf.constant(x))
    out[name] = {k: v.numpy() for k, v in result.items()}
photos = [open(p, "rb").read() for p in sys.argv[3:]]
result = loaded.signatures["predict_images"](images=tf.constant(photos))
out["predict_images"] = {k: v.numpy().astype(str) if v.dtype == tf.string else v.numpy() for k, v in result.items()}
np.savez(f"{work}/outputs.npz", **{f"{s}.{k}": v for s, r in out.items() for k, v in r.items()})

replayed = []
for record in tf.data.TFRecordDataset(f"{export}/assets.extra/tf_serving_warmup_requests"):
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    result = loaded.signatures[request.model_spec.signature_name](**inputs)
    replayed.append([request.model_spec.signature_name, sorted(result)])
try:
    loaded.signatures["predict_images"](images=tf.constant([photos[0][:2000], b"not an image"]))
    corrupt = "accepted"
except tf.errors.InvalidArgumentError as err:
    corrupt = "InvalidArgumentError"
print(json.dumps({"replayed": replayed, "corrupt": corrupt}))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """B1g4 (grouped) exported once; its Keras model, conversion and export folder."""
    root = tmp_path_factory.mktemp("savedmodel")
    path = save_checkpoint(make_timm_model("repvgg_b1g4", seed=3), root / "b1g4.safetensors")
    result = convert_checkpoint(path, input_size=SIZE)
    export = export_saved_model(result.model, root / "export")  # its transform and labels travel in it
    return result, export


def _normalize(pixels: np.ndarray, preprocessing) -> np.ndarray:
    return (pixels / 255.0 - np.asarray(preprocessing.mean)) / np.asarray(preprocessing.std)


def test_layout_and_no_xla(served):
    _, export = served
    assert export.name == "1"
    assert sorted(p.name for p in export.parent.iterdir()) == ["1"]  # no temporary left over
    assert {"saved_model.pb", "variables", "assets.extra"} <= {p.name for p in export.iterdir()}
    assert (export / "assets.extra" / WARMUP_FILE).stat().st_size > 0
    assert xla_must_compile_functions(export) == []


def test_the_check_finds_keras_native_grouped_convolution(served, tmp_path):
    """Control for the test above: Keras' own grouped Conv2D (not the layer our models use,
    whose graph has no XLA either) does bring XLA in."""
    from benchmarks.grouped import keras_conv2d_copy
    from keras_repvgg.models.backend import LEGACY_KERAS, keras

    result, _ = served
    model = keras_conv2d_copy(result.model)
    archive = keras.export.ExportArchive() if not LEGACY_KERAS else __import__("tf_keras").export.ExportArchive()
    archive.track(model)
    import tensorflow as tf

    archive.add_endpoint("serve", tf.function(lambda x: model(x)),
                         [tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32)])
    archive.write_out(str(tmp_path / "native"))
    assert xla_must_compile_functions(tmp_path / "native")


def test_fresh_process_on_plain_kernels_matches_keras(served, tmp_path):
    result, export = served
    pixels = np.round(random_images(3, SIZE, seed=5) * 60 + 120).clip(0, 255).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", pixels=pixels)
    run = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, str(export), str(tmp_path), *map(str, PHOTOS)],
        env=PLAIN_TF, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    out = np.load(tmp_path / "outputs.npz")

    reference = result.model.predict(_normalize(pixels, result.preprocessing), verbose=0)
    scale = np.abs(reference).max()
    # TensorFlow's plain kernels against Keras' (oneDNN, XLA for the grouped convolutions):
    # measured 7.3e-7 of the scale at most, for batches of 1-8 images, with the Keras side and
    # the served side each run by default, with ONEDNN_MAX_CPU_ISA=AVX2 and with
    # TF_ENABLE_ONEDNN_OPTS=0; 1e-5 is 13 times that.
    for signature in ("serving_default", "serving_uint8"):
        assert np.abs(out[f"{signature}.logits"] - reference).max() <= 1e-5 * scale
        np.testing.assert_allclose(out[f"{signature}.probabilities"].sum(-1), 1, rtol=1e-5)

    # The image signature against Pillow decoding and timm's eval transform (see below).
    import tensorflow as tf

    from keras_repvgg.core.preprocessing import load_image

    photos = np.stack([load_image(p, result.preprocessing) for p in PHOTOS])
    expected = tf.nn.softmax(result.model.predict(photos, verbose=0)).numpy()
    probabilities = out["predict_images.probabilities"]
    # Every class within 1e-4 relative, and the top 5 as a set (near-ties may swap places):
    # measured 5.3e-6 (decoding and resizing in the graph, and other kernels), 2.6e-5 with
    # every pixel 1/255 off (the transform's own bound, below).
    assert_same_top_k(probabilities, expected, rtol=1e-4, what="predict_images")
    # Its top 5 are its own five most probable classes, most probable first, with their labels.
    top = out["predict_images.top_k_indices"]
    np.testing.assert_array_equal(np.take_along_axis(probabilities, top, -1), -np.sort(-probabilities, -1)[:, :5])
    # The checkpoint names no classes (a bare safetensors file): its labels are the indices.
    assert result.label_names is None
    labels = np.asarray([str(i) for i in range(1000)])
    assert (out["predict_images.top_k_labels"].astype(str) == labels[top]).all()

    assert sorted(name for name, _ in report["replayed"]) == ["predict_images", "serving_default", "serving_uint8"]
    assert report["corrupt"] == "InvalidArgumentError"


@pytest.mark.parametrize("arch", ["repvgg_a0", "repvgg_d2se"])
def test_in_graph_eval_transform_matches_timm_on_photographs(arch):
    """decode -> resize -> crop in TensorFlow against timm's transform (Pillow) on real photos.

    JPEG is decoded with the accurate integer IDCT, as Pillow does; what remains is
    the bilinear filter (TensorFlow's antialiased resize against Pillow's), at most
    1/255 per pixel after rounding.
    """
    import tensorflow as tf
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=timm.create_model(arch, pretrained=False))
    transform = create_transform(**config)
    preprocessing = get_variant(arch).preprocessing
    assert preprocessing.input_size == config["input_size"][1] and preprocessing.crop_pct == config["crop_pct"]
    for photo in PHOTOS:
        with Image.open(photo) as image:
            reference = transform(image.convert("RGB")).numpy().transpose(1, 2, 0)
        ours = decode_image(tf.constant(photo.read_bytes()), preprocessing).numpy()
        diff = np.abs(_normalize(ours, preprocessing) - reference) * np.asarray(preprocessing.std) * 255
        print(photo.name, arch, f"mean {diff.mean():.3f}/255 max {diff.max():.2f}/255")
        assert diff.mean() < 0.25 and diff.max() <= 1.001


def test_saved_model_cli_show_and_run(served, tmp_path):
    result, export = served
    shown = subprocess.run(["saved_model_cli", "show", "--all", "--dir", str(export)],
                           env=PLAIN_TF, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['predict_images']",
                 "outputs['top_k_labels']", f"shape: (-1, {SIZE}, {SIZE}, 3)"):
        assert text in shown.stdout
    pixels = np.full((2, SIZE, SIZE, 3), 100.0, np.float32)
    np.save(tmp_path / "x.npy", pixels)
    ran = subprocess.run(
        ["saved_model_cli", "run", "--dir", str(export), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}",
         "--outdir", str(tmp_path / "out")],
        env=PLAIN_TF, capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    reference = result.model.predict(_normalize(pixels, result.preprocessing), verbose=0)
    logits = np.load(tmp_path / "out" / "logits.npy")
    assert np.abs(logits - reference).max() <= 1e-5 * np.abs(reference).max()  # measured 6.2e-7 (see above)


def test_versions_are_atomic_and_never_overwritten(served, tmp_path, monkeypatch):
    result, _ = served
    import keras_repvgg.exports.serving as serving

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(serving, "_write_warmup", broken)
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(result.model, tmp_path / "models", version=3)
    assert list((tmp_path / "models").iterdir()) == []  # no version, no temporary folder
    monkeypatch.undo()
    export_saved_model(result.model, tmp_path / "models", version=3)
    with pytest.raises(KerasRepVGGError, match="never overwritten"):
        export_saved_model(result.model, tmp_path / "models", version=3)
    with pytest.raises(ValueError, match="version"):
        export_saved_model(result.model, tmp_path / "models", version=-1)


def test_cli_export_savedmodel(tmp_path, capsys):
    path = save_checkpoint(make_timm_model("repvgg_a0", seed=2), tmp_path / "a0.safetensors")
    out = tmp_path / "serving"
    assert main(["export", "savedmodel", str(path), "--input-size", str(SIZE), "-o", str(out),
                 "--version", "7"]) == 0
    printed = capsys.readouterr().out
    assert "predict_images" in printed and (out / "7" / "saved_model.pb").exists()
    assert main(["export", "savedmodel", str(path), "-o", str(out), "--version", "7"]) == 2
    assert "already exists" in capsys.readouterr().err
