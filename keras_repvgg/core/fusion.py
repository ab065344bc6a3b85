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


def fuse_conv_bn(kernel: np.ndarray, bn: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
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
    Returns float32 (kernel, bias). The 1x1 and identity branches are added onto
    the centre tap in place: one float64 copy of the kernel, however large.
    """
    kernel, bias = fuse_conv_bn(*conv3x3)
    centre = kernel.shape[0] // 2
    k1, b1 = fuse_conv_bn(*conv1x1)
    kernel[centre, centre] += k1[0, 0]
    bias += b1
    if identity is not None:
        # The identity is a kernel whose only non-zero tap is the centre one,
        # from input channel i to output channel i. In a grouped conv, output
        # channel i sees its own group's inputs only, where input i sits at
        # i % (channels / groups).
        scale, shift = identity.scale_shift()
        channels = kernel.shape[-1]
        index = np.arange(channels)
        kernel[centre, centre, index % (channels // groups), index] += scale
        bias += shift
    return kernel.astype(np.float32), bias.astype(np.float32)


def fuse_block_keep_identity(
    conv3x3: tuple[np.ndarray, BatchNorm],
    conv1x1: tuple[np.ndarray, BatchNorm],
    identity: BatchNorm,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuse the two conv branches, and keep the identity branch apart as a per-channel scale.

    Returns float32 (kernel, bias, identity_scale): the block computes
    conv(x, kernel) + bias + identity_scale * x. The identity adds a spike to
    each output channel's centre tap when folded into the kernel (its scale is
    often far above the conv weights), which per-channel int8 then rounds the
    other weights against; kept apart, the kernel quantizes well.
    """
    kernel, bias = fuse_block(conv3x3, conv1x1, None, groups)
    scale, shift = identity.scale_shift()
    return kernel, (bias + shift).astype(np.float32), scale.astype(np.float32)
