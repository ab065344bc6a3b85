"""The RepVGG network as a Keras functional model, in either form.

Deploy form: each block is one 3x3 Conv2D with bias. Training form: each
block sums a 3x3 conv + BatchNorm, a 1x1 conv + BatchNorm and, where the
shape allows, an identity BatchNorm. Either way (D2se) squeeze-excitation and
a ReLU follow. Layer names mirror timm's module paths (`stem.reparam_conv`,
`stages.2.13.conv_kxk.bn`, `stages.2.13.attn.fc1`, `head.fc`) so that
weights map by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from . import names, transform
from .backend import keras
from .configs import BlockSpec, Preprocessing, VariantConfig, block_plan
from .description import FORMS, ModelDescription, NotDescribedError
from .errors import KerasRepVGGError
from .fusion import BN_EPSILON

layers = keras.layers
# FORMS: deploy: one conv per block. train: the three branches. deploy-identity: the conv
# branches fused and the identity kept apart (conv + per-channel scale of the input), for int8.
LayerWeights = dict[str, list[np.ndarray]]  # Keras layer name -> its weights, in set_weights order


def _init(initializer: Optional[str]) -> dict:
    return {"kernel_initializer": initializer} if initializer else {}


def _squeeze_excite(x, spec: BlockSpec, initializer: Optional[str] = None):
    # timm's SEModule: mean over space, 1x1 conv, ReLU, 1x1 conv, sigmoid gate.
    name = names.part(spec.name, names.SE)
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.pool")(x)
    s = layers.Conv2D(spec.se_channels, 1, name=names.part(spec.name, names.SE_FC1), **_init(initializer))(s)
    s = layers.ReLU(name=f"{name}.act")(s)
    s = layers.Conv2D(spec.out_channels, 1, name=names.part(spec.name, names.SE_FC2), **_init(initializer))(s)
    s = layers.Activation("sigmoid", name=f"{name}.gate")(s)
    return layers.Multiply(name=f"{name}.scale")([x, s])


def _conv3x3(x, spec: BlockSpec, name: str, use_bias: bool, initializer: Optional[str]):
    """3x3 conv; stride 2 pads explicitly, since PyTorch's padding=1 is not 'same' there."""
    padding = "same"
    if spec.stride == 2:
        x = layers.ZeroPadding2D(1, name=f"{spec.name}.pad")(x)
        padding = "valid"
    return layers.Conv2D(
        spec.out_channels, 3, strides=spec.stride, padding=padding, groups=spec.groups,
        use_bias=use_bias, name=name, **_init(initializer),
    )(x)


def _batchnorm(name: str):
    # PyTorch's eps and momentum (its 0.1 is Keras' 0.9).
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=name)


def _train_branches(x, spec: BlockSpec, initializer: Optional[str]):
    n = spec.name
    dense = _conv3x3(x, spec, names.part(n, names.CONV_KXK, "conv"), False, initializer)
    branches = [_batchnorm(names.part(n, names.CONV_KXK, "bn"))(dense)]
    # The 1x1 branch reads the unpadded input: with stride 2 its taps then sit
    # at the 3x3 windows' centres, as in PyTorch. A strided 1x1 conv is a subsample
    # then a 1x1 conv, and is built that way: oneDNN's AVX2 kernel for the weight
    # gradient of a strided 1x1 conv on channels-last input with 1, 3 or 4 channels
    # (the stem's RGB) never returns (torch 2.14.1, so Keras' torch backend; see
    # docs/testing.md, "No hang"). Same weights, same numbers.
    point = x
    if spec.stride > 1:
        point = layers.MaxPooling2D(1, strides=spec.stride, name=names.part(n, names.CONV_1X1, "subsample"))(point)
    point = layers.Conv2D(
        spec.out_channels, 1, groups=spec.groups, use_bias=False,
        name=names.part(n, names.CONV_1X1, "conv"), **_init(initializer),
    )(point)
    branches.append(_batchnorm(names.part(n, names.CONV_1X1, "bn"))(point))
    if spec.has_identity:
        branches.append(_batchnorm(names.part(n, names.IDENTITY))(x))
    return layers.Add(name=f"{n}.add")(branches)


def repvgg_block(x, spec: BlockSpec, form: str = "deploy", initializer: Optional[str] = None):
    """One block in the given form: conv (or three branches), SE where configured, ReLU."""
    if form == "train":
        x = _train_branches(x, spec, initializer)
    elif form == "deploy-identity" and spec.has_identity:
        conv = _conv3x3(x, spec, names.part(spec.name, names.REPARAM_CONV), True, initializer)
        scaled = layers.DepthwiseConv2D(
            1, use_bias=False, name=names.part(spec.name, names.IDENTITY_SCALE),
            **({"depthwise_initializer": initializer} if initializer else {}),
        )(x)
        x = layers.Add(name=f"{spec.name}.add")([conv, scaled])
    else:
        x = _conv3x3(x, spec, names.part(spec.name, names.REPARAM_CONV), True, initializer)
    if spec.se_channels:
        x = _squeeze_excite(x, spec, initializer)
    return layers.ReLU(name=f"{spec.name}.act")(x)


def pixel_normalization(x, preprocessing: Preprocessing, prefix: str = names.PREPROCESS):
    """0-255 RGB -> (x / 255 - mean) / std, inside the graph: one layer `PREFIX.normalize`
    computing x * scale + offset with `transform.scale_and_offset`'s constants."""
    scale, offset = transform.scale_and_offset(preprocessing)
    return layers.Rescaling(scale.tolist(), offset.tolist(), name=f"{prefix}.normalize")(x)


def graph_softmax(logits, name: str):
    """Logits -> probabilities over the last axis, inside an exported graph (the SavedModel's
    signatures and the TFLite wrapper); `transform.softmax` is the numpy one."""
    return layers.Softmax(axis=-1, name=name)(logits)


def _input(input_shape, input_tensor):
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="image")
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return keras.Input(tensor=input_tensor, shape=input_shape, name="image")


def build_repvgg(
    variant: VariantConfig,
    *,
    form: str = "deploy",
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
    labels: Optional[Sequence[str]] = None,
    source: Optional[str] = None,
    license: Optional[str] = None,
) -> keras.Model:
    """Build `variant` in the deploy or the training form.

    Weights are randomly initialized, or zeros with initialize=False, which is
    cheaper where a checkpoint's weights are about to be assigned. What the model is
    (these arguments, the eval transform and the class names) is recorded in it: see
    `keras_repvgg.description.describe`.
    """
    if form not in FORMS:
        raise KerasRepVGGError(f"form must be one of {FORMS}, got {form!r}")
    initializer = None if initialize else "zeros"
    preprocessing = preprocessing or variant.preprocessing
    if input_shape is None:
        size = preprocessing.input_size
        input_shape = (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise KerasRepVGGError(f"input_shape must be (height, width, channels), got {input_shape}")
    if pooling not in (None, "avg", "max"):
        raise KerasRepVGGError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if include_top and classes < 1:
        raise KerasRepVGGError(f"classes must be positive with include_top=True, got {classes}")

    if labels is not None and (not include_top or len(labels) != classes):
        raise KerasRepVGGError(f"{len(labels)} labels for a model with {classes if include_top else 'no'} classes")
    include_top = include_top and not features_only
    description = ModelDescription(
        variant=variant.name, form=form, include_top=include_top, classes=classes if include_top else 0,
        classifier_activation=classifier_activation if include_top else None,
        pooling=pooling if not (include_top or features_only) else None, features_only=features_only,
        include_preprocessing=include_preprocessing,
        preprocessing=dataclasses.replace(preprocessing, input_size=int(input_shape[0] or preprocessing.input_size)),
        labels=tuple(labels) if labels is not None else None,
        source=source,
        license=license,
    )
    inputs = _input(input_shape, input_tensor)
    x = Description(description)(inputs)
    x = pixel_normalization(x, preprocessing) if include_preprocessing else x
    features = []
    for spec in block_plan(variant, input_shape[-1] or 3):
        x = repvgg_block(x, spec, form, initializer)
        if spec.feature:
            features.append(x)

    if features_only:
        outputs = features
    elif include_top:
        x = layers.GlobalAveragePooling2D(name=names.HEAD_POOL)(x)
        outputs = layers.Dense(
            classes, activation=classifier_activation, name=names.HEAD_FC, **_init(initializer)
        )(x)
    elif pooling == "avg":
        outputs = layers.GlobalAveragePooling2D(name=names.HEAD_POOL)(x)
    elif pooling == "max":
        outputs = layers.GlobalMaxPooling2D(name=names.HEAD_POOL)(x)
    else:
        outputs = x

    model_inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    return keras.Model(model_inputs, outputs, name=name or variant.name)


def assign_weights(model: keras.Model, weights: Iterable[LayerWeights]) -> None:
    """Set each named layer's weights as they come; every layer with weights must get some."""
    assigned = set()
    for block in weights:
        for name, arrays in block.items():
            model.get_layer(name).set_weights(arrays)
            assigned.add(name)
    unset = [
        layer.name
        for layer in model.layers
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense, layers.BatchNormalization))
        and layer.name not in assigned
    ]
    if unset:
        raise RuntimeError(f"no weights were mapped to layers {unset[:5]}")


def clone_with_weights(model: keras.Model, clone_function=None) -> keras.Model:
    """A new model of the same graph and weights (each layer rebuilt by `clone_function`,
    where given), so that edits to the copy leave `model` alone."""
    copy = keras.models.clone_model(model, clone_function=clone_function)
    copy.set_weights(model.get_weights())
    return copy


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


def _recorded(model) -> Optional[ModelDescription]:
    for layer in model.layers:
        if isinstance(layer, Description):
            return layer.description
    return None


def describe(model) -> ModelDescription:
    """The description of a model built or converted by keras-repvgg.

    A model that wraps one of ours under a head of its own (the usual fine-tuning
    recipe: backbone, then a new Dense) is described by the backbone's record, with
    the outer model's classifier as its head.
    """
    recorded = _recorded(model)
    if recorded is not None:
        return recorded
    inner = next((d for layer in model.layers if isinstance(layer, keras.Model) and (d := _recorded(layer))), None)
    if inner is None:
        raise NotDescribedError(
            f"model {model.name!r} was not built by keras-repvgg (it records no description); "
            "build it with keras_repvgg.create_model or convert a checkpoint"
        )
    last = model.layers[-1].get_config()
    if len(model.outputs) != 1 or len(model.output_shape) != 2 or "units" not in last:
        return inner.replace(include_top=False, features_only=False, pooling="avg", labels=None)
    activation = last.get("activation")
    return inner.replace(
        include_top=True, features_only=False, classes=int(model.output_shape[-1]),
        classifier_activation=activation, labels=None,
    )
