"""A missing input is said before TensorFlow loads: these run with TensorFlow, Keras and torch
blocked from import (tests/conftest.py), where importing them would be an internal error (exit 1),
not the one-line error (exit 2) that names the file."""

from __future__ import annotations

import pytest
from PIL import Image

from keras_repvgg.front.cli import main


@pytest.mark.parametrize("argv, named", [
    (["predict", "{missing}.keras", "x.jpg"], "{missing}.keras: no such .keras file"),
    (["predict", "{missing}.safetensors", "x.jpg"], "{missing}.safetensors: no such file or folder"),
    (["convert", "{missing}.safetensors", "-o", "{out}.keras"], "{missing}.safetensors: no such file or folder"),
    (["export", "tflite", "{missing}.keras", "-o", "{out}.tflite"], "{missing}.keras: no such .keras file"),
    (["export", "tflite", "{missing}.safetensors", "-o", "{out}.tflite", "--quantization", "int8"],
     "{missing}.safetensors: no such file or folder"),
    (["export", "savedmodel", "{missing}.keras", "-o", "{out}"], "{missing}.keras: no such .keras file"),
    (["export", "onnx", "{missing}.keras", "-o", "{out}.onnx"], "{missing}.keras: no such .keras file"),
    (["export", "openvino", "{missing}.keras", "-o", "{out}"], "{missing}.keras: no such .keras file"),
    (["train", "{missing}", "-o", "{out}.keras"], "{missing}: not a folder"),
    (["evaluate", "{missing}.keras", "{data}"], "{missing}.keras: no such .keras file"),
])
@pytest.mark.timeout(60)
def test_a_missing_input_is_one_line_without_tensorflow(tmp_path, capsys, argv, named):
    missing, out, data = tmp_path / "missing", tmp_path / "out", tmp_path / "data"
    for label in ("cat", "dog"):  # a labelled folder that evaluate accepts
        (data / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(data / label / "0.png")
    status = main([arg.format(missing=missing, out=out, data=data) for arg in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("keras-repvgg: error: ") and err.count("\n") == 1
    assert named.format(missing=missing) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written
