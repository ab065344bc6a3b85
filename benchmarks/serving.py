"""Grouped convolution for TF Serving: the portable lowering (one conv per group) against
Keras' native grouped Conv2D (XLA-compiled on the CPU), and the exported SavedModel."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import median_seconds


def run(variants: list[str], batches=(1, 8), size: int = 224, repeats: int = 20) -> list[dict[str, Any]]:
    import tensorflow as tf

    from keras_repvgg import create_model, preprocess_input
    from keras_repvgg.exports.serving import export_saved_model, portable_model

    rows = []
    for arch in variants:
        model = create_model(arch, input_shape=(size, size, 3), classifier_activation=None)
        portable = portable_model(model)
        native_fn = tf.function(lambda x: model(x, training=False))
        portable_fn = tf.function(lambda x: portable(x, training=False))
        with tempfile.TemporaryDirectory() as tmp:
            served = tf.saved_model.load(str(export_saved_model(model, Path(tmp))))
        serve = served.signatures["serving_default"]
        for batch in batches:
            x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
            normalized = tf.constant(preprocess_input(x.numpy(), arch))
            diff = float(np.abs(native_fn(normalized).numpy() - portable_fn(normalized).numpy()).max())
            native_s = median_seconds(lambda: native_fn(normalized).numpy(), repeats)
            portable_s = median_seconds(lambda: portable_fn(normalized).numpy(), repeats)
            saved_s = median_seconds(lambda: serve(images=x)["logits"].numpy(), repeats)
            rows.append({
                "variant": arch,
                "batch": batch,
                "native_xla_ms": round(native_s * 1e3, 2),
                "portable_ms": round(portable_s * 1e3, 2),
                "savedmodel_ms": round(saved_s * 1e3, 2),
                "portable_over_native": round(portable_s / native_s, 3),
                "max_abs_diff": f"{diff:.1e}",
            })
            print(rows[-1], flush=True)
    return rows
