"""TFLite: export time and peak memory, file size, CPU latency (LiteRT, XNNPACK, 2 threads)
and error per mode. int8 is exported from the training form, as the command line does."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import (
    convert_timm,
    current_rss_bytes,
    median_seconds,
    peak_rss_bytes,
    reset_peak_rss,
    timm_models,
)


def run(variants: list[str], size: int = 224, repeats: int = 20) -> list[dict[str, Any]]:
    from keras_repvgg.tflite import TFLiteRunner, evaluate_tflite, export_tflite

    rows = []
    rng = np.random.default_rng(0)
    for arch in variants:
        timm_model, _ = timm_models(arch)
        model = convert_timm(timm_model, input_size=size)
        train_form = convert_timm(timm_model, form="train", input_size=size)
        calibration = rng.standard_normal((32, size, size, 3)).astype(np.float32)
        held_out = rng.standard_normal((8, size, size, 3)).astype(np.float32)
        float32_mb = None
        for mode in ("float32", "float16", "dynamic-int8", "int8"):
            reset_peak_rss()
            before = current_rss_bytes()
            start = time.perf_counter()
            source = train_form if mode == "int8" else model
            data = export_tflite(source, mode, calibration=calibration if mode == "int8" else None)
            export_s = time.perf_counter() - start
            peak_mb = (peak_rss_bytes() - before) / 2**20
            runner = TFLiteRunner(data, num_threads=2)
            x = held_out[:1]
            latency = median_seconds(lambda: runner(x), repeats)
            report = evaluate_tflite(data, model, held_out)
            mb = len(data) / 2**20
            float32_mb = float32_mb or mb
            rows.append({
                "variant": arch, "mode": mode, "export_s": round(export_s, 1), "export_peak_extra_mb": round(peak_mb),
                "size_mb": round(mb, 1), "size_vs_float32": round(mb / float32_mb, 3),
                "latency_ms_b1": round(latency * 1e3, 2), "rel_l2_vs_keras": f"{report['rel_l2']:.2g}",
            })
            print(rows[-1], flush=True)
    return rows


def routes(variants: list[str], size: int = 224, rounds: int = 3) -> list[dict[str, Any]]:
    """The two conversion routes `conversion._converter` chooses between, on the same models in
    interleaved rounds (medians): `from_keras_model`'s SavedModel round trip against the
    graph traced and frozen in memory; and whether their files compute the same. int8: the
    identity-apart graph from the training form, one conversion."""
    import statistics

    from keras_repvgg.tflite import TFLiteRunner, conversion, export_tflite

    chosen = conversion.FROZEN_MAX_PARAMETERS
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((24, size, size, 3)).astype(np.float32)
    rows = []
    try:
        for arch in variants:
            timm_model, _ = timm_models(arch)
            deploy = convert_timm(timm_model, input_size=size)
            sources = {"float32": deploy, "float16": deploy, "int8": convert_timm(timm_model, form="train", input_size=size)}
            seconds: dict[tuple[str, str], list[float]] = {}
            outputs: dict[tuple[str, str], np.ndarray] = {}
            for _ in range(rounds):
                for route, limit in (("savedmodel", 0), ("frozen", 10**12)):
                    conversion.FROZEN_MAX_PARAMETERS = limit
                    for mode, model in sources.items():
                        start = time.perf_counter()
                        # One int8 graph, named: the automatic choice would convert five.
                        if mode == "int8":
                            data = export_tflite(model, mode, calibration, int8_graph="identity-apart-equalized")
                        else:
                            data = export_tflite(model, mode)
                        seconds.setdefault((mode, route), []).append(time.perf_counter() - start)
                        outputs[mode, route] = TFLiteRunner(data)(calibration[:2])
            for mode in sources:
                saved, frozen = (statistics.median(seconds[mode, r]) for r in ("savedmodel", "frozen"))
                rows.append({
                    "variant": arch, "parameters": deploy.count_params(), "mode": mode,
                    "savedmodel_s": round(saved, 1), "frozen_s": round(frozen, 1),
                    "frozen_over_savedmodel": round(frozen / saved, 2),
                    "same_outputs": bool(np.array_equal(outputs[mode, "savedmodel"], outputs[mode, "frozen"])),
                    "chosen": "frozen" if deploy.count_params() <= chosen else "savedmodel",
                })
                print(rows[-1], flush=True)
    finally:
        conversion.FROZEN_MAX_PARAMETERS = chosen
    return rows
