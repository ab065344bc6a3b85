"""Reparameterization time: our `reparameterize` (Keras training form -> deploy form)
against timm's `reparameterize_model` on the same variant."""

from __future__ import annotations

import copy
import time
from typing import Any


def run(variants: list[str]) -> list[dict[str, Any]]:
    import timm

    import keras_repvgg

    rows = []
    for arch in variants:
        model = keras_repvgg.create_model(arch, form="train")
        start = time.perf_counter()
        keras_repvgg.reparameterize(model)
        ours = time.perf_counter() - start
        del model

        torch_model = timm.create_model(arch).eval()
        start = time.perf_counter()
        timm.utils.reparameterize_model(copy.deepcopy(torch_model))
        theirs = time.perf_counter() - start  # includes timm's deepcopy, as its inplace=False does
        rows.append({
            "variant": arch,
            "keras_reparameterize_s": round(ours, 2),
            "timm_reparameterize_model_s": round(theirs, 2),
        })
        print(rows[-1], flush=True)
    return rows
