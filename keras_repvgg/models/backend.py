"""Which Keras we build with: Keras 3 on any of its backends, or tf-keras (Keras 2).

Keras 3 runs on the backend KERAS_BACKEND names (tensorflow, jax or torch); when the
user names none, TensorFlow, as before. `TF_USE_LEGACY_KERAS=1` is the switch
TensorFlow itself reads to make `tf.keras` mean tf-keras; we follow it, so that under
TensorFlow our models are always instances of whatever `tf.keras.Model` is in the
user's process. The model code is plain Keras layers; only the TFLite and SavedModel
exports need TensorFlow's backend (`require_tensorflow`).
"""

from __future__ import annotations

import os

from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.core.registration import legacy_keras_requested

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # Keras' own default, made explicit

LEGACY_KERAS = legacy_keras_requested()

if LEGACY_KERAS:
    import tf_keras as keras  # noqa: F401
else:
    import keras  # noqa: F401

KERAS_VERSION = keras.__version__
BACKEND = "tensorflow" if LEGACY_KERAS else keras.backend.backend()


def require_backend(what: str, backends: tuple[str, ...], why: str, error: type[Exception] = KerasRepVGGError) -> None:
    """Raise `error` in one line, saying how to run `what`, unless Keras runs on one of `backends`."""
    if BACKEND not in backends:
        raise error(
            f"{what} runs on Keras' {' or '.join(backends)} backend{'s' if len(backends) > 1 else ''} ({why}), "
            f"not on {BACKEND!r}: run it with KERAS_BACKEND=tensorflow (a .keras file loads there unchanged)"
        )


def torch_parameter_key(path: str) -> str:
    """A Keras variable's path as a torch parameter name: torch refuses dots there, and
    our layer names are timm's module paths (`stages.0.1.reparam_conv`). Reversible
    (`%` is escaped too), so that no two variables of a model share a name."""
    return path.replace("%", "%25").replace(".", "%2E")


def _register_dotted_names_with_torch() -> None:
    """Let Keras' torch backend hold layers whose names have dots.

    Keras (3.15) registers each layer's variables with torch in a `ParameterDict` keyed
    by the variable's path, and torch raises "parameter name can't contain '.'": a model
    with timm's layer names could not even be built. The same three methods, keyed by
    `torch_parameter_key`. The keys only name torch's view of the variables (its
    `named_parameters`); Keras, its saving and its optimizers go by the variables
    themselves. A Keras without these methods is left as it is.
    """
    import torch
    from keras.src.backend.torch import layer as torch_layer

    cls = torch_layer.TorchLayer
    if getattr(cls, "_keras_repvgg_keys", False) or not all(
        hasattr(cls, m) for m in ("_track_variables", "_post_track_variable", "_post_untrack_variable")
    ):
        return

    def _track_variables(self):
        self._torch_params = torch.nn.ParameterDict(
            {torch_parameter_key(v.path): v.value for v in self.variables}
        )

    def _post_track_variable(self, variable):
        if hasattr(self, "_torch_params"):
            self.torch_params.setdefault(torch_parameter_key(variable.path), variable.value)

    def _post_untrack_variable(self, variable):
        key = torch_parameter_key(variable.path)
        if hasattr(self, "_torch_params") and key in self.torch_params:
            self.torch_params.pop(key)

    cls._track_variables = _track_variables
    cls._post_track_variable = _post_track_variable
    cls._post_untrack_variable = _post_untrack_variable
    cls._keras_repvgg_keys = True


if BACKEND == "torch":
    _register_dotted_names_with_torch()

# Last, once `keras` is bound: the layers our .keras files hold are registered by every
# import of Keras through this package (saved_layers imports `keras` from here).
from keras_repvgg.models import saved_layers  # noqa: E402, F401
