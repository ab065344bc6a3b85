"""ONNX Runtime on our .onnx file (Keras' export on the running backend, see
`keras_repvgg.exports.onnx`) against our float32 .tflite on LiteRT's CPU interpreter (XNNPACK)
and timm's reparameterized model in PyTorch: batch 1, in one interleaved run.

Each runtime gets the same number of threads. The rounds take the three in a random order,
and the first call of each in a round is not timed (torch's OpenMP threads, and ONNX Runtime's,
spin on for a while after a call and slow whichever model comes next).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

from benchmarks.common import convert_timm, timm_models


def run(variants: list[str], size: int = 224, threads: int = 2, repeats: int = 30) -> list[dict[str, Any]]:
    import onnxruntime as ort
    import torch

    from keras_repvgg.exports.onnx import INPUT_NAME, export_onnx
    from keras_repvgg.models.backend import BACKEND
    from keras_repvgg.tflite import TFLiteRunner, export_tflite

    rows = []
    for arch in variants:
        _, fused = timm_models(arch)
        model = convert_timm(fused, input_size=size)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(export_onnx(model), options, providers=["CPUExecutionProvider"])
        tflite = TFLiteRunner(export_tflite(model, "float32", input="normalized", output="logits"), num_threads=threads)
        del model
        x = np.random.default_rng(0).standard_normal((1, size, size, 3)).astype(np.float32)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

        def timm_run():
            with torch.inference_mode():
                return fused(xt).numpy()

        runs: dict[str, Callable[[], Any]] = {
            "timm": timm_run,
            "onnx": lambda: session.run(None, {INPUT_NAME: x})[0],
            "tflite": lambda: tflite(x),
        }
        reference = timm_run()
        diffs = {name: float(np.abs(runs[name]() - reference).max()) for name in ("onnx", "tflite")}
        for run_ in runs.values():  # warm-up
            run_()
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        rng = np.random.default_rng(0)
        for _ in range(repeats):
            for name in rng.permutation(list(runs)):
                runs[name]()  # untimed: after another runtime's call
                for _ in range(3):
                    start = time.perf_counter()
                    runs[name]()
                    seconds[name].append(time.perf_counter() - start)
        ms = {name: statistics.median(s) * 1e3 for name, s in seconds.items()}
        rows.append({
            "variant": arch,
            "batch": 1,
            "size": size,
            "exported_on": BACKEND,
            "onnxruntime": ort.__version__,
            "timm_reparam_ms": round(ms["timm"], 2),
            "onnx_ms": round(ms["onnx"], 2),
            "tflite_ms": round(ms["tflite"], 2),
            "onnx_over_timm": round(ms["onnx"] / ms["timm"], 3),
            "onnx_over_tflite": round(ms["onnx"] / ms["tflite"], 3),
            "onnx_max_abs_diff_vs_timm": float(f"{diffs['onnx']:.1e}"),
            "tflite_max_abs_diff_vs_timm": float(f"{diffs['tflite']:.1e}"),
        })
        print(rows[-1], flush=True)
    return rows
