"""Grouped convolutions on Keras' TensorFlow backend: the formulations of the same deploy
model against timm's reparameterized model, at batch 1 and 8, in one interleaved run.

- `ours`: the model as built (`GroupedConv2D`: TensorFlow's own grouped conv kernel);
- `keras_xla`: Keras' Conv2D, which compiles each grouped convolution with XLA;
- `split`: one plain convolution per group, concatenated (the SavedModel's portable graph).
Models without groups (A0, B0) are the same graph under every name: their spread is noise.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any, Callable

import numpy as np

from benchmarks.common import convert_timm, timm_models


def keras_conv2d_copy(model):
    """A copy of the deploy model with Keras' own Conv2D in place of ours."""
    from keras_repvgg.models.backend import keras
    from keras_repvgg.models.model import clone_with_weights
    from keras_repvgg.models.saved_layers import GroupedConv2D

    def clone(layer):
        cls = keras.layers.Conv2D if isinstance(layer, GroupedConv2D) else layer.__class__
        return cls.from_config(layer.get_config())

    return clone_with_weights(model, clone)


def run(variants: list[str], batches=(1, 8), size: int = 224, repeats: int = 15, rest: float = 0.0) -> list[dict[str, Any]]:
    """Medians of back-to-back calls, in rounds that take the models in a random order; the
    first call of each model in a round is not timed, since it follows another model's
    (torch's OpenMP threads spin on for a while after a call, and slowed whichever model
    came next). `rest` seconds of sleep before each round's first call: a model called now
    and then (with 0.05 s, A0 at batch 1 took 25 ms, against 15-19 ms back to back)."""
    import tensorflow as tf
    import torch

    from keras_repvgg.exports.serving import portable_model

    rows = []
    for arch in variants:
        _, fused = timm_models(arch)
        model = convert_timm(fused, input_size=size)
        graphs = {name: tf.function(lambda x, m=m: m(x, training=False))
                  for name, m in (("ours", model), ("keras_xla", keras_conv2d_copy(model)), ("split", portable_model(model)))}
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)
            tx, xt = tf.constant(x), torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            with torch.inference_mode():
                reference = fused(xt).numpy()

            def timm_run():
                with torch.inference_mode():
                    fused(xt)

            runs: dict[str, Callable[[], Any]] = {"timm": timm_run}
            runs.update({name: functools.partial(lambda g: g(tx).numpy(), g) for name, g in graphs.items()})
            worst = max(float(np.abs(g(tx).numpy() - reference).max()) for g in graphs.values())
            for run_ in runs.values():  # warm-up: traced, kernels chosen
                run_()
            seconds: dict[str, list[float]] = {name: [] for name in runs}
            rng = np.random.default_rng(0)
            for _ in range(repeats):  # rounds in a random order; in each, one call untimed, then three
                for name in rng.permutation(list(runs)):
                    time.sleep(rest)
                    runs[name]()  # after another model's call (torch's threads spin on a while)
                    for _ in range(3):
                        start = time.perf_counter()
                        runs[name]()
                        seconds[name].append(time.perf_counter() - start)
            ms = {name: statistics.median(s) * 1e3 for name, s in seconds.items()}
            rows.append({
                "variant": arch,
                "batch": batch,
                "timm_reparam_ms": round(ms["timm"], 2),
                "ours_ms": round(ms["ours"], 2),
                "keras_xla_ms": round(ms["keras_xla"], 2),
                "split_ms": round(ms["split"], 2),
                "ours_over_timm": round(ms["ours"] / ms["timm"], 3),
                "keras_xla_over_timm": round(ms["keras_xla"] / ms["timm"], 3),
                "split_over_timm": round(ms["split"] / ms["timm"], 3),
                "max_abs_diff_vs_timm": float(f"{worst:.1e}"),
            })
            print(rows[-1], flush=True)
    return rows
