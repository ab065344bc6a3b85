"""The custom layers our `.keras` files hold, registered with Keras when this module loads.

`backend.py` imports this module last, so whatever imports Keras through keras-repvgg has
registered them; `registration.py` imports `backend` when a user imports Keras first.
"""

from __future__ import annotations

from typing import Any

from keras_repvgg.core import names
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.models.backend import keras


@keras.saving.register_keras_serializable(package="keras_repvgg")
class Description(keras.layers.Layer):
    """An identity layer on the model's input whose configuration is the description."""

    def __init__(self, description: "dict[str, Any] | ModelDescription", **kwargs: Any):
        kwargs.setdefault("name", names.DESCRIPTION)
        super().__init__(**kwargs)
        self.description = (
            description if isinstance(description, ModelDescription) else ModelDescription.from_dict(description)
        )

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "description": self.description.to_dict()}
