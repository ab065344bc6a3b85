"""ONNX on Keras' other backends: torch exports through torch.onnx (its TorchScript exporter, which
takes the dynamic batch), run by ONNX Runtime in a fresh process against timm; JAX is refused
in one line (Keras' route there needs jax2onnx, untested here)."""

from __future__ import annotations

import pytest

from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.core.errors import ExportError
from keras_repvgg.exports.onnx import BATCH, INPUT_NAME, export_onnx, write_onnx
from keras_repvgg.models.backend import BACKEND

from helpers import assert_close_to_timm, onnx_runtime_outputs, random_images, timm_checkpoint, timm_reference

SIZE, SEED = 64, 2  # tests/test_onnx_export.py's: the same cached checkpoints and timm logits


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's export")
def test_torch_export_matches_timm(tmp_path):
    """A0 and B1g4 (grouped convolutions) in one ONNX Runtime process; the same model gives the same bytes."""
    files = []
    for arch in ("repvgg_a0", "repvgg_b1g4"):
        model = convert_checkpoint(timm_checkpoint(arch, seed=SEED), input_size=SIZE).model
        data = export_onnx(model)
        if arch == "repvgg_a0":
            assert export_onnx(model) == data
        files.append(write_onnx(data, tmp_path / f"{arch}.onnx"))
    x = random_images(3, SIZE, seed=4)
    outputs, report = onnx_runtime_outputs(files, x, tmp_path / "run")
    for arch, path, (batch, one) in zip(("repvgg_a0", "repvgg_b1g4"), files, outputs, strict=True):
        reference = timm_reference(arch, SEED, x)
        error = assert_close_to_timm(batch, reference)
        assert_close_to_timm(one, reference[:1])
        assert report[path]["input"] == [INPUT_NAME, "tensor(float)", [BATCH, SIZE, SIZE, 3]]
        assert report[path]["output"] == ["logits", "tensor(float)", [BATCH, 1000]]
        print(f"{arch} (torch backend): max |ONNX Runtime - timm| = {error:.2e} of the logit scale")


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX backend's refusal")
def test_jax_is_refused_in_one_line():
    model = convert_checkpoint(timm_checkpoint("repvgg_a0", seed=SEED), input_size=SIZE).model
    with pytest.raises(ExportError, match="ONNX export runs on Keras' tensorflow or torch backends"):
        export_onnx(model)
