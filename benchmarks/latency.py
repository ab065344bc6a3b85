"""Inference latency: our fused Keras model (graph mode) against timm in PyTorch, same weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import convert_timm, median_seconds, timm_models


def run(variants: list[str], batches=(1, 8), size: int = 224, repeats: int = 20) -> list[dict[str, Any]]:
    import tensorflow as tf
    import torch

    rows = []
    for arch in variants:
        unfused, fused = timm_models(arch)
        model = convert_timm(fused, input_size=size)
        graph = tf.function(lambda x: model(x, training=False))
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)
            xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            tx = tf.constant(x)

            def run_torch(m):
                with torch.inference_mode():
                    m(xt)

            keras_s = median_seconds(lambda: graph(tx).numpy(), repeats)
            unfused_s = median_seconds(lambda: run_torch(unfused), repeats)
            fused_s = median_seconds(lambda: run_torch(fused), repeats)
            rows.append({
                "variant": arch,
                "batch": batch,
                "keras_ms": round(keras_s * 1e3, 2),
                "timm_unfused_ms": round(unfused_s * 1e3, 2),
                "timm_reparam_ms": round(fused_s * 1e3, 2),
                "keras_over_timm_reparam": round(keras_s / fused_s, 3),
            })
            print(rows[-1], flush=True)
    return rows
