"""Training form -> deploy form: the same network with each block's branches fused.

The fusion is `fusion.fuse_block`, the same function the checkpoint converter
uses; here its inputs come from the Keras layers instead of a checkpoint.
"""

from __future__ import annotations

from typing import Iterator

from .backend import keras
from .configs import VariantConfig, block_plan, get_variant
from .errors import KerasRepVGGError
from .fusion import BatchNorm, fuse_block, fuse_block_keep_identity
from .model import LayerWeights, assign_weights, build_repvgg, describe
from .names import CONV_1X1, CONV_KXK, HEAD_FC, IDENTITY, IDENTITY_SCALE, REPARAM_CONV, SE_FC1, SE_FC2, part


def _bn(layer) -> BatchNorm:
    gamma, beta, mean, var = layer.get_weights()
    return BatchNorm(gamma, beta, mean, var, eps=layer.epsilon)


def _fused_weights(
    model: keras.Model, variant: VariantConfig, in_channels: int, keep_identity: bool
) -> Iterator[LayerWeights]:
    get = model.get_layer
    layer_names = {layer.name for layer in model.layers}
    for spec in block_plan(variant, in_channels):
        n = spec.name
        branches = (
            (get(part(n, CONV_KXK, "conv")).get_weights()[0], _bn(get(part(n, CONV_KXK, "bn")))),
            (get(part(n, CONV_1X1, "conv")).get_weights()[0], _bn(get(part(n, CONV_1X1, "bn")))),
        )
        identity = _bn(get(part(n, IDENTITY))) if spec.has_identity else None
        if keep_identity and identity is not None:
            kernel, bias, scale = fuse_block_keep_identity(*branches, identity, spec.groups)
            weights = {
                part(n, REPARAM_CONV): [kernel, bias],
                part(n, IDENTITY_SCALE): [scale.reshape(1, 1, -1, 1)],  # depthwise (1, 1, C, 1)
            }
        else:
            weights = {part(n, REPARAM_CONV): list(fuse_block(*branches, identity, spec.groups))}
        for se in (part(n, SE_FC1), part(n, SE_FC2)):
            if se in layer_names:
                weights[se] = get(se).get_weights()
        yield weights
    if HEAD_FC in layer_names:
        yield {HEAD_FC: get(HEAD_FC).get_weights()}


def is_training_form(model: keras.Model) -> bool:
    return describe(model).form == "train"


def reparameterize(model: keras.Model, keep_identity: bool = False) -> keras.Model:
    """A new deploy-form model computing what the training-form `model` computes in inference.

    BatchNorm layers contribute their moving statistics, as in eval mode. With
    keep_identity=True the identity branch stays apart (conv + per-channel scale
    of the block's input, added): the same function, a graph that quantizes to
    int8 far better (see `fusion.fuse_block_keep_identity`). The new model keeps the
    description (input, head, eval transform, labels) of the old one.
    """
    description = describe(model)
    if description.form != "train":
        raise KerasRepVGGError(
            f"model {model.name!r} is in the {description.form} form; reparameterize takes the training form"
        )
    variant = get_variant(description.variant)
    in_channels = int(model.input_shape[-1] or 3)
    deploy = build_repvgg(
        variant, form="deploy-identity" if keep_identity else "deploy", initialize=False,
        input_shape=tuple(model.input_shape[1:]), name=model.name,
        include_top=description.include_top, pooling=description.pooling, classes=description.classes,
        classifier_activation=description.classifier_activation, features_only=description.features_only,
        include_preprocessing=description.include_preprocessing, preprocessing=description.preprocessing,
        labels=description.labels, source=description.source, license=description.license,
    )
    assign_weights(deploy, _fused_weights(model, variant, in_channels, keep_identity))
    return deploy
