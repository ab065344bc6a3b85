"""Run the benchmarks and write benchmarks/results/latest.{json,md}.

    python -m benchmarks [--variants repvgg_a0 repvgg_b0 repvgg_b1g4] [--sections conversion latency]
    python -m benchmarks --sections backends    # Keras' predict on TensorFlow, JAX and torch vs timm
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("conversion", "reparam", "latency", "tflite", "serving", "peers", "int8_accuracy", "int8_seeds",
            "per_block_latency", "tflite_routes", "transfer", "batch_predict", "backends", "training_speed",
            "training_accuracy", "grouped",
            "onnx", "int8_workers")


def _threads(n: int) -> None:
    # torch and timm first: importing them after TensorFlow crashes in triton's import.
    import timm  # noqa: F401, I001
    import torch
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(n)


def _markdown(table: list[dict]) -> str:
    if not table:
        return ""
    keys = list(table[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in table]
    return "\n".join(lines)


def main() -> None:
    from benchmarks import (
        backends,
        batch_predict,
        conversion,
        grouped,
        int8_workers,
        latency,
        onnx_runtime,
        peers,
        reparam,
        serving,
        tflite_export,
        trained,
        training,
    )
    from benchmarks.common import machine

    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--variants", nargs="+", default=["repvgg_a0", "repvgg_b0", "repvgg_b1g4"])
    parser.add_argument("--conversion-variants", nargs="+", default=["repvgg_a0", "repvgg_b1g4", "repvgg_b3"])
    parser.add_argument("--tflite-variants", nargs="+", default=["repvgg_a0", "repvgg_b1g4"])
    parser.add_argument("--routes-variants", nargs="+", default=["repvgg_a0", "repvgg_b0", "repvgg_b1g4"])
    parser.add_argument("--serving-variants", nargs="+", default=["repvgg_a0", "repvgg_b1g4"])
    parser.add_argument("--backend-variants", nargs="+", default=["repvgg_a0", "repvgg_b1g4"])
    parser.add_argument("--grouped-variants", nargs="+", default=["repvgg_a0", "repvgg_b0", "repvgg_b1g4", "repvgg_b2g4"])
    parser.add_argument("--onnx-variants", nargs="+", default=["repvgg_a0", "repvgg_b1g4"])
    parser.add_argument("--workers-variants", nargs="+", default=["repvgg_b1g4"])
    parser.add_argument("--workers-repeats", type=int, default=1,
                        help="int8_workers: interleaved pairs of searches (about 16 minutes a pair for B1g4)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--predict-images", type=int, nargs="+", default=[1000, 10_000],
                        help="batch_predict: numbers of images per model kind (the first is repeated)")
    parser.add_argument("--predict-repeats", type=int, default=3,
                        help="batch_predict: interleaved runs of predict and of the model alone")
    parser.add_argument("--savedmodel-images", type=int, nargs="+",
                        help="batch_predict: the SavedModel's numbers, if other than --predict-images")
    parser.add_argument("--seeds", type=int, default=5, help="trained networks per figure (int8_seeds, transfer)")
    args = parser.parse_args()
    _threads(args.threads)

    # Sections not run this time keep their last results, each with its own date.
    latest = RESULTS / "latest.json"
    report = json.loads(latest.read_text()) if latest.is_file() else {}
    report.update({"machine": machine(), "threads": args.threads})
    today = datetime.date.today().isoformat()
    runners = {
        "conversion": lambda: conversion.run(args.conversion_variants),
        "reparam": lambda: reparam.run(args.conversion_variants),
        "latency": lambda: latency.run(args.variants, repeats=args.repeats),
        "tflite": lambda: tflite_export.run(args.tflite_variants, repeats=args.repeats),
        "serving": lambda: serving.run(args.serving_variants, repeats=args.repeats),
        "tflite_routes": lambda: tflite_export.routes(args.routes_variants),
        "peers": lambda: peers.run(args.tflite_variants, repeats=args.repeats),
        "int8_accuracy": peers.digits_accuracy,
        "int8_seeds": lambda: trained.int8_seeds(args.seeds, tuple(args.tflite_variants)),
        "per_block_latency": lambda: trained.per_block_latency(tuple(args.tflite_variants), args.seeds, repeats=args.repeats),
        "transfer": lambda: trained.transfer(args.seeds),
        "batch_predict": lambda: batch_predict.run({
            "tflite": tuple(args.predict_images),
            "savedmodel": tuple(args.savedmodel_images or args.predict_images),
        }, repeats=args.predict_repeats),
        "backends": lambda: backends.run(args.backend_variants, threads=args.threads, repeats=args.repeats // 2),
        "training_speed": lambda: training.speed(rounds=2),
        # The defaults, and each choice they made against its alternative.
        "training_accuracy": lambda: [training.accuracy(args.seeds), training.accuracy(args.seeds, warmup_epochs=0)],
        "grouped": lambda: grouped.run(args.grouped_variants, repeats=args.repeats // 2),
        "int8_workers": lambda: int8_workers.run(args.workers_variants, repeats=args.workers_repeats),
        "onnx": lambda: onnx_runtime.run(args.onnx_variants, threads=args.threads, repeats=args.repeats),
    }
    for section in args.sections:
        # Each section keeps the machine it ran on: sections run at other times keep theirs.
        report[section] = {"date": today, "cpu": report["machine"]["cpu"],
                           "cpu_features": report["machine"]["cpu_features"], "rows": runners[section]()}

    RESULTS.mkdir(exist_ok=True)
    latest.write_text(json.dumps(report, indent=2) + "\n")
    print(write_markdown(report))


def write_markdown(report: dict) -> str:
    """latest.md from latest.json's report (also: python -c "...write_markdown(...)" after a merge)."""
    m = report["machine"]
    md = [f"Machine of the last run: {m['cpu']} ({' '.join(m.get('cpu_features', []))}), {m['cores']} cores; "
          f"{report['threads']} threads."]
    for section in SECTIONS:
        if isinstance(report.get(section), dict):
            where = report[section].get("cpu", "Intel(R) Xeon(R) Processor")  # before cpu was recorded
            if "cpu_features" in report[section]:
                where += f" ({' '.join(report[section]['cpu_features']) or 'no AVX2'})"
            md += ["", f"### {section} ({report[section]['date']}, {where})", "", _markdown(report[section]["rows"])]
    text = "\n".join(md) + "\n"
    (RESULTS / "latest.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
