"""Helpers shared by the benchmark sections: timing, child processes, machine facts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable


def median_seconds(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_child(module: str, *args: str, env: "dict[str, str] | None" = None) -> dict[str, Any]:
    """Run `python -m module args` (with `env` added to ours) and return the JSON object it prints last."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def reset_peak_rss() -> None:
    """Start a new peak: Linux resets VmHWM when 5 is written to clear_refs."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    """VmHWM: the highest resident set since start or the last reset_peak_rss()."""
    with open("/proc/self/status") as f:
        line = next(row for row in f if row.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# The CPU features that decide which int8 and float kernels XNNPACK, oneDNN and BLAS run:
# x86 vector widths, integer dot products (VNNI) and matrix tiles (AMX); ARM's dot products
# (asimddp) and int8 matrix multiplies (i8mm).
INT8_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                 "asimddp", "i8mm", "sve")


def cpu_features() -> list[str]:
    """The INT8_FEATURES this CPU has, from /proc/cpuinfo's flags (x86) or Features (ARM)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(row.split(":", 1)[1].split() for row in f if row.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        return []
    return [name for name in INT8_FEATURES if name in flags]


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(row.split(":", 1)[1].strip() for row in f if row.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_features": cpu_features(), "cores": os.cpu_count(), "python": platform.python_version()}


def timm_models(arch: str, seed: int = 0):
    """timm's model with seeded random weights, eval mode: (training form, reparameterized)."""
    import copy

    import timm
    import torch

    torch.manual_seed(seed)
    unfused = timm.create_model(arch).eval()
    return unfused, timm.utils.reparameterize_model(copy.deepcopy(unfused)).eval()


def convert_timm(torch_model, **options):
    """A timm model through a safetensors file and our converter, as a user's checkpoint goes."""
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    from keras_repvgg.converters import convert

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in torch_model.state_dict().items()}, str(path))
        return convert(path, **options)
