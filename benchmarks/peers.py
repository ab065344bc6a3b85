"""The path a user would take instead: timm -> litert-torch -> TFLite, beside ours.

Same timm weights on both paths. Ours: the training-form checkpoint through our
converter and `export_tflite` (int8: the default, which scores its candidate graphs on
held-out inputs and keeps the fastest within tolerance; and the two graph shapes by name).
Theirs: `timm.utils.reparameterize_model`, then `litert_torch.convert` with
channel-last I/O (float32), and PT2E per-channel int8 calibrated on the same inputs.
Needs `pip install -e ".[test,bench]"` (litert-torch 0.10 wants torch < 2.15).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from benchmarks.common import convert_timm, median_seconds, timm_models

# litert-torch's files take normalized input and give logits: ours are made the same way here,
# so that the two graphs compare op for op (our default adds in-graph normalization and a softmax).
PEER_INPUT, PEER_OUTPUT = "normalized", "logits"


def litert_torch_tflite(fused_timm_model, calibration_nhwc: "np.ndarray | None") -> bytes:
    """timm's reparameterized model as .tflite bytes: float32, or PT2E int8 when calibrating."""
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    module = litert_torch.to_channel_last_io(fused_timm_model, args=[0]).eval()
    size = calibration_nhwc.shape[1] if calibration_nhwc is not None else 224
    sample = (torch.zeros(1, size, size, 3),)
    if calibration_nhwc is None:
        return litert_torch.convert(module, sample).model_content()
    exported = torch.export.export(module, sample).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    )
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for x in calibration_nhwc:
            prepared(torch.from_numpy(x[None].copy()))
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    return litert_torch.convert(quantized, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)).model_content()


def _ops(data: bytes) -> str:
    from keras_repvgg.tflite import model_ops

    return ", ".join(f"{op.name} x{op.count}" for op in model_ops(data))


def sgemm_gflops(n: int = 2048, repeats: int = 10) -> float:
    """numpy's float32 matrix product (BLAS sgemm): the machine's practical GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def run(variants: list[str], size: int = 224, repeats: int = 20, rounds: int = 5) -> list[dict[str, Any]]:
    """Latency, size, ops and GFLOP/s of each path's float32 and int8 files.

    The files of one variant are timed in interleaved rounds (median of each round's
    median), so that this shared machine's drifts hit every path alike.
    """
    from keras_repvgg import get_variant
    from keras_repvgg.core.parameters import deploy_multiply_adds
    from keras_repvgg.tflite import TFLiteRunner, export_tflite, read_metadata

    rng = np.random.default_rng(0)
    rows = []
    for arch in variants:
        timm_model, fused = timm_models(arch)
        ours_train = convert_timm(timm_model, form="train", input_size=size)
        calibration = rng.standard_normal((32, size, size, 3)).astype(np.float32)
        x = rng.standard_normal((1, size, size, 3)).astype(np.float32)
        macs = deploy_multiply_adds(get_variant(arch), size)
        makers = {
            ("float32", "ours"): lambda: export_tflite(ours_train, "float32", input=PEER_INPUT, output=PEER_OUTPUT),
            ("float32", "litert-torch"): lambda: litert_torch_tflite(fused, None),
            ("int8", "ours, the default (auto)"): lambda: export_tflite(
                ours_train, "int8", calibration=calibration, input=PEER_INPUT, output=PEER_OUTPUT),
            ("int8", "ours, plain"): lambda: export_tflite(
                ours_train, "int8", calibration=calibration, input=PEER_INPUT, output=PEER_OUTPUT, int8_graph="plain"),
            ("int8", "ours, identity-where-it-pays"): lambda: export_tflite(
                ours_train, "int8", calibration=calibration, input=PEER_INPUT, output=PEER_OUTPUT,
                int8_graph="identity-where-it-pays"),
            ("int8", "ours, identity-apart-equalized"): lambda: export_tflite(
                ours_train, "int8", calibration=calibration, input=PEER_INPUT, output=PEER_OUTPUT,
                int8_graph="identity-apart-equalized"),
            ("int8", "litert-torch (PT2E)"): lambda: litert_torch_tflite(fused, calibration),
        }
        files = {}
        for key, make in makers.items():
            start = time.perf_counter()
            files[key] = (make(), time.perf_counter() - start)
        # The default's choice goes into its row's name: "ours, the default (auto: plain)".
        auto = ("int8", "ours, the default (auto)")
        chosen = (read_metadata(files[auto][0]) or {})["int8"]["graph"]
        files = {(key[0], f"ours, the default (auto: {chosen})") if key == auto else key: v for key, v in files.items()}
        runners = {key: TFLiteRunner(data) for key, (data, _) in files.items()}
        # sgemm is timed in every round too: this machine's speed drifts by up to 2x.
        times: dict = {key: [] for key in files}
        peaks = []
        for _ in range(rounds):
            peaks.append(sgemm_gflops(repeats=5))
            for key, runner in runners.items():
                times[key].append(median_seconds(lambda: runner(x), repeats))
        peer = {mode: float(np.median(times[mode, "litert-torch" if mode == "float32" else "litert-torch (PT2E)"]))
                for mode in ("float32", "int8")}
        for (mode, path_name), (data, convert_s) in files.items():
            latency = float(np.median(times[mode, path_name]))
            fraction = np.median([2 * macs / t / 1e9 / p for t, p in zip(times[mode, path_name], peaks, strict=True)])
            row = {
                "variant": arch, "mode": mode, "path": path_name,
                "convert_s": round(convert_s, 1), "size_mb": round(len(data) / 2**20, 1),
                "latency_ms_b1": round(latency * 1e3, 2),
                "over_litert_torch": round(latency / peer[mode], 3),
                "gflops": round(2 * macs / latency / 1e9, 1),
                "sgemm_gflops": round(float(np.median(peaks)), 1),
                "of_sgemm": round(float(fraction), 2),
                "ops": _ops(data),
            }
            rows.append(row)
            print(row, flush=True)
    return rows


def digits_accuracy(calibration_size: int = 256) -> list[dict[str, Any]]:
    """int8 accuracy of both paths on timm's A0 trained on scikit-learn's digits (32 px)."""
    import timm
    import torch

    from benchmarks.digits import digits, train_timm_a0
    from keras_repvgg import reparameterize
    from keras_repvgg.tflite import TFLiteRunner, export_tflite

    xtr, xte, ytr, yte = digits()
    timm_model = train_timm_a0(xtr, ytr)
    fused = timm.utils.reparameterize_model(copy.deepcopy(timm_model)).eval()
    train_form = convert_timm(timm_model, form="train", input_size=32)
    reference = reparameterize(train_form).predict(xte, verbose=0)
    with torch.no_grad():
        timm_logits = fused(torch.from_numpy(xte.transpose(0, 3, 1, 2).copy())).numpy()
    calibration = xtr[:calibration_size]
    rows = [{"path": "float (Keras; timm agrees)", "accuracy": round(float((reference.argmax(-1) == yte).mean()), 4),
             "top1_agreement": round(float((timm_logits.argmax(-1) == reference.argmax(-1)).mean()), 4),
             "rel_l2": f"{np.linalg.norm(timm_logits - reference) / np.linalg.norm(reference):.2g}"}]
    for name, data in (
        ("ours int8 (the default: graph chosen on 64 held-out training images)",
         export_tflite(train_form, "int8", calibration=calibration, held_out=xtr[calibration_size:calibration_size + 64],
                       input=PEER_INPUT, output=PEER_OUTPUT)),
        ("litert-torch PT2E int8 (per-channel)", litert_torch_tflite(fused, calibration)),
    ):
        logits = TFLiteRunner(data)(xte)
        rows.append({
            "path": name,
            "accuracy": round(float((logits.argmax(-1) == yte).mean()), 4),
            "top1_agreement": round(float((logits.argmax(-1) == reference.argmax(-1)).mean()), 4),
            "rel_l2": f"{np.linalg.norm(logits - reference) / np.linalg.norm(reference):.2g}",
        })
        print(rows[-1], flush=True)
    return rows
