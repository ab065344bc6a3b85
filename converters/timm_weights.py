"""timm's RepVGG checkpoints -> fused Keras weights, one block at a time.

timm names a block's parts `conv_kxk` (3x3 conv + BatchNorm), `conv_1x1`
(1x1 conv + BatchNorm), `identity` (BatchNorm) and, once reparameterized,
`reparam_conv` (3x3 conv with bias). A checkpoint may mix both forms.
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

import numpy as np

from keras_repvgg.configs import VARIANTS, BlockSpec, VariantConfig, block_plan, num_features
from keras_repvgg.fusion import BatchNorm, fuse_block, torch_to_keras_kernel

from .errors import CheckpointError
from .sources import TensorReader

LayerWeights = dict[str, list[np.ndarray]]  # Keras layer name -> its weights, in set_weights order

_BLOCK_KERNEL = re.compile(r"^(stem|stages\.\d+\.\d+)\.(reparam_conv|conv_kxk\.conv)\.weight$")


def _batchnorm(reader: TensorReader, prefix: str, channels: int) -> BatchNorm:
    take = lambda part: reader.take(f"{prefix}.{part}", (channels,))  # noqa: E731
    reader.skip(f"{prefix}.num_batches_tracked")
    return BatchNorm(take("weight"), take("bias"), take("running_mean"), take("running_var"))


def _conv_bn(reader: TensorReader, prefix: str, spec: BlockSpec, size: int):
    shape = (spec.out_channels, spec.in_channels // spec.groups, size, size)
    kernel = torch_to_keras_kernel(reader.take(f"{prefix}.conv.weight", shape))
    return kernel, _batchnorm(reader, f"{prefix}.bn", spec.out_channels)


def _conv_bias(reader: TensorReader, prefix: str, out: int, inp: int, size: int) -> list[np.ndarray]:
    weight = reader.take(f"{prefix}.weight", (out, inp, size, size))
    bias = reader.take(f"{prefix}.bias", (out,))
    return [torch_to_keras_kernel(weight).astype(np.float32), bias.astype(np.float32)]


def block_weights(reader: TensorReader, spec: BlockSpec) -> LayerWeights:
    """The fused conv (and SE) weights of one block, from either form."""
    name = spec.name
    if f"{name}.reparam_conv.weight" in reader:
        fused = _conv_bias(
            reader, f"{name}.reparam_conv", spec.out_channels, spec.in_channels // spec.groups, 3
        )
    else:
        identity = (
            _batchnorm(reader, f"{name}.identity", spec.out_channels) if spec.has_identity else None
        )
        fused = list(
            fuse_block(
                _conv_bn(reader, f"{name}.conv_kxk", spec, 3),
                _conv_bn(reader, f"{name}.conv_1x1", spec, 1),
                identity,
                spec.groups,
            )
        )
    layers = {f"{name}.reparam_conv": fused}
    if spec.se_channels:
        c, r = spec.out_channels, spec.se_channels
        layers[f"{name}.attn.fc1"] = _conv_bias(reader, f"{name}.attn.fc1", r, c, 1)
        layers[f"{name}.attn.fc2"] = _conv_bias(reader, f"{name}.attn.fc2", c, r, 1)
    return layers


def head_weights(reader: TensorReader, features: int, classes: int) -> LayerWeights:
    weight = reader.take("head.fc.weight", (classes, features))
    bias = reader.take("head.fc.bias", (classes,))
    return {"head.fc": [np.ascontiguousarray(weight.T, dtype=np.float32), bias.astype(np.float32)]}


def timm_to_keras(
    reader: TensorReader, variant: VariantConfig, classes: int, include_top: bool = True
) -> Iterator[LayerWeights]:
    """Map every tensor of a timm RepVGG checkpoint to fused Keras layer weights.

    Yields one block's layers at a time, so that the caller can assign them and
    let them go. Raises a CheckpointError subclass for any missing or mis-shaped
    key, and, once all is read, for any key left over. Without the top, the
    classifier's keys are skipped explicitly.
    """
    for spec in block_plan(variant, in_channels(reader)):
        yield block_weights(reader, spec)
    if include_top:
        yield head_weights(reader, num_features(variant), classes)
    else:
        for key in ("head.fc.weight", "head.fc.bias"):
            reader.skip(key)
    reader.finish()


def in_channels(reader: TensorReader) -> int:
    for key in ("stem.reparam_conv.weight", "stem.conv_kxk.conv.weight"):
        if key in reader:
            return reader.shape(key)[1]
    return 3  # the key will be reported missing, with its expected shape


def num_classes(reader: TensorReader) -> Optional[int]:
    """Classes of the checkpoint's classifier, or None where it has none."""
    return reader.shape("head.fc.weight")[0] if "head.fc.weight" in reader else None


def _signature(blocks: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, int]]:
    return {name: (shape[0], shape[1]) for name, shape in blocks.items()}


def infer_variant(reader: TensorReader) -> VariantConfig:
    """Which variant a checkpoint holds, from its tensor shapes alone."""
    blocks = {}
    for key in reader.keys():
        match = _BLOCK_KERNEL.match(key)
        if match:
            blocks[match.group(1)] = reader.shape(key)
    has_se = any(".attn.fc1.weight" in key for key in reader.keys())
    found = _signature(blocks)
    for variant in VARIANTS.values():
        plan = block_plan(variant, in_channels(reader))
        expected = {s.name: (s.out_channels, s.in_channels // s.groups) for s in plan}
        if expected == found and has_se == bool(variant.se_ratio):
            return variant
    stem = blocks.get("stem")
    raise CheckpointError(
        f"{reader.path}: the tensor shapes match no known RepVGG variant "
        f"({len(blocks)} blocks, stem kernel {stem}); pass the variant explicitly (--arch)"
    )
