"""Branch fusion: the one implementation of RepVGG's reparameterization math.

Everything here works on numpy arrays in Keras' layout: a conv kernel is
(kh, kw, in_channels // groups, out_channels). The converters bring PyTorch
tensors into this layout first; the Keras training form already is in it.
Arithmetic is done in float64 and the result returned as float32, so that the
fused model is as close to the three-branch model as float32 can be.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

BN_EPSILON = 1e-5  # PyTorch's BatchNorm default, which timm and the official models use


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = BN_EPSILON

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """y = x * scale + shift, the BatchNorm in eval mode as an affine map."""
        scale = _f64(self.gamma) / np.sqrt(_f64(self.var) + self.eps)
        return scale, _f64(self.beta) - _f64(self.mean) * scale


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def torch_to_keras_kernel(weight: np.ndarray) -> np.ndarray:
    """(out, in/groups, kh, kw) -> (kh, kw, in/groups, out)."""
    return np.transpose(weight, (2, 3, 1, 0))


def keras_to_torch_kernel(kernel: np.ndarray) -> np.ndarray:
    """(kh, kw, in/groups, out) -> (out, in/groups, kh, kw)."""
    return np.transpose(kernel, (3, 2, 0, 1))


def identity_kernel(channels: int, groups: int, size: int = 3) -> np.ndarray:
    """A kernel that copies each input channel to the same output channel.

    In a grouped conv, output channel i sees input channels of its own group
    only, and input channel i sits at position i % (channels / groups) there.
    """
    per_group = channels // groups
    kernel = np.zeros((size, size, per_group, channels), dtype=np.float64)
    index = np.arange(channels)
    kernel[size // 2, size // 2, index % per_group, index] = 1.0
    return kernel


def pad_kernel(kernel: np.ndarray, size: int = 3) -> np.ndarray:
    """Centre a smaller (1x1) kernel inside a size x size one of zeros."""
    pad = (size - kernel.shape[0]) // 2
    return np.pad(_f64(kernel), ((pad, pad), (pad, pad), (0, 0), (0, 0)))


def fuse_conv_bn(kernel: Optional[np.ndarray], bn: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """Fold a BatchNorm into the bias-free conv before it (Keras layout, float64)."""
    scale, shift = bn.scale_shift()
    return _f64(kernel) * scale, shift


def fuse_block(
    conv3x3: tuple[np.ndarray, BatchNorm],
    conv1x1: tuple[np.ndarray, BatchNorm],
    identity: Optional[BatchNorm],
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the three branches of a training-form block into one 3x3 kernel and bias.

    conv3x3 and conv1x1 are (kernel, BatchNorm) pairs with Keras-layout kernels;
    identity is the identity branch's BatchNorm, or None where the block has none.
    Returns float32 (kernel, bias).
    """
    kernel, bias = fuse_conv_bn(*conv3x3)
    size = kernel.shape[0]
    k1, b1 = fuse_conv_bn(*conv1x1)
    kernel = kernel + pad_kernel(k1, size)
    bias = bias + b1
    if identity is not None:
        channels = kernel.shape[-1]
        ki, bi = fuse_conv_bn(identity_kernel(channels, groups, size), identity)
        kernel = kernel + ki
        bias = bias + bi
    return kernel.astype(np.float32), bias.astype(np.float32)
