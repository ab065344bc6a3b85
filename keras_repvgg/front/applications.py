"""The public model functions: `RepVGGA0(...)` ... `RepVGGD2se(...)` and `create_model(name)`."""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from keras_repvgg.core.artifacts import ArtifactKind, file_kind
from keras_repvgg.core.configs import VARIANTS, VariantConfig, get_variant
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.models.backend import keras
from keras_repvgg.models.model import build

_DOC = """Instantiate the {keras_name} architecture ({name}) in its fused (deploy) form.

Reference: Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021.
Each block is one 3x3 Conv2D with bias and a ReLU{se}; layer names follow timm's
module paths, so weights map by name.

Args:
    weights: None (random initialization); "imagenet" (timm's `{hub}` from the
        Hugging Face hub); a timm checkpoint: a `.safetensors` file, a folder with
        `model.safetensors` and `config.json`, or a hub id; or a Keras `.weights.h5`
        file saved from this same architecture.
    include_top: whether to include the classifier (global average pooling and a
        Dense layer named `head.fc`).
    input_shape: (height, width, channels); defaults to the checkpoint's input size,
        else ({size}, {size}, 3). Height and width may be None.
    input_tensor: optional Keras tensor to use as the model's input.
    pooling: without the top, None (4D feature map), "avg" or "max".
    classes: classifier size; defaults to the checkpoint's, else 1000. With
        include_top and a checkpoint it must match the checkpoint.
    classifier_activation: activation of the classifier; None returns logits.
    include_preprocessing: if True the model takes 0-255 RGB and normalizes with the
        checkpoint's mean and std in the graph; else it takes normalized input.
    features_only: return the five feature maps (stem and each stage), as timm's
        `features_only=True` does.
    name: model name; defaults to "{name}".

Returns:
    A `keras.Model` (Keras 3, or tf-keras when TF_USE_LEGACY_KERAS=1).
"""


def _hub_id(variant_name: str) -> str:
    tag = VARIANTS[variant_name].timm_tag
    if tag is None:
        raise KerasRepVGGError(
            f"{variant_name} has no published timm weights; pass a checkpoint path instead"
        )
    return f"timm/{tag}"


def create_model(
    model_name: str,
    pretrained: bool = False,
    *,
    form: str = "deploy",
    weights: "Optional[str | os.PathLike[str]]" = None,
    include_top: bool = True,
    input_shape: Optional[Sequence[Optional[int]]] = None,
    input_tensor=None,
    pooling: Optional[str] = None,
    classes: Optional[int] = None,
    classifier_activation: Optional[str] = "softmax",
    include_preprocessing: bool = False,
    features_only: bool = False,
    name: Optional[str] = None,
) -> keras.Model:
    """Build a RepVGG model by timm's name (`repvgg_a0`, `repvgg_b1g4`, ...).

    `pretrained=True` is `weights="imagenet"`. `form="train"` builds the
    multi-branch training form (fuse it afterwards with `reparameterize`);
    a training-form model takes only training-form checkpoints. Other arguments
    as for `RepVGGA0`.
    """
    variant = get_variant(model_name)
    if pretrained and weights is None:
        weights = "imagenet"
    description = ModelDescription(
        variant.name, form=form, include_top=include_top, classes=1000 if classes is None else classes,
        classifier_activation=classifier_activation, pooling=pooling, features_only=features_only,
        include_preprocessing=include_preprocessing, preprocessing=variant.preprocessing,
    )
    if weights == "imagenet":
        weights = _hub_id(variant.name)
    kind = None if weights is None else file_kind(weights, (ArtifactKind.KERAS_WEIGHTS, ArtifactKind.CHECKPOINT))
    if weights is not None and kind is ArtifactKind.CHECKPOINT:
        from keras_repvgg.converters.conversion import convert_to

        # classes=None: the checkpoint's.
        return convert_to(weights, description, classes, input_shape=input_shape, input_tensor=input_tensor,
                          name=name).model
    model = build(description, input_shape=input_shape, input_tensor=input_tensor, name=name)
    if weights is not None:
        model.load_weights(str(weights))
    return model


def _application(variant: VariantConfig) -> Callable[..., keras.Model]:
    """The Keras-applications function of `variant`: its signature and docstring are every
    variant's."""

    def application(
        weights: "Optional[str | os.PathLike[str]]" = None,
        include_top: bool = True,
        input_shape: Optional[Sequence[Optional[int]]] = None,
        input_tensor=None,
        pooling: Optional[str] = None,
        classes: Optional[int] = None,
        classifier_activation: Optional[str] = "softmax",
        include_preprocessing: bool = False,
        features_only: bool = False,
        name: Optional[str] = None,
    ) -> keras.Model:
        return create_model(
            variant.name, weights=weights, include_top=include_top, input_shape=input_shape,
            input_tensor=input_tensor, pooling=pooling, classes=classes, classifier_activation=classifier_activation,
            include_preprocessing=include_preprocessing, features_only=features_only, name=name,
        )

    application.__name__ = application.__qualname__ = variant.keras_name
    application.__doc__ = _DOC.format(
        keras_name=variant.keras_name,
        name=variant.name,
        se=", squeeze-excitation before the ReLU" if variant.se_ratio else "",
        hub=f"timm/{variant.timm_tag}" if variant.timm_tag else "(none published)",
        size=variant.preprocessing.input_size,
    )
    return application


# RepVGGA0 ... RepVGGD2se: one function per row of the variant table.
APPLICATIONS: dict[str, Callable[..., keras.Model]] = {v.keras_name: _application(v) for v in VARIANTS.values()}
globals().update(APPLICATIONS)


def list_models() -> list[str]:
    """timm names of every variant."""
    return list(VARIANTS)
