"""Throughput on a CUDA GPU: our Keras model (float32 and mixed float16) against timm.

    python -m benchmarks.gpu [--variants repvgg_a0 repvgg_b1g4] [--batch 128] [--seconds 10]

Images per second at batch 128, 224 px, after warm-up, the median of timed windows. Runs
in a few minutes on one GPU (random weights: speed does not depend on their values).
Writes benchmarks/results/gpu.json and prints a Markdown table. Needs the `test` extra.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _throughput(step, batch: int, seconds: float, windows: int = 5) -> float:
    """Median images/s over `windows` windows of about seconds / windows each."""
    step()
    step()  # warm-up: compilation, autotuning, allocator
    rates = []
    for _ in range(windows):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows:
            step()
            n += 1
        rates.append(n * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def _timm(arch: str, batch: int, size: int, seconds: float) -> dict:
    import timm
    import torch

    model = timm.create_model(arch).cuda().eval()
    fused = timm.utils.reparameterize_model(copy.deepcopy(model)).eval()
    x = torch.randn(batch, 3, size, size, device="cuda")
    out = {}
    for name, m, dtype in (("timm_reparam_fp32", fused, None), ("timm_reparam_amp_fp16", fused, torch.float16)):
        def step(m=m, dtype=dtype):
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                m(x)
            torch.cuda.synchronize()

        out[name] = round(_throughput(step, batch, seconds), 1)
    return out


def _keras(arch: str, batch: int, size: int, seconds: float, mixed: bool) -> float:
    import numpy as np
    import tensorflow as tf

    from keras_repvgg import create_model, keras

    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    model = create_model(arch, input_shape=(size, size, 3), classifier_activation=None)
    x = tf.constant(np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32))
    graph = tf.function(lambda t: model(t, training=False))
    return round(_throughput(lambda: graph(x).numpy(), batch, seconds), 1)


def _child(args: list[str]) -> dict:
    """Each framework in its own process: TensorFlow and torch would share the GPU's memory."""
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--child", *args],
                         capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu")
    parser.add_argument("--variants", nargs="+", default=["repvgg_a0", "repvgg_b1g4"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "ARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    common = (args.batch, args.size, args.seconds)
    if args.child:
        what, arch = args.child
        result = _timm(arch, *common) if what == "timm" else {what: _keras(arch, *common, what == "keras_mixed_fp16")}
        print(json.dumps(result))
        return

    rows = []
    for arch in args.variants:
        extra = ["--batch", str(args.batch), "--size", str(args.size), "--seconds", str(args.seconds)]
        row = {"variant": arch, "batch": args.batch}
        for what in ("keras_fp32", "keras_mixed_fp16", "timm"):
            row.update(_child([what, arch, *extra]))
        row["keras_fp32_over_timm"] = round(row["keras_fp32"] / row["timm_reparam_fp32"], 3)
        row["keras_fp16_over_timm_amp"] = round(row["keras_mixed_fp16"] / row["timm_reparam_amp_fp16"], 3)
        rows.append(row)
        print(row, flush=True)
    RESULTS.mkdir(exist_ok=True)
    try:
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        gpu = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    except OSError:
        gpu = "unknown"
    (RESULTS / "gpu.json").write_text(json.dumps({"gpu": gpu, "rows": rows}, indent=2) + "\n")
    keys = list(rows[0])
    print(f"GPU: {gpu}; images/s at batch {args.batch}, {args.size} px")
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
