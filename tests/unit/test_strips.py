"""Strips (aspect ratio beyond 8) are resized only where the centre crop keeps them: the same
pixels as resizing the whole image, to 1/255, without its memory."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import keras_repvgg.preprocessing as preprocessing
from keras_repvgg.configs import get_variant


@pytest.mark.parametrize("arch", ["repvgg_a0", "repvgg_d2se"])  # bilinear crop 0.875; bicubic crop 1.0
@pytest.mark.parametrize("shape", [(20, 900), (900, 20), (7, 601), (3, 299)])
def test_a_strip_gives_the_pixels_of_the_whole_resize(arch, shape, tmp_path, monkeypatch):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "strip.png")
    p = get_variant(arch).preprocessing
    assert max(shape) / min(shape) > preprocessing.LONG_SIDE_LIMIT  # the strip path is taken
    cropped_first = preprocessing.load_image(tmp_path / "strip.png", p, normalize=False)
    monkeypatch.setattr(preprocessing, "LONG_SIDE_LIMIT", 10**9)  # the whole image resized, then cropped
    whole = preprocessing.load_image(tmp_path / "strip.png", p, normalize=False)
    assert cropped_first.shape == whole.shape == (p.input_size, p.input_size, 3)
    assert np.abs(cropped_first - whole).max() <= 1


def test_a_long_strip_is_cheap(tmp_path):
    """50,000 x 2 pixels: resized whole, 1.8M x 73 x 3 bytes (400 MB); here, the crop only."""
    Image.new("RGB", (50_000, 2), (10, 200, 30)).save(tmp_path / "long.png")
    x = preprocessing.load_image(tmp_path / "long.png", "repvgg_a0", normalize=False)
    assert x.shape == (224, 224, 3) and np.all(x == [10, 200, 30])
