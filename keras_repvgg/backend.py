"""Which Keras we build with: Keras 3, or tf-keras (Keras 2) when TensorFlow is told so.

`TF_USE_LEGACY_KERAS=1` is the switch TensorFlow itself reads to make
`tf.keras` mean tf-keras; we follow it, so that our models are always
instances of whatever `tf.keras.Model` is in the user's process.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # Keras 3 must run on TensorFlow here

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")

if LEGACY_KERAS:
    import tf_keras as keras  # noqa: F401
else:
    import keras  # noqa: F401

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            f"keras_repvgg builds TensorFlow models, but Keras 3 runs on the "
            f"{keras.backend.backend()!r} backend; set KERAS_BACKEND=tensorflow"
        )

KERAS_VERSION = keras.__version__
