"""Android-ready files: MediaPipe Tasks' ImageClassifier (the C++ core of its Android, iOS,
web and Python APIs) opens every kind of .tflite we write, names the checkpoint's classes,
and gives probabilities whose top classes are the Keras model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_repvgg.converters import convert
from keras_repvgg.core.preprocessing import preprocess_input
from keras_repvgg.front.cli import main
from keras_repvgg.models.model import describe

from helpers import KERAS3_ONLY, assert_same_top_k, make_timm_model, save_checkpoint, sklearn_photos

SIZE = 64
LABELS = [f"label {i}" for i in range(10)]
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.2, 0.3)  # the checkpoint's own, not ImageNet's
# Every combination under Keras 3; under tf-keras, four that take each option at each value.
ONE_OF_EACH = {("float32", "float32", False), ("float16", "uint8", True), ("dynamic-int8", "float32", True),
               ("int8", "uint8", False)}
KINDS = [(q, io, pre) if (q, io, pre) in ONE_OF_EACH else pytest.param(q, io, pre, marks=KERAS3_ONLY)
         for q in ("float32", "float16", "dynamic-int8", "int8") for io in ("float32", "uint8") for pre in (False, True)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 10-class A0 in timm's folder layout, with its labels, mean, std and licence."""
    root = tmp_path_factory.mktemp("mediapipe")
    folder = root / "a0_10"
    folder.mkdir()
    model = make_timm_model("repvgg_a0", seed=31, num_classes=10)
    save_checkpoint(model, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "architecture": "repvgg_a0", "num_classes": 10, "label_names": LABELS,
        "pretrained_cfg": {"input_size": [3, SIZE, SIZE], "mean": MEAN, "std": STD, "crop_pct": 1.0,
                           "license": "mit"},
    }))
    photos = root / "photos"  # crops of two real photographs at the model's size
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        with Image.open(sklearn_photos()[i % 2]) as photo:
            x, y = rng.integers(0, photo.width - 200), rng.integers(0, photo.height - 200)
            photo.crop((x, y, x + 200, y + 200)).resize((SIZE, SIZE), Image.Resampling.BILINEAR).save(
                photos / f"{i}.png")
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(photos.glob("*.png"))[:8]])
    keras_model = convert(folder, input_size=SIZE)
    logits = keras_model.predict(preprocess_input(pixels.astype(np.float32), describe(keras_model).preprocessing),
                                 verbose=0)
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return {"folder": folder, "photos": photos, "pixels": pixels, "probabilities": z / z.sum(-1, keepdims=True),
            "root": root}


def _export(checkpoint, quantization, io_dtype, include_preprocessing) -> str:
    out = checkpoint["root"] / f"a0_{quantization}_{io_dtype}_{int(include_preprocessing)}.tflite"
    args = ["export", "tflite", str(checkpoint["folder"]), "--quantization", quantization, "--io-dtype", io_dtype,
            "-o", str(out)]
    if quantization == "int8":
        # The graph is named: the search (tested in test_tflite_int8_graphs.py) would only add time here.
        args += ["--calibration", str(checkpoint["photos"]), "--int8-graph", "identity-apart-equalized"]
    if include_preprocessing:
        args.append("--include-preprocessing")
    assert main(args) == 0
    return str(out)


def _classify(path: str, pixels: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
    """Category names and scores (by class index) of each image, from MediaPipe."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path), max_results=-1)
    names, scores = [], np.zeros((len(pixels), len(LABELS)))
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for i, image in enumerate(pixels):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            categories = result.classifications[0].categories
            names.append([c.category_name for c in sorted(categories, key=lambda c: c.index)])
            for c in categories:
                scores[i, c.index] = c.score
    return names, scores


@pytest.mark.parametrize("quantization, io_dtype, include_preprocessing", KINDS)
def test_mediapipe_classifies_every_kind_of_file(checkpoint, quantization, io_dtype, include_preprocessing, capsys):
    path = _export(checkpoint, quantization, io_dtype, include_preprocessing)
    capsys.readouterr()
    names, scores = _classify(path, checkpoint["pixels"])
    expected = checkpoint["probabilities"]
    assert all(n == LABELS for n in names)  # the checkpoint's class names, from the file's metadata
    assert scores.min() >= 0 and scores.max() <= 1
    np.testing.assert_allclose(scores.sum(-1), 1, atol=0.02)  # probabilities (int8's are 1/256 steps)
    print(quantization, io_dtype, include_preprocessing, float(np.abs(scores - expected).max()))
    if quantization in ("float32", "float16"):
        # Every class's probability, and the top 5 as a set: near-tied classes (0.00007 apart
        # here) may swap places between MediaPipe's kernels (XNNPACK) and Keras' (oneDNN), so the
        # order is not compared. Measured: 5e-8 (float32) and 6e-6 (float16, which XNNPACK
        # computes in float32 here); 1e-5 is 190 times the first, and 2e-3 leaves room for
        # float16 arithmetic where a CPU has it.
        atol = 1e-5 if quantization == "float32" else 2e-3
        assert_same_top_k(scores, expected, atol=atol, what=f"{quantization} {io_dtype} {include_preprocessing}")
    else:  # int8 weights: measured 0.0007 (dynamic-int8) and 0.0021 (int8) at most, here
        assert np.abs(scores - expected).max() <= 0.02
        assert (scores.argmax(-1) == expected.argmax(-1)).mean() >= 0.875


def test_the_metadata_holds_the_checkpoints_normalization(checkpoint, tmp_path):
    """MediaPipe's own schema reader on a file that takes normalized input: the mean and std
    are the checkpoint's, in pixel units; a default file normalizes inside and says 0 and 1."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    from keras_repvgg.tflite import export_tflite
    from keras_repvgg.tflite.metadata import read_metadata_flatbuffer

    model = convert(checkpoint["folder"], input_size=SIZE)

    def normalization(data: bytes):
        root = schema.ModelMetadata.GetRootAs(read_metadata_flatbuffer(data), 0)
        tensor = root.SubgraphMetadata(0).InputTensorMetadata(0)
        unit = tensor.ProcessUnits(0)
        assert unit.OptionsType() == schema.ProcessUnitOptions.NormalizationOptions
        options = schema.NormalizationOptions()
        options.Init(unit.Options().Bytes, unit.Options().Pos)
        label_file = root.SubgraphMetadata(0).OutputTensorMetadata(0).AssociatedFiles(0)
        assert label_file.Type() == schema.AssociatedFileType.TENSOR_AXIS_LABELS
        assert root.License() == b"mit" and b"repvgg_a0" in root.Name()
        return options.MeanAsNumpy(), options.StdAsNumpy()

    mean, std = normalization(export_tflite(model, input="normalized"))
    np.testing.assert_allclose(mean, 255 * np.asarray(MEAN), rtol=1e-6)
    np.testing.assert_allclose(std, 255 * np.asarray(STD), rtol=1e-6)
    mean, std = normalization(export_tflite(model))
    assert list(mean) == [0] and list(std) == [1]


def test_the_command_line_prints_a_short_summary(checkpoint, tmp_path):
    out = tmp_path / "a0.tflite"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-m", "keras_repvgg", "export", "tflite", str(checkpoint["folder"]),
                          "-o", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["wrote", "in:", "ops:", "vs"], run.stdout
    assert "Saved artifact" not in run.stdout and "TensorSpec" not in run.stdout and run.stderr == ""
    assert "out: probabilities" in lines[1] and "0-255 RGB pixels" in lines[1]
