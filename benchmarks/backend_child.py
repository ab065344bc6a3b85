"""One Keras backend's predict latency (run by benchmarks.backends with KERAS_BACKEND set).

    python -m benchmarks.backend_child THREADS REPEATS BATCHES CHECKPOINT...

Prints one JSON object: {"backend", "keras", "ms": {"<checkpoint stem>/<batch>": median ms}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import median_seconds


def _threads(backend: str, n: int) -> None:
    # Each backend's own intra-op setting, as benchmarks/__main__.py sets TensorFlow's and torch's.
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif backend == "torch":
        import torch

        torch.set_num_threads(n)


def main() -> None:
    threads, repeats, batches, checkpoints = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    # JAX's CPU client uses every core (two here), as the others are told to.
    from keras_repvgg.converters import convert
    from keras_repvgg.models.backend import BACKEND, KERAS_VERSION

    _threads(BACKEND, threads)
    ms = {}
    for checkpoint in checkpoints:
        model = convert(checkpoint, input_size=224)
        for batch in map(int, batches.split(",")):
            x = np.random.default_rng(0).standard_normal((batch, 224, 224, 3)).astype(np.float32)
            # Keras' own predict path for one batch: jit-compiled on JAX, a tf.function on
            # TensorFlow, eager on torch (Keras' default there).
            seconds = median_seconds(lambda: model.predict_on_batch(x), repeats)
            ms[f"{Path(checkpoint).stem}/{batch}"] = round(seconds * 1e3, 2)
    print(json.dumps({"backend": BACKEND, "keras": KERAS_VERSION, "ms": ms}))


if __name__ == "__main__":
    main()
