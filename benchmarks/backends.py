"""Keras' predict latency on each backend (TensorFlow, JAX, torch) against timm reparameterized.

The backend is fixed per process, so each backend runs in a child process
(`benchmarks.backend_child`), the backends alternating round by round, with timm timed
in this process between them; each figure is the median over the rounds' medians.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import median_seconds, run_child, timm_models

BACKENDS = ("tensorflow", "jax", "torch")


def _keras_child(backend: str, threads: int, repeats: int, batches, checkpoints: list[Path]) -> dict[str, Any]:
    return run_child("benchmarks.backend_child", str(threads), str(repeats), ",".join(map(str, batches)),
                     *map(str, checkpoints), env={"KERAS_BACKEND": backend, "TF_USE_LEGACY_KERAS": "0"})


def run(variants: list[str], batches=(1, 8), threads: int = 2, repeats: int = 10, rounds: int = 2) -> list[dict[str, Any]]:
    import torch
    from safetensors.torch import save_file

    samples: dict[tuple[str, str, int], list[float]] = {}
    versions = {}
    with tempfile.TemporaryDirectory() as tmp:
        fused, checkpoints = {}, []
        for arch in variants:
            fused[arch] = timm_models(arch)[1]
            checkpoints.append(Path(tmp) / f"{arch}.safetensors")
            save_file({k: v.contiguous() for k, v in fused[arch].state_dict().items()}, str(checkpoints[-1]))
        for _ in range(rounds):
            for backend in BACKENDS:
                child = _keras_child(backend, threads, repeats, batches, checkpoints)
                versions[backend] = child["keras"]
                for key, ms in child["ms"].items():
                    arch, batch = key.split("/")
                    samples.setdefault((backend, arch, int(batch)), []).append(ms)
                for arch in variants:  # timm between the backends, in this process
                    for batch in batches:
                        x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))

                        def run_timm():
                            with torch.inference_mode():
                                fused[arch](x)

                        ms = median_seconds(run_timm, repeats) * 1e3
                        samples.setdefault(("timm", arch, batch), []).append(ms)
    rows = []
    for arch in variants:
        for batch in batches:
            timm_ms = statistics.median(samples[("timm", arch, batch)])
            row: dict[str, Any] = {"variant": arch, "batch": batch, "timm_reparam_ms": round(timm_ms, 2)}
            for backend in BACKENDS:
                ms = statistics.median(samples[(backend, arch, batch)])
                row[f"{backend}_ms"] = round(ms, 2)
                row[f"{backend}_over_timm"] = round(ms / timm_ms, 2)
            rows.append(row)
            print(row, flush=True)
    return rows
