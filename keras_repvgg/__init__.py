"""RepVGG image classifiers for TensorFlow/Keras: every variant, exact to timm.

Names are loaded on first use, so that `keras-repvgg list` and the config
table need no TensorFlow import.
"""

from __future__ import annotations

from .configs import VARIANTS
from .lazy import lazy_exports
from .registration import register_when_keras_loads

__version__ = "0.1.0"

_EXPORTS = {
    # RepVGGA0 ... RepVGGD2se: one function per row of the variant table.
    **{variant.keras_name: "applications" for variant in VARIANTS.values()},
    "create_model": "applications",
    "list_models": "applications",
    "keras": "backend",
    "VARIANTS": "configs",
    "Preprocessing": "configs",
    "VariantConfig": "configs",
    "block_plan": "configs",
    "get_variant": "configs",
    "ArtifactKind": "artifacts",
    "file_kind": "artifacts",
    "load_artifact": "loading",
    "save_model": "io",
    "load_model": "io",
    "ExportOptions": "phone",
    "export_for_phone": "phone",
    "preprocess_input": "preprocessing",
    "load_image": "preprocessing",
    "load_images": "preprocessing",
    "decode_predictions": "labels",
    "imagenet_labels": "labels",
    "reparameterize": "reparameterization",
    "describe": "model",
    "with_head": "model",
    "ModelDescription": "description",
    "KerasRepVGGError": "errors",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
# Keras' own load_model reads our .keras files once Keras is imported, before or after us.
register_when_keras_loads()
