"""timm's eval transform is implemented twice: in Pillow (`preprocessing.load_image`, what
`predict` feeds every model) and in TensorFlow ops (`serving.decode_image`, the SavedModel's
`predict_images`). Both are held here against timm's own transform (torchvision on Pillow)
and against each other, over the three interpolations, two crop fractions and odd sizes:
1x1 and 1x2 images, 17x300 strips, odd widths and heights, up- and downscaling."""

from __future__ import annotations

import io

import numpy as np
import pytest

from keras_repvgg.configs import Preprocessing
from keras_repvgg.preprocessing import load_image
from keras_repvgg.transform import INTERPOLATIONS

# (height, width): tiny, strips both ways (the Pillow path crops before resizing these), odd
# sides, square, and larger than the crop (downscaling, where the antialiasing filters act).
SHAPES = [(1, 1), (1, 2), (2, 1), (3, 5), (17, 300), (300, 17), (31, 47), (47, 31), (64, 64),
          (101, 257), (257, 101), (333, 500)]
# (input_size, crop_pct): timm's default; D2se's crop of the whole short side; small and odd.
SIZES = [(224, 0.875), (64, 1.0), (33, 0.875)]

# Largest difference allowed between the two implementations, in 0-255 pixel steps, over
# random-noise images (the worst case for a filter's rounding). Measured on TF 2.21 and
# Pillow 12.3 over SHAPES x SIZES:
# - nearest: 0 everywhere. Both sample the source pixel under each output pixel's centre,
#   floor((i + 0.5) * in / out); no filter, no rounding. The old graph resized with bilinear
#   there, 150+ steps off on noise: this bound catches it.
# - bilinear, bicubic: the same antialiased kernels (triangle; Keys' cubic, a = -0.5), but
#   Pillow rounds to 8 bits between its horizontal and vertical passes and uses fixed-point
#   weights, TensorFlow stays in float32 until the end. Measured at most 1 step (bilinear)
#   and 2 (bicubic, whose negative lobes amplify the intermediate rounding); the bound leaves
#   one step of margin, far below what another filter or a shifted grid gives (tens of steps).
MAX_STEPS = {"nearest": 0.0, "bilinear": 2.0, "bicubic": 3.0}
MEAN_STEPS = 0.5  # measured at most 0.2: most pixels agree exactly


def _png(shape: tuple[int, int], seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")  # lossless: both decoders read the same pixels
    return out.getvalue()


def _timm_pixels(data: bytes, p: Preprocessing) -> np.ndarray:
    """timm's eval transform of the image, back in 0-255 units (before its Normalize)."""
    from PIL import Image
    from timm.data import create_transform

    transform = create_transform(
        input_size=(3, p.input_size, p.input_size), crop_pct=p.crop_pct, interpolation=p.interpolation,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    )
    with Image.open(io.BytesIO(data)) as image:
        return transform(image.convert("RGB")).numpy().transpose(1, 2, 0) * 255.0


@pytest.mark.parametrize("method", list(INTERPOLATIONS))
def test_pillow_and_tensorflow_give_the_same_pixels(method):
    import tensorflow as tf

    from keras_repvgg.serving import decode_image

    worst, worst_mean, worst_timm = 0.0, 0.0, 0.0
    for size, crop_pct in SIZES:
        p = Preprocessing(input_size=size, crop_pct=crop_pct, interpolation=method)
        for seed, shape in enumerate(SHAPES):
            data = _png(shape, seed)
            pillow = load_image(io.BytesIO(data), p, normalize=False)
            graph = decode_image(tf.constant(data), p).numpy()
            assert pillow.shape == graph.shape == (size, size, 3)
            diff = np.abs(pillow - graph)
            where = f"{method} {shape} -> {size} at crop {crop_pct}"
            assert diff.max() <= MAX_STEPS[method], f"{where}: {diff.max()} steps apart"
            assert diff.mean() <= MEAN_STEPS, f"{where}: {diff.mean():.3f} steps apart on average"
            worst, worst_mean = max(worst, diff.max()), max(worst_mean, diff.mean())
            # Pillow's path is timm's, up to float32 (and a strip's crop-first resize, 1 step).
            worst_timm = max(worst_timm, np.abs(pillow - _timm_pixels(data, p)).max())
    print(f"{method}: TF vs Pillow max {worst} mean {worst_mean:.3f} steps; Pillow vs timm max {worst_timm:.2e}")
    assert worst_timm <= 1.0 + 1e-3
