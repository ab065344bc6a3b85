"""The int8 search's wall time with its candidates converted in its own process
(`int8_workers=1`) against the default (the first converted here, the rest in worker
processes where that pays), on the same seeded random weights, interleaved; and whether the
two files are identical.

    python -m benchmarks --sections int8_workers [--workers-variants repvgg_b1g4] [--workers-repeats 1]
    python -m benchmarks.int8_workers ARCH SIZE WORKERS OUT   # one export in a fresh process (WORKERS 0: the default)
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import run_child

IMAGES = 26  # 21 calibrated on, 5 held out: what docs/int8.md's profile used


def run(variants: list[str], size: int = 224, repeats: int = 1) -> list[dict[str, Any]]:
    from keras_repvgg.core.machine import usable_cores

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in variants:
            seconds: dict[int, list[float]] = {1: [], 0: []}
            digests: dict[int, set[str]] = {1: set(), 0: set()}
            for round_ in range(repeats):
                for workers in (1, 0):
                    out = Path(tmp) / f"{arch}_{workers}_{round_}.tflite"
                    result = run_child("benchmarks.int8_workers", arch, str(size), str(workers), str(out))
                    seconds[workers].append(result["seconds"])
                    digests[workers].add(result["sha256"])
            here, default = statistics.median(seconds[1]), statistics.median(seconds[0])
            rows.append({
                "model": f"{arch} {size} px, {IMAGES} images", "cores": usable_cores(), "runs": repeats,
                "in_one_process_s": round(here, 1), "default_s": round(default, 1),
                "default_over_one_process": round(default / here, 3),
                "same_file": len(digests[1] | digests[0]) == 1,
            })
            print(rows[-1], flush=True)
    return rows


def main(arch: str, size: str, workers: str, out: str) -> None:
    import json

    import keras
    import numpy as np

    from keras_repvgg import create_model
    from keras_repvgg.tflite import export_tflite

    keras.utils.set_random_seed(0)
    side = int(size)
    model = create_model(arch, input_shape=(side, side, 3), form="train", classifier_activation=None)
    x = np.random.default_rng(0).normal(size=(IMAGES, side, side, 3)).astype(np.float32)
    start = time.perf_counter()
    data = export_tflite(model, "int8", calibration=x, input="normalized", output="logits",
                         int8_workers=int(workers) or None)
    seconds = time.perf_counter() - start
    Path(out).write_bytes(data)
    print(json.dumps({"seconds": seconds, "sha256": hashlib.sha256(data).hexdigest()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
