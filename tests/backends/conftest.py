"""The passes on Keras' other backends: `KERAS_BACKEND=jax` or `torch python -m pytest tests/backends`.

The backend is fixed per process, so these tests run only in a process on jax or torch;
the TensorFlow passes (Keras 3 and tf-keras) skip this folder without importing it.
"""

from __future__ import annotations

from keras_repvgg.models.backend import BACKEND

OTHER_BACKENDS = ("jax", "torch")
collect_ignore_glob = [] if BACKEND in OTHER_BACKENDS else ["test_*.py"]
