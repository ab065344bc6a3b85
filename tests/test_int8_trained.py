"""int8 from a trained network keeps its accuracy (scikit-learn's digits, a real data set)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import save_checkpoint
from keras_repvgg import reparameterize
from keras_repvgg.converters import convert
from keras_repvgg.equalization import rescale_channels
from keras_repvgg.tflite import TFLiteRunner, check_gpu, export_tflite, write_tflite


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    x = np.kron(x, np.ones((4, 4), np.float32))  # 8x8 -> 32x32
    x = (np.repeat(x[..., None], 3, axis=-1) - 0.5) / 0.5
    return train_test_split(x, digits.target, test_size=0.2, random_state=0, stratify=digits.target)


def _train_timm_a0(x: np.ndarray, y: np.ndarray, epochs: int = 10):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("repvgg_a0", num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = (len(x) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * steps)
    inputs, labels = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y).long()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for i in range(0, len(inputs), 64):
            batch = order[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


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
