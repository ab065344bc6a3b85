"""timm's eval transform as numbers: the resize and crop geometry, the interpolations,
pixel normalization and softmax. numpy only.

Pillow (`preprocessing.load_image`) and TensorFlow (`serving.decode_image`) both
implement the transform; they take every size, offset, method name and constant from
here, so that they cannot disagree. Graph code (the in-graph normalization layer, the
SavedModel's ops, the TFLite wrapper, MediaPipe's metadata) takes its constants from
`scale_and_offset`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from keras_repvgg.core.configs import Preprocessing
from keras_repvgg.core.errors import TransformError

PIXEL_MAX = 255.0  # 8-bit pixels: timm's ToTensor divides by this before mean and std


@dataclasses.dataclass(frozen=True)
class Interpolation:
    """One resize filter under its two implementations' names."""

    pillow: str  # a member of PIL.Image.Resampling
    tensorflow: str  # a tf.image.ResizeMethod value (TF's antialias=True filters as Pillow does)


# timm's names (a checkpoint's config.json "interpolation") -> the filters that compute them.
INTERPOLATIONS: dict[str, Interpolation] = {
    "nearest": Interpolation("NEAREST", "nearest"),
    "bilinear": Interpolation("BILINEAR", "bilinear"),
    "bicubic": Interpolation("BICUBIC", "bicubic"),  # both Keys' cubic with a = -0.5
}


def interpolation(preprocessing: Preprocessing) -> Interpolation:
    """The filter of the checkpoint's interpolation; an unknown one is refused, never replaced."""
    found = INTERPOLATIONS.get(preprocessing.interpolation)
    if found is None:
        raise TransformError(
            f"interpolation {preprocessing.interpolation!r} is not supported; expected one of {', '.join(INTERPOLATIONS)}"
        )
    return found


def short_side(preprocessing: Preprocessing) -> int:
    """What the image's shorter side is resized to: floor(input_size / crop_pct), as timm."""
    return math.floor(preprocessing.input_size / preprocessing.crop_pct)


# The geometry is written with + - * // % and abs only, so that it runs on Python ints and,
# unchanged, on TensorFlow integer tensors (in the SavedModel the image's size is known only
# inside the graph). Both floor-divide and take the floor modulo, as Python does.


def resized_shape(height: Any, width: Any, preprocessing: Preprocessing) -> tuple[Any, Any]:
    """(height, width) after the resize: the shorter side to `short_side`, the longer one
    scaled and truncated, as torchvision's Resize (int(scaled * long / short), here exact)."""
    scaled = short_side(preprocessing)
    shorter = (height + width - abs(height - width)) // 2  # min(height, width)
    return height * scaled // shorter, width * scaled // shorter


def crop_offsets(height: Any, width: Any, size: int) -> tuple[Any, Any]:
    """(top, left) of the centre crop of `size` from a (height, width) image: torchvision's
    int(round((side - size) / 2)), whose round takes halves to the even neighbour."""
    return _half_to_even(height - size), _half_to_even(width - size)


def _half_to_even(d: Any) -> Any:
    half = d // 2
    return half + (d % 2) * (half % 2)  # an odd d is a half: up to the even neighbour


def scale_and_offset(preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (float64): normalized = pixels * scale + offset, timm's
    (pixels / 255 - mean) / std for 0-255 RGB pixels."""
    mean, std = np.asarray(preprocessing.mean, np.float64), np.asarray(preprocessing.std, np.float64)
    return 1.0 / (PIXEL_MAX * std), -mean / std


def pixel_mean_std(preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """The same map as (pixels - mean) / std in 0-255 units (MediaPipe's form)."""
    scale, offset = scale_and_offset(preprocessing)
    return -offset / scale, 1.0 / scale


def normalize(pixels: Any, preprocessing: Preprocessing) -> np.ndarray:
    """0-255 RGB (..., 3) -> what the models take, float32."""
    scale, offset = scale_and_offset(preprocessing)
    return np.asarray(pixels, np.float32) * scale.astype(np.float32) + offset.astype(np.float32)


def denormalize(normalized: Any, preprocessing: Preprocessing) -> np.ndarray:
    """The inverse of `normalize`: normalized input -> 0-255 RGB (not rounded or clipped), float32."""
    scale, offset = scale_and_offset(preprocessing)
    return ((np.asarray(normalized, np.float32) - offset.astype(np.float32)) / scale.astype(np.float32)).astype(
        np.float32
    )


def softmax(logits: Any) -> np.ndarray:
    """Softmax over the last axis (the classes), shifted by the maximum so that exp cannot overflow."""
    logits = np.asarray(logits)
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)

