"""int8 from a trained network keeps its accuracy (scikit-learn's digits, a real data set)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.digits import digits as _digits
from benchmarks.digits import train_timm_a0 as _train_timm_a0
from conftest import save_checkpoint
from keras_repvgg import reparameterize
from keras_repvgg.converters import convert
from keras_repvgg.equalization import rescale_channels
from keras_repvgg.tflite import TFLiteRunner, check_gpu, export_tflite, write_tflite


@pytest.mark.slow
def test_int8_of_a_trained_a0_keeps_its_accuracy(tmp_path):
    xtr, xte, ytr, yte = _digits()
    timm_model = _train_timm_a0(xtr, ytr)
    with torch.no_grad():
        timm_acc = (timm_model(torch.from_numpy(xte.transpose(0, 3, 1, 2).copy())).argmax(-1).numpy() == yte).mean()
    path = save_checkpoint(timm_model, tmp_path / "digits_a0.safetensors")
    train_form = convert(path, form="train", input_size=32)
    float_logits = reparameterize(train_form).predict(xte, verbose=0)
    float_acc = (float_logits.argmax(-1) == yte).mean()
    assert float_acc == pytest.approx(timm_acc) and float_acc >= 0.95

    # The same function with channels rescaled 10x up or down at random: per-tensor
    # int8 activations suffer unless the exporter equalizes the channels again.
    rescaled = reparameterize(train_form, keep_identity=True)
    rng = np.random.default_rng(0)
    rescale_channels(rescaled, {
        layer.name[: -len(".reparam_conv")]: 10 ** rng.uniform(-1, 1, layer.filters)
        for layer in rescaled.layers if layer.name.endswith(".reparam_conv")
    })
    assert np.abs(rescaled.predict(xte, verbose=0) - float_logits).max() < 1e-3 * np.abs(float_logits).max()

    calibration = xtr[:256]
    results = {}
    for name, model, equalize in (
        ("plain graph", reparameterize(train_form), None),
        ("identity apart", train_form, None),
        ("identity apart, not equalized", train_form, False),
        ("rescaled, equalized", rescaled, None),
        ("rescaled, not equalized", rescaled, False),
    ):
        data = export_tflite(model, "int8", calibration=calibration, equalize=equalize)
        logits = TFLiteRunner(data)(xte)
        results[name] = {
            "accuracy": float((logits.argmax(-1) == yte).mean()),
            "top1_agreement": float((logits.argmax(-1) == float_logits.argmax(-1)).mean()),
            "rel_l2": float(np.linalg.norm(logits - float_logits) / np.linalg.norm(float_logits)),
            "data": data,
        }
    print(f"float {float_acc:.4f}", {k: {m: v for m, v in r.items() if m != "data"} for k, r in results.items()})
    ours = results["identity apart"]
    assert float_acc - ours["accuracy"] <= 0.005  # under half a point
    assert ours["top1_agreement"] >= 0.99
    assert ours["rel_l2"] < results["plain graph"]["rel_l2"]
    robust = results["rescaled, equalized"]
    assert float_acc - robust["accuracy"] <= 0.005 and robust["top1_agreement"] >= 0.99
    assert results["rescaled, not equalized"]["rel_l2"] > 5 * robust["rel_l2"]
    report = check_gpu(write_tflite(ours["data"], tmp_path / "digits_int8.tflite"))
    assert report["fully_accelerated"] and report["static_problems"] == [], report
