"""timm-named RepVGG weights -> Keras layer weights, one block at a time.

timm names a block's parts `conv_kxk` (3x3 conv + BatchNorm), `conv_1x1`
(1x1 conv + BatchNorm), `identity` (BatchNorm) and, once reparameterized,
`reparam_conv` (3x3 conv with bias). A checkpoint may mix both forms. The
deploy form fuses the branches; the training form takes them one to one.
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

import numpy as np

from keras_repvgg.configs import BlockSpec, VariantConfig, block_plan, match_variant, num_features
from keras_repvgg.fusion import BatchNorm, fuse_block, torch_to_keras_kernel
from keras_repvgg.model import LayerWeights
from keras_repvgg.names import CONV_1X1, CONV_KXK, HEAD_FC, IDENTITY, REPARAM_CONV, SE_FC1, SE_FC2, STEM, part

from .errors import AlreadyFusedError, CheckpointError, ShapeMismatchError
from .readers import TensorReader

_BLOCK_KERNEL = re.compile(rf"^(stem|stages\.\d+\.\d+)\.({REPARAM_CONV}|{CONV_KXK}\.conv)\.weight$")


def _batchnorm(reader: TensorReader, prefix: str, channels: int) -> BatchNorm:
    take = lambda part: reader.take(f"{prefix}.{part}", (channels,))  # noqa: E731
    reader.skip(f"{prefix}.num_batches_tracked")
    return BatchNorm(take("weight"), take("bias"), take("running_mean"), take("running_var"))


def _bn_weights(bn: BatchNorm) -> list[np.ndarray]:
    """Keras BatchNormalization's order: gamma, beta, moving mean, moving variance."""
    return [np.asarray(a, np.float32) for a in (bn.gamma, bn.beta, bn.mean, bn.var)]


def _kernel(reader: TensorReader, key: str, spec: BlockSpec, size: int) -> np.ndarray:
    shape = (spec.out_channels, spec.in_channels // spec.groups, size, size)
    return torch_to_keras_kernel(reader.take(key, shape))


def _conv_bn(reader: TensorReader, prefix: str, spec: BlockSpec, size: int):
    kernel = _kernel(reader, f"{prefix}.conv.weight", spec, size)
    return kernel, _batchnorm(reader, f"{prefix}.bn", spec.out_channels)


def _conv_bias(reader: TensorReader, prefix: str, out: int, inp: int, size: int) -> list[np.ndarray]:
    weight = reader.take(f"{prefix}.weight", (out, inp, size, size))
    bias = reader.take(f"{prefix}.bias", (out,))
    return [torch_to_keras_kernel(weight).astype(np.float32), bias.astype(np.float32)]


def _identity(reader: TensorReader, spec: BlockSpec) -> Optional[BatchNorm]:
    return _batchnorm(reader, part(spec.name, IDENTITY), spec.out_channels) if spec.has_identity else None


def _se_weights(reader: TensorReader, spec: BlockSpec) -> LayerWeights:
    if not spec.se_channels:
        return {}
    n, c, r = spec.name, spec.out_channels, spec.se_channels
    return {
        part(n, SE_FC1): _conv_bias(reader, part(n, SE_FC1), r, c, 1),
        part(n, SE_FC2): _conv_bias(reader, part(n, SE_FC2), c, r, 1),
    }


def deploy_block_weights(reader: TensorReader, spec: BlockSpec) -> LayerWeights:
    """The fused conv (and SE) weights of one block, from either form."""
    name = spec.name
    if part(name, REPARAM_CONV, "weight") in reader:
        fused = _conv_bias(
            reader, part(name, REPARAM_CONV), spec.out_channels, spec.in_channels // spec.groups, 3
        )
    else:
        fused = list(fuse_block(
            _conv_bn(reader, part(name, CONV_KXK), spec, 3),
            _conv_bn(reader, part(name, CONV_1X1), spec, 1),
            _identity(reader, spec),
            spec.groups,
        ))
    return {part(name, REPARAM_CONV): fused, **_se_weights(reader, spec)}


def train_block_weights(reader: TensorReader, spec: BlockSpec) -> LayerWeights:
    """One block's branches, one to one, for the training form."""
    name = spec.name
    if part(name, REPARAM_CONV, "weight") in reader:
        raise AlreadyFusedError(
            f"{reader.path}: block {reader.display(part(name, REPARAM_CONV, 'weight'))!r} is already "
            "fused; the training form needs its branches (convert to the deploy form instead)"
        )
    weights: LayerWeights = {}
    for branch, size in ((CONV_KXK, 3), (CONV_1X1, 1)):
        kernel, bn = _conv_bn(reader, f"{name}.{branch}", spec, size)
        weights[f"{name}.{branch}.conv"] = [kernel.astype(np.float32)]
        weights[f"{name}.{branch}.bn"] = _bn_weights(bn)
    identity = _identity(reader, spec)
    if identity is not None:
        weights[part(name, IDENTITY)] = _bn_weights(identity)
    return {**weights, **_se_weights(reader, spec)}


def head_weights(reader: TensorReader, features: int, classes: int) -> LayerWeights:
    weight = reader.take(part(HEAD_FC, "weight"), (classes, features))
    bias = reader.take(part(HEAD_FC, "bias"), (classes,))
    return {HEAD_FC: [np.ascontiguousarray(weight.T, dtype=np.float32), bias.astype(np.float32)]}


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
        for key in (part(HEAD_FC, "weight"), part(HEAD_FC, "bias")):
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
    for key in (part(STEM, REPARAM_CONV, "weight"), part(STEM, CONV_KXK, "conv", "weight")):
        if key in reader:
            return _shape_of_rank(reader, key, 4, "conv kernel (out, in, kh, kw)")[1]
    return 3  # the key will be reported missing, with its expected shape


def num_classes(reader: TensorReader) -> Optional[int]:
    """Classes of the checkpoint's classifier, or None where it has none."""
    if part(HEAD_FC, "weight") not in reader:
        return None
    return _shape_of_rank(reader, part(HEAD_FC, "weight"), 2, "classifier weight (classes, features)")[0]


def infer_variant(reader: TensorReader) -> VariantConfig:
    """Which variant a checkpoint holds, from its tensor shapes alone."""
    blocks = {}
    for key in reader.keys():
        match = _BLOCK_KERNEL.match(key)
        if match:
            shape = _shape_of_rank(reader, key, 4, "conv kernel (out, in, kh, kw)")
            blocks[match.group(1)] = (shape[0], shape[1])
    has_se = any(key.endswith(f".{SE_FC1}.weight") for key in reader.keys())
    variant = match_variant(blocks, has_se, in_channels(reader))
    if variant is None:
        raise CheckpointError(
            f"{reader.path}: the tensor shapes match no known RepVGG variant "
            f"({len(blocks)} blocks, stem kernel {blocks.get('stem')}); pass the variant (--arch)"
        )
    return variant
