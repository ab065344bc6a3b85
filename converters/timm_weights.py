"""timm-named RepVGG weights -> Keras layer weights, one block at a time.

A block's parts and their keys in each form are `keras_repvgg.core.layout`'s: `conv_kxk`
(3x3 conv + BatchNorm), `conv_1x1` (1x1 conv + BatchNorm), `identity` (BatchNorm) and,
once reparameterized, `reparam_conv` (3x3 conv with bias). A checkpoint may mix both
forms. The deploy form fuses the branches; the training form takes them one to one.
Here: the shapes PyTorch stores them in, and their conversion to Keras'.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from keras_repvgg.core.configs import BlockSpec, VariantConfig, block_plan, match_variant, num_features
from keras_repvgg.core.fusion import BatchNorm, fuse_block, torch_to_keras_kernel
from keras_repvgg.core.layout import (
    BLOCK_KERNEL_KEY,
    HEAD,
    SE_KEY_SUFFIX,
    ConvBN,
    LayerWeights,
    Sublayer,
    block_layout,
    branch_kernel_key,
    fused_kernel_key,
)
from keras_repvgg.core.names import STEM

from .errors import AlreadyFusedError, CheckpointError, ShapeMismatchError
from .readers import TensorReader


def _batchnorm(reader: TensorReader, bn: Sublayer, channels: int) -> BatchNorm:
    for key in bn.skipped:
        reader.skip(bn.key(key))
    gamma, beta, mean, var = (reader.take(key, (channels,)) for key in bn.keys)
    return BatchNorm(gamma, beta, mean, var)


def _bn_weights(bn: BatchNorm) -> list[np.ndarray]:
    """Keras BatchNormalization's order: gamma, beta, moving mean, moving variance."""
    return [np.asarray(a, np.float32) for a in (bn.gamma, bn.beta, bn.mean, bn.var)]


def _conv_bn(reader: TensorReader, branch: ConvBN, spec: BlockSpec, size: int) -> tuple[np.ndarray, BatchNorm]:
    (key,) = branch.conv.keys
    kernel = torch_to_keras_kernel(reader.take(key, (spec.out_channels, spec.in_channels // spec.groups, size, size)))
    return kernel, _batchnorm(reader, branch.bn, spec.out_channels)


def _conv_bias(reader: TensorReader, conv: Sublayer, out: int, inp: int, size: int) -> list[np.ndarray]:
    weight_key, bias_key = conv.keys
    weight = reader.take(weight_key, (out, inp, size, size))
    bias = reader.take(bias_key, (out,))
    return [torch_to_keras_kernel(weight).astype(np.float32), bias.astype(np.float32)]


def _identity(reader: TensorReader, identity: Optional[Sublayer], spec: BlockSpec) -> Optional[BatchNorm]:
    return _batchnorm(reader, identity, spec.out_channels) if identity is not None else None


def _se_weights(reader: TensorReader, spec: BlockSpec) -> LayerWeights:
    se = block_layout(spec, "deploy").se
    if se is None:
        return {}
    c, r = spec.out_channels, spec.se_channels
    return {se.fc1.name: _conv_bias(reader, se.fc1, r, c, 1), se.fc2.name: _conv_bias(reader, se.fc2, c, r, 1)}


def deploy_block_weights(reader: TensorReader, spec: BlockSpec) -> LayerWeights:
    """The fused conv (and SE) weights of one block, from either form."""
    deploy, train = block_layout(spec, "deploy"), block_layout(spec, "train")
    assert deploy.reparam_conv is not None and train.conv_kxk is not None and train.conv_1x1 is not None
    if fused_kernel_key(spec.name) in reader:
        fused = _conv_bias(reader, deploy.reparam_conv, spec.out_channels, spec.in_channels // spec.groups, 3)
    else:
        fused = list(fuse_block(
            _conv_bn(reader, train.conv_kxk, spec, 3),
            _conv_bn(reader, train.conv_1x1, spec, 1),
            _identity(reader, train.identity, spec),
            spec.groups,
        ))
    return {deploy.reparam_conv.name: fused, **_se_weights(reader, spec)}


def train_block_weights(reader: TensorReader, spec: BlockSpec) -> LayerWeights:
    """One block's branches, one to one, for the training form."""
    if fused_kernel_key(spec.name) in reader:
        raise AlreadyFusedError(
            f"{reader.path}: block {reader.display(fused_kernel_key(spec.name))!r} is already "
            "fused; the training form needs its branches (convert to the deploy form instead)"
        )
    train = block_layout(spec, "train")
    assert train.conv_kxk is not None and train.conv_1x1 is not None
    weights: LayerWeights = {}
    for branch, size in ((train.conv_kxk, 3), (train.conv_1x1, 1)):
        kernel, bn = _conv_bn(reader, branch, spec, size)
        weights[branch.conv.name] = [kernel.astype(np.float32)]
        weights[branch.bn.name] = _bn_weights(bn)
    identity = _identity(reader, train.identity, spec)
    if identity is not None and train.identity is not None:
        weights[train.identity.name] = _bn_weights(identity)
    return {**weights, **_se_weights(reader, spec)}


def head_weights(reader: TensorReader, features: int, classes: int) -> LayerWeights:
    weight_key, bias_key = HEAD.keys
    weight = reader.take(weight_key, (classes, features))
    bias = reader.take(bias_key, (classes,))
    return {HEAD.name: [np.ascontiguousarray(weight.T, dtype=np.float32), bias.astype(np.float32)]}


def timm_to_keras(
    reader: TensorReader,
    variant: VariantConfig,
    classes: int,
    include_top: bool = True,
    form: str = "deploy",
) -> Iterator[LayerWeights]:
    """Map every tensor of a timm-named RepVGG checkpoint to Keras layer weights.

    Yields one block's layers at a time, so that the caller can assign them and
    let them go. Raises a CheckpointError subclass for any missing or mis-shaped
    key, and, once all is read, for any key left over. Without the top, the
    classifier's keys are skipped explicitly.
    """
    block_weights = train_block_weights if form == "train" else deploy_block_weights
    for spec in block_plan(variant, in_channels(reader)):
        yield block_weights(reader, spec)
    if include_top:
        yield head_weights(reader, num_features(variant), classes)
    else:
        for key in HEAD.keys:
            reader.skip(key)
    reader.finish()


def _shape_of_rank(reader: TensorReader, key: str, rank: int, what: str) -> tuple[int, ...]:
    shape = reader.shape(key)
    if len(shape) != rank:
        raise ShapeMismatchError(
            f"{reader.path}: key {reader.display(key)!r} has shape {shape}, expected a {rank}-D {what}"
        )
    return shape


def in_channels(reader: TensorReader) -> int:
    for key in (fused_kernel_key(STEM), branch_kernel_key(STEM)):
        if key in reader:
            return _shape_of_rank(reader, key, 4, "conv kernel (out, in, kh, kw)")[1]
    return 3  # the key will be reported missing, with its expected shape


def num_classes(reader: TensorReader) -> Optional[int]:
    """Classes of the checkpoint's classifier, or None where it has none."""
    weight_key = HEAD.key("weight")
    if weight_key not in reader:
        return None
    return _shape_of_rank(reader, weight_key, 2, "classifier weight (classes, features)")[0]


def infer_variant(reader: TensorReader) -> VariantConfig:
    """Which variant a checkpoint holds, from its tensor shapes alone."""
    blocks = {}
    for key in reader.keys():
        match = BLOCK_KERNEL_KEY.match(key)
        if match:
            shape = _shape_of_rank(reader, key, 4, "conv kernel (out, in, kh, kw)")
            blocks[match.group(1)] = (shape[0], shape[1])
    has_se = any(key.endswith(SE_KEY_SUFFIX) for key in reader.keys())
    variant = match_variant(blocks, has_se, in_channels(reader))
    if variant is None:
        raise CheckpointError(
            f"{reader.path}: the tensor shapes match no known RepVGG variant "
            f"({len(blocks)} blocks, stem kernel {blocks.get('stem')}); pass the variant (--arch)"
        )
    return variant
