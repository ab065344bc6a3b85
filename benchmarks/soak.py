"""Soak: `keras-repvgg train` run for many epochs on several seeds, each in a process of its
own, to show that training neither crashes nor hangs (TensorFlow 2.21 crashed with heap
corruption in `fit` on AVX-512 machines: see docs/training.md). Not for CI: it takes hours.

    python -m benchmarks.soak [--epochs 30] [--seeds 3] [--sizes 32 224] [--timeout 3600]

Each run trains A0 from a random start on scikit-learn's digits written as PNG files (1,700 at
32 px; 300 at 224 px). The report records every run's exit status (a signal
means a crash), its time, the last epoch reached, and the CPU with its features and the
oneDNN settings of the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Union

from benchmarks.digits import write_digit_folders


def one_run(data: Path, size: int, epochs: int, seed: int, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "keras_repvgg.front.cli", "train", str(data), "-o", f"{out}/m.keras",
                   "--arch", "repvgg_a0", "--input-size", str(size), "--epochs", str(epochs), "--seed", str(seed),
                   "--no-flip"]
        began = time.monotonic()
        status: Union[int, str]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            status, output = run.returncode, run.stdout + run.stderr
        except subprocess.TimeoutExpired as err:
            status = "timeout"
            output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
    reached = [line.split()[1] for line in output.splitlines() if line.startswith("Epoch ")]
    signal_name = signal.Signals(-status).name if isinstance(status, int) and status < 0 else None
    return {
        "size": size, "seed": seed, "epochs": epochs, "status": status,
        "signal": signal_name,
        "heap_corruption": "corrupted" in output or "double free" in output,
        "last_epoch": reached[-1] if reached else None, "seconds": round(time.monotonic() - began, 1),
        "tail": output.strip().splitlines()[-3:] if status != 0 else [],
    }


def run(epochs: int = 30, seeds: int = 3, sizes: tuple[int, ...] = (32, 224), timeout: float = 3600) -> dict[str, Any]:
    from benchmarks.common import machine

    results = []
    with tempfile.TemporaryDirectory() as root:
        for size in sizes:
            data = Path(root) / f"digits-{size}"
            write_digit_folders(data, classes=range(10), per_class=170 if size <= 64 else 30, size=size)
            for seed in range(seeds):
                results.append(one_run(data, size, epochs if size <= 64 else max(1, epochs // 6), seed, timeout))
                print(json.dumps(results[-1]), flush=True)
    env = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND") if k in os.environ}
    return {"machine": machine(), "environment": env, "runs": results,
            "crashed": sum(1 for r in results if r["status"] != 0)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--epochs", type=int, default=30, help="at 32 px; at 224 px a sixth of it")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a run may take before it counts as a hang")
    parser.add_argument("-o", "--output", help="write the report as JSON here")
    args = parser.parse_args()
    report = run(args.epochs, args.seeds, tuple(args.sizes), args.timeout)
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
