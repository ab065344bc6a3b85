"""timm's eval transform is implemented twice: in Pillow (`preprocessing.load_image`, what
`predict` feeds every model) and in TensorFlow ops (`serving.decode_image`, the SavedModel's
`predict_images`). Both are held here against timm's own transform (torchvision on Pillow)
and against each other, over the three interpolations, two crop fractions and odd sizes:
1x1 and 1x2 images, 17x300 strips, odd widths and heights, up- and downscaling."""

from __future__ import annotations

import io

import numpy as np
import pytest

from keras_repvgg.core.configs import Preprocessing
from keras_repvgg.core.preprocessing import load_image
from keras_repvgg.core.transform import INTERPOLATIONS

# (height, width): tiny, strips both ways (the Pillow path crops before resizing these), odd
# sides, square, and larger than the crop (downscaling, where the antialiasing filters act).
SHAPES = [(1, 1), (1, 2), (2, 1), (3, 5), (17, 300), (300, 17), (31, 47), (47, 31), (64, 64),
          (101, 257), (257, 101), (333, 500)]
# (input_size, crop_pct): timm's default; D2se's crop of the whole short side; small and odd.
SIZES = [(224, 0.875), (64, 1.0), (33, 0.875)]

# How far apart the two implementations may be, in 0-255 pixel steps, over random-noise
# images (the worst case for a filter's rounding). Measured on TF 2.21 and Pillow 12.3 over
# SHAPES x SIZES:
# - bilinear, bicubic: the same antialiased kernels (triangle; Keys' cubic, a = -0.5), and the
#   graph resizes the width, then the height, rounding to 8 bits in between, as Pillow does.
#   What remains is Pillow's fixed-point weights: at most 1 step, on at most 0.8% of the
#   pixels (bilinear; bicubic 0.1%). Bound: 1 step, 2% of the pixels. Resizing both sides at
#   once without that rounding (the graph before) was up to 21 steps off with bicubic.
# - nearest: both take the source pixel under each output pixel's centre,
#   floor((i + 0.5) * in / out), and agree exactly except where that is an exact integer, a
#   tie between two source pixels that each library's floating point breaks its own way
#   (Pillow's own crop-first strip path and whole resize disagree there too). Bound: equal
#   off the tie rows and columns; measured: 1 column in 33 differs at (333, 500) -> 33. The
#   graph before resized with bilinear there: most pixels of noise differ, by up to 200 steps.
MAX_STEPS = 1.0
MAX_DIFFERING = 0.02


def _off_ties(height: int, width: int, p: Preprocessing) -> np.ndarray:
    """(size, size) mask of the crop's pixels whose nearest source pixel is not a tie."""
    from keras_repvgg.core.transform import crop_offsets, resized_shape

    new_h, new_w = resized_shape(height, width, p)
    top, left = crop_offsets(new_h, new_w, p.input_size)
    rows = np.arange(top, top + p.input_size)
    cols = np.arange(left, left + p.input_size)
    tie_rows = (2 * rows + 1) * height % (2 * new_h) == 0  # (row + 1/2) * height / new_h is whole
    tie_cols = (2 * cols + 1) * width % (2 * new_w) == 0
    return ~(tie_rows[:, None] | tie_cols[None, :])


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

    from keras_repvgg.exports.serving import decode_image

    worst, most, worst_timm = 0.0, 0.0, 0.0
    for size, crop_pct in SIZES:
        p = Preprocessing(input_size=size, crop_pct=crop_pct, interpolation=method)
        for seed, shape in enumerate(SHAPES):
            data = _png(shape, seed)
            pillow = load_image(io.BytesIO(data), p, normalize=False)
            graph = decode_image(tf.constant(data), p).numpy()
            timm = _timm_pixels(data, p)
            assert pillow.shape == graph.shape == timm.shape == (size, size, 3)
            where = f"{method} {shape} -> {size} at crop {crop_pct}"
            if method == "nearest":  # equal off the ties, compared where the pixel is not a tie
                keep = _off_ties(*shape, p)
                pillow, graph, timm = pillow[keep], graph[keep], timm[keep]
            diff = np.abs(pillow - graph)
            differing = float(np.mean(diff > 0))
            limit = 0.0 if method == "nearest" else MAX_STEPS
            assert diff.max() <= limit, f"{where}: {diff.max()} steps apart"
            assert differing <= MAX_DIFFERING, f"{where}: {differing:.1%} of the pixels differ"
            worst, most = max(worst, float(diff.max())), max(most, differing)
            # Pillow's path is timm's, up to float32 (and a strip's crop-first resize, 1 step).
            worst_timm = max(worst_timm, float(np.abs(pillow - timm).max()))
    print(f"{method}: TF vs Pillow max {worst} steps on {most:.2%} of the pixels; Pillow vs timm max {worst_timm:.2e}")
    assert worst_timm <= 1.0 + 1e-3
