"""The GPU-delegate check: compile on LiteRT's GPU accelerator and compare with its CPU run.

LiteRT's GPU accelerator crashes when TensorFlow is loaded in the same process,
so `check_gpu` runs the compile in a child process that imports only
ai_edge_litert and numpy (`python -m keras_repvgg.tflite.gpu FILE`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np


def _outputs(model, x: np.ndarray) -> np.ndarray:
    """One compiled model's output for each sample of `x`, run one at a time."""
    (_, info), = model.get_output_tensor_details("serving_default").items()
    rows = []
    for sample in x:
        inputs, results = model.create_input_buffers(0), model.create_output_buffers(0)
        inputs[0].write(np.ascontiguousarray(sample[None]))
        model.run_by_index(0, inputs, results)
        rows.append(results[0].read(int(np.prod(info["shape"])), np.dtype(info["dtype"])).reshape(info["shape"]))
    return np.concatenate(rows)


def _run_inputs(path: str, inputs: str, outputs: str) -> dict[str, Any]:
    """In the child: the GPU accelerator's outputs for the saved inputs, saved."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    with open(path, "rb") as f:
        gpu = CompiledModel.from_buffer(f.read(), hardware_accel=HardwareAccelerator.GPU)
    details = gpu.get_input_tensor_details("serving_default")["image"]
    np.save(outputs, _outputs(gpu, np.load(inputs).astype(details["dtype"])))
    return {"path": path, "fully_accelerated": bool(gpu.is_fully_accelerated())}


def _run(path: str, seed: int = 0) -> dict[str, Any]:
    """In the child: compile for GPU and CPU, run both on one input, compare."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    with open(path, "rb") as f:
        data = f.read()
    report: dict[str, Any] = {"path": path}
    try:
        gpu = CompiledModel.from_buffer(data, hardware_accel=HardwareAccelerator.GPU)
    except Exception as err:  # no Vulkan/OpenCL device, or the model is refused outright
        report.update(compiled=False, fully_accelerated=False, error=str(err).splitlines()[0])
        return report
    cpu = CompiledModel.from_buffer(data, hardware_accel=HardwareAccelerator.CPU)
    details = cpu.get_input_tensor_details("serving_default")["image"]
    dtype = np.dtype(details["dtype"])
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        x = rng.standard_normal(details["shape"]).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, details["shape"], endpoint=True).astype(dtype)
    ref, got = (_outputs(model, x).astype(np.float64) for model in (cpu, gpu))
    scale = max(float(np.abs(ref).max()), 1e-30)
    report.update(
        compiled=True,
        fully_accelerated=bool(gpu.is_fully_accelerated()),
        max_abs_diff=float(np.abs(got - ref).max()),
        max_rel_diff=float(np.abs(got - ref).max() / scale),
    )
    return report


def check_gpu(path: "str | os.PathLike[str]", timeout: float = 600) -> dict[str, Any]:
    """Compile a .tflite on LiteRT's GPU accelerator; report acceleration and accuracy.

    Returns: compiled, fully_accelerated, max_abs_diff and max_rel_diff against the
    CPU interpreter on one random input, and static_problems: the ops that the GPU
    delegate's op table refuses (the likely fallbacks when not fully accelerated).
    """
    from .ops import gpu_static_problems

    path = os.fspath(path)
    env = dict(os.environ)
    if not env.get("XDG_RUNTIME_DIR"):
        env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="litert-xdg-")  # mode 700
    proc = subprocess.run(
        [sys.executable, "-m", "keras_repvgg.tflite.gpu", path],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        report = {"path": path, "compiled": False, "fully_accelerated": False,
                  "error": f"GPU check process failed (exit {proc.returncode}): {tail[0]}"}
    else:
        report = json.loads(lines[-1])
    with open(path, "rb") as f:
        report["static_problems"] = gpu_static_problems(f.read())
    return report


def run_on_gpu(path: "str | os.PathLike[str]", x: np.ndarray, timeout: float = 600) -> np.ndarray:
    """The .tflite file's outputs for the batch `x` (run one sample at a time, cast to the
    file's input type) on LiteRT's GPU accelerator, computed in a child process; raises
    `RuntimeError` where the accelerator cannot compile the file or does not run all of it."""
    path = os.fspath(path)
    env = dict(os.environ)
    if not env.get("XDG_RUNTIME_DIR"):
        env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="litert-xdg-")  # mode 700
    with tempfile.TemporaryDirectory(prefix="keras-repvgg-gpu-") as work:
        inputs, outputs = os.path.join(work, "inputs.npy"), os.path.join(work, "outputs.npy")
        np.save(inputs, np.asarray(x))
        proc = subprocess.run([sys.executable, "-m", "keras_repvgg.tflite.gpu", path, inputs, outputs],
                              capture_output=True, text=True, env=env, timeout=timeout)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{path}: the GPU accelerator did not run it (exit {proc.returncode}): {tail[0]}")
        if not json.loads(lines[-1])["fully_accelerated"]:
            raise RuntimeError(f"{path}: not fully accelerated on the GPU")
        return np.load(outputs)


if __name__ == "__main__":
    report = _run_inputs(*sys.argv[1:4]) if len(sys.argv) == 4 else _run(sys.argv[1])
    print(json.dumps(report), flush=True)
