"""fusion.py against a direct numpy evaluation of a training-form block (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from keras_repvgg.core.fusion import BatchNorm, fuse_block, fuse_block_keep_identity, torch_to_keras_kernel


def _conv(x: np.ndarray, kernel: np.ndarray, groups: int) -> np.ndarray:
    """'same' stride-1 convolution of (H, W, C) by a Keras-layout kernel, group by group."""
    kh = kernel.shape[0]
    pad = kh // 2
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    h, w, c = x.shape
    cin, cout = c // groups, kernel.shape[-1]
    out = np.zeros((h, w, cout))
    for g in range(groups):
        k = kernel[:, :, :, g * cout // groups : (g + 1) * cout // groups]
        for i in range(kh):
            for j in range(kh):
                out[:, :, g * cout // groups : (g + 1) * cout // groups] += (
                    xp[i : i + h, j : j + w, g * cin : (g + 1) * cin] @ k[i, j]
                )
    return out


def _bn(rng, n: int) -> BatchNorm:
    return BatchNorm(rng.uniform(0.3, 0.8, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2, n))


def _apply(bn: BatchNorm, y: np.ndarray) -> np.ndarray:
    return (y - bn.mean) / np.sqrt(bn.var + bn.eps) * bn.gamma + bn.beta


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("with_identity", [True, False])
def test_fused_block_computes_the_three_branches(groups, with_identity):
    rng = np.random.default_rng(groups)
    c = 8
    x = rng.standard_normal((5, 6, c))
    k3, k1 = rng.standard_normal((3, 3, c // groups, c)), rng.standard_normal((1, 1, c // groups, c))
    bn3, bn1, bnid = _bn(rng, c), _bn(rng, c), _bn(rng, c)
    expected = _apply(bn3, _conv(x, k3, groups)) + _apply(bn1, _conv(x, k1, groups))
    if with_identity:
        expected = expected + _apply(bnid, x)
    kernel, bias = fuse_block((k3, bn3), (k1, bn1), bnid if with_identity else None, groups)
    assert kernel.dtype == np.float32 and kernel.shape == k3.shape
    got = _conv(x, kernel.astype(np.float64), groups) + bias
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_identity_kept_apart_computes_the_same():
    rng = np.random.default_rng(0)
    c = 6
    x = rng.standard_normal((4, 4, c))
    k3, k1 = rng.standard_normal((3, 3, c, c)), rng.standard_normal((1, 1, c, c))
    bn3, bn1, bnid = _bn(rng, c), _bn(rng, c), _bn(rng, c)
    fused, fused_bias = fuse_block((k3, bn3), (k1, bn1), bnid)
    kernel, bias, scale = fuse_block_keep_identity((k3, bn3), (k1, bn1), bnid)
    apart = _conv(x, kernel.astype(np.float64), 1) + bias + scale * x
    np.testing.assert_allclose(apart, _conv(x, fused.astype(np.float64), 1) + fused_bias, rtol=1e-5, atol=1e-5)
    # The identity's centre-tap spike is what stays out of the kernel that int8 quantizes.
    index = np.arange(c)
    np.testing.assert_allclose(fused[1, 1, index, index] - kernel[1, 1, index, index], scale, rtol=1e-5)
    np.testing.assert_array_equal(np.delete(fused.reshape(9, c, c), 4, axis=0), np.delete(kernel.reshape(9, c, c), 4, axis=0))


def test_torch_layout_becomes_keras_layout():
    w = np.arange(2 * 3 * 3 * 5).reshape(5, 2, 3, 3)  # (out, in, kh, kw)
    k = torch_to_keras_kernel(w)
    assert k.shape == (3, 3, 2, 5) and k[1, 2, 0, 4] == w[4, 0, 1, 2]
