"""RepVGG image classifiers for TensorFlow/Keras: every variant, exact to timm.

Names are loaded on first use, so that `keras-repvgg list` and the config
table need no TensorFlow import.
"""

from __future__ import annotations

from keras_repvgg.core.configs import VARIANTS
from keras_repvgg.core.lazy import lazy_exports
from keras_repvgg.core.registration import register_when_keras_loads

__version__ = "0.1.0"

_EXPORTS = {
    # RepVGGA0 ... RepVGGD2se: one function per row of the variant table.
    **{variant.keras_name: "front.applications" for variant in VARIANTS.values()},
    "create_model": "front.applications",
    "list_models": "front.applications",
    "keras": "models.backend",
    "VARIANTS": "core.configs",
    "Preprocessing": "core.configs",
    "VariantConfig": "core.configs",
    "block_plan": "core.configs",
    "get_variant": "core.configs",
    "ArtifactKind": "core.artifacts",
    "file_kind": "core.artifacts",
    "load_artifact": "front.loading",
    "save_model": "models.io",
    "load_model": "models.io",
    "train": "front.train",
    "TrainOptions": "front.train",
    "Augmentation": "core.augment",
    "evaluate": "front.evaluate",
    "ExportOptions": "front.phone",
    "export_for_phone": "front.phone",
    "preprocess_input": "core.preprocessing",
    "load_image": "core.preprocessing",
    "load_images": "core.preprocessing",
    "decode_predictions": "core.labels",
    "imagenet_labels": "core.labels",
    "reparameterize": "models.reparameterization",
    "describe": "models.model",
    "with_head": "models.model",
    "ModelDescription": "core.description",
    "KerasRepVGGError": "core.errors",
    # KerasHub (the [hub] extra): its classes, and presets of ours.
    "save_preset": "front.preset",
    "RepVGGBackbone": "models.hub",
    "RepVGGImageClassifier": "models.hub",
    "RepVGGImageClassifierPreprocessor": "models.hub",
    "RepVGGImageConverter": "models.hub",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
# Keras' own load_model reads our .keras files once Keras is imported, before or after us.
register_when_keras_loads()
