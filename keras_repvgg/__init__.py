"""RepVGG image classifiers for TensorFlow/Keras: every variant, exact to timm."""

from .applications import (
    RepVGGA0,
    RepVGGA1,
    RepVGGA2,
    RepVGGB0,
    RepVGGB1,
    RepVGGB1g2,
    RepVGGB1g4,
    RepVGGB2,
    RepVGGB2g2,
    RepVGGB2g4,
    RepVGGB3,
    RepVGGB3g2,
    RepVGGB3g4,
    RepVGGD2se,
    create_model,
    list_models,
)
from .backend import keras
from .configs import VARIANTS, Preprocessing, VariantConfig, block_plan, get_variant

__version__ = "0.1.0"

__all__ = [
    "RepVGGA0", "RepVGGA1", "RepVGGA2", "RepVGGB0", "RepVGGB1", "RepVGGB1g2", "RepVGGB1g4",
    "RepVGGB2", "RepVGGB2g2", "RepVGGB2g4", "RepVGGB3", "RepVGGB3g2", "RepVGGB3g4",
    "RepVGGD2se", "VARIANTS", "Preprocessing", "VariantConfig", "block_plan", "create_model",
    "get_variant", "keras", "list_models",
]
