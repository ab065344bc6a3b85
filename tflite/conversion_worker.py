"""Converting int8 candidates in worker processes, several at a time.

TFLite's converter calibrates in its own interpreter, one image at a time on one thread,
and holds Python's lock while it does: two conversions in two threads take as long as one
after the other. B1g4's candidates take about 55 s each at 224 px on a 2-core EPYC (its
grouped convolutions run TFLite's reference kernel when calibrating: 1.7 s an image, against
0.25 s with XNNPACK). So the search can hand each finished candidate to a fresh process: its
Keras model as a `.keras` file, its calibration inputs as a `.npy` file, and the serving
options; the process converts it with the same `conversion.convert_serving_model` and writes
the bytes back.
The file is the same byte for byte.

A worker first spends about `WORKER_START_SECONDS` importing TensorFlow and loading the
model, so by default the search converts its first candidate in its own process, times it,
and hands the rest to workers only where that pays (`workers_pay`).

    python -m keras_repvgg.tflite.conversion_worker JOB_FOLDER
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from keras_repvgg.core.errors import ExportError

# A worker's start: importing TensorFlow, loading the candidate, building its serving model.
# B1g4 at 224 px: 81 s in a worker against 55 s converted in the search's process (AMD EPYC,
# 2 cores, 2026-12-02).
WORKER_START_SECONDS = 25.0
# A worker's peak memory, by the model's parameters: B1g4 (36M) peaked at 2.7 GB converting.
WORKER_BASE_BYTES, WORKER_BYTES_PER_PARAMETER = 2**30, 48
MODEL_FILE, CALIBRATION_FILE, OPTIONS_FILE, OUTPUT_FILE = "model.keras", "calibration.npy", "options.json", "out.tflite"


@dataclass(frozen=True)
class ServingOptions:
    """What `conversion.serving_model` and `conversion.convert_serving_model` take besides the model and the data."""

    batch_size: int
    uint8_pixels: bool
    normalize: bool
    softmax: bool
    mode: str
    io_dtype: str


class Workers:
    """The search's conversions. `submit(model)` returns a future of the file's bytes.

    count 1: each converted in this process as it is submitted. Else, with `adaptive`, the
    first is converted here and timed, and the rest go to up to `count` worker processes if
    `workers_pay`; without, all go to workers. A context manager: its files go with it."""

    def __init__(self, count: int, convert_here: Callable[[Any], bytes], options: ServingOptions,
                 calibration: np.ndarray, adaptive: bool = True):
        self.count, self._convert_here, self._options = count, convert_here, options
        self._calibration = calibration
        self.in_workers = count > 1 and not adaptive  # decided after the first one where adaptive
        self._undecided = count > 1 and adaptive
        self._pool: Optional[ThreadPoolExecutor] = None
        self._folder: Optional[tempfile.TemporaryDirectory] = None
        self._jobs = 0

    def submit(self, model) -> "Future[bytes]":
        if not self.in_workers:
            start = time.perf_counter()
            done: Future[bytes] = Future()
            done.set_result(self._convert_here(model))
            if self._undecided:
                self._undecided = False
                self.in_workers = workers_pay(time.perf_counter() - start, self.count)
            return done
        from keras_repvgg.models.io import save_model

        if self._pool is None or self._folder is None:
            self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="int8-worker")
            self._folder = tempfile.TemporaryDirectory(prefix="keras_repvgg_int8_")
        # Written before returning: the caller goes on to build the next candidate.
        self._jobs += 1
        folder = Path(self._folder.name) / str(self._jobs)
        folder.mkdir()
        save_model(model, folder / MODEL_FILE)
        np.save(folder / CALIBRATION_FILE, self._calibration)
        (folder / OPTIONS_FILE).write_text(json.dumps(asdict(self._options)))
        return self._pool.submit(_run, folder)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None and self._folder is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._folder.cleanup()


def _run(folder: Path) -> bytes:
    done = subprocess.run([sys.executable, "-m", __name__, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:  # a bug, not bad input: the worker's own words
        raise RuntimeError(f"an int8 conversion worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return (folder / OUTPUT_FILE).read_bytes()


def workers_pay(conversion_seconds: float, count: int) -> bool:
    """Whether `count` workers convert the rest sooner than this process would: each
    conversion costs a worker its start on top, and `count` of them run at once, so they pay
    when (t + start) / count < t, that is t * (count - 1) > start."""
    return count > 1 and conversion_seconds * (count - 1) > WORKER_START_SECONDS


def worker_count(parameters: int, candidates: int, requested: Optional[int] = None) -> int:
    """How many conversions may run at once: `requested` where given, else one per usable
    core, at most one per candidate, and as many as the available memory holds (a worker
    converting a model of `parameters` takes about WORKER_BASE_BYTES + 48 bytes a parameter)."""
    from keras_repvgg.core.machine import available_memory, usable_cores

    if requested is not None:
        if requested < 1:
            raise ExportError(f"int8 workers must be at least 1, got {requested}")
        return min(requested, candidates)
    count = min(usable_cores(), candidates)
    memory = available_memory()
    if memory is not None:
        count = min(count, memory // (WORKER_BASE_BYTES + WORKER_BYTES_PER_PARAMETER * parameters))
    return max(1, count)


def main(folder: str) -> None:
    from keras_repvgg.models.io import load_model

    from .conversion import convert_serving_model, serving_model

    job = Path(folder)
    options = ServingOptions(**json.loads((job / OPTIONS_FILE).read_text()))
    model = load_model(job / MODEL_FILE)
    serving = serving_model(model, options.batch_size, options.uint8_pixels, options.normalize, options.softmax)
    data = convert_serving_model(serving, options.mode, np.load(job / CALIBRATION_FILE), options.io_dtype)
    (job / OUTPUT_FILE).write_bytes(data)


if __name__ == "__main__":
    main(*sys.argv[1:])
