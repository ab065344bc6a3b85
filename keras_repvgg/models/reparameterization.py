"""Training form -> deploy form: the same network with each block's branches fused.

The fusion is `fusion.fuse_block`, the same function the checkpoint converter
uses; here its inputs come from the Keras layers instead of a checkpoint.
"""

from __future__ import annotations

from typing import Collection, Iterator, Optional, Union

import numpy as np

from keras_repvgg.core.configs import BlockSpec, VariantConfig, block_plan, get_variant
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.core.fusion import BatchNorm, fuse_block, fuse_block_keep_identity
from keras_repvgg.core.layout import ConvBN, LayerWeights, block_layout
from keras_repvgg.core.names import HEAD_FC
from keras_repvgg.models.backend import keras
from keras_repvgg.models.model import assign_weights, build, describe


def _bn(layer) -> BatchNorm:
    gamma, beta, mean, var = layer.get_weights()
    return BatchNorm(gamma, beta, mean, var, eps=layer.epsilon)


def _conv_bn(model: keras.Model, branch: ConvBN) -> tuple[np.ndarray, BatchNorm]:
    return model.get_layer(branch.conv.name).get_weights()[0], _bn(model.get_layer(branch.bn.name))


def _fused_weights(
    model: keras.Model, variant: VariantConfig, in_channels: int, form: str, identity_blocks: Optional[Collection[str]]
) -> Iterator[LayerWeights]:
    get = model.get_layer
    for spec in block_plan(variant, in_channels):
        train, deploy = block_layout(spec, "train"), block_layout(spec, form, identity_blocks)
        assert train.conv_kxk is not None and train.conv_1x1 is not None and deploy.reparam_conv is not None
        branches = (_conv_bn(model, train.conv_kxk), _conv_bn(model, train.conv_1x1))
        identity = _bn(get(train.identity.name)) if train.identity is not None else None
        if deploy.identity_scale is not None and identity is not None:
            kernel, bias, scale = fuse_block_keep_identity(*branches, identity, spec.groups)
            weights = {
                deploy.reparam_conv.name: [kernel, bias],
                deploy.identity_scale.name: [scale.reshape(1, 1, -1, 1)],  # depthwise (1, 1, C, 1)
            }
        else:
            weights = {deploy.reparam_conv.name: list(fuse_block(*branches, identity, spec.groups))}
        if train.se is not None:
            for se in (train.se.fc1.name, train.se.fc2.name):
                weights[se] = get(se).get_weights()
        yield weights
    if HEAD_FC in {layer.name for layer in model.layers}:
        yield {HEAD_FC: get(HEAD_FC).get_weights()}


def identity_kernels(model: keras.Model) -> Iterator[tuple[BlockSpec, str, np.ndarray, np.ndarray]]:
    """For each block of the training-form `model` with an identity branch: its spec, the name
    of the layer whose output is the block's input, and its fused 3x3 kernel with the identity
    folded in and kept apart (what int8 would quantize in either graph)."""
    variant = get_variant(describe(model).variant)
    previous = None
    for spec in block_plan(variant, int(model.input_shape[-1] or 3)):
        train = block_layout(spec, "train")
        if train.identity is not None and previous is not None:
            assert train.conv_kxk is not None and train.conv_1x1 is not None
            branches = (_conv_bn(model, train.conv_kxk), _conv_bn(model, train.conv_1x1))
            folded, _ = fuse_block(*branches, _bn(model.get_layer(train.identity.name)), spec.groups)
            apart, _ = fuse_block(*branches, None, spec.groups)
            yield spec, previous, folded, apart
        previous = train.act.name


def is_training_form(model: keras.Model) -> bool:
    return describe(model).form == "train"


def reparameterize(model: keras.Model, keep_identity: Union[bool, Collection[str]] = False) -> keras.Model:
    """A new deploy-form model computing what the training-form `model` computes in inference.

    BatchNorm layers contribute their moving statistics, as in eval mode. With
    keep_identity=True the identity branch stays apart (conv + per-channel scale
    of the block's input, added): the same function, a graph that quantizes to
    int8 far better (see `fusion.fuse_block_keep_identity`); a collection of blocks
    (timm's paths, "stages.1.2") keeps it apart in those only. The new model keeps the
    description (input, head, eval transform, labels) of the old one.
    """
    description = describe(model)
    if description.form != "train":
        raise KerasRepVGGError(
            f"model {model.name!r} is in the {description.form} form; reparameterize takes the training form"
        )
    variant = get_variant(description.variant)
    in_channels = int(model.input_shape[-1] or 3)
    identity_blocks = None
    if not isinstance(keep_identity, bool):
        with_identity = [spec.name for spec in block_plan(variant, in_channels) if spec.has_identity]
        unknown = set(keep_identity) - set(with_identity)
        if unknown:
            raise KerasRepVGGError(f"keep_identity names {sorted(unknown)}, which are not blocks of "
                                   f"{description.variant} with an identity branch: {with_identity}")
        identity_blocks = tuple(name for name in with_identity if name in set(keep_identity))  # in block order
    form = "deploy-identity" if keep_identity is True or identity_blocks is not None else "deploy"
    deploy = build(
        description.replace(form=form, identity_blocks=identity_blocks), input_shape=tuple(model.input_shape[1:]),
        name=model.name, initialize=False,
    )
    assign_weights(deploy, _fused_weights(model, variant, in_channels, form, identity_blocks))
    return deploy
