"""The RepVGG network as a Keras functional model, built from its description.

Deploy form: each block is one 3x3 Conv2D with bias. Training form: each
block sums a 3x3 conv + BatchNorm, a 1x1 conv + BatchNorm and, where the
shape allows, an identity BatchNorm. Either way (D2se) squeeze-excitation and
a ReLU follow. Layer names mirror timm's module paths (`stem.reparam_conv`,
`stages.2.13.conv_kxk.bn`, `stages.2.13.attn.fc1`, `head.fc`) so that
weights map by name; `layout` names each block's sublayers.
"""

from __future__ import annotations

from typing import Collection, Iterable, Optional, Sequence

from keras_repvgg.core import names, transform
from keras_repvgg.core.configs import BlockSpec, Preprocessing, block_plan, get_variant
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.core.errors import KerasRepVGGError, NotDescribedError
from keras_repvgg.core.fusion import BN_EPSILON
from keras_repvgg.core.layout import BlockLayout, LayerWeights, SqueezeExcite, block_layout
from keras_repvgg.models.backend import keras
from keras_repvgg.models.saved_layers import Description, GroupedConv2D

layers = keras.layers


def _init(initializer: Optional[str]) -> dict:
    return {"kernel_initializer": initializer} if initializer else {}


def _conv(filters: int, kernel_size: int, groups: int, **options):
    """Conv2D, or, with groups, the same layer run on TensorFlow's own grouped kernel."""
    return (GroupedConv2D if groups > 1 else layers.Conv2D)(filters, kernel_size, groups=groups, **options)


def _squeeze_excite(x, spec: BlockSpec, se: SqueezeExcite, initializer: Optional[str] = None):
    s = layers.GlobalAveragePooling2D(keepdims=True, name=se.pool.name)(x)
    s = layers.Conv2D(spec.se_channels, 1, name=se.fc1.name, **_init(initializer))(s)
    s = layers.ReLU(name=se.act.name)(s)
    s = layers.Conv2D(spec.out_channels, 1, name=se.fc2.name, **_init(initializer))(s)
    s = layers.Activation("sigmoid", name=se.gate.name)(s)
    return layers.Multiply(name=se.scale.name)([x, s])


def _conv3x3(x, spec: BlockSpec, layout: BlockLayout, name: str, use_bias: bool, initializer: Optional[str]):
    """3x3 conv; stride 2 pads explicitly, since PyTorch's padding=1 is not 'same' there."""
    padding = "same"
    if layout.pad is not None:
        x = layers.ZeroPadding2D(1, name=layout.pad.name)(x)
        padding = "valid"
    return _conv(
        spec.out_channels, 3, spec.groups, strides=spec.stride, padding=padding,
        use_bias=use_bias, name=name, **_init(initializer),
    )(x)


def _batchnorm(name: str):
    # PyTorch's eps and momentum (its 0.1 is Keras' 0.9).
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=name)


def _train_branches(x, spec: BlockSpec, layout: BlockLayout, initializer: Optional[str]):
    assert layout.conv_kxk is not None and layout.conv_1x1 is not None and layout.add is not None
    dense = _conv3x3(x, spec, layout, layout.conv_kxk.conv.name, False, initializer)
    branches = [_batchnorm(layout.conv_kxk.bn.name)(dense)]
    # The 1x1 branch reads the unpadded input: with stride 2 its taps then sit
    # at the 3x3 windows' centres, as in PyTorch. A strided 1x1 conv is a subsample
    # then a 1x1 conv, and is built that way: oneDNN's AVX2 kernel for the weight
    # gradient of a strided 1x1 conv on channels-last input with 1, 3 or 4 channels
    # (the stem's RGB) never returns (torch 2.14.1, so Keras' torch backend; see
    # docs/testing.md, "No hang"). Same weights, same numbers.
    point = x
    if layout.subsample is not None:
        point = layers.MaxPooling2D(1, strides=spec.stride, name=layout.subsample.name)(point)
    point = _conv(
        spec.out_channels, 1, spec.groups, use_bias=False, name=layout.conv_1x1.conv.name, **_init(initializer),
    )(point)
    branches.append(_batchnorm(layout.conv_1x1.bn.name)(point))
    if layout.identity is not None:
        branches.append(_batchnorm(layout.identity.name)(x))
    return layers.Add(name=layout.add.name)(branches)


def repvgg_block(x, spec: BlockSpec, form: str = "deploy", initializer: Optional[str] = None,
                 identity_blocks: Optional[Collection[str]] = None):
    """One block in the given form (see `layout`): conv (or three branches), SE where
    configured, ReLU."""
    layout = block_layout(spec, form, identity_blocks)
    if layout.form == "train":
        x = _train_branches(x, spec, layout, initializer)
    else:
        assert layout.reparam_conv is not None
        conv = _conv3x3(x, spec, layout, layout.reparam_conv.name, True, initializer)
        if layout.identity_scale is not None and layout.add is not None:
            scaled = layers.DepthwiseConv2D(
                1, use_bias=False, name=layout.identity_scale.name,
                **({"depthwise_initializer": initializer} if initializer else {}),
            )(x)
            conv = layers.Add(name=layout.add.name)([conv, scaled])
        x = conv
    if layout.se is not None:
        x = _squeeze_excite(x, spec, layout.se, initializer)
    return layers.ReLU(name=layout.act.name)(x)


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


def build(
    description: ModelDescription,
    *,
    input_shape: Optional[Sequence[Optional[int]]] = None,
    input_tensor=None,
    name: Optional[str] = None,
    initialize: bool = True,
) -> keras.Model:
    """Build the model `description` describes, and record the description in it.

    The description holds the build arguments (variant, form, head, input, eval transform,
    labels); what is left here is how the graph is made: its input (`input_shape` defaults
    to the eval transform's square input size, 3 channels; or an existing `input_tensor`),
    the model's name (the variant's by default) and whether the weights are randomly
    initialized or zeros (cheaper where a checkpoint's weights are about to be assigned).
    The recorded description is `description.resolved(...)` for this input.
    """
    variant = get_variant(description.variant)
    if input_shape is None:
        size = description.preprocessing.input_size
        input_shape = (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise KerasRepVGGError(f"input_shape must be (height, width, channels), got {input_shape}")
    description = description.resolved(input_shape[0])
    initializer = None if initialize else "zeros"

    inputs = _input(input_shape, input_tensor)
    x = Description(description)(inputs)
    x = pixel_normalization(x, description.preprocessing) if description.include_preprocessing else x
    features = []
    for spec in block_plan(variant, input_shape[-1] or 3):
        x = repvgg_block(x, spec, description.form, initializer, description.identity_blocks)
        if spec.feature:
            features.append(x)

    if description.features_only:
        outputs = features
    elif description.include_top:
        x = layers.GlobalAveragePooling2D(name=names.HEAD_POOL)(x)
        outputs = layers.Dense(
            description.classes, activation=description.classifier_activation, name=names.HEAD_FC,
            **_init(initializer),
        )(x)
    elif description.pooling == "avg":
        outputs = layers.GlobalAveragePooling2D(name=names.HEAD_POOL)(x)
    elif description.pooling == "max":
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


def _recorded(model) -> Optional[ModelDescription]:
    for layer in model.layers:
        if isinstance(layer, Description):
            return layer.description
    return None


def with_head(
    backbone: keras.Model,
    classes: int,
    *,
    classifier_activation: Optional[str] = "softmax",
    labels: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
) -> keras.Model:
    """`backbone` (ours, without its top) under a new classifier `head.fc`, for fine-tuning:
    a model whose description (the backbone's, with this head and these labels) is recorded
    in it, so that exports and `predict` read its head instead of inferring it."""
    inner = describe(backbone)
    if inner.include_top or inner.features_only:
        raise KerasRepVGGError(f"{backbone.name!r} has head {inner.head!r}: build it with include_top=False "
                               "(pooling 'avg', 'max' or None) to put a new head on it")
    if classes < 1:
        raise KerasRepVGGError(f"classes must be positive, got {classes}")
    if labels is not None and len(labels) != classes:
        raise KerasRepVGGError(f"{len(labels)} labels for a model with {classes} classes")
    description = inner.replace(
        include_top=True, classes=classes, classifier_activation=classifier_activation, pooling=None,
        labels=tuple(labels) if labels is not None else None,
    )
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    x = backbone(Description(description)(inputs))
    if inner.head == "feature_map":
        x = layers.GlobalAveragePooling2D(name=names.HEAD_POOL)(x)
    outputs = layers.Dense(classes, activation=classifier_activation, name=names.HEAD_FC)(x)
    return keras.Model(inputs, outputs, name=name or f"{backbone.name}_classifier")


def as_keras_model(model):
    """Ours as it is; a RepVGG KerasHub model (`models/hub.py`: it has `to_keras_model`) as
    ours, with the same weights. The exports take either through this."""
    to_keras = getattr(model, "to_keras_model", None)
    return to_keras() if callable(to_keras) else model


def describe(model) -> ModelDescription:
    """The description of a model built or converted by keras-repvgg, or made by `with_head`.

    A model that wraps one of ours by hand under a head of its own (backbone, then a new
    Dense) records nothing of that head: it is described by the backbone's record with
    the head its last layer has (units and activation), the one thing inferred here.
    `with_head` records the head instead.
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
