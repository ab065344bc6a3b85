"""The eval transform's numbers (keras_repvgg.core.transform) against timm's and torchvision's
definitions, written out here from their source: numpy only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_repvgg.core.configs import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from keras_repvgg.core.transform import (
    INTERPOLATIONS,
    TransformError,
    crop_offsets,
    denormalize,
    interpolation,
    normalize,
    pixel_mean_std,
    resized_shape,
    softmax,
)


def _torchvision_geometry(h: int, w: int, size: int, crop_pct: float) -> tuple[int, int, int, int]:
    """torchvision's Resize(int) then CenterCrop, as timm's eval transform calls them."""
    scaled = math.floor(size / crop_pct)
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = scaled, int(scaled * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


@pytest.mark.parametrize("size, crop_pct", [(224, 0.875), (320, 1.0), (64, 0.875), (33, 0.9)])
def test_geometry_is_torchvisions(size, crop_pct):
    p = Preprocessing(input_size=size, crop_pct=crop_pct)
    sides = [1, 2, 3, 5, 16, 17, 31, 63, 64, 65, 224, 225, 255, 256, 257, 300, 301, 333, 1000, 4097]
    for h in sides:
        for w in sides:
            new_h, new_w = resized_shape(h, w, p)
            assert (new_h, new_w, *crop_offsets(new_h, new_w, size)) == _torchvision_geometry(h, w, size, crop_pct)


def test_crop_offsets_round_halves_to_even():
    """Python's round (torchvision's): 2.5 -> 2, 3.5 -> 4; a plain floor or round-half-up differs."""
    assert [crop_offsets(10 + d, 10 + d, 10)[0] for d in range(8)] == [0, 0, 1, 2, 2, 2, 3, 4]


def test_normalize_is_timms_and_inverts():
    p = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.float32)
    timm = (pixels / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)  # ToTensor, Normalize
    ours = normalize(pixels, p)
    assert ours.dtype == np.float32 and np.abs(ours - timm).max() < 1e-6
    assert np.abs(denormalize(ours, p) - pixels).max() < 1e-4  # a ten-thousandth of a pixel step
    mean, std = pixel_mean_std(p)
    np.testing.assert_allclose(mean, 255 * np.asarray(IMAGENET_MEAN), rtol=1e-12)
    np.testing.assert_allclose(std, 255 * np.asarray(IMAGENET_STD), rtol=1e-12)


def test_softmax_is_stable_and_sums_to_one():
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), -np.inf]])
    np.testing.assert_allclose(softmax(logits), [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]], atol=1e-15)


def test_every_interpolation_has_both_implementations_and_others_are_refused():
    assert set(INTERPOLATIONS) == {"nearest", "bilinear", "bicubic"}
    for name, filters in INTERPOLATIONS.items():
        assert interpolation(Preprocessing(interpolation=name)) == filters
    with pytest.raises(TransformError, match="interpolation 'lanczos' is not supported; expected one of nearest"):
        interpolation(Preprocessing(interpolation="lanczos"))
