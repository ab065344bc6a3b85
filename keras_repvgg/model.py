"""The fused (deploy) RepVGG network as a Keras functional model.

Each block is one 3x3 Conv2D with bias, then (D2se only) squeeze-excitation,
then ReLU. Layer names mirror timm's module paths (`stem.reparam_conv`,
`stages.2.13.attn.fc1`, `head.fc`) so that weights map by name.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .backend import keras
from .configs import BlockSpec, Preprocessing, VariantConfig, block_plan

layers = keras.layers


def _init(initializer: Optional[str]) -> dict:
    return {"kernel_initializer": initializer} if initializer else {}


def _squeeze_excite(x, spec: BlockSpec, initializer: Optional[str] = None):
    # timm's SEModule: mean over space, 1x1 conv, ReLU, 1x1 conv, sigmoid gate.
    name = f"{spec.name}.attn"
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.pool")(x)
    s = layers.Conv2D(spec.se_channels, 1, name=f"{name}.fc1", **_init(initializer))(s)
    s = layers.ReLU(name=f"{name}.act")(s)
    s = layers.Conv2D(spec.out_channels, 1, name=f"{name}.fc2", **_init(initializer))(s)
    s = layers.Activation("sigmoid", name=f"{name}.gate")(s)
    return layers.Multiply(name=f"{name}.scale")([x, s])


def repvgg_block(x, spec: BlockSpec, initializer: Optional[str] = None):
    """One deploy-form block. Stride 2 pads explicitly: PyTorch's padding=1 is not 'same' there."""
    padding = "same"
    if spec.stride == 2:
        x = layers.ZeroPadding2D(1, name=f"{spec.name}.pad")(x)
        padding = "valid"
    x = layers.Conv2D(
        spec.out_channels,
        3,
        strides=spec.stride,
        padding=padding,
        groups=spec.groups,
        name=f"{spec.name}.reparam_conv",
        **_init(initializer),
    )(x)
    if spec.se_channels:
        x = _squeeze_excite(x, spec, initializer)
    return layers.ReLU(name=f"{spec.name}.act")(x)


def _preprocess(x, preprocessing: Preprocessing):
    """0-255 RGB -> (x / 255 - mean) / std, inside the graph."""
    x = layers.Rescaling(1.0 / 255.0, name="preprocess.rescale")(x)
    variance = [s * s for s in preprocessing.std]
    return layers.Normalization(
        mean=list(preprocessing.mean), variance=variance, name="preprocess.normalize"
    )(x)


def _input(input_shape, input_tensor):
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="image")
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return keras.Input(tensor=input_tensor, shape=input_shape, name="image")


def build_repvgg(
    variant: VariantConfig,
    *,
    include_top: bool = True,
    input_shape: Optional[Sequence[Optional[int]]] = None,
    input_tensor=None,
    pooling: Optional[str] = None,
    classes: int = 1000,
    classifier_activation: Optional[str] = "softmax",
    include_preprocessing: bool = False,
    preprocessing: Optional[Preprocessing] = None,
    features_only: bool = False,
    name: Optional[str] = None,
    initialize: bool = True,
) -> keras.Model:
    """Build the deploy-form network of `variant`.

    Weights are randomly initialized, or zeros with initialize=False, which is
    cheaper where a checkpoint's weights are about to be assigned.
    """
    initializer = None if initialize else "zeros"
    preprocessing = preprocessing or variant.preprocessing
    if input_shape is None:
        size = preprocessing.input_size
        input_shape = (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if include_top and classes < 1:
        raise ValueError(f"classes must be positive with include_top=True, got {classes}")

    inputs = _input(input_shape, input_tensor)
    x = _preprocess(inputs, preprocessing) if include_preprocessing else inputs
    channels = input_shape[-1] or 3
    features = []
    for spec in block_plan(variant, channels):
        x = repvgg_block(x, spec, initializer)
        if spec.feature:
            features.append(x)

    if features_only:
        outputs = features
    elif include_top:
        x = layers.GlobalAveragePooling2D(name="head.global_pool")(x)
        outputs = layers.Dense(
            classes, activation=classifier_activation, name="head.fc", **_init(initializer)
        )(x)
    elif pooling == "avg":
        outputs = layers.GlobalAveragePooling2D(name="head.global_pool")(x)
    elif pooling == "max":
        outputs = layers.GlobalMaxPooling2D(name="head.global_pool")(x)
    else:
        outputs = x

    model_inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    return keras.Model(model_inputs, outputs, name=name or variant.name)
